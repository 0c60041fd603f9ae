//! flowscope exporters: the seam between the pipeline and the backends.
//!
//! Every exporter is one spawned task fed by a bounded queue ([`queue`]).
//! [`build`] starts it and returns an [`ExporterHandle`]; the pipeline calls
//! [`ExporterHandle::submit`], which never waits on the backend (when the
//! queue is full the oldest batch is dropped and counted). On shutdown the
//! task exports what is still queued, within a time bound, then stops.
//!
//! Accounting: for every batch the task counts each point exactly once, as
//! `flowscope.exporter.sent{exporter}` or as
//! `flowscope.exporter.failed{exporter, error.type}`, so that
//! points submitted = sent + failed once the queue is drained (a
//! persistent queue's batches left on disk at shutdown are counted when a
//! later run delivers them).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowscope_model::internal_events::{ExporterFailed, ExporterRetried, ExporterSent, ServerKind};
use flowscope_model::names::value;
use flowscope_model::telemetry::Component;
use flowscope_model::{Context, MetricBatch, Telemetry};
use flowscope_otel_config::exporters::{HttpEncoding, SendingQueueConfig};
use flowscope_otel_config::{ComponentId, ExporterConfig};
use tokio::task::JoinHandle;

pub mod console;
pub mod encode;
pub mod file;
pub mod grpc;
pub mod http;
pub mod json;
pub mod otlp;
pub mod persist;
pub mod prometheus;
mod queue;
pub mod remote_write;
pub mod server;
pub mod settings;
pub mod temporality;
pub mod tls;
pub mod ui;

pub use console::render;
pub use encode::{Encoded, Temporality, encode};
pub use queue::{QUEUE_FULL, SHUTDOWN};

use queue::{Item, Persistence, Queue};

/// Batches console/file/prometheus hold before dropping the oldest.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;
/// How long [`ExporterHandle::shutdown`] waits for the queue to drain.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an exporter could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("exporter `{id}`")]
    File {
        id: String,
        #[source]
        source: file::FileError,
    },
    #[error("exporter `{id}`")]
    Settings {
        id: String,
        #[source]
        source: settings::SettingsError,
    },
    #[error("exporter `{id}`")]
    Grpc {
        id: String,
        #[source]
        source: grpc::GrpcError,
    },
    #[error("exporter `{id}`")]
    Http {
        id: String,
        #[source]
        source: http::HttpError,
    },
    #[error("exporter `{id}`: sending_queue.storage")]
    Storage {
        id: String,
        #[source]
        source: persist::StoreError,
    },
    #[error("exporter `{id}`: listening on `{endpoint}`")]
    Listen {
        id: String,
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exporter `{id}`")]
    Ui {
        id: String,
        #[source]
        source: ui::UiError,
    },
    #[error("exporter `{id}`: type `{kind}` is not supported by this build")]
    Unsupported { id: String, kind: &'static str },
    #[error("exporter `{id}`: build() must be called inside a tokio runtime")]
    NoRuntime { id: String },
}

/// What one export did with a batch's points.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Points the backend accepted.
    pub sent: u64,
    /// Points not delivered, by `error.type`.
    pub failed: Vec<(String, u64)>,
    /// The last error, for the log and `/healthz`.
    pub error: Option<String>,
    /// Tries repeated after a retryable error.
    pub retries: u64,
    /// The same by the `error.type` that called for them.
    pub retried: Vec<(String, u64)>,
}

impl Outcome {
    pub(crate) fn sent(n: u64) -> Self {
        Self {
            sent: n,
            ..Default::default()
        }
    }

    pub(crate) fn failed(n: u64, error_type: &str, message: String) -> Self {
        let mut o = Self::default();
        o.fail(n, error_type, message);
        o
    }

    /// Counts one repeated try after an error of type `error_type`.
    pub(crate) fn retry(&mut self, error_type: &str) {
        self.retries += 1;
        match self.retried.iter_mut().find(|(t, _)| t == error_type) {
            Some((_, c)) => *c += 1,
            None => self.retried.push((error_type.to_string(), 1)),
        }
    }

    /// Adds `n` failed points (no-op for 0).
    pub(crate) fn fail(&mut self, n: u64, error_type: &str, message: String) {
        if n == 0 {
            return;
        }
        match self.failed.iter_mut().find(|(t, _)| t == error_type) {
            Some((_, c)) => *c += n,
            None => self.failed.push((error_type.to_string(), n)),
        }
        self.error = Some(message);
    }
}

/// Runs `f` with the writer kept in `slot` on the blocking pool (a slow or
/// stuck disk or pipe holds that thread, never an async worker), then puts
/// the writer back. `Err` says why there was no writer: an earlier write
/// panicked, or this one did (the writer is then gone).
pub(crate) async fn with_writer_blocking<W, R>(
    slot: &mut Option<W>,
    f: impl FnOnce(&mut W) -> R + Send + 'static,
) -> Result<R, String>
where
    W: Send + 'static,
    R: Send + 'static,
{
    let Some(mut w) = slot.take() else {
        return Err("the writer was lost when an earlier write panicked".into());
    };
    let (w, r) = tokio::task::spawn_blocking(move || {
        let r = f(&mut w);
        (w, r)
    })
    .await
    .map_err(|e| format!("the write panicked: {e}"))?;
    *slot = Some(w);
    Ok(r)
}

/// One exporter's delivery: encode, send, retry as it sees fit, and say
/// what became of every point.
pub(crate) trait Sink: Send + 'static {
    type Item: Item;
    fn export(&mut self, item: &Self::Item) -> impl Future<Output = Outcome> + Send;
}

/// Whether an exporter is delivering, for `/healthz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The exporter's id, e.g. `otlp/gateway`.
    pub exporter: String,
    /// False once the last batch had undelivered points (for OTLP exporters,
    /// already at a failed try that is being retried); true again after a
    /// batch is delivered whole. True before the first batch.
    pub delivering: bool,
    /// Batches in a row with undelivered points.
    pub consecutive_failures: u64,
    /// Unix time (ns) of the last fully delivered batch, 0 if none.
    pub last_success_unix_nanos: u64,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
    /// Batches waiting in the queue.
    pub queued: u64,
}

/// Turns a pipeline batch into the queue's item (None: nothing to send).
type PrepareFn<T> = Box<dyn Fn(Arc<MetricBatch>) -> Option<Arc<T>> + Send + Sync>;

/// An exporter's health, shared by its task and (for retrying sinks) its
/// sink, which reports a failing backend before the batch gives up.
pub(crate) type HealthCell = Arc<Mutex<Health>>;

fn new_health(name: &str) -> HealthCell {
    Arc::new(Mutex::new(Health {
        exporter: name.to_string(),
        delivering: true,
        ..Default::default()
    }))
}

struct Shared<T> {
    queue: Queue<T>,
    prepare: PrepareFn<T>,
    health: HealthCell,
    shutdown_timeout: Duration,
}

impl<T> Shared<T> {
    fn record(&self, out: &Outcome) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if out.failed.is_empty() {
            h.delivering = true;
            h.consecutive_failures = 0;
            h.last_success_unix_nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        } else {
            h.delivering = false;
            h.consecutive_failures += 1;
            h.last_error.clone_from(&out.error);
        }
    }
}

/// The type-erased face of a running exporter.
trait Intake: Send + Sync {
    fn submit(&self, batch: Arc<MetricBatch>);
    fn name(&self) -> &str;
    fn health(&self) -> Health;
    fn close(&self);
    fn abandon(&self) -> (u64, usize);
    fn shutdown_timeout(&self) -> Duration;
}

impl<T: Item> Intake for Shared<T> {
    fn submit(&self, batch: Arc<MetricBatch>) {
        if let Some(item) = (self.prepare)(batch) {
            self.queue.push(item);
        }
    }
    fn name(&self) -> &str {
        self.queue.component().id()
    }
    fn health(&self) -> Health {
        let mut h = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        h.queued = self.queue.len() as u64;
        h
    }
    fn close(&self) {
        self.queue.close();
    }
    fn abandon(&self) -> (u64, usize) {
        self.queue.abandon()
    }
    fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }
}

/// The pipeline's handle on one running exporter. Cheap to clone; every
/// clone feeds the same queue.
#[derive(Clone)]
pub struct ExporterHandle {
    shared: Arc<dyn Intake>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Tasks that live as long as the exporter (the Prometheus listener).
    extra: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ExporterHandle {
    /// Queues a batch for export. Never waits on the backend: when the
    /// queue is full the oldest batch is dropped and its points counted as
    /// `flowscope.exporter.failed{error.type="queue_full"}`; after shutdown
    /// the batch is counted with `error.type="shutdown"`. OTLP exporters
    /// encode here; with a persistent queue the batch is on disk when this
    /// returns.
    pub fn submit(&self, batch: Arc<MetricBatch>) {
        self.shared.submit(batch);
    }

    /// The exporter's id as configured (`file`, `otlp/gateway`).
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// Whether the exporter is delivering.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Stops accepting batches, lets the task export what is queued, and
    /// waits for it at most the shutdown bound (5 s). What is still queued
    /// or in flight after that is counted as `failed{error.type="shutdown"}`
    /// (batches in a persistent queue stay on disk for the next start).
    pub fn shutdown(self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let extra: Vec<_> =
            std::mem::take(&mut *self.extra.lock().unwrap_or_else(|e| e.into_inner()));
        async move {
            shared.close();
            for t in extra {
                t.abort();
            }
            let Some(mut task) = task else { return };
            let bound = shared.shutdown_timeout();
            if tokio::time::timeout(bound, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
                let (points, kept) = shared.abandon();
                tracing::warn!(
                    exporter = %shared.name(),
                    points,
                    kept_on_disk = kept,
                    "exporter did not drain its queue in {bound:?}; dropped the rest"
                );
            }
        }
    }
}

/// Starts the exporter `id` configured by `config`; what it shares with the
/// rest of the agent (self-telemetry) comes from `ctx`. Must be called
/// inside a tokio runtime (it spawns the exporter's task). OTLP exporters
/// read the `OTEL_EXPORTER_OTLP_*` variables of the process for what the
/// config leaves unset.
pub fn build(
    id: &ComponentId,
    config: &ExporterConfig,
    ctx: &Context,
) -> Result<ExporterHandle, BuildError> {
    build_with_env(id, config, ctx, &flowscope_model::env::process)
}

/// Checks the exporter `id` as [`build`] would, without starting it: the
/// OTLP settings resolved with the `OTEL_EXPORTER_OTLP_*` variables of the
/// process (a bad value, or `OTEL_EXPORTER_OTLP_PROTOCOL` asking for the
/// other transport, is an error), the TLS material read and parsed, the
/// headers and endpoint turned into what the transport sends. What the
/// configuration alone decides was checked when it loaded. Nothing is
/// bound, created or connected, and no runtime is needed: this is what
/// `flowscope validate` adds to loading.
pub fn check(id: &ComponentId, config: &ExporterConfig) -> Result<(), BuildError> {
    check_with_env(id, config, &flowscope_model::env::process)
}

/// As [`check`], with `env` in place of the process environment.
pub fn check_with_env(
    id: &ComponentId,
    config: &ExporterConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), BuildError> {
    let name = id.to_string();
    let settings = |source| BuildError::Settings {
        id: name.clone(),
        source,
    };
    match config {
        ExporterConfig::Otlp(c) => {
            let s = settings::resolve_grpc(c, env).map_err(settings)?;
            grpc::check(&s).map_err(|source| BuildError::Grpc {
                id: name.clone(),
                source,
            })
        }
        ExporterConfig::OtlpHttp(c) => {
            let s = settings::resolve_http(c, env).map_err(settings)?;
            http::check(&s).map_err(|source| BuildError::Http {
                id: name.clone(),
                source,
            })
        }
        // The token rule (none on a non-loopback endpoint) and the
        // endpoint's resolution; binding is left to the start.
        ExporterConfig::Ui(c) => ui::Ui::new(c, env)
            .map(drop)
            .map_err(|source| BuildError::Ui { id: name, source }),
        ExporterConfig::PrometheusRemoteWrite(c) => {
            remote_write::check(c).map_err(|source| BuildError::Http { id: name, source })
        }
        ExporterConfig::Console(_) | ExporterConfig::File(_) | ExporterConfig::Prometheus(_) => {
            Ok(())
        }
        other => Err(BuildError::Unsupported {
            id: name,
            kind: other.kind(),
        }),
    }
}

/// As [`build`], with `env` in place of the process environment.
pub fn build_with_env(
    id: &ComponentId,
    config: &ExporterConfig,
    ctx: &Context,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ExporterHandle, BuildError> {
    let telemetry = ctx.telemetry.clone();
    let name = id.to_string();
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(BuildError::NoRuntime { id: name });
    }
    match config {
        ExporterConfig::Console(c) => Ok(spawn_batches(
            Component::new(value::COMPONENT_TYPE_CONSOLE, name),
            console::ConsoleSink::new(Box::new(std::io::stdout()), c.max_rows),
            telemetry,
        )),
        ExporterConfig::File(c) => {
            let max_bytes = c.rotation.max_megabytes.saturating_mul(1024 * 1024);
            let f = file::RotatingFile::open(&c.path, max_bytes, c.rotation.max_backups).map_err(
                |source| BuildError::File {
                    id: name.clone(),
                    source,
                },
            )?;
            let component = Component::new(value::COMPONENT_TYPE_FILE, name);
            Ok(spawn_batches(component, file::FileSink::new(f), telemetry))
        }
        ExporterConfig::Otlp(c) => {
            let s = settings::resolve_grpc(c, env).map_err(|source| BuildError::Settings {
                id: name.clone(),
                source,
            })?;
            let t = grpc::Grpc::new(&s).map_err(|source| BuildError::Grpc {
                id: name.clone(),
                source,
            })?;
            let component = Component::new(value::COMPONENT_TYPE_OTLP_GRPC, name);
            spawn_otlp(component, &s, t, telemetry)
        }
        ExporterConfig::OtlpHttp(c) => {
            let s = settings::resolve_http(c, env).map_err(|source| BuildError::Settings {
                id: name.clone(),
                source,
            })?;
            let t = http::Http::new(&s).map_err(|source| BuildError::Http {
                id: name.clone(),
                source,
            })?;
            let kind = match s.encoding {
                HttpEncoding::Proto => value::COMPONENT_TYPE_OTLP_HTTP,
                HttpEncoding::Json => value::COMPONENT_TYPE_OTLP_HTTP_JSON,
            };
            spawn_otlp(Component::new(kind, name), &s, t, telemetry)
        }
        ExporterConfig::Prometheus(c) => {
            let listener = server::bind(&c.endpoint).map_err(|source| BuildError::Listen {
                id: name.clone(),
                endpoint: c.endpoint.clone(),
                source,
            })?;
            let state = Arc::new(Mutex::new(temporality::Cumulative::new(
                c.metric_expiration,
            )));
            let opts = prometheus::Options::from(c);
            let st = state.clone();
            let handler: server::Handler = Arc::new(move |path| match path {
                "/metrics" => {
                    let text =
                        prometheus::render(&st.lock().unwrap_or_else(|e| e.into_inner()), &opts);
                    (
                        ::http::StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        text,
                    )
                }
                _ => (
                    ::http::StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found: try /metrics\n".into(),
                ),
            });
            let hosts = server::HostCheck::new(&c.endpoint, &c.allowed_hosts);
            let srv = server::Server {
                kind: ServerKind::Prometheus,
                limits: server::Limits::default(),
                telemetry: telemetry.clone(),
            };
            let serve = tokio::spawn(server::serve(listener, handler, hosts, srv));
            let component = Component::new(value::COMPONENT_TYPE_PROMETHEUS, name);
            let h = spawn_batches(component, prometheus::PrometheusSink { state }, telemetry);
            h.extra
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(serve);
            Ok(h)
        }
        ExporterConfig::PrometheusRemoteWrite(c) => {
            let t = remote_write::RemoteWrite::new(c).map_err(|source| BuildError::Http {
                id: name.clone(),
                source,
            })?;
            let component = Component::new(value::COMPONENT_TYPE_REMOTE_WRITE, name);
            let persist = persistence(
                &component,
                &c.sending_queue,
                Box::new(remote_write::EncodedCodec),
            )?;
            let preparer = remote_write::Preparer::new(component.clone(), telemetry.clone(), c);
            let prepare: PrepareFn<remote_write::Encoded> =
                Box::new(move |b| preparer.prepare(&b).map(Arc::new));
            let health = new_health(component.id());
            Ok(spawn(
                component,
                remote_write::RemoteWriteSink {
                    transport: t,
                    retry: c.retry_on_failure.clone(),
                    health: Some(health.clone()),
                },
                prepare,
                QueueSpec {
                    capacity: c.sending_queue.queue_size,
                    shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                    persist,
                },
                telemetry,
                health,
            ))
        }
        ExporterConfig::Ui(c) => {
            let err = |source| BuildError::Ui {
                id: name.clone(),
                source,
            };
            let ui = ui::Ui::new(c, env)
                .map_err(err)?
                .with_telemetry(telemetry.clone());
            let listener = ui.bind().map_err(err)?;
            tracing::info!(exporter = %name, "web UI at {}://{}/", ui.scheme(), c.endpoint);
            let store = ui.store.clone();
            let srv = server::Server {
                kind: ServerKind::Ui,
                limits: server::Limits::default(),
                telemetry: telemetry.clone(),
            };
            let serve = tokio::spawn(ui::serve(listener, Arc::new(ui), srv));
            let component = Component::new(value::COMPONENT_TYPE_UI, name);
            let h = spawn_batches(component, ui::UiSink { store }, telemetry);
            h.extra
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(serve);
            Ok(h)
        }
        other => Err(BuildError::Unsupported {
            id: name,
            kind: other.kind(),
        }),
    }
}

fn spawn_otlp<T: otlp::Transport<Request = opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>>(
    component: Component,
    s: &settings::Resolved,
    transport: T,
    telemetry: Telemetry,
) -> Result<ExporterHandle, BuildError>{
    let persist = persistence(&component, &s.queue, Box::new(otlp::PreparedCodec))?;
    let preparer = otlp::Preparer::new(
        component.clone(),
        telemetry.clone(),
        s.temporality,
        s.series_idle,
        s.max_request_bytes,
    );
    let prepare: PrepareFn<otlp::Prepared> = Box::new(move |b| preparer.prepare(&b).map(Arc::new));
    let health = new_health(component.id());
    Ok(spawn(
        component,
        otlp::OtlpSink {
            transport,
            retry: s.retry.clone(),
            health: Some(health.clone()),
        },
        prepare,
        QueueSpec {
            capacity: s.queue.queue_size,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            persist,
        },
        telemetry,
        health,
    ))
}

/// The directory behind a queue when `sending_queue.storage` is set.
fn persistence<T>(
    component: &Component,
    queue: &SendingQueueConfig,
    codec: Box<dyn queue::Codec<T>>,
) -> Result<Option<Persistence<T>>, BuildError> {
    let Some(dir) = &queue.storage else {
        return Ok(None);
    };
    Ok(Some(Persistence {
        store: Box::new(
            persist::DiskStore::open(dir).map_err(|source| BuildError::Storage {
                id: component.id().to_owned(),
                source,
            })?,
        ),
        codec,
        max_bytes: queue.max_storage_mib.saturating_mul(1024 * 1024),
    }))
}

/// A sink of whole batches with the default in-memory queue.
fn spawn_batches<S: Sink<Item = MetricBatch>>(
    component: Component,
    sink: S,
    telemetry: Telemetry,
) -> ExporterHandle {
    let health = new_health(component.id());
    spawn(
        component,
        sink,
        Box::new(Some),
        QueueSpec {
            capacity: DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            persist: None,
        },
        telemetry,
        health,
    )
}

/// The queue in front of an exporter task.
pub(crate) struct QueueSpec<T> {
    pub(crate) capacity: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) persist: Option<Persistence<T>>,
}

/// Spawns the task that feeds `sink` from a new queue.
pub(crate) fn spawn<S: Sink>(
    component: Component,
    mut sink: S,
    prepare: PrepareFn<S::Item>,
    spec: QueueSpec<S::Item>,
    telemetry: Telemetry,
    health: HealthCell,
) -> ExporterHandle {
    let QueueSpec {
        capacity,
        shutdown_timeout,
        persist,
    } = spec;
    let shared = Arc::new(Shared {
        queue: Queue::new(component, capacity, telemetry, persist),
        prepare,
        health,
        shutdown_timeout,
    });
    let s = shared.clone();
    let task = tokio::spawn(async move {
        while let Some(entry) = s.queue.pop().await {
            let out = sink.export(&entry.item).await;
            // Health first, so anyone who sees the counters sees the health too.
            s.record(&out);
            s.queue.finish(&entry, || {
                let t = s.queue.telemetry();
                t.emit(ExporterSent {
                    exporter: s.queue.component(),
                    count: out.sent,
                });
                for (ty, n) in &out.failed {
                    t.emit(ExporterFailed {
                        exporter: s.queue.component(),
                        error_type: ty,
                        count: *n,
                    });
                }
            });
            for (ty, n) in &out.retried {
                s.queue.telemetry().emit(ExporterRetried {
                    exporter: s.queue.component(),
                    error_type: ty,
                    count: *n,
                });
            }
            if let Some(e) = &out.error {
                let failed: u64 = out.failed.iter().map(|(_, n)| n).sum();
                tracing::warn!(exporter = %s.queue.component(), failed, "export failed: {e}");
            }
        }
    });
    ExporterHandle {
        shared,
        task: Arc::new(Mutex::new(Some(task))),
        extra: Arc::new(Mutex::new(Vec::new())),
    }
}

/// `/healthz`: 200 and `ok` when every exporter is delivering, else 503;
/// the body is JSON with each exporter's [`Health`].
pub fn healthz(handles: &[ExporterHandle]) -> (u16, String) {
    let all = handles
        .iter()
        .map(ExporterHandle::health)
        .collect::<Vec<_>>();
    let ok = all.iter().all(|h| h.delivering);
    let exporters: Vec<serde_json::Value> = all
        .iter()
        .map(|h| {
            serde_json::json!({
                "exporter": h.exporter,
                "delivering": h.delivering,
                "consecutive_failures": h.consecutive_failures,
                "last_success_unix_nanos": h.last_success_unix_nanos.to_string(),
                "last_error": h.last_error,
                "queued_batches": h.queued,
            })
        })
        .collect();
    let body =
        serde_json::json!({ "status": if ok { "ok" } else { "degraded" }, "exporters": exporters });
    (if ok { 200 } else { 503 }, format!("{body}\n"))
}

/// Serves [`healthz`] at `/healthz` on `addr` (bound before this returns);
/// the returned task runs until aborted. Answers IP literals, `localhost`
/// and `addr`'s host (a probe asks by address), within the default
/// [`server::Limits`], counting refusals on `telemetry`.
pub fn serve_healthz(
    addr: &str,
    handles: Vec<ExporterHandle>,
    telemetry: &Telemetry,
) -> std::io::Result<JoinHandle<()>> {
    serve_health(addr, "/healthz", handles, telemetry)
}

/// As [`serve_healthz`], answering at `at` instead of `/healthz` (the
/// `health_check` extension's `path`).
pub fn serve_health(
    addr: &str,
    at: &str,
    handles: Vec<ExporterHandle>,
    telemetry: &Telemetry,
) -> std::io::Result<JoinHandle<()>> {
    let listener = server::bind(addr)?;
    let at = at.to_owned();
    let hint = format!("not found: try {at}\n");
    let handler: server::Handler = Arc::new(move |path| {
        if path == at {
            let (code, body) = healthz(&handles);
            let status = ::http::StatusCode::from_u16(code)
                .unwrap_or(::http::StatusCode::INTERNAL_SERVER_ERROR);
            (status, "application/json", body)
        } else {
            (::http::StatusCode::NOT_FOUND, "text/plain", hint.clone())
        }
    });
    let srv = server::Server {
        kind: ServerKind::Healthz,
        limits: server::Limits::default(),
        telemetry: telemetry.clone(),
    };
    let hosts = server::HostCheck::new(addr, &[]);
    Ok(tokio::spawn(server::serve(listener, handler, hosts, srv)))
}

#[cfg(test)]
mod tests;
