//! The connection table: turns what the kernel side reports (live TCP
//! connections from the walk of open sockets, UDP flows in `UDP_FLOWS`,
//! close/fail/late events from the TCP record join) into per-interval flow
//! deltas.
//!
//! The kernel keeps running totals per socket; this table remembers the
//! totals it last reported for each socket, so every interval's delta is
//! `now - last`, and a connection's final delta comes with its close event.
//! Connections are then grouped into flows by (process, role, local server
//! port or peer server port, peer address), which is where the client's
//! ephemeral port disappears, as the contract wants.
//!
//! The table's jobs, one file each:
//! - [`key`]: a flow's identity (what the ephemeral port and the role make
//!   of a socket's addresses);
//! - [`tcp`]: TCP connections: per-interval deltas of the kernel's running
//!   counters, close/fail/late events, closed connections kept for late
//!   events;
//! - [`udp`]: UDP flows from `UDP_FLOWS`;
//! - [`nat`]: the peer behind NAT, from conntrack, settled at the end of
//!   the interval when its entry comes late;
//! - [`resource`]: the Resource and attributes of each reported flow.
//!
//! This file holds the table itself and the end of an interval.

mod key;
mod nat;
mod resource;
mod tcp;
mod udp;

// hashbrown's default hasher (foldhash) is several times cheaper than
// SipHash on these small keys, and the table hashes several per record.
use hashbrown::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;

use flowscope_common::UdpKey;
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::metrics::HOST_DROPS;
use flowscope_model::names::attr;
use flowscope_model::{Attrs, FlowBatch, FlowStats, MemoryPressure, Telemetry};
use flowscope_model::{Point, PointValue};

use crate::conntrack::NatResolver;
use crate::drops::attribute::{DropDelta, Unclaimed};
use crate::process::ProcessCache;

pub use key::ip_from;
use key::{FlowKey, PendKey};
use tcp::TcpTrack;
use udp::UdpTrack;

/// How the Resource of a flow is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// service.name, container, host.
    Service,
    /// Adds process.pid, process.executable.name, process.command
    /// (argv\[0\]), and process.command_line when
    /// [`CollectorSettings::include_command_line`] is set.
    Process,
}

/// Settings of the table.
#[derive(Clone, Debug)]
pub struct CollectorSettings {
    pub max_tracked: usize,
    pub granularity: Granularity,
    /// With [`Granularity::Process`]: also put the whole command line on
    /// the Resource (`process.command_line`). Off by default: arguments can
    /// carry secrets.
    pub include_command_line: bool,
    pub rtt_bounds: Arc<[f64]>,
    pub duration_bounds: Arc<[f64]>,
    /// The host's ephemeral port range, to tell a client from a server when
    /// the connection's open was not seen (ip_local_port_range).
    pub ephemeral: (u16, u16),
    /// Host attributes on every Resource (host.name, host.id, os.type).
    pub host: Attrs,
}

/// The connection table. Not thread-safe by design: the receiver task owns it.
pub struct Collector {
    settings: CollectorSettings,
    telemetry: Telemetry,
    procs: ProcessCache,
    tcp: HashMap<u64, TcpTrack>,
    /// Keys of connections closed recently, for late bytes and resets:
    /// (key, round of the close, serial of the insertion).
    ///
    /// Bounded twice: by age (two rounds, see `finish_interval`) and by
    /// size (`max_tracked` entries, see [`Collector::remember_closed`]). A
    /// burst of short connections (a port scan, a client that does not
    /// reuse connections) closes faster than rounds pass, and the live
    /// table's bound does not apply here: every close removes its socket
    /// from `tcp` first.
    closed: HashMap<u64, (FlowKey, u64, u64)>,
    /// (socket, serial) of `closed`'s entries in insertion order, oldest
    /// first; an entry whose serial no longer matches was replaced (the
    /// socket address reused) and is skipped.
    closed_order: VecDeque<(u64, u64)>,
    closed_serial: u64,
    /// `closed`'s entries forgotten for room this interval, reported once
    /// at its end: counted per close, the report would cost a telemetry
    /// lookup for every connection while the table is full.
    closed_evicted: u64,
    udp: HashMap<UdpKey, UdpTrack>,
    acc: HashMap<FlowKey, FlowStats>,
    round: u64,
    /// Conntrack, when NAT resolution is on.
    nat: Option<NatResolver>,
    /// The heap's pressure (the `memory_limiter`): above its soft limit, or
    /// with its room for new flows used up, no new flow is tracked.
    memory: MemoryPressure,
    /// TCP sockets refused (table full or memory limit), with the round
    /// they were last seen in: a refused connection stays refused for its
    /// life, counted once, neither tracked later nor reported at its close.
    refused: HashMap<u64, u64>,
    pending: HashMap<PendKey, (FlowKey, FlowStats)>,
    /// Keys of closed connections whose stats wait in `pending`.
    closed_pending: HashMap<u64, PendKey>,
    /// Pending slots already carried over from the previous interval: the
    /// next settling is their last.
    carried: hashbrown::HashSet<PendKey>,
    /// Monotonic time (the clock of the events' `ts_ns`) of the last time
    /// the conntrack service caught up: a close event from before it that
    /// does not resolve is not NATed, or its entry is lost.
    caught_up_ns: std::cell::Cell<u64>,
    /// This interval's kernel drops, until the flows they belong to claim
    /// them at its end (see [`crate::drops::attribute`]).
    drops: Unclaimed,
}

impl Collector {
    pub fn new(settings: CollectorSettings, telemetry: Telemetry) -> Self {
        let max = settings.max_tracked;
        Self {
            settings,
            telemetry,
            procs: ProcessCache::new("/proc", std::time::Duration::from_secs(60), max.max(1024)),
            tcp: HashMap::new(),
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
            closed_serial: 0,
            closed_evicted: 0,
            udp: HashMap::new(),
            acc: HashMap::new(),
            round: 0,
            nat: None,
            memory: MemoryPressure::new(),
            refused: HashMap::new(),
            caught_up_ns: std::cell::Cell::new(0),
            pending: HashMap::new(),
            closed_pending: HashMap::new(),
            carried: hashbrown::HashSet::new(),
            drops: Unclaimed::default(),
        }
    }

    /// Drops the kernel counted since the last read; the flows of this
    /// interval claim them when it ends, the rest are the host's.
    pub fn on_drops(&mut self, drops: Vec<DropDelta>) {
        for d in drops {
            self.drops.add(d);
        }
    }

    /// Resolves every connection's peer through conntrack (see
    /// [`crate::conntrack`]).
    pub fn with_nat(mut self, nat: NatResolver) -> Self {
        self.nat = Some(nat);
        self
    }

    /// Refuses new flows while `memory` says the heap is above the
    /// `memory_limiter`'s soft limit.
    pub fn with_memory(mut self, memory: MemoryPressure) -> Self {
        self.memory = memory;
        self
    }

    /// The stats a socket's counts go to: its flow's, or a pending slot of
    /// its own when its peer looked translated but was not resolved.
    #[inline]
    fn target(&mut self, key: FlowKey, pend: Option<PendKey>) -> &mut FlowStats {
        match pend {
            None => self.acc.entry(key).or_default(),
            Some(p) => {
                &mut self
                    .pending
                    .entry(p)
                    .or_insert((key, FlowStats::default()))
                    .1
            }
        }
    }

    /// Number of sockets and UDP flows tracked now.
    pub fn tracked(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }

    /// Ends the interval: the flows with anything to report, and the table
    /// forgets what is stale.
    pub fn finish(&mut self, start_unix_nanos: u64, end_unix_nanos: u64) -> FlowBatch {
        self.finish_interval(start_unix_nanos, end_unix_nanos, true)
    }

    /// Ends the agent's last interval: as [`Collector::finish`], but what
    /// still waits for its conntrack entry is reported now (unresolved and
    /// counted), since there is no next interval.
    pub fn finish_last(&mut self, start_unix_nanos: u64, end_unix_nanos: u64) -> FlowBatch {
        self.finish_interval(start_unix_nanos, end_unix_nanos, false)
    }

    fn finish_interval(
        &mut self,
        start_unix_nanos: u64,
        end_unix_nanos: u64,
        carry: bool,
    ) -> FlowBatch {
        self.settle_pending(carry);
        self.telemetry.emit(EventsLost::new(
            Source::EbpfTcp,
            LossReason::TableFull,
            std::mem::take(&mut self.closed_evicted),
        ));
        let mut acc = std::mem::take(&mut self.acc);
        // Every flow seen this interval (live connections, ended ones, UDP
        // flows) has its entry in `acc`, even without new counts.
        if !self.drops.is_empty() {
            for (key, stats) in acc.iter_mut() {
                let local = key.local.socket();
                self.drops
                    .claim(key.transport, key.role, local, key.peer.socket(), stats);
                // Packets dropped before NAT rewrote them carry the
                // address the socket used.
                if let Some(nat) = key.nat {
                    self.drops
                        .claim(key.transport, key.role, local, nat.socket(), stats);
                }
            }
        }
        let host_drops = self.drops.finish();
        let mut resources = HashMap::new();
        let mut flows = Vec::with_capacity(acc.len());
        for (key, stats) in acc {
            if stats.is_empty() {
                continue;
            }
            flows.push(self.flow(key, stats, &mut resources));
        }
        // Close records serve late events for one more interval.
        let round = self.round;
        self.closed
            .retain(|_, (_, r, _)| round.saturating_sub(*r) < 2);
        // Rounds grow with insertion order: what expired is at the front.
        let closed = &self.closed;
        while let Some(&(sk, serial)) = self.closed_order.front() {
            if closed.get(&sk).is_some_and(|c| c.2 == serial) {
                break;
            }
            self.closed_order.pop_front();
        }
        self.closed_pending.retain(|sk, _| closed.contains_key(sk));
        // A socket not seen by the walk for three rounds and never closed
        // was freed without a CLOSE we saw (its record lost): forget it.
        self.tcp
            .retain(|_, t| round.saturating_sub(t.seen_round) < 3);
        self.refused.retain(|_, r| round.saturating_sub(*r) < 3);
        self.procs.expire();
        self.round += 1;
        let mut points = Vec::new();
        if !host_drops.is_empty() {
            let host = Arc::new(self.settings.host.clone());
            for (reason, n) in host_drops {
                points.push(Point {
                    resource: host.clone(),
                    metric: HOST_DROPS,
                    attrs: Attrs::new().with(attr::DROP_REASON, &*reason),
                    value: PointValue::Int(n),
                });
            }
        }
        FlowBatch {
            start_unix_nanos,
            end_unix_nanos,
            flows,
            points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tcp::u32_delta;
    use super::*;
    use crate::conntrack::PROTO_TCP;
    use flowscope_common::{AF_INET, AF_INET6, Conn, Event, UdpStats, event_kind, role};
    use flowscope_model::names::nat;
    use flowscope_model::{FailReason, Flow, Role};
    use std::net::{IpAddr, SocketAddr};

    fn settings() -> CollectorSettings {
        CollectorSettings {
            max_tracked: 100,
            granularity: Granularity::Service,
            include_command_line: false,
            rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
            duration_bounds: Arc::from(flowscope_model::hist::DURATION_BOUNDS),
            ephemeral: (32768, 60999),
            host: Attrs::new().with("host.name", "h"),
        }
    }

    fn conn(role: u8, lport: u16, rport: u16) -> Conn {
        let mut c = Conn {
            family: AF_INET,
            lport,
            rport,
            role,
            established: 1,
            opened_ns: 1,
            ..Conn::default()
        };
        c.laddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        c.raddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        c.comm[..4].copy_from_slice(b"curl");
        c
    }

    #[test]
    fn deltas_across_intervals_and_close() {
        let mut col = Collector::new(settings(), Telemetry::new());
        let mut c = conn(role::CLIENT, 40000, 80);
        c.bytes_tx = 100;
        col.on_conn(1, &c);
        let b = col.finish(0, 1);
        assert_eq!(b.flows.len(), 1);
        let f = &b.flows[0];
        assert_eq!(
            (f.stats.bytes_tx, f.stats.opened, f.stats.active),
            (100, 1, 1)
        );
        assert_eq!(
            f.attrs.get(attr::PEER_PORT),
            Some(&flowscope_model::Value::Int(80))
        );
        assert_eq!(f.local.port(), 0, "ephemeral port dropped");

        c.bytes_tx = 250;
        c.bytes_rx = 7;
        col.on_event(&Event {
            kind: event_kind::CLOSE,
            errno: 0,
            sk: 1,
            ts_ns: 2_000_000_001,
            conn: c,
        });
        // Late bytes read after the close land on the same flow.
        let mut late = conn(role::UNKNOWN, 40000, 80);
        late.bytes_rx = 5;
        col.on_event(&Event {
            kind: event_kind::LATE,
            errno: 0,
            sk: 1,
            ts_ns: 0,
            conn: late,
        });
        let b = col.finish(1, 2);
        assert_eq!(b.flows.len(), 1);
        let s = &b.flows[0].stats;
        assert_eq!(
            (s.bytes_tx, s.bytes_rx, s.opened, s.closed, s.active),
            (150, 12, 0, 1, 0)
        );
        assert_eq!(s.duration.as_ref().map(|h| h.count), Some(1));
        assert!(col.finish(2, 3).flows.is_empty());
    }

    /// A connection older than the agent: the baseline counts nothing and
    /// shows no flow; the next read and the close count only what came
    /// after it (1,000 + 234 bytes sent, 50 read, 12 segments each way), and
    /// no open.
    #[test]
    fn baseline_counts_only_what_follows() {
        let mut col = Collector::new(settings(), Telemetry::new());
        let mut c = conn(role::UNKNOWN, 40000, 5432);
        c.opened_ns = 0;
        (c.bytes_tx, c.bytes_rx, c.segs_out, c.segs_in) = (1_000_000, 7_000, 900, 800);
        c.total_retrans = 3;
        col.on_conn_baseline(1, &c);
        assert_eq!(col.tracked(), 1);
        assert!(col.finish(0, 1).flows.is_empty(), "the baseline counted");

        (c.bytes_tx, c.bytes_rx, c.segs_out, c.segs_in) = (1_001_000, 7_050, 910, 805);
        col.on_conn(1, &c);
        let b = col.finish(1, 2);
        let s = &b.flows[0].stats;
        assert_eq!(
            (
                s.bytes_tx,
                s.bytes_rx,
                s.packets_tx,
                s.packets_rx,
                s.retransmits
            ),
            (1_000, 50, 10, 5, 0)
        );
        assert_eq!((s.opened, s.active), (0, 1));

        (c.bytes_tx, c.segs_out, c.segs_in) = (1_001_234, 912, 812);
        c.total_retrans = 4;
        col.on_event(&Event {
            kind: event_kind::CLOSE,
            errno: 0,
            sk: 1,
            ts_ns: 9,
            conn: c,
        });
        let b = col.finish(2, 3);
        let s = &b.flows[0].stats;
        assert_eq!(
            (
                s.bytes_tx,
                s.bytes_rx,
                s.packets_tx,
                s.packets_rx,
                s.retransmits
            ),
            (234, 0, 2, 7, 1)
        );
        assert_eq!((s.opened, s.closed), (0, 1));
        assert!(s.duration.is_none(), "no open time, no duration");
    }

    #[test]
    fn u32_counters_wrap_instead_of_saturating() {
        assert_eq!(u32_delta(10, u32::MAX - 5), 16);
        assert_eq!(u32_delta(0, u32::MAX), 1);
        assert_eq!(u32_delta(7, 7), 0);
        // Gone backwards (a new connection at a reused socket address).
        assert_eq!(u32_delta(10, 1_000), 0);

        let mut col = Collector::new(settings(), Telemetry::new());
        let mut c = conn(role::CLIENT, 40000, 80);
        c.segs_out = u32::MAX - 5;
        c.segs_in = u32::MAX;
        c.total_retrans = u32::MAX - 1;
        c.resets_rx = u32::MAX;
        c.bytes_tx = 1_000;
        col.on_conn(1, &c);
        col.finish(0, 1);
        c.segs_out = 10;
        c.segs_in = 3;
        c.total_retrans = 2;
        c.resets_rx = 0;
        c.bytes_tx = 1_500;
        col.on_conn(1, &c);
        let b = col.finish(1, 2);
        let s = &b.flows[0].stats;
        assert_eq!(
            (
                s.packets_tx,
                s.packets_rx,
                s.retransmits,
                s.resets_rx,
                s.bytes_tx
            ),
            (16, 4, 4, 1, 500)
        );
    }

    #[test]
    fn failed_connect_reason() {
        let mut col = Collector::new(settings(), Telemetry::new());
        let mut c = conn(role::CLIENT, 40000, 81);
        c.established = 0;
        col.on_event(&Event {
            kind: event_kind::FAILED,
            errno: 111,
            sk: 9,
            ts_ns: 5,
            conn: c,
        });
        let b = col.finish(0, 1);
        assert_eq!(b.flows[0].stats.failed(FailReason::Refused), 1);
        assert_eq!(b.flows[0].stats.opened, 0);
    }

    #[test]
    fn unknown_role_by_ports_and_v4_mapped() {
        let col = Collector::new(settings(), Telemetry::new());
        assert_eq!(col.role_by_ports(443, 50000), Role::Server);
        assert_eq!(col.role_by_ports(50000, 443), Role::Client);
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[198, 18, 0, 9]);
        assert_eq!(
            ip_from(AF_INET6, &raw),
            "198.18.0.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn table_bound_is_counted() {
        let mut s = settings();
        s.max_tracked = 1;
        let t = Telemetry::new();
        let mut col = Collector::new(s, t.clone());
        col.on_conn(1, &conn(role::CLIENT, 40000, 80));
        col.on_conn(2, &conn(role::CLIENT, 40001, 80));
        let f = Attrs::new().with(attr::REASON, "table_full");
        assert_eq!(
            t.total_matching(flowscope_model::telemetry::EVENTS_LOST, &f),
            1
        );
    }

    #[test]
    fn closed_table_is_bounded_by_max_tracked() {
        let mut s = settings();
        s.max_tracked = 3;
        let t = Telemetry::new();
        let mut col = Collector::new(s, t.clone());
        let close = |col: &mut Collector, sk: u64, lport: u16| {
            col.on_event(&Event {
                kind: event_kind::CLOSE,
                errno: 0,
                sk,
                ts_ns: 2,
                conn: conn(role::CLIENT, lport, 80),
            });
        };
        // Eight closes in one round, room for three.
        for sk in 1..=8 {
            close(&mut col, sk, 40000 + sk as u16);
        }
        let full = Attrs::new().with(attr::REASON, "table_full");
        let lost = || t.total_matching(flowscope_model::telemetry::EVENTS_LOST, &full);
        // Counted at the interval's end, once.
        assert_eq!((lost(), col.closed_evicted), (0, 5));
        let mut kept: Vec<u64> = col.closed.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![6, 7, 8], "the oldest went first");
        // A socket address reused by a later close replaces its entry: no
        // eviction, and the older slot in the order is skipped.
        close(&mut col, 7, 41007);
        assert_eq!((col.closed_evicted, col.closed.len()), (5, 3));
        close(&mut col, 9, 40009);
        let mut kept: Vec<u64> = col.closed.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!((col.closed_evicted, kept), (6, vec![7, 8, 9]));
        // Age still applies: kept through the next interval, gone after.
        col.finish(0, 1);
        assert_eq!((lost(), col.closed_evicted), (6, 0));
        col.finish(1, 2);
        // The replaced slot of socket 7 was at the front: trimmed.
        assert_eq!((col.closed.len(), col.closed_order.len()), (3, 3));
        col.finish(2, 3);
        assert_eq!((col.closed.len(), col.closed_order.len()), (0, 0));
        assert_eq!(lost(), 6);
    }

    #[test]
    fn nat_resolves_at_interval_end_or_the_next_then_counts_the_miss() {
        use crate::conntrack::{CtEntry, NatResolver, Tuple};
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let entry = |port: u16, pod: &str| CtEntry {
            proto: PROTO_TCP,
            orig: Tuple {
                src: SocketAddr::new("198.18.0.1".parse().unwrap(), port),
                dst: sa("198.18.0.2:80"),
            },
            reply: Tuple {
                src: sa(pod),
                dst: SocketAddr::new("198.18.0.1".parse().unwrap(), port),
            },
        };
        let nat = NatResolver::new(100, std::time::Duration::from_secs(30));
        nat.insert(0, &entry(40000, "198.18.1.2:8080"));
        let t = Telemetry::new();
        let mut col = Collector::new(settings(), t.clone()).with_nat(nat.clone());
        let mut a = conn(role::CLIENT, 40000, 80);
        a.bytes_rx = 100;
        col.on_conn(1, &a);
        // Entry not known yet when the connection is seen...
        let mut b = conn(role::CLIENT, 40001, 80);
        b.bytes_rx = 20;
        col.on_conn(2, &b);
        // ...and never known.
        let mut c = conn(role::CLIENT, 40002, 80);
        c.bytes_rx = 3;
        col.on_conn(3, &c);
        // Known only after the interval ended (events trail a little).
        let mut d = conn(role::CLIENT, 40003, 80);
        d.bytes_rx = 7;
        col.on_conn(4, &d);
        nat.insert(0, &entry(40001, "198.18.1.3:8080"));
        let s = |v: &str| Some(flowscope_model::Value::from(v.to_string()));
        let view = |flows: &[Flow]| {
            let mut got: Vec<_> = flows
                .iter()
                .map(|f| {
                    (
                        f.peer,
                        f.attrs.get(nat::PEER_NAT_ADDRESS).cloned(),
                        f.attrs.get(nat::PEER_NAT_PORT).cloned(),
                        f.stats.bytes_rx,
                    )
                })
                .collect();
            got.sort_by_key(|g| g.0);
            got
        };
        let nat_port = Some(80i64.into());
        // c and d wait for the next interval.
        assert_eq!(
            view(&col.finish(0, 1).flows),
            vec![
                (
                    sa("198.18.1.2:8080"),
                    s("198.18.0.2"),
                    nat_port.clone(),
                    100
                ),
                (sa("198.18.1.3:8080"), s("198.18.0.2"), nat_port.clone(), 20),
            ]
        );
        let f = Attrs::new().with(attr::REASON, nat::REASON_NAT_UNRESOLVED);
        let lost = || t.total_matching(flowscope_model::telemetry::EVENTS_LOST, &f);
        assert_eq!(lost(), 0);
        nat.insert(0, &entry(40003, "198.18.1.4:8080"));
        // The resolution is remembered for the connection's later intervals,
        // even once conntrack has forgotten it.
        b.bytes_rx = 25;
        col.on_conn(2, &b);
        // Second settling: d resolves late, c is reported as it was and
        // counted.
        assert_eq!(
            view(&col.finish(1, 2).flows),
            vec![
                (sa("198.18.0.2:80"), None, None, 3),
                (sa("198.18.1.3:8080"), s("198.18.0.2"), nat_port.clone(), 5),
                (sa("198.18.1.4:8080"), s("198.18.0.2"), nat_port, 7),
            ]
        );
        assert_eq!(lost(), 1);
        // The agent's last interval carries nothing over.
        let mut e = conn(role::CLIENT, 40004, 80);
        e.bytes_rx = 1;
        col.on_conn(5, &e);
        assert_eq!(
            view(&col.finish_last(2, 3).flows),
            vec![(sa("198.18.0.2:80"), None, None, 1)]
        );
        assert_eq!(lost(), 2);
    }

    #[test]
    fn udp_deltas_and_idle_expiry() {
        let mut col = Collector::new(settings(), Telemetry::new());
        let key = UdpKey {
            cookie: 7,
            rport: 53,
            family: AF_INET,
            ..UdpKey::default()
        };
        let mut st = UdpStats {
            lport: 40000,
            bytes_tx: 30,
            packets_tx: 1,
            ..UdpStats::default()
        };
        st.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert!(!col.on_udp(&key, &st, None));
        let b = col.finish(0, 1);
        assert_eq!(b.flows[0].stats.bytes_tx, 30);
        assert_eq!(b.flows[0].role, Role::Client);
        let mut idle = false;
        for i in 0..3 {
            idle = col.on_udp(&key, &st, None);
            col.finish(i, i + 1);
        }
        assert!(idle);
    }

    #[test]
    fn memory_pressure_refuses_new_flows_only_and_counts_them() {
        let t = Telemetry::new();
        let memory = MemoryPressure::new();
        let mut col = Collector::new(settings(), t.clone()).with_memory(memory.clone());
        // Tracked before the heap crossed the soft limit: kept.
        col.on_conn(1, &conn(role::CLIENT, 40000, 80));
        memory.set(flowscope_model::Pressure::Soft, 0);
        col.on_conn(1, &conn(role::CLIENT, 40000, 80));
        col.on_conn(2, &conn(role::CLIENT, 40001, 8080));
        // Seen again in the next interval: still refused, counted once.
        col.on_conn(2, &conn(role::CLIENT, 40001, 8080));
        let key = UdpKey {
            cookie: 9,
            rport: 53,
            family: AF_INET,
            ..UdpKey::default()
        };
        let st = UdpStats {
            lport: 40002,
            bytes_tx: 30,
            packets_tx: 1,
            ..UdpStats::default()
        };
        // Refused, and the caller deletes its kernel entry.
        assert!(col.on_udp(&key, &st, None));
        let lost = |source: &str| {
            let f = Attrs::new()
                .with(attr::REASON, "memory_limit")
                .with(attr::SOURCE, source);
            t.total_matching(flowscope_model::telemetry::EVENTS_LOST, &f)
        };
        assert_eq!((lost("ebpf.tcp"), lost("ebpf.udp")), (1, 1));
        assert_eq!(col.tcp.len() + col.udp.len(), 1);
        memory.set(flowscope_model::Pressure::Normal, 1);
        assert!(!col.on_udp(&key, &st, None));
        assert_eq!(col.tcp.len() + col.udp.len(), 2);
        // The room (one flow) is used up: the next new socket is refused
        // although the heap is below the soft limit; the refused one stays
        // refused, and its close reports nothing.
        col.on_conn(3, &conn(role::CLIENT, 40003, 80));
        col.on_conn(2, &conn(role::CLIENT, 40001, 8080));
        assert_eq!((lost("ebpf.tcp"), lost("ebpf.udp")), (2, 1));
        memory.set(flowscope_model::Pressure::Normal, 10);
        col.on_conn(2, &conn(role::CLIENT, 40001, 8080));
        assert_eq!(col.tcp.len() + col.udp.len(), 2);
        col.on_event(&Event {
            kind: event_kind::CLOSE,
            errno: 0,
            sk: 2,
            ts_ns: 2,
            conn: conn(role::CLIENT, 40001, 8080),
        });
        let b = col.finish(0, 1);
        assert!(
            b.flows.iter().all(|f| f.peer.port() != 8080),
            "a refused connection is not reported at its close"
        );
        assert_eq!((lost("ebpf.tcp"), lost("ebpf.udp")), (2, 1));
    }

    #[test]
    fn udp_read_without_the_sender_is_the_server_side() {
        // A datagram read with recv() on an unconnected socket: the peer is
        // the unspecified address, port 0.
        let mut col = Collector::new(settings(), Telemetry::new());
        let key = UdpKey {
            cookie: 8,
            family: AF_INET,
            ..UdpKey::default()
        };
        let st = UdpStats {
            lport: 5353,
            bytes_rx: 40,
            packets_rx: 1,
            ..UdpStats::default()
        };
        col.on_udp(&key, &st, None);
        let b = col.finish(0, 1);
        assert_eq!(b.flows[0].role, Role::Server);
        assert_eq!(b.flows[0].local.port(), 5353);
        assert!(b.flows[0].peer.ip().is_unspecified());
    }
}
