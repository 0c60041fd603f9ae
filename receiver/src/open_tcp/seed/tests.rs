use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, Ipv4Addr};

use flowscope_common::{AF_INET, OpenTcp};

use super::*;
use crate::tcp_join::{Limits, Owner, TickClock};

const NETNS: u32 = 4_026_531_840;
const HOST: [u8; 4] = [198, 18, 0, 1];
const PEER: [u8; 4] = [198, 18, 0, 2];

fn name(s: &str) -> [u8; 16] {
    let mut n = [0; 16];
    n[..s.len()].copy_from_slice(s.as_bytes());
    n
}

/// An IPv4 socket of namespace NETNS as the iterator decodes it.
fn socket(sk: u64, ino: u32, state: u8, local: ([u8; 4], u16), peer: ([u8; 4], u16)) -> OpenSocket {
    let mut r = OpenTcp {
        sk,
        ino,
        state,
        family: AF_INET,
        netns: NETNS,
        lport: local.1,
        rport: peer.1,
        ..OpenTcp::default()
    };
    r.laddr[..4].copy_from_slice(&local.0);
    r.raddr[..4].copy_from_slice(&peer.0);
    OpenSocket::new(&r, 0).unwrap()
}

fn join() -> TcpJoin {
    TcpJoin::new(
        Limits::new(64, 8, 64, 64, 500).unwrap(),
        TickClock::new(250, 1_000, 1_000_000_000).unwrap(),
    )
}

fn key(ip: [u8; 4], port: u16) -> ListenKey {
    ListenKey {
        netns: NETNS,
        ip: IpAddr::V4(Ipv4Addr::from(ip)),
        port,
    }
}

/// A listener on 0.0.0.0:7000 (pid 10), a connection it accepted, held by
/// a worker (pid 11), and a connection out of the host to port 7000 of
/// another host (pid 12): a server, a client, and the listener seeded.
/// A socket no file holds (inode 0), one whose inode no process holds, and
/// one whose process left before its name was read are not.
#[test]
fn seeds_listeners_servers_and_clients() {
    const LISTEN: u8 = 10;
    const ESTABLISHED: u8 = 1;
    let snap = OpenTcpSnapshot {
        listeners: vec![socket(0x10, 500, LISTEN, ([0; 4], 7_000), ([0; 4], 0))],
        sockets: vec![
            socket(0x20, 501, ESTABLISHED, (HOST, 7_000), (PEER, 50_000)),
            socket(0x30, 502, ESTABLISHED, (HOST, 40_000), (PEER, 7_000)),
            socket(0x40, 0, ESTABLISHED, (HOST, 7_000), (PEER, 50_001)),
            socket(0x50, 503, ESTABLISHED, (HOST, 7_000), (PEER, 50_002)),
            socket(0x60, 504, ESTABLISHED, (HOST, 7_000), (PEER, 50_003)),
        ],
        ..OpenTcpSnapshot::default()
    };
    let holders: StdHashMap<u64, u32> = [(500, 10), (501, 11), (502, 12), (504, 13)].into();
    let comms: StdHashMap<u32, [u8; 16]> = [
        (10, name("nginx")),
        (11, name("nginx-worker")),
        (12, name("curl")),
    ]
    .into();
    let seeds = Seeds::from_holders(&snap, &holders, |pid| comms.get(&pid).copied());
    assert_eq!(seeds.unowned, 3);
    let mut j = join();
    assert_eq!(
        seeds.seed(&mut j),
        Seeded {
            listeners: 1,
            clients: 1,
            servers: 1,
            unowned: 3,
        }
    );
    let owner = |role, tgid, comm| Owner {
        role,
        tgid,
        comm: name(comm),
        opened_ns: 0,
        connected: false,
    };
    assert_eq!(
        j.owner(0x20, key(HOST, 7_000)),
        Some(owner(role::SERVER, 11, "nginx-worker"))
    );
    assert_eq!(
        j.owner(0x30, key(HOST, 40_000)),
        Some(owner(role::CLIENT, 12, "curl"))
    );
    // Unseeded sockets on the listener's port: named by the listener.
    assert_eq!(
        j.owner(0x40, key(HOST, 7_000)),
        Some(owner(role::SERVER, 10, "nginx"))
    );
    assert!(j.is_listening(key([10, 0, 0, 1], 7_000)));
    assert!(j.drops().iter().next().is_none(), "{:?}", j.drops());
}

/// The pass over a real /proc finds this process's own socket: a listener
/// the test holds is found under the test's pid and name.
#[test]
fn finds_this_process_socket() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    let ino: u32 = link
        .to_str()
        .and_then(|t| t.strip_prefix("socket:["))
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse().ok())
        .unwrap();
    let snap = OpenTcpSnapshot {
        listeners: vec![socket(0x10, ino, 10, ([127, 0, 0, 1], port), ([0; 4], 0))],
        ..OpenTcpSnapshot::default()
    };
    let seeds = Seeds::find(&snap, Path::new("/proc"));
    let comm = process::read_comm(Path::new("/proc"), std::process::id()).unwrap();
    assert_eq!(
        seeds.listeners,
        vec![Held {
            sk: 0x10,
            local: key([127, 0, 0, 1], port),
            tgid: std::process::id(),
            comm,
        }]
    );
    assert_eq!(seeds.unowned, 0);
}
