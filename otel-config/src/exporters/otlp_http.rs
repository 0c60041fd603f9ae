//! `otlphttp` exporter: OTLP over HTTP (protobuf or JSON bodies).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::checks::{
    Unused, http_headers, http_url, opt_duration, opt_request_size, reject_auth, reject_proxy,
};
use super::otlp::{Compression, HttpEncoding, Temporality};
use super::queue::{RetryConfig, SendingQueueConfig};
use super::tls::{TlsClientConfig, tls_settings};

/// `otlphttp` exporter: OTLP/HTTP `POST` of protobuf or JSON.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; requests go to `<endpoint>/v1/metrics`. Default from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `https://localhost:4318`.
    #[serde(deserialize_with = "http_url")]
    pub endpoint: Option<String>,
    /// Full URL of the metrics endpoint, used as is (wins over `endpoint`).
    /// Default from `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
    #[serde(deserialize_with = "http_url")]
    pub metrics_endpoint: Option<String>,
    /// `proto` (default) or `json`.
    pub encoding: HttpEncoding,
    /// TLS settings (`insecure` does not apply: use an `http://` endpoint).
    #[serde(deserialize_with = "tls_settings")]
    pub tls: TlsClientConfig,
    /// HTTP headers sent with every request, e.g.
    /// `Authorization: Bearer ${env:TOKEN}`.
    #[serde(deserialize_with = "http_headers")]
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
    /// Collector, ignored: flowscope sends metrics only.
    pub traces_endpoint: Unused,
    /// Collector, ignored: flowscope sends metrics only.
    pub logs_endpoint: Unused,
    /// Collector, ignored: flowscope sends metrics only.
    pub profiles_endpoint: Unused,
    /// Collector, ignored: connection pool and buffer tuning.
    pub read_buffer_size: Unused,
    /// Collector, ignored.
    pub write_buffer_size: Unused,
    /// Collector, ignored.
    pub max_idle_conns: Unused,
    /// Collector, ignored.
    pub max_idle_conns_per_host: Unused,
    /// Collector, ignored.
    pub max_conns_per_host: Unused,
    /// Collector, ignored.
    pub idle_conn_timeout: Unused,
    /// Collector, ignored.
    pub disable_keep_alives: Unused,
    /// Collector, ignored.
    pub http2_read_idle_timeout: Unused,
    /// Collector, ignored.
    pub http2_ping_timeout: Unused,
    /// Collector, ignored: compression level.
    pub compression_params: Unused,
    /// Collector, ignored: no cookies are kept.
    pub cookies: Unused,
    /// Collector: an error (no authenticator extensions; use `headers`).
    #[serde(deserialize_with = "reject_auth")]
    pub auth: Unused,
    /// Collector: an error (no proxy support).
    #[serde(deserialize_with = "reject_proxy")]
    pub proxy_url: Unused,
}

impl OtlpHttpExporterConfig {
    pub(super) fn unused(&self, out: &mut Vec<String>) {
        self.tls.unused("tls.", out);
        self.sending_queue.unused("", out);
        for (u, key) in [
            (self.traces_endpoint, "traces_endpoint"),
            (self.logs_endpoint, "logs_endpoint"),
            (self.profiles_endpoint, "profiles_endpoint"),
            (self.read_buffer_size, "read_buffer_size"),
            (self.write_buffer_size, "write_buffer_size"),
            (self.max_idle_conns, "max_idle_conns"),
            (self.max_idle_conns_per_host, "max_idle_conns_per_host"),
            (self.max_conns_per_host, "max_conns_per_host"),
            (self.idle_conn_timeout, "idle_conn_timeout"),
            (self.disable_keep_alives, "disable_keep_alives"),
            (self.http2_read_idle_timeout, "http2_read_idle_timeout"),
            (self.http2_ping_timeout, "http2_ping_timeout"),
            (self.compression_params, "compression_params"),
            (self.cookies, "cookies"),
        ] {
            u.note("", key, out);
        }
    }
}
