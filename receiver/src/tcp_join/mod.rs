//! The TCP record join (issue 24): turns the ring records of the
//! map-free TCP programs (variant G of branch `tcp-counters-proto2`) into
//! the connection ends main's kernel side reports, so that
//! [`crate::collector::Collector::on_event`] can take them unchanged.
//!
//! Sans-IO: no ring buffer, no clock, no `/proc`. The caller feeds decoded
//! records in ring order ([`TcpJoin::feed`]) and the current tick
//! ([`TcpJoin::expire`]); each record gives at most one [`Event`] back.
//!
//! # What the kernel sends, and why the join is by socket address
//!
//! Nothing is kept per connection in the kernel. `inet_sock_set_state`
//! writes a `CONNECT` record (socket address, tgid, tick) when connect()
//! moves a socket to SYN_SENT, and a `CLOSE` record (tuple, netns, TCP's
//! own counters, tick) when any socket but a listener moves to CLOSE. A
//! socket is freed only after its CLOSE record was reserved, and records
//! are read in the order they were reserved, so the first record naming a
//! socket address after a CONNECT is that socket's CLOSE (or its `FAILED`,
//! or a `RESET` before either). The address is then free for a new socket:
//! the join forgets the CONNECT at its CLOSE, and a later CONNECT of the
//! same address is a new connection.
//!
//! An accepted socket has an `ACCEPT` record instead (socket address,
//! tick; no process: the handshake ends in softirq), written when it moves
//! from SYN_RECV to ESTABLISHED; it gives the server's open time, and it
//! too is forgotten at the socket's CLOSE or when its address is reused.
//! A CLOSE without a CONNECT is an accepted socket (or one older than the
//! agent, named from `/proc` at start-up: [`TcpJoin::seed_owner`]). Its
//! process is the one that listened on its local address and port: see
//! [`ListenKey`].
//!
//! # Bytes
//!
//! The CLOSE record's bytes are the kernel's derivation from `struct
//! tcp_sock` (docs/benchmarks.md, "TCP's own counters at CLOSE"):
//!
//! - sent = `bytes_acked + (write_seq - snd_una)`, less 1 if a FIN was
//!   queued (the state left for CLOSE says so). For a client this still
//!   holds its SYN: `tcp_connect_init()` sets `snd_una` to the ISN and the
//!   SYN-ACK advances it over the SYN. The kernel cannot tell a client
//!   from an accepted socket at CLOSE without per-connection state, so the
//!   join takes the 1 off for every socket it saw CONNECT;
//! - received = `bytes_received - (rcv_nxt - copied_seq)`, less 1 if the
//!   application read the FIN. Already exact in the record.
//!
//! A socket can reach CLOSE with data still to read (FIN_WAIT2 gets the
//! peer's FIN, LAST_ACK gets its FIN acknowledged, read or not); the
//! receive program reports those reads as `LATE` records, which the join
//! adds to the connection that closed at that address. A read under way
//! when the socket moved to CLOSE (a reset processed from the socket's
//! backlog as the read releases its lock) was counted by the CLOSE record
//! up to its `copied_seq`; each LATE record carries its own, and only what
//! lies past the CLOSE's is added (`past_close`).
//!
//! # Resets
//!
//! `RESET` records come before the CLOSE of a socket that receives one
//! (`tcp_reset()` traces before `tcp_done()`), and after the CLOSE of a
//! socket that sends one on an abortive close (`tcp_disconnect()` and
//! `__tcp_close()` move to CLOSE, then send the reset). The join counts the
//! first kind into the connection at its close, and reports the second as
//! a LATE [`Event`] of the connection just closed, as main's kernel side
//! does.
//!
//! # Time
//!
//! The records carry `jiffies` (HZ per second), not ns; [`TickClock`]
//! turns them into the clock of main's events.
//!
//! # What the records do not give (yet)
//!
//! - Open connections' interval figures: nothing reaches user space before
//!   the CLOSE. The walk of open sockets (`crate::open_tcp`, `iter/tcp`)
//!   gives them, with [`TcpJoin::owner`] naming each socket.
//! - Connections and listeners older than the agent: no CONNECT, ACCEPT or
//!   LISTEN. At start-up the agent learns their owners from `/proc`
//!   instead (`crate::open_tcp::seed`) and tells the join:
//!   [`TcpJoin::seed_listener`] for a listener, which then names what it
//!   accepts as a LISTEN record would have, and [`TcpJoin::seed_owner`] for
//!   an open connection, which its walks and its CLOSE are named by (no
//!   open time; a client keeps its SYN in the sent bytes, as the baseline
//!   of its counters did). A socket whose process was not found (gone, or
//!   not readable) is left as before: unless a known listener names it,
//!   its role is left to the collector's port rule
//!   ([`DropReason::CloseUnattributed`]).
//! - A lost CLOSE (the ring full) leaves its CONNECT or ACCEPT waiting.
//!   The next socket at that address shows the loss with its own CONNECT,
//!   ACCEPT or LISTEN ([`DropReason::ConnectOrphaned`]). Only if that
//!   record was lost as well is the next CLOSE taken for the lost
//!   socket's (for a lost client: a SYN taken off, the client's process);
//!   the kernel's `RINGBUF_FULL` counter says when this can have happened.
//! - A lost LISTEN_CLOSE leaves the listener's entry until another
//!   listener takes its address, a record reuses its socket address, or the
//!   table's limit forgets it (see [`ListenKey`]).
//! - An accepted socket's process when its listener is unknown (its
//!   LISTEN lost, or a listener older than the agent whose process was not
//!   found at start-up): the CLOSE goes out as a server's, with its open
//!   time, without a process ([`DropReason::CloseUnattributed`]).
//! - A process renamed by exec keeps the name of its PROCESS record, which
//!   the kernel sends once per tgid.

mod decode;
mod table;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowscope_common::{AF_INET, AF_INET6, CloseRec, Conn, ConnectRec, Event, event_kind, role};
use flowscope_model::internal_events::LossReason;
use thiserror::Error;

use crate::collector::ip_from;
use table::Fifo;

pub use decode::{DecodeError, decode, decode_close, decode_connect, decode_event};

/// One ring-buffer record of G's programs, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// `event_kind::CONNECT_MIN`.
    Connect(ConnectRec),
    /// `event_kind::ACCEPT`: the [`ConnectRec`] layout, tgid 0.
    Accept(ConnectRec),
    /// `event_kind::CLOSE_MIN`.
    Close(CloseRec),
    /// The rare records, still whole [`Event`]s: `LISTEN`,
    /// `LISTEN_CLOSE`, `FAILED`, `LATE`, `RESET` and `PROCESS`. Their `ts_ns` holds a tick, but for
    /// PROCESS, which has no time (0).
    Event(Event),
}

/// Why [`TcpJoin`] could not take a record, or could not be built.
///
/// `index` is where the record was in the stream fed to the join: the first
/// record fed is 0, and a record that failed counts too.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum JoinError {
    /// A record whose kind the join does not know (an [`Event`] of a kind
    /// G's programs do not send as an `Event`).
    #[error("record {index}: unknown kind {kind} (socket {sk:#x})")]
    UnknownKind { index: u64, kind: u32, sk: u64 },
    /// A record whose address family is neither IPv4 nor IPv6: its
    /// addresses cannot be read. For a CLOSE or FAILED, the socket's
    /// CONNECT is forgotten all the same (the socket ended).
    #[error("record {index}: {record} of socket {sk:#x} has unknown address family {family}")]
    UnknownFamily {
        index: u64,
        record: &'static str,
        sk: u64,
        family: u16,
    },
    /// [`TcpJoin::feed_bytes`]: the ring's bytes were not a record.
    #[error("record {index}: cannot decode")]
    Decode {
        index: u64,
        #[source]
        source: DecodeError,
    },
    /// A table limit of 0.
    #[error("the {table} table needs a limit of at least 1")]
    ZeroLimit { table: &'static str },
    /// A tick rate outside 1..=10,000 per second (the kernel's HZ is 100 to
    /// 1,000).
    #[error("tick rate {hz}/s is not a kernel HZ (1..=10000)")]
    BadHz { hz: u32 },
}

/// Why part of what the kernel sent did not reach the join's output as the
/// kernel meant it. Each is counted ([`TcpJoin::drops`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The CONNECT table was full and its oldest entry was forgotten: that
    /// socket's CLOSE will count as [`DropReason::CloseUnattributed`].
    ConnectEvicted,
    /// A CONNECT, ACCEPT or LISTEN named the address of a socket whose
    /// CONNECT or ACCEPT was still waiting: the older socket was freed, so
    /// its CLOSE or FAILED record was lost (the ring was full).
    ConnectOrphaned,
    /// The ACCEPT table was full and its oldest entry was forgotten: that
    /// socket's CLOSE goes out without its open time.
    AcceptEvicted,
    /// The LISTEN table was full and its oldest entry was forgotten.
    ListenEvicted,
    /// A LISTEN record with local port 0: a listen() without bind() picks
    /// its port after the traced change, so it cannot name connections.
    ListenWithoutPort,
    /// The process-name table was full and its oldest entry forgotten.
    NameEvicted,
    /// A connection's process had no name (its PROCESS record lost or
    /// forgotten): it goes out with an empty name.
    NameUnknown,
    /// The table of recent closes was full, and the oldest was forgotten
    /// before its late bytes or resets could come.
    RecentEvicted,
    /// A CLOSE with no CONNECT and no listener for its local address: no
    /// process (a connection older than the agent whose process was not
    /// found at start-up, or a lost CONNECT or LISTEN). With its ACCEPT seen it is a server's; without, the role is
    /// left to the collector's port rule.
    CloseUnattributed,
    /// A FAILED with no CONNECT: no process.
    FailedUnattributed,
    /// A LATE record of no connection the join remembers: it goes out with
    /// its own tuple and no process.
    LateUnmatched,
    /// RESET records of a socket that never closed while the join waited
    /// (expired, forgotten at the limit, or its address reused). Besides
    /// lost CLOSE records, these are resets sent for a TIME_WAIT socket,
    /// which the record does not tell apart (main ignores those: their state
    /// is not CLOSE); the record would need the socket's state.
    ResetUnmatched,
    /// A RESET naming a listening socket (a reset answering a segment the
    /// listener could not take): main does not count those either.
    ResetOnListener,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        DropReason::ConnectEvicted,
        DropReason::ConnectOrphaned,
        DropReason::AcceptEvicted,
        DropReason::ListenEvicted,
        DropReason::ListenWithoutPort,
        DropReason::NameEvicted,
        DropReason::NameUnknown,
        DropReason::RecentEvicted,
        DropReason::CloseUnattributed,
        DropReason::FailedUnattributed,
        DropReason::LateUnmatched,
        DropReason::ResetUnmatched,
        DropReason::ResetOnListener,
    ];

    /// The `flowscope.events.lost` reason the agent would report it under;
    /// `None` for what main does not count as lost either.
    pub fn loss_reason(self) -> Option<LossReason> {
        Some(match self {
            // A forgotten entry loses something only if a record needs it
            // later, and that record counts the loss where it shows (a
            // CLOSE without its process, a LATE without its connection):
            // counting the eviction too would count one loss twice.
            DropReason::ConnectEvicted
            | DropReason::ListenEvicted
            | DropReason::NameEvicted
            | DropReason::RecentEvicted => return None,
            // A server's open and duration: nothing later says they are
            // missing.
            DropReason::AcceptEvicted => LossReason::TableFull,
            // Reported, but without the process (the record that would
            // name it was forgotten, lost, or came before the agent).
            DropReason::NameUnknown
            | DropReason::CloseUnattributed
            | DropReason::FailedUnattributed
            | DropReason::LateUnmatched => LossReason::OwnerUnknown,
            // Not reported: the record that would have matched was lost
            // (the ring was full).
            DropReason::ConnectOrphaned | DropReason::ResetUnmatched => LossReason::RingbufFull,
            // The kernel side read the port before listen() had one.
            DropReason::ListenWithoutPort => LossReason::ReadError,
            DropReason::ResetOnListener => return None,
        })
    }
}

/// How many of each [`DropReason`] the join counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops([u64; DropReason::ALL.len()]);

impl Drops {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Every reason with a count above 0.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }

    fn add(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }
}

/// Turns kernel ticks (`bpf_jiffies64()`) into ns of another clock.
///
/// The caller measures one anchor, a tick and a time read at the same
/// moment, and the rate. To feed [`crate::collector::Collector`], whose
/// events carry `bpf_ktime_get_ns()`, the clock is CLOCK_MONOTONIC; an
/// anchor read against CLOCK_REALTIME gives wall-clock ns instead.
///
/// The agent measures them once at start-up (`crate::clock`): HZ from the
/// coarse clock's resolution, and the anchor from an eBPF program that
/// reads `bpf_jiffies64()` and `bpf_ktime_get_ns()` back to back.
/// jiffies follow the monotonic clock (the tick
/// updates them from it), so the anchor does not drift, and a tick is read
/// up to one tick late: durations are exact to 1/HZ (4 ms at HZ 250).
/// jiffies do not start at 0 (`INITIAL_JIFFIES` is 5 minutes before the
/// 32-bit wrap), which the anchor absorbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickClock {
    hz: u32,
    anchor_tick: u64,
    anchor_ns: u64,
}

impl TickClock {
    /// `hz` ticks a second; `anchor_tick` was read at `anchor_ns`.
    pub fn new(hz: u32, anchor_tick: u64, anchor_ns: u64) -> Result<Self, JoinError> {
        if !(1..=10_000).contains(&hz) {
            return Err(JoinError::BadHz { hz });
        }
        Ok(Self {
            hz,
            anchor_tick,
            anchor_ns,
        })
    }

    /// Ticks a second.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// The time of `tick` in the anchor's clock, ns (clamped at 0 and
    /// `u64::MAX`).
    pub fn ns(&self, tick: u64) -> u64 {
        let dt = i128::from(tick) - i128::from(self.anchor_tick);
        let ns = i128::from(self.anchor_ns) + dt * 1_000_000_000 / i128::from(self.hz);
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The tick at `ns` of the anchor's clock (the last whole tick): what
    /// the agent passes to [`TcpJoin::expire`] from its own clock.
    pub fn tick(&self, ns: u64) -> u64 {
        let dns = i128::from(ns) - i128::from(self.anchor_ns);
        let ticks = (dns * i128::from(self.hz)).div_euclid(1_000_000_000);
        (i128::from(self.anchor_tick) + ticks).clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// The size of each table of the join, and how long a closed connection
/// waits for its late bytes and resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    connects: usize,
    listens: usize,
    names: usize,
    recent: usize,
    late_window_ticks: u64,
}

impl Limits {
    /// - `connects`: CONNECTs waiting for their CLOSE (one per open client
    ///   connection: as large as the collector's `max_tracked`), and as many
    ///   ACCEPTs (one per open accepted connection);
    /// - `listens`: listening sockets;
    /// - `names`: process names by tgid; at least the kernel's `SEEN_PIDS`
    ///   (16,384), which decides when a process is announced again;
    /// - `recent`: closed connections waiting for late bytes or resets, and
    ///   sockets with resets waiting for their CLOSE, each;
    /// - `late_window_ticks`: how long a closed connection waits (main keeps
    ///   its closed connections two intervals).
    pub fn new(
        connects: usize,
        listens: usize,
        names: usize,
        recent: usize,
        late_window_ticks: u64,
    ) -> Result<Self, JoinError> {
        for (table, n) in [
            ("CONNECT", connects),
            ("LISTEN", listens),
            ("process name", names),
            ("recent close", recent),
        ] {
            if n == 0 {
                return Err(JoinError::ZeroLimit { table });
            }
        }
        Ok(Self {
            connects,
            listens,
            names,
            recent,
            late_window_ticks,
        })
    }
}

/// A listening socket's local address, which names the server of every
/// connection accepted on it.
///
/// A LISTEN record gives it (the address and port bind() set) with the
/// netns; for a listener older than the agent, the walk of open sockets at
/// start-up does ([`TcpJoin::seed_listener`]). An accepted socket has
/// the listener's port and one of the host's addresses: an exact listener
/// wins, then one on the family's wildcard (0.0.0.0 or ::), then, for
/// IPv4, one on `::` (a dual-stack listener accepts IPv4 as v4-mapped
/// addresses, which [`ip_from`] turns into IPv4; the record does not say
/// whether `IPV6_V6ONLY` is set).
///
/// **When the entry ends.** The kernel side writes a `LISTEN_CLOSE` record
/// naming the socket when a listener moves to CLOSE, and the join ends
/// the entry of that socket there. It also ends an entry when it must have
/// ended: when another listener takes the same address and port (the
/// newest wins, which also covers two `SO_REUSEPORT` listeners, only
/// approximately), and when any CONNECT, ACCEPT, LISTEN, CLOSE or FAILED
/// record names the listener's socket address (the kernel reuses an
/// address only after freeing the socket): what a lost LISTEN_CLOSE
/// leaves goes then, or at the table's limit.
///
/// The process is the one that called listen(). For a pre-forking server
/// that is the parent, where main names the worker that first read or
/// wrote the accepted socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenKey {
    pub netns: u32,
    pub ip: IpAddr,
    pub port: u16,
}

/// Who an open socket belongs to, as far as the records tell: what the
/// walk of open sockets (`crate::open_tcp`) needs to make a connection's
/// interval figures out of a socket's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `role::CLIENT` for a socket that connected, `role::SERVER` for one a
    /// known listener accepted.
    pub role: u8,
    pub tgid: u32,
    pub comm: [u8; 16],
    /// When it opened, in the clock of [`TickClock::ns`]; 0 when unknown.
    pub opened_ns: u64,
    /// The join saw the socket's CONNECT: it is a client whose SYN is in
    /// the kernel's sent figure, and comes off (as at its CLOSE). False for
    /// a client older than the agent ([`TcpJoin::seed_owner`]), whose SYN
    /// stays in every figure of it, the baseline's included.
    pub connected: bool,
}

/// The owner of a socket older than the agent, from `/proc`
/// ([`TcpJoin::seed_owner`]).
#[derive(Clone, Copy, Debug)]
struct Seeded {
    role: u8,
    tgid: u32,
}

/// What the join keeps of a CONNECT until its CLOSE.
#[derive(Clone, Copy, Debug)]
struct Pending {
    tgid: u32,
    tick: u64,
    resets_tx: u32,
    resets_rx: u32,
}

/// A listener: who listened, and its socket (to end the entry).
#[derive(Clone, Copy, Debug)]
struct Listener {
    tgid: u32,
    sk: u64,
}

/// A closed connection, for its late bytes and resets.
#[derive(Clone, Copy, Debug)]
struct Closed {
    conn: Conn,
    tick: u64,
    /// The CLOSE record's `copied_seq`: where the reads it counted ended.
    copied_seq: u32,
}

/// Resets of a socket the join knows nothing of yet (an accepted socket
/// before its CLOSE).
#[derive(Clone, Copy, Debug, Default)]
struct Resets {
    tx: u32,
    rx: u32,
    tick: u64,
}

/// The join. See the module's documentation.
pub struct TcpJoin {
    clock: TickClock,
    late_window_ticks: u64,
    connects: Fifo<u64, Pending>,
    /// Accepted sockets' ACCEPT tick, until their CLOSE.
    accepts: Fifo<u64, u64>,
    /// Owners of sockets older than the agent, until their CLOSE.
    seeded: Fifo<u64, Seeded>,
    listens: Fifo<ListenKey, Listener>,
    /// Listener socket address -> its key, to end the entry when the
    /// address is reused. Bounded with `listens` (removed with it).
    listen_socks: hashbrown::HashMap<u64, ListenKey>,
    names: Fifo<u32, [u8; 16]>,
    closed: Fifo<u64, Closed>,
    resets: Fifo<u64, Resets>,
    drops: Drops,
    /// Records fed so far: the index errors name.
    index: u64,
}

impl TcpJoin {
    pub fn new(limits: Limits, clock: TickClock) -> Self {
        Self {
            clock,
            late_window_ticks: limits.late_window_ticks,
            connects: Fifo::new(limits.connects),
            accepts: Fifo::new(limits.connects),
            seeded: Fifo::new(limits.connects),
            listens: Fifo::new(limits.listens),
            listen_socks: hashbrown::HashMap::new(),
            names: Fifo::new(limits.names),
            closed: Fifo::new(limits.recent),
            resets: Fifo::new(limits.recent),
            drops: Drops::default(),
            index: 0,
        }
    }

    /// What the join dropped so far, by reason.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// CONNECTs waiting for their CLOSE.
    pub fn waiting(&self) -> usize {
        self.connects.len()
    }

    /// The owner of open socket `sk`, whose local address is `local`: the
    /// client that connected it, else the owner `/proc` gave at start-up
    /// ([`TcpJoin::seed_owner`]), else the process listening on `local`
    /// (with the open time when the socket's ACCEPT was seen; tgid 0 for
    /// an accepted socket of an unknown listener). `None` when none of
    /// these names it (a connection older than the agent whose process was
    /// not found, or its CONNECT, ACCEPT and LISTEN lost). Changes nothing, counts nothing: the walk
    /// asks every interval.
    pub fn owner(&self, sk: u64, local: ListenKey) -> Option<Owner> {
        let comm = |tgid: u32| self.names.get(&tgid).copied().unwrap_or([0; 16]);
        if let Some(p) = self.connects.get(&sk) {
            return Some(Owner {
                role: role::CLIENT,
                tgid: p.tgid,
                comm: comm(p.tgid),
                opened_ns: self.clock.ns(p.tick),
                connected: true,
            });
        }
        if let Some(s) = self.seeded.get(&sk) {
            return Some(Owner {
                role: s.role,
                tgid: s.tgid,
                comm: comm(s.tgid),
                opened_ns: 0,
                connected: false,
            });
        }
        let accepted = self.accepts.get(&sk).map(|&tick| self.clock.ns(tick));
        match self.server_of(local.netns, local.ip, local.port) {
            Some(tgid) => Some(Owner {
                role: role::SERVER,
                tgid,
                comm: comm(tgid),
                opened_ns: accepted.unwrap_or(0),
                connected: false,
            }),
            None => accepted.map(|opened_ns| Owner {
                role: role::SERVER,
                tgid: 0,
                comm: [0; 16],
                opened_ns,
                connected: false,
            }),
        }
    }

    /// Whether a known listener would have accepted a socket whose local
    /// address is `local` (the matching of [`ListenKey`]): the rule that
    /// tells an open socket older than the agent a server's from a
    /// client's (`crate::open_tcp::seed`).
    pub fn is_listening(&self, local: ListenKey) -> bool {
        self.server_of(local.netns, local.ip, local.port).is_some()
    }

    /// A listener older than the agent, found at start-up at socket
    /// address `sk` and local address `key`, held by process `tgid` named
    /// `comm` (its `/proc/PID/comm`, what a PROCESS record carries): kept
    /// as a LISTEN record would have kept it, so that the sockets it
    /// accepts are named by it, and ended as such an entry ends. Call it
    /// before the first record is fed: a record already fed is newer.
    pub fn seed_listener(&mut self, key: ListenKey, sk: u64, tgid: u32, comm: [u8; 16]) {
        self.add_listener(key, sk, tgid);
        self.seed_name(tgid, comm);
    }

    /// An open connection older than the agent, at socket address `sk`,
    /// held by process `tgid` named `comm`, in role `role` (`role::CLIENT`
    /// or `role::SERVER`, see `crate::open_tcp::seed` for the rule): its
    /// walks and its CLOSE (or FAILED) are named by it, without an open
    /// time, and a client's SYN stays in its sent bytes ([`Owner::connected`]
    /// is false). The entry ends at the socket's CLOSE or FAILED, or when a
    /// record names the address for a new socket. Call it before the first
    /// record is fed.
    pub fn seed_owner(&mut self, sk: u64, role: u8, tgid: u32, comm: [u8; 16]) {
        let (_, evicted) = self.seeded.insert(sk, Seeded { role, tgid });
        self.drops.add(DropReason::ConnectEvicted, evicted);
        self.seed_name(tgid, comm);
    }

    fn seed_name(&mut self, tgid: u32, comm: [u8; 16]) {
        let (_, evicted) = self.names.insert(tgid, comm);
        self.drops.add(DropReason::NameEvicted, evicted);
    }

    /// Decodes one ring-buffer record ([`decode`]) and feeds it.
    pub fn feed_bytes(&mut self, bytes: &[u8]) -> Result<Option<Event>, JoinError> {
        match decode(bytes) {
            Ok(r) => self.feed(&r),
            Err(source) => {
                let index = self.index;
                self.index += 1;
                Err(JoinError::Decode { index, source })
            }
        }
    }

    /// Takes the next record in ring order. Returns the [`Event`] main's
    /// kernel side would have sent for it, if any (none for CONNECT, ACCEPT,
    /// LISTEN, LISTEN_CLOSE and a RESET before its CLOSE): `CLOSE` for a CLOSE,
    /// `FAILED` for a FAILED, `LATE` for late bytes or a reset after the
    /// close, and the PROCESS record itself, unchanged (the collector reads
    /// `/proc` then).
    pub fn feed(&mut self, rec: &Record) -> Result<Option<Event>, JoinError> {
        let index = self.index;
        self.index += 1;
        match rec {
            Record::Connect(c) => {
                self.connect(c);
                Ok(None)
            }
            Record::Accept(a) => {
                self.accept(a);
                Ok(None)
            }
            Record::Close(c) => self.close(index, c).map(Some),
            Record::Event(ev) => match ev.kind {
                event_kind::LISTEN => self.listen(index, ev).map(|()| None),
                event_kind::LISTEN_CLOSE => {
                    self.listener_gone(ev.sk);
                    Ok(None)
                }
                event_kind::FAILED => self.failed(index, ev).map(Some),
                event_kind::LATE => self.late(index, ev).map(Some),
                event_kind::RESET => self.reset(index, ev),
                event_kind::PROCESS => {
                    let (_, evicted) = self.names.insert(ev.conn.tgid, ev.conn.comm);
                    self.drops.add(DropReason::NameEvicted, evicted);
                    Ok(Some(*ev))
                }
                kind => Err(JoinError::UnknownKind {
                    index,
                    kind,
                    sk: ev.sk,
                }),
            },
        }
    }

    /// Forgets closed connections and waiting resets older than the late
    /// window at tick `now` ([`TickClock::tick`] of the agent's clock).
    /// Call it every interval.
    pub fn expire(&mut self, now: u64) {
        let window = self.late_window_ticks;
        let old = |tick: u64| tick.saturating_add(window) < now;
        while self.closed.pop_oldest_if(|c| old(c.tick)).is_some() {}
        while self.resets.pop_oldest_if(|r| old(r.tick)).is_some() {
            self.drops.add(DropReason::ResetUnmatched, 1);
        }
    }

    /// A socket began a new life at address `sk` (CONNECT, ACCEPT or
    /// LISTEN): every earlier socket there was freed.
    fn address_reused(&mut self, sk: u64) {
        if self.connects.remove(&sk).is_some() {
            self.drops.add(DropReason::ConnectOrphaned, 1);
        }
        if self.accepts.remove(&sk).is_some() {
            self.drops.add(DropReason::ConnectOrphaned, 1);
        }
        if self.seeded.remove(&sk).is_some() {
            self.drops.add(DropReason::ConnectOrphaned, 1);
        }
        self.closed.remove(&sk);
        if self.resets.remove(&sk).is_some() {
            self.drops.add(DropReason::ResetUnmatched, 1);
        }
        self.listener_gone(sk);
    }

    /// The listener at address `sk`, if any, was freed.
    fn listener_gone(&mut self, sk: u64) {
        if let Some(key) = self.listen_socks.remove(&sk)
            && self.listens.get(&key).is_some_and(|l| l.sk == sk)
        {
            self.listens.remove(&key);
        }
    }

    fn connect(&mut self, c: &ConnectRec) {
        self.address_reused(c.sk);
        let (_, evicted) = self.connects.insert(
            c.sk,
            Pending {
                tgid: c.tgid,
                tick: c.ts,
                resets_tx: 0,
                resets_rx: 0,
            },
        );
        self.drops.add(DropReason::ConnectEvicted, evicted);
    }

    fn accept(&mut self, a: &ConnectRec) {
        self.address_reused(a.sk);
        let (_, evicted) = self.accepts.insert(a.sk, a.ts);
        self.drops.add(DropReason::AcceptEvicted, evicted);
    }

    fn listen(&mut self, index: u64, ev: &Event) -> Result<(), JoinError> {
        self.address_reused(ev.sk);
        let c = &ev.conn;
        known_family(index, "LISTEN", ev.sk, c.family)?;
        if c.lport == 0 {
            self.drops.add(DropReason::ListenWithoutPort, 1);
            return Ok(());
        }
        let key = ListenKey {
            netns: c.netns,
            ip: ip_from(c.family, &c.laddr),
            port: c.lport,
        };
        self.add_listener(key, ev.sk, c.tgid);
        Ok(())
    }

    /// Listener `sk` on `key`, of process `tgid`: the newest on its key.
    fn add_listener(&mut self, key: ListenKey, sk: u64, tgid: u32) {
        let (old, evicted) = self.listens.insert(key, Listener { tgid, sk });
        if let Some(old) = old {
            self.listen_socks.remove(&old.sk);
        }
        self.drops.add(DropReason::ListenEvicted, evicted);
        self.listen_socks.insert(sk, key);
        // Entries the limit forgot leave their socket here: sweep them
        // when they outnumber the live ones.
        if self.listen_socks.len() > 2 * self.listens.len() + 16 {
            let listens = &self.listens;
            self.listen_socks
                .retain(|sk, key| listens.get(key).is_some_and(|l| l.sk == *sk));
        }
    }

    /// The listener whose accepted sockets have local address `ip:port`.
    fn server_of(&self, netns: u32, ip: IpAddr, port: u16) -> Option<u32> {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let wildcards: &[IpAddr] = match ip {
            IpAddr::V4(_) => &[any4, any6],
            IpAddr::V6(_) => &[any6],
        };
        std::iter::once(ip)
            .chain(wildcards.iter().copied())
            .find_map(|ip| self.listens.get(&ListenKey { netns, ip, port }))
            .map(|l| l.tgid)
    }

    /// The name of process `tgid`, counted when unknown. A name in use is
    /// kept from going first ([`Fifo::touch`]): the kernel announces a
    /// process once, until its LRU (`SEEN_PIDS`) forgets it, and a busy
    /// process stays there however old its announcement.
    fn name_of(&mut self, tgid: u32) -> [u8; 16] {
        match self.names.touch(&tgid) {
            Some(n) => *n,
            None => {
                self.drops.add(DropReason::NameUnknown, 1);
                [0; 16]
            }
        }
    }

    /// What a socket's CONNECT gives its end: the open time, the resets
    /// it received before its CLOSE or FAILED, and the process.
    fn connected(&mut self, c: &mut Conn, p: &Pending) {
        c.opened_ns = self.clock.ns(p.tick);
        c.resets_tx += p.resets_tx;
        c.resets_rx += p.resets_rx;
        c.tgid = p.tgid;
        c.comm = self.name_of(p.tgid);
    }

    fn close(&mut self, index: u64, r: &CloseRec) -> Result<Event, JoinError> {
        let pending = self.connects.remove(&r.sk);
        let accepted = self.accepts.remove(&r.sk);
        let seeded = self.seeded.remove(&r.sk);
        let early = self.resets.remove(&r.sk).unwrap_or_default();
        // An earlier socket closed at this address is gone for good, even
        // if this record cannot be read.
        self.closed.remove(&r.sk);
        self.listener_gone(r.sk);
        known_family(index, "CLOSE", r.sk, r.family)?;
        let mut c = Conn {
            bytes_tx: r.bytes_tx,
            bytes_rx: r.bytes_rx,
            segs_out: r.segs_out,
            segs_in: r.segs_in,
            total_retrans: r.total_retrans,
            srtt_us: r.srtt_us,
            rttvar_us: r.rttvar_us,
            resets_tx: early.tx,
            resets_rx: early.rx,
            netns: r.netns,
            family: r.family,
            lport: r.lport,
            rport: r.rport,
            established: 1,
            laddr: r.laddr,
            raddr: r.raddr,
            ..Conn::default()
        };
        match (pending, seeded) {
            (Some(p), _) => {
                // The client's SYN is in the kernel's sent figure.
                c.bytes_tx = c.bytes_tx.saturating_sub(1);
                c.role = role::CLIENT;
                self.connected(&mut c, &p);
            }
            // Older than the agent: no open time, and a client's SYN stays
            // in (its baseline held it).
            (None, Some(s)) => {
                c.role = s.role;
                c.tgid = s.tgid;
                c.comm = self.name_of(s.tgid);
            }
            (None, None) => {
                c.opened_ns = accepted.map_or(0, |tick| self.clock.ns(tick));
                match self.server_of(r.netns, ip_from(r.family, &r.laddr), r.lport) {
                    Some(tgid) => {
                        c.role = role::SERVER;
                        c.tgid = tgid;
                        c.comm = self.name_of(tgid);
                    }
                    None => {
                        c.role = if accepted.is_some() {
                            role::SERVER
                        } else {
                            role::UNKNOWN
                        };
                        self.drops.add(DropReason::CloseUnattributed, 1);
                    }
                }
            }
        }
        let (_, evicted) = self.closed.insert(
            r.sk,
            Closed {
                conn: c,
                tick: r.ts,
                copied_seq: r.copied_seq,
            },
        );
        self.drops.add(DropReason::RecentEvicted, evicted);
        Ok(Event {
            kind: event_kind::CLOSE,
            errno: 0,
            sk: r.sk,
            ts_ns: self.clock.ns(r.ts),
            conn: c,
        })
    }

    fn failed(&mut self, index: u64, ev: &Event) -> Result<Event, JoinError> {
        let pending = self.connects.remove(&ev.sk);
        self.accepts.remove(&ev.sk);
        let seeded = self.seeded.remove(&ev.sk);
        let early = self.resets.remove(&ev.sk).unwrap_or_default();
        self.closed.remove(&ev.sk);
        self.listener_gone(ev.sk);
        let f = &ev.conn;
        known_family(index, "FAILED", ev.sk, f.family)?;
        let mut c = Conn {
            role: role::CLIENT,
            resets_tx: early.tx,
            resets_rx: early.rx,
            netns: f.netns,
            family: f.family,
            lport: f.lport,
            rport: f.rport,
            laddr: f.laddr,
            raddr: f.raddr,
            ..Conn::default()
        };
        match (pending, seeded) {
            (Some(p), _) => self.connected(&mut c, &p),
            (None, Some(s)) => {
                c.tgid = s.tgid;
                c.comm = self.name_of(s.tgid);
            }
            (None, None) => self.drops.add(DropReason::FailedUnattributed, 1),
        }
        Ok(Event {
            kind: event_kind::FAILED,
            errno: ev.errno,
            sk: ev.sk,
            ts_ns: self.clock.ns(ev.ts_ns),
            conn: c,
        })
    }

    /// The closed connection at `sk` that a record with tuple `t` is about.
    /// The tuple must match: a LATE record reads it as the CLOSE record
    /// did; a RESET record reads the local port from `inet_num`, which
    /// `tcp_set_state()` zeroes at CLOSE for a port not bound explicitly,
    /// so a local port of 0 matches any.
    fn closed_match(&self, sk: u64, t: &Conn) -> Option<&Closed> {
        self.closed.get(&sk).filter(|c| {
            let k = &c.conn;
            k.family == t.family
                && k.netns == t.netns
                && k.laddr == t.laddr
                && k.raddr == t.raddr
                && k.rport == t.rport
                && (t.lport == 0 || k.lport == t.lport)
        })
    }

    /// A LATE [`Event`] of closed connection `closed` at `sk`: its tuple,
    /// role and process, with `fill`'s counts.
    fn late_of(&self, sk: u64, closed: &Conn, tick: u64, fill: impl FnOnce(&mut Conn)) -> Event {
        let mut c = Conn {
            tgid: closed.tgid,
            comm: closed.comm,
            role: closed.role,
            netns: closed.netns,
            family: closed.family,
            lport: closed.lport,
            rport: closed.rport,
            laddr: closed.laddr,
            raddr: closed.raddr,
            ..Conn::default()
        };
        fill(&mut c);
        Event {
            kind: event_kind::LATE,
            errno: 0,
            sk,
            ts_ns: self.clock.ns(tick),
            conn: c,
        }
    }

    fn late(&mut self, index: u64, ev: &Event) -> Result<Event, JoinError> {
        known_family(index, "LATE", ev.sk, ev.conn.family)?;
        let bytes = ev.conn.bytes_rx;
        Ok(match self.closed_match(ev.sk, &ev.conn) {
            Some(closed) => {
                let bytes = past_close(bytes, ev.errno as u32, closed.copied_seq);
                self.late_of(ev.sk, &closed.conn, ev.ts_ns, |c| c.bytes_rx = bytes)
            }
            None => {
                self.drops.add(DropReason::LateUnmatched, 1);
                self.late_of(ev.sk, &ev.conn, ev.ts_ns, |c| {
                    c.role = role::UNKNOWN;
                    c.tgid = 0;
                    c.comm = [0; 16];
                    c.bytes_rx = bytes;
                })
            }
        })
    }

    fn reset(&mut self, index: u64, ev: &Event) -> Result<Option<Event>, JoinError> {
        known_family(index, "RESET", ev.sk, ev.conn.family)?;
        let (tx, rx) = (ev.conn.resets_tx, ev.conn.resets_rx);
        if let Some(p) = self.connects.get_mut(&ev.sk) {
            p.resets_tx += tx;
            p.resets_rx += rx;
            return Ok(None);
        }
        if let Some(closed) = self.closed_match(ev.sk, &ev.conn) {
            return Ok(Some(self.late_of(ev.sk, &closed.conn, ev.ts_ns, |c| {
                c.resets_tx = tx;
                c.resets_rx = rx;
            })));
        }
        if self.listen_socks.contains_key(&ev.sk) {
            self.drops.add(DropReason::ResetOnListener, 1);
            return Ok(None);
        }
        // An accepted socket before its CLOSE (a received reset is traced
        // before the socket moves to CLOSE).
        match self.resets.get_mut(&ev.sk) {
            Some(r) => {
                r.tx += tx;
                r.rx += rx;
            }
            None => {
                let (_, evicted) = self.resets.insert(
                    ev.sk,
                    Resets {
                        tx,
                        rx,
                        tick: ev.ts_ns,
                    },
                );
                self.drops.add(DropReason::ResetUnmatched, evicted);
            }
        }
        Ok(None)
    }
}

/// Whether a record's address family is one whose addresses the join can
/// read (IPv4, IPv6).
fn known_family(index: u64, record: &'static str, sk: u64, family: u16) -> Result<(), JoinError> {
    if family == AF_INET || family == AF_INET6 {
        Ok(())
    } else {
        Err(JoinError::UnknownFamily {
            index,
            record,
            sk,
            family,
        })
    }
}

/// Of a late read of `bytes` that ended at sequence `read_end` (the LATE
/// record's `copied_seq`), what lies past `closed_at` (the CLOSE record's
/// `copied_seq`): what the CLOSE record did not count. A read under way
/// when the socket moved to CLOSE was counted by the CLOSE up to where it
/// had copied (see receiver-ebpf's `late_read`); one that began after, not
/// at all. Sequence numbers wrap, so the distance is taken modulo 2^32,
/// and a read that ended at or before the CLOSE's position adds nothing.
fn past_close(bytes: u64, read_end: u32, closed_at: u32) -> u64 {
    let past = read_end.wrapping_sub(closed_at) as i32;
    if past <= 0 { 0 } else { bytes.min(past as u64) }
}
