//! The connection table: turns what the kernel side reports (live
//! connections in `CONNS`, UDP flows in `UDP_FLOWS`, close/fail/late events
//! from the ring buffer) into per-interval flow deltas.
//!
//! The kernel keeps running totals per socket; this table remembers the
//! totals it last reported for each socket, so every interval's delta is
//! `now - last`, and a connection's final delta comes with its close event.
//! Connections are then grouped into flows by (process, role, local server
//! port or peer server port, peer address), which is where the client's
//! ephemeral port disappears, as the contract wants.

// hashbrown's default hasher (foldhash) is several times cheaper than
// SipHash on these small keys, and the table hashes several per record.
use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use flowscope_common::{AF_INET, Conn, Event, Owner, UdpKey, UdpStats, event_kind, role};
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::names::{attr, nat as nat_names, resource};
use flowscope_model::{
    Attrs, FailReason, Flow, FlowBatch, FlowStats, MemoryPressure, Role, Telemetry, Transport,
};

use flowscope_model::metrics::HOST_DROPS;
use flowscope_model::{Point, PointValue};

use crate::conntrack::{NatResolver, PROTO_TCP, PROTO_UDP, Resolution};
use crate::drops::attribute::{DropDelta, Unclaimed};
use crate::process::{ProcessCache, comm_str};

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

/// A flow's identity within one interval.
///
/// Kept small on purpose: one is stored per flow and per connection closed
/// in the last two intervals, and hashed twice per connection. Its
/// addresses are [`Addr`]s (20 bytes) rather than `SocketAddr`s (32), which
/// with the NAT address took the closed-connection table from 112 to 144
/// bytes an entry and the collector 10-15 % of its speed in `flowscope
/// bench`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    transport: Transport,
    role: Role,
    netns: u32,
    pid: u32,
    comm: [u8; 16],
    local: Addr,
    peer: Addr,
    /// The peer as the socket addressed it, when NAT rewrote it (the port
    /// follows the same rule as `peer`'s).
    nat: Option<Addr>,
}

/// An address and port without the IPv6 flow label and scope id a
/// `SocketAddr` carries (the kernel records give neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Addr {
    ip: IpAddr,
    port: u16,
}

impl Addr {
    fn new(ip: IpAddr, port: u16) -> Self {
        Self { ip, port }
    }

    fn socket(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// A connection or UDP flow whose peer looked translated but whose
/// conntrack entry was not found yet: its stats wait until the end of the
/// interval for the entry, apart from the flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PendKey {
    transport: Transport,
    netns: u32,
    local: SocketAddr,
    peer: SocketAddr,
    /// The TCP socket, to remember the answer for its later intervals.
    sk: Option<u64>,
}

/// A socket's resolved peer: (real, as the socket addressed it), full
/// addresses with ports.
type NatPeer = (SocketAddr, SocketAddr);

#[derive(Clone, Copy, Default)]
struct TcpLast {
    bytes_tx: u64,
    bytes_rx: u64,
    segs_out: u32,
    segs_in: u32,
    retrans: u32,
    resets_tx: u32,
    resets_rx: u32,
}

impl TcpLast {
    fn of(c: &Conn) -> Self {
        Self {
            bytes_tx: c.bytes_tx,
            bytes_rx: c.bytes_rx,
            segs_out: c.segs_out,
            segs_in: c.segs_in,
            retrans: c.total_retrans,
            resets_tx: c.resets_tx,
            resets_rx: c.resets_rx,
        }
    }
}

struct TcpTrack {
    last: TcpLast,
    opened_counted: bool,
    seen_round: u64,
    /// The resolved peer, once known: conntrack may forget the entry of a
    /// long-lived connection before the connection ends. Boxed: most
    /// connections are not translated, and this keeps their entry at 56
    /// bytes instead of 120.
    nat: Option<Box<NatPeer>>,
}

struct UdpTrack {
    last: UdpStats,
    seen_round: u64,
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

/// How long a close event waits for the conntrack service to catch up
/// before it is settled as it resolves then.
const CATCH_UP_WAIT: Duration = Duration::from_millis(20);

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec of ours.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// How far a wrapping u32 counter moved from `last` to `now`.
///
/// The difference is taken modulo 2^32 (`wrapping_sub`), so a counter that
/// passed `u32::MAX` since the last read still gives the segments sent in
/// between: `last = u32::MAX - 5, now = 10` is 16. Like TCP's own sequence
/// numbers (RFC 1982 serial arithmetic), a difference of 2^31 or more is
/// read as the counter having gone backwards, not as a wrap: no connection
/// sends two billion segments in one interval, while a socket address
/// reused by a new connection (its CLOSE lost) restarts its counters near
/// zero. That counts nothing, as the byte counters do.
fn u32_delta(now: u32, last: u32) -> u64 {
    let d = now.wrapping_sub(last);
    if d > i32::MAX as u32 { 0 } else { u64::from(d) }
}

/// Normalises an address from the kernel: IPv4-mapped IPv6 becomes IPv4.
pub fn ip_from(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let v6 = Ipv6Addr::from(*raw);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
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

    /// What conntrack says about a socket sending `local -> peer`.
    fn resolve(
        &self,
        transport: Transport,
        netns: u32,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Resolution {
        let Some(nat) = &self.nat else {
            return Resolution::NotNat;
        };
        let proto = match transport {
            Transport::Tcp => PROTO_TCP,
            Transport::Udp => PROTO_UDP,
        };
        nat.resolve(proto, netns, local, peer)
    }

    /// Rewrites a key's peer to the real one, keeping the translated one.
    fn apply_nat(key: &mut FlowKey, (real, nat): NatPeer) {
        let port = |a: SocketAddr| match key.role {
            Role::Client => a.port(),
            Role::Server => 0,
        };
        key.peer = Addr::new(real.ip(), port(real));
        key.nat = Some(Addr::new(nat.ip(), port(nat)));
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

    /// A TCP socket's flow key with its peer resolved (`cached` is what an
    /// earlier interval found), the resolution to remember, and the pending
    /// slot when unresolved.
    #[inline]
    /// `event_ns` is the time of the close or failure event asking, if
    /// one does: unresolved, it waits for the conntrack service to read
    /// what is queued (see [`Collector::catch_up_nat`]) and tries again.
    fn tcp_key_resolved(
        &self,
        sk: u64,
        c: &Conn,
        cached: Option<NatPeer>,
        event_ns: Option<u64>,
    ) -> (FlowKey, Option<NatPeer>, Option<PendKey>) {
        let mut key = self.tcp_key(c);
        if self.nat.is_none() {
            return (key, None, None);
        }
        let local = SocketAddr::new(ip_from(c.family, &c.laddr), c.lport);
        let peer = SocketAddr::new(ip_from(c.family, &c.raddr), c.rport);
        let mut res = match cached {
            Some((real, nat)) => Resolution::Nat { real, nat },
            None => self.resolve(Transport::Tcp, c.netns, local, peer),
        };
        if !matches!(res, Resolution::Nat { .. })
            && event_ns.is_some_and(|t| t > self.caught_up_ns.get())
        {
            self.catch_up_nat();
            res = self.resolve(Transport::Tcp, c.netns, local, peer);
        }
        match res {
            Resolution::Nat { real, nat } => {
                Self::apply_nat(&mut key, (real, nat));
                (key, Some((real, nat)), None)
            }
            Resolution::NotNat => (key, None, None),
            Resolution::Missing => {
                let p = PendKey {
                    transport: Transport::Tcp,
                    netns: c.netns,
                    local,
                    peer,
                    sk: Some(sk),
                };
                (key, None, Some(p))
            }
        }
    }

    /// Has the conntrack service read every event queued now, waiting up to
    /// [`CATCH_UP_WAIT`]: a connection of a millisecond closes long before
    /// the service's thread may have read its NEW event. One catch-up
    /// serves every event stamped before it. A service that does not answer
    /// in time is not asked again for those events (debug log): the
    /// collection thread must not stall on it.
    pub fn catch_up_nat(&self) {
        let Some(nat) = &self.nat else { return };
        let now = monotonic_ns();
        if !nat.catch_up(CATCH_UP_WAIT) {
            tracing::debug!("conntrack did not catch up within {CATCH_UP_WAIT:?}");
        }
        self.caught_up_ns.set(now);
    }

    /// Number of sockets and UDP flows tracked now.
    pub fn tracked(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }

    fn role_by_ports(&self, local_port: u16, peer_port: u16) -> Role {
        let (lo, hi) = self.settings.ephemeral;
        let eph = |p: u16| p >= lo && p <= hi;
        match (eph(local_port), eph(peer_port)) {
            (true, false) => Role::Client,
            (false, true) => Role::Server,
            // An unknown peer (UDP read without asking for the sender):
            // the socket with the fixed port is the one being talked to.
            _ if peer_port == 0 => Role::Server,
            _ if local_port < peer_port => Role::Server,
            _ => Role::Client,
        }
    }

    fn tcp_key(&self, c: &Conn) -> FlowKey {
        let role = match c.role {
            role::CLIENT => Role::Client,
            role::SERVER => Role::Server,
            _ => self.role_by_ports(c.lport, c.rport),
        };
        self.key(
            Transport::Tcp,
            role,
            c.netns,
            c.tgid,
            c.comm,
            ip_from(c.family, &c.laddr),
            c.lport,
            ip_from(c.family, &c.raddr),
            c.rport,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn key(
        &self,
        transport: Transport,
        role: Role,
        netns: u32,
        pid: u32,
        comm: [u8; 16],
        lip: IpAddr,
        lport: u16,
        rip: IpAddr,
        rport: u16,
    ) -> FlowKey {
        // The client's ephemeral port is never part of a flow's identity.
        let (lport, rport) = match role {
            Role::Client => (0, rport),
            Role::Server => (lport, 0),
        };
        FlowKey {
            transport,
            role,
            netns,
            pid,
            comm,
            local: Addr::new(lip, lport),
            peer: Addr::new(rip, rport),
            nat: None,
        }
    }

    /// Adds a connection's counters since `last` to its flow's stats.
    ///
    /// The byte counters are u64 that the eBPF side adds to itself: they
    /// cannot wrap in a connection's life (2^64 bytes), so a value below the
    /// last one means the counters restarted (a socket freed without a CLOSE
    /// we saw, its address reused by a new connection) and the delta is
    /// zero rather than a wrapped 2^64.
    ///
    /// The segment and retransmit counters are the kernel's own u32 fields
    /// of `struct tcp_sock` (`segs_out`, `segs_in`, `total_retrans`, read as
    /// they are), and the reset counters are u32 the eBPF side increments:
    /// these do wrap on a long-lived connection (2^32 segments is 6 TB at a
    /// 1500-byte MSS), and saturating there would drop a whole interval's
    /// segments to zero. See [`u32_delta`].
    fn add_tcp_delta(s: &mut FlowStats, now: &Conn, last: &TcpLast) {
        s.bytes_tx += now.bytes_tx.saturating_sub(last.bytes_tx);
        s.bytes_rx += now.bytes_rx.saturating_sub(last.bytes_rx);
        s.packets_tx += u32_delta(now.segs_out, last.segs_out);
        s.packets_rx += u32_delta(now.segs_in, last.segs_in);
        s.retransmits += u32_delta(now.total_retrans, last.retrans);
        s.resets_tx += u32_delta(now.resets_tx, last.resets_tx);
        s.resets_rx += u32_delta(now.resets_rx, last.resets_rx);
    }

    /// One RTT sample of connection `c`, when the kernel has measured one.
    fn record_rtt(s: &mut FlowStats, bounds: &Arc<[f64]>, c: &Conn) {
        if c.srtt_us > 0 {
            s.record_rtt(
                bounds,
                f64::from(c.srtt_us) / 1e6,
                f64::from(c.rttvar_us) / 1e6,
            );
        }
    }

    /// A live connection from the `CONNS` map, read once per interval.
    pub fn on_conn(&mut self, sk: u64, c: &Conn) {
        // The answer an earlier interval found; only NAT resolution needs
        // this extra lookup, so without it there is none.
        let cached = match self.nat {
            Some(_) => self.tcp.get(&sk).and_then(|t| t.nat.as_deref().copied()),
            None => None,
        };
        let (key, resolved, pend) = self.tcp_key_resolved(sk, c, cached, None);
        let round = self.round;
        let tracked_len = self.tcp.len() + self.udp.len();
        let max = self.settings.max_tracked;
        let (last, count_open) = match self.tcp.entry(sk) {
            Entry::Occupied(mut e) => {
                let t = e.get_mut();
                let last = t.last;
                t.last = TcpLast::of(c);
                t.seen_round = round;
                // Set once: a cached answer is what `resolved` returns.
                if t.nat.is_none() {
                    t.nat = resolved.map(Box::new);
                }
                let open = !t.opened_counted && c.established == 1 && c.opened_ns != 0;
                if open {
                    t.opened_counted = true;
                }
                (last, open)
            }
            Entry::Vacant(v) => {
                if let Some(r) = self.refused.get_mut(&sk) {
                    *r = round;
                    return;
                }
                let refusal = if tracked_len >= max {
                    Some(LossReason::TableFull)
                } else if !self.memory.admit() {
                    Some(LossReason::MemoryLimit)
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    self.refused.insert(sk, round);
                    self.telemetry
                        .emit(EventsLost::new(Source::EbpfTcp, reason, 1));
                    return;
                }
                let open = c.established == 1 && c.opened_ns != 0;
                v.insert(TcpTrack {
                    last: TcpLast::of(c),
                    opened_counted: open,
                    seen_round: round,
                    nat: resolved.map(Box::new),
                });
                (TcpLast::default(), open)
            }
        };
        // One lookup of the flow's stats per connection and interval.
        let bounds = self.settings.rtt_bounds.clone();
        let s = self.target(key, pend);
        Self::add_tcp_delta(s, c, &last);
        if c.established == 1 {
            Self::record_rtt(s, &bounds, c);
            s.active += 1;
            if count_open {
                s.opened += 1;
            }
        }
    }

    /// A ring buffer event.
    pub fn on_event(&mut self, ev: &Event) {
        let c = &ev.conn;
        match ev.kind {
            event_kind::CLOSE => {
                if self.refused.remove(&ev.sk).is_some() {
                    return;
                }
                let (last, opened_counted, cached) = match self.tcp.remove(&ev.sk) {
                    Some(t) => (t.last, t.opened_counted, t.nat.map(|n| *n)),
                    // Opened and closed within the interval: new to the
                    // table, so the memory limiter has its say.
                    None if !self.memory.admit() => {
                        self.telemetry.emit(EventsLost::new(
                            Source::EbpfTcp,
                            LossReason::MemoryLimit,
                            1,
                        ));
                        return;
                    }
                    None => (TcpLast::default(), false, None),
                };
                let (key, _, pend) = self.tcp_key_resolved(ev.sk, c, cached, Some(ev.ts_ns));
                let rtt_bounds = self.settings.rtt_bounds.clone();
                let bounds = self.settings.duration_bounds.clone();
                if let Some(p) = pend {
                    self.closed_pending.insert(ev.sk, p);
                }
                let s = self.target(key.clone(), pend);
                Self::add_tcp_delta(s, c, &last);
                Self::record_rtt(s, &rtt_bounds, c);
                if c.established == 1 && c.opened_ns != 0 && !opened_counted {
                    s.opened += 1;
                }
                s.closed += 1;
                if c.opened_ns != 0 && ev.ts_ns >= c.opened_ns {
                    s.record_duration(&bounds, (ev.ts_ns - c.opened_ns) as f64 / 1e9);
                }
                self.remember_closed(ev.sk, key);
            }
            event_kind::FAILED => {
                let cached = self.tcp.remove(&ev.sk).and_then(|t| t.nat.map(|n| *n));
                let (key, _, pend) = self.tcp_key_resolved(ev.sk, c, cached, Some(ev.ts_ns));
                self.target(key, pend)
                    .add_failed(FailReason::from_errno(ev.errno), 1);
            }
            event_kind::PROCESS => {
                // Read /proc now, while the process runs.
                let _ = self.procs.get(c.tgid, &c.comm);
            }
            event_kind::LATE => {
                let key = match self.closed.get(&ev.sk) {
                    Some((k, ..)) => k.clone(),
                    None => self.tcp_key(c),
                };
                let pend = self
                    .closed_pending
                    .get(&ev.sk)
                    .copied()
                    .filter(|p| self.pending.contains_key(p));
                let s = self.target(key, pend);
                s.bytes_tx += c.bytes_tx;
                s.bytes_rx += c.bytes_rx;
                s.resets_tx += u64::from(c.resets_tx);
                s.resets_rx += u64::from(c.resets_rx);
            }
            _ => self
                .telemetry
                .emit(EventsLost::new(Source::EbpfTcp, LossReason::ParseError, 1)),
        }
    }

    /// Keeps a closed connection's key for its late events. At
    /// `max_tracked` entries the oldest goes first: its late bytes, if any
    /// come, are then reported under the key the late event itself gives
    /// (without the process, which the kernel no longer knows), so each
    /// entry that goes is counted in
    /// `flowscope.events.lost{source=ebpf.tcp, reason=table_full}`.
    fn remember_closed(&mut self, sk: u64, key: FlowKey) {
        let max = self.settings.max_tracked.max(1);
        let mut evicted = 0;
        while self.closed.len() >= max && !self.closed.contains_key(&sk) {
            let Some((old, serial)) = self.closed_order.pop_front() else {
                break;
            };
            if self.closed.get(&old).is_some_and(|c| c.2 == serial) {
                self.closed.remove(&old);
                self.closed_pending.remove(&old);
                evicted += 1;
            }
        }
        self.telemetry.emit(EventsLost::new(
            Source::EbpfTcp,
            LossReason::TableFull,
            evicted,
        ));
        self.closed_serial += 1;
        let serial = self.closed_serial;
        self.closed.insert(sk, (key, self.round, serial));
        self.closed_order.push_back((sk, serial));
    }

    /// A UDP flow from the `UDP_FLOWS` map, with its owner when known.
    /// Returns true when the flow has been idle long enough that the caller
    /// should delete it from the kernel map.
    pub fn on_udp(&mut self, key: &UdpKey, now: &UdpStats, owner: Option<&Owner>) -> bool {
        let round = self.round;
        let tracked_len = self.tcp.len() + self.udp.len();
        let last = match self.udp.get_mut(key) {
            Some(t) => {
                let last = t.last;
                t.last = *now;
                if last.packets_tx != now.packets_tx || last.packets_rx != now.packets_rx {
                    t.seen_round = round;
                }
                last
            }
            None => {
                if tracked_len >= self.settings.max_tracked {
                    self.telemetry
                        .emit(EventsLost::new(Source::EbpfUdp, LossReason::TableFull, 1));
                    return false;
                }
                if !self.memory.admit() {
                    // Deleted from the kernel map too: its memory is freed,
                    // and the flow is counted once, not again every
                    // interval it stays there.
                    self.telemetry.emit(EventsLost::new(
                        Source::EbpfUdp,
                        LossReason::MemoryLimit,
                        1,
                    ));
                    return true;
                }
                self.udp.insert(
                    *key,
                    UdpTrack {
                        last: *now,
                        seen_round: round,
                    },
                );
                UdpStats::default()
            }
        };
        let (pid, comm, netns) = owner.map_or((0, [0; 16], 0), |o| (o.tgid, o.comm, o.netns));
        let lip = ip_from(key.family, &now.laddr);
        let rip = ip_from(key.family, &key.raddr);
        let role = self.role_by_ports(now.lport, key.rport);
        let mut fk = self.key(
            Transport::Udp,
            role,
            netns,
            pid,
            comm,
            lip,
            now.lport,
            rip,
            key.rport,
        );
        let (local, peer) = (
            SocketAddr::new(lip, now.lport),
            SocketAddr::new(rip, key.rport),
        );
        let pend = match self.resolve(Transport::Udp, netns, local, peer) {
            Resolution::Nat { real, nat } => {
                Self::apply_nat(&mut fk, (real, nat));
                None
            }
            Resolution::NotNat => None,
            Resolution::Missing => Some(PendKey {
                transport: Transport::Udp,
                netns,
                local,
                peer,
                sk: None,
            }),
        };
        let s = self.target(fk, pend);
        let moved = now.packets_tx != last.packets_tx || now.packets_rx != last.packets_rx;
        s.bytes_tx += now.bytes_tx.saturating_sub(last.bytes_tx);
        s.bytes_rx += now.bytes_rx.saturating_sub(last.bytes_rx);
        s.packets_tx += now.packets_tx.saturating_sub(last.packets_tx);
        s.packets_rx += now.packets_rx.saturating_sub(last.packets_rx);
        if moved {
            s.active += 1;
        }
        // Idle for three rounds: all its counts are reported, forget it.
        let idle = self
            .udp
            .get(key)
            .is_some_and(|t| round.saturating_sub(t.seen_round) >= 3);
        if idle {
            self.udp.remove(key);
        }
        idle
    }

    fn resource(
        &mut self,
        key: &FlowKey,
        cache: &mut HashMap<(u32, [u8; 16]), Arc<Attrs>>,
    ) -> Arc<Attrs> {
        if let Some(r) = cache.get(&(key.pid, key.comm)) {
            return r.clone();
        }
        let mut attrs = self.settings.host.clone();
        if key.pid == 0 {
            let name = comm_str(&key.comm);
            attrs.set(
                resource::SERVICE_NAME,
                if name.is_empty() {
                    "unknown".to_string()
                } else {
                    name
                },
            );
        } else {
            let info = self.procs.get(key.pid, &key.comm);
            attrs.set(resource::SERVICE_NAME, info.service_name.clone());
            if let Some(ns) = &info.service_namespace {
                attrs.set(resource::SERVICE_NAMESPACE, ns.clone());
            }
            if let Some(v) = &info.service_version {
                attrs.set(resource::SERVICE_VERSION, v.clone());
            }
            if let Some(c) = &info.container_id {
                attrs.set(resource::CONTAINER_ID, c.clone());
            }
            if let Some(uid) = &info.pod_uid {
                attrs.set(resource::K8S_POD_UID, uid.clone());
            }
            if self.settings.granularity == Granularity::Process {
                attrs.set(resource::PROCESS_PID, key.pid);
                attrs.set(
                    resource::PROCESS_EXECUTABLE_NAME,
                    info.executable_name.clone(),
                );
                if let Some(cmd) = &info.command {
                    attrs.set(resource::PROCESS_COMMAND, cmd.clone());
                }
                if self.settings.include_command_line
                    && let Some(line) = &info.command_line
                {
                    attrs.set(resource::PROCESS_COMMAND_LINE, line.clone());
                }
            }
        }
        let r = Arc::new(attrs);
        cache.insert((key.pid, key.comm), r.clone());
        r
    }

    /// Gives the connections whose peer looked translated another chance
    /// to find their conntrack entry, then adds them to their flows:
    /// resolved, or as they were, counted in
    /// `flowscope.events.lost{reason=nat_unresolved}` (one per connection
    /// or UDP flow and interval). The conntrack service reads its events in
    /// short batches, so a connection closed just before the interval ended
    /// may be settled before its entry arrived: with `carry`, a slot still
    /// unresolved on its first settling waits for the next interval (its
    /// counts are then reported one interval late, under the real peer);
    /// the agent's last interval carries nothing.
    fn settle_pending(&mut self, carry: bool) {
        let carried = std::mem::take(&mut self.carried);
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let (mut tcp_lost, mut udp_lost) = (0, 0);
        for (p, (mut key, stats)) in pending {
            let res = self.resolve(p.transport, p.netns, p.local, p.peer);
            if carry && !matches!(res, Resolution::Nat { .. }) && !carried.contains(&p) {
                self.carried.insert(p);
                self.pending.insert(p, (key, stats));
                continue;
            }
            match res {
                Resolution::Nat { real, nat } => {
                    Self::apply_nat(&mut key, (real, nat));
                    if let Some(sk) = p.sk {
                        if let Some(t) = self.tcp.get_mut(&sk) {
                            t.nat = Some(Box::new((real, nat)));
                        }
                        if let Some((k, ..)) = self.closed.get_mut(&sk) {
                            *k = key.clone();
                        }
                    }
                }
                _ => match p.transport {
                    Transport::Tcp => tcp_lost += 1,
                    Transport::Udp => udp_lost += 1,
                },
            }
            self.acc.entry(key).or_default().merge(&stats);
        }
        let pending = &self.pending;
        self.closed_pending.retain(|_, p| pending.contains_key(p));
        self.telemetry.emit(EventsLost::new(
            Source::EbpfTcp,
            LossReason::NatUnresolved,
            tcp_lost,
        ));
        self.telemetry.emit(EventsLost::new(
            Source::EbpfUdp,
            LossReason::NatUnresolved,
            udp_lost,
        ));
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
            let res = self.resource(&key, &mut resources);
            let mut attrs = Attrs::new()
                .with(attr::NETWORK_TRANSPORT, key.transport.as_str())
                .with(
                    attr::NETWORK_TYPE,
                    if key.peer.ip.is_ipv4() {
                        "ipv4"
                    } else {
                        "ipv6"
                    },
                )
                .with(attr::FLOW_ROLE, key.role.as_str())
                .with(attr::PEER_ADDRESS, key.peer.ip.to_string());
            match key.role {
                Role::Client => attrs.set(attr::PEER_PORT, key.peer.port),
                Role::Server => attrs.set(attr::LOCAL_PORT, key.local.port),
            }
            // The local address names this workload's end for a fleet view
            // that sees the other end reported by another node. A socket
            // bound to the wildcard whose source was not found has none.
            if !key.local.ip.is_unspecified() {
                attrs.set(attr::LOCAL_ADDRESS, key.local.ip.to_string());
            }
            // The `peer` processor names the peer from the address the
            // client used: this one when NAT rewrote it.
            if let Some(nat) = key.nat {
                attrs.set(nat_names::PEER_NAT_ADDRESS, nat.ip.to_string());
                if key.role == Role::Client {
                    attrs.set(nat_names::PEER_NAT_PORT, nat.port);
                }
            }
            flows.push(Flow {
                resource: res,
                attrs,
                transport: key.transport,
                role: key.role,
                local: key.local.socket(),
                peer: key.peer.socket(),
                netns: key.netns,
                pid: key.pid,
                stats,
            });
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
        // A socket not seen in CONNS for three rounds and never closed was
        // freed without a CLOSE we saw (map entry lost): forget it.
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
    use super::*;
    use flowscope_common::{AF_INET6, role};
    use flowscope_model::names::nat;

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
        assert_eq!(lost(), 5);
        let mut kept: Vec<u64> = col.closed.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![6, 7, 8], "the oldest went first");
        // A socket address reused by a later close replaces its entry: no
        // eviction, and the older slot in the order is skipped.
        close(&mut col, 7, 41007);
        assert_eq!((lost(), col.closed.len()), (5, 3));
        close(&mut col, 9, 40009);
        let mut kept: Vec<u64> = col.closed.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!((lost(), kept), (6, vec![7, 8, 9]));
        // Age still applies: kept through the next interval, gone after.
        col.finish(0, 1);
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
