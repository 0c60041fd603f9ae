//! DNS monitoring: every lookup on the host, its latency, answer and
//! failures (issue 5; user docs in docs/dns.md).
//!
//! - [`capture`]: an `AF_PACKET` socket per network namespace with the eBPF
//!   socket filter `flowscope-dns` (receiver-ebpf/src/bin/dns.rs) that keeps
//!   only packets to or from the DNS ports.
//! - [`packet`], [`tcp`], [`message`]: IP/UDP/TCP headers, DNS-over-TCP
//!   reassembly, DNS parsing (simple-dns).
//! - [`engine`]: query/response matching, timeouts, aggregation into
//!   `dns.lookup.duration` points (failures and timeouts included).
//! - [`topk`]: per-client top-K of question names, folded to registrable
//!   domains and `_other`.
//! - [`names`]: fills the agent's shared IP -> name cache, which the
//!   `peer` processor reads for `flowscope.peer.domain`.
//! - [`owner`]: the process owning the local DNS socket, as the kernel
//!   recorded it when the message left ([`owner::KernelOwners`]; /proc as
//!   the fallback).
//! - [`programs`]: loads and attaches the owner programs.
//!
//! [`DnsReceiver::start`] loads the filter and starts the capture thread;
//! [`DnsReceiver::run`] sends one [`FlowBatch`] of points per interval and
//! the last, partial one on shutdown.

pub mod capture;
pub mod engine;
pub mod message;
pub mod names;
pub mod owner;
pub mod packet;
pub mod programs;
pub mod tcp;
pub mod topk;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aya::programs::SocketFilter;
use aya::{Ebpf, EbpfError, EbpfLoader};
use flowscope_common::{Offsets, PortSet};
use flowscope_model::internal_events::{EventsLost, LossReason};
use flowscope_model::{Context, FlowBatch, Telemetry};
use flowscope_otel_config::receivers::DnsReceiverConfig;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::capabilities::{self, Feature};
use crate::loader::LoadError;
use crate::unix_nanos;

pub use engine::{Engine, EngineSettings, OwnerResolver};
pub use names::DnsNames;

/// The DNS socket filter, built by build.rs for the bpf target.
static DNS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowscope-dns"));

const PROGRAM: &str = "dns_filter";
const PORTS_MAP: &str = "DNS_PORTS";
/// Entries of the filter's port map (the config's limit on `ports`).
pub const MAX_PORTS: usize = DnsReceiverConfig::MAX_PORTS;

#[derive(Debug, Error)]
pub enum DnsError {
    #[error(transparent)]
    Privileges(#[from] LoadError),
    #[error("invalid dns receiver settings: {0}")]
    Settings(String),
    #[error("the kernel rejected flowscope's DNS socket filter")]
    Load(#[source] EbpfError),
    #[error("eBPF {0} is missing from the DNS object (a build problem)")]
    Missing(&'static str),
    #[error("loading the DNS socket filter")]
    Program(#[source] aya::programs::ProgramError),
    #[error("configuring the DNS port map")]
    Map(#[source] aya::maps::MapError),
    #[error("duplicating the socket filter's fd")]
    Fd(#[source] std::io::Error),
    #[error("starting the DNS capture thread")]
    Thread(#[source] std::io::Error),
    #[error("the DNS capture thread panicked")]
    Panicked,
}

/// What the `dns` receiver runs with: the user's configuration
/// ([`DnsReceiverConfig`]: ports, timeout, limits, buckets; its defaults,
/// limits and validation are defined there, once) and the receiver's own
/// tunables, which the configuration does not expose.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub config: DnsReceiverConfig,
    /// How often network namespaces are rescanned.
    pub namespace_rescan: Duration,
    /// Most DNS-over-TCP stream directions followed at once.
    pub max_tcp_streams: usize,
    /// Receive buffer of each capture socket in bytes.
    pub socket_buffer_bytes: usize,
    /// Attach the classic tracepoint as the owner program even where the
    /// BTF-typed one loads (default: `FLOWSCOPE_EBPF_HOOKS=tracepoint`, as
    /// for the flow programs).
    pub classic_tracepoint: bool,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings::from(DnsReceiverConfig::default())
    }
}

impl From<DnsReceiverConfig> for DnsSettings {
    fn from(config: DnsReceiverConfig) -> Self {
        Self::new(&config)
    }
}

impl DnsSettings {
    /// The settings `config` describes, with the default tunables (as
    /// `ReceiverSettings::new` and `PathSettings::new` do for theirs).
    pub fn new(config: &DnsReceiverConfig) -> Self {
        Self {
            config: config.clone(),
            namespace_rescan: Duration::from_secs(2),
            max_tcp_streams: 4096,
            socket_buffer_bytes: 4 << 20,
            classic_tracepoint: std::env::var(crate::loader::HOOKS_ENV)
                .is_ok_and(|v| v == "tracepoint"),
        }
    }
}

impl DnsSettings {
    /// The configuration's own rules ([`DnsReceiverConfig::validate`], the
    /// ones the config loader applies), then the tunables'.
    fn validate(&self) -> Result<(), DnsError> {
        self.config.validate().map_err(DnsError::Settings)?;
        if self.namespace_rescan.is_zero() || self.max_tcp_streams == 0 {
            return Err(DnsError::Settings(
                "namespace_rescan and max_tcp_streams must be positive".into(),
            ));
        }
        Ok(())
    }

    fn engine(&self) -> EngineSettings {
        EngineSettings {
            timeout: self.config.query_timeout,
            max_outstanding: self.config.max_outstanding_queries,
            top_k: self.config.top_k,
            buckets: Arc::from(self.config.buckets.as_slice()),
            max_tcp_streams: self.max_tcp_streams,
        }
    }
}

/// The running DNS receiver.
pub struct DnsReceiver {
    engine: Arc<Mutex<Engine>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    interval: Duration,
    telemetry: Telemetry,
    open: Arc<Mutex<Vec<u32>>>,
    /// Which owner programs are attached (None: owners come from /proc).
    owner_hooks: Option<crate::loader::Hooks>,
    /// Keeps the loaded object (and its port map) alive.
    _ebpf: Ebpf,
}

impl DnsReceiver {
    /// Loads the socket filter and starts capturing in every network
    /// namespace, as `config` says. The names clients resolve go into the
    /// context's shared cache (`ctx.peer_names`) for whoever reads it.
    pub fn start(config: &DnsReceiverConfig, ctx: &Context) -> Result<Self, DnsError> {
        Self::start_with(DnsSettings::new(config), ctx)
    }

    /// As [`DnsReceiver::start`], with the tunables set too. The owner of
    /// each lookup comes from the owner programs ([`programs`]), or from
    /// /proc when they cannot be attached here (the reason is logged).
    pub fn start_with(settings: DnsSettings, ctx: &Context) -> Result<Self, DnsError> {
        settings.validate()?;
        capabilities::check(&[Feature::Dns]).map_err(LoadError::from)?;
        let offsets = match crate::offsets::discover() {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "kernel layout unknown: DNS lookups are attributed from /proc, which misses short-lived clients"
                );
                None
            }
        };
        let mut ebpf = Self::load(&settings, offsets.unwrap_or_default())?;
        let host = ctx.host.attrs.clone();
        let mut owner_hooks = None;
        let owners: Box<dyn OwnerResolver> = match offsets
            .ok_or(programs::ProgramsError::NoOffsets)
            .and_then(|_| programs::attach(&mut ebpf, settings.classic_tracepoint))
        {
            Ok((maps, hooks)) => {
                owner_hooks = Some(hooks);
                Box::new(owner::KernelOwners::new(
                    maps,
                    host,
                    ctx.telemetry.clone(),
                    owner::OwnerSettings::for_timeout(settings.config.query_timeout),
                ))
            }
            Err(e) => {
                tracing::warn!(
                    error = %programs::error_chain(&e),
                    "DNS owner programs not attached: lookups are attributed from /proc, which misses short-lived clients"
                );
                Box::new(owner::ProcOwners::new(host))
            }
        };
        let mut rx = Self::start_loaded(settings, ctx, ebpf, owners)?;
        rx.owner_hooks = owner_hooks;
        Ok(rx)
    }

    /// As [`DnsReceiver::start`], with `owners` attributing each lookup to
    /// a local process instead of the kernel's records
    /// ([`owner::KernelOwners`]). It is called on the capture thread when a
    /// query is seen and when a lookup ends, so it must answer quickly.
    pub fn start_with_owners(
        settings: DnsSettings,
        ctx: &Context,
        owners: Box<dyn OwnerResolver>,
    ) -> Result<Self, DnsError> {
        settings.validate()?;
        capabilities::check(&[Feature::Dns]).map_err(LoadError::from)?;
        let ebpf = Self::load(&settings, Offsets::default())?;
        Self::start_loaded(settings, ctx, ebpf, owners)
    }

    /// Loads the DNS object with its read-only data set.
    fn load(settings: &DnsSettings, offsets: Offsets) -> Result<Ebpf, DnsError> {
        let mut ports = PortSet::EMPTY;
        for p in &settings.config.ports {
            ports.insert(*p);
        }
        EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("DNS_PORT_SET", &ports, true)
            .load(DNS_OBJECT)
            .map_err(DnsError::Load)
    }

    fn start_loaded(
        settings: DnsSettings,
        ctx: &Context,
        mut ebpf: Ebpf,
        owners: Box<dyn OwnerResolver>,
    ) -> Result<Self, DnsError> {
        let telemetry = ctx.telemetry.clone();
        {
            let map = ebpf
                .map_mut(PORTS_MAP)
                .ok_or(DnsError::Missing("map DNS_PORTS"))?;
            let mut ports: aya::maps::HashMap<_, u16, u8> =
                aya::maps::HashMap::try_from(map).map_err(DnsError::Map)?;
            for p in &settings.config.ports {
                ports.insert(p, 1, 0).map_err(DnsError::Map)?;
            }
        }
        let prog: &mut SocketFilter = ebpf
            .program_mut(PROGRAM)
            .ok_or(DnsError::Missing("program dns_filter"))?
            .try_into()
            .map_err(DnsError::Program)?;
        prog.load().map_err(DnsError::Program)?;
        let prog_fd: OwnedFd = prog
            .fd()
            .map_err(DnsError::Program)?
            .as_fd()
            .try_clone_to_owned()
            .map_err(DnsError::Fd)?;

        let names = Arc::new(DnsNames::on(
            ctx.peer_names.clone(),
            settings.config.name_cache_size,
            settings.config.name_ttl_grace,
        ));
        let engine = Arc::new(Mutex::new(Engine::new(
            settings.engine(),
            telemetry.clone(),
            names.clone(),
            owners,
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let cap = capture::Capture {
            settings: capture::CaptureSettings {
                rescan: settings.namespace_rescan,
                rcvbuf: settings.socket_buffer_bytes,
            },
            prog_fd,
            telemetry: telemetry.clone(),
            engine: engine.clone(),
            stop: stop.clone(),
            open: open.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("flowscope-dns".into())
            .spawn(move || cap.run())
            .map_err(DnsError::Thread)?;
        let rx = Self {
            engine,
            stop,
            thread: Some(thread),
            interval: settings.config.collection_interval,
            telemetry,
            open,
            owner_hooks: None,
            _ebpf: ebpf,
        };
        Ok(rx)
    }

    /// Inodes of the network namespaces being captured now.
    pub fn namespaces(&self) -> Vec<u32> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Which owner programs are attached: BTF-typed or classic
    /// tracepoint; None when owners come from /proc only.
    pub fn owner_hooks(&self) -> Option<crate::loader::Hooks> {
        self.owner_hooks
    }

    /// Shared handle on the engine (tests read its counters).
    pub fn engine(&self) -> Arc<Mutex<Engine>> {
        self.engine.clone()
    }

    /// Sends a batch of points every interval until `shutdown` turns true,
    /// then stops the capture, sends the last partial interval and returns.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<FlowBatch>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), DnsError> {
        let mut start = SystemTime::now();
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
            };
            if last {
                self.stop.store(true, Ordering::Relaxed);
                if let Some(t) = self.thread.take() {
                    tokio::task::spawn_blocking(move || t.join())
                        .await
                        .map_err(|_| DnsError::Panicked)?
                        .map_err(|_| DnsError::Panicked)?;
                }
            }
            let points = self
                .engine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish();
            let now = SystemTime::now();
            let batch = FlowBatch::of_points(unix_nanos(start), unix_nanos(now), points);
            start = now;
            let n = batch.points.len() as u64;
            if tx.send(batch).await.is_err() {
                // The pipeline is gone (shutting down): say what it held.
                self.telemetry.emit(EventsLost::new(
                    engine::SOURCE,
                    LossReason::PipelineClosed,
                    n,
                ));
                self.stop.store(true, Ordering::Relaxed);
                return Ok(());
            }
            if last {
                return Ok(());
            }
        }
    }
}

impl Drop for DnsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
