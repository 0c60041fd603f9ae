//! Exporter settings (`exporters:` section).
//!
//! # Adding an exporter type
//! 1. Define `FooExporterConfig` below with `#[derive(Debug, Clone, PartialEq,
//!    Deserialize)]`, `#[serde(deny_unknown_fields)]` and doc comments on every
//!    field (they are the reference docs; mirror them in docs/configuration.md).
//!    Give it `#[serde(default)]` + `impl Default` if every field has a default.
//!    Validate values in the serde pass (`deserialize_with`), so errors carry
//!    the line and key path.
//! 2. Add a variant `Foo(FooExporterConfig)` to [`ExporterConfig`], its type
//!    string to [`ExporterConfig::KINDS`] and to the `match` in
//!    [`ExporterConfig::kind`], and one arm to the `match` in
//!    [`ExporterSeed::deserialize`]. Nothing outside this file changes.
//! 3. Add a test at the bottom that parses a minimal YAML for the new type.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{component_body, duration, unknown_kind};

/// The settings of one exporter, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExporterConfig {
    /// `console`: a live table in the terminal.
    Console(ConsoleExporterConfig),
    /// `file`: OTLP JSON lines in a file, rotated by size.
    File(FileExporterConfig),
    /// `otlp`: OTLP over gRPC.
    Otlp(OtlpExporterConfig),
    /// `otlphttp`: OTLP over HTTP (protobuf or JSON) to `/v1/metrics`.
    OtlpHttp(OtlpHttpExporterConfig),
    /// `prometheus`: a pull endpoint in the Prometheus text format.
    Prometheus(PrometheusExporterConfig),
    /// `ui`: the last hour in memory, served as a web UI and JSON API.
    Ui(UiExporterConfig),
}

impl ExporterConfig {
    /// Every exporter type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] =
        &["console", "file", "otlp", "otlphttp", "prometheus", "ui"];

    /// The component type of these settings (`console`, `file`).
    pub fn kind(&self) -> &'static str {
        match self {
            ExporterConfig::Console(_) => "console",
            ExporterConfig::File(_) => "file",
            ExporterConfig::Otlp(_) => "otlp",
            ExporterConfig::OtlpHttp(_) => "otlphttp",
            ExporterConfig::Prometheus(_) => "prometheus",
            ExporterConfig::Ui(_) => "ui",
        }
    }
}

/// Reads an exporter's settings for the type named by its id.
pub(crate) struct ExporterSeed<'a> {
    pub(crate) id: &'a ComponentId,
}

impl<'de> DeserializeSeed<'de> for ExporterSeed<'_> {
    type Value = ExporterConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.id.kind.as_str() {
            "console" => component_body(deserializer).map(ExporterConfig::Console),
            "file" => component_body(deserializer).map(ExporterConfig::File),
            "otlp" => component_body(deserializer).map(ExporterConfig::Otlp),
            "otlphttp" => component_body(deserializer).map(ExporterConfig::OtlpHttp),
            "prometheus" => component_body(deserializer).map(ExporterConfig::Prometheus),
            "ui" => component_body(deserializer).map(ExporterConfig::Ui),
            other => unknown_kind(deserializer, "exporter", other, ExporterConfig::KINDS),
        }
    }
}

/// `console` exporter: every interval, a table of the busiest flows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleExporterConfig {
    /// Most rows shown per interval (the busiest flows first). Default 20,
    /// at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_rows: usize,
}

impl Default for ConsoleExporterConfig {
    fn default() -> Self {
        ConsoleExporterConfig { max_rows: 20 }
    }
}

/// `file` exporter: one OTLP `ExportMetricsServiceRequest` per line, in the
/// protobuf JSON mapping (like the Collector's file exporter).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// File to write (required). Relative paths are relative to the agent's
    /// working directory. Created if missing, appended to if present.
    #[serde(deserialize_with = "non_empty_path")]
    pub path: PathBuf,
    /// When to start a new file; see [`Rotation`].
    #[serde(default)]
    pub rotation: Rotation,
}

/// Size-based rotation of the `file` exporter's output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rotation {
    /// Rotate once the file reaches this many megabytes (MiB). Default 100,
    /// at least 1.
    #[serde(deserialize_with = "positive_u64")]
    pub max_megabytes: u64,
    /// Rotated files kept besides the current one; older ones are deleted.
    /// 0 keeps none. Default 3.
    pub max_backups: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_megabytes: 100,
            max_backups: 3,
        }
    }
}

/// Temporality of exported sums and histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Each point covers one interval (what the pipeline produces).
    Delta,
    /// Running totals since a per-series start time.
    Cumulative,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip (`Content-Encoding: gzip`, gRPC `grpc-encoding: gzip`).
    Gzip,
    /// zstd (`Content-Encoding: zstd`, gRPC `grpc-encoding: zstd`).
    Zstd,
}

/// Body encoding of `otlphttp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpEncoding {
    /// `application/x-protobuf` (default).
    #[default]
    Proto,
    /// `application/json`, the OTLP protobuf JSON mapping.
    Json,
}

/// TLS client settings, as the Collector's `configtls`. Unset fields fall
/// back to the `OTEL_EXPORTER_OTLP_*` environment variables, then to the
/// defaults named here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// `otlp` only: plaintext gRPC (no TLS at all). Default false. For
    /// `otlphttp` the endpoint's scheme decides (`http://` is plaintext).
    pub insecure: Option<bool>,
    /// Use TLS but accept any server certificate. For tests only. Default false.
    pub insecure_skip_verify: bool,
    /// PEM file of CA certificates to trust instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mTLS (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    pub server_name_override: Option<String>,
}

/// The queue between the pipeline and the exporter (`sending_queue`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendingQueueConfig {
    /// Batches (one per interval) held while the backend is slow or down;
    /// when full the oldest is dropped and counted. Default 100, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub queue_size: usize,
    /// Directory of the persistent queue. When set, every batch is written
    /// there before the pipeline moves on and removed only once the backend
    /// accepted it (or rejected it for good), so a crash or restart loses
    /// nothing accepted. Unset: memory only.
    pub storage: Option<PathBuf>,
    /// Most MiB the persistent queue may take on disk; the oldest batches
    /// are dropped (and counted) beyond it. Default 256, at least 1.
    #[serde(deserialize_with = "positive_u64")]
    pub max_storage_mib: u64,
}

impl Default for SendingQueueConfig {
    fn default() -> Self {
        SendingQueueConfig {
            queue_size: 100,
            storage: None,
            max_storage_mib: 256,
        }
    }
}

/// Retries of a failed request (`retry_on_failure`), as the OTLP
/// specification prescribes: exponential backoff with jitter on retryable
/// errors only, honouring the server's `Retry-After`/`RetryInfo`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retry at all. Default true.
    pub enabled: bool,
    /// Wait before the first retry. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub initial_interval: Duration,
    /// Longest wait between two tries. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub max_interval: Duration,
    /// Give up on a request after this long since its first try (the points
    /// are counted as failed). Default `5m`.
    #[serde(deserialize_with = "duration")]
    pub max_elapsed_time: Duration,
    /// Growth of the wait per try. Default 1.5, at least 1.
    #[serde(deserialize_with = "multiplier")]
    pub multiplier: f64,
    /// Each wait is drawn from `wait * (1 ± randomization_factor)`.
    /// Default 0.5, between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// `otlp` exporter: OTLP/gRPC (`opentelemetry.proto.collector.metrics.v1.MetricsService/Export`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporterConfig {
    /// `host:port` or `http(s)://host:port`. Default from
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`/`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else `https://localhost:4317`.
    pub endpoint: Option<String>,
    /// TLS settings.
    pub tls: TlsClientConfig,
    /// Headers (gRPC metadata) sent with every request, e.g. an API key:
    /// `api-key: ${env:KEY}`. Added to `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Option<Compression>,
    /// Deadline of one request. Default `10s` (or `OTEL_EXPORTER_OTLP_TIMEOUT`).
    #[serde(deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// `delta` (default) or `cumulative` (or
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`).
    pub temporality: Option<Temporality>,
    /// Cumulative only: forget a series not seen for this long, so memory
    /// stays bounded (it restarts with a new start time). Default `5m`.
    #[serde(deserialize_with = "opt_duration")]
    pub series_idle_timeout: Option<Duration>,
    /// Largest encoded request in bytes; bigger batches are split. Default
    /// 4194304 (4 MiB, gRPC's default message limit), at least 1024.
    #[serde(deserialize_with = "opt_request_size")]
    pub max_request_bytes: Option<usize>,
    /// The queue in front of the exporter.
    pub sending_queue: SendingQueueConfig,
    /// Retries of failed requests.
    pub retry_on_failure: RetryConfig,
}

/// `otlphttp` exporter: OTLP/HTTP `POST` of protobuf or JSON.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; requests go to `<endpoint>/v1/metrics`. Default from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `https://localhost:4318`.
    pub endpoint: Option<String>,
    /// Full URL of the metrics endpoint, used as is (wins over `endpoint`).
    /// Default from `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
    pub metrics_endpoint: Option<String>,
    /// `proto` (default) or `json`.
    pub encoding: HttpEncoding,
    /// TLS settings (`insecure` does not apply: use an `http://` endpoint).
    pub tls: TlsClientConfig,
    /// HTTP headers sent with every request, e.g.
    /// `Authorization: Bearer ${env:TOKEN}`.
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Option<Compression>,
    /// Deadline of one request. Default `10s`.
    #[serde(deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// `delta` (default) or `cumulative`.
    pub temporality: Option<Temporality>,
    /// Cumulative only: forget series idle this long. Default `5m`.
    #[serde(deserialize_with = "opt_duration")]
    pub series_idle_timeout: Option<Duration>,
    /// Largest encoded request in bytes; bigger batches are split. Default
    /// 4194304, at least 1024.
    #[serde(deserialize_with = "opt_request_size")]
    pub max_request_bytes: Option<usize>,
    /// The queue in front of the exporter.
    pub sending_queue: SendingQueueConfig,
    /// Retries of failed requests.
    pub retry_on_failure: RetryConfig,
}

/// `prometheus` exporter: serves `/metrics` in the Prometheus text format,
/// names translated as the OpenTelemetry-to-Prometheus compatibility
/// specification says (`network.flow.io` in `By` -> `network_flow_io_bytes_total`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusExporterConfig {
    /// `address:port` to listen on. Default `127.0.0.1:9464`.
    pub endpoint: String,
    /// Prefix added to every metric name (`namespace_`). Default none.
    pub namespace: Option<String>,
    /// Add type and unit suffixes (`_total`, `_bytes`). Default true.
    pub add_metric_suffixes: bool,
    /// Copy every Resource attribute (service.name, process.*) onto the
    /// series as labels. Default true: flowscope's Resources are its local
    /// workloads, and without them series of different processes collide.
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// Forget a series not updated for this long. Default `5m`.
    #[serde(deserialize_with = "duration")]
    pub metric_expiration: Duration,
}

/// `resource_to_telemetry_conversion` (as in the Collector).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceToTelemetry {
    /// Default true.
    pub enabled: bool,
}

impl Default for ResourceToTelemetry {
    fn default() -> Self {
        ResourceToTelemetry { enabled: true }
    }
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        PrometheusExporterConfig {
            endpoint: "127.0.0.1:9464".to_string(),
            namespace: None,
            add_metric_suffixes: true,
            resource_to_telemetry_conversion: ResourceToTelemetry::default(),
            metric_expiration: Duration::from_secs(300),
        }
    }
}

/// `ui` exporter: keeps the last `retention` of metrics in memory and serves
/// the Network Map, Network Analytics and Network Health pages and their
/// JSON API (docs/ui.md). Read-only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiExporterConfig {
    /// `address:port` to listen on. Default `127.0.0.1:8686` (loopback).
    /// Any other address needs `auth.token`: the exporter refuses to start
    /// without one.
    pub endpoint: String,
    /// How much history is kept. Default `1h`, between `1m` and `24h`.
    #[serde(deserialize_with = "ui_retention")]
    pub retention: Duration,
    /// The most recent span kept at the collection interval's resolution;
    /// older data is rolled up per minute. Default `10m`, at most
    /// `retention`.
    #[serde(deserialize_with = "duration")]
    pub full_resolution: Duration,
    /// Most series (Resource, metric, attributes) held; points of new
    /// series beyond it are dropped and counted
    /// (`flowscope.exporter.failed{error.type="series_limit"}`). Default
    /// 10000, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_series: usize,
    /// Access control.
    pub auth: UiAuthConfig,
    /// Thresholds of the Network Health findings.
    pub health: UiHealthConfig,
}

impl Default for UiExporterConfig {
    fn default() -> Self {
        UiExporterConfig {
            endpoint: "127.0.0.1:8686".to_string(),
            retention: Duration::from_secs(3600),
            full_resolution: Duration::from_secs(600),
            max_series: 10_000,
            auth: UiAuthConfig::default(),
            health: UiHealthConfig::default(),
        }
    }
}

/// `ui.auth`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiAuthConfig {
    /// Bearer token every request must carry (`Authorization: Bearer
    /// <token>`, or the cookie the page sets after `/?token=<token>`).
    /// Unset: the `FLOWSCOPE_UI_TOKEN` environment variable, else none
    /// (allowed on loopback only).
    pub token: Option<String>,
}

/// `ui.health`: when a Network Health finding is raised.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiHealthConfig {
    /// Retransmitted segments per transmitted packet above which a
    /// dependency is reported. Default 0.02 (2 %), between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub retransmit_ratio: f64,
    /// Transmitted packets a dependency needs before its retransmit ratio
    /// is judged (a handful of packets says nothing). Default 100.
    pub min_packets: u64,
    /// Probe loss (lost / sent) above which a network path is reported
    /// lossy. Default 0.05 (5 %), between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub path_loss_ratio: f64,
    /// Failed DNS lookups, failed connections or resets a client/server
    /// pair needs in the time range to be reported. Default 1.
    #[serde(deserialize_with = "positive_u64")]
    pub min_failures: u64,
}

impl Default for UiHealthConfig {
    fn default() -> Self {
        UiHealthConfig {
            retransmit_ratio: 0.02,
            min_packets: 100,
            path_loss_ratio: 0.05,
            min_failures: 1,
        }
    }
}

fn ui_retention<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value < Duration::from_secs(60) || value > Duration::from_secs(86_400) {
        return Err(de::Error::custom("must be between 1m and 24h"));
    }
    Ok(value)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn opt_request_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let value = usize::deserialize(d)?;
    if value < 1024 {
        return Err(de::Error::custom("must be at least 1024 bytes"));
    }
    Ok(Some(value))
}

fn multiplier<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !value.is_finite() || value < 1.0 {
        return Err(de::Error::custom("must be a number of at least 1"));
    }
    Ok(value)
}

fn unit_interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(de::Error::custom("must be between 0 and 1"));
    }
    Ok(value)
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if value == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(value)
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = u64::deserialize(d)?;
    if value == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(value)
}

fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let value = PathBuf::deserialize(d)?;
    if value.as_os_str().is_empty() {
        return Err(de::Error::custom("path must not be empty"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str_with_env;

    fn exporter(yaml_body: &str, id: &str) -> Result<ExporterConfig, String> {
        let text = format!(
            "receivers:\n  ebpf:\nexporters:\n  {id}:\n{yaml_body}\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [{id}]\n"
        );
        let loaded = load_str_with_env(&text, "t.yaml", &|v| (v == "KEY").then(|| "s3cret".into()))
            .map_err(|e| e.to_string())?;
        let cid: ComponentId = id.parse().map_err(|e: crate::IdError| e.to_string())?;
        loaded
            .config
            .exporters
            .get(&cid)
            .cloned()
            .ok_or_else(|| "missing".to_string())
    }

    #[test]
    fn otlp_with_everything() {
        let c = exporter(
            "    endpoint: gateway:4317\n    tls:\n      ca_file: /ca.pem\n    headers:\n      api-key: ${env:KEY}\n    compression: zstd\n    timeout: 3s\n    temporality: cumulative\n    sending_queue:\n      queue_size: 7\n      storage: /var/lib/q\n    retry_on_failure:\n      initial_interval: 1s\n      multiplier: 2",
            "otlp/gw",
        )
        .unwrap();
        let ExporterConfig::Otlp(c) = c else {
            panic!("not otlp: {c:?}")
        };
        assert_eq!(c.endpoint.as_deref(), Some("gateway:4317"));
        assert_eq!(c.tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.headers.get("api-key").map(String::as_str), Some("s3cret"));
        assert_eq!(c.compression, Some(Compression::Zstd));
        assert_eq!(c.timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.temporality, Some(Temporality::Cumulative));
        assert_eq!(c.sending_queue.queue_size, 7);
        assert_eq!(c.sending_queue.storage, Some(PathBuf::from("/var/lib/q")));
        assert_eq!(c.sending_queue.max_storage_mib, 256);
        assert_eq!(c.retry_on_failure.initial_interval, Duration::from_secs(1));
        assert_eq!(c.retry_on_failure.multiplier, 2.0);
        assert_eq!(c.retry_on_failure.max_interval, Duration::from_secs(30));
    }

    #[test]
    fn otlphttp_and_prometheus_defaults() {
        let ExporterConfig::OtlpHttp(h) = exporter("    encoding: json", "otlphttp").unwrap()
        else {
            panic!("not otlphttp")
        };
        assert_eq!(h.encoding, HttpEncoding::Json);
        assert_eq!(h.endpoint, None);
        assert!(h.retry_on_failure.enabled);
        let ExporterConfig::Prometheus(p) = exporter("    namespace: fs", "prometheus").unwrap()
        else {
            panic!("not prometheus")
        };
        assert_eq!(p.endpoint, "127.0.0.1:9464");
        assert_eq!(p.namespace.as_deref(), Some("fs"));
        assert!(p.resource_to_telemetry_conversion.enabled);
    }

    #[test]
    fn ui_defaults_and_values() {
        let ExporterConfig::Ui(u) = exporter("    {}", "ui").unwrap() else {
            panic!("not ui")
        };
        assert_eq!(u, UiExporterConfig::default());
        assert_eq!(u.endpoint, "127.0.0.1:8686");
        assert_eq!(u.retention, Duration::from_secs(3600));
        let ExporterConfig::Ui(u) = exporter(
            "    endpoint: 0.0.0.0:9000\n    retention: 30m\n    auth:\n      token: ${env:KEY}\n    health:\n      retransmit_ratio: 0.1",
            "ui",
        )
        .unwrap() else {
            panic!("not ui")
        };
        assert_eq!(u.auth.token.as_deref(), Some("s3cret"));
        assert_eq!(u.retention, Duration::from_secs(1800));
        assert_eq!(u.health.retransmit_ratio, 0.1);
        assert_eq!(u.health.min_packets, 100);
        let e = exporter("    retention: 2d", "ui").unwrap_err();
        assert!(
            e.contains("retention") && e.contains("between 1m and 24h"),
            "{e}"
        );
        let e = exporter("    health:\n      path_loss_ratio: 3", "ui").unwrap_err();
        assert!(e.contains("path_loss_ratio"), "{e}");
    }

    #[test]
    fn rejects_bad_values_with_their_key() {
        let e = exporter("    encoding: json", "otlp").unwrap_err();
        assert!(e.contains("encoding"), "{e}");
        let e = exporter(
            "    retry_on_failure:\n      randomization_factor: 2",
            "otlp",
        )
        .unwrap_err();
        assert!(
            e.contains("randomization_factor") && e.contains("between 0 and 1"),
            "{e}"
        );
        let e = exporter("    compression: brotli", "otlphttp").unwrap_err();
        assert!(e.contains("compression"), "{e}");
    }
}
