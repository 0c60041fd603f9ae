//! The conntrack event socket's kernel-side filter, against the real
//! kernel (root): in a namespace where conntrack runs, entries NAT did not
//! touch never reach the agent's socket, while a socket without the filter
//! sees every entry.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use flowscope_receiver::conntrack::CtEntry;
use flowscope_receiver::conntrack::netlink::{self, CtEvent, EventFilter};

const CLIENT: &str = "198.19.77.1";
const SERVER: &str = "198.19.77.2:7000";
const SERVICE: &str = "198.19.77.100:80";
const NATED: usize = 5;
const DIRECT: usize = 7;

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace removed on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Every NEW event queued on `fd` (non-blocking), and how many messages
/// were anything else.
fn drain(fd: &OwnedFd) -> (Vec<CtEntry>, usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut new, mut other) = (Vec::new(), 0);
    loop {
        match netlink::recv(fd.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT) {
            Ok(n) => {
                let bad = netlink::parse_datagram(&buf[..n], |ev| match ev {
                    CtEvent::New(e) => new.push(e),
                    _ => other += 1,
                })
                .unwrap();
                assert_eq!(bad, 0);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (new, other),
            Err(e) => panic!("reading conntrack events: {e}"),
        }
    }
}

#[test]
fn only_translated_entries_reach_the_event_socket() {
    let ns = Netns(format!("fsctf-{}", std::process::id()));
    run(&["ip", "netns", "add", &ns.0]);
    run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
    // The /24 routes the Service address out through lo, where the output
    // hook translates it.
    for a in ["198.19.77.1/24", "198.19.77.2/32"] {
        run(&["ip", "-n", &ns.0, "addr", "add", a, "dev", "lo"]);
    }
    // A Service address DNATed in the output hook, as kube-proxy does for
    // host-network clients. The nat table also turns conntrack on for all
    // of the namespace's traffic.
    run(&[
        "ip",
        "netns",
        "exec",
        &ns.0,
        "nft",
        "add table ip fsctf { chain out { type nat hook output priority -100; \
         ip daddr 198.19.77.100 udp dport 80 dnat to 198.19.77.2:7000; }; }",
    ]);
    let path = format!("/run/netns/{}", ns.0);
    let (filtered, all) = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: f is an open namespace file; only this thread moves.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let filtered = netlink::open_events(1 << 20, EventFilter::NatOnly).unwrap();
        let all = netlink::open_events(1 << 20, EventFilter::All).unwrap();
        let server = UdpSocket::bind(SERVER).unwrap();
        // One conntrack entry per client socket (each has its own port).
        // The sockets stay open until every datagram is sent: a socket
        // closed at once can hand its port to the next one, whose datagram
        // then joins the first one's entry instead of making its own.
        let mut clients = Vec::new();
        for (n, to) in [(NATED, SERVICE), (DIRECT, SERVER)] {
            for _ in 0..n {
                let c = UdpSocket::bind(format!("{CLIENT}:0")).unwrap();
                c.send_to(b"ping", to).unwrap();
                clients.push(c);
            }
        }
        let mut got = [0u8; 8];
        for _ in 0..NATED + DIRECT {
            server.recv_from(&mut got).unwrap();
        }
        // Events are queued when the entry is confirmed, inside sendto:
        // everything is there by now.
        (drain(&filtered), drain(&all))
    })
    .join()
    .unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    let service: SocketAddr = SERVICE.parse().unwrap();
    // Without the filter: every entry, NATed or not.
    assert_eq!(all.0.len(), NATED + DIRECT, "{:?}", all.0);
    assert_eq!(all.0.iter().filter(|e| e.is_nat()).count(), NATED);
    // With it: exactly the translated ones, and nothing else.
    assert_eq!(filtered.1, 0);
    assert_eq!(filtered.0.len(), NATED, "{:?}", filtered.0);
    for e in &filtered.0 {
        assert!(e.is_dnat(), "{e:?}");
        assert_eq!((e.orig.dst, e.reply.src), (service, server));
    }
}
