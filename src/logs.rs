//! `service.telemetry.logs`: the agent's log filter, and its logs over OTLP.
//!
//! The log always goes to stderr. With `logs.processors` (a `batch`
//! processor and an `otlp` exporter, as the Collector writes them) every
//! record that passes `logs.level` also goes, through the OpenTelemetry
//! SDK's batch log processor, to an OTLP endpoint over gRPC or HTTP, under
//! the agent's own Resource. Records of the crates that carry them
//! (`opentelemetry*`, `tonic`, `hyper*`, `h2`, `reqwest`, `tower`) are not
//! sent, so sending cannot feed itself.
//!
//! Why `opentelemetry-otlp` and `opentelemetry-appender-tracing`: the SDK
//! the self-metrics use has no log wire format of its own; these are its
//! official OTLP exporter and `tracing` bridge, so records keep their
//! severity, target and fields as the OpenTelemetry log data model says.
//! The gRPC transport is the tonic the exporters already build; HTTP uses
//! the blocking reqwest client, which runs on the batch processor's own
//! thread and needs no runtime.

use anyhow::Context as _;
use flowscope_model::Attrs;
use flowscope_otel_config::telemetry::{LogProcessor, LogsConfig, PushProtocol};
use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Targets never sent over OTLP: the sending path itself.
fn carrier(target: &str) -> bool {
    const CARRIERS: [&str; 7] = [
        "opentelemetry",
        "tonic",
        "hyper",
        "h2",
        "reqwest",
        "tower",
        "rustls",
    ];
    CARRIERS.iter().any(|c| target.starts_with(c))
}

/// Installs the global log subscriber: stderr at `filter`, and, when
/// `provider` is given, the OTLP bridge.
pub fn init(filter: tracing_subscriber::EnvFilter, provider: Option<&SdkLoggerProvider>) {
    let bridge = provider.map(|p| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p).with_filter(
            tracing_subscriber::filter::filter_fn(|m| !carrier(m.target())),
        )
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(bridge)
        .init();
}

/// The stderr filter: `RUST_LOG` when set, else `logs.level`.
pub fn filter(logs: &LogsConfig) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(logs.level.as_str()))
}

/// The SDK logger provider for `logs.processors` (none without any).
/// Must be called inside the tokio runtime (the gRPC channel lives there).
pub fn provider(logs: &LogsConfig, resource: &Attrs) -> anyhow::Result<Option<SdkLoggerProvider>> {
    if logs.processors.is_empty() {
        return Ok(None);
    }
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(resource.iter().map(|(k, v)| {
            opentelemetry::KeyValue::new(
                k.to_owned(),
                match v {
                    flowscope_model::Value::Str(s) => opentelemetry::Value::from(s.to_string()),
                    flowscope_model::Value::Int(i) => opentelemetry::Value::I64(*i),
                    flowscope_model::Value::Bool(b) => opentelemetry::Value::Bool(*b),
                },
            )
        }))
        .build();
    let mut builder = SdkLoggerProvider::builder().with_resource(resource);
    for (i, p) in logs.processors.iter().enumerate() {
        let processor =
            batch(p).with_context(|| format!("service.telemetry.logs.processors[{i}]"))?;
        builder = builder.with_log_processor(processor);
    }
    Ok(Some(builder.build()))
}

fn batch(p: &LogProcessor) -> anyhow::Result<BatchLogProcessor> {
    let e = &p.exporter;
    let exporter = match e.protocol {
        PushProtocol::Grpc => {
            crate::otlp_push::tonic(opentelemetry_otlp::LogExporter::builder().with_tonic(), e)?
                .build()?
        }
        PushProtocol::HttpProtobuf | PushProtocol::HttpJson => {
            crate::otlp_push::http(opentelemetry_otlp::LogExporter::builder().with_http(), e)
                .build()?
        }
    };
    let config = BatchConfigBuilder::default()
        .with_scheduled_delay(p.schedule_delay)
        .with_max_queue_size(p.max_queue_size)
        .with_max_export_batch_size(p.max_export_batch_size)
        .build();
    Ok(BatchLogProcessor::builder(exporter)
        .with_batch_config(config)
        .build())
}
