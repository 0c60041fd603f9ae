//! flowscope exporters: the seam between the pipeline and the backends.
//!
//! Every exporter is one spawned task fed by a bounded queue ([`queue`]).
//! [`build`] starts it and returns an [`ExporterHandle`]; the pipeline calls
//! [`ExporterHandle::submit`], which never waits (when the queue is full the
//! oldest batch is dropped and counted). On shutdown the task exports what is
//! still queued, within a time bound, then stops.
//!
//! Accounting: for every batch the task counts each point exactly once, as
//! `flowscope.exporter.sent{exporter}` or as
//! `flowscope.exporter.failed{exporter, error.type}`, so that
//! points submitted = sent + failed at all times once the queue is drained.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowscope_model::{MetricBatch, Telemetry};
use flowscope_otel_config::{ComponentId, ExporterConfig};
use tokio::task::JoinHandle;

pub mod console;
pub mod encode;
pub mod file;
pub mod json;
mod queue;

pub use console::render;
pub use encode::{Encoded, Temporality, encode};
pub use queue::{QUEUE_FULL, SHUTDOWN};

/// Batches an exporter holds before dropping the oldest, unless configured.
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
    #[error("exporter `{id}`: type `{kind}` is not supported by this build")]
    Unsupported { id: String, kind: &'static str },
    #[error("exporter `{id}`: build() must be called inside a tokio runtime")]
    NoRuntime { id: String },
}

/// What one export attempt did with a batch's points.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Points the backend accepted.
    pub sent: u64,
    /// Points not delivered, by `error.type`.
    pub failed: Vec<(String, u64)>,
    /// The last error, for the log and `/healthz`.
    pub error: Option<String>,
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

/// One exporter's delivery: encode, send, retry as it sees fit, and say
/// what became of every point.
pub(crate) trait Sink: Send + 'static {
    fn export(&mut self, batch: &MetricBatch) -> impl Future<Output = Outcome> + Send;
}

/// Whether an exporter is delivering, for `/healthz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The exporter's id, e.g. `otlp/gateway`.
    pub exporter: String,
    /// False once the last batch had undelivered points; true again after a
    /// batch is delivered whole. True before the first batch.
    pub delivering: bool,
    /// Batches in a row with undelivered points.
    pub consecutive_failures: u64,
    /// Unix time (ns) of the last fully delivered batch, 0 if none.
    pub last_success_unix_nanos: u64,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
}

struct Shared {
    queue: queue::Queue,
    health: Mutex<Health>,
    shutdown_timeout: Duration,
}

impl Shared {
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

/// The pipeline's handle on one running exporter. Cheap to clone; every
/// clone feeds the same queue.
#[derive(Clone)]
pub struct ExporterHandle {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl ExporterHandle {
    /// Queues a batch for export. Never waits: when the queue is full the
    /// oldest batch is dropped and its points counted as
    /// `flowscope.exporter.failed{error.type="queue_full"}`; after shutdown
    /// the batch is counted with `error.type="shutdown"`.
    pub fn submit(&self, batch: Arc<MetricBatch>) {
        self.shared.queue.push(batch);
    }

    /// The exporter's id as configured (`file`, `otlp/gateway`).
    pub fn name(&self) -> &str {
        self.shared.queue.name()
    }

    /// Whether the exporter is delivering.
    pub fn health(&self) -> Health {
        self.shared
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops accepting batches, lets the task export what is queued, and
    /// waits for it at most the shutdown bound (5 s unless configured).
    /// What is still queued or in flight after that is counted as
    /// `failed{error.type="shutdown"}`.
    pub fn shutdown(self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        async move {
            shared.queue.close();
            let Some(mut task) = task else { return };
            if tokio::time::timeout(shared.shutdown_timeout, &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
                let n = shared.queue.abandon();
                tracing::warn!(
                    exporter = %shared.queue.name(),
                    points = n,
                    "exporter did not drain its queue in {:?}; dropped the rest",
                    shared.shutdown_timeout
                );
            }
        }
    }
}

/// Starts the exporter `id` configured by `config`, reporting into
/// `telemetry`. Must be called inside a tokio runtime (it spawns the
/// exporter's task).
pub fn build(
    id: &ComponentId,
    config: &ExporterConfig,
    telemetry: Telemetry,
) -> Result<ExporterHandle, BuildError> {
    let name = id.to_string();
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(BuildError::NoRuntime { id: name });
    }
    match config {
        ExporterConfig::Console(c) => Ok(spawn(
            name,
            console::ConsoleSink::new(Box::new(std::io::stdout()), c.max_rows),
            DEFAULT_QUEUE_CAPACITY,
            DEFAULT_SHUTDOWN_TIMEOUT,
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
            Ok(spawn(
                name,
                file::FileSink::new(f),
                DEFAULT_QUEUE_CAPACITY,
                DEFAULT_SHUTDOWN_TIMEOUT,
                telemetry,
            ))
        }
        other => Err(BuildError::Unsupported {
            id: name,
            kind: other.kind(),
        }),
    }
}

/// Spawns the task that feeds `sink` from a new queue.
pub(crate) fn spawn<S: Sink>(
    name: String,
    mut sink: S,
    capacity: usize,
    shutdown_timeout: Duration,
    telemetry: Telemetry,
) -> ExporterHandle {
    let shared = Arc::new(Shared {
        queue: queue::Queue::new(name.clone(), capacity, telemetry),
        health: Mutex::new(Health {
            exporter: name,
            delivering: true,
            ..Default::default()
        }),
        shutdown_timeout,
    });
    let s = shared.clone();
    let task = tokio::spawn(async move {
        while let Some(batch) = s.queue.pop().await {
            let out = sink.export(&batch).await;
            s.queue.finish(|| {
                let t = s.queue.telemetry();
                t.exporter_sent(s.queue.name(), out.sent);
                for (ty, n) in &out.failed {
                    t.exporter_failed(s.queue.name(), ty, *n);
                }
            });
            if let Some(e) = &out.error {
                let failed: u64 = out.failed.iter().map(|(_, n)| n).sum();
                tracing::warn!(exporter = %s.queue.name(), failed, "export failed: {e}");
            }
            s.record(&out);
        }
    });
    ExporterHandle {
        shared,
        task: Arc::new(Mutex::new(Some(task))),
    }
}

#[cfg(test)]
mod tests;
