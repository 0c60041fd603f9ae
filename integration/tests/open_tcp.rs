//! The open-socket iterator (receiver/src/open_tcp) on the real kernel:
//! connections between two network namespaces that stay open while the
//! reader walks them, with exact byte counts on both ends. The sockets are
//! made in-process on threads that entered each namespace, so the test
//! decides exactly what each end wrote and read, and when.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowscope_common::{AF_INET, Conn as KernelConn, ConnectRec, Event, event_kind, role};
use flowscope_integration::{NetPair, require_root};
use flowscope_receiver::netns::in_namespace;
use flowscope_receiver::open_tcp::walk::{listen_key, open_conn};
use flowscope_receiver::open_tcp::{OpenSocket, OpenTcpReader, TcpState};
use flowscope_receiver::tcp_join::{Limits, Record, TcpJoin, TickClock};

const WAIT: Duration = Duration::from_secs(20);

/// A named namespace's file and inode.
fn ns(name: &str) -> (PathBuf, u32) {
    let path = PathBuf::from(format!("/run/netns/{name}"));
    let ino = std::fs::metadata(&path).expect("namespace file").ino() as u32;
    (path, ino)
}

/// One connection from a client in `b` to a server in `a`, both ends
/// open.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// The client's and the server's address.
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    /// Inodes of `a` (server) and `b` (client).
    a: u32,
    b: u32,
}

impl Conn {
    fn open(net: &NetPair, server_addr: SocketAddr) -> Conn {
        let (a_path, a) = ns(&net.a);
        let (b_path, b) = ns(&net.b);
        let listener = in_namespace::<_, anyhow::Error>(&a_path, a, "t-listen", move || {
            Ok(TcpListener::bind(server_addr)?)
        })
        .expect("listen in a");
        let client = in_namespace::<_, anyhow::Error>(&b_path, b, "t-connect", move || {
            Ok(TcpStream::connect(server_addr)?)
        })
        .expect("connect from b");
        let (server, client_addr) = listener.accept().expect("accept");
        assert_eq!(client.local_addr().unwrap(), client_addr);
        Conn {
            client,
            server,
            client_addr,
            server_addr,
            a,
            b,
        }
    }

    /// The client's and the server's record in one read of every
    /// namespace (each exactly once).
    fn ends(&self, reader: &mut OpenTcpReader) -> (OpenSocket, OpenSocket) {
        let snap = reader.read_all();
        assert!(
            snap.failed.is_empty(),
            "namespaces failed: {:?}",
            snap.failed
        );
        assert!(snap.namespaces.contains(&self.a) && snap.namespaces.contains(&self.b));
        let one = |local: SocketAddr, peer: SocketAddr| -> OpenSocket {
            let found: Vec<&OpenSocket> = snap
                .sockets
                .iter()
                .filter(|s| s.local == local && s.peer == peer)
                .collect();
            assert_eq!(found.len(), 1, "{local} -> {peer}: {found:?}");
            *found[0]
        };
        let c = one(self.client_addr, self.server_addr);
        let s = one(self.server_addr, self.client_addr);
        assert_eq!((c.netns, s.netns), (self.b, self.a), "namespace inodes");
        assert!(c.sk != 0 && s.sk != 0 && c.sk != s.sk);
        (c, s)
    }

    /// Reads until `done` holds for the two ends, failing after WAIT.
    fn until(
        &self,
        reader: &mut OpenTcpReader,
        what: &str,
        done: impl Fn(&OpenSocket, &OpenSocket) -> bool,
    ) -> (OpenSocket, OpenSocket) {
        let start = Instant::now();
        loop {
            let (c, s) = self.ends(reader);
            if done(&c, &s) {
                return (c, s);
            }
            assert!(start.elapsed() < WAIT, "{what}: not reached: {c:?} {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Nothing unacknowledged on either end.
fn all_acked(c: &OpenSocket, s: &OpenSocket) -> bool {
    c.counters.write_seq == c.counters.snd_una && s.counters.write_seq == s.counters.snd_una
}

/// 12,345 bytes up, 6,789 down on a connection left open: both ends'
/// records carry exactly those, in flight or acknowledged, with the tuple
/// and namespace of each end. The client's `sent` holds its SYN (1): its
/// `snd_una` began at its ISN and the handshake's ACK added 1 to
/// `bytes_acked`; the server's SYN-ACK is in no figure.
fn exact_open(v6: bool) {
    let net = NetPair::new().unwrap();
    let mut reader = OpenTcpReader::load().expect("load the iterator");
    let ip = if v6 { net.a_v6() } else { net.a_v4() };
    let server_addr = SocketAddr::new(ip.parse().unwrap(), 7311);
    let mut conn = Conn::open(&net, server_addr);

    let up = pattern(12_345);
    conn.client.write_all(&up).unwrap();
    let mut got = vec![0; up.len()];
    conn.server.read_exact(&mut got).unwrap();
    assert_eq!(got, up);
    let down = pattern(6_789);
    conn.server.write_all(&down).unwrap();
    let mut got = vec![0; down.len()];
    conn.client.read_exact(&mut got).unwrap();
    assert_eq!(got, down);

    // At once: whatever is still unacknowledged is counted through
    // write_seq - snd_una.
    let check = |c: &OpenSocket, s: &OpenSocket| {
        assert_eq!(c.state, TcpState::Established);
        assert_eq!(s.state, TcpState::Established);
        assert_eq!(c.bytes.sent, 12_345 + 1, "client sent, SYN included");
        assert_eq!(c.bytes.data_sent(true), 12_345);
        assert_eq!(c.bytes.received, 6_789);
        assert_eq!(s.bytes.sent, 6_789);
        assert_eq!(s.bytes.data_sent(false), 6_789);
        assert_eq!(s.bytes.received, 12_345);
        assert!(!c.fin_received && !s.fin_received);
    };
    let (c, s) = conn.ends(&mut reader);
    check(&c, &s);
    // Once everything is acknowledged, the figure comes from bytes_acked
    // alone, and is the same.
    let (c, s) = conn.until(&mut reader, "all acknowledged", all_acked);
    check(&c, &s);
    assert_eq!(c.counters.bytes_acked, 12_345 + 1);
    assert_eq!(s.counters.bytes_acked, 6_789);
    assert_eq!(c.counters.bytes_received, 6_789);
    assert_eq!(s.counters.bytes_received, 12_345);
    assert!(c.segs_out > 0 && s.segs_in > 0);
}

#[test]
fn exact_bytes_of_an_open_connection_v4() {
    exact_open(false);
}

#[test]
fn exact_bytes_of_an_open_connection_v6() {
    exact_open(true);
}

/// The server reads 20,000 of the 50,000 bytes the client wrote: once
/// all of them arrived (30,000 waiting between copied_seq and rcv_nxt),
/// the server's received figure is the 20,000 its application read, not
/// the 50,000 the kernel holds; the client's sent figure is all 50,000.
#[test]
fn unread_data_is_not_received() {
    let net = NetPair::new().unwrap();
    let mut reader = OpenTcpReader::load().expect("load the iterator");
    let server_addr = SocketAddr::new(net.a_v4().parse().unwrap(), 7312);
    let mut conn = Conn::open(&net, server_addr);
    conn.client.write_all(&pattern(50_000)).unwrap();
    let mut got = vec![0; 20_000];
    conn.server.read_exact(&mut got).unwrap();
    assert_eq!(got, pattern(20_000));

    let (c, s) = conn.until(&mut reader, "all 50,000 bytes arrived", |_, s| {
        s.counters.rcv_nxt.wrapping_sub(s.counters.copied_seq) == 30_000
    });
    assert_eq!(s.counters.bytes_received, 50_000);
    assert_eq!(s.bytes.received, 20_000);
    assert_eq!(c.bytes.sent, 50_000 + 1);
    assert_eq!(c.bytes.received, 0);
    assert_eq!(s.bytes.sent, 0);

    // Reading 5,000 more moves the figure by exactly that.
    let mut more = vec![0; 5_000];
    conn.server.read_exact(&mut more).unwrap();
    let (_, s) = conn.ends(&mut reader);
    assert_eq!(s.bytes.received, 25_000);
}

/// A half-close: the client writes 1,000 bytes and shuts its side
/// (FIN_WAIT1/2: its FIN took one sequence number, which comes off), the
/// server reads to the end, FIN included (CLOSE_WAIT, SOCK_DONE: the FIN
/// comes off its received figure), then answers 500 that the client reads.
#[test]
fn half_closed_connection_counts_no_fin() {
    let net = NetPair::new().unwrap();
    let mut reader = OpenTcpReader::load().expect("load the iterator");
    let server_addr = SocketAddr::new(net.a_v6().parse().unwrap(), 7313);
    let mut conn = Conn::open(&net, server_addr);
    conn.client.write_all(&pattern(1_000)).unwrap();
    conn.client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    conn.server.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 1_000);
    conn.server.write_all(&pattern(500)).unwrap();
    let mut back = vec![0; 500];
    conn.client.read_exact(&mut back).unwrap();

    let (c, s) = conn.until(&mut reader, "the client's FIN acknowledged", all_acked);
    assert_eq!(c.state, TcpState::FinWait2);
    assert_eq!(s.state, TcpState::CloseWait);
    assert!(s.fin_received && !c.fin_received);
    // Raw counters hold the FIN on both ends ...
    assert_eq!(c.counters.bytes_acked, 1 + 1_000 + 1);
    assert_eq!(s.counters.bytes_received, 1_000 + 1);
    // ... the figures do not.
    assert_eq!(c.bytes.sent, 1_000 + 1);
    assert_eq!(c.bytes.data_sent(true), 1_000);
    assert_eq!(c.bytes.received, 500);
    assert_eq!(s.bytes.received, 1_000);
    assert_eq!(s.bytes.sent, 500);
}

/// The kernel's TCP iterator walks only the namespace of the task that
/// created it: made in `a` it returns the server end and not the client
/// end (in `b`), and made in the test's own namespace neither. Every
/// record names the namespace it was read in; a read of every namespace
/// finds each end once, under its own.
#[test]
fn an_iterator_sees_only_its_own_namespace() {
    require_root();
    let net = NetPair::new().unwrap();
    let reader = OpenTcpReader::load().expect("load the iterator");
    let server_addr = SocketAddr::new(net.a_v4().parse().unwrap(), 7314);
    let conn = Conn::open(&net, server_addr);
    let (a_path, a) = ns(&net.a);
    let (b_path, b) = ns(&net.b);
    let ours = |s: &OpenSocket| {
        (s.local == conn.client_addr && s.peer == server_addr)
            || (s.local == server_addr && s.peer == conn.client_addr)
    };

    let in_a = reader.read_namespace(&a_path, a).unwrap();
    assert!(in_a.iter().all(|s| s.netns == a));
    let mine: Vec<_> = in_a.iter().filter(|s| ours(s)).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].local, server_addr);

    let in_b = reader.read_namespace(&b_path, b).unwrap();
    assert!(in_b.iter().all(|s| s.netns == b));
    let mine: Vec<_> = in_b.iter().filter(|s| ours(s)).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].local, conn.client_addr);

    let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
    assert!(own != a && own != b);
    let host = reader
        .read_namespace(&PathBuf::from("/proc/self/ns/net"), own)
        .unwrap();
    assert!(host.iter().all(|s| s.netns == own));
    assert!(
        !host.iter().any(ours),
        "the host's iterator saw a's or b's socket"
    );

    // A read of every namespace: each end once, under its own namespace.
    let mut reader = reader;
    let snap = reader.read_all();
    assert!(snap.failed.is_empty(), "{:?}", snap.failed);
    let mut mine: Vec<(SocketAddr, u32)> = snap
        .sockets
        .iter()
        .filter(|s| ours(s))
        .map(|s| (s.local, s.netns))
        .collect();
    mine.sort();
    let mut want = vec![(server_addr, a), (conn.client_addr, b)];
    want.sort();
    assert_eq!(mine, want);
    drop(conn);
}

fn comm(s: &str) -> [u8; 16] {
    let mut n = [0; 16];
    n[..s.len()].copy_from_slice(s.as_bytes());
    n
}

/// The TCP states in `/proc/thread-self/net/tcp` of namespace `path` for
/// local port `port` (hex state numbers, as the file gives them).
fn proc_states(path: &std::path::Path, netns: u32, port: u16) -> Vec<String> {
    in_namespace::<_, anyhow::Error>(path, netns, "t-proc-tcp", move || {
        let text = std::fs::read_to_string("/proc/thread-self/net/tcp")?;
        let want = format!(":{port:04X}");
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(1)?.ends_with(&want)).then(|| f.get(3).map(|s| s.to_string()))?
            })
            .collect())
    })
    .expect("read /proc/net/tcp in the namespace")
}

/// An open connection through the conversion the agent's walk uses
/// (`open_conn`), with the owners a join gives from real socket addresses:
/// the client's (its CONNECT) sheds its SYN, the server's (its listener's
/// LISTEN) sheds nothing, and both carry exactly what their application
/// wrote and read, their namespace, tuple and process. Then the client
/// closes first: its end goes to TIME_WAIT and the server's to CLOSE, and
/// the walk writes neither (a TIME_WAIT socket is not a full socket).
#[test]
fn open_connection_as_the_collector_gets_it() {
    let net = NetPair::new().unwrap();
    let mut reader = OpenTcpReader::load().expect("load the iterator");
    let server_addr = SocketAddr::new(net.a_v4().parse().unwrap(), 7315);
    let mut conn = Conn::open(&net, server_addr);
    conn.client.write_all(&pattern(4_000)).unwrap();
    let mut got = vec![0; 4_000];
    conn.server.read_exact(&mut got).unwrap();
    conn.server.write_all(&pattern(3_000)).unwrap();
    let mut got = vec![0; 3_000];
    conn.client.read_exact(&mut got).unwrap();
    let (c, s) = conn.ends(&mut reader);

    let pid = std::process::id();
    let mut join = TcpJoin::new(
        Limits::new(16, 16, 16, 16, 500).unwrap(),
        TickClock::new(250, 1_000, 4_000_000_000).unwrap(),
    );
    let process = Event {
        kind: event_kind::PROCESS,
        conn: KernelConn {
            tgid: pid,
            comm: comm("open_tcp-test"),
            ..KernelConn::default()
        },
        ..Event::default()
    };
    // The listener's LISTEN record: its address and port.
    let std::net::IpAddr::V4(server_ip) = server_addr.ip() else {
        unreachable!("an IPv4 server address")
    };
    let mut laddr = [0; 16];
    laddr[..4].copy_from_slice(&server_ip.octets());
    let listen = Event {
        kind: event_kind::LISTEN,
        sk: 0x1,
        ts_ns: 900,
        conn: KernelConn {
            tgid: pid,
            family: AF_INET,
            lport: server_addr.port(),
            netns: conn.a,
            laddr,
            ..KernelConn::default()
        },
        ..Event::default()
    };
    for r in [
        Record::Event(process),
        Record::Event(listen),
        Record::Connect(ConnectRec {
            kind: event_kind::CONNECT_MIN,
            tgid: pid,
            sk: c.sk,
            ts: 1_250,
        }),
    ] {
        join.feed(&r).unwrap();
    }
    let client = open_conn(&c, join.owner(c.sk, listen_key(&c)));
    let server = open_conn(&s, join.owner(s.sk, listen_key(&s)));
    assert_eq!(
        (
            client.bytes_tx,
            client.bytes_rx,
            server.bytes_tx,
            server.bytes_rx
        ),
        (4_000, 3_000, 3_000, 4_000)
    );
    assert_eq!((client.role, server.role), (role::CLIENT, role::SERVER));
    assert_eq!((client.tgid, server.tgid), (pid, pid));
    assert_eq!(
        (client.comm, server.comm),
        (comm("open_tcp-test"), comm("open_tcp-test"))
    );
    // The client opened at tick 1,250: 1 s after the clock's anchor.
    assert_eq!((client.opened_ns, server.opened_ns), (5_000_000_000, 0));
    assert_eq!((client.established, server.established), (1, 1));
    assert_eq!((client.netns, server.netns), (conn.b, conn.a));
    assert_eq!((client.family, server.family), (AF_INET, AF_INET));
    assert_eq!(
        (client.lport, client.rport),
        (conn.client_addr.port(), server_addr.port())
    );
    assert_eq!(
        (server.lport, server.rport),
        (server_addr.port(), conn.client_addr.port())
    );
    assert_eq!(&client.raddr[..4], &server.laddr[..4]);
    assert_eq!(&client.laddr[..4], &server.raddr[..4]);
    assert_eq!(
        (client.segs_out, client.segs_in, client.srtt_us),
        (c.segs_out, c.segs_in, c.srtt_us)
    );
    assert!(
        client.segs_out >= 3 && server.segs_in >= 3,
        "{client:?} {server:?}"
    );
    // Without owners: the client keeps its SYN, as its CLOSE would.
    assert_eq!(open_conn(&c, None).bytes_tx, 4_001);

    // The client closes first, the server after reading its FIN.
    let Conn {
        client: client_stream,
        server: mut server_stream,
        client_addr,
        a,
        b,
        ..
    } = conn;
    drop(client_stream);
    let mut rest = Vec::new();
    server_stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(server_stream);
    let (b_path, _) = ns(&net.b);
    let start = Instant::now();
    loop {
        // 06: TIME_WAIT, in include/net/tcp_states.h's numbering.
        if proc_states(&b_path, b, client_addr.port()) == ["06"] {
            break;
        }
        assert!(start.elapsed() < WAIT, "the client never reached TIME_WAIT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let snap = reader.read_all();
    assert!(snap.failed.is_empty(), "{:?}", snap.failed);
    assert!(snap.namespaces.contains(&a) && snap.namespaces.contains(&b));
    let ours: Vec<_> = snap
        .sockets
        .iter()
        .filter(|x| x.local == client_addr || x.peer == client_addr)
        .collect();
    assert!(ours.is_empty(), "walked after the close: {ours:?}");
}
