//! `service.telemetry`: the agent's own logs and metrics, as the Collector
//! reads the section (its declarative-configuration shape).
//!
//! ```yaml
//! service:
//!   telemetry:
//!     logs: {level: warn}
//!     metrics:
//!       level: normal
//!       readers:
//!         - periodic:
//!             interval: 10000          # ms, as in the Collector
//!             exporter:
//!               otlp: {protocol: http/protobuf, endpoint: "http://backend:4318/v1/metrics", insecure: true}
//!         - pull:
//!             exporter:
//!               prometheus: {host: 0.0.0.0, port: 8888}
//! ```
//!
//! A `periodic` reader is an OpenTelemetry SDK periodic reader with the
//! SDK's OTLP exporter ([`OtlpPushExporter`], the same settings a log
//! processor's exporter has); a `pull` reader is one of flowscope's own
//! `prometheus` exporters ([`ExporterConfig`]). Both see the agent's own
//! metrics only, apart from the pipelines.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::exporters::{
    Compression, ExporterConfig, PrometheusExporterConfig, Temporality, Unused, check_header,
    parse_grpc_endpoint, parse_http_url,
};

/// `service.telemetry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `logs`.
    pub logs: LogsConfig,
    /// `metrics`.
    pub metrics: MetricsConfig,
    /// Collector: traces of the Collector itself; flowscope makes none.
    pub traces: Unused,
    /// Collector: extra Resource attributes of the agent's telemetry;
    /// refused (use `OTEL_RESOURCE_ATTRIBUTES`).
    #[serde(deserialize_with = "reject_resource")]
    pub resource: Unused,
}

/// `service.telemetry.logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// `debug`, `info` (default), `warn` or `error`. `RUST_LOG`, when set,
    /// wins.
    pub level: LogLevel,
    /// Collector, ignored: the log is text on stderr.
    pub encoding: Unused,
    /// Collector, ignored.
    pub development: Unused,
    /// Collector, ignored: the log goes to stderr.
    pub output_paths: Unused,
    /// Collector, ignored.
    pub error_output_paths: Unused,
    /// Collector, ignored.
    pub initial_fields: Unused,
    /// Collector, ignored.
    pub sampling: Unused,
    /// Collector, ignored.
    pub disable_caller: Unused,
    /// Collector, ignored.
    pub disable_stacktrace: Unused,
    /// `batch` processors with an `otlp` exporter: the agent's logs also
    /// go there (besides stderr).
    pub processors: Vec<LogProcessor>,
}

/// `service.telemetry.logs.processors[]`: `batch` with an `otlp` exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogProcessor {
    /// `schedule_delay` (ms): how long records wait to be sent. Default 1000.
    pub schedule_delay: Duration,
    /// `max_queue_size`: records held at most (more are dropped by the
    /// SDK). Default 2048.
    pub max_queue_size: usize,
    /// `max_export_batch_size`: records per request. Default 512.
    pub max_export_batch_size: usize,
    /// The OTLP exporter.
    pub exporter: OtlpPushExporter,
}

/// The `otlp` exporter of a log processor or of a `periodic` metric
/// reader: the OpenTelemetry SDK's own OTLP exporter
/// (`opentelemetry-otlp`), with the keys of the declarative configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpPushExporter {
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: PushProtocol,
    /// gRPC: `http(s)://host:port`; HTTP: the full URL (`.../v1/logs`,
    /// `.../v1/metrics`).
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    /// Plaintext gRPC (HTTP: the scheme decides).
    pub insecure: bool,
    /// Request deadline.
    pub timeout: Option<Duration>,
    /// Request body compression (metrics; logs always send uncompressed).
    pub compression: Option<Compression>,
    /// Metrics only: `delta` (the default, what the pipelines carry) or
    /// `cumulative`.
    pub temporality: Option<Temporality>,
}

impl OtlpPushExporter {
    /// The checked exporter of `raw`.
    fn from_raw(o: RawOtlp, timeout: Option<u64>) -> Result<Self, String> {
        let grpc = matches!(o.protocol, OtlpProtocol::Grpc);
        for (k, v) in &o.headers.0 {
            check_header(k, v, grpc)?;
        }
        let protocol = match o.protocol {
            OtlpProtocol::Grpc => {
                parse_grpc_endpoint(&o.endpoint)?;
                PushProtocol::Grpc
            }
            OtlpProtocol::HttpProtobuf => {
                parse_http_url(&o.endpoint)?;
                PushProtocol::HttpProtobuf
            }
            OtlpProtocol::HttpJson => {
                parse_http_url(&o.endpoint)?;
                PushProtocol::HttpJson
            }
        };
        Ok(OtlpPushExporter {
            protocol,
            endpoint: o.endpoint,
            headers: o.headers.0,
            insecure: o.insecure,
            timeout: o.timeout.or(timeout).map(Duration::from_millis),
            compression: o.compression,
            temporality: o.temporality_preference,
        })
    }
}

/// The wire protocol of an OTLP push exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushProtocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum RawLogProcessor {
    #[serde(rename = "batch")]
    Batch(RawBatchLogs),
    #[serde(rename = "simple")]
    Simple(de::IgnoredAny),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatchLogs {
    #[serde(default)]
    schedule_delay: Option<u64>,
    #[serde(default)]
    export_timeout: Option<u64>,
    #[serde(default)]
    max_queue_size: Option<usize>,
    #[serde(default)]
    max_export_batch_size: Option<usize>,
    exporter: RawPushExporter,
}

impl<'de> Deserialize<'de> for LogProcessor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = match RawLogProcessor::deserialize(d)? {
            RawLogProcessor::Batch(b) => b,
            RawLogProcessor::Simple(_) => {
                return Err(de::Error::custom(
                    "a `simple` processor would send every log line on the logging thread; \
                     use `batch`",
                ));
            }
        };
        let RawPushExporter::Otlp(o) = b.exporter;
        if o.temporality_preference.is_some() {
            return Err(de::Error::custom(
                "`temporality_preference` is a metric exporter's key: remove it here",
            ));
        }
        let exporter =
            OtlpPushExporter::from_raw(o, b.export_timeout).map_err(de::Error::custom)?;
        if !matches!(exporter.compression, None | Some(Compression::None)) {
            return Err(de::Error::custom(
                "log exporters send uncompressed (a few records a second): remove \
                 `compression` or set it to `none`",
            ));
        }
        let positive = |v: Option<usize>, default: usize, key: &str| match v {
            Some(0) => Err(de::Error::custom(format_args!(
                "`{key}` must be at least 1"
            ))),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(LogProcessor {
            schedule_delay: Duration::from_millis(b.schedule_delay.unwrap_or(1000).max(1)),
            max_queue_size: positive(b.max_queue_size, 2048, "max_queue_size")?,
            max_export_batch_size: positive(b.max_export_batch_size, 512, "max_export_batch_size")?,
            exporter,
        })
    }
}

/// A log level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" | "dpanic" | "panic" | "fatal" => LogLevel::Error,
            _ => {
                return Err(de::Error::custom(format_args!(
                    "unknown log level `{s}`; use debug, info, warn or error"
                )));
            }
        })
    }
}

/// `service.telemetry.metrics`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `none` turns the agent's own metrics off (the pipelines and readers
    /// get none); `basic`, `normal` (default) and `detailed` all give every
    /// `flowscope.*` self-metric.
    pub level: MetricsLevel,
    /// Where the agent's own metrics go besides the pipelines.
    pub readers: Vec<MetricReader>,
    /// Collector (deprecated): refused, use a `pull` reader.
    #[serde(deserialize_with = "reject_address")]
    pub address: Unused,
    /// Collector, ignored.
    pub views: Unused,
}

/// `service.telemetry.metrics.level`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsLevel {
    None,
    Basic,
    #[default]
    Normal,
    Detailed,
}

/// One reader of the agent's own metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricReader {
    /// `periodic`: pushed every `interval` to an OTLP endpoint by the SDK's
    /// periodic reader and OTLP exporter.
    Periodic {
        interval: Duration,
        exporter: OtlpPushExporter,
    },
    /// `pull`: served for scraping by a flowscope `prometheus` exporter
    /// (boxed: an exporter config is much larger than a push exporter).
    Pull { exporter: Box<ExporterConfig> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum RawReader {
    #[serde(rename = "periodic")]
    Periodic(RawPeriodic),
    #[serde(rename = "pull")]
    Pull(RawPull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriodic {
    /// Milliseconds, as in the Collector; default 60000.
    #[serde(default = "default_interval")]
    interval: u64,
    /// Milliseconds; the request deadline. Default 30000.
    #[serde(default)]
    timeout: Option<u64>,
    exporter: RawPushExporter,
}

fn default_interval() -> u64 {
    60_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum RawPushExporter {
    #[serde(rename = "otlp")]
    Otlp(RawOtlp),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlp {
    protocol: OtlpProtocol,
    endpoint: String,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    compression: Option<Compression>,
    /// Milliseconds.
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    temporality_preference: Option<Temporality>,
}

#[derive(Deserialize, Clone, Copy)]
enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

/// Headers as a map or, as the declarative configuration writes them, a
/// list of `{name, value}`.
#[derive(Default)]
struct Headers(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Map(BTreeMap<String, String>),
            List(Vec<NameValue>),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NameValue {
            name: String,
            value: String,
        }
        let map = match Either::deserialize(d)? {
            Either::Map(m) => m,
            Either::List(l) => l.into_iter().map(|nv| (nv.name, nv.value)).collect(),
        };
        Ok(Headers(map))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPull {
    exporter: RawPullExporter,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum RawPullExporter {
    #[serde(rename = "prometheus")]
    Prometheus(RawPrometheus),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    #[serde(default = "default_host")]
    host: String,
    port: u16,
    #[serde(default, rename = "without_type_suffix")]
    _without_type_suffix: Unused,
    #[serde(default, rename = "without_units")]
    _without_units: Unused,
    #[serde(default, rename = "without_scope_info")]
    _without_scope_info: Unused,
    #[serde(default, rename = "with_resource_constant_labels")]
    _with_resource_constant_labels: Unused,
}

fn default_host() -> String {
    "localhost".to_owned()
}

impl<'de> Deserialize<'de> for MetricReader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawReader::deserialize(d)? {
            RawReader::Periodic(p) => {
                let RawPushExporter::Otlp(o) = p.exporter;
                if p.interval == 0 {
                    return Err(de::Error::custom("`interval` must be at least 1 (ms)"));
                }
                Ok(MetricReader::Periodic {
                    interval: Duration::from_millis(p.interval),
                    exporter: OtlpPushExporter::from_raw(o, p.timeout)
                        .map_err(de::Error::custom)?,
                })
            }
            RawReader::Pull(p) => {
                let RawPullExporter::Prometheus(r) = p.exporter;
                let host = if r.host.contains(':') && !r.host.starts_with('[') {
                    format!("[{}]", r.host)
                } else {
                    r.host
                };
                let endpoint = format!("{host}:{}", r.port);
                crate::exporters::check_listen_address(&endpoint).map_err(de::Error::custom)?;
                Ok(MetricReader::Pull {
                    exporter: Box::new(ExporterConfig::Prometheus(PrometheusExporterConfig {
                        endpoint,
                        ..PrometheusExporterConfig::default()
                    })),
                })
            }
        }
    }
}

fn reject_resource<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    de::IgnoredAny::deserialize(d)?;
    Err(de::Error::custom(
        "not supported: set the agent's own Resource with OTEL_RESOURCE_ATTRIBUTES and \
         OTEL_SERVICE_NAME",
    ))
}

fn reject_address<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    de::IgnoredAny::deserialize(d)?;
    Err(de::Error::custom(
        "`address` is the Collector's deprecated form: write a pull reader, \
         `readers: [{pull: {exporter: {prometheus: {host: 0.0.0.0, port: 8888}}}}]`",
    ))
}

impl TelemetryConfig {
    /// Keys accepted and ignored, for the one warning.
    pub(crate) fn unused(&self, out: &mut Vec<String>) {
        let p = "service.telemetry.";
        for (u, key) in [
            (self.traces, "traces"),
            (self.logs.encoding, "logs.encoding"),
            (self.logs.development, "logs.development"),
            (self.logs.output_paths, "logs.output_paths"),
            (self.logs.error_output_paths, "logs.error_output_paths"),
            (self.logs.initial_fields, "logs.initial_fields"),
            (self.logs.sampling, "logs.sampling"),
            (self.logs.disable_caller, "logs.disable_caller"),
            (self.logs.disable_stacktrace, "logs.disable_stacktrace"),
            (self.metrics.views, "metrics.views"),
        ] {
            if u.set {
                out.push(format!("{p}{key}"));
            }
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str_with_env;

    fn load(telemetry: &str) -> Result<crate::Loaded, String> {
        let text = format!(
            "receivers:\n  ebpf:\nexporters:\n  console:\nservice:\n  telemetry:\n{telemetry}\n  \
             pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [console]\n"
        );
        load_str_with_env(&text, "t.yaml", &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn readers_become_sdk_exporters_and_pull_exporters() {
        let l = load(
            "    logs: {level: WARN, encoding: json}\n    metrics:\n      level: detailed\n      readers:\n\
             \x20       - periodic:\n            interval: 500\n            exporter:\n              otlp: {protocol: http/protobuf, endpoint: \"http://127.0.0.1:4318/v1/metrics\", headers: [{name: x-key, value: s}], compression: none}\n\
             \x20       - periodic:\n            exporter:\n              otlp: {protocol: grpc, endpoint: \"127.0.0.1:4317\", insecure: true}\n\
             \x20       - pull:\n            exporter:\n              prometheus: {host: 127.0.0.1, port: 8888}",
        )
        .unwrap();
        let t = &l.config.service.telemetry;
        assert_eq!(t.logs.level, LogLevel::Warn);
        assert_eq!(t.metrics.level, MetricsLevel::Detailed);
        let MetricReader::Periodic { interval, exporter } = &t.metrics.readers[0] else {
            panic!("{:?}", t.metrics.readers[0])
        };
        assert_eq!(*interval, Duration::from_millis(500));
        assert_eq!(exporter.protocol, PushProtocol::HttpProtobuf);
        assert_eq!(exporter.endpoint, "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(exporter.headers["x-key"], "s");
        assert_eq!(exporter.compression, Some(Compression::None));
        let MetricReader::Periodic { interval, exporter } = &t.metrics.readers[1] else {
            panic!()
        };
        assert_eq!(*interval, Duration::from_secs(60));
        assert_eq!(exporter.protocol, PushProtocol::Grpc);
        assert!(exporter.insecure);
        let MetricReader::Pull { exporter } = &t.metrics.readers[2] else {
            panic!()
        };
        let ExporterConfig::Prometheus(p) = exporter.as_ref() else {
            panic!("{exporter:?}")
        };
        assert_eq!(p.endpoint, "127.0.0.1:8888");
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("service.telemetry.logs.encoding"))
        );

        for (bad, want) in [
            ("    logs: {level: loud}", "unknown log level `loud`"),
            ("    logs: {processors: [{simple: {}}]}", "use `batch`"),
            (
                "    metrics: {address: \"0.0.0.0:8888\"}",
                "write a pull reader",
            ),
            (
                "    metrics: {readers: [{periodic: {exporter: {otlp: {protocol: grpc, endpoint: \"http://[::1\"}}}}]}",
                "t.yaml:7",
            ),
            (
                "    metrics: {readers: [{push: {}}]}",
                "unknown variant `push`",
            ),
        ] {
            let e = load(bad).unwrap_err();
            assert!(
                e.contains(want) && e.contains("service.telemetry"),
                "{bad}: {e}"
            );
        }
    }
}
