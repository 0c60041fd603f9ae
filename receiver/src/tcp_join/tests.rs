//! The join's rules, each with exact numbers, and the seven cases the
//! prototype checked against the kernel (`scripts/proto-tcp/cases.py` on
//! branch tcp-counters-proto2) as record sequences.

use std::error::Error as _;

use flowscope_common::{AF_INET, AF_INET6, CloseRec, Conn, ConnectRec, Event, event_kind, role};

use super::*;

const NETNS: u32 = 4_026_531_840;
const CLIENT_SK: u64 = 0xffff_8880_0000_1000;
const SERVER_SK: u64 = 0xffff_8880_0000_2000;
const LISTEN_SK: u64 = 0xffff_8880_0000_3000;
const CLIENT_PID: u32 = 100;
const SERVER_PID: u32 = 200;
/// HZ 250: 4 ms a tick. Tick 1,000 is 10 s on the anchor's clock.
const HZ: u32 = 250;
const ANCHOR_TICK: u64 = 1_000;
const ANCHOR_NS: u64 = 10_000_000_000;

fn clock() -> TickClock {
    TickClock::new(HZ, ANCHOR_TICK, ANCHOR_NS).unwrap()
}

fn join() -> TcpJoin {
    TcpJoin::new(Limits::new(64, 8, 64, 64, 500).unwrap(), clock())
}

fn name(s: &str) -> [u8; 16] {
    let mut n = [0; 16];
    n[..s.len()].copy_from_slice(s.as_bytes());
    n
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut r = [0; 16];
    r[..4].copy_from_slice(&a);
    r
}

/// ::ffff:a.b.c.d, as an IPv6 socket holds an IPv4 peer.
fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut r = [0; 16];
    r[10] = 0xff;
    r[11] = 0xff;
    r[12..].copy_from_slice(&a);
    r
}

const LO: [u8; 4] = [127, 0, 0, 1];

/// A tuple as the kernel records it (only the tuple fields of `Conn` set).
fn tuple(family: u16, laddr: [u8; 16], lport: u16, raddr: [u8; 16], rport: u16) -> Conn {
    Conn {
        family,
        laddr,
        lport,
        raddr,
        rport,
        netns: NETNS,
        ..Conn::default()
    }
}

/// The client's end of a loopback connection to port 7000.
fn client_tuple() -> Conn {
    tuple(AF_INET, v4(LO), 40_000, v4(LO), 7_000)
}

/// The server's (accepted) end of the same connection.
fn server_tuple() -> Conn {
    tuple(AF_INET, v4(LO), 7_000, v4(LO), 40_000)
}

fn connect(sk: u64, tgid: u32, tick: u64) -> Record {
    Record::Connect(ConnectRec {
        kind: event_kind::CONNECT_MIN,
        tgid,
        sk,
        ts: tick,
    })
}

/// An ACCEPT record: the accepted socket's handshake ended (no process).
fn accept(sk: u64, tick: u64) -> Record {
    Record::Accept(ConnectRec {
        kind: event_kind::ACCEPT,
        tgid: 0,
        sk,
        ts: tick,
    })
}

/// A LISTEN_CLOSE record: listener `sk` moved to CLOSE.
fn listen_close(sk: u64, port: u16) -> Record {
    let mut c = tuple(AF_INET, v4(LO), port, [0; 16], 0);
    c.role = role::SERVER;
    event(event_kind::LISTEN_CLOSE, sk, ANCHOR_TICK + 50, c)
}

/// A CLOSE record with `sent` / `received` as the kernel derives them
/// (see [`AtClose`]), and fixed segment, retransmit and RTT figures.
fn close(sk: u64, t: &Conn, (sent, received): (u64, u64), tick: u64) -> Record {
    Record::Close(CloseRec {
        kind: event_kind::CLOSE_MIN,
        family: t.family,
        lport: t.lport,
        rport: t.rport,
        _pad: 0,
        netns: t.netns,
        sk,
        bytes_tx: sent,
        bytes_rx: received,
        segs_in: 7,
        segs_out: 9,
        total_retrans: 2,
        srtt_us: 55,
        rttvar_us: 27,
        copied_seq: 0,
        laddr: t.laddr,
        raddr: t.raddr,
        ts: tick,
    })
}

fn event(kind: u32, sk: u64, tick: u64, conn: Conn) -> Record {
    Record::Event(Event {
        kind,
        errno: 0,
        sk,
        ts_ns: tick,
        conn,
    })
}

/// A PROCESS record: the kernel fills only the tgid and the name (no
/// socket, no time).
fn process(tgid: u32, comm: &str) -> Record {
    event(
        event_kind::PROCESS,
        0,
        0,
        Conn {
            tgid,
            comm: name(comm),
            ..Conn::default()
        },
    )
}

/// listen() on `laddr:port` (a LISTEN record: the process and the tuple).
fn listen(sk: u64, tgid: u32, family: u16, laddr: [u8; 16], port: u16) -> Record {
    let mut c = tuple(family, laddr, port, [0; 16], 0);
    c.tgid = tgid;
    c.role = role::SERVER;
    event(event_kind::LISTEN, sk, ANCHOR_TICK, c)
}

/// A LATE record of a read that began after the CLOSE (whose `copied_seq`
/// these tests leave at 0): the read ends `bytes` past it.
fn late(sk: u64, t: &Conn, bytes: u64, tick: u64) -> Record {
    late_at(sk, t, bytes, bytes as u32, tick)
}

/// A LATE record of a read of `bytes` that ended at sequence `read_end`.
fn late_at(sk: u64, t: &Conn, bytes: u64, read_end: u32, tick: u64) -> Record {
    let mut c = *t;
    c.bytes_rx = bytes;
    match event(event_kind::LATE, sk, tick, c) {
        Record::Event(mut ev) => {
            ev.errno = read_end as i32;
            Record::Event(ev)
        }
        other => other,
    }
}

/// A RESET record: its local port is `inet_num`, 0 once an unbound port
/// was released at CLOSE.
fn reset(sk: u64, t: &Conn, transmit: bool, tick: u64) -> Record {
    let mut c = *t;
    if transmit {
        c.resets_tx = 1;
    } else {
        c.resets_rx = 1;
    }
    event(event_kind::RESET, sk, tick, c)
}

fn failed(sk: u64, t: &Conn, errno: i32, tick: u64) -> Record {
    match event(event_kind::FAILED, sk, tick, *t) {
        Record::Event(mut ev) => {
            ev.errno = errno;
            Record::Event(ev)
        }
        _ => unreachable!(),
    }
}

fn run(j: &mut TcpJoin, recs: &[Record]) -> Vec<Event> {
    recs.iter().filter_map(|r| j.feed(r).unwrap()).collect()
}

fn of_kind(out: &[Event], kind: u32) -> Vec<Event> {
    out.iter().filter(|e| e.kind == kind).copied().collect()
}

/// The one CLOSE of socket `sk` in `out`.
fn closed(out: &[Event], sk: u64) -> Conn {
    let c: Vec<_> = out
        .iter()
        .filter(|e| e.kind == event_kind::CLOSE && e.sk == sk)
        .collect();
    assert_eq!(c.len(), 1, "one CLOSE of {sk:#x}");
    c[0].conn
}

/// Bytes sent and received as the collector adds them up: every CLOSE's
/// and every LATE's.
fn totals(out: &[Event]) -> (u64, u64) {
    out.iter()
        .filter(|e| e.kind == event_kind::CLOSE || e.kind == event_kind::LATE)
        .fold((0, 0), |(s, r), e| {
            (s + e.conn.bytes_tx, r + e.conn.bytes_rx)
        })
}

/// One socket's life up to its CLOSE, in TCP's terms: from it, [`AtClose`]
/// sets `struct tcp_sock` as the kernel would, and [`AtClose::derive`]
/// applies the CLOSE program's derivation (`close_bytes` in
/// receiver-ebpf/src/tcp.rs; docs/benchmarks.md, "Bytes, from the kernel
/// source"). The test cases give the life; the record's bytes come out.
#[derive(Clone, Copy, Default)]
struct Life {
    /// A client: its SYN is the first number of its send sequence.
    client: bool,
    /// Its ISN, and the peer's.
    isn: u32,
    peer_isn: u32,
    /// Bytes sendmsg copied (`write_seq += copy`).
    queued: u64,
    /// Of what was queued (SYN, data, FIN), how much the peer never
    /// acknowledged.
    unacked: u64,
    /// Left for CLOSE from FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK or
    /// TIME_WAIT (`tcp_send_fin()` added 1 to `write_seq`).
    fin_queued: bool,
    /// In-order data that arrived, and whether the peer's FIN followed
    /// (`tcp_fin()` sets SOCK_DONE).
    arrived: u64,
    fin_arrived: bool,
    /// Bytes recvmsg copied before the CLOSE, and whether a recvmsg
    /// returned 0 at the FIN (`copied_seq` moved over it).
    read: u64,
    fin_read: bool,
}

/// The `struct tcp_sock` fields the CLOSE program reads.
struct AtClose {
    bytes_acked: u64,
    bytes_received: u64,
    write_seq: u32,
    snd_una: u32,
    rcv_nxt: u32,
    copied_seq: u32,
    fin_queued: bool,
    sock_done: bool,
}

impl AtClose {
    fn of(l: Life) -> Self {
        // A client's snd_una starts at its ISN (the SYN's number,
        // tcp_connect_init()); an accepted socket's at ISN + 1
        // (tcp_create_openreq_child()): its SYN-ACK is not counted.
        let syn = u64::from(l.client);
        let first_una = if l.client {
            l.isn
        } else {
            l.isn.wrapping_add(1)
        };
        let sequence = syn + l.queued + u64::from(l.fin_queued);
        let bytes_acked = sequence - l.unacked;
        // The peer's SYN is not in rcv_nxt's advances (it is set directly).
        let first_rcv = l.peer_isn.wrapping_add(1);
        let bytes_received = l.arrived + u64::from(l.fin_arrived);
        let read = l.read + u64::from(l.fin_read);
        Self {
            bytes_acked,
            bytes_received,
            // Sequence numbers are 32 bits and wrap.
            write_seq: first_una.wrapping_add(sequence as u32),
            snd_una: first_una.wrapping_add(bytes_acked as u32),
            rcv_nxt: first_rcv.wrapping_add(bytes_received as u32),
            copied_seq: first_rcv.wrapping_add(read as u32),
            fin_queued: l.fin_queued,
            sock_done: l.fin_arrived,
        }
    }

    /// (sent, received) as the CLOSE record carries them.
    fn derive(&self) -> (u64, u64) {
        let queued = self.bytes_acked + u64::from(self.write_seq.wrapping_sub(self.snd_una));
        let unread = u64::from(self.rcv_nxt.wrapping_sub(self.copied_seq));
        let fin_read = self.sock_done && self.copied_seq == self.rcv_nxt;
        (
            queued - u64::from(self.fin_queued),
            self.bytes_received - unread - u64::from(fin_read),
        )
    }
}

fn kernel_bytes(l: Life) -> (u64, u64) {
    AtClose::of(l).derive()
}

/// ISNs near the 32-bit wrap, so that the in-flight differences wrap.
const C_ISN: u32 = u32::MAX - 40;
const S_ISN: u32 = u32::MAX - 2;

fn client_life() -> Life {
    Life {
        client: true,
        isn: C_ISN,
        peer_isn: S_ISN,
        ..Life::default()
    }
}

fn server_life() -> Life {
    Life {
        client: false,
        isn: S_ISN,
        peer_isn: C_ISN,
        ..Life::default()
    }
}

/// The records every case begins with: the server listens on
/// 127.0.0.1:7000 and the client connects at tick 1,000. Each PROCESS
/// record follows the record whose program announced the process (the
/// announcement is reserved inside the other record's fill).
fn opening() -> Vec<Record> {
    vec![
        listen(LISTEN_SK, SERVER_PID, AF_INET, v4(LO), 7_000),
        process(SERVER_PID, "server"),
        connect(CLIENT_SK, CLIENT_PID, 1_000),
        process(CLIENT_PID, "client"),
    ]
}

/// What every CLOSE of the cases shares: the process and role by the
/// join, the counters as the record gave them.
fn assert_client(c: &Conn) {
    assert_eq!(c.role, role::CLIENT);
    assert_eq!((c.tgid, c.comm), (CLIENT_PID, name("client")));
    assert_eq!(c.opened_ns, 10_000_000_000);
    assert_eq!((c.lport, c.rport, c.netns), (40_000, 7_000, NETNS));
    assert_eq!((c.segs_in, c.segs_out, c.total_retrans), (7, 9, 2));
    assert_eq!((c.srtt_us, c.rttvar_us, c.established), (55, 27, 1));
}

fn assert_server(c: &Conn) {
    assert_eq!(c.role, role::SERVER);
    assert_eq!((c.tgid, c.comm), (SERVER_PID, name("server")));
    // The cases' streams have no ACCEPT (see accept_gives_the_servers_open).
    assert_eq!(c.opened_ns, 0);
    assert_eq!((c.lport, c.rport), (7_000, 40_000));
}

// ---------------------------------------------------------------------
// The seven cases of scripts/proto-tcp/cases.py.

/// Client sends 100, server reads them, sends 100 and closes first;
/// the client reads to EOF and closes. Expected 200 / 200.
#[test]
fn case_server_closes_first() {
    // Server: FIN_WAIT1 -> FIN_WAIT2 -> the client's FIN -> TIME_WAIT
    // (tcp_time_wait -> tcp_done): its FIN queued and acknowledged, the
    // client's FIN arrived after its close, unread (copied_seq != rcv_nxt).
    let server = kernel_bytes(Life {
        queued: 100,
        fin_queued: true,
        arrived: 100,
        fin_arrived: true,
        read: 100,
        ..server_life()
    });
    assert_eq!(server, (100, 100));
    // Client: CLOSE_WAIT -> LAST_ACK -> CLOSE when its FIN is acknowledged;
    // it read the FIN (recv returned 0). Its SYN is still in "sent".
    let client = kernel_bytes(Life {
        queued: 100,
        fin_queued: true,
        arrived: 100,
        fin_arrived: true,
        read: 100,
        fin_read: true,
        ..client_life()
    });
    assert_eq!(client, (101, 100));

    let mut recs = opening();
    recs.push(close(SERVER_SK, &server_tuple(), server, 1_010));
    recs.push(close(CLIENT_SK, &client_tuple(), client, 1_011));
    let mut j = join();
    let out = run(&mut j, &recs);

    let c = closed(&out, CLIENT_SK);
    assert_client(&c);
    assert_eq!((c.bytes_tx, c.bytes_rx), (100, 100));
    let s = closed(&out, SERVER_SK);
    assert_server(&s);
    assert_eq!((s.bytes_tx, s.bytes_rx), (100, 100));
    assert_eq!(totals(&out), (200, 200));
    // The close's time: tick 1,011 is 11 ticks of 4 ms after the anchor.
    let ev = out.iter().find(|e| e.sk == CLIENT_SK).unwrap();
    assert_eq!(ev.ts_ns, 10_044_000_000);
    assert_eq!(j.drops().iter().count(), 0);
    assert_eq!(j.waiting(), 0);
}

/// Client sends 100 and shuts down its write side; the server reads to
/// EOF, answers 70 and closes; the client reads the 70 only after it
/// reached CLOSE. Expected 170 / 170.
#[test]
fn case_client_half_close() {
    // Client: FIN_WAIT1 -> FIN_WAIT2; the server's 70 and FIN arrive and
    // tcp_fin() -> tcp_time_wait() -> CLOSE before the client read them.
    let client = kernel_bytes(Life {
        queued: 100,
        fin_queued: true,
        arrived: 70,
        fin_arrived: true,
        ..client_life()
    });
    assert_eq!(client, (101, 0));
    // Server: read the 100 and the FIN, CLOSE_WAIT -> LAST_ACK -> CLOSE.
    let server = kernel_bytes(Life {
        queued: 70,
        fin_queued: true,
        arrived: 100,
        fin_arrived: true,
        read: 100,
        fin_read: true,
        ..server_life()
    });
    assert_eq!(server, (70, 100));

    let mut recs = opening();
    recs.push(close(CLIENT_SK, &client_tuple(), client, 1_010));
    recs.push(close(SERVER_SK, &server_tuple(), server, 1_010));
    // The client's read of 70 on a socket in CLOSE.
    recs.push(late(CLIENT_SK, &client_tuple(), 70, 1_012));
    let mut j = join();
    let out = run(&mut j, &recs);

    let c = closed(&out, CLIENT_SK);
    assert_client(&c);
    assert_eq!((c.bytes_tx, c.bytes_rx), (100, 0));
    let l = of_kind(&out, event_kind::LATE);
    assert_eq!(l.len(), 1);
    // The late bytes go out as the closed client's: its process and role.
    assert_eq!(
        (l[0].sk, l[0].conn.bytes_rx, l[0].conn.bytes_tx),
        (CLIENT_SK, 70, 0)
    );
    assert_eq!((l[0].conn.role, l[0].conn.tgid), (role::CLIENT, CLIENT_PID));
    assert_eq!(l[0].conn.comm, name("client"));
    assert_eq!(l[0].ts_ns, 10_048_000_000);
    let s = closed(&out, SERVER_SK);
    assert_server(&s);
    assert_eq!((s.bytes_tx, s.bytes_rx), (70, 100));
    assert_eq!(totals(&out), (170, 170));
    assert_eq!(j.drops().iter().count(), 0);
}

/// The server closes with SO_LINGER 0 after both sides moved data (100
/// up, 50 down): tcp_disconnect() moves it to CLOSE, then sends a reset;
/// the client receives it. Expected 150 / 150.
#[test]
fn case_linger_zero() {
    // No FIN on either side.
    let server = kernel_bytes(Life {
        queued: 50,
        arrived: 100,
        read: 100,
        ..server_life()
    });
    assert_eq!(server, (50, 100));
    let client = kernel_bytes(Life {
        queued: 100,
        arrived: 50,
        read: 50,
        ..client_life()
    });
    assert_eq!(client, (101, 50));

    // The server's RESET comes after its CLOSE, with local port 0 (the
    // accepted socket's port was released at CLOSE); the client's comes
    // before its CLOSE (tcp_reset() traces, then tcp_done()).
    let mut server_after = server_tuple();
    server_after.lport = 0;
    let mut recs = opening();
    recs.push(close(SERVER_SK, &server_tuple(), server, 1_010));
    recs.push(reset(SERVER_SK, &server_after, true, 1_010));
    recs.push(reset(CLIENT_SK, &client_tuple(), false, 1_010));
    recs.push(close(CLIENT_SK, &client_tuple(), client, 1_010));
    let mut j = join();
    let out = run(&mut j, &recs);

    let c = closed(&out, CLIENT_SK);
    assert_client(&c);
    assert_eq!((c.bytes_tx, c.bytes_rx), (100, 50));
    assert_eq!((c.resets_tx, c.resets_rx), (0, 1));
    let s = closed(&out, SERVER_SK);
    assert_server(&s);
    assert_eq!((s.bytes_tx, s.bytes_rx), (50, 100));
    assert_eq!((s.resets_tx, s.resets_rx), (0, 0));
    // The server's reset, after its CLOSE: a LATE of the server's flow
    // (main's kernel side reports it the same way).
    let l = of_kind(&out, event_kind::LATE);
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].sk, l[0].conn.resets_tx, l[0].conn.resets_rx),
        (SERVER_SK, 1, 0)
    );
    assert_eq!(
        (l[0].conn.role, l[0].conn.tgid, l[0].conn.lport),
        (role::SERVER, SERVER_PID, 7_000)
    );
    assert_eq!(totals(&out), (150, 150));
    assert_eq!(j.drops().iter().count(), 0);
}

/// The server reads 40 of the client's 100 and closes: __tcp_close()
/// with data unread sends a reset instead of a FIN. Expected 100 / 40.
#[test]
fn case_unread_data() {
    // The 60 unread never reached copied_seq.
    let server = kernel_bytes(Life {
        arrived: 100,
        read: 40,
        ..server_life()
    });
    assert_eq!(server, (0, 40));
    let client = kernel_bytes(Life {
        queued: 100,
        ..client_life()
    });
    assert_eq!(client, (101, 0));

    let mut server_after = server_tuple();
    server_after.lport = 0;
    let mut recs = opening();
    recs.push(close(SERVER_SK, &server_tuple(), server, 1_005));
    recs.push(reset(SERVER_SK, &server_after, true, 1_005));
    recs.push(reset(CLIENT_SK, &client_tuple(), false, 1_005));
    recs.push(close(CLIENT_SK, &client_tuple(), client, 1_006));
    let out = run(&mut join(), &recs);

    let c = closed(&out, CLIENT_SK);
    assert_eq!((c.bytes_tx, c.bytes_rx, c.resets_rx), (100, 0, 1));
    let s = closed(&out, SERVER_SK);
    assert_eq!((s.bytes_tx, s.bytes_rx), (0, 40));
    assert_eq!(totals(&out), (100, 40));
}

/// The client queues 3,910,656 bytes that the server's small buffer
/// cannot take; the server reads 1,000 and resets. Expected
/// 3,910,656 / 1,000.
#[test]
fn case_unsent_at_reset() {
    // The server's TCP took 2,000,000 in order and acknowledged them; its
    // application read 1,000.
    let server = kernel_bytes(Life {
        arrived: 2_000_000,
        read: 1_000,
        ..server_life()
    });
    assert_eq!(server, (0, 1_000));
    // The client's queue was freed by the reset (tcp_write_queue_purge()),
    // but write_seq - snd_una still holds the 1,910,656 never acknowledged:
    // with an ISN 3,000,001 below 2^32, snd_una is still below the wrap
    // and write_seq past it.
    let at = AtClose::of(Life {
        queued: 3_910_656,
        unacked: 1_910_656,
        isn: u32::MAX - 3_000_000,
        ..client_life()
    });
    assert_eq!((at.snd_una, at.write_seq), (u32::MAX - 999_999, 910_656));
    assert!(at.write_seq < at.snd_una);
    let client = at.derive();
    assert_eq!(client, (3_910_657, 0));

    let mut server_after = server_tuple();
    server_after.lport = 0;
    let mut recs = opening();
    recs.push(close(SERVER_SK, &server_tuple(), server, 1_050));
    recs.push(reset(SERVER_SK, &server_after, true, 1_050));
    recs.push(reset(CLIENT_SK, &client_tuple(), false, 1_050));
    recs.push(close(CLIENT_SK, &client_tuple(), client, 1_050));
    let out = run(&mut join(), &recs);

    let c = closed(&out, CLIENT_SK);
    assert_eq!((c.bytes_tx, c.bytes_rx, c.resets_rx), (3_910_656, 0, 1));
    assert_eq!(totals(&out), (3_910_656, 1_000));
}

/// The server sends 100 and closes; the client half-closes without
/// reading, reaches CLOSE from LAST_ACK, and reads the 100 after.
/// Expected 100 / 100.
#[test]
fn case_reads_after_close() {
    // Server: its 100 and FIN acknowledged; the client's FIN arrived after
    // its close, unread.
    let server = kernel_bytes(Life {
        queued: 100,
        fin_queued: true,
        fin_arrived: true,
        ..server_life()
    });
    assert_eq!(server, (100, 0));
    // Client: only its SYN and FIN were sent; 100 and the FIN arrived,
    // nothing read.
    let client = kernel_bytes(Life {
        fin_queued: true,
        arrived: 100,
        fin_arrived: true,
        ..client_life()
    });
    assert_eq!(client, (1, 0));

    let mut recs = opening();
    recs.push(close(SERVER_SK, &server_tuple(), server, 1_020));
    recs.push(close(CLIENT_SK, &client_tuple(), client, 1_033));
    recs.push(late(CLIENT_SK, &client_tuple(), 100, 1_040));
    let out = run(&mut join(), &recs);

    let c = closed(&out, CLIENT_SK);
    assert_client(&c);
    assert_eq!((c.bytes_tx, c.bytes_rx), (0, 0));
    let l = of_kind(&out, event_kind::LATE);
    assert_eq!(
        (l.len(), l[0].conn.bytes_rx, l[0].conn.tgid),
        (1, 100, CLIENT_PID)
    );
    assert_eq!(totals(&out), (100, 100));
}

/// connect() to a port nobody listens on: the SYN is answered with a
/// reset (tcp_reset() traces it, then SYN_SENT -> CLOSE with sk_err
/// ECONNREFUSED). Expected 0 / 0 and one failed connection.
#[test]
fn case_refused() {
    let mut t = client_tuple();
    // The failed socket's port was released before the tracepoint.
    t.lport = 0;
    let recs = [
        connect(CLIENT_SK, CLIENT_PID, 1_000),
        process(CLIENT_PID, "client"),
        reset(CLIENT_SK, &t, false, 1_000),
        failed(CLIENT_SK, &t, 111, 1_001),
    ];
    let mut j = join();
    let out = run(&mut j, &recs);
    assert_eq!(out.len(), 2); // PROCESS, FAILED
    // The PROCESS record goes on to the collector (it reads /proc then).
    assert_eq!(
        (out[0].kind, out[0].conn.tgid, out[0].ts_ns),
        (event_kind::PROCESS, CLIENT_PID, 0)
    );
    let f = of_kind(&out, event_kind::FAILED);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].errno, f[0].sk, f[0].ts_ns),
        (111, CLIENT_SK, 10_004_000_000)
    );
    let c = &f[0].conn;
    assert_eq!(
        (c.role, c.tgid, c.comm),
        (role::CLIENT, CLIENT_PID, name("client"))
    );
    assert_eq!((c.opened_ns, c.established), (10_000_000_000, 0));
    assert_eq!((c.bytes_tx, c.bytes_rx, c.resets_rx), (0, 0, 1));
    assert_eq!(c.rport, 7_000);
    assert_eq!(totals(&out), (0, 0));
    assert_eq!(j.waiting(), 0);
    assert_eq!(j.drops().iter().count(), 0);
}

// ---------------------------------------------------------------------
// The join's rules one by one.

/// The first record naming an address after its CONNECT is its CLOSE; the
/// CONNECT is forgotten there, and the address is a new socket after.
#[test]
fn pairs_by_address_in_ring_order_and_forgets() {
    let mut j = join();
    run(&mut j, &opening());
    let first = j
        .feed(&close(CLIENT_SK, &client_tuple(), (11, 5), 1_004))
        .unwrap()
        .unwrap();
    assert_eq!((first.conn.role, first.conn.bytes_tx), (role::CLIENT, 10));
    assert_eq!(j.waiting(), 0);
    // The same address, now an accepted socket of the listener: no SYN off.
    let second = j
        .feed(&close(CLIENT_SK, &server_tuple(), (11, 5), 1_008))
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.conn.role, second.conn.tgid),
        (role::SERVER, SERVER_PID)
    );
    assert_eq!((second.conn.bytes_tx, second.conn.opened_ns), (11, 0));
    // And again a client, with its own process and open time.
    run(
        &mut j,
        &[connect(CLIENT_SK, 300, 1_100), process(300, "other")],
    );
    let third = j
        .feed(&close(CLIENT_SK, &client_tuple(), (1, 0), 1_350))
        .unwrap()
        .unwrap();
    assert_eq!((third.conn.tgid, third.conn.comm), (300, name("other")));
    assert_eq!(
        (third.conn.opened_ns, third.ts_ns),
        (10_400_000_000, 11_400_000_000)
    );
    assert_eq!(third.conn.bytes_tx, 0);
}

/// A client whose sent figure is 0 (no record should give that: its SYN
/// was acknowledged) keeps 0, not a wrapped count.
#[test]
fn syn_subtraction_saturates() {
    let mut j = join();
    j.feed(&connect(CLIENT_SK, CLIENT_PID, 1_000)).unwrap();
    let e = j
        .feed(&close(CLIENT_SK, &client_tuple(), (0, 3), 1_001))
        .unwrap()
        .unwrap();
    assert_eq!((e.conn.bytes_tx, e.conn.bytes_rx), (0, 3));
}

/// An accepted socket is named by the listener of its local address: an
/// exact one, else one on the family's wildcard, else (IPv4) on `::`;
/// only in its own netns.
#[test]
fn listen_table_names_servers() {
    let host = [10, 0, 0, 5];
    let peer = [10, 0, 0, 9];
    let mut j = join();
    run(
        &mut j,
        &[
            listen(0x10, 1, AF_INET, v4([0, 0, 0, 0]), 80),
            listen(0x20, 2, AF_INET, v4(host), 80),
            listen(0x30, 3, AF_INET6, [0; 16], 443),
            listen(0x40, 4, AF_INET6, [0; 16], 8080),
        ],
    );
    let server = |j: &mut TcpJoin, sk, t: Conn| {
        let e = j.feed(&close(sk, &t, (1, 1), 1_001)).unwrap().unwrap();
        (e.conn.role, e.conn.tgid)
    };
    // Exact beats the wildcard.
    let t = tuple(AF_INET, v4(host), 80, v4(peer), 50_000);
    assert_eq!(server(&mut j, 0x100, t), (role::SERVER, 2));
    // Another local address: the wildcard.
    let t = tuple(AF_INET, v4([10, 0, 0, 6]), 80, v4(peer), 50_001);
    assert_eq!(server(&mut j, 0x101, t), (role::SERVER, 1));
    // IPv4 on a dual-stack `::` listener, as v4-mapped addresses.
    let t = tuple(AF_INET6, mapped(host), 443, mapped(peer), 50_002);
    assert_eq!(server(&mut j, 0x102, t), (role::SERVER, 3));
    // Plain IPv4 on `::` too.
    let t = tuple(AF_INET, v4(host), 8080, v4(peer), 50_003);
    assert_eq!(server(&mut j, 0x103, t), (role::SERVER, 4));
    // Another netns: no listener there.
    let mut t = tuple(AF_INET, v4(host), 80, v4(peer), 50_004);
    t.netns = NETNS + 1;
    assert_eq!(server(&mut j, 0x104, t), (role::UNKNOWN, 0));
    // No listener on the port at all.
    let t = tuple(AF_INET, v4(host), 81, v4(peer), 50_005);
    assert_eq!(server(&mut j, 0x105, t), (role::UNKNOWN, 0));
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 2);
    // Names unknown for all four processes (no PROCESS records here).
    assert_eq!(j.drops().get(DropReason::NameUnknown), 4);
}

/// The listener's entry ends when its socket address is reused (the
/// kernel frees a socket before reusing its memory), and a newer listener
/// of the same address and port replaces it.
#[test]
fn listen_entry_ends_with_its_socket() {
    let t = tuple(AF_INET, v4(LO), 7_000, v4(LO), 40_000);
    let role_of = |j: &mut TcpJoin, sk| {
        let e = j.feed(&close(sk, &t, (1, 1), 1_001)).unwrap().unwrap();
        (e.conn.role, e.conn.tgid)
    };
    // A CONNECT at the listener's address: the listener is gone.
    let mut j = join();
    j.feed(&listen(LISTEN_SK, SERVER_PID, AF_INET, v4(LO), 7_000))
        .unwrap();
    j.feed(&connect(LISTEN_SK, CLIENT_PID, 1_000)).unwrap();
    j.feed(&close(LISTEN_SK, &client_tuple(), (1, 0), 1_001))
        .unwrap();
    assert_eq!(role_of(&mut j, SERVER_SK), (role::UNKNOWN, 0));
    // A CLOSE at the listener's address (an accepted socket there, which
    // that listener cannot have made: it was freed first): gone, before
    // the CLOSE is named.
    let mut j = join();
    j.feed(&listen(LISTEN_SK, SERVER_PID, AF_INET, v4(LO), 7_000))
        .unwrap();
    assert_eq!(role_of(&mut j, SERVER_SK), (role::SERVER, SERVER_PID));
    assert_eq!(role_of(&mut j, LISTEN_SK), (role::UNKNOWN, 0));
    assert_eq!(role_of(&mut j, SERVER_SK + 8), (role::UNKNOWN, 0));
    // A newer listener on the same port replaces the older; the older's
    // address reused later does not end the newer.
    let mut j = join();
    j.feed(&listen(LISTEN_SK, SERVER_PID, AF_INET, v4(LO), 7_000))
        .unwrap();
    j.feed(&listen(LISTEN_SK + 8, 201, AF_INET, v4(LO), 7_000))
        .unwrap();
    j.feed(&connect(LISTEN_SK, CLIENT_PID, 1_000)).unwrap();
    assert_eq!(role_of(&mut j, SERVER_SK), (role::SERVER, 201));
    // listen() without bind(): port 0, counted, not kept.
    j.feed(&listen(0x50, 9, AF_INET, v4(LO), 0)).unwrap();
    assert_eq!(j.drops().get(DropReason::ListenWithoutPort), 1);
}

/// FAILED without a CONNECT still goes out, without a process.
#[test]
fn failed_without_connect() {
    let mut j = join();
    let e = j
        .feed(&failed(CLIENT_SK, &client_tuple(), 110, 1_000))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.kind, e.errno, e.conn.role, e.conn.tgid),
        (event_kind::FAILED, 110, role::CLIENT, 0)
    );
    assert_eq!(j.drops().get(DropReason::FailedUnattributed), 1);
}

/// LATE bytes join the connection closed at their address only while it
/// is the last socket there, and within the late window.
/// A reset that arrives while the application reads waits in the socket's
/// backlog and moves the socket to CLOSE as the read releases its lock,
/// before the read's tracepoint: the CLOSE record counted that read (its
/// `copied_seq` is past it), so the LATE record of the same read adds
/// nothing. A read across the change adds what lies past the CLOSE's
/// position. Sequence numbers wrap.
#[test]
fn a_read_the_close_counted_adds_nothing_late() {
    let mut j = join();
    run(&mut j, &opening());
    let at_close: u32 = 0xffff_ff00;
    let mut c = close(CLIENT_SK, &client_tuple(), (1, 500), 1_000);
    if let Record::Close(r) = &mut c {
        r.copied_seq = at_close;
    }
    let closed = j.feed(&c).unwrap().unwrap();
    let same = j
        .feed(&late_at(CLIENT_SK, &client_tuple(), 500, at_close, 1_000))
        .unwrap()
        .unwrap();
    let across = j
        .feed(&late_at(
            CLIENT_SK,
            &client_tuple(),
            400,
            at_close.wrapping_add(300),
            1_001,
        ))
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            closed.conn.bytes_rx,
            same.conn.bytes_rx,
            across.conn.bytes_rx
        ),
        (500, 0, 300)
    );
}

#[test]
fn late_bytes_join_the_last_close() {
    let mut j = join();
    run(&mut j, &opening());
    j.feed(&close(CLIENT_SK, &client_tuple(), (1, 0), 1_000))
        .unwrap();
    let a = j
        .feed(&late(CLIENT_SK, &client_tuple(), 10, 1_001))
        .unwrap()
        .unwrap();
    let b = j
        .feed(&late(CLIENT_SK, &client_tuple(), 20, 1_002))
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.conn.bytes_rx, a.conn.tgid, b.conn.bytes_rx, b.conn.tgid),
        (10, CLIENT_PID, 20, CLIENT_PID)
    );
    // A new CONNECT at the address: the closed one is gone (a LATE now
    // would be another socket's; it goes out as its own, unattributed).
    j.feed(&connect(CLIENT_SK, 300, 1_003)).unwrap();
    j.feed(&close(CLIENT_SK, &client_tuple(), (1, 0), 1_004))
        .unwrap();
    // Past the late window (500 ticks): forgotten.
    j.expire(1_004 + 500);
    let c = j
        .feed(&late(CLIENT_SK, &client_tuple(), 5, 1_504))
        .unwrap()
        .unwrap();
    assert_eq!(c.conn.tgid, 300);
    j.expire(1_004 + 501);
    let d = j
        .feed(&late(CLIENT_SK, &client_tuple(), 7, 1_505))
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.kind, d.conn.tgid, d.conn.role, d.conn.bytes_rx),
        (event_kind::LATE, 0, role::UNKNOWN, 7)
    );
    assert_eq!((d.conn.lport, d.conn.rport), (40_000, 7_000));
    // A LATE whose tuple differs from the closed one's is not joined.
    j.feed(&close(SERVER_SK, &server_tuple(), (0, 0), 1_506))
        .unwrap();
    let mut other = server_tuple();
    other.rport = 40_001;
    let e = j.feed(&late(SERVER_SK, &other, 3, 1_507)).unwrap().unwrap();
    assert_eq!(e.conn.tgid, 0);
    assert_eq!(j.drops().get(DropReason::LateUnmatched), 2);
}

/// Resets are counted per connection: before the CLOSE into it (client
/// or accepted socket), after it as a LATE of it; a listener's are not.
#[test]
fn resets_counted_per_connection() {
    let mut j = join();
    run(&mut j, &opening());
    // Two on the client before its CLOSE, one each way.
    j.feed(&reset(CLIENT_SK, &client_tuple(), true, 1_001))
        .unwrap();
    j.feed(&reset(CLIENT_SK, &client_tuple(), false, 1_001))
        .unwrap();
    // One received by the accepted socket before its CLOSE.
    j.feed(&reset(SERVER_SK, &server_tuple(), false, 1_001))
        .unwrap();
    let c = j
        .feed(&close(CLIENT_SK, &client_tuple(), (1, 0), 1_002))
        .unwrap()
        .unwrap();
    assert_eq!((c.conn.resets_tx, c.conn.resets_rx), (1, 1));
    let s = j
        .feed(&close(SERVER_SK, &server_tuple(), (0, 0), 1_002))
        .unwrap()
        .unwrap();
    assert_eq!(
        (s.conn.resets_tx, s.conn.resets_rx, s.conn.role),
        (0, 1, role::SERVER)
    );
    // After the CLOSE: a LATE carrying the reset.
    let l = j
        .feed(&reset(SERVER_SK, &server_tuple(), true, 1_003))
        .unwrap()
        .unwrap();
    assert_eq!(
        (l.kind, l.conn.resets_tx, l.conn.tgid),
        (event_kind::LATE, 1, SERVER_PID)
    );
    // On the listener: not a connection's.
    assert_eq!(
        j.feed(&reset(LISTEN_SK, &server_tuple(), true, 1_003))
            .unwrap(),
        None
    );
    assert_eq!(j.drops().get(DropReason::ResetOnListener), 1);
    // One for a socket that never closes: dropped at the late window.
    j.feed(&reset(0x77, &server_tuple(), false, 1_003)).unwrap();
    j.expire(1_503);
    assert_eq!(j.drops().get(DropReason::ResetUnmatched), 0);
    j.expire(1_504);
    assert_eq!(j.drops().get(DropReason::ResetUnmatched), 1);
}

/// Every table stops at its limit and counts what it forgets.
#[test]
fn tables_are_bounded_and_count_drops() {
    let mut j = TcpJoin::new(Limits::new(2, 1, 1, 1, 500).unwrap(), clock());
    // CONNECTs: the third forgets the first, whose CLOSE then has no
    // process (and keeps its SYN: the join cannot know it was a client).
    for sk in 1..=3 {
        j.feed(&connect(sk, CLIENT_PID, 1_000)).unwrap();
    }
    assert_eq!(
        (j.waiting(), j.drops().get(DropReason::ConnectEvicted)),
        (2, 1)
    );
    let e = j
        .feed(&close(1, &client_tuple(), (5, 0), 1_001))
        .unwrap()
        .unwrap();
    assert_eq!((e.conn.role, e.conn.bytes_tx), (role::UNKNOWN, 5));
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 1);
    // A CONNECT at an address whose CONNECT still waits: the older
    // socket's CLOSE was lost.
    j.feed(&connect(2, CLIENT_PID, 1_002)).unwrap();
    assert_eq!(j.drops().get(DropReason::ConnectOrphaned), 1);
    // LISTENs: one kept.
    j.feed(&listen(0x10, 1, AF_INET, v4(LO), 80)).unwrap();
    j.feed(&listen(0x20, 2, AF_INET, v4(LO), 81)).unwrap();
    assert_eq!(j.drops().get(DropReason::ListenEvicted), 1);
    // Names: one kept.
    j.feed(&process(1, "a")).unwrap();
    j.feed(&process(2, "b")).unwrap();
    assert_eq!(j.drops().get(DropReason::NameEvicted), 1);
    // Recent closes: one kept; the first's late bytes no longer join.
    j.feed(&close(2, &client_tuple(), (5, 0), 1_003)).unwrap();
    j.feed(&close(3, &client_tuple(), (5, 0), 1_003)).unwrap();
    // Socket 1's close went when 2's came, 2's when 3's came.
    assert_eq!(j.drops().get(DropReason::RecentEvicted), 2);
    let l = j
        .feed(&late(2, &client_tuple(), 1, 1_004))
        .unwrap()
        .unwrap();
    assert_eq!(l.conn.tgid, 0);
    // Waiting resets: one kept.
    j.feed(&reset(0x100, &server_tuple(), false, 1_004))
        .unwrap();
    j.feed(&reset(0x200, &server_tuple(), false, 1_004))
        .unwrap();
    assert_eq!(j.drops().get(DropReason::ResetUnmatched), 1);
    // An eviction is not a loss by itself: the CLOSE that misses the
    // CONNECT counts it, as a connection reported without its owner.
    assert_eq!(DropReason::ConnectEvicted.loss_reason(), None);
    assert_eq!(
        DropReason::CloseUnattributed.loss_reason(),
        Some(flowscope_model::internal_events::LossReason::OwnerUnknown)
    );
}

/// Odd input is an error naming the record and what was wrong, never a
/// panic, and the join goes on.
#[test]
fn odd_records_are_errors() {
    let mut j = join();
    // main's CLOSE `Event` is not one of G's records.
    let old = event(event_kind::CLOSE, 0x1, 1_000, client_tuple());
    assert_eq!(
        j.feed(&old),
        Err(JoinError::UnknownKind {
            index: 0,
            kind: event_kind::CLOSE,
            sk: 0x1
        })
    );
    // A CLOSE of family 1 (AF_UNIX): an error, and its CONNECT is gone.
    j.feed(&connect(0x2, CLIENT_PID, 1_000)).unwrap();
    let mut t = client_tuple();
    t.family = 1;
    let err = j.feed(&close(0x2, &t, (1, 1), 1_001)).unwrap_err();
    assert_eq!(
        err,
        JoinError::UnknownFamily {
            index: 2,
            record: "CLOSE",
            sk: 0x2,
            family: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "record 2: CLOSE of socket 0x2 has unknown address family 1"
    );
    assert_eq!(j.waiting(), 0);
    for r in [
        listen(0x3, 1, 1, [0; 16], 80),
        late(0x3, &t, 1, 1_000),
        reset(0x3, &t, true, 1_000),
        failed(0x3, &t, 111, 1_000),
    ] {
        assert!(matches!(
            j.feed(&r),
            Err(JoinError::UnknownFamily { family: 1, .. })
        ));
    }
    // Bytes that are no record: the decode error is the source.
    let err = j.feed_bytes(&[9, 0]).unwrap_err();
    assert_eq!(err.to_string(), "record 7: cannot decode");
    assert_eq!(
        err.source().unwrap().to_string(),
        "any record needs 4 bytes, got 2"
    );
    // And the join still works.
    assert!(j.feed(&connect(0x4, CLIENT_PID, 1_000)).is_ok());
}

#[test]
fn constructors_check_their_input() {
    assert_eq!(
        Limits::new(0, 1, 1, 1, 0),
        Err(JoinError::ZeroLimit { table: "CONNECT" })
    );
    assert_eq!(
        Limits::new(1, 1, 1, 0, 0),
        Err(JoinError::ZeroLimit {
            table: "recent close"
        })
    );
    assert_eq!(TickClock::new(0, 0, 0), Err(JoinError::BadHz { hz: 0 }));
    assert_eq!(
        TickClock::new(10_001, 0, 0),
        Err(JoinError::BadHz { hz: 10_001 })
    );
}

/// Ticks to ns: the anchor's offset, HZ's period, and ticks before the
/// anchor (records drained after the anchor was read).
#[test]
fn tick_clock() {
    let c = clock();
    assert_eq!(c.ns(1_000), 10_000_000_000);
    assert_eq!(c.ns(1_001), 10_004_000_000);
    assert_eq!(c.ns(999), 9_996_000_000);
    assert_eq!(c.ns(0), 6_000_000_000);
    // Before the clock's 0: clamped.
    assert_eq!(TickClock::new(250, 5_000, 1_000).unwrap().ns(0), 0);
    // HZ 300: a period of 3,333,333.3 ns, exact over whole seconds.
    let c = TickClock::new(300, 4_294_892_296, 0).unwrap();
    assert_eq!(c.ns(4_294_892_296 + 300), 1_000_000_000);
    assert_eq!(c.ns(4_294_892_296 + 1), 3_333_333);
    // And back: the last whole tick at a time.
    assert_eq!(c.tick(1_000_000_000), 4_294_892_296 + 300);
    assert_eq!(c.tick(3_333_334), 4_294_892_296 + 1);
    assert_eq!(c.tick(3_333_332), 4_294_892_296);
    let c = clock();
    assert_eq!(c.tick(10_003_999_999), 1_000);
    assert_eq!(c.tick(10_004_000_000), 1_001);
    assert_eq!(c.tick(9_999_999_999), 999);
}

// ---------------------------------------------------------------------
// Decoding the ring's bytes.

fn bytes_of<T: aya::Pod>(v: &T) -> Vec<u8> {
    // SAFETY: a Pod is plain bytes; the slice lives no longer than `v`.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// A record's bytes as the kernel writes them into the ring.
fn record_bytes(rec: &Record) -> Vec<u8> {
    match rec {
        Record::Connect(r) | Record::Accept(r) => bytes_of(r),
        Record::Close(r) => bytes_of(r),
        Record::Event(e) => bytes_of(e),
    }
}

#[test]
fn decodes_each_layout() {
    // The layouts G's programs write: 24, 104 and the whole Event.
    assert_eq!(size_of::<ConnectRec>(), 24);
    assert_eq!(size_of::<CloseRec>(), 104);
    for rec in [
        connect(CLIENT_SK, CLIENT_PID, 1_000),
        accept(SERVER_SK, 1_000),
        close(SERVER_SK, &server_tuple(), (100, 40), 1_001),
        listen(LISTEN_SK, SERVER_PID, AF_INET6, [0; 16], 443),
        listen_close(LISTEN_SK, 443),
        failed(CLIENT_SK, &client_tuple(), 111, 1_002),
        late(CLIENT_SK, &client_tuple(), 70, 1_003),
        reset(CLIENT_SK, &client_tuple(), true, 1_004),
        process(CLIENT_PID, "client"),
    ] {
        let bytes = record_bytes(&rec);
        assert_eq!(decode(&bytes), Ok(rec));
        // One byte short of its layout.
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Short { .. })
        ));
    }
    let close_bytes = bytes_of(&match close(1, &client_tuple(), (1, 1), 1) {
        Record::Close(r) => r,
        _ => unreachable!(),
    });
    assert_eq!(
        decode_close(&close_bytes[..50]),
        Err(DecodeError::Short {
            layout: "CLOSE",
            need: 104,
            got: 50
        })
    );
    assert_eq!(
        decode_connect(&[8, 0, 0, 0]),
        Err(DecodeError::Short {
            layout: "CONNECT",
            need: 24,
            got: 4
        })
    );
    assert_eq!(
        decode(&[10, 0, 0, 0, 1, 2]),
        Err(DecodeError::Short {
            layout: "ACCEPT",
            need: 24,
            got: 6
        })
    );
    assert_eq!(
        decode_event(&[]),
        Err(DecodeError::Short {
            layout: "Event",
            need: size_of::<Event>(),
            got: 0
        })
    );
    // main's old kinds and unknown ones.
    let mut odd = vec![0u8; 200];
    odd[0] = event_kind::CLOSE as u8;
    assert_eq!(
        decode(&odd),
        Err(DecodeError::UnknownKind { kind: 1, len: 200 })
    );
    odd[0] = 42;
    assert_eq!(
        decode(&odd),
        Err(DecodeError::UnknownKind { kind: 42, len: 200 })
    );
}

/// Fed as bytes, the cases give the same events.
#[test]
fn feed_bytes_runs_a_case() {
    let mut j = join();
    let mut out = Vec::new();
    let mut recs = opening();
    recs.push(close(CLIENT_SK, &client_tuple(), (101, 100), 1_010));
    for rec in &recs {
        out.extend(j.feed_bytes(&record_bytes(rec)).unwrap());
    }
    let c = closed(&out, CLIENT_SK);
    assert_eq!((c.bytes_tx, c.bytes_rx, c.tgid), (100, 100, CLIENT_PID));
}

// ---------------------------------------------------------------------
// Through main's collector: the join's events against main's.

/// What main's kernel side sends for a connection end (a `CONNS` entry's
/// final `Conn`): bytes summed by the length tracepoints, the process from
/// the connect (client) or the first read or write (server), the open
/// time at SYN_SENT (client) or ESTABLISHED (server), and the same TCP
/// counters the CLOSE record reads.
fn main_event(
    kind: u32,
    sk: u64,
    t: &Conn,
    who: (u8, u32, &str),
    opened_ns: u64,
    ts_ns: u64,
) -> Event {
    let mut c = *t;
    (c.role, c.tgid, c.comm) = (who.0, who.1, name(who.2));
    c.opened_ns = opened_ns;
    if kind == event_kind::CLOSE {
        c.established = 1;
        (
            c.segs_in,
            c.segs_out,
            c.total_retrans,
            c.srtt_us,
            c.rttvar_us,
        ) = (7, 9, 2, 55, 27);
    }
    Event {
        kind,
        errno: 0,
        sk,
        ts_ns,
        conn: c,
    }
}

fn collect(events: &[Event]) -> Vec<flowscope_model::Flow> {
    use crate::collector::{Collector, CollectorSettings, Granularity};
    use flowscope_model::{Attrs, Telemetry};
    let settings = CollectorSettings {
        max_tracked: 100,
        granularity: Granularity::Process,
        include_command_line: false,
        rtt_bounds: std::sync::Arc::from(flowscope_model::hist::RTT_BOUNDS),
        duration_bounds: std::sync::Arc::from(flowscope_model::hist::DURATION_BOUNDS),
        ephemeral: (32768, 60999),
        host: Attrs::new().with("host.name", "h"),
    };
    let mut col = Collector::new(settings, Telemetry::new());
    for ev in events {
        col.on_event(ev);
    }
    let mut flows = col.finish(0, 1).flows;
    flows.sort_by_key(|f| (f.role == flowscope_model::Role::Server, f.local, f.peer));
    flows
}

/// Three of the cases in one stream (SO_LINGER 0 with resets both sides
/// of the CLOSE, the half-close with late bytes, the refused connect), fed
/// to main's collector once as the join's events and once as the events
/// main's kernel side sends for the same connections: the same flows with
/// the same figures, the server's opens and durations included (from the
/// ACCEPT records, as main counts them from ESTABLISHED).
#[test]
fn collector_gets_what_main_sends() {
    let c2 = tuple(AF_INET, v4(LO), 40_001, v4(LO), 7_000);
    let s2 = tuple(AF_INET, v4(LO), 7_000, v4(LO), 40_001);
    // The failed socket's port was released before the tracepoint.
    let refused = tuple(AF_INET, v4(LO), 0, v4(LO), 7_001);
    let (csk2, ssk2, rsk) = (CLIENT_SK + 0x100, SERVER_SK + 0x100, CLIENT_SK + 0x200);
    let mut server_after = server_tuple();
    server_after.lport = 0;

    let mut recs = opening();
    recs.push(accept(SERVER_SK, 1_001));
    // SO_LINGER 0 (see case_linger_zero).
    recs.push(close(SERVER_SK, &server_tuple(), (50, 100), 1_010));
    recs.push(reset(SERVER_SK, &server_after, true, 1_010));
    recs.push(reset(CLIENT_SK, &client_tuple(), false, 1_010));
    recs.push(close(CLIENT_SK, &client_tuple(), (101, 50), 1_010));
    // The half-close (see case_client_half_close), connected at tick 1,020.
    recs.push(connect(csk2, CLIENT_PID, 1_020));
    recs.push(accept(ssk2, 1_021));
    recs.push(close(csk2, &c2, (101, 0), 1_030));
    recs.push(close(ssk2, &s2, (70, 100), 1_030));
    recs.push(late(csk2, &c2, 70, 1_031));
    // Refused, to another port.
    recs.push(connect(rsk, CLIENT_PID, 1_040));
    recs.push(reset(rsk, &refused, false, 1_040));
    recs.push(failed(rsk, &refused, 111, 1_041));
    let mut j = join();
    let joined = collect(&run(&mut j, &recs));

    let ns = |tick: u64| clock().ns(tick);
    let client = (role::CLIENT, CLIENT_PID, "client");
    let server = (role::SERVER, SERVER_PID, "server");
    let with = |mut e: Event, f: &dyn Fn(&mut Conn)| {
        f(&mut e.conn);
        e
    };
    let mut late_reset = main_event(event_kind::LATE, SERVER_SK, &server_after, (0, 0, ""), 0, 0);
    late_reset.conn.resets_tx = 1;
    let mut main_failed = main_event(
        event_kind::FAILED,
        rsk,
        &refused,
        client,
        ns(1_040),
        ns(1_041),
    );
    main_failed.errno = 111;
    main_failed.conn.resets_rx = 1;
    let main_events = [
        with(
            main_event(
                event_kind::CLOSE,
                SERVER_SK,
                &server_tuple(),
                server,
                ns(1_001),
                ns(1_010),
            ),
            &|c| (c.bytes_tx, c.bytes_rx) = (50, 100),
        ),
        late_reset,
        with(
            main_event(
                event_kind::CLOSE,
                CLIENT_SK,
                &client_tuple(),
                client,
                ns(1_000),
                ns(1_010),
            ),
            &|c| (c.bytes_tx, c.bytes_rx, c.resets_rx) = (100, 50, 1),
        ),
        with(
            main_event(event_kind::CLOSE, csk2, &c2, client, ns(1_020), ns(1_030)),
            &|c| (c.bytes_tx, c.bytes_rx) = (100, 0),
        ),
        with(
            main_event(event_kind::CLOSE, ssk2, &s2, server, ns(1_021), ns(1_030)),
            &|c| (c.bytes_tx, c.bytes_rx) = (70, 100),
        ),
        // main's late read: the reader's process, the tuple, the bytes.
        with(
            main_event(event_kind::LATE, csk2, &c2, (0, CLIENT_PID, "client"), 0, 0),
            &|c| c.bytes_rx = 70,
        ),
        main_failed,
    ];
    let mains = collect(&main_events);

    assert_eq!(
        joined.len(),
        3,
        "client to 7000, client to 7001, server on 7000"
    );
    assert_eq!(joined.len(), mains.len());
    for (j, m) in joined.iter().zip(&mains) {
        assert_eq!(
            (j.role, j.local, j.peer, j.pid, j.netns),
            (m.role, m.local, m.peer, m.pid, m.netns)
        );
        assert_eq!(j.resource, m.resource);
        assert_eq!(j.attrs, m.attrs);
        assert_eq!(j.stats, m.stats, "{:?} {}", j.role, j.peer);
    }
    // The figures themselves: the client flow to 7000 holds both cases'
    // client ends, the server flow both server ends.
    let s = &joined[0].stats;
    assert_eq!(
        (s.bytes_tx, s.bytes_rx, s.resets_rx, s.closed, s.opened),
        (200, 120, 1, 2, 2)
    );
    assert_eq!(s.duration.as_ref().map(|d| d.count), Some(2));
    let f = &joined[1].stats;
    assert_eq!(
        (f.failed(flowscope_model::FailReason::Refused), f.closed),
        (1, 0)
    );
    let s = &joined[2].stats;
    assert_eq!(
        (s.bytes_tx, s.bytes_rx, s.resets_tx, s.closed, s.opened),
        (120, 200, 1, 2, 2)
    );
    // Both server ends lived 9 ticks (36 ms each).
    let d = s.duration.as_ref().unwrap();
    assert_eq!((d.count, d.sum), (2, 0.072));
    assert_eq!(j.drops().iter().count(), 0);
}

/// A name in use stays: the oldest announcement is not the one to forget
/// when its process still connects.
#[test]
fn names_in_use_stay() {
    let mut j = TcpJoin::new(Limits::new(8, 1, 2, 8, 500).unwrap(), clock());
    j.feed(&process(1, "a")).unwrap();
    j.feed(&process(2, "b")).unwrap();
    j.feed(&connect(0x1, 1, 1_000)).unwrap();
    j.feed(&close(0x1, &client_tuple(), (1, 0), 1_001)).unwrap();
    // 1 was used after 2 was announced: 2 goes.
    j.feed(&process(3, "c")).unwrap();
    for (sk, tgid, comm) in [(0x2, 1, name("a")), (0x3, 2, [0; 16])] {
        j.feed(&connect(sk, tgid, 1_002)).unwrap();
        let e = j
            .feed(&close(sk, &client_tuple(), (1, 0), 1_003))
            .unwrap()
            .unwrap();
        assert_eq!(e.conn.comm, comm);
    }
    assert_eq!(j.drops().get(DropReason::NameEvicted), 1);
    assert_eq!(j.drops().get(DropReason::NameUnknown), 1);
}

// ---------------------------------------------------------------------
// ACCEPT and LISTEN_CLOSE.

/// An ACCEPT gives the accepted socket's CLOSE, and the walk's owner, the
/// open time; it is forgotten at the CLOSE, at a FAILED and when the
/// address is reused, and its table is bounded.
#[test]
fn accept_gives_the_servers_open() {
    let key = ListenKey {
        netns: NETNS,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 7_000,
    };
    let mut j = join();
    run(&mut j, &opening());
    assert_eq!(j.feed(&accept(SERVER_SK, 1_001)), Ok(None));
    // Open: the listener's process, the ACCEPT's time (tick 1,001: 4 ms
    // after the anchor).
    let open = Owner {
        role: role::SERVER,
        tgid: SERVER_PID,
        comm: name("server"),
        opened_ns: 10_004_000_000,
        connected: false,
    };
    assert_eq!(j.owner(SERVER_SK, key), Some(open));
    let e = j
        .feed(&close(SERVER_SK, &server_tuple(), (100, 100), 1_026))
        .unwrap()
        .unwrap();
    assert_eq!((e.conn.role, e.conn.tgid), (role::SERVER, SERVER_PID));
    assert_eq!(
        (e.conn.opened_ns, e.ts_ns),
        (10_004_000_000, 10_104_000_000)
    );
    // Nothing is taken off a server's sent bytes.
    assert_eq!((e.conn.bytes_tx, e.conn.bytes_rx), (100, 100));
    // Forgotten at the CLOSE: the listener still names the address, with
    // no open time.
    assert_eq!(
        j.owner(SERVER_SK, key),
        Some(Owner {
            opened_ns: 0,
            ..open
        })
    );

    // An accepted socket of an unknown listener: a server, no process.
    let other = tuple(AF_INET, v4(LO), 8_000, v4(LO), 41_000);
    let other_key = ListenKey { port: 8_000, ..key };
    j.feed(&accept(0x900, 1_100)).unwrap();
    assert_eq!(
        j.owner(0x900, other_key),
        Some(Owner {
            role: role::SERVER,
            tgid: 0,
            comm: [0; 16],
            opened_ns: 10_400_000_000,
            connected: false,
        })
    );
    let e = j
        .feed(&close(0x900, &other, (5, 6), 1_101))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.conn.role, e.conn.tgid, e.conn.opened_ns),
        (role::SERVER, 0, 10_400_000_000)
    );
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 1);
    assert_eq!(j.owner(0x900, other_key), None);

    // Its CLOSE lost: the next socket at the address shows it, and is a
    // client of its own.
    j.feed(&accept(0x910, 1_200)).unwrap();
    j.feed(&connect(0x910, CLIENT_PID, 1_201)).unwrap();
    assert_eq!(j.drops().get(DropReason::ConnectOrphaned), 1);
    let e = j
        .feed(&close(0x910, &client_tuple(), (11, 0), 1_202))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.conn.role, e.conn.bytes_tx, e.conn.opened_ns),
        (role::CLIENT, 10, 10_804_000_000)
    );

    // A FAILED at the address forgets it too.
    j.feed(&accept(0x920, 1_300)).unwrap();
    j.feed(&failed(0x920, &client_tuple(), 111, 1_301)).unwrap();
    assert_eq!(j.owner(0x920, other_key), None);

    // Bounded with the CONNECT limit (2 here): the oldest goes, counted,
    // and its CLOSE has no open time.
    let mut j = TcpJoin::new(Limits::new(2, 8, 64, 64, 500).unwrap(), clock());
    run(&mut j, &opening());
    for (i, sk) in [0xa00, 0xa10, 0xa20].into_iter().enumerate() {
        j.feed(&accept(sk, 1_000 + i as u64)).unwrap();
    }
    assert_eq!(j.drops().get(DropReason::AcceptEvicted), 1);
    assert_eq!(
        DropReason::AcceptEvicted.loss_reason(),
        Some(LossReason::TableFull)
    );
    let opened = |j: &mut TcpJoin, sk| {
        let e = j
            .feed(&close(sk, &server_tuple(), (1, 1), 1_010))
            .unwrap()
            .unwrap();
        (e.conn.role, e.conn.opened_ns)
    };
    assert_eq!(opened(&mut j, 0xa00), (role::SERVER, 0));
    assert_eq!(opened(&mut j, 0xa10), (role::SERVER, 10_004_000_000));
    assert_eq!(opened(&mut j, 0xa20), (role::SERVER, 10_008_000_000));
}

/// LISTEN_CLOSE ends the entry of exactly its listener: the accepted
/// sockets closed after it are no longer named by it, and a closed older
/// listener does not end the newer one on the same port.
#[test]
fn listen_close_ends_the_listener() {
    let role_of = |j: &mut TcpJoin, sk| {
        let e = j
            .feed(&close(sk, &server_tuple(), (1, 1), 1_001))
            .unwrap()
            .unwrap();
        (e.conn.role, e.conn.tgid)
    };
    let mut j = join();
    j.feed(&listen(LISTEN_SK, SERVER_PID, AF_INET, v4(LO), 7_000))
        .unwrap();
    assert_eq!(role_of(&mut j, SERVER_SK), (role::SERVER, SERVER_PID));
    assert_eq!(j.feed(&listen_close(LISTEN_SK, 7_000)), Ok(None));
    assert_eq!(role_of(&mut j, SERVER_SK + 8), (role::UNKNOWN, 0));
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 1);
    // A reset at the closed listener's address is no longer the
    // listener's: it waits for a CLOSE there.
    j.feed(&reset(LISTEN_SK, &server_tuple(), true, 1_002))
        .unwrap();
    assert_eq!(j.drops().get(DropReason::ResetOnListener), 0);

    // Two listeners on the port in turn: the older's close leaves the newer.
    let mut j = join();
    j.feed(&listen(LISTEN_SK, SERVER_PID, AF_INET, v4(LO), 7_000))
        .unwrap();
    j.feed(&listen(LISTEN_SK + 8, 201, AF_INET, v4(LO), 7_000))
        .unwrap();
    j.feed(&listen_close(LISTEN_SK, 7_000)).unwrap();
    assert_eq!(role_of(&mut j, SERVER_SK), (role::SERVER, 201));
    j.feed(&listen_close(LISTEN_SK + 8, 7_000)).unwrap();
    assert_eq!(role_of(&mut j, SERVER_SK + 16), (role::UNKNOWN, 0));
    // The two closes of unknown servers; no PROCESS records here, so the
    // two named ones' names are unknown.
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 1);
    assert_eq!(j.drops().get(DropReason::NameUnknown), 1);
}

/// A listener older than the agent, seeded from /proc: a connection it
/// accepts after the agent started closes as its server, named by it,
/// with the ACCEPT's open time, as a LISTEN record would have named it.
/// Its entry ends with its LISTEN_CLOSE like any listener's.
#[test]
fn seeded_listener_names_what_it_accepts() {
    let key = ListenKey {
        netns: NETNS,
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 7_000,
    };
    let mut j = join();
    j.seed_listener(key, LISTEN_SK, SERVER_PID, name("nginx"));
    assert!(j.is_listening(ListenKey {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..key
    }));
    assert!(!j.is_listening(ListenKey { port: 7_001, ..key }));
    j.feed(&accept(SERVER_SK, 1_001)).unwrap();
    let e = j
        .feed(&close(SERVER_SK, &server_tuple(), (300, 200), 1_026))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.conn.role, e.conn.tgid, e.conn.comm),
        (role::SERVER, SERVER_PID, name("nginx"))
    );
    assert_eq!((e.conn.bytes_tx, e.conn.bytes_rx), (300, 200));
    assert_eq!(
        (e.conn.opened_ns, e.ts_ns),
        (10_004_000_000, 10_104_000_000)
    );
    // The listener closes: the next accepted socket is nobody's.
    j.feed(&listen_close(LISTEN_SK, 7_000)).unwrap();
    let e = j
        .feed(&close(SERVER_SK + 8, &server_tuple(), (1, 1), 1_030))
        .unwrap()
        .unwrap();
    assert_eq!((e.conn.role, e.conn.tgid), (role::UNKNOWN, 0));
    // Only that last one went out without its process.
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 1);
    assert_eq!(j.drops().get(DropReason::NameUnknown), 0);
}

/// Connections older than the agent, seeded from /proc: the walk and the
/// CLOSE name them by the process and role found; no open time, and the
/// client's SYN stays in its sent bytes (its baseline held it), so
/// nothing is taken off. Nothing is counted as unattributed.
#[test]
fn seeded_connections_are_named_at_close() {
    let client_key = ListenKey {
        netns: NETNS,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 40_000,
    };
    let server_key = ListenKey {
        port: 7_000,
        ..client_key
    };
    let mut j = join();
    j.seed_owner(CLIENT_SK, role::CLIENT, CLIENT_PID, name("psql"));
    j.seed_owner(SERVER_SK, role::SERVER, SERVER_PID, name("postgres"));
    assert_eq!(
        j.owner(CLIENT_SK, client_key),
        Some(Owner {
            role: role::CLIENT,
            tgid: CLIENT_PID,
            comm: name("psql"),
            opened_ns: 0,
            connected: false,
        })
    );
    assert_eq!(
        j.owner(SERVER_SK, server_key),
        Some(Owner {
            role: role::SERVER,
            tgid: SERVER_PID,
            comm: name("postgres"),
            opened_ns: 0,
            connected: false,
        })
    );
    let out = run(
        &mut j,
        &[
            close(CLIENT_SK, &client_tuple(), (1_001, 500), 1_010),
            close(SERVER_SK, &server_tuple(), (500, 1_000), 1_011),
        ],
    );
    let c = closed(&out, CLIENT_SK);
    assert_eq!(
        (c.role, c.tgid, c.comm, c.opened_ns),
        (role::CLIENT, CLIENT_PID, name("psql"), 0)
    );
    assert_eq!((c.bytes_tx, c.bytes_rx), (1_001, 500));
    let s = closed(&out, SERVER_SK);
    assert_eq!(
        (s.role, s.tgid, s.comm, s.opened_ns),
        (role::SERVER, SERVER_PID, name("postgres"), 0)
    );
    assert_eq!((s.bytes_tx, s.bytes_rx), (500, 1_000));
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 0);
    assert_eq!(j.drops().get(DropReason::NameUnknown), 0);
    // Forgotten at the CLOSE: the addresses' next sockets are new ones.
    assert_eq!(j.owner(CLIENT_SK, client_key), None);
    let e = j
        .feed(&close(CLIENT_SK, &client_tuple(), (1, 1), 1_020))
        .unwrap()
        .unwrap();
    assert_eq!((e.conn.role, e.conn.tgid), (role::UNKNOWN, 0));
    assert_eq!(j.drops().get(DropReason::CloseUnattributed), 1);
}

/// A seeded socket whose address a CONNECT reuses was freed without its
/// CLOSE reaching the join (the ring was full): counted as orphaned, and
/// the new socket is the CONNECT's. A seeded client that fails is named.
#[test]
fn seeded_owner_ends_with_its_socket() {
    let mut j = join();
    j.seed_owner(CLIENT_SK, role::CLIENT, 300, name("old"));
    j.feed(&connect(CLIENT_SK, CLIENT_PID, 1_000)).unwrap();
    assert_eq!(j.drops().get(DropReason::ConnectOrphaned), 1);
    let e = j
        .feed(&close(CLIENT_SK, &client_tuple(), (11, 0), 1_001))
        .unwrap()
        .unwrap();
    // The CONNECT's client: its SYN off.
    assert_eq!((e.conn.tgid, e.conn.bytes_tx), (CLIENT_PID, 10));
    j.seed_owner(0x700, role::CLIENT, 300, name("old"));
    let e = j
        .feed(&failed(0x700, &client_tuple(), 111, 1_002))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.conn.role, e.conn.tgid, e.conn.comm),
        (role::CLIENT, 300, name("old"))
    );
    assert_eq!(j.drops().get(DropReason::FailedUnattributed), 0);
}
