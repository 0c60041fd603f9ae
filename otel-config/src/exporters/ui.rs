//! `ui` exporter: the web UI, its login, retention and health thresholds.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::de::duration;
use crate::validate::{positive_f64, positive_u64, positive_usize};

use super::checks::{multiplier, unit_interval};
use super::tls::{ServerTlsConfig, server_tls};

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
    /// Host names (`name` or `name:port`) the pages may be reached by,
    /// besides IP literals, `localhost` and the endpoint's own host: a
    /// reverse proxy's or a DNS name of the node (`flowscope.example.com`).
    /// A request whose `Host` (or `Origin`) names anything else is answered
    /// 403, so a page whose DNS name is rebound to this address cannot read
    /// the API. Default none.
    pub allowed_hosts: Vec<String>,
    /// API queries answered at once; one more is answered 503 (try again)
    /// rather than queued. Default 4, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_concurrent_queries: usize,
    /// Stored slots one API query may read; a query over more is answered
    /// 413 naming `range` to narrow. Default 2000000 (an hour of the
    /// default 10,000 series is about 1.1 million), at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_query_slots: usize,
    /// Thresholds of the Network Health findings.
    pub health: UiHealthConfig,
    /// Serve the pages over HTTPS with this certificate. Default none
    /// (plain HTTP, meant for loopback or behind a TLS-terminating proxy).
    #[serde(deserialize_with = "server_tls")]
    pub tls: Option<ServerTlsConfig>,
}

impl Default for UiExporterConfig {
    fn default() -> Self {
        UiExporterConfig {
            endpoint: "127.0.0.1:8686".to_string(),
            retention: Duration::from_secs(3600),
            full_resolution: Duration::from_secs(600),
            max_series: 10_000,
            auth: UiAuthConfig::default(),
            allowed_hosts: Vec::new(),
            max_concurrent_queries: 4,
            max_query_slots: 2_000_000,
            health: UiHealthConfig::default(),
            tls: None,
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
    /// A path test's TLS certificate with less time left than this is a
    /// warning (an expired one is critical). Default `14d`.
    #[serde(deserialize_with = "duration")]
    pub certificate_warning: Duration,
    /// A rise over the baseline (docs/health.md, "Baselines") is a finding
    /// when this range's value is at least this many times the baseline's:
    /// the retransmit ratio, failed connections, failed DNS lookups.
    /// Default 3, at least 1.
    #[serde(deserialize_with = "multiplier")]
    pub baseline_ratio: f64,
    /// Events (retransmitted segments, failed connections, failed lookups)
    /// a client/server pair needs in this range before a rise over its
    /// baseline is a finding. Default 20, at least 1.
    #[serde(deserialize_with = "positive_u64")]
    pub baseline_min_count: u64,
    /// New connections per second from one client to one server, over the
    /// range, at or above which the pair may be churning. Default 5, a
    /// positive number.
    #[serde(deserialize_with = "positive_f64")]
    pub churn_connections_per_second: f64,
    /// Share of the pair's closed connections that lasted at most 100 ms
    /// (`flowscope.tcp.connection.duration`) at or above which the rate
    /// above is churn. Default 0.5, between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub churn_short_ratio: f64,
}

impl Default for UiHealthConfig {
    fn default() -> Self {
        UiHealthConfig {
            retransmit_ratio: 0.02,
            min_packets: 100,
            path_loss_ratio: 0.05,
            min_failures: 1,
            certificate_warning: Duration::from_secs(14 * 86_400),
            baseline_ratio: 3.0,
            baseline_min_count: 20,
            churn_connections_per_second: 5.0,
            churn_short_ratio: 0.5,
        }
    }
}

pub(super) fn ui_retention<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value < Duration::from_secs(60) || value > Duration::from_secs(86_400) {
        return Err(de::Error::custom("must be between 1m and 24h"));
    }
    Ok(value)
}
