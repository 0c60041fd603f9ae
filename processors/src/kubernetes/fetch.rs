//! The background side of the `kubernetes` processor: one thread with its
//! own single-threaded tokio runtime, so the processor works whether or not
//! it is built inside the agent's runtime and never takes a pipeline's time.
//!
//! - the kubelet task reads `/pods` at start, every `refresh_interval`, and
//!   when a flow names a pod UID the last answer did not list (at most once
//!   per `min_refresh_interval`); a good answer replaces the snapshot
//!   whole, a failed one keeps the last good snapshot;
//! - one task per API collection (pods, Services, ReplicaSets) lists it
//!   (pages of 500) and watches from the list's resource version; a watch
//!   that ends is resumed from the last version seen (bookmarks included),
//!   a `410 Gone` relists, any failure relists after a backoff that doubles
//!   up to `max_backoff`.
//!
//! Every failure is counted once
//! (`flowscope.events.lost{flowscope.source=kubernetes.kubelet|kubernetes.api}`
//! with the reason of [`FetchError::reason`]) and logged as a warning the
//! first time it happens; the same failure again is logged at debug level
//! until the server answers again (one line then says so).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use flowscope_model::Telemetry;
use flowscope_model::internal_events::{EventsLost, EventsReceived, LossReason, Source};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::api::{Lines, ReplicaSet, Resource, Service, WatchEvent, parse_list, parse_watch_line};
use super::client::{Client, FetchError, ParseError};
use super::pods::{Pod, parse_pod_list};
use super::table::{Cluster, Full, LocalPods};

/// What the background side writes and the processor reads.
#[derive(Debug)]
pub struct Shared {
    /// The kubelet's last good answer.
    pub local: Mutex<Arc<LocalPods>>,
    /// The API server's objects as listed and watched.
    pub cluster: RwLock<Cluster>,
    /// A flow named a pod the snapshot does not know.
    pub refresh: Notify,
    /// Some kubelet answer was good since start.
    pub kubelet_answered: AtomicBool,
}

impl Shared {
    pub fn new(max_objects: usize) -> Self {
        Shared {
            local: Mutex::new(Arc::new(LocalPods::default())),
            cluster: RwLock::new(Cluster::new(max_objects)),
            refresh: Notify::new(),
            kubelet_answered: AtomicBool::new(false),
        }
    }
}

/// How to build one server's client.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub base: String,
    pub ca_file: std::path::PathBuf,
    pub insecure: bool,
    pub token_path: std::path::PathBuf,
    pub timeout: Duration,
}

impl Endpoint {
    fn client(&self) -> Result<Client, FetchError> {
        Client::new(
            &self.base,
            &self.ca_file,
            self.insecure,
            &self.token_path,
            self.timeout,
        )
    }
}

/// The background side's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kubelet: Endpoint,
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
    /// None: no API server (disabled, or no endpoint known).
    pub api: Option<Endpoint>,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// `api.max_objects`: also the most items one list keeps.
    pub max_objects: usize,
}

/// Counts failures and logs the first of a kind.
struct Reporter {
    source: Source,
    what: String,
    consequence: &'static str,
    telemetry: Telemetry,
    last: Mutex<Option<String>>,
}

impl Reporter {
    fn failed(&self, e: &FetchError) {
        self.telemetry
            .emit(EventsLost::new(self.source, e.reason(), 1));
        let msg = chain(e);
        // The same kind of failure (reason and status) is warned once: the
        // three API collections failing alike make one warning.
        let kind = format!("{}/{:?}", e.reason().as_str(), e.status());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(kind.as_str()) {
            tracing::debug!(source = self.source.as_str(), "{}: {msg}", self.what);
        } else {
            tracing::warn!(
                source = self.source.as_str(),
                "kubernetes processor: {} failed: {msg}; {}",
                self.what,
                self.consequence
            );
            *last = Some(kind);
        }
    }

    /// `n` objects arrived (a list's items, a watch's changes, the
    /// kubelet's pods): `flowscope.events.received`.
    fn received(&self, n: usize) {
        self.telemetry.emit(EventsReceived {
            source: self.source,
            count: n as u64,
        });
    }

    fn table_full(&self, n: u64) {
        self.telemetry
            .emit(EventsLost::new(self.source, LossReason::TableFull, n));
    }

    fn answered(&self) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.take().is_some() {
            tracing::info!(
                source = self.source.as_str(),
                "kubernetes processor: {} answers again",
                self.what
            );
        }
    }
}

/// An error with its sources, `a (b; c)`; a source whose text the message
/// already holds is left out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut causes: Vec<String> = Vec::new();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) && !causes.iter().any(|c| c.contains(&t)) {
            causes.push(t);
        }
        src = x.source();
    }
    if !causes.is_empty() {
        s.push_str(" (");
        s.push_str(&causes.join("; "));
        s.push(')');
    }
    s
}

/// Starts the background thread; it ends when `stop`'s sender is dropped.
pub fn spawn(
    settings: Settings,
    shared: Arc<Shared>,
    telemetry: Telemetry,
    mut stop: watch::Receiver<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("flowscope-k8s".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("kubernetes processor: no runtime for its client: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let kubelet = Reporter {
                    source: Source::KubernetesKubelet,
                    what: format!("kubelet {}/pods", settings.kubelet.base),
                    consequence: "local pods are named from its last good answer",
                    telemetry: telemetry.clone(),
                    last: Mutex::new(None),
                };
                let work = async {
                    match &settings.api {
                        Some(api) => {
                            let reporter = Reporter {
                                source: Source::KubernetesApi,
                                what: format!("API server {}", api.base),
                                consequence: "peer pods and Services are not named (nor Deployments from their ReplicaSets) until it answers; local pods are still named from the kubelet",
                                telemetry: telemetry.clone(),
                                last: Mutex::new(None),
                            };
                            tokio::join!(
                                kubelet_loop(&settings, &shared, &kubelet),
                                watch_loop::<Pod>(&settings, api, &shared, &reporter),
                                watch_loop::<Service>(&settings, api, &shared, &reporter),
                                watch_loop::<ReplicaSet>(&settings, api, &shared, &reporter),
                            );
                        }
                        None => kubelet_loop(&settings, &shared, &kubelet).await,
                    }
                };
                tokio::select! {
                    _ = stop.changed() => {}
                    () = work => {}
                }
            });
        })
        .map(|_| ())
}

async fn kubelet_loop(settings: &Settings, shared: &Shared, reporter: &Reporter) {
    let mut client: Option<Client> = None;
    let mut last: Option<Instant> = None;
    loop {
        if let Some(t) = last {
            tokio::select! {
                () = tokio::time::sleep_until(t + settings.refresh_interval) => {}
                () = shared.refresh.notified() => {
                    tokio::time::sleep_until(t + settings.min_refresh_interval).await;
                }
            }
        }
        last = Some(Instant::now());
        if client.is_none() {
            match settings.kubelet.client() {
                Ok(c) => client = Some(c),
                Err(e) => {
                    reporter.failed(&e);
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        let got = c.get("/pods").await.and_then(|body| {
            parse_pod_list(&body).map_err(|e| FetchError::Parse {
                url: format!("{}/pods", c.base()),
                source: ParseError::Pods(e),
            })
        });
        match got {
            Ok(pods) => {
                tracing::debug!(pods = pods.len(), "kubelet pods read");
                reporter.received(pods.len());
                *shared.local.lock().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(LocalPods::new(pods));
                shared.kubelet_answered.store(true, Ordering::Relaxed);
                reporter.answered();
            }
            Err(e) => reporter.failed(&e),
        }
    }
}

/// How a watched kind goes into the [`Cluster`].
trait Apply: Resource {
    fn upsert(c: &mut Cluster, x: Self) -> Result<(), Full>;
    fn delete(c: &mut Cluster, x: &Self);
    fn clear(c: &mut Cluster);
}

impl Apply for Pod {
    fn upsert(c: &mut Cluster, x: Self) -> Result<(), Full> {
        c.upsert_pod(x)
    }
    fn delete(c: &mut Cluster, x: &Self) {
        c.delete_pod(&x.uid);
    }
    fn clear(c: &mut Cluster) {
        c.clear_pods();
    }
}

impl Apply for Service {
    fn upsert(c: &mut Cluster, x: Self) -> Result<(), Full> {
        c.upsert_service(x)
    }
    fn delete(c: &mut Cluster, x: &Self) {
        c.delete_service(&x.uid);
    }
    fn clear(c: &mut Cluster) {
        c.clear_services();
    }
}

impl Apply for ReplicaSet {
    fn upsert(c: &mut Cluster, x: Self) -> Result<(), Full> {
        c.upsert_replicaset(x)
    }
    fn delete(c: &mut Cluster, x: &Self) {
        c.delete_replicaset(x);
    }
    fn clear(c: &mut Cluster) {
        c.clear_replicasets();
    }
}

/// A watch line longer than this is not a Kubernetes object we want.
const MAX_LINE: usize = 16 << 20;
/// A watch asks the server to end it after this long (then it resumes).
const WATCH_SECONDS: u64 = 300;

/// Percent-encodes a query value (a `continue` token, a version).
fn query_value(s: &str) -> String {
    flowscope_model::percent::query_value(s)
}

async fn watch_loop<T: Apply>(
    settings: &Settings,
    api: &Endpoint,
    shared: &Shared,
    reporter: &Reporter,
) {
    let mut delay = settings.backoff;
    let mut client: Option<Client> = None;
    let mut first = true;
    // A 410 relists at once, but not twice within 10 s: a server that
    // answers 410 to every watch must not make this loop list in a spin.
    let mut last_gone: Option<Instant> = None;
    let mut relist_now = move || {
        let now = Instant::now();
        let quick = last_gone.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10));
        last_gone = Some(now);
        quick
    };
    'relist: loop {
        if !first {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(settings.max_backoff);
        }
        first = false;
        if client.is_none() {
            match api.client() {
                Ok(c) => client = Some(c),
                Err(e) => {
                    reporter.failed(&e);
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        // The whole list, page by page; past the bound an item is only
        // counted, so a huge list cannot grow memory before it is applied.
        let mut items = Vec::new();
        let mut over: u64 = 0;
        let mut next: Option<String> = None;
        let mut version = loop {
            let mut q = format!("{}?limit=500", T::PATH);
            if let Some(n) = &next {
                q.push_str("&continue=");
                q.push_str(&query_value(n));
            }
            let page = c.get(&q).await.and_then(|body| {
                parse_list::<T>(&body).map_err(|e| FetchError::Parse {
                    url: format!("{}{}", c.base(), T::PATH),
                    source: ParseError::Api(e),
                })
            });
            match page {
                Ok(p) => {
                    let room = settings.max_objects.saturating_sub(items.len());
                    over += p.items.len().saturating_sub(room) as u64;
                    items.extend(p.items.into_iter().take(room));
                    match p.next {
                        Some(n) => next = Some(n),
                        None => break p.resource_version,
                    }
                }
                // The `continue` token expired between two pages: start
                // the list over (after the backoff, so a server that keeps
                // doing it is not hammered); that is no failure.
                Err(e) if e.status() == Some(410) && next.is_some() => {
                    tracing::debug!(kind = T::LIST, "continue token expired: listing again");
                    continue 'relist;
                }
                Err(e) => {
                    reporter.failed(&e);
                    continue 'relist;
                }
            }
        };
        {
            let mut cl = shared.cluster.write().unwrap_or_else(|p| p.into_inner());
            T::clear(&mut cl);
            let mut full = over;
            reporter.received(items.len() + over as usize);
            for x in items {
                if T::upsert(&mut cl, x).is_err() {
                    full += 1;
                }
            }
            reporter.table_full(full);
        }
        tracing::debug!(kind = T::LIST, version = %version, "listed");
        reporter.answered();
        delay = settings.backoff;
        // Watch from the list's version until something goes wrong.
        loop {
            let q = format!(
                "{}?watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={}",
                T::PATH,
                query_value(&version)
            );
            let mut stream = match c.stream(&q).await {
                Ok(s) => s,
                Err(e) if e.status() == Some(410) => {
                    first = relist_now();
                    continue 'relist;
                }
                Err(e) => {
                    reporter.failed(&e);
                    continue 'relist;
                }
            };
            let mut lines = Lines::default();
            let idle = Duration::from_secs(WATCH_SECONDS + 30);
            let started = Instant::now();
            loop {
                let chunk = match tokio::time::timeout(idle, stream.chunk()).await {
                    // Silent past the server's own end: start a new watch.
                    Err(_) | Ok(None) => {
                        // A server (or proxy) that ends watches at once
                        // must not make this loop spin: back off as after
                        // a failure, without counting one.
                        if started.elapsed() < Duration::from_secs(1) {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(settings.max_backoff);
                        } else {
                            delay = settings.backoff;
                        }
                        break;
                    }
                    Ok(Some(Err(why))) => {
                        reporter.failed(&FetchError::Unreachable {
                            url: format!("{}{}", c.base(), T::PATH),
                            why,
                        });
                        continue 'relist;
                    }
                    Ok(Some(Ok(b))) => b,
                };
                lines.push(&chunk);
                while let Some(line) = lines.next_line() {
                    match parse_watch_line::<T>(&line) {
                        Ok((event, v)) => {
                            if !v.is_empty() {
                                version = v;
                            }
                            if matches!(
                                event,
                                WatchEvent::Added(_)
                                    | WatchEvent::Modified(_)
                                    | WatchEvent::Deleted(_)
                            ) {
                                reporter.received(1);
                            }
                            let mut cl = shared.cluster.write().unwrap_or_else(|p| p.into_inner());
                            match event {
                                WatchEvent::Added(x) | WatchEvent::Modified(x) => {
                                    if T::upsert(&mut cl, x).is_err() {
                                        reporter.table_full(1);
                                    }
                                }
                                WatchEvent::Deleted(x) => T::delete(&mut cl, &x),
                                WatchEvent::Bookmark => {}
                                WatchEvent::Error(s) if s.is_gone() => {
                                    tracing::debug!(
                                        kind = T::LIST,
                                        "watch expired (410): listing again"
                                    );
                                    first = relist_now();
                                    continue 'relist;
                                }
                                WatchEvent::Error(s) => {
                                    drop(cl);
                                    reporter.failed(&FetchError::Status {
                                        url: format!("{}{}", c.base(), T::PATH),
                                        status: s.code,
                                        message: s.message,
                                    });
                                    continue 'relist;
                                }
                            }
                        }
                        Err(e) => {
                            reporter.failed(&FetchError::Parse {
                                url: format!("{}{}", c.base(), T::PATH),
                                source: ParseError::Api(e),
                            });
                            continue 'relist;
                        }
                    }
                }
                if lines.pending() > MAX_LINE {
                    reporter.failed(&FetchError::Unreachable {
                        url: format!("{}{}", c.base(), T::PATH),
                        why: format!("a watch line longer than {MAX_LINE} bytes"),
                    });
                    continue 'relist;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("eyJ2Ijo=+/x"), "eyJ2Ijo%3D%2B%2Fx");
        assert_eq!(query_value("52001"), "52001");
    }
}
