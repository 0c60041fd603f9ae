//! flowscope's eBPF receiver: loads the programs in `receiver-ebpf/`, drains
//! their maps and ring buffer, keeps the connection table and attributes
//! flows to processes. DNS capture lives in [`dns`].
//!
//! Nothing here reaches another receiver or a global: what the receivers
//! share (self-telemetry, host facts, the DNS name cache) comes from the
//! agent's [`Context`].
//!
//! [`EbpfReceiver::start`] loads and attaches (failing with one clear error
//! when privileges or kernel features are missing); [`EbpfReceiver::run`]
//! then sends one [`FlowBatch`] per interval down a bounded channel until
//! shutdown, when it sends the last, partial interval.

pub mod btf;
pub mod capabilities;
pub mod collector;
pub mod conntrack;
pub mod dns;
pub mod loader;
pub mod netns;
pub mod offsets;
pub mod path;
pub mod process;
pub mod source_addr;
pub mod tracefs;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowscope_common::{Event, counter};
use flowscope_model::destinations::{DestinationSink, Destinations, ObservedDestination};
use flowscope_model::internal_events::{
    EventsLost, EventsReceived, FlowsTracked, LossReason, Source,
};
use flowscope_model::{Context, FlowBatch, HostFacts, Telemetry};
use flowscope_otel_config::receivers::{EbpfReceiverConfig, ResourceGranularity};
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

pub use collector::{CollectorSettings, Granularity};
pub use loader::{LoadError, LoadOptions};

use collector::Collector;
use loader::Loaded;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("waiting on the eBPF ring buffer")]
    RingBuffer(#[source] std::io::Error),
}

/// What the `ebpf` receiver runs with: its configuration
/// ([`EbpfReceiverConfig`], validated when the config was loaded; defaults
/// and limits live there) mapped onto the loader and the connection table,
/// plus the host's facts from the [`Context`].
#[derive(Clone, Debug)]
pub struct ReceiverSettings {
    pub interval: Duration,
    pub load: LoadOptions,
    pub collector: CollectorSettings,
}

impl ReceiverSettings {
    /// The settings `config` describes on the host `host`.
    pub fn new(config: &EbpfReceiverConfig, host: &HostFacts) -> Self {
        ReceiverSettings {
            interval: config.collection_interval,
            load: LoadOptions {
                tcp: config.tcp,
                udp: config.udp,
                // The config caps max_tracked_flows at u32::MAX (a kernel
                // map's size); saturate for settings built in code.
                max_flows: u32::try_from(config.max_tracked_flows).unwrap_or(u32::MAX),
                ring_buffer_bytes: config.ring_buffer_bytes,
            },
            collector: CollectorSettings {
                max_tracked: config.max_tracked_flows,
                granularity: match config.resource_granularity {
                    ResourceGranularity::Service => Granularity::Service,
                    ResourceGranularity::Process => Granularity::Process,
                },
                include_command_line: config.include_command_line,
                rtt_bounds: Arc::from(config.rtt_buckets.as_slice()),
                duration_bounds: Arc::from(config.duration_buckets.as_slice()),
                ephemeral: host.ephemeral_ports,
                host: host.attrs.clone(),
            },
        }
    }
}

pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The loaded eBPF receiver.
pub struct EbpfReceiver {
    loaded: Loaded,
    collector: Collector,
    telemetry: Telemetry,
    interval: Duration,
    counters_last: [u64; counter::COUNT as usize],
    /// Where outgoing client flows' servers go for dynamic path tests
    /// (offered only once a `path` receiver subscribed).
    destinations: Destinations,
}

impl EbpfReceiver {
    /// Loads and attaches the programs `config` asks for; everything shared
    /// (self-telemetry, host facts) comes from `ctx`.
    /// With `nat.enabled`, the flow collector resolves NATed peers through
    /// the context's [`flowscope_model::NatResolver`] (filled by the
    /// [`conntrack`] service the agent starts).
    pub fn start(config: &EbpfReceiverConfig, ctx: &Context) -> Result<Self, LoadError> {
        let mut receiver = Self::start_with(ReceiverSettings::new(config, &ctx.host), ctx)?;
        if config.nat.enabled {
            receiver.collector = receiver.collector.with_nat(ctx.nat.clone());
        }
        Ok(receiver)
    }

    /// As [`EbpfReceiver::start`], with settings already mapped (examples
    /// and tests that pick their own).
    pub fn start_with(settings: ReceiverSettings, ctx: &Context) -> Result<Self, LoadError> {
        let telemetry = ctx.telemetry.clone();
        let loaded = loader::load(&settings.load)?;
        Ok(Self {
            loaded,
            collector: Collector::new(settings.collector, telemetry.clone()),
            telemetry,
            interval: settings.interval,
            counters_last: [0; counter::COUNT as usize],
            destinations: ctx.destinations.clone(),
        })
    }

    /// Sends a batch every interval until `shutdown` turns true, then sends
    /// the last partial interval and returns.
    pub async fn run(
        self,
        tx: mpsc::Sender<FlowBatch>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let Self {
            loaded,
            mut collector,
            telemetry,
            interval,
            mut counters_last,
            destinations,
        } = self;
        let Loaded {
            ebpf: _ebpf,
            conns,
            mut udp_flows,
            udp_owners,
            events,
            counters,
            hooks: _,
        } = loaded;
        // SAFETY: the ring buffer owns its map fd and keeps it open for as
        // long as the AsyncFd owns the ring buffer.
        let mut ring =
            unsafe { AsyncFd::register(events) }.map_err(|e| RunError::RingBuffer(e.into()))?;
        let mut start = SystemTime::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The kernel side wakes us only for process announcements and when
        // 64 KiB of events wait; this timer drains the rest.
        let mut drain_tick = tokio::time::interval(Duration::from_millis(100));
        let mut sources = source_addr::SourceAddrs::default();
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = drain_tick.tick() => {
                    drain(ring.get_mut(), &mut collector, &telemetry);
                    continue;
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(RunError::RingBuffer)?;
                    drain(guard.get_inner_mut(), &mut collector, &telemetry);
                    guard.clear_ready();
                    continue;
                }
                _ = tick.tick() => false,
                _ = shutdown.changed() => true,
            };
            // Close events that precede this read belong to this interval.
            drain(ring.get_mut(), &mut collector, &telemetry);
            for item in conns.iter() {
                match item {
                    Ok((sk, c)) => collector.on_conn(sk, &c),
                    Err(_) => telemetry.emit(EventsLost::new(
                        Source::EbpfTcp,
                        LossReason::MapReadError,
                        1,
                    )),
                }
            }
            let mut idle = Vec::new();
            let mut udp = Vec::new();
            for item in udp_flows.iter() {
                match item {
                    Ok((k, s)) => {
                        let owner = udp_owners.get(&k.cookie, 0).ok();
                        udp.push((k, s, owner));
                    }
                    Err(_) => telemetry.emit(EventsLost::new(
                        Source::EbpfUdp,
                        LossReason::MapReadError,
                        1,
                    )),
                }
            }
            // Unconnected sockets bound to the wildcard: the kernel side
            // cannot know their local address (see source_addr).
            sources.fill(&mut udp);
            for (k, s, owner) in udp {
                if collector.on_udp(&k, &s, owner.as_ref()) {
                    idle.push(k);
                }
            }
            for k in idle {
                let _ = udp_flows.remove(&k);
            }
            report_counters(&counters, &mut counters_last, &telemetry);
            telemetry.emit(FlowsTracked {
                count: collector.tracked(),
            });
            let now = SystemTime::now();
            let batch = if last {
                collector.finish_last(unix_nanos(start), unix_nanos(now))
            } else {
                collector.finish(unix_nanos(start), unix_nanos(now))
            };
            start = now;
            if let Some(sink) = destinations.sink() {
                offer_destinations(sink, &batch);
            }
            let n = batch.flows.len() as u64;
            if tx.send(batch).await.is_err() {
                // The pipeline is gone (shutting down): what this batch held
                // cannot be delivered; say so in the count.
                telemetry.emit(EventsLost::new(Source::Ebpf, LossReason::PipelineClosed, n));
                return Ok(());
            }
            if last {
                return Ok(());
            }
        }
    }
}

/// Hands the server side of each outgoing client flow to the path
/// receiver's dynamic tests (the sink counts what it cannot take).
fn offer_destinations(sink: &DestinationSink, batch: &FlowBatch) {
    for f in &batch.flows {
        if f.role != flowscope_model::Role::Client {
            continue;
        }
        sink.offer(ObservedDestination {
            server: f.peer,
            local: f.local,
            transport: f.transport,
            netns: f.netns,
            pid: f.pid,
            resource: f.resource.clone(),
            domain: match f.attrs.get(flowscope_model::names::attr::PEER_DOMAIN) {
                Some(flowscope_model::Value::Str(s)) => Some(s.clone()),
                _ => None,
            },
        });
    }
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    collector: &mut Collector,
    telemetry: &Telemetry,
) {
    while let Some(item) = ring.next() {
        if item.len() < std::mem::size_of::<Event>() {
            telemetry.emit(EventsLost::new(Source::EbpfTcp, LossReason::ParseError, 1));
            continue;
        }
        // SAFETY: the kernel side writes whole `Event`s (repr(C), integers
        // only); the length was checked; read_unaligned copes with alignment.
        let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        collector.on_event(&ev);
    }
}

/// Turns the kernel's per-CPU counters into self-telemetry deltas.
fn report_counters(
    counters: &aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    last: &mut [u64; counter::COUNT as usize],
    telemetry: &Telemetry,
) {
    let mut read = |i: u32| -> u64 {
        let total: u64 = counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        let slot = &mut last[i as usize];
        let delta = total.saturating_sub(*slot);
        *slot = total;
        delta
    };
    let received = |source, count| EventsReceived { source, count };
    telemetry.emit(received(Source::EbpfTcp, read(counter::TCP_EVENTS)));
    telemetry.emit(received(Source::EbpfUdp, read(counter::UDP_EVENTS)));
    for (source, reason, slot) in [
        (
            Source::EbpfTcp,
            LossReason::RingbufFull,
            counter::RINGBUF_FULL,
        ),
        (Source::EbpfTcp, LossReason::MapFull, counter::TCP_MAP_FULL),
        (Source::EbpfUdp, LossReason::MapFull, counter::UDP_MAP_FULL),
        (Source::EbpfUdp, LossReason::MapFull, counter::PEER_MAP_FULL),
        (Source::Ebpf, LossReason::ReadError, counter::READ_ERROR),
    ] {
        telemetry.emit(EventsLost::new(source, reason, read(slot)));
    }
    // UDP_OWNERS is an LRU cache backed by /proc: eviction loses no count.
    let _ = read(counter::OWNER_MAP_FULL);
}
