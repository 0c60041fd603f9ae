//! flowscope's eBPF receiver: loads the programs in `receiver-ebpf/`, drains
//! their maps and ring buffer, keeps the connection table and attributes
//! flows to processes. DNS capture lives in [`dns`].
//!
//! Nothing here reaches another receiver or a global: what the receivers
//! share (self-telemetry, host facts, the DNS name cache) comes from the
//! agent's [`Context`].
//!
//! Every receiver is built the same way, from its config type and the
//! agent's [`Context`] ([`component::BuildReceiver`]); the agent runs them
//! through [`component::Receiver`] and names none of them.
//!
//! [`EbpfReceiver::start`] loads and attaches (failing with one clear error
//! when privileges or kernel features are missing); [`EbpfReceiver::run`]
//! then sends one [`FlowBatch`] per interval down a bounded channel until
//! shutdown, when it sends the last, partial interval.
//!
//! The collection itself (draining the ring buffer and joining its TCP
//! records ([`tcp_join`]), reading the open TCP sockets of every namespace
//! ([`open_tcp`]), walking `UDP_FLOWS` with one syscall per entry, reading
//! `/proc`, scanning network namespaces for wildcard sources) is blocking
//! work that takes milliseconds to seconds with the table size, so it runs
//! on a thread of its own (`flowscope-ebpf`), as conntrack and DNS capture
//! do, and never holds an async runtime worker that exporters and
//! pipelines need.

pub mod btf;
pub mod capabilities;
pub mod clock;
pub mod collector;
pub mod component;
pub mod conntrack;
pub mod dns;
pub mod drops;
pub mod floor;
pub mod loader;
mod mount;
pub mod netns;
pub mod offsets;
pub mod open_tcp;
pub mod path;
pub mod process;
pub mod resume;
pub mod source_addr;
pub mod tcp_join;
pub mod tracefs;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowscope_common::{counter, event_kind};
use flowscope_model::destinations::{DestinationSink, Destinations, ObservedDestination};
use flowscope_model::internal_events::{
    EventsLost, EventsReceived, FlowsTracked, LossReason, Source,
};
use flowscope_model::{Context, FlowBatch, HostFacts, Telemetry};
use flowscope_otel_config::receivers::{EbpfReceiverConfig, NatConfig, ResourceGranularity};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

pub use collector::{CollectorSettings, Granularity};
pub use loader::{LoadError, LoadOptions};

use collector::Collector;
use loader::Loaded;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("sizing the TCP record join")]
    Join(#[source] tcp_join::JoinError),
    #[error("waiting on the eBPF ring buffer")]
    RingBuffer(#[source] std::io::Error),
    #[error("starting the eBPF collection thread")]
    Thread(#[source] std::io::Error),
    #[error("the eBPF collection thread panicked")]
    Panicked,
}

/// Why the `ebpf` receiver could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `nat.enabled` and the host's conntrack service could not start.
    #[error("starting NAT resolution")]
    Nat(#[source] conntrack::ConntrackError),
}

/// The ring buffer is drained at least this often: the kernel side never
/// wakes user space for its frequent TCP records, and for the rare ones
/// only at process announcements and each 64 KiB. The ring must hold this
/// long's records at the peak rate (`ring_buffer_bytes`).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// The TCP record join's table sizes ([`tcp_join::Limits`]), from the
/// receiver's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinSettings {
    /// CONNECTs (and ACCEPTs) waiting for their CLOSE: one per open
    /// connection, so the collector's `max_tracked`.
    pub connects: usize,
    /// Listening sockets.
    pub listens: usize,
    /// Process names by tgid: at least the kernel's `SEEN_PIDS` (16,384
    /// entries, an LRU), which decides when a process is announced again.
    pub names: usize,
    /// Closed connections waiting for late bytes or resets (as the
    /// collector's closed table: `max_tracked`).
    pub recent: usize,
    /// How long they wait: two intervals, as the collector keeps closed
    /// connections' keys.
    pub late_window: Duration,
}

impl JoinSettings {
    /// Listening sockets the join names servers by: far more than a host
    /// has; what a lost LISTEN_CLOSE leaves goes at this limit.
    pub const LISTENS: usize = 4096;
    /// The kernel's `SEEN_PIDS` size (receiver-ebpf/src/main.rs).
    pub const NAMES: usize = 16_384;

    /// The join's sizes for a collector of `max_tracked` entries that
    /// reports every `interval`.
    pub fn new(max_tracked: usize, interval: Duration) -> Self {
        Self {
            connects: max_tracked,
            listens: Self::LISTENS,
            names: Self::NAMES,
            recent: max_tracked,
            late_window: 2 * interval,
        }
    }

    /// The limits in ticks of `clock`.
    pub fn limits(
        &self,
        clock: &tcp_join::TickClock,
    ) -> Result<tcp_join::Limits, tcp_join::JoinError> {
        let window_ticks = self
            .late_window
            .as_nanos()
            .saturating_mul(u128::from(clock.hz()))
            .div_ceil(1_000_000_000);
        tcp_join::Limits::new(
            self.connects,
            self.listens,
            self.names,
            self.recent,
            u64::try_from(window_ticks).unwrap_or(u64::MAX),
        )
    }
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
    /// The TCP record join's sizes.
    pub join: JoinSettings,
    /// The drop program's settings; `None` when `drops.enabled` is off.
    pub drops: Option<drops::DropSettings>,
}

/// The conntrack service's settings from the receiver's `nat` block.
pub fn conntrack_settings(c: &NatConfig) -> conntrack::ConntrackSettings {
    conntrack::ConntrackSettings {
        max_tracked: c.max_tracked,
        retention: c.retention,
        rescan: c.namespace_rescan,
        events: c.events,
        ..conntrack::ConntrackSettings::default()
    }
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
                pin_directory: config.pin_directory.clone(),
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
            join: JoinSettings::new(config.max_tracked_flows, config.collection_interval),
            drops: config.drops.enabled.then(|| drops::DropSettings {
                ignore: config.drops.ignore.clone(),
                ephemeral: host.ephemeral_ports,
                max_tracked: config.drops.max_tracked,
                interval: config.collection_interval,
            }),
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
    join: JoinSettings,
    counters_last: [u64; counter::COUNT as usize],
    /// Where outgoing client flows' servers go for dynamic path tests
    /// (offered only once a `path` receiver subscribed).
    destinations: Destinations,
    /// The drop program, when enabled and the kernel loads it.
    drops: Option<drops::DropsProgram>,
    /// The host's conntrack service this receiver's NAT resolution reads
    /// (`nat.enabled`), held so that it runs as long as the receiver.
    conntrack: Option<Arc<conntrack::Conntrack>>,
    /// With a `pin_directory`: where each delivered interval is recorded.
    checkpoint: Option<resume::Checkpoint>,
    /// With `tcp`: the walk of open TCP connections, once an interval.
    open_tcp: Option<open_tcp::walk::OpenWalk>,
}

impl EbpfReceiver {
    /// Loads and attaches the programs `config` asks for; everything shared
    /// (self-telemetry, host facts) comes from `ctx`.
    /// With `nat.enabled`, it first starts the host's [`conntrack`]
    /// service (or joins the one another `ebpf` receiver of the agent
    /// started), and the flow collector resolves NATed peers through it.
    pub fn start(config: &EbpfReceiverConfig, ctx: &Context) -> Result<Self, StartError> {
        let conntrack = if config.nat.enabled {
            let c = conntrack::Conntrack::shared(conntrack_settings(&config.nat), ctx)
                .map_err(StartError::Nat)?;
            Some(c)
        } else {
            None
        };
        let mut receiver = Self::start_with(ReceiverSettings::new(config, &ctx.host), ctx)?;
        if let Some(c) = conntrack {
            receiver.collector = receiver.collector.with_nat(c.resolver());
            receiver.conntrack = Some(c);
        }
        Ok(receiver)
    }

    /// As [`EbpfReceiver::start`], with settings already mapped (examples
    /// and tests that pick their own).
    pub fn start_with(settings: ReceiverSettings, ctx: &Context) -> Result<Self, LoadError> {
        let telemetry = ctx.telemetry.clone();
        let mut loaded = loader::load(&settings.load)?;
        let mut counters_last = [0; counter::COUNT as usize];
        let mut checkpoint = None;
        if let (Some(dir), Some(h)) = (&settings.load.pin_directory, &loaded.handover) {
            if h.lost > 0 {
                match h.previous {
                    Some(pid) => tracing::warn!(
                        "the previous agent (pid {pid}) stopped without delivering {} connection ends; counted as lost (agent_restart)",
                        h.lost
                    ),
                    None => tracing::info!(
                        "{} connection ends came after the previous agent's last interval; counted as lost (agent_restart)",
                        h.lost
                    ),
                }
            }
            telemetry.emit(EventsLost::new(
                Source::EbpfTcp,
                LossReason::AgentRestart,
                h.lost,
            ));
            // The kernel's counts go on from the previous agent's reports.
            counters_last = h.reported;
            checkpoint = Some(resume::Checkpoint::new(dir, h));
        }
        // Drops are an addition to the flows: a kernel that does not load
        // the program still gets its flows, with one warning.
        let drops = settings
            .drops
            .as_ref()
            .and_then(|d| match drops::DropsProgram::load(d) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(
                        "kernel drop reasons are off: {}",
                        flowscope_model::errors::error_chain(&e)
                    );
                    None
                }
            });
        let mut collector =
            Collector::new(settings.collector, telemetry.clone()).with_memory(ctx.memory.clone());
        // Right after the programs attached: what the open connections did
        // before this agent is not counted (see open_tcp::walk).
        let open_tcp = loaded.open_tcp.take().map(|reader| {
            let mut walk = open_tcp::walk::OpenWalk::new(reader);
            let b = walk.baseline(&mut collector, &telemetry);
            tracing::info!(
                "{} open TCP connections predate the agent: counted from now on",
                b.reported
            );
            walk
        });
        Ok(Self {
            loaded,
            collector,
            telemetry,
            interval: settings.interval,
            join: settings.join,
            counters_last,
            destinations: ctx.destinations.clone(),
            drops,
            conntrack: None,
            checkpoint,
            open_tcp,
        })
    }

    /// Sends a batch every interval until `shutdown` turns true, then sends
    /// the last partial interval and returns. The work runs on the
    /// `flowscope-ebpf` thread; this task only waits for shutdown and tells
    /// the thread, which notices within [`DRAIN_EVERY`].
    pub async fn run(
        self,
        tx: mpsc::Sender<FlowBatch>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let stop = Arc::new(AtomicBool::new(false));
        // Also stops the thread when this task is dropped (aborted).
        let _stop_on_drop = StopOnDrop(stop.clone());
        let (done_tx, mut done) = oneshot::channel();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("flowscope-ebpf".into())
            .spawn(move || {
                let _ = done_tx.send(self.collect(tx, &flag));
            })
            .map_err(RunError::Thread)?;
        tokio::select! {
            // Ended by itself: the pipeline is gone, or an error.
            r = &mut done => return r.unwrap_or(Err(RunError::Panicked)),
            _ = shutdown.changed() => {}
        }
        stop.store(true, Ordering::Release);
        done.await.unwrap_or(Err(RunError::Panicked))
    }

    /// The collection loop, on its own thread: drains the ring buffer when
    /// the kernel wakes it and every [`DRAIN_EVERY`], and at each interval
    /// end (or once `stop` is set: the last, partial interval) walks the
    /// maps and hands the batch over with a blocking send on the same
    /// bounded channel.
    fn collect(self, tx: mpsc::Sender<FlowBatch>, stop: &AtomicBool) -> Result<(), RunError> {
        let Self {
            loaded,
            mut collector,
            telemetry,
            interval,
            join: join_settings,
            mut counters_last,
            destinations,
            mut drops,
            conntrack: _conntrack,
            checkpoint,
            mut open_tcp,
        } = self;
        let Loaded {
            ebpf: _ebpf,
            mut udp_flows,
            udp_owners,
            events: mut ring,
            mut counters,
            hooks: _,
            clock: ticks,
            handover: _,
            open_tcp: _,
        } = loaded;
        let limits = join_settings.limits(&ticks).map_err(RunError::Join)?;
        let mut join = tcp_join::TcpJoin::new(limits, ticks);
        // Before the first record: who held the sockets and listeners the
        // baseline found (see open_tcp::seed).
        if let Some(open) = open_tcp.as_mut() {
            let s = open.seed(&mut join);
            tracing::info!(
                "named from /proc what predates the agent: {} listeners, {} client and {} server connections; {} sockets without a process found",
                s.listeners,
                s.clients,
                s.servers,
                s.unowned
            );
        }
        // What the join had dropped at the last report, by reason.
        let mut join_drops_last = tcp_join::Drops::default();
        // Connection ends read from the ring buffer so far.
        let mut ended: u64 = 0;
        let wake = RingWake::new(ring.as_raw_fd()).map_err(RunError::RingBuffer)?;
        let mut start = SystemTime::now();
        let mut next = Instant::now() + interval;
        let mut sources = source_addr::SourceAddrs::default();
        loop {
            let mut last = stop.load(Ordering::Acquire);
            while !last {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                wake.wait((next - now).min(DRAIN_EVERY))
                    .map_err(RunError::RingBuffer)?;
                ended += drain(&mut ring, &mut join, &mut collector, &telemetry);
                last = stop.load(Ordering::Acquire);
            }
            // The next interval ends one interval after this one's planned
            // end; after a late collection, one interval from now (as
            // tokio's MissedTickBehavior::Delay did).
            let now = Instant::now();
            next += interval;
            if next <= now {
                next = now + interval;
            }
            // Close events that precede this read belong to this interval;
            // the NAT entries of what the maps hold now are read first.
            collector.catch_up_nat();
            ended += drain(&mut ring, &mut join, &mut collector, &telemetry);
            // Open sockets: the iter/tcp walk, after the drain (the join
            // has the interval's CONNECTs and ACCEPTs).
            if let Some(open) = open_tcp.as_mut() {
                open.walk(&join, &mut collector, &telemetry);
                // Connections made while the walk ran: their CONNECTs are
                // in the ring now.
                ended += drain(&mut ring, &mut join, &mut collector, &telemetry);
                open.claim(&join, &mut collector);
            }
            report_join_drops(&join, &mut join_drops_last, &telemetry);
            join.expire(ticks.tick(clock::monotonic_ns()));
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
            if let Some(d) = drops.as_mut() {
                collector.on_drops(d.read(&telemetry));
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
            // The drop program tells clients from servers by the ports
            // servers listen on.
            if let Some(d) = drops.as_mut() {
                d.listen(
                    batch
                        .flows
                        .iter()
                        .filter(|f| f.role == flowscope_model::Role::Server)
                        .map(|f| f.local.port()),
                );
            }
            let n = batch.flows.len() as u64;
            if tx.blocking_send(batch).is_err() {
                // The pipeline is gone (shutting down): what this batch held
                // cannot be delivered; say so in the count.
                telemetry.emit(EventsLost::new(Source::Ebpf, LossReason::PipelineClosed, n));
                return Ok(());
            }
            // Every connection end read so far (`ended`: no drain since
            // the batch was built) is in the batch the pipeline took.
            if let Some(c) = &checkpoint {
                let saved = c.save(&mut counters, &counters_last, ended);
                let released = if last {
                    c.release(&mut counters)
                } else {
                    Ok(())
                };
                if let Err(e) = saved.and(released) {
                    tracing::warn!(
                        "the pinned counters were not updated (a restart may count this interval as lost): {}",
                        flowscope_model::errors::error_chain(&e)
                    );
                }
            }
            if last {
                return Ok(());
            }
        }
    }
}

/// Sets the collection thread's stop flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits for the ring buffer's wake-ups, edge-triggered (as tokio's
/// `AsyncFd` did): an epoll on the ring buffer's fd reports it when the
/// kernel side asks for a wake-up, not merely because records wait, so the
/// records submitted without one are drained on the [`DRAIN_EVERY`] timer
/// in batches. (A level-triggered `poll` would return at once whenever any
/// record waits and drain one at a time under load.)
struct RingWake {
    epoll: OwnedFd,
}

impl RingWake {
    fn new(ring: RawFd) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the fd returned is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both fds are open; `ev` lives across the call.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, ring, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { epoll })
    }

    /// Returns on a wake-up or after `timeout`.
    fn wait(&self, timeout: Duration) -> std::io::Result<()> {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        // Rounded up: a 0.4 ms wait must not become a busy 0 ms one.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `ev` has room for the one event asked for.
        let r = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), ev.as_mut_ptr(), 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
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

/// Reads every waiting record, joins the TCP ones ([`tcp_join`]) and
/// passes each event the join makes to the collector. Returns how many
/// records were connection ends (`CLOSE`, `FAILED`: what the kernel counts
/// as `CONNS_ENDED`), including those that could not be read: each of
/// those is reported lost here, so a restarted agent must not count it
/// again.
///
/// A record the join cannot take is counted in `flowscope.events.lost`
/// (`ebpf.tcp`, `parse_error`); the first of each drain is logged with how
/// many followed it.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    join: &mut tcp_join::TcpJoin,
    collector: &mut Collector,
    telemetry: &Telemetry,
) -> u64 {
    let mut ended = 0;
    let mut failed = 0u64;
    let mut first: Option<tcp_join::JoinError> = None;
    while let Some(item) = ring.next() {
        let kind = item
            .first_chunk::<4>()
            .map(|k| u32::from_ne_bytes(*k))
            .unwrap_or(0);
        if kind == event_kind::CLOSE_MIN || kind == event_kind::FAILED {
            ended += 1;
        }
        match join.feed_bytes(&item) {
            Ok(Some(ev)) => collector.on_event(&ev),
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first {
        tracing::warn!(
            "a TCP record from the kernel could not be joined ({} in this drain, counted as lost, parse_error): {}",
            failed,
            flowscope_model::errors::error_chain(&e)
        );
        telemetry.emit(EventsLost::new(
            Source::EbpfTcp,
            LossReason::ParseError,
            failed,
        ));
    }
    ended
}

/// Reports what the join dropped since `last`, by
/// [`tcp_join::DropReason::loss_reason`] (the reasons main does not count
/// as lost are left out).
fn report_join_drops(join: &tcp_join::TcpJoin, last: &mut tcp_join::Drops, telemetry: &Telemetry) {
    let now = join.drops();
    for reason in tcp_join::DropReason::ALL {
        let delta = now.get(reason).saturating_sub(last.get(reason));
        if let Some(loss) = reason.loss_reason()
            && delta > 0
        {
            telemetry.emit(EventsLost::new(Source::EbpfTcp, loss, delta));
        }
    }
    *last = now.clone();
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
        (Source::EbpfUdp, LossReason::MapFull, counter::UDP_MAP_FULL),
        (Source::EbpfUdp, LossReason::MapFull, counter::PEER_MAP_FULL),
        (Source::Ebpf, LossReason::ReadError, counter::READ_ERROR),
    ] {
        telemetry.emit(EventsLost::new(source, reason, read(slot)));
    }
    // UDP_OWNERS is an LRU cache backed by /proc: eviction loses no count.
    let _ = read(counter::OWNER_MAP_FULL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_limits_from_the_configuration() {
        let s = JoinSettings::new(65_536, Duration::from_secs(10));
        // HZ 250: two 10 s intervals are 5,000 ticks.
        let ticks = tcp_join::TickClock::new(250, 4_295_000_000, 1_000_000_000).unwrap();
        assert_eq!(
            s.limits(&ticks).unwrap(),
            tcp_join::Limits::new(65_536, 4_096, 16_384, 65_536, 5_000).unwrap()
        );
        // HZ 300, a 1.5 s interval: 900 ticks; a part tick rounds up.
        let s = JoinSettings::new(2, Duration::from_millis(1_501));
        let ticks = tcp_join::TickClock::new(300, 0, 0).unwrap();
        assert_eq!(
            s.limits(&ticks).unwrap(),
            tcp_join::Limits::new(2, 4_096, 16_384, 2, 901).unwrap()
        );
        // A collector of no entries is refused, naming the table.
        let e = JoinSettings::new(0, Duration::from_secs(1))
            .limits(&ticks)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the CONNECT table needs a limit of at least 1"
        );
    }
}
