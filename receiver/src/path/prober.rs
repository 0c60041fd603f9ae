//! The probing core behind a small trait: one blocking traceroute run.
//!
//! A run has two phases. The *trace* sends `queries` rounds of probes with
//! TTL 1, 2, ... up to the destination (or `max_ttl`); each router on the
//! way answers its TTL's probe with an ICMP time-exceeded, the destination
//! with an echo reply (ICMP), a port unreachable (UDP) or a SYN-ACK/RST
//! (TCP). The *end-to-end* phase then sends `e2e_probes` probes with the
//! full TTL, one at a time, for the destination's RTT, loss and jitter.
//!
//! [`TrippyProber`] implements it with `trippy-core`, which opens its
//! sockets on the calling thread: the caller picks the network namespace by
//! running it on a thread that entered that namespace first
//! ([`super::netns`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use thiserror::Error;
use trippy_core::{Builder, PortDirection, ProbeStatus, Protocol as TProtocol, Round};

/// How probes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRequest {
    pub target: IpAddr,
    /// Destination port of TCP and UDP probes (unused by ICMP).
    pub port: u16,
    pub protocol: Protocol,
    pub max_ttl: u8,
    /// How long a probe waits for its answer.
    pub timeout: Duration,
    /// Probes per hop.
    pub queries: u32,
    /// End-to-end probes.
    pub e2e_probes: u32,
}

/// What one TTL saw over the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HopResult {
    /// The TTL (1 is the first router).
    pub ttl: u8,
    /// The address that answered most often; `None` when nothing did.
    pub address: Option<IpAddr>,
    pub sent: u64,
    pub lost: u64,
    /// Round trips of the answered probes.
    pub rtts: Vec<Duration>,
}

/// One run's outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceResult {
    /// Hops in TTL order, up to the destination when it answered, else up
    /// to the last hop that answered plus the first silent one.
    pub hops: Vec<HopResult>,
    /// The destination answered a probe (trace or end-to-end).
    pub reachable: bool,
    pub e2e_sent: u64,
    pub e2e_lost: u64,
    pub e2e_rtts: Vec<Duration>,
}

impl TraceResult {
    /// Hops to the destination, or to the last hop that answered.
    pub fn hop_count(&self) -> u64 {
        self.hops
            .iter()
            .rev()
            .find(|h| h.address.is_some())
            .map_or(0, |h| u64::from(h.ttl))
    }

    /// Mean absolute difference of consecutive end-to-end RTTs (seconds).
    pub fn jitter(&self) -> Option<f64> {
        if self.e2e_rtts.len() < 2 {
            return None;
        }
        let diffs: Vec<f64> = self
            .e2e_rtts
            .windows(2)
            .map(|w| (w[1].as_secs_f64() - w[0].as_secs_f64()).abs())
            .collect();
        Some(diffs.iter().sum::<f64>() / diffs.len() as f64)
    }
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("setting up the tracer for {target}: {source}")]
    Build {
        target: IpAddr,
        #[source]
        source: trippy_core::Error,
    },
    #[error("probing {target}: {source}")]
    Run {
        target: IpAddr,
        #[source]
        source: trippy_core::Error,
    },
}

/// Runs one traceroute, blocking the calling thread, in the calling
/// thread's network namespace.
pub trait Prober: Send + Sync + 'static {
    fn trace(&self, req: &TraceRequest) -> Result<TraceResult, ProbeError>;
}

/// [`Prober`] on `trippy-core`.
#[derive(Debug, Default)]
pub struct TrippyProber;

/// ICMP probes carry an identifier so that concurrent runs (each has its
/// own raw socket, and every raw ICMP socket sees every reply) keep their
/// answers apart; TCP/UDP probes are told apart by their ports, so runs
/// also start at different sequence numbers (= source ports).
static NEXT_ID: AtomicU16 = AtomicU16::new(1);

fn next_ids() -> (u16, u16) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed).max(1);
    // 14 windows of 2048 sequence numbers from 33434 stay below
    // trippy's largest initial sequence (64511).
    let seq = 33434 + (id % 14) * 2048;
    (id, seq)
}

impl TrippyProber {
    fn builder(req: &TraceRequest, first_ttl: u8, rounds: u32) -> Builder {
        let (id, seq) = next_ids();
        let (protocol, ports) = match req.protocol {
            Protocol::Tcp => (TProtocol::Tcp, PortDirection::new_fixed_dest(req.port)),
            Protocol::Udp => (TProtocol::Udp, PortDirection::new_fixed_dest(req.port)),
            Protocol::Icmp => (TProtocol::Icmp, PortDirection::None),
        };
        Builder::new(req.target)
            .protocol(protocol)
            .port_direction(ports)
            .trace_identifier(id)
            .initial_sequence(seq)
            .first_ttl(first_ttl)
            .max_ttl(req.max_ttl)
            .max_rounds(Some(rounds as usize))
            .max_round_duration(req.timeout)
            .tcp_connect_timeout(req.timeout)
    }

    fn run(
        req: &TraceRequest,
        builder: Builder,
        on_round: impl Fn(&Round<'_>),
    ) -> Result<(), ProbeError> {
        let tracer = builder.build().map_err(|source| ProbeError::Build {
            target: req.target,
            source,
        })?;
        tracer.run_with(on_round).map_err(|source| ProbeError::Run {
            target: req.target,
            source,
        })
    }
}

#[derive(Default)]
struct HopAcc {
    sent: u64,
    lost: u64,
    rtts: Vec<Duration>,
    by_addr: BTreeMap<IpAddr, u64>,
}

impl Prober for TrippyProber {
    fn trace(&self, req: &TraceRequest) -> Result<TraceResult, ProbeError> {
        let mut result = TraceResult::default();

        // Trace: `queries` rounds; a round ends when the destination
        // answered (plus a short grace for late answers of lower TTLs) or
        // after `timeout`.
        let hops: RefCell<BTreeMap<u8, HopAcc>> = RefCell::new(BTreeMap::new());
        let reached = RefCell::new(false);
        let last_ttl = RefCell::new(0u8);
        let builder = Self::builder(req, 1, req.queries)
            .min_round_duration(Duration::ZERO)
            .grace_duration(Duration::from_millis(50));
        Self::run(req, builder, |round| {
            let largest = round.largest_ttl.0;
            let found = matches!(round.reason, trippy_core::CompletionReason::TargetFound);
            if found {
                *reached.borrow_mut() = true;
            }
            let mut last = last_ttl.borrow_mut();
            *last = (*last).max(largest);
            let mut hops = hops.borrow_mut();
            for p in round.probes {
                let (ttl, answer) = match p {
                    ProbeStatus::Complete(c) => (
                        c.ttl.0,
                        Some((
                            c.host,
                            c.received.duration_since(c.sent).unwrap_or_default(),
                        )),
                    ),
                    ProbeStatus::Awaited(a) => (a.ttl.0, None),
                    ProbeStatus::Failed(f) => (f.ttl.0, None),
                    ProbeStatus::NotSent | ProbeStatus::Skipped => continue,
                };
                if ttl == 0 || ttl > largest {
                    continue;
                }
                let h = hops.entry(ttl).or_default();
                h.sent += 1;
                match answer {
                    Some((host, rtt)) => {
                        h.rtts.push(rtt);
                        *h.by_addr.entry(host).or_default() += 1;
                    }
                    None => h.lost += 1,
                }
            }
        })?;
        let last = *last_ttl.borrow();
        result.reachable = *reached.borrow();
        for (ttl, h) in hops.into_inner() {
            if ttl > last {
                continue;
            }
            let address = h
                .by_addr
                .iter()
                .max_by_key(|(addr, n)| (**n, std::cmp::Reverse(**addr)))
                .map(|(a, _)| *a);
            result.hops.push(HopResult {
                ttl,
                address,
                sent: h.sent,
                lost: h.lost,
                rtts: h.rtts,
            });
        }

        // End to end: one probe per round, with the full TTL.
        if req.e2e_probes > 0 {
            let e2e: RefCell<(u64, u64, Vec<Duration>)> = RefCell::new((0, 0, Vec::new()));
            // trippy sends a TTL only while it is less than `max_inflight`
            // above the highest TTL answered so far (none yet here).
            let builder = Self::builder(req, req.max_ttl, req.e2e_probes)
                .max_inflight(req.max_ttl.saturating_add(1))
                .min_round_duration(Duration::from_millis(10))
                .grace_duration(Duration::from_millis(5));
            Self::run(req, builder, |round| {
                let mut e = e2e.borrow_mut();
                for p in round.probes {
                    match p {
                        ProbeStatus::Complete(c) => {
                            e.0 += 1;
                            e.2.push(c.received.duration_since(c.sent).unwrap_or_default());
                        }
                        ProbeStatus::Awaited(_) | ProbeStatus::Failed(_) => {
                            e.0 += 1;
                            e.1 += 1;
                        }
                        ProbeStatus::NotSent | ProbeStatus::Skipped => {}
                    }
                }
            })?;
            let (sent, lost, rtts) = e2e.into_inner();
            result.e2e_sent = sent;
            result.e2e_lost = lost;
            if !rtts.is_empty() {
                result.reachable = true;
            }
            result.e2e_rtts = rtts;
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_and_hop_count() {
        let r = TraceResult {
            hops: vec![
                HopResult {
                    ttl: 1,
                    address: Some("198.18.0.1".parse().unwrap()),
                    ..HopResult::default()
                },
                HopResult {
                    ttl: 2,
                    address: None,
                    ..HopResult::default()
                },
            ],
            e2e_rtts: vec![
                Duration::from_millis(10),
                Duration::from_millis(14),
                Duration::from_millis(12),
            ],
            ..TraceResult::default()
        };
        assert_eq!(r.hop_count(), 1);
        let j = r.jitter().unwrap();
        assert!((j - 0.003).abs() < 1e-9, "{j}");
        assert_eq!(TraceResult::default().jitter(), None);
    }
}
