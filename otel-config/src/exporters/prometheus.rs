//! `prometheus` exporter: a scrape endpoint.

use std::time::Duration;

use serde::Deserialize;

use crate::de::duration;

use super::checks::{Unused, listen_address, reject_const_labels, reject_server_tls};

/// `prometheus` exporter: serves `/metrics` in the Prometheus text format,
/// names translated as the OpenTelemetry-to-Prometheus compatibility
/// specification says (`network.flow.io` in `By` -> `network_flow_io_bytes_total`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusExporterConfig {
    /// `address:port` to listen on. Default `127.0.0.1:9464`.
    #[serde(deserialize_with = "listen_address")]
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
    /// Collector, ignored: samples carry no timestamps.
    pub send_timestamps: Unused,
    /// Collector, ignored: the text format 0.0.4 is served.
    pub enable_open_metrics: Unused,
    /// Collector: an error (use Resource attributes).
    #[serde(deserialize_with = "reject_const_labels")]
    pub const_labels: Unused,
    /// Collector: an error (plain HTTP only).
    #[serde(deserialize_with = "reject_server_tls")]
    pub tls: Unused,
    /// Host names (`name` or `name:port`) a scraper may use besides IP
    /// literals, `localhost` and the endpoint's host; any other `Host` is
    /// answered 403 (DNS rebinding, as for the `ui` exporter). Default none.
    pub allowed_hosts: Vec<String>,
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
            send_timestamps: Unused::default(),
            enable_open_metrics: Unused::default(),
            const_labels: Unused::default(),
            tls: Unused::default(),
            allowed_hosts: Vec::new(),
        }
    }
}
