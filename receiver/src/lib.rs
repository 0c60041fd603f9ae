//! flowscope's eBPF receiver: loads the programs in `receiver-ebpf/`, drains
//! their maps and ring buffer, keeps the connection table and attributes
//! flows to processes. DNS capture lives in [`dns`].
//!
//! [`EbpfReceiver::start`] loads and attaches (failing with one clear error
//! when privileges or kernel features are missing); [`EbpfReceiver::run`]
//! then sends one [`FlowBatch`] per interval down a bounded channel until
//! shutdown, when it sends the last, partial interval.

pub mod btf;
pub mod collector;
pub mod dns;
pub mod loader;
pub mod offsets;
pub mod path;
pub mod process;
pub mod tracefs;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowscope_common::{Event, counter};
use flowscope_model::destinations::{DestinationSink, ObservedDestination};
use flowscope_model::names::{SELF_SERVICE_NAME, resource};
use flowscope_model::telemetry::FLOWS_TRACKED;
use flowscope_model::{Attrs, FlowBatch, Telemetry};
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

pub use collector::{CollectorSettings, Granularity, PeerNames};
pub use loader::{LoadError, LoadOptions};

use collector::Collector;
use loader::Loaded;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("waiting on the eBPF ring buffer")]
    RingBuffer(#[source] std::io::Error),
}

/// Receiver settings (the `ebpf` receiver's config, validated).
#[derive(Clone, Debug)]
pub struct ReceiverSettings {
    pub interval: Duration,
    pub load: LoadOptions,
    pub collector: CollectorSettings,
}

/// The host's attributes on every Resource: host.name, host.id, os.type.
pub fn host_attrs() -> Attrs {
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut a = Attrs::new()
        .with(resource::HOST_NAME, host_name)
        .with(resource::OS_TYPE, "linux");
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        let id = id.trim();
        if !id.is_empty() {
            a.set(resource::HOST_ID, id.to_string());
        }
    }
    a
}

/// The Resource of the agent's own telemetry.
pub fn self_resource() -> Arc<Attrs> {
    Arc::new(host_attrs().with(resource::SERVICE_NAME, SELF_SERVICE_NAME))
}

/// The ephemeral port range (net.ipv4.ip_local_port_range), or Linux's
/// default when unreadable.
pub fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
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
    /// Where outgoing client flows' servers go for dynamic path tests.
    destinations: Option<DestinationSink>,
}

impl EbpfReceiver {
    /// Loads and attaches the programs.
    pub fn start(
        settings: ReceiverSettings,
        telemetry: Telemetry,
        names: Option<Arc<dyn PeerNames>>,
    ) -> Result<Self, LoadError> {
        let loaded = loader::load(&settings.load)?;
        Ok(Self {
            loaded,
            collector: Collector::new(settings.collector, telemetry.clone(), names),
            telemetry,
            interval: settings.interval,
            counters_last: [0; counter::COUNT as usize],
            destinations: None,
        })
    }

    /// Offers the server side of every outgoing client flow to `sink`
    /// each interval (for dynamic Network Path tests). Never blocks: a full
    /// sink drops and counts.
    pub fn with_destinations(mut self, sink: DestinationSink) -> Self {
        self.destinations = Some(sink);
        self
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
                    Err(_) => telemetry.events_lost("ebpf.tcp", "map_read_error", 1),
                }
            }
            let mut idle = Vec::new();
            for item in udp_flows.iter() {
                match item {
                    Ok((k, s)) => {
                        let owner = udp_owners.get(&k.cookie, 0).ok();
                        if collector.on_udp(&k, &s, owner.as_ref()) {
                            idle.push(k);
                        }
                    }
                    Err(_) => telemetry.events_lost("ebpf.udp", "map_read_error", 1),
                }
            }
            for k in idle {
                let _ = udp_flows.remove(&k);
            }
            report_counters(&counters, &mut counters_last, &telemetry);
            telemetry.set_gauge(FLOWS_TRACKED, Attrs::new(), collector.tracked() as i64);
            let now = SystemTime::now();
            let batch = collector.finish(unix_nanos(start), unix_nanos(now));
            start = now;
            if let Some(sink) = &destinations {
                offer_destinations(sink, &batch);
            }
            let n = batch.flows.len() as u64;
            if tx.send(batch).await.is_err() {
                // The pipeline is gone (shutting down): what this batch held
                // cannot be delivered; say so in the count.
                telemetry.events_lost("ebpf", "pipeline_closed", n);
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
            telemetry.events_lost("ebpf.tcp", "parse_error", 1);
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
    telemetry.events_received("ebpf.tcp", read(counter::TCP_EVENTS));
    telemetry.events_received("ebpf.udp", read(counter::UDP_EVENTS));
    telemetry.events_lost("ebpf.tcp", "ringbuf_full", read(counter::RINGBUF_FULL));
    telemetry.events_lost("ebpf.tcp", "map_full", read(counter::TCP_MAP_FULL));
    telemetry.events_lost("ebpf.udp", "map_full", read(counter::UDP_MAP_FULL));
    telemetry.events_lost("ebpf", "read_error", read(counter::READ_ERROR));
    // UDP_OWNERS is an LRU cache backed by /proc: eviction loses no count.
    let _ = read(counter::OWNER_MAP_FULL);
}
