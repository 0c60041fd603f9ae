//! TCP connections: a live socket's running totals come once per interval
//! (the `iter/tcp` walk, [`crate::open_tcp::walk`]), a closed one's final
//! totals with its close event (the TCP record join, [`crate::tcp_join`]);
//! the table remembers the totals it last reported for each socket, so
//! every interval's delta is `now - last`, and a connection's final delta
//! comes with its close event. Closed connections' keys are kept two
//! intervals for the bytes and resets the kernel reports late.

use hashbrown::hash_map::Entry;
use std::sync::Arc;

use flowscope_common::{Conn, Event, event_kind};
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::{FailReason, FlowStats};

use super::Collector;
use super::key::{FlowKey, NatPeer};

#[derive(Clone, Copy, Default)]
pub(super) struct TcpLast {
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

pub(super) struct TcpTrack {
    pub(super) last: TcpLast,
    pub(super) opened_counted: bool,
    pub(super) seen_round: u64,
    /// The resolved peer, once known: conntrack may forget the entry of a
    /// long-lived connection before the connection ends. Boxed: most
    /// connections are not translated, and this keeps their entry at 56
    /// bytes instead of 120.
    pub(super) nat: Option<Box<NatPeer>>,
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
pub(super) fn u32_delta(now: u32, last: u32) -> u64 {
    let d = now.wrapping_sub(last);
    if d > i32::MAX as u32 { 0 } else { u64::from(d) }
}

impl Collector {
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

    /// A live connection, read once per interval: its counters since the
    /// last read (or since its open) are counted.
    pub fn on_conn(&mut self, sk: u64, c: &Conn) {
        self.conn_seen(sk, c, true);
    }

    /// A live connection that opened before the agent started: its counters
    /// so far become the last ones seen, and nothing is counted (not its
    /// bytes, segments or retransmits, and never an open), so that its
    /// later reads and its close count only what it did after this.
    ///
    /// A read of the kernel's socket tables ([`crate::open_tcp`]) sees a
    /// socket's whole history, where main's per-socket map began counting
    /// at the first send or receive it saw; the agent takes this baseline
    /// of every open socket right after its programs attach.
    pub fn on_conn_baseline(&mut self, sk: u64, c: &Conn) {
        self.conn_seen(sk, c, false);
    }

    fn conn_seen(&mut self, sk: u64, c: &Conn, count: bool) {
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
                    opened_counted: open || !count,
                    seen_round: round,
                    nat: resolved.map(Box::new),
                });
                (TcpLast::default(), open)
            }
        };
        if !count {
            return;
        }
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
    /// `flowscope.events.lost{source=ebpf.tcp, reason=table_full}`, at the
    /// interval's end.
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
        self.closed_evicted += evicted;
        self.closed_serial += 1;
        let serial = self.closed_serial;
        self.closed.insert(sk, (key, self.round, serial));
        self.closed_order.push_back((sk, serial));
    }
}
