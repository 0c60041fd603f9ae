//! The open-socket walk as the collector sees it: once an interval, every
//! open TCP socket of every namespace becomes the running totals of one
//! connection ([`open_conn`]), given to [`Collector::on_conn`], which counts
//! what moved since the last walk; the connection's CLOSE (from the record
//! join, [`crate::tcp_join`]) gives the rest.
//!
//! ## Which sockets
//!
//! What the iterator program writes (`receiver-ebpf/src/bin/open_tcp.rs`):
//! full TCP sockets in every state but LISTEN and CLOSE. The TCP hash
//! tables also hold the two kinds of mini-socket, and
//! `bpf_skc_to_tcp_sock()` (`sk_fullsock()`) turns both away, so no record
//! is written for them:
//!
//! - a TIME_WAIT socket (`struct inet_timewait_sock`): `tcp_time_wait()`
//!   hashes it in place of the full socket, which then moves to CLOSE and
//!   is freed. Its connection is over: its CLOSE record gave the totals.
//! - a request socket (NEW_SYN_RECV, `struct request_sock`): a SYN was
//!   answered and the handshake's last ACK has not come. It has moved no
//!   data (a Fast Open server's child is a full socket in SYN_RECV,
//!   written). When the ACK comes, `tcp_v4_syn_recv_sock()` hashes the new
//!   full socket in place of the request, and processing the same ACK
//!   moves it to ESTABLISHED, all before any `accept()`: a connection
//!   waiting in the accept queue is walked.
//!
//! Listeners were never reported as connections (main's `CONNS` never held
//! one), nor are they here. A client still in SYN_SENT is reported with
//! `established` 0, as main's `CONNS` entry was from `connect()` on: it
//! counts its SYN as a segment sent and is not active yet.
//!
//! ## Bytes
//!
//! Through [`TcpBytes::derive`](super::TcpBytes::derive), the derivation
//! the CLOSE record's figures come from, and the client's SYN comes off
//! exactly when the join takes it off at CLOSE: for a socket whose
//! CONNECT it saw ([`Owner::connected`]). So a connection's
//! walks and its CLOSE give one cumulative series, and the deltas the
//! collector counts add up to the CLOSE figure. A socket the records
//! never named keeps its SYN in both.
//!
//! ## Sockets the records do not name
//!
//! [`TcpJoin::owner`] gives no owner for a connection older than the
//! agent whose process was not found at start-up ([`super::seed`]), for a
//! socket a listener accepted when neither a LISTEN record nor start-up
//! named that listener, and for a client whose CONNECT is still in the
//! ring: `connect()` writes its
//! CONNECT before `inet_hash_connect()` hashes the socket, but the ring is
//! drained before the walk, so a connection made in between is walked
//! before the join has its CONNECT. Reported then, it would carry its SYN
//! and no process, and its CLOSE would not: so a socket without an owner
//! is reported only from the second walk that finds it without one (the
//! drain in between has fed its CONNECT to the join if there was one).
//! Leaving a socket out of a walk loses nothing: the next walk, or its
//! CLOSE, counts everything since the last walk that did report it. And
//! the collection loop drains the ring once more right after the walk:
//! [`OpenWalk::claim`] then reports, in the same interval, the sockets
//! left out whose CONNECT or ACCEPT that drain brought (a connection made
//! while the walk ran), so that the interval's kernel drops, matched to
//! the interval's flows, find them.
//!
//! ## Connections older than the agent
//!
//! A walk sees a socket's whole history, where main counted a connection
//! from the first send or receive after the agent started. So
//! [`OpenWalk::baseline`] walks once right after the programs attach and
//! gives every open socket to [`Collector::on_conn_baseline`]: its
//! counters so far are the starting point, not counted. That is also what
//! keeps a connection living across an agent restart from being counted
//! twice (`crate::resume`): the new agent starts from its counters at the
//! baseline. A namespace whose baseline read failed gets its baseline at
//! its first read that succeeds. Connections opened between the attach and
//! the baseline walk (its few milliseconds) are counted from the baseline,
//! as main counted a connection only from the first send or receive it saw.
//!
//! The baseline walk keeps its sockets, listeners included;
//! [`OpenWalk::seed`], on the collection thread, finds in `/proc` who holds
//! each ([`super::seed`]) and gives that to the join before it takes its
//! first record, so that connections older than the agent, and those
//! accepted later on listeners older than it, are named.

use flowscope_common::{AF_INET, AF_INET6, Conn, role};
use flowscope_model::Telemetry;
use flowscope_model::errors::error_chain;
use flowscope_model::internal_events::{EventsLost, Source};
use hashbrown::HashSet;

use super::seed::{Seeded, Seeds};
use super::{OpenSocket, OpenTcpError, OpenTcpReader, OpenTcpSnapshot, TcpState};
use crate::collector::Collector;
use crate::tcp_join::{ListenKey, Owner, TcpJoin};

/// The address a listener that accepted `s` would have: the socket's
/// namespace and local address, IPv4 in an IPv6 socket taken as IPv4 (as
/// the join keys its listeners).
pub fn listen_key(s: &OpenSocket) -> ListenKey {
    ListenKey {
        netns: s.netns,
        ip: s.local.ip().to_canonical(),
        port: s.local.port(),
    }
}

/// The running totals of open socket `s` as one connection, with the
/// owner the records give ([`TcpJoin::owner`]); `None`: no role
/// (`role::UNKNOWN`, the collector's port rule decides), no process, no
/// open time. See the module's documentation for the bytes.
pub fn open_conn(s: &OpenSocket, owner: Option<Owner>) -> Conn {
    let connected = owner.is_some_and(|o| o.connected);
    let (family, laddr, raddr) = match (s.local.ip(), s.peer.ip()) {
        (std::net::IpAddr::V4(l), std::net::IpAddr::V4(p)) => {
            let (mut laddr, mut raddr) = ([0; 16], [0; 16]);
            laddr[..4].copy_from_slice(&l.octets());
            raddr[..4].copy_from_slice(&p.octets());
            (AF_INET, laddr, raddr)
        }
        (l, p) => (AF_INET6, v6_octets(l), v6_octets(p)),
    };
    Conn {
        opened_ns: owner.map_or(0, |o| o.opened_ns),
        bytes_tx: s.bytes.data_sent(connected),
        bytes_rx: s.bytes.received,
        segs_out: s.segs_out,
        segs_in: s.segs_in,
        total_retrans: s.total_retrans,
        srtt_us: s.srtt_us,
        rttvar_us: s.rttvar_us,
        tgid: owner.map_or(0, |o| o.tgid),
        netns: s.netns,
        family,
        lport: s.local.port(),
        rport: s.peer.port(),
        role: owner.map_or(role::UNKNOWN, |o| o.role),
        established: u8::from(!matches!(s.state, TcpState::SynSent | TcpState::SynRecv)),
        laddr,
        raddr,
        comm: owner.map_or([0; 16], |o| o.comm),
        ..Conn::default()
    }
}

/// An address of an IPv6 socket ([`OpenSocket::new`] decodes the two
/// families' addresses as they are, so both of a socket's are the same
/// family).
fn v6_octets(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V6(v6) => v6.octets(),
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// What one walk did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    /// Sockets given to the collector (counted, or taken as a baseline).
    pub reported: usize,
    /// Sockets without an owner seen for the first time, left to the next
    /// walk (see the module's documentation).
    pub deferred: usize,
    /// Namespaces that could not be read (each counted as lost).
    pub failed: usize,
}

/// The open-socket reader and what the walk remembers between intervals.
#[derive(Debug)]
pub struct OpenWalk {
    reader: OpenTcpReader,
    state: WalkState,
    /// The baseline's sockets, until [`OpenWalk::seed`] looks up who holds
    /// them.
    baseline: Option<OpenTcpSnapshot>,
}

impl OpenWalk {
    pub fn new(reader: OpenTcpReader) -> Self {
        OpenWalk {
            reader,
            state: WalkState::default(),
            baseline: None,
        }
    }

    /// The first walk, right after the programs attach: every open socket's
    /// counters become its baseline ([`Collector::on_conn_baseline`]); the
    /// sockets and listeners are kept for [`OpenWalk::seed`].
    pub fn baseline(&mut self, collector: &mut Collector, telemetry: &Telemetry) -> Walked {
        let snap = self.reader.read_all();
        let walked = self.state.baseline(&snap, collector, telemetry);
        self.baseline = Some(snap);
        walked
    }

    /// Looks up in `/proc` which processes hold the baseline's sockets and
    /// listeners, and gives those owners to `join` (once; later calls give
    /// nothing). Call it on the collection thread (one pass over every
    /// process's descriptors: blocking work, kept off the runtime that
    /// builds the receiver), before the join takes its first record.
    pub fn seed(&mut self, join: &mut TcpJoin) -> Seeded {
        self.baseline
            .take()
            .map(|snap| Seeds::find(&snap, std::path::Path::new("/proc")).seed(join))
            .unwrap_or_default()
    }

    /// An interval's walk: every open socket with an owner, or without one
    /// for the second walk in a row, goes to [`Collector::on_conn`].
    /// Call it where the interval's records have just been drained into
    /// `join`. A namespace that cannot be read is logged and counted in
    /// `flowscope.events.lost{source=ebpf.tcp}` (one per namespace and
    /// walk; its connections' figures come with the next read or their
    /// CLOSE).
    pub fn walk(
        &mut self,
        join: &TcpJoin,
        collector: &mut Collector,
        telemetry: &Telemetry,
    ) -> Walked {
        let snap = self.reader.read_all();
        self.state.walk(&snap, join, collector, telemetry)
    }

    /// Call it right after draining the ring again after [`OpenWalk::walk`]:
    /// the sockets that walk left out because their CONNECT or ACCEPT was
    /// still in the ring (made while the walk ran) are reported in this
    /// interval after all. Returns how many.
    pub fn claim(&mut self, join: &TcpJoin, collector: &mut Collector) -> usize {
        self.state.claim(join, collector)
    }
}

/// What [`OpenWalk`] remembers, apart from the reader (so that the rules
/// are tested on snapshots made up in tests).
#[derive(Debug, Default)]
struct WalkState {
    /// Sockets the last walk found without an owner.
    unnamed: HashSet<u64>,
    /// The sockets the last walk left out (first seen without an owner),
    /// as it read them: [`WalkState::claim`] reports those whose CONNECT
    /// the drain after the walk brought.
    deferred: Vec<OpenSocket>,
    /// Namespaces whose baseline read failed: their sockets get their
    /// baseline at the first read that succeeds.
    unread: HashSet<u32>,
}

impl WalkState {
    fn baseline(
        &mut self,
        snap: &OpenTcpSnapshot,
        collector: &mut Collector,
        telemetry: &Telemetry,
    ) -> Walked {
        self.unread = snap.failed.iter().filter_map(OpenTcpError::netns).collect();
        let failed = count_failures(&snap.failed, telemetry);
        self.unnamed.clear();
        for s in &snap.sockets {
            collector.on_conn_baseline(s.sk, &open_conn(s, None));
            self.unnamed.insert(s.sk);
        }
        Walked {
            reported: snap.sockets.len(),
            deferred: 0,
            failed,
        }
    }

    fn walk(
        &mut self,
        snap: &OpenTcpSnapshot,
        join: &TcpJoin,
        collector: &mut Collector,
        telemetry: &Telemetry,
    ) -> Walked {
        let mut walked = Walked {
            failed: count_failures(&snap.failed, telemetry),
            ..Walked::default()
        };
        let mut unnamed = HashSet::with_capacity(self.unnamed.len());
        self.deferred.clear();
        for s in &snap.sockets {
            let owner = join.owner(s.sk, listen_key(s));
            let c = open_conn(s, owner);
            if owner.is_some() || self.unnamed.contains(&s.sk) {
                collector.on_conn(s.sk, &c);
            } else if self.unread.contains(&s.netns) {
                collector.on_conn_baseline(s.sk, &c);
            } else {
                walked.deferred += 1;
                unnamed.insert(s.sk);
                self.deferred.push(*s);
                continue;
            }
            walked.reported += 1;
            if owner.is_none() {
                unnamed.insert(s.sk);
            }
        }
        for netns in &snap.namespaces {
            self.unread.remove(netns);
        }
        self.unnamed = unnamed;
        walked
    }

    /// After the drain that follows a walk: the sockets that walk left out
    /// for want of an owner and that the join now names as a connecting
    /// client (their CONNECT was still in the ring) or an accepted socket
    /// go to the collector with the walk's figures; returns how many.
    ///
    /// Safe against a close in that drain: the join forgets a CONNECT or
    /// ACCEPT at the socket's CLOSE or FAILED, so a socket that ended is
    /// not named here, and its close event, already counted, carries all
    /// of it. Without this the socket would first count at the next walk,
    /// and an interval's kernel drops (matched to the interval's flows)
    /// would miss it.
    fn claim(&mut self, join: &TcpJoin, collector: &mut Collector) -> usize {
        let mut claimed = 0;
        for s in std::mem::take(&mut self.deferred) {
            let Some(owner) = join.owner(s.sk, listen_key(&s)) else {
                continue;
            };
            // Only a CONNECT or ACCEPT the join still holds proves the
            // socket has not ended since the walk read it: a listener's
            // name outlives the connections it accepted.
            let open = owner.connected || (owner.role == role::SERVER && owner.opened_ns != 0);
            if !open {
                continue;
            }
            collector.on_conn(s.sk, &open_conn(&s, Some(owner)));
            self.unnamed.remove(&s.sk);
            claimed += 1;
        }
        claimed
    }
}

/// Logs and counts the namespaces a read could not read; returns how many.
fn count_failures(failed: &[OpenTcpError], telemetry: &Telemetry) -> usize {
    for e in failed {
        tracing::warn!(
            "the open TCP connections of a network namespace were not read this interval (their figures come with the next read or their close): {}",
            error_chain(e)
        );
        telemetry.emit(EventsLost::new(Source::EbpfTcp, e.loss_reason(), 1));
    }
    failed.len()
}

#[cfg(test)]
mod tests;
