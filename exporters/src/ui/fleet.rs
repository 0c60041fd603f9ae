//! Fleet mode: the same pages and `/api/` over a Prometheus HTTP query API
//! (Prometheus, Thanos, Mimir, VictoriaMetrics) that every agent writes to
//! (`prometheusremotewrite`) or that scrapes every agent (`prometheus`).
//!
//! # How a page is answered
//! For each request, the metrics the pages read are asked of the storage
//! with one instant query each (one range query each for time series),
//! aggregated there: `sum by (<labels the page needs>)` of the increase of
//! each counter in the time range. The answer holds one series per
//! dependency and peer address, never the agents' raw series (process ids,
//! instances). Those aggregated series are put into a [`Store`] of their
//! own, and the page is computed from it by the same code as on one node
//! ([`super::query`]), so both modes give the same JSON fields.
//!
//! The increase is exact, not extrapolated: for a cumulative counter it is
//! the last value in the range minus the value at its start, or the last
//! value for a series born inside the range (its counter starts at zero),
//! or the last value alone after a counter reset (an agent restart).
//! Prometheus' `increase()` extrapolates to the range's edges, which would
//! make byte counts approximate.
//!
//! # Joined across nodes, counted once
//! Every agent reports each flow from its own side. A connection from `web`
//! on node A to `api` on node B is reported by A (client, peer = B's
//! address) and by B (server, peer = A's address). Each report carries the
//! local address (`network.local.address`), so the fleet knows which
//! workload has which address:
//! - a client report whose server is a bare address is named after the
//!   workload that serves that address and port (its `service.name`,
//!   `host.name`, `k8s.node.name` become the peer's);
//! - a server report whose client is a workload that reports the same
//!   connection itself is named after it, which makes it a report of a
//!   monitored client: the dependency views then count the client's report
//!   only, exactly as on one node.
//!
//! # Recording rules
//! deploy/prometheus/flowscope-fleet-rules.yaml records, every minute, each
//! flow counter's exact increase over that minute summed by the labels the
//! pages need (`flowscope:<name>:increase1m`). When a request groups only
//! by those labels and the storage has the rules' series, the pages read
//! `sum_over_time` of them instead of the agents' raw series: far fewer
//! series to read, at the cost of up to a minute's lag. Without the rules
//! (or with `--recording-rules off`) the raw series are read.
//!
//! # Bounds
//! An answer of more than `max_series` series is refused with a message
//! naming the parameter to narrow (`range`); an answer body over
//! [`MAX_ANSWER_BYTES`] is refused as it streams in, before it is held
//! whole (an error naming the storage, 502); and a storage that does not
//! answer within the timeout is an error on the page and in `/api/` (502),
//! never a hang. User parameters never enter PromQL: label names come from
//! a fixed list or are checked against the storage's own label names, and
//! filters are applied to the aggregated answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flowscope_model::metrics::{
    DNS_DURATION, FLOW_DROPS, FLOW_IO, FLOW_PACKETS, HOST_DROPS, TCP_CLOSED, TCP_DURATION,
    TCP_FAILED, TCP_OPENED, TCP_RESETS, TCP_RETRANSMITS, TCP_RTT,
};
use flowscope_model::names::{attr, k8s, path, resource};
use flowscope_model::{Attrs, Histogram, Kind, MetricBatch, MetricId, Point, PointValue};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value as Json;

use super::store::Store;
use crate::prometheus::{Options, metric_name, sanitize};

/// The Network Path metrics the Health page reads.
const PATH_REACHABLE: MetricId = MetricId::gauge(path::REACHABLE);
const PATH_PROBES_SENT: MetricId = MetricId::sum(path::PROBES_SENT);
const PATH_PROBES_LOST: MetricId = MetricId::sum(path::PROBES_LOST);

/// The metrics the pages read, each with the labels it is summed by
/// (besides the keys a request groups or filters by).
const FLOW_LABELS: &[&str] = &[
    resource::SERVICE_NAME,
    resource::HOST_NAME,
    k8s::NODE_NAME,
    attr::FLOW_ROLE,
    attr::IO_DIRECTION,
    attr::PEER_ADDRESS,
    attr::PEER_PORT,
    attr::LOCAL_PORT,
    attr::LOCAL_ADDRESS,
    attr::PEER_SERVICE_NAME,
    attr::LOCALITY,
    attr::ERROR_TYPE,
];
const DNS_LABELS: &[&str] = &[
    resource::SERVICE_NAME,
    attr::FLOW_ROLE,
    attr::SERVER_ADDRESS,
    attr::ERROR_TYPE,
    attr::DNS_RESPONSE_CODE,
    attr::DNS_QUESTION_NAME,
];
const PATH_LABELS: &[&str] = &[attr::SERVER_ADDRESS];
/// The path tests' TLS checks: one certificate per server, port and subject.
const TLS_TIME_LEFT: MetricId = MetricId::gauge(path::TLS_TIME_LEFT);
const TLS_LABELS: &[&str] = &[
    path::SERVER_ADDRESS,
    path::SERVER_PORT,
    path::TLS_SUBJECT,
    path::TLS_NOT_AFTER,
];

/// Kernel drops for the Health page: the flow labels and the reason.
const DROP_LABELS: &[&str] = &[
    resource::SERVICE_NAME,
    resource::HOST_NAME,
    k8s::NODE_NAME,
    attr::FLOW_ROLE,
    attr::IO_DIRECTION,
    attr::PEER_ADDRESS,
    attr::PEER_PORT,
    attr::LOCAL_PORT,
    attr::LOCAL_ADDRESS,
    attr::PEER_SERVICE_NAME,
    attr::DROP_REASON,
];
const HOST_DROP_LABELS: &[&str] = &[resource::HOST_NAME, attr::DROP_REASON];

fn wanted() -> [(MetricId, &'static [&'static str]); 16] {
    [
        (FLOW_IO, FLOW_LABELS),
        (TCP_DURATION, FLOW_LABELS),
        (FLOW_PACKETS, FLOW_LABELS),
        (TCP_RETRANSMITS, FLOW_LABELS),
        (TCP_OPENED, FLOW_LABELS),
        (TCP_CLOSED, FLOW_LABELS),
        (TCP_FAILED, FLOW_LABELS),
        (TCP_RESETS, FLOW_LABELS),
        (TCP_RTT, FLOW_LABELS),
        (DNS_DURATION, DNS_LABELS),
        (PATH_REACHABLE, PATH_LABELS),
        (PATH_PROBES_SENT, PATH_LABELS),
        (PATH_PROBES_LOST, PATH_LABELS),
        (TLS_TIME_LEFT, TLS_LABELS),
        (FLOW_DROPS, DROP_LABELS),
        (HOST_DROPS, HOST_DROP_LABELS),
    ]
}

/// Keys the fleet knows by name besides those the queries sum by, so that
/// their label (`service_name`) maps back to the key (`service.name`); any
/// other label is kept as it is.
const OTHER_KNOWN_KEYS: &[&str] = &[
    resource::SERVICE_NAMESPACE,
    resource::SERVICE_VERSION,
    resource::HOST_ID,
    resource::OS_TYPE,
    resource::PROCESS_PID,
    resource::CONTAINER_ID,
    resource::CLOUD_PROVIDER,
    resource::CLOUD_REGION,
    resource::CLOUD_AVAILABILITY_ZONE,
    resource::K8S_NAMESPACE_NAME,
    k8s::POD_NAME,
    k8s::CONTAINER_NAME,
    k8s::DEPLOYMENT_NAME,
    k8s::STATEFULSET_NAME,
    k8s::DAEMONSET_NAME,
    k8s::JOB_NAME,
    k8s::CLUSTER_NAME,
    k8s::PEER_SERVICE_NAMESPACE,
    attr::NETWORK_TRANSPORT,
    attr::NETWORK_TYPE,
    attr::PEER_DOMAIN,
    attr::PEER_CLOUD_PROVIDER,
    attr::PEER_CLOUD_REGION,
    attr::PEER_CLOUD_SERVICE,
];

/// Labels that are the storage's or the translation's, never a key.
const NOT_KEYS: &[&str] = &["__name__", "job", "instance", "le"];

/// Whether a key belongs to the Resource (the local workload) rather than
/// to the flow: the query code reads the two sides differently.
fn is_resource_key(key: &str) -> bool {
    if key.starts_with("service.peer.") {
        return false;
    }
    [
        "service.",
        "host.",
        "os.",
        "process.",
        "container.",
        "k8s.",
        "cloud.",
        "deployment.",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

/// Why the storage could not answer.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("`{url}` is not an http:// or https:// URL of a Prometheus query API")]
    Url { url: String },
    #[error("the Prometheus API at {url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the Prometheus API at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("the Prometheus API at {url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "{url} is not a Prometheus query API: its answer is not Prometheus JSON \
         ({reason})"
    )]
    NotPrometheus { url: String, reason: String },
    #[error("the storage refused the query ({error_type}): {error}")]
    Query { error_type: String, error: String },
    #[error(
        "the answer would hold more than {limit} series (at least {series}): narrow the \
         time range (`range`, `from`/`to`)"
    )]
    TooLarge { series: usize, limit: usize },
    #[error("the Prometheus API at {url} answered more than {limit} bytes; refused")]
    AnswerTooLarge { url: String, limit: usize },
}

/// The largest answer body the UI reads from the storage: about ten times
/// the largest measured (25 MB, the RTT buckets of 110,000 series from
/// Prometheus at 100 simulated nodes). A larger one is refused as it
/// arrives, so a storage (or anything answering at its address) cannot
/// make the UI hold more.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

impl FleetError {
    /// The HTTP status the API answers this error with.
    pub fn status(&self) -> StatusCode {
        match self {
            FleetError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The parameter a user should change, as the API's errors name one.
    pub fn parameter(&self) -> &'static str {
        match self {
            FleetError::TooLarge { .. } => "range",
            _ => "prometheus",
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A Prometheus HTTP query API the pages read.
pub struct Fleet {
    /// Base URL without a trailing `/` (`http://prometheus:9090`).
    base: String,
    client: HttpClient,
    timeout: Duration,
    max_series: usize,
    /// label -> key for the known keys.
    keys_by_label: HashMap<String, &'static str>,
    /// Read the recording rules' series when they are there.
    rules: bool,
}

/// What a page reads from the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Label names only (`/api/keys`, `/api/status`).
    Keys,
    /// The dependency metrics with RTT (Map, Analytics, time series).
    Dependencies,
    /// The dependency counts without RTT, with the connection durations
    /// (churn), DNS and paths (Health), and the baseline spans' counts.
    Health,
    /// Every Network Path metric per test and hop, one slot per step (the
    /// Paths page: [`Fleet::load_paths`]).
    Paths,
}

impl Need {
    fn reads(self, m: MetricId) -> bool {
        match self {
            Need::Keys => false,
            Need::Dependencies => ![
                TCP_DURATION,
                DNS_DURATION,
                PATH_REACHABLE,
                PATH_PROBES_SENT,
                PATH_PROBES_LOST,
                TLS_TIME_LEFT,
                FLOW_DROPS,
                HOST_DROPS,
            ]
            .contains(&m),
            Need::Health => m != TCP_RTT,
            Need::Paths => false,
        }
    }
}

/// A request's time range, in unix ns, `(from, to]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: u64,
    pub to: u64,
}

const NS: u64 = 1_000_000_000;

impl Fleet {
    /// A client of the query API at `url` (`http://host:9090`, or with a
    /// path prefix such as Mimir's `/prometheus`).
    pub fn new(url: &str, timeout: Duration, max_series: usize) -> Result<Self, FleetError> {
        let base = url.trim().trim_end_matches('/').to_string();
        let ok = (base.starts_with("http://") || base.starts_with("https://"))
            && base.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
        if !ok {
            return Err(FleetError::Url {
                url: url.to_string(),
            });
        }
        let connector = crate::tls::connector(&Default::default(), false).map_err(|e| {
            FleetError::Unreachable {
                url: base.clone(),
                reason: e.to_string(),
            }
        })?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let keys_by_label = [
            FLOW_LABELS,
            DNS_LABELS,
            PATH_LABELS,
            TLS_LABELS,
            HOST_DROP_LABELS,
            OTHER_KNOWN_KEYS,
            PATH_VIEW_KEYS,
        ]
        .concat()
        .into_iter()
        .map(|k| (sanitize(k, false), k))
        .collect();
        Ok(Fleet {
            base,
            client,
            timeout,
            max_series,
            keys_by_label,
            rules: true,
        })
    }

    /// Whether to read the recording rules' series when present (default
    /// on).
    pub fn with_rules(mut self, on: bool) -> Self {
        self.rules = on;
        self
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The key a label stands for.
    fn key_of<'a>(&self, label: &'a str) -> std::borrow::Cow<'a, str> {
        if let Some(k) = self.keys_by_label.get(label) {
            return std::borrow::Cow::Borrowed(k);
        }
        if let Some(tag) = label.strip_prefix("flowscope_peer_tag_") {
            return std::borrow::Cow::Owned(format!("{}{tag}", attr::PEER_TAG_PREFIX));
        }
        std::borrow::Cow::Borrowed(label)
    }

    /// POSTs a form to `path` and returns the `data` of a successful
    /// Prometheus answer.
    async fn call(&self, path: &str, form: &[(&str, String)]) -> Result<Json, FleetError> {
        let url = format!("{}{path}", self.base);
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            body.append_pair(k, v);
        }
        let req = Request::post(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("flowscope-ui/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.finish())))
            .map_err(|e| FleetError::Url {
                url: format!("{url} ({e})"),
            })?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FleetError::Unreachable {
                    url: url.clone(),
                    reason: crate::http::chain(&e),
                })?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FleetError::AnswerTooLarge {
                            url: url.clone(),
                            limit: MAX_ANSWER_BYTES,
                        }
                    } else {
                        FleetError::Unreachable {
                            url: url.clone(),
                            reason: e.to_string(),
                        }
                    }
                })?
                .to_bytes();
            Ok::<_, FleetError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| FleetError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })??;
        let parsed: Result<Json, _> = serde_json::from_slice(&bytes);
        match parsed {
            Ok(j) if j.get("status").and_then(Json::as_str) == Some("success") => {
                Ok(j.get("data").cloned().unwrap_or(Json::Null))
            }
            Ok(j) if j.get("status").and_then(Json::as_str) == Some("error") => {
                Err(FleetError::Query {
                    error_type: str_of(&j, "errorType"),
                    error: str_of(&j, "error"),
                })
            }
            _ if !status.is_success() => Err(FleetError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            }),
            Ok(_) => Err(FleetError::NotPrometheus {
                url,
                reason: "no `status` field".into(),
            }),
            Err(e) => Err(FleetError::NotPrometheus {
                url,
                reason: e.to_string(),
            }),
        }
    }

    /// Every label name the flow series carry in `range`.
    async fn label_names(&self, r: Range) -> Result<Vec<String>, FleetError> {
        let name = prom_name(FLOW_IO);
        let data = self
            .call(
                "/api/v1/labels",
                &[
                    ("match[]", name),
                    ("start", secs(r.from)),
                    ("end", secs(r.to)),
                ],
            )
            .await?;
        let names = data.as_array().ok_or_else(|| FleetError::NotPrometheus {
            url: format!("{}/api/v1/labels", self.base),
            reason: "`data` is not a list of label names".into(),
        })?;
        Ok(names
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect())
    }

    /// The store a request over `range` reads for `need`, with
    /// `extra_keys` (the keys it groups or filters by) summed by as well,
    /// and with one slot per `step` when given (time series), else one slot
    /// for the whole range.
    pub fn store(
        &self,
        need: Need,
        range: Range,
        extra_keys: &[String],
        step: Option<u64>,
    ) -> Result<Store, FleetError> {
        let handle = tokio::runtime::Handle::current();
        if need == Need::Paths {
            return handle.block_on(self.load_paths(range, step));
        }
        handle.block_on(self.load(need, range, extra_keys, step))
    }

    /// One metric's aggregated samples.
    async fn fetch(
        &self,
        metric: MetricId,
        by: &BTreeSet<String>,
        from_rules: bool,
        range: Range,
        step: Option<u64>,
    ) -> Result<Vec<Sample>, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        match step {
            None => {
                let q = if from_rules {
                    rule_query(metric, by, span)
                } else {
                    expr(metric, by, span)
                };
                let data = self
                    .call("/api/v1/query", &[("query", q), ("time", secs(range.to))])
                    .await?;
                Ok(vector(&data, range.to))
            }
            Some(step) => self.query_range(expr(metric, by, step), range, step).await,
        }
    }

    /// A range query's samples: one per `step` after `range.from`, up to
    /// `range.to`.
    async fn query_range(
        &self,
        q: String,
        range: Range,
        step: u64,
    ) -> Result<Vec<Sample>, FleetError> {
        let data = self
            .call(
                "/api/v1/query_range",
                &[
                    ("query", q),
                    ("start", secs(range.from + step)),
                    ("end", secs(range.to)),
                    ("step", secs(step)),
                ],
            )
            .await?;
        Ok(matrix(&data))
    }

    /// The baseline metrics' samples over the two baseline spans of
    /// `range` ([`super::baseline::held_spans`]): the same increase as the
    /// range's, shifted back with PromQL `offset` (one span, one day), and
    /// stamped with the baseline span's end, so that the Health store holds
    /// them where the single-node store would.
    ///
    /// A span is held when the storage had any flow series in the hour
    /// before it started (an agent was writing then): its samples, and the
    /// start of the earliest held span ([`Store::hold_from`]). A span
    /// without a held start is not compared with.
    async fn fetch_baselines(
        &self,
        range: Range,
        by_of: &(dyn Fn(&[&str]) -> BTreeSet<String> + Sync),
    ) -> Result<(Vec<(MetricId, Vec<Sample>)>, Option<u64>), FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        let mut metrics: Vec<MetricId> = Vec::new();
        for m in super::baseline::METRICS.iter().flat_map(|b| b.reads) {
            if !metrics.contains(m) {
                metrics.push(*m);
            }
        }
        let mut held = None;
        for offset in [span, super::baseline::DAY_NS] {
            let q = format!(
                "count(last_over_time({}[1h] offset {}s))",
                prom_name(FLOW_IO),
                (offset + span) / NS
            );
            let data = self
                .call("/api/v1/query", &[("query", q), ("time", secs(range.to))])
                .await?;
            if !vector(&data, range.to).is_empty() {
                let start = range.from.saturating_sub(offset);
                held = Some(held.map_or(start, |h: u64| h.min(start)));
            }
        }
        let Some(held) = held else {
            return Ok((Vec::new(), None));
        };
        let mut asks = Vec::new();
        for offset in [span, super::baseline::DAY_NS] {
            if range.from.saturating_sub(offset) < held {
                continue;
            }
            for m in &metrics {
                let base = wanted()
                    .into_iter()
                    .find(|(w, _)| w == m)
                    .map_or(FLOW_LABELS, |(_, b)| b);
                asks.push((*m, expr_offset(*m, &by_of(base), span, offset), offset));
            }
        }
        let answers = futures_util::future::try_join_all(asks.into_iter().map(|(m, q, offset)| {
            let at = range.to.saturating_sub(offset);
            async move {
                let data = self
                    .call("/api/v1/query", &[("query", q), ("time", secs(range.to))])
                    .await?;
                Ok::<_, FleetError>((m, vector(&data, at)))
            }
        }))
        .await?;
        let answers = answers.into_iter().filter(|(_, r)| !r.is_empty()).collect();
        Ok((answers, Some(held)))
    }

    async fn load(
        &self,
        need: Need,
        range: Range,
        extra_keys: &[String],
        step: Option<u64>,
    ) -> Result<Store, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        // Health also holds the baseline spans: the span before and the
        // same span a day earlier (module documentation, "Baselines").
        let kept = if need == Need::Health && step.is_none() {
            2 * span + super::baseline::DAY_NS
        } else {
            span
        };
        // All at full resolution: a rollup to whole minutes would move a
        // baseline slot's end into the range.
        let mut st = Store::new(kept, kept, self.max_series.max(1)).with_default_span(span);
        let labels = self.label_names(range).await?;
        let present: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
        for l in &labels {
            if !NOT_KEYS.contains(&l.as_str()) {
                st.add_key(&self.key_of(l));
            }
        }
        // Only labels the storage has: a user's key that no series carries
        // never reaches PromQL.
        let extra: Vec<String> = extra_keys
            .iter()
            .map(|k| sanitize(k, false))
            .filter(|l| present.contains(l.as_str()))
            .collect();
        let by_of = |base: &[&str]| -> BTreeSet<String> {
            let mut by: BTreeSet<String> = base.iter().map(|k| sanitize(k, false)).collect();
            by.extend(extra.iter().cloned());
            by
        };
        let flow_labels: BTreeSet<String> =
            FLOW_LABELS.iter().map(|k| sanitize(k, false)).collect();
        // The rules carry only the flow labels: a request grouping by
        // anything else reads the raw series.
        let mut rules =
            self.rules && step.is_none() && extra.iter().all(|l| flow_labels.contains(l));
        let wanted: Vec<(MetricId, &'static [&'static str])> = wanted()
            .into_iter()
            .filter(|(m, _)| need.reads(*m))
            .collect();
        if wanted.is_empty() {
            return Ok(st);
        }
        // Bytes first: whether the rules' series are there decides how the
        // others are read.
        let flow_by = by_of(FLOW_LABELS);
        let mut first = self.fetch(FLOW_IO, &flow_by, rules, range, step).await?;
        if rules && first.is_empty() {
            rules = false;
            first = self.fetch(FLOW_IO, &flow_by, false, range, step).await?;
        }
        // The rest at once, with Health's route changes and baseline spans:
        // the storage answers them in parallel.
        let rest =
            futures_util::future::try_join_all(wanted.iter().filter(|(m, _)| *m != FLOW_IO).map(
                |(m, base)| {
                    let by = by_of(base);
                    let from_rules = rules && RULE_METRICS.contains(m);
                    async move {
                        self.fetch(*m, &by, from_rules, range, step)
                            .await
                            .map(|r| (*m, r))
                    }
                },
            ));
        let routes = async {
            match need {
                Need::Health => self
                    .route_changes(range)
                    .await
                    .map(|r| Some((MetricId::sum(path::ROUTE_CHANGES), r))),
                _ => Ok(None),
            }
        };
        let baselines = async {
            if kept > span {
                self.fetch_baselines(range, &by_of).await
            } else {
                Ok((Vec::new(), None))
            }
        };
        let (mut rest, routes, (baselines, held_from)) =
            futures_util::future::try_join3(rest, routes, baselines).await?;
        rest.extend(routes);
        let series = first.len()
            + rest.iter().map(|(_, r)| r.len()).sum::<usize>()
            + baselines.iter().map(|(_, r)| r.len()).sum::<usize>();
        if series > self.max_series {
            return Err(FleetError::TooLarge {
                series,
                limit: self.max_series,
            });
        }
        let mut batches: std::collections::BTreeMap<u64, MetricBatch> =
            std::collections::BTreeMap::new();
        let width = step.unwrap_or(span);
        self.points(FLOW_IO, first, width, &mut batches);
        for (m, r) in rest.into_iter().chain(baselines) {
            self.points(m, r, width, &mut batches);
        }
        for (_, mut b) in batches {
            join(&mut b.points);
            st.insert(&b);
        }
        if let Some(start) = held_from {
            st.hold_from(start);
        }
        Ok(st)
    }

    /// Turns answered samples into points of `metric`, one batch per
    /// timestamp; histogram buckets (`le`) fold into one point per series.
    fn points(
        &self,
        metric: MetricId,
        samples: Vec<(HashMap<String, String>, u64, f64)>,
        width: u64,
        batches: &mut std::collections::BTreeMap<u64, MetricBatch>,
    ) {
        // (timestamp, series labels without `le`) -> (le, cumulative count).
        type Buckets = HashMap<(u64, Vec<(String, String)>), Vec<(f64, f64)>>;
        let mut hists: Buckets = HashMap::new();
        for (labels, t, v) in samples {
            if metric.kind == Kind::Histogram {
                let le = labels.get("le").and_then(|l| parse_le(l));
                let Some(le) = le else { continue };
                let mut key: Vec<(String, String)> = labels
                    .into_iter()
                    .filter(|(k, _)| k != "le" && k != "__name__")
                    .collect();
                key.sort();
                hists.entry((t, key)).or_default().push((le, v));
                continue;
            }
            let value = match metric.kind {
                Kind::Gauge => PointValue::Double(v),
                _ => PointValue::Int(v.max(0.0).round() as u64),
            };
            let (resource, attrs) = self.split(labels.iter());
            push(batches, t, width, metric, resource, attrs, value);
        }
        for ((t, labels), mut buckets) in hists {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let Some(h) = histogram(&buckets) else {
                continue;
            };
            let (resource, attrs) = self.split(labels.iter().map(|(k, v)| (k, v)));
            push(
                batches,
                t,
                width,
                metric,
                resource,
                attrs,
                PointValue::Histogram(h),
            );
        }
    }

    /// Labels -> (Resource, attributes), keys restored.
    fn split<'a>(&self, labels: impl Iterator<Item = (&'a String, &'a String)>) -> (Attrs, Attrs) {
        let mut res = Attrs::new();
        let mut attrs = Attrs::new();
        for (l, v) in labels {
            if NOT_KEYS.contains(&l.as_str()) || v.is_empty() {
                continue;
            }
            let key = self.key_of(l).into_owned();
            if is_resource_key(&key) {
                res.set(key, v.clone());
            } else {
                attrs.set(key, v.clone());
            }
        }
        (res, attrs)
    }
}

/// Keys of the Paths page's series besides those the other pages know.
const PATH_VIEW_KEYS: &[&str] = &[
    path::SERVER_PORT,
    path::PROTOCOL,
    path::TEST,
    path::HOP_INDEX,
    path::HOP_ADDRESS,
    path::HOP_NAME,
    path::HOP_AS_NUMBER,
    path::HOP_AS_NAME,
];

/// The Network Path metrics, each read per test (and hop) for the Paths
/// page.
fn path_metrics() -> [MetricId; 10] {
    [
        PATH_REACHABLE,
        MetricId::gauge(path::HOPS),
        MetricId::histogram(path::RTT),
        PATH_PROBES_SENT,
        PATH_PROBES_LOST,
        MetricId::gauge(path::JITTER),
        MetricId::histogram(path::HOP_RTT),
        MetricId::sum(path::HOP_PROBES_SENT),
        MetricId::sum(path::HOP_PROBES_LOST),
        MetricId::sum(path::ROUTE_CHANGES),
    ]
}

/// The PromQL of a Network Path metric per `step_ns` window: like
/// [`expr`], but summed `without (instance, job)`, so every label of a test
/// (its Resource labels and the user's tags included) is kept whatever it
/// is named.
pub fn path_expr(metric: MetricId, step_ns: u64) -> String {
    let name = prom_name(metric);
    let w = format!("{}s", (step_ns / NS).max(1));
    match metric.kind {
        Kind::Gauge | Kind::UpDownCounter => {
            format!("max without (instance, job) (last_over_time({name}[{w}]))")
        }
        _ => format!(
            "sum without (instance, job) (((last_over_time({name}[{w}]) - {name} offset {w}) >= 0) \
             or last_over_time({name}[{w}]))"
        ),
    }
}

impl Fleet {
    /// The Paths page's store: every Network Path series per test and hop,
    /// one slot per `step` (default: the range in 240 steps, at least
    /// 10 s), so that each slot holds the runs of its step and the route
    /// history can be read from the hop series as on one node.
    async fn load_paths(&self, range: Range, step: Option<u64>) -> Result<Store, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        let step = step.unwrap_or_else(|| (span / 240 / NS).max(10) * NS);
        let mut st = Store::new(span, span, self.max_series.max(1));
        let answers = futures_util::future::try_join_all(path_metrics().into_iter().map(|m| {
            let q = path_expr(m, step);
            async move { Ok::<_, FleetError>((m, self.query_range(q, range, step).await?)) }
        }))
        .await?;
        let series: usize = answers
            .iter()
            .map(|(_, r)| {
                r.iter()
                    .map(|(l, _, _)| {
                        let mut k: Vec<_> = l.iter().filter(|(k, _)| *k != "le").collect();
                        k.sort();
                        k
                    })
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .sum();
        if series > self.max_series {
            return Err(FleetError::TooLarge {
                series,
                limit: self.max_series,
            });
        }
        let mut batches: std::collections::BTreeMap<u64, MetricBatch> =
            std::collections::BTreeMap::new();
        for (m, samples) in answers {
            for (labels, _, _) in &samples {
                for l in labels.keys() {
                    if !NOT_KEYS.contains(&l.as_str()) && l != "__name__" {
                        st.add_key(&self.key_of(l));
                    }
                }
            }
            self.points(m, samples, step, &mut batches);
        }
        for (_, b) in batches {
            st.insert(&b);
        }
        Ok(st)
    }
}

impl Fleet {
    /// Each test's route changes over `range` (one instant query, summed
    /// `without (instance, job)` as the Paths page reads them), for
    /// Health's "Route changed" finding.
    async fn route_changes(&self, range: Range) -> Result<Vec<Sample>, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        let m = MetricId::sum(path::ROUTE_CHANGES);
        let data = self
            .call(
                "/api/v1/query",
                &[("query", path_expr(m, span)), ("time", secs(range.to))],
            )
            .await?;
        Ok(vector(&data, range.to))
    }
}

fn push(
    batches: &mut std::collections::BTreeMap<u64, MetricBatch>,
    t: u64,
    width: u64,
    metric: MetricId,
    resource: Attrs,
    attrs: Attrs,
    value: PointValue,
) {
    batches
        .entry(t)
        .or_insert_with(|| MetricBatch::new(t.saturating_sub(width), t))
        .points
        .push(Point {
            resource: Arc::new(resource),
            metric,
            attrs,
            value,
        });
}

/// Cumulative `(le, count)` pairs, sorted, to a histogram (`+Inf` last).
fn histogram(buckets: &[(f64, f64)]) -> Option<Histogram> {
    let (_, total) = *buckets.last()?;
    let bounds: Vec<f64> = buckets
        .iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .collect();
    let mut h = Histogram::new(Arc::from(bounds));
    let mut before = 0u64;
    for (i, (_, cum)) in buckets.iter().enumerate() {
        let cum = cum.max(0.0).round() as u64;
        if let Some(c) = h.counts.get_mut(i) {
            *c = cum.saturating_sub(before);
        }
        before = before.max(cum);
    }
    h.count = total.max(0.0).round() as u64;
    if h.count == 0 {
        return None;
    }
    // No min or max is stored: quantiles are not clamped (min > max).
    h.min = f64::INFINITY;
    h.max = f64::NEG_INFINITY;
    Some(h)
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// The Prometheus name of `metric` (as the exporters translate it), with
/// `_bucket` for a histogram.
pub fn prom_name(metric: MetricId) -> String {
    let o = Options {
        namespace: None,
        add_metric_suffixes: true,
        resource_labels: true,
    };
    let name = metric_name(metric, &o);
    if metric.kind == Kind::Histogram {
        format!("{name}_bucket")
    } else {
        name
    }
}

/// The PromQL of `metric` over the `window_ns` before the evaluation time,
/// summed by `by` (label names from [`sanitize`], never user text).
///
/// Counters (and histogram buckets): the exact increase, as the module
/// documentation says. Gauges: the last value.
pub fn expr(metric: MetricId, by: &BTreeSet<String>, window_ns: u64) -> String {
    expr_offset(metric, by, window_ns, 0)
}

/// [`expr`] for the window that ends `offset_ns` before the evaluation
/// time (PromQL `offset`): the baseline spans of the Health page.
pub fn expr_offset(
    metric: MetricId,
    by: &BTreeSet<String>,
    window_ns: u64,
    offset_ns: u64,
) -> String {
    let name = prom_name(metric);
    let mut by: Vec<&str> = by.iter().map(String::as_str).collect();
    if metric.kind == Kind::Histogram {
        by.push("le");
    }
    let by = by.join(", ");
    let secs = (window_ns / NS).max(1);
    let w = format!("{secs}s");
    let (at, before) = match offset_ns / NS {
        0 => (String::new(), format!("{secs}s")),
        o => (format!(" offset {o}s"), format!("{}s", secs + o)),
    };
    match metric.kind {
        Kind::Gauge | Kind::UpDownCounter => {
            format!("max by ({by}) (last_over_time({name}[{w}]{at}))")
        }
        _ => format!(
            "sum by ({by}) (((last_over_time({name}[{w}]{at}) - {name} offset {before}) >= 0) \
             or last_over_time({name}[{w}]{at}))"
        ),
    }
}

/// The flow metrics the recording rules cover.
pub const RULE_METRICS: [MetricId; 8] = [
    FLOW_IO,
    FLOW_PACKETS,
    TCP_RETRANSMITS,
    TCP_OPENED,
    TCP_CLOSED,
    TCP_FAILED,
    TCP_RESETS,
    TCP_RTT,
];

/// The recording rule's name for `metric`.
pub fn rule_name(metric: MetricId) -> String {
    format!("flowscope:{}:increase1m", prom_name(metric))
}

/// The recording rule's expression for `metric`: the exact increase of
/// every series over the last minute (a series new in that minute counts
/// its value, as its counter started at zero; after a reset, the value
/// since the reset), summed by the flow labels.
pub fn rule_expr(metric: MetricId) -> String {
    let name = prom_name(metric);
    let mut by: Vec<String> = FLOW_LABELS.iter().map(|k| sanitize(k, false)).collect();
    if metric.kind == Kind::Histogram {
        by.push("le".into());
    }
    format!(
        "sum by ({}) ((({name} - {name} offset 1m) >= 0) or {name})",
        by.join(", ")
    )
}

/// What a page reads from the recording rule of `metric` over the
/// `window_ns` before the evaluation time.
fn rule_query(metric: MetricId, by: &BTreeSet<String>, window_ns: u64) -> String {
    let mut by: Vec<&str> = by.iter().map(String::as_str).collect();
    if metric.kind == Kind::Histogram {
        by.push("le");
    }
    format!(
        "sum by ({}) (sum_over_time({}[{}s]))",
        by.join(", "),
        rule_name(metric),
        (window_ns / NS).max(1)
    )
}

fn secs(ns: u64) -> String {
    format!("{}.{:03}", ns / NS, (ns % NS) / 1_000_000)
}

fn str_of(j: &Json, k: &str) -> String {
    j.get(k).and_then(Json::as_str).unwrap_or("").to_string()
}

type Sample = (HashMap<String, String>, u64, f64);

fn labels_of(series: &Json) -> HashMap<String, String> {
    series
        .get("metric")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn sample(pair: &Json) -> Option<(u64, f64)> {
    let a = pair.as_array()?;
    let t = a.first()?.as_f64()?;
    let v: f64 = a.get(1)?.as_str()?.parse().ok()?;
    v.is_finite().then_some(((t * 1e9).round() as u64, v))
}

/// An instant vector's samples, all stamped `at`.
fn vector(data: &Json, at: u64) -> Vec<Sample> {
    let Some(result) = data.get("result").and_then(Json::as_array) else {
        return Vec::new();
    };
    result
        .iter()
        .filter_map(|s| {
            let (_, v) = sample(s.get("value")?)?;
            Some((labels_of(s), at, v))
        })
        .collect()
}

/// A range query's samples.
fn matrix(data: &Json) -> Vec<Sample> {
    let Some(result) = data.get("result").and_then(Json::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in result {
        let labels = labels_of(s);
        for pair in s
            .get("values")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some((t, v)) = sample(pair) {
                out.push((labels.clone(), t, v));
            }
        }
    }
    out
}

/// What the fleet knows of one workload, to name the other end of its
/// connections.
#[derive(Clone)]
struct Workload {
    resource: Arc<Attrs>,
}

/// Resource keys copied onto the peer side when a bare address is named.
const PEER_COPIES: &[(&str, &str)] = &[
    (resource::SERVICE_NAME, attr::PEER_SERVICE_NAME),
    (resource::HOST_NAME, super::query::PEER_HOST_NAME),
    (k8s::NODE_NAME, super::query::PEER_K8S_NODE_NAME),
    (resource::K8S_NAMESPACE_NAME, k8s::PEER_SERVICE_NAMESPACE),
];

/// Names the ends of flow points that another agent's reports identify
/// (module documentation, "Joined across nodes, counted once").
pub fn join(points: &mut [Point]) {
    let role = |p: &Point| p.attrs.get_str(attr::FLOW_ROLE).map(str::to_string);
    // (address, port) -> server workload; address -> client workload.
    let mut servers: HashMap<(String, String), Workload> = HashMap::new();
    let mut clients: HashMap<String, Workload> = HashMap::new();
    for p in points.iter() {
        let Some(local) = p.attrs.get_str(attr::LOCAL_ADDRESS) else {
            continue;
        };
        let w = Workload {
            resource: p.resource.clone(),
        };
        match role(p).as_deref() {
            Some("server") => {
                if let Some(port) = p.attrs.get(attr::LOCAL_PORT) {
                    servers.insert((local.to_string(), port.to_string()), w);
                }
            }
            Some("client") => {
                clients.insert(local.to_string(), w);
            }
            _ => {}
        }
    }
    if servers.is_empty() && clients.is_empty() {
        return;
    }
    for p in points.iter_mut() {
        if p.attrs.get(attr::PEER_SERVICE_NAME).is_some() {
            continue;
        }
        let Some(peer) = p.attrs.get_str(attr::PEER_ADDRESS).map(str::to_string) else {
            continue;
        };
        let found = match role(p).as_deref() {
            Some("client") => p
                .attrs
                .get(attr::PEER_PORT)
                .and_then(|port| servers.get(&(peer.clone(), port.to_string()))),
            Some("server") => clients.get(&peer),
            _ => None,
        };
        let Some(w) = found else { continue };
        for (local_key, peer_key) in PEER_COPIES {
            if let Some(v) = w.resource.get(local_key) {
                p.attrs.set(*peer_key, v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_model::Role;

    #[test]
    fn promql_is_built_from_label_names_only() {
        let by: BTreeSet<String> = ["service_name".to_string(), "flowscope_flow_role".into()]
            .into_iter()
            .collect();
        assert_eq!(
            expr(FLOW_IO, &by, 3600 * NS),
            "sum by (flowscope_flow_role, service_name) (((last_over_time(\
             network_flow_io_bytes_total[3600s]) - network_flow_io_bytes_total offset 3600s) \
             >= 0) or last_over_time(network_flow_io_bytes_total[3600s]))"
        );
        assert!(expr(TCP_RTT, &by, 60 * NS).contains("flowscope_tcp_rtt_seconds_bucket"));
        assert!(expr(TCP_RTT, &by, 60 * NS).contains("service_name, le)"));
        assert!(expr(PATH_REACHABLE, &by, 60 * NS).starts_with("max by"));
        // The baseline spans: the same window, a span or a day back.
        assert_eq!(
            expr_offset(TCP_FAILED, &by, 900 * NS, 86_400 * NS),
            "sum by (flowscope_flow_role, service_name) (((last_over_time(\
             flowscope_tcp_connection_failed_total[900s] offset 86400s) - \
             flowscope_tcp_connection_failed_total offset 87300s) >= 0) or \
             last_over_time(flowscope_tcp_connection_failed_total[900s] offset 86400s))"
        );
        // A user's key is sanitized to a label name before it can reach a
        // query: quotes, braces and spaces cannot survive.
        assert_eq!(sanitize("a\"}) or vector(1", false), "a_or_vector_1");
    }

    #[test]
    fn the_shipped_recording_rules_are_the_ones_read() {
        let file = include_str!("../../../deploy/prometheus/flowscope-fleet-rules.yaml");
        for m in RULE_METRICS {
            let record = format!("- record: {}\n", rule_name(m));
            let at = file
                .find(&record)
                .unwrap_or_else(|| panic!("{record} missing from the rules file"));
            let expr_line = file[at + record.len()..].lines().next().unwrap_or("");
            assert_eq!(
                expr_line.trim().strip_prefix("expr: "),
                Some(rule_expr(m).as_str()),
                "{record}"
            );
        }
        assert_eq!(file.matches("- record: ").count(), RULE_METRICS.len());
    }

    #[test]
    fn buckets_become_a_histogram() {
        let h = histogram(&[(0.001, 2.0), (0.01, 5.0), (f64::INFINITY, 6.0)]).unwrap();
        assert_eq!(h.counts, vec![2, 3, 1]);
        assert_eq!(h.count, 6);
        assert_eq!(&*h.bounds, &[0.001, 0.01]);
        assert!(histogram(&[(f64::INFINITY, 0.0)]).is_none());
    }

    fn flow(service: &str, host: &str, role: Role, local: &str, peer: &str, port: u16) -> Point {
        let mut a = Attrs::new()
            .with(attr::FLOW_ROLE, role.as_str())
            .with(attr::LOCAL_ADDRESS, local)
            .with(attr::PEER_ADDRESS, peer);
        match role {
            Role::Client => a.set(attr::PEER_PORT, port),
            Role::Server => a.set(attr::LOCAL_PORT, port),
        }
        Point {
            resource: Arc::new(
                Attrs::new()
                    .with(resource::SERVICE_NAME, service)
                    .with(resource::HOST_NAME, host),
            ),
            metric: FLOW_IO,
            attrs: a,
            value: PointValue::Int(1),
        }
    }

    #[test]
    fn ends_are_named_from_the_other_node() {
        let mut p = vec![
            flow("web", "n1", Role::Client, "198.18.0.1", "198.18.0.2", 80),
            flow("api", "n2", Role::Server, "198.18.0.2", "198.18.0.1", 80),
            // A client nobody monitors.
            flow("api", "n2", Role::Server, "198.18.0.2", "198.18.0.9", 80),
            // A server port nobody reports.
            flow("web", "n1", Role::Client, "198.18.0.1", "198.18.0.2", 81),
        ];
        join(&mut p);
        let peer = |i: usize, k: &str| p[i].attrs.get_str(k).map(str::to_string);
        assert_eq!(peer(0, attr::PEER_SERVICE_NAME).as_deref(), Some("api"));
        assert_eq!(
            peer(0, super::super::query::PEER_HOST_NAME).as_deref(),
            Some("n2")
        );
        assert_eq!(peer(1, attr::PEER_SERVICE_NAME).as_deref(), Some("web"));
        assert_eq!(peer(2, attr::PEER_SERVICE_NAME), None);
        assert_eq!(peer(3, attr::PEER_SERVICE_NAME), None);
    }
}
