use std::sync::Arc;

use flowscope_common::{CloseRec, ConnectRec, Event, OpenTcp, event_kind, open_tcp_flags};
use flowscope_model::internal_events::LossReason;
use flowscope_model::{Attrs, FlowStats, Role};

use super::*;
use crate::collector::{CollectorSettings, Granularity};
use crate::tcp_join::{Limits, Record, TickClock};

const NETNS: u32 = 4_026_532_000;
const CLIENT_SK: u64 = 0xffff_8880_0000_1000;
const SERVER_SK: u64 = 0xffff_8880_0000_2000;
/// The join's clock: HZ 250, tick 1,000 at 1 s.
const HZ: u32 = 250;

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

/// The client end of 198.18.1.2:40000 -> 198.18.1.1:5432, after the
/// handshake: 12,345 bytes written and acknowledged (its SYN too), 6,789
/// read, nothing in flight or unread.
fn client_record() -> OpenTcp {
    OpenTcp {
        sk: CLIENT_SK,
        family: AF_INET,
        lport: 40_000,
        rport: 5_432,
        state: 1,
        netns: NETNS,
        laddr: v4([198, 18, 1, 2]),
        raddr: v4([198, 18, 1, 1]),
        bytes_acked: 1 + 12_345,
        bytes_received: 6_789,
        write_seq: 9_000,
        snd_una: 9_000,
        rcv_nxt: 77,
        copied_seq: 77,
        segs_out: 20,
        segs_in: 15,
        total_retrans: 2,
        srtt_us: 800,
        mdev_us: 400,
        ..OpenTcp::default()
    }
}

/// The server end of the same connection (an accepted socket: its SYN-ACK
/// is in no counter).
fn server_record() -> OpenTcp {
    OpenTcp {
        sk: SERVER_SK,
        lport: 5_432,
        rport: 40_000,
        laddr: v4([198, 18, 1, 1]),
        raddr: v4([198, 18, 1, 2]),
        bytes_acked: 6_789,
        bytes_received: 12_345,
        segs_out: 14,
        segs_in: 21,
        total_retrans: 0,
        ..client_record()
    }
}

fn socket(r: &OpenTcp) -> OpenSocket {
    OpenSocket::new(r, 0).unwrap()
}

fn owner(role: u8) -> Owner {
    Owner {
        role,
        tgid: 4_242,
        comm: name("psql"),
        opened_ns: 1_000_000_000,
        connected: role == role::CLIENT,
    }
}

/// Every field of the client's connection, its SYN taken off.
#[test]
fn a_client_sheds_its_syn_and_takes_its_owner() {
    let c = open_conn(&socket(&client_record()), Some(owner(role::CLIENT)));
    assert_eq!(
        c,
        Conn {
            opened_ns: 1_000_000_000,
            bytes_tx: 12_345,
            bytes_rx: 6_789,
            segs_out: 20,
            segs_in: 15,
            total_retrans: 2,
            srtt_us: 100,
            rttvar_us: 100,
            resets_tx: 0,
            resets_rx: 0,
            tgid: 4_242,
            netns: NETNS,
            family: AF_INET,
            lport: 40_000,
            rport: 5_432,
            role: role::CLIENT,
            established: 1,
            laddr: v4([198, 18, 1, 2]),
            raddr: v4([198, 18, 1, 1]),
            comm: name("psql"),
            snap_jiffies: 0,
        }
    );
}

/// Without an owner: the SYN stays (the join's CLOSE keeps it too for a
/// socket it did not see connect), no role, no process, no open time.
#[test]
fn no_owner_keeps_the_syn_and_names_nobody() {
    let c = open_conn(&socket(&client_record()), None);
    assert_eq!((c.bytes_tx, c.bytes_rx), (12_345 + 1, 6_789));
    assert_eq!(
        (c.role, c.tgid, c.comm, c.opened_ns),
        (role::UNKNOWN, 0, [0; 16], 0)
    );
    assert_eq!(c.established, 1);
}

/// A server's figure has no SYN to shed; a client in SYN_SENT is not
/// established (its unacknowledged SYN is all it sent, and comes off); a
/// socket that queued its FIN has it off; an IPv6 socket's v4-mapped local
/// address is looked up as IPv4.
#[test]
fn servers_states_and_families() {
    let s = open_conn(&socket(&server_record()), Some(owner(role::SERVER)));
    assert_eq!(
        (s.bytes_tx, s.bytes_rx, s.role),
        (6_789, 12_345, role::SERVER)
    );

    let syn_sent = OpenTcp {
        state: 2,
        bytes_acked: 0,
        bytes_received: 0,
        write_seq: 1_001,
        snd_una: 1_000,
        ..client_record()
    };
    let c = open_conn(&socket(&syn_sent), Some(owner(role::CLIENT)));
    assert_eq!((c.established, c.bytes_tx), (0, 0));

    let fin_wait1 = OpenTcp {
        state: 4,
        write_seq: 9_001,
        ..client_record()
    };
    let c = open_conn(&socket(&fin_wait1), Some(owner(role::CLIENT)));
    assert_eq!((c.established, c.bytes_tx), (1, 12_345));

    let close_wait = OpenTcp {
        state: 8,
        flags: open_tcp_flags::FIN_RECEIVED,
        bytes_received: 12_345 + 1,
        ..server_record()
    };
    let c = open_conn(&socket(&close_wait), Some(owner(role::SERVER)));
    assert_eq!((c.established, c.bytes_rx), (1, 12_345));

    let mut mapped = server_record();
    mapped.family = AF_INET6;
    mapped.laddr = "::ffff:198.18.1.1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    mapped.raddr = "::ffff:198.18.1.2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let s = socket(&mapped);
    let c = open_conn(&s, None);
    assert_eq!(
        (c.family, c.laddr, c.raddr),
        (AF_INET6, mapped.laddr, mapped.raddr)
    );
    assert_eq!(
        listen_key(&s),
        ListenKey {
            netns: NETNS,
            ip: "198.18.1.1".parse().unwrap(),
            port: 5_432
        }
    );
}

fn collector() -> Collector {
    Collector::new(
        CollectorSettings {
            max_tracked: 100,
            granularity: Granularity::Service,
            include_command_line: false,
            rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
            duration_bounds: Arc::from(flowscope_model::hist::DURATION_BOUNDS),
            ephemeral: (32_768, 60_999),
            host: Attrs::new().with("host.name", "h"),
        },
        Telemetry::new(),
    )
}

fn join() -> TcpJoin {
    TcpJoin::new(
        Limits::new(64, 8, 64, 64, 500).unwrap(),
        TickClock::new(HZ, 1_000, 1_000_000_000).unwrap(),
    )
}

fn snapshot(records: &[OpenTcp]) -> OpenTcpSnapshot {
    OpenTcpSnapshot {
        sockets: records.iter().map(socket).collect(),
        namespaces: vec![NETNS],
        ..OpenTcpSnapshot::default()
    }
}

/// The join's CLOSE of the socket whose last counters were `r` (the kernel
/// derives the same bytes at CLOSE, the client's SYN still in them).
fn close_of(r: &OpenTcp, tick: u64) -> Record {
    let s = socket(r);
    Record::Close(CloseRec {
        kind: event_kind::CLOSE_MIN,
        family: r.family,
        lport: r.lport,
        rport: r.rport,
        netns: r.netns,
        sk: r.sk,
        bytes_tx: s.bytes.sent,
        bytes_rx: s.bytes.received,
        segs_in: r.segs_in,
        segs_out: r.segs_out,
        total_retrans: r.total_retrans,
        srtt_us: s.srtt_us,
        rttvar_us: s.rttvar_us,
        laddr: r.laddr,
        raddr: r.raddr,
        ts: tick,
        ..CloseRec::default()
    })
}

/// The flow's stats of one role in a batch.
fn stats(batch: &flowscope_model::FlowBatch, role: Role) -> FlowStats {
    let f: Vec<_> = batch.flows.iter().filter(|f| f.role == role).collect();
    assert_eq!(f.len(), 1, "{role:?} flows: {f:?}");
    f[0].stats.clone()
}

/// A client and the server end it reaches, both on this host: two walks
/// while open, then both CLOSEs through the join. What the collector
/// counts over the three intervals is exactly the CLOSE figures: 12,345 +
/// 655 bytes up, 6,789 + 211 down, no SYN, one open (the client's, at its
/// first walk) and one close each.
#[test]
fn walks_and_close_add_up_to_the_close() {
    let mut col = collector();
    let mut j = join();
    let mut state = WalkState::default();
    let t = Telemetry::new();
    j.feed(&Record::Event(Event {
        kind: event_kind::PROCESS,
        conn: Conn {
            tgid: 4_242,
            comm: name("psql"),
            ..Conn::default()
        },
        ..Event::default()
    }))
    .unwrap();
    j.feed(&Record::Event(Event {
        kind: event_kind::LISTEN,
        sk: 0xffff_8880_0000_3000,
        ts_ns: 900,
        conn: Conn {
            tgid: 4_343,
            family: AF_INET,
            lport: 5_432,
            netns: NETNS,
            ..Conn::default()
        },
        ..Event::default()
    }))
    .unwrap();
    j.feed(&Record::Connect(ConnectRec {
        kind: event_kind::CONNECT_MIN,
        tgid: 4_242,
        sk: CLIENT_SK,
        ts: 1_250,
    }))
    .unwrap();

    let (c1, s1) = (client_record(), server_record());
    let w = state.walk(&snapshot(&[c1, s1]), &j, &mut col, &t);
    assert_eq!(
        w,
        Walked {
            reported: 2,
            deferred: 0,
            failed: 0
        }
    );
    let b = col.finish(0, 1);
    let (c, s) = (stats(&b, Role::Client), stats(&b, Role::Server));
    assert_eq!(
        (c.bytes_tx, c.bytes_rx, c.opened, c.active),
        (12_345, 6_789, 1, 1)
    );
    assert_eq!(
        (s.bytes_tx, s.bytes_rx, s.opened, s.active),
        (6_789, 12_345, 0, 1)
    );

    // 600 more bytes up, in flight at the walk; 200 down, read.
    let c2 = OpenTcp {
        write_seq: 9_600,
        bytes_received: 6_989,
        rcv_nxt: 277,
        copied_seq: 277,
        segs_out: 25,
        ..c1
    };
    let s2 = OpenTcp {
        bytes_received: 12_945,
        rcv_nxt: 9_600,
        copied_seq: 9_600,
        bytes_acked: 6_989,
        segs_in: 26,
        ..s1
    };
    state.walk(&snapshot(&[c2, s2]), &j, &mut col, &t);
    let b = col.finish(1, 2);
    let (c, s) = (stats(&b, Role::Client), stats(&b, Role::Server));
    assert_eq!((c.bytes_tx, c.bytes_rx, c.packets_tx), (600, 200, 5));
    assert_eq!((s.bytes_tx, s.bytes_rx, s.packets_rx), (200, 600, 5));

    // 55 more up and 11 down, then both close.
    let c3 = OpenTcp {
        bytes_acked: 1 + 13_000,
        write_seq: 9_655,
        snd_una: 9_655,
        bytes_received: 7_000,
        ..c2
    };
    let s3 = OpenTcp {
        bytes_acked: 7_000,
        bytes_received: 13_000,
        ..s2
    };
    for r in [c3, s3] {
        let ev = j.feed(&close_of(&r, 2_000)).unwrap().unwrap();
        col.on_event(&ev);
    }
    let b = col.finish(2, 3);
    let (c, s) = (stats(&b, Role::Client), stats(&b, Role::Server));
    assert_eq!((c.bytes_tx, c.bytes_rx, c.closed, c.opened), (55, 11, 1, 0));
    assert_eq!((s.bytes_tx, s.bytes_rx, s.closed), (11, 55, 1));
    // The client's duration: opened at tick 1,250, closed at 2,000.
    assert_eq!(
        c.duration.as_ref().map(|h| (h.count, h.sum)),
        Some((1, 3.0))
    );
}

/// A socket without an owner: taken as a baseline when the agent starts
/// (nothing counted, then only what follows); seen for the first time
/// later, left for one walk (its CONNECT may still be in the ring), then
/// counted whole under its CONNECT's owner if one came, else without one.
/// A namespace whose baseline read failed gets its baseline at its first
/// read.
#[test]
fn unnamed_sockets_baseline_and_second_sighting() {
    let mut col = collector();
    let j = join();
    let mut state = WalkState::default();
    let t = Telemetry::new();
    let old = client_record();
    let w = state.baseline(&snapshot(&[old]), &mut col, &t);
    assert_eq!(
        w,
        Walked {
            reported: 1,
            deferred: 0,
            failed: 0
        }
    );
    assert!(col.finish(0, 1).flows.is_empty());

    let old2 = OpenTcp {
        bytes_acked: 1 + 12_345 + 100,
        write_seq: 9_100,
        snd_una: 9_100,
        ..old
    };
    let new = OpenTcp {
        sk: 0xffff_8880_0000_4000,
        lport: 40_001,
        ..client_record()
    };
    let w = state.walk(&snapshot(&[old2, new]), &j, &mut col, &t);
    assert_eq!(
        w,
        Walked {
            reported: 1,
            deferred: 1,
            failed: 0
        }
    );
    let b = col.finish(1, 2);
    assert_eq!(b.flows.len(), 1);
    assert_eq!(
        (b.flows[0].stats.bytes_tx, b.flows[0].stats.opened),
        (100, 0)
    );

    // Its second walk without an owner: all of it, SYN included (as its
    // CLOSE will have it).
    let w = state.walk(&snapshot(&[old2, new]), &j, &mut col, &t);
    assert_eq!(
        w,
        Walked {
            reported: 2,
            deferred: 0,
            failed: 0
        }
    );
    let b = col.finish(2, 3);
    let total: u64 = b.flows.iter().map(|f| f.stats.bytes_tx).sum();
    assert_eq!(total, 12_345 + 1);

    // A namespace that failed at the baseline: its first read is its
    // baseline, however old its sockets.
    let mut col = collector();
    let mut state = WalkState::default();
    let failed = OpenTcpSnapshot {
        failed: vec![OpenTcpError::Create {
            netns: NETNS,
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        }],
        ..OpenTcpSnapshot::default()
    };
    let w = state.baseline(&failed, &mut col, &t);
    assert_eq!(
        w,
        Walked {
            reported: 0,
            deferred: 0,
            failed: 1
        }
    );
    let w = state.walk(&snapshot(&[old]), &j, &mut col, &t);
    assert_eq!(
        w,
        Walked {
            reported: 1,
            deferred: 0,
            failed: 0
        }
    );
    assert!(col.finish(0, 1).flows.is_empty());
    state.walk(&snapshot(&[old2]), &j, &mut col, &t);
    assert_eq!(col.finish(1, 2).flows[0].stats.bytes_tx, 100);
}

/// A namespace that cannot be read is counted once per walk as lost, by
/// what failed.
#[test]
fn failed_reads_are_counted() {
    let errors = vec![
        OpenTcpError::Read {
            netns: NETNS,
            read: 224,
            source: std::io::Error::from_raw_os_error(libc::EIO),
        },
        OpenTcpError::ForeignSocket {
            netns: NETNS,
            found: NETNS + 1,
            sk: CLIENT_SK,
        },
    ];
    assert_eq!(errors[0].loss_reason(), LossReason::ReadError);
    assert_eq!(errors[1].loss_reason(), LossReason::ParseError);
    assert_eq!(errors[0].netns(), Some(NETNS));
    let t = Telemetry::new();
    assert_eq!(count_failures(&errors, &t), 2);
    let lost = |reason: &str| {
        let f = Attrs::new()
            .with(flowscope_model::names::attr::REASON, reason)
            .with(flowscope_model::names::attr::SOURCE, "ebpf.tcp");
        t.total_matching(flowscope_model::telemetry::EVENTS_LOST, &f)
    };
    assert_eq!((lost("read_error"), lost("parse_error")), (1, 1));
}

/// Two clients the walk read before their CONNECTs left the ring: both
/// left out. The drain after the walk brings both CONNECTs, and one
/// client's CLOSE too: the open one is claimed in the same interval (its
/// SYN off, its process, opened once); the closed one is not, since its
/// CLOSE, already given to the collector, carries all of it.
#[test]
fn a_client_made_during_the_walk_is_claimed_after_the_next_drain() {
    let mut col = collector();
    let mut j = join();
    let mut state = WalkState::default();
    let t = Telemetry::new();
    let open = client_record();
    let closed = OpenTcp {
        sk: 0xffff_8880_0000_5000,
        lport: 40_002,
        ..client_record()
    };
    let w = state.walk(&snapshot(&[open, closed]), &j, &mut col, &t);
    assert_eq!(
        w,
        Walked {
            reported: 0,
            deferred: 2,
            failed: 0
        }
    );
    for sk in [open.sk, closed.sk] {
        j.feed(&Record::Connect(ConnectRec {
            kind: event_kind::CONNECT_MIN,
            tgid: 4_242,
            sk,
            ts: 1_250,
        }))
        .unwrap();
    }
    let end = j.feed(&close_of(&closed, 1_300)).unwrap().unwrap();
    col.on_event(&end);
    assert_eq!(state.claim(&j, &mut col), 1);
    let b = col.finish(0, 1);
    let flows: Vec<_> = b
        .flows
        .iter()
        .map(|f| {
            (
                f.local.port(),
                f.stats.bytes_tx,
                f.stats.opened,
                f.stats.closed,
            )
        })
        .collect();
    assert_eq!(flows.len(), 1, "{flows:?}");
    // Both clients share one flow key (same service, same server): the
    // open one's 12,345 and the closed one's 12,345, each once.
    assert_eq!((flows[0].1, flows[0].2, flows[0].3), (2 * 12_345, 2, 1));
    // Claimed once: the next claim has nothing left.
    assert_eq!(state.claim(&j, &mut col), 0);
}
