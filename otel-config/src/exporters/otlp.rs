//! `otlp` exporter (OTLP over gRPC) and the settings both OTLP exporters
//! share (temporality, compression, HTTP body encoding).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::checks::{
    Unused, grpc_endpoint, grpc_headers, opt_duration, opt_request_size, reject_auth,
    reject_authority,
};
use super::queue::{RetryConfig, SendingQueueConfig};
use super::tls::{TlsClientConfig, tls_settings};

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

/// `otlp` exporter: OTLP/gRPC (`opentelemetry.proto.collector.metrics.v1.MetricsService/Export`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporterConfig {
    /// `host:port` or `http(s)://host:port`. Default from
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`/`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else `https://localhost:4317`.
    #[serde(deserialize_with = "grpc_endpoint")]
    pub endpoint: Option<String>,
    /// TLS settings.
    #[serde(deserialize_with = "tls_settings")]
    pub tls: TlsClientConfig,
    /// Headers (gRPC metadata) sent with every request, e.g. an API key:
    /// `api-key: ${env:KEY}`. Added to `OTEL_EXPORTER_OTLP_HEADERS`.
    #[serde(deserialize_with = "grpc_headers")]
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
    /// Collector, ignored: one connection to the endpoint's address.
    pub balancer_name: Unused,
    /// Collector, ignored: HTTP/2 keepalive pings.
    pub keepalive: Unused,
    /// Collector, ignored: a request waits for the connection anyway.
    pub wait_for_ready: Unused,
    /// Collector, ignored: socket buffer sizes.
    pub read_buffer_size: Unused,
    /// Collector, ignored: socket buffer sizes.
    pub write_buffer_size: Unused,
    /// Collector, ignored: compression level.
    pub compression_params: Unused,
    /// Collector: an error (no authenticator extensions; use `headers`).
    #[serde(deserialize_with = "reject_auth")]
    pub auth: Unused,
    /// Collector: an error (see `tls.server_name_override`).
    #[serde(deserialize_with = "reject_authority")]
    pub authority: Unused,
}

impl OtlpExporterConfig {
    pub(super) fn unused(&self, out: &mut Vec<String>) {
        self.tls.unused("tls.", out);
        self.sending_queue.unused("", out);
        self.balancer_name.note("", "balancer_name", out);
        self.keepalive.note("", "keepalive", out);
        self.wait_for_ready.note("", "wait_for_ready", out);
        self.read_buffer_size.note("", "read_buffer_size", out);
        self.write_buffer_size.note("", "write_buffer_size", out);
        self.compression_params.note("", "compression_params", out);
    }
}
