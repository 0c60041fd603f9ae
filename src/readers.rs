//! `service.telemetry.metrics.readers`: the agent's own metrics sent apart
//! from the flow pipelines, as a Collector sends its own.
//!
//! Each reader is one of flowscope's exporters (`otlp`, `otlphttp` or
//! `prometheus`, built from the reader's settings by the config crate) fed
//! by its own task with its own SDK reader
//! ([`flowscope_model::Telemetry::collect_reader`]), so it sees every
//! counter delta exactly once whatever the pipelines do: a `periodic`
//! reader every `interval`, a `pull` reader every collection interval (its
//! Prometheus endpoint serves the running totals).
//!
//! Why flowscope's exporters and not `opentelemetry-otlp`: they already
//! speak both OTLP transports with the TLS, header, compression, queue and
//! retry behaviour the configuration documents, and count their own
//! failures in `flowscope.exporter.*`; a second OTLP stack would add another
//! HTTP client and another set of TLS settings for the same wire format.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use flowscope_exporters::ExporterHandle;
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::{Context, MetricBatch};
use flowscope_otel_config::telemetry::MetricReader;
use flowscope_otel_config::{ComponentId, Config};
use flowscope_receiver::unix_nanos;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many SDK readers the configuration needs (build the context with
/// that many, [`Context::with_self_readers`]).
pub fn count(config: &Config) -> usize {
    if self_metrics_off(config) {
        0
    } else {
        config.service.telemetry.metrics.readers.len()
    }
}

/// `service.telemetry.metrics.level: none`: no self-telemetry anywhere.
pub fn self_metrics_off(config: &Config) -> bool {
    config.service.telemetry.metrics.level == flowscope_otel_config::telemetry::MetricsLevel::None
}

/// The running readers.
pub struct Readers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts one task and exporter per reader; `interval` is the pipelines'
/// collection interval (for `pull` readers).
pub fn start(config: &Config, ctx: &Context, interval: Duration) -> anyhow::Result<Readers> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let readers = &config.service.telemetry.metrics.readers;
    for (i, reader) in readers.iter().enumerate().take(count(config)) {
        let exporter = reader.exporter();
        let id = ComponentId {
            kind: exporter.kind().to_owned(),
            name: Some(format!("service.telemetry.metrics.readers[{i}]")),
        };
        let handle = flowscope_exporters::build(&id, exporter, ctx)
            .with_context(|| format!("starting {}", id.name.as_deref().unwrap_or_default()))?;
        let every = match reader {
            MetricReader::Periodic { interval, .. } => *interval,
            MetricReader::Pull { .. } => interval,
        };
        tasks.push(tokio::spawn(run(
            i,
            every,
            ctx.clone(),
            handle,
            stop_rx.clone(),
        )));
    }
    Ok(Readers { stop, tasks })
}

impl Readers {
    /// Sends what was counted since the last send, then stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn run(
    reader: usize,
    every: Duration,
    ctx: Context,
    exporter: ExporterHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut start = SystemTime::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        let now = SystemTime::now();
        let batch = Arc::new(MetricBatch {
            start_unix_nanos: unix_nanos(start),
            time_unix_nanos: unix_nanos(now),
            points: ctx.telemetry.collect_reader(reader),
        });
        start = now;
        let e = exporter.clone();
        let points = batch.points.len() as u64;
        // Encoding (and a persistent queue's write) is blocking work.
        if let Err(err) = tokio::task::spawn_blocking(move || e.submit(batch)).await {
            // A bug (a panic while encoding): the interval is lost, and
            // counted as the pipelines count theirs.
            tracing::error!(reader, "submitting the agent's own metrics failed: {err}");
            ctx.telemetry.emit(EventsLost::new(
                Source::Pipeline,
                LossReason::PipelineClosed,
                points,
            ));
        }
        if last {
            break;
        }
    }
    exporter.shutdown().await;
}
