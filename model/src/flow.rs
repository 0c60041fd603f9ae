//! Flow records: what a receiver hands to the processors each interval.
//!
//! A [`Flow`] is one local workload's traffic with one peer over one
//! interval: the typed endpoints processors need (CIDR, port, same-host
//! lookups), the Resource and flow attributes the contract names, and the
//! interval's deltas. Receivers already merge connections that differ only
//! by the client's ephemeral port, as the contract never exports it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::attr::Attrs;
use crate::hist::Histogram;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// The local side's role, as `flowscope.flow.role` defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// Why a TCP connect failed: the `error.type` of
/// `flowscope.tcp.connection.failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailReason {
    Refused,
    Timeout,
    Reset,
    HostUnreachable,
    NetUnreachable,
    Other,
}

impl FailReason {
    pub const ALL: [FailReason; 6] = [
        FailReason::Refused,
        FailReason::Timeout,
        FailReason::Reset,
        FailReason::HostUnreachable,
        FailReason::NetUnreachable,
        FailReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Refused => "refused",
            FailReason::Timeout => "timeout",
            FailReason::Reset => "reset",
            FailReason::HostUnreachable => "host_unreachable",
            FailReason::NetUnreachable => "net_unreachable",
            FailReason::Other => crate::names::attr::ERROR_OTHER,
        }
    }

    /// Maps the socket error the kernel left in `sk->sk_err` (a positive
    /// errno) to the contract's value.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            111 => FailReason::Refused,               // ECONNREFUSED
            110 => FailReason::Timeout,               // ETIMEDOUT
            104 => FailReason::Reset,                 // ECONNRESET
            113 | 112 => FailReason::HostUnreachable, // EHOSTUNREACH, EHOSTDOWN
            101 | 100 => FailReason::NetUnreachable,  // ENETUNREACH, ENETDOWN
            _ => FailReason::Other,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One interval's deltas for a flow. Gauges (`active`, RTT variance) are the
/// state at the end of the interval; everything else adds up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowStats {
    pub bytes_tx: u64,
    pub bytes_rx: u64,
    pub packets_tx: u64,
    pub packets_rx: u64,
    pub retransmits: u64,
    pub opened: u64,
    pub closed: u64,
    failed: [u64; 6],
    pub resets_tx: u64,
    pub resets_rx: u64,
    /// Connections (TCP) or flows (UDP) open at the end of the interval.
    pub active: u64,
    /// Smoothed RTT, one sample per connection per interval.
    pub rtt: Option<Histogram>,
    /// Sum and count of RTT variance samples (seconds); the gauge is the mean.
    pub rtt_var_sum: f64,
    pub rtt_var_count: u64,
    /// Durations of the connections that closed in this interval.
    pub duration: Option<Histogram>,
    /// Packets of the flow the kernel dropped, by reason and direction
    /// (few: one entry per reason seen).
    pub drops: Vec<DropCount>,
}

/// Dropped packets of one reason and direction.
#[derive(Clone, Debug, PartialEq)]
pub struct DropCount {
    /// The kernel's drop reason (`NETFILTER_DROP`, ...).
    pub reason: Arc<str>,
    /// A packet the local side sent (else one on its way to it).
    pub transmit: bool,
    pub packets: u64,
}

impl FlowStats {
    pub fn add_failed(&mut self, reason: FailReason, n: u64) {
        self.failed[reason.index()] += n;
    }

    pub fn failed(&self, reason: FailReason) -> u64 {
        self.failed[reason.index()]
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Records one RTT sample (seconds) into a histogram with `bounds`.
    pub fn record_rtt(&mut self, bounds: &Arc<[f64]>, srtt: f64, rttvar: f64) {
        self.rtt
            .get_or_insert_with(|| Histogram::new(bounds.clone()))
            .record(srtt);
        self.rtt_var_sum += rttvar;
        self.rtt_var_count += 1;
    }

    /// Adds `packets` dropped packets of `reason` in one direction.
    pub fn add_drops(&mut self, reason: &Arc<str>, transmit: bool, packets: u64) {
        match self
            .drops
            .iter_mut()
            .find(|d| d.transmit == transmit && d.reason == *reason)
        {
            Some(d) => d.packets += packets,
            None => self.drops.push(DropCount {
                reason: reason.clone(),
                transmit,
                packets,
            }),
        }
    }

    pub fn record_duration(&mut self, bounds: &Arc<[f64]>, seconds: f64) {
        self.duration
            .get_or_insert_with(|| Histogram::new(bounds.clone()))
            .record(seconds);
    }

    /// Adds `other` into `self`: sums add, histograms merge, `active` adds
    /// (two connections open make two), variance samples pool.
    pub fn merge(&mut self, other: &FlowStats) {
        self.bytes_tx += other.bytes_tx;
        self.bytes_rx += other.bytes_rx;
        self.packets_tx += other.packets_tx;
        self.packets_rx += other.packets_rx;
        self.retransmits += other.retransmits;
        self.opened += other.opened;
        self.closed += other.closed;
        for (a, b) in self.failed.iter_mut().zip(other.failed.iter()) {
            *a += b;
        }
        self.resets_tx += other.resets_tx;
        self.resets_rx += other.resets_rx;
        self.active += other.active;
        merge_hist(&mut self.rtt, &other.rtt);
        merge_hist(&mut self.duration, &other.duration);
        self.rtt_var_sum += other.rtt_var_sum;
        self.rtt_var_count += other.rtt_var_count;
        for d in &other.drops {
            self.add_drops(&d.reason, d.transmit, d.packets);
        }
    }

    /// True when nothing happened and nothing is open: such a flow emits no
    /// points.
    pub fn is_empty(&self) -> bool {
        *self == FlowStats::default()
    }
}

fn merge_hist(into: &mut Option<Histogram>, from: &Option<Histogram>) {
    match (into.as_mut(), from) {
        (_, None) => {}
        (None, Some(h)) => *into = Some(h.clone()),
        (Some(a), Some(b)) => a.merge(b),
    }
}

/// One local workload's traffic with one peer over one interval.
#[derive(Clone, Debug)]
pub struct Flow {
    /// The local workload (`service.name`, `process.*`, `container.id`, host).
    pub resource: Arc<Attrs>,
    /// The flow attributes of the contract (transport, role, peer, ...).
    pub attrs: Attrs,
    pub transport: Transport,
    pub role: Role,
    /// Local address; the port is the real one even when it is not exported.
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Inode of the network namespace the socket lives in.
    pub netns: u32,
    /// Owning process (thread group id), 0 when unknown.
    pub pid: u32,
    pub stats: FlowStats,
}

impl Flow {
    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip()
    }
}
