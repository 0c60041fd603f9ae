//! `prometheusremotewrite` exporter: Prometheus remote write 1.0.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::de::duration;

use super::checks::{Unused, http_headers, parse_http_url, request_size};
use super::queue::{RetryConfig, SendingQueueConfig};
use super::tls::{TlsClientConfig, tls_settings};

/// `prometheusremotewrite` exporter: `POST`s the metrics, translated to
/// Prometheus names and labels exactly as the `prometheus` exporter does,
/// as snappy-compressed protobuf `WriteRequest`s (remote write 1.0) to
/// Prometheus (`--web.enable-remote-write-receiver`), Mimir, Cortex, Thanos
/// Receive or VictoriaMetrics. Keys and defaults as the Collector's exporter
/// of that name, except where noted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRemoteWriteExporterConfig {
    /// The remote-write URL (required), e.g.
    /// `http://127.0.0.1:9090/api/v1/write`; `https://` uses `tls`.
    #[serde(deserialize_with = "required_http_url")]
    pub endpoint: String,
    /// HTTP headers sent with every request, e.g. `X-Scope-OrgID: team-a`
    /// (Mimir's tenant) or `Authorization: Bearer ${env:TOKEN}`.
    #[serde(default, deserialize_with = "http_headers")]
    pub headers: BTreeMap<String, String>,
    /// TLS settings (`insecure` does not apply: use an `http://` endpoint).
    #[serde(default, deserialize_with = "tls_settings")]
    pub tls: TlsClientConfig,
    /// Deadline of one request. Default `5s`.
    #[serde(default = "remote_write_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The queue in front of the exporter (`storage` makes it persistent).
    #[serde(default)]
    pub sending_queue: SendingQueueConfig,
    /// Retries of requests answered 5xx or 429, or not answered at all.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// Copy every Resource attribute onto every series as a label. Default
    /// false (as in the Collector): the Resource goes on `target_info`.
    #[serde(default)]
    pub resource_to_telemetry_conversion: RemoteWriteResourceToTelemetry,
    /// Labels added to every series, e.g. `cluster: prod-eu` (a label the
    /// series already has keeps its own value). Names must be valid
    /// Prometheus label names not starting with `__`; values not empty.
    #[serde(default, deserialize_with = "external_labels")]
    pub external_labels: BTreeMap<String, String>,
    /// Prefix added to every metric name (`namespace_`). Default none.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Add type and unit suffixes (`_total`, `_bytes`). Default true.
    #[serde(default = "yes")]
    pub add_metric_suffixes: bool,
    /// One `target_info` series per Resource, carrying its attributes.
    #[serde(default)]
    pub target_info: TargetInfo,
    /// Collector: its own queue of concurrent requests. flowscope sends one
    /// request at a time, in order, from `sending_queue` (out-of-order
    /// samples would be refused by the storage), so its keys (`enabled`,
    /// `queue_size`, `num_consumers`) are accepted and ignored.
    #[serde(default)]
    pub remote_write_queue: RemoteWriteQueueConfig,
    /// Largest uncompressed `WriteRequest` in bytes; a bigger batch is split
    /// into several requests (whole data points, in order). Default 3000000
    /// (the Collector's), at least 1024.
    #[serde(default = "remote_write_max_batch", deserialize_with = "request_size")]
    pub max_batch_size_bytes: usize,
}

pub(super) fn yes() -> bool {
    true
}

pub(super) fn remote_write_timeout() -> Duration {
    Duration::from_secs(5)
}

pub(super) fn remote_write_max_batch() -> usize {
    3_000_000
}

/// `prometheusremotewrite.resource_to_telemetry_conversion`: as the
/// `prometheus` exporter's, but off by default (the Collector's default for
/// this exporter).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteResourceToTelemetry {
    /// Default false.
    pub enabled: bool,
}

/// `prometheusremotewrite.target_info`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetInfo {
    /// Send one `target_info` series (value 1) per Resource, labelled with
    /// its attributes plus `job`/`instance`. Default true.
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        TargetInfo { enabled: true }
    }
}

/// `prometheusremotewrite.remote_write_queue`: the Collector's concurrency
/// settings, accepted and ignored (one warning names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteQueueConfig {
    /// Collector, ignored: the `sending_queue` is always on.
    pub enabled: Unused,
    /// Collector, ignored: `sending_queue.queue_size` bounds the queue.
    pub queue_size: Unused,
    /// Collector, ignored: one request at a time keeps samples in order.
    pub num_consumers: Unused,
}

impl PrometheusRemoteWriteExporterConfig {
    /// The settings with every default and `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        PrometheusRemoteWriteExporterConfig {
            endpoint: endpoint.into(),
            headers: BTreeMap::new(),
            tls: TlsClientConfig::default(),
            timeout: remote_write_timeout(),
            sending_queue: SendingQueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            resource_to_telemetry_conversion: RemoteWriteResourceToTelemetry::default(),
            external_labels: BTreeMap::new(),
            namespace: None,
            add_metric_suffixes: true,
            target_info: TargetInfo::default(),
            remote_write_queue: RemoteWriteQueueConfig::default(),
            max_batch_size_bytes: remote_write_max_batch(),
        }
    }

    pub(super) fn unused(&self, out: &mut Vec<String>) {
        self.tls.unused("tls.", out);
        self.sending_queue.unused("", out);
        let q = &self.remote_write_queue;
        q.enabled.note("remote_write_queue.", "enabled", out);
        q.queue_size.note("remote_write_queue.", "queue_size", out);
        q.num_consumers
            .note("remote_write_queue.", "num_consumers", out);
    }
}

/// Whether `name` is a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn external_labels<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (k, v) in &map {
        if !is_label_name(k) {
            return Err(de::Error::custom(format_args!(
                "`{k}` is not a Prometheus label name (letters, digits and `_`, not starting \
                 with a digit)"
            )));
        }
        if k.starts_with("__") {
            return Err(de::Error::custom(format_args!(
                "`{k}`: label names starting with `__` are reserved for Prometheus"
            )));
        }
        if v.is_empty() {
            return Err(de::Error::custom(format_args!(
                "the value of `{k}` is empty; Prometheus treats an empty label as absent"
            )));
        }
    }
    Ok(map)
}

pub(super) fn required_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    parse_http_url(&text).map_err(de::Error::custom)?;
    Ok(text)
}
