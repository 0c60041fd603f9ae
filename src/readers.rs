//! `service.telemetry.metrics.readers`: the agent's own metrics sent apart
//! from the flow pipelines, as a Collector sends its own.
//!
//! - A `periodic` reader is the OpenTelemetry SDK's `PeriodicReader` with
//!   the SDK's OTLP exporter (`opentelemetry-otlp`, gRPC or HTTP), on the
//!   same `SdkMeterProvider` whose instruments the agent's typed events
//!   record into ([`flowscope_model::Telemetry::with_sdk_readers`]). The
//!   reader collects and sends every `interval` on its own thread, never on
//!   the async workers; at shutdown [`Readers::stop`] makes it send what is
//!   left. Each send is counted as any exporter's is
//!   (`flowscope.exporter.sent` / `flowscope.exporter.failed`, component
//!   `otlp/service.telemetry.metrics.readers[N]`, typed by semconv as
//!   `otlp_grpc_metric_exporter` etc.); the SDK does not retry,
//!   so a failed send's points are lost and counted as failed.
//! - A `pull` reader is one of flowscope's `prometheus` exporters, fed by
//!   its own task from its own SDK reader
//!   ([`flowscope_model::Telemetry::collect_reader`]) every collection
//!   interval; its endpoint serves the running totals. (The SDK's own
//!   Prometheus exporter is deprecated upstream, and flowscope's already
//!   checks who asks and caps clients.)
//!
//! Either way a reader sees every counter delta exactly once, whatever the
//! pipelines collect.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use flowscope_exporters::ExporterHandle;
use flowscope_model::internal_events::{
    EventsLost, ExporterFailed, ExporterSent, LossReason, Source,
};
use flowscope_model::names::value;
use flowscope_model::telemetry::{Component, WeakTelemetry, points_of};
use flowscope_model::{Attrs, Context, MetricBatch, Telemetry};
use flowscope_otel_config::telemetry::{MetricReader, OtlpPushExporter, PushProtocol};
use flowscope_otel_config::{ComponentId, Config};
use flowscope_receiver::unix_nanos;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, Temporality};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `service.telemetry.metrics.level: none`: no self-telemetry anywhere.
pub fn self_metrics_off(config: &Config) -> bool {
    config.service.telemetry.metrics.level == flowscope_otel_config::telemetry::MetricsLevel::None
}

/// The readers that are on: none with `level: none`.
fn readers(config: &Config) -> &[MetricReader] {
    if self_metrics_off(config) {
        &[]
    } else {
        &config.service.telemetry.metrics.readers
    }
}

/// The component name of reader `i`.
fn reader_name(i: usize) -> String {
    format!("service.telemetry.metrics.readers[{i}]")
}

/// The agent's self-telemetry under `resource`, with one SDK reader per
/// reader of the configuration: a `PeriodicReader` sending over OTLP for
/// each `periodic` one, an interval reader for each `pull` one. Must be
/// called inside the tokio runtime (a gRPC channel's worker lives there).
pub fn telemetry(config: &Config, resource: &Attrs) -> anyhow::Result<Telemetry> {
    let cell: Arc<OnceLock<WeakTelemetry>> = Arc::new(OnceLock::new());
    let mut periodic = Vec::new();
    let mut pulls = 0;
    for (i, reader) in readers(config).iter().enumerate() {
        match reader {
            MetricReader::Periodic { interval, exporter } => {
                let counted = Counted {
                    inner: sdk_exporter(exporter).with_context(|| reader_name(i))?,
                    component: Component::new(
                        match exporter.protocol {
                            PushProtocol::Grpc => value::COMPONENT_TYPE_OTLP_GRPC,
                            PushProtocol::HttpProtobuf => value::COMPONENT_TYPE_OTLP_HTTP,
                            PushProtocol::HttpJson => value::COMPONENT_TYPE_OTLP_HTTP_JSON,
                        },
                        format!("otlp/{}", reader_name(i)),
                    ),
                    telemetry: cell.clone(),
                };
                periodic.push(
                    PeriodicReader::builder(counted)
                        .with_interval(*interval)
                        .build(),
                );
            }
            MetricReader::Pull { .. } => pulls += 1,
        }
    }
    let telemetry = Telemetry::with_sdk_readers(resource, pulls, |b| {
        periodic.into_iter().fold(b, |b, r| b.with_reader(r))
    });
    let _ = cell.set(telemetry.downgrade());
    Ok(telemetry)
}

/// The SDK's OTLP metric exporter for `e`: delta temporality unless
/// `temporality_preference: cumulative` (delta is what the pipelines carry,
/// so the two agree on every counter's points).
fn sdk_exporter(e: &OtlpPushExporter) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
    let temporality = match e.temporality {
        Some(flowscope_otel_config::exporters::Temporality::Cumulative) => Temporality::Cumulative,
        _ => Temporality::Delta,
    };
    let builder = opentelemetry_otlp::MetricExporter::builder().with_temporality(temporality);
    Ok(match e.protocol {
        PushProtocol::Grpc => crate::otlp_push::tonic(builder.with_tonic(), e)?.build()?,
        PushProtocol::HttpProtobuf | PushProtocol::HttpJson => {
            crate::otlp_push::http(builder.with_http(), e).build()?
        }
    })
}

/// An SDK exporter whose sends are counted in the agent's own telemetry.
/// It holds the telemetry weakly: the telemetry's provider owns it.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    component: Component,
    telemetry: Arc<OnceLock<WeakTelemetry>>,
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let points = points_of(metrics).len() as u64;
        let result = self.inner.export(metrics).await;
        if let Some(t) = self.telemetry.get().and_then(WeakTelemetry::upgrade) {
            match &result {
                Ok(()) => t.emit(ExporterSent {
                    exporter: &self.component,
                    count: points,
                }),
                Err(e) => t.emit(ExporterFailed {
                    exporter: &self.component,
                    error_type: match e {
                        OTelSdkError::Timeout(_) => "timeout",
                        OTelSdkError::AlreadyShutdown => "shutdown",
                        OTelSdkError::InternalFailure(_) => "_OTHER",
                    },
                    count: points,
                }),
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// The running readers.
pub struct Readers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    telemetry: Telemetry,
}

/// Starts one task and exporter per `pull` reader; `interval` is the
/// pipelines' collection interval. (`periodic` readers run in the SDK
/// from [`telemetry`] on.)
pub fn start(config: &Config, ctx: &Context, interval: Duration) -> anyhow::Result<Readers> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let pulls = readers(config)
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            MetricReader::Pull { exporter } => Some((i, exporter)),
            MetricReader::Periodic { .. } => None,
        });
    for (sdk_reader, (i, exporter)) in pulls.enumerate() {
        let id = ComponentId {
            kind: exporter.kind().to_owned(),
            name: Some(reader_name(i)),
        };
        let handle = flowscope_exporters::build(&id, exporter, ctx)
            .with_context(|| format!("starting {}", reader_name(i)))?;
        tasks.push(tokio::spawn(run(
            sdk_reader,
            interval,
            ctx.clone(),
            handle,
            stop_rx.clone(),
        )));
    }
    Ok(Readers {
        stop,
        tasks,
        telemetry: ctx.telemetry.clone(),
    })
}

impl Readers {
    /// Sends what was counted since the last send, then stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // The periodic readers send on their threads; waiting is blocking.
        let telemetry = self.telemetry;
        let _ = tokio::task::spawn_blocking(move || telemetry.force_flush()).await;
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
        // Encoding is blocking work.
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
