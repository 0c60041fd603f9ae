//! Network Path: scheduled and dynamic traceroute tests.
//!
//! Scheduled tests run every `interval` to the destinations the config
//! names. Dynamic tests are created from the client flows the `ebpf`
//! receiver observed (handed over through the context's
//! [`flowscope_model::destinations::Destinations`] service),
//! and probe from the client's own network namespace. Every run emits the
//! contract's `flowscope.path.*` points as one batch. See docs/path.md.
//!
//! Probing runs on blocking threads ([`netns::run_in`]); the async side
//! only schedules, applies limits and turns results into points.

pub mod dynamic;
pub mod hopnames;
pub mod netns;
pub mod points;
pub mod prober;
pub mod route;
pub mod settings;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flowscope_model::destinations::{DestinationSource, ObservedDestination};
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::names::path as names;
use flowscope_model::{Attrs, Context, FlowBatch, Telemetry};
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::unix_nanos;
use dynamic::{Key, Observed, Table, TableSettings};
use netns::{Netns, NetnsError};
use points::{HopNameMap, TestLabels};
use prober::{Prober, Protocol, TraceRequest, TraceResult};
use route::RouteTracker;

/// Self-telemetry source of the dynamic tests' limits.
pub const SOURCE: Source = Source::PathDynamic;

/// How each run probes.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSettings {
    pub max_ttl: u8,
    pub timeout: Duration,
    pub queries: u32,
    pub e2e_probes: u32,
}

impl ProbeSettings {
    /// The longest a healthy run can take: every round waits at most
    /// `timeout` (plus trippy's short grace), with slack for a loaded host.
    pub fn deadline(&self) -> Duration {
        let rounds = self.queries + self.e2e_probes;
        (self.timeout + Duration::from_millis(100)) * rounds + Duration::from_secs(10)
    }
}

/// One scheduled test.
#[derive(Clone, Debug)]
pub struct ScheduledTest {
    /// A host name (resolved at each run) or an IP address.
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    pub interval: Duration,
    pub probe: ProbeSettings,
    pub tags: Vec<(String, String)>,
    pub netns: Option<PathBuf>,
    /// A TLS check after each run (`tls: true`, TCP tests only).
    pub tls: Option<tls::TlsCheck>,
}

/// Dynamic tests' settings.
#[derive(Clone, Debug)]
pub struct DynamicSettings {
    pub table: TableSettings,
    pub workers: usize,
    pub probe: ProbeSettings,
}

#[derive(Clone, Debug)]
pub struct PathSettings {
    pub tests: Vec<ScheduledTest>,
    pub dynamic: Option<DynamicSettings>,
    /// Resource of scheduled tests' points (the host).
    pub resource: Arc<Attrs>,
    /// Histogram bounds (seconds) of `flowscope.path.rtt` and `.hop.rtt`.
    pub rtt_bounds: Arc<[f64]>,
    /// Ask the reverse DNS name of each hop (`resolve_hops`).
    pub resolve_hops: bool,
    /// A MaxMind / DB-IP ASN `.mmdb` naming each hop's AS.
    pub asn_database: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum PathError {
    #[error(
        "the path receiver needs CAP_NET_RAW (raw sockets to send probes and read ICMP \
         answers): run the agent as root or grant it CAP_NET_RAW \
         (setcap cap_net_raw+ep, or the container's capabilities)"
    )]
    NoNetRaw,
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("resolving {host}: no address")]
    NoAddress { host: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    HopNames(#[from] hopnames::HopNameError),
    #[error(transparent)]
    Probe(#[from] prober::ProbeError),
    #[error("the run to {target} did not finish within {deadline:?}")]
    Stuck { target: IpAddr, deadline: Duration },
    /// The destination is one of the origin namespace's own addresses.
    #[error("{target} is an address of the probing namespace itself")]
    Local { target: IpAddr },
}

/// Resolves `host` (a name or an IP literal) to its first address.
pub async fn resolve(host: &str) -> Result<IpAddr, PathError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs =
        tokio::net::lookup_host((host, 0))
            .await
            .map_err(|source| PathError::Resolve {
                host: host.to_string(),
                source,
            })?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| PathError::NoAddress {
            host: host.to_string(),
        })
}

/// Runs one traceroute from `netns` on a dedicated thread, bounded by the
/// settings' deadline. With `skip_local`, a target that is one of the
/// namespace's own addresses is not probed ([`PathError::Local`]).
pub async fn run_once(
    prober: Arc<dyn Prober>,
    netns: &Netns,
    req: TraceRequest,
    probe: &ProbeSettings,
    skip_local: bool,
) -> Result<TraceResult, PathError> {
    run_named(prober, netns, req, probe, skip_local, None)
        .await
        .map(|(r, _)| r)
}

/// [`run_once`], then the hops named by `namer` on the same thread, in
/// the same namespace (their PTR lookups use that namespace's resolver).
pub async fn run_named(
    prober: Arc<dyn Prober>,
    netns: &Netns,
    req: TraceRequest,
    probe: &ProbeSettings,
    skip_local: bool,
    namer: Option<Arc<hopnames::HopNamer>>,
) -> Result<(TraceResult, HopNameMap), PathError> {
    let target = req.target;
    let mut deadline = probe.deadline();
    if namer.is_some() {
        deadline += hopnames::PTR_WAIT;
    }
    let ns = netns.clone();
    let job = tokio::task::spawn_blocking(move || {
        // A file check: here on the blocking thread, and only when hops
        // are named.
        let conf = namer.as_ref().map(|_| hopnames::resolv_conf(&ns));
        netns::run_in(&ns, move || {
            if skip_local && netns::local_addrs().contains(&req.target) {
                return Err(PathError::Local { target: req.target });
            }
            let r = prober.trace(&req).map_err(PathError::from)?;
            let names = match (&namer, &conf) {
                (Some(n), Some(conf)) => {
                    let ips: Vec<IpAddr> = r.hops.iter().filter_map(|h| h.address).collect();
                    n.name(conf, &ips)
                }
                _ => HopNameMap::new(),
            };
            Ok((r, names))
        })
    });
    match tokio::time::timeout(deadline, job).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => Err(PathError::Netns(NetnsError::Panicked)),
        Err(_) => Err(PathError::Stuck { target, deadline }),
    }
}

fn request(target: IpAddr, port: u16, protocol: Protocol, p: &ProbeSettings) -> TraceRequest {
    TraceRequest {
        target,
        port,
        protocol,
        max_ttl: p.max_ttl,
        timeout: p.timeout,
        queries: p.queries,
        e2e_probes: p.e2e_probes,
    }
}

/// The started `path` receiver.
pub struct PathReceiver {
    settings: PathSettings,
    namer: Option<Arc<hopnames::HopNamer>>,
    telemetry: Telemetry,
    prober: Arc<dyn Prober>,
    destinations: Option<Arc<DestinationSource>>,
}

impl PathReceiver {
    /// Checks what the receiver needs (CAP_NET_RAW) and, when dynamic tests
    /// are on, subscribes to the destinations the flow receiver observes
    /// (`ctx.destinations`). Whether a flow receiver runs in the same agent
    /// is checked before any receiver starts
    /// ([`crate::component::check_supplies`]).
    pub fn start(
        settings: PathSettings,
        ctx: &Context,
        prober: Arc<dyn Prober>,
    ) -> Result<Self, PathError> {
        if !netns::has_net_raw() {
            return Err(PathError::NoNetRaw);
        }
        // Room for a few intervals' worth of the table's destinations.
        let destinations = settings.dynamic.as_ref().map(|d| {
            ctx.destinations
                .subscribe((d.table.max_destinations * 4).clamp(1024, 65_536))
        });
        let namer =
            hopnames::HopNamer::new(settings.resolve_hops, settings.asn_database.as_deref())?;
        let namer = namer.enabled().then(|| Arc::new(namer));
        Ok(PathReceiver {
            settings,
            namer,
            telemetry: ctx.telemetry.clone(),
            prober,
            destinations,
        })
    }

    /// Runs every test until `shutdown` turns true. Each run sends one
    /// batch of points.
    pub async fn run(self, tx: mpsc::Sender<FlowBatch>, shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        for test in self.settings.tests.clone() {
            tasks.spawn(scheduled(
                test,
                self.settings.clone(),
                self.namer.clone(),
                self.prober.clone(),
                tx.clone(),
                shutdown.clone(),
            ));
        }
        if let (Some(d), Some(source)) = (self.settings.dynamic.clone(), self.destinations.clone())
        {
            tasks.spawn(dynamic_loop(
                d,
                source,
                RunShared {
                    bounds: self.settings.rtt_bounds.clone(),
                    namer: self.namer.clone(),
                },
                self.prober.clone(),
                self.telemetry.clone(),
                tx.clone(),
                shutdown.clone(),
            ));
        }
        drop(tx);
        while tasks.join_next().await.is_some() {}
    }
}

async fn send(
    tx: &mpsc::Sender<FlowBatch>,
    start: SystemTime,
    points: Vec<flowscope_model::Point>,
) {
    let batch = FlowBatch::of_points(unix_nanos(start), unix_nanos(SystemTime::now()), points);
    let _ = tx.send(batch).await;
}

async fn scheduled(
    test: ScheduledTest,
    settings: PathSettings,
    namer: Option<Arc<hopnames::HopNamer>>,
    prober: Arc<dyn Prober>,
    tx: mpsc::Sender<FlowBatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let labels = TestLabels {
        server_address: test.host.clone(),
        server_port: (test.protocol != Protocol::Icmp).then_some(test.port),
        protocol: test.protocol,
        test: names::SCHEDULED,
        tags: test.tags.clone(),
    };
    let netns = test.netns.clone().map_or(Netns::Own, Netns::Path);
    let mut tick = tokio::time::interval(test.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut route = RouteTracker::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let start = SystemTime::now();
        // Resolved once per run: the trace and the TLS check go to the
        // same address.
        let mut target = None;
        let run = async {
            let ip = resolve(&test.host).await?;
            target = Some(ip);
            run_named(
                prober.clone(),
                &netns,
                request(ip, test.port, test.protocol, &test.probe),
                &test.probe,
                false,
                namer.clone(),
            )
            .await
        };
        let result = tokio::select! {
            r = run => r,
            _ = shutdown.changed() => return,
        };
        let (result, names) = match result {
            Ok((r, names)) => (Some(r), names),
            Err(e) => {
                warn!(host = %test.host, "path test failed: {e:#}");
                (None, HopNameMap::new())
            }
        };
        let changes = route.observe(result.as_ref());
        let mut pts = points::run_points(
            &settings.resource,
            &labels,
            result.as_ref(),
            changes,
            &names,
            &settings.rtt_bounds,
        );
        if let Some(check) = &test.tls {
            let outcome = tokio::select! {
                o = tls_check(check, target, test.port, &netns, test.probe.timeout) => o,
                _ = shutdown.changed() => return,
            };
            pts.extend(points::tls_points(
                &settings.resource,
                &labels,
                &outcome,
                SystemTime::now(),
            ));
        }
        send(&tx, start, pts).await;
    }
}

/// A test's TLS check, on a blocking thread in the test's namespace; the
/// connect and each handshake read are bounded by `timeout`, the whole by
/// a few of them.
async fn tls_check(
    check: &tls::TlsCheck,
    target: Option<IpAddr>,
    port: u16,
    netns: &Netns,
    timeout: Duration,
) -> tls::TlsOutcome {
    let failed = |e: &'static str| tls::TlsOutcome {
        certificate: None,
        error: Some(e),
    };
    // The host did not resolve: nothing to connect to.
    let Some(ip) = target else {
        return failed(names::TLS_ERROR_CONNECT);
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let (check, ns) = (check.clone(), netns.clone());
    let job =
        tokio::task::spawn_blocking(move || netns::run_in(&ns, move || check.run(addr, timeout)));
    match tokio::time::timeout(timeout * 4 + Duration::from_secs(5), job).await {
        Ok(Ok(Ok(outcome))) => outcome,
        Ok(_) => failed(names::TLS_ERROR_HANDSHAKE),
        Err(_) => failed(names::TLS_ERROR_TIMEOUT),
    }
}

/// Opens the way into an observed client's namespace: `/proc/PID/ns/net`
/// when it still names the flow's namespace (a pid can be reused), else a
/// bound namespace file with the same inode, or the agent's own when the
/// flow was seen there.
fn open_origin(
    d: &ObservedDestination,
    own: u64,
    cache: &mut HashMap<u32, Netns>,
) -> Option<Netns> {
    if u64::from(d.netns) == own {
        return Some(Netns::Own);
    }
    if let Some(n) = cache.get(&d.netns) {
        return Some(n.clone());
    }
    let by_pid = (d.pid != 0)
        .then(|| netns::open_netns(std::path::Path::new(&format!("/proc/{}/ns/net", d.pid))).ok())
        .flatten()
        .filter(|(_, ino)| *ino == u64::from(d.netns))
        .map(|(f, _)| f);
    // A client that already exited: its namespace may still be bound
    // where `ip netns` and container runtimes keep them.
    let file = by_pid.or_else(|| netns::find_bound(u64::from(d.netns)))?;
    let n = Netns::Open(Arc::new(file));
    cache.insert(d.netns, n.clone());
    Some(n)
}

/// What every run of a receiver shares: the RTT histograms' bounds and the
/// hop namer (None when nothing is named).
#[derive(Clone)]
struct RunShared {
    bounds: Arc<[f64]>,
    namer: Option<Arc<hopnames::HopNamer>>,
}

async fn dynamic_loop(
    settings: DynamicSettings,
    source: Arc<DestinationSource>,
    shared: RunShared,
    prober: Arc<dyn Prober>,
    telemetry: Telemetry,
    tx: mpsc::Sender<FlowBatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let own_ns = netns::open_netns(std::path::Path::new("/proc/self/ns/net"))
        .map(|(_, ino)| ino)
        .unwrap_or(0);
    let own_pid = std::process::id();
    let mut table = Table::new(settings.table.clone());
    let mut ns_cache: HashMap<u32, Netns> = HashMap::new();
    let workers = Arc::new(Semaphore::new(settings.workers));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Key, bool)>();
    let mut queue_dropped = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((key, local)) = done_rx.recv() => {
                table.finish(&key, local);
                continue;
            }
            _ = shutdown.changed() => break,
        }
        let now = Instant::now();
        let dropped = source.dropped();
        if dropped > queue_dropped {
            telemetry.emit(EventsLost::new(
                SOURCE,
                LossReason::QueueFull,
                dropped - queue_dropped,
            ));
            queue_dropped = dropped;
        }
        for d in source.drain() {
            // The agent's own probes (TCP tests are real connects) are not
            // destinations of their own.
            if d.pid == own_pid {
                continue;
            }
            match table.observe(&d, now, || open_origin(&d, own_ns, &mut ns_cache)) {
                Ok(Observed::New) => debug!(server = %d.server, "dynamic path test added"),
                Ok(Observed::Refreshed | Observed::Excluded) => {}
                Ok(Observed::RateLimited) => {
                    telemetry.emit(EventsLost::new(SOURCE, LossReason::RateLimited, 1))
                }
                Ok(Observed::TableFull) => {
                    telemetry.emit(EventsLost::new(SOURCE, LossReason::TableFull, 1))
                }
                Err(dynamic::NetnsGone) => {
                    telemetry.emit(EventsLost::new(SOURCE, LossReason::NetnsGone, 1))
                }
            }
        }
        table.expire(now);
        // Namespaces no destination uses any more are closed.
        ns_cache.retain(|_, n| match n {
            Netns::Open(f) => Arc::strong_count(f) > 1,
            _ => true,
        });
        for key in table.due(now) {
            let Ok(permit) = workers.clone().try_acquire_owned() else {
                if table.postpone(&key) {
                    telemetry.emit(EventsLost::new(SOURCE, LossReason::WorkersBusy, 1));
                }
                continue;
            };
            let Some(entry) = table.get(&key).cloned() else {
                continue;
            };
            table.start(&key, now);
            let labels = TestLabels {
                server_address: key.addr.to_string(),
                server_port: (key.protocol != Protocol::Icmp).then_some(key.port),
                protocol: key.protocol,
                test: names::DYNAMIC,
                tags: Vec::new(),
            };
            let req = request(key.addr, key.port, key.protocol, &settings.probe);
            let probe = settings.probe.clone();
            let prober = prober.clone();
            let tx = tx.clone();
            let done = done_tx.clone();
            let RunShared { bounds, namer } = shared.clone();
            running.spawn(async move {
                let start = SystemTime::now();
                let r = run_named(prober, &entry.netns, req, &probe, true, namer).await;
                drop(permit);
                let local = matches!(r, Err(PathError::Local { .. }));
                if !local {
                    let (result, names) = match r {
                        Ok((r, names)) => (Some(r), names),
                        Err(e) => {
                            warn!(server = %key.addr, "dynamic path test failed: {e:#}");
                            (None, HopNameMap::new())
                        }
                    };
                    let changes = entry
                        .route
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .observe(result.as_ref());
                    let pts = points::run_points(
                        &entry.resource,
                        &labels,
                        result.as_ref(),
                        changes,
                        &names,
                        &bounds,
                    );
                    send(&tx, start, pts).await;
                }
                let _ = done.send((key, local));
            });
        }
        while running.try_join_next().is_some() {}
    }
    running.abort_all();
}
