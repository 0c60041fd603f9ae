//! Fleet mode: the same pages and `/api/` over a Prometheus HTTP query API
//! (Prometheus, Thanos, Mimir, VictoriaMetrics) that every agent writes to
//! (`prometheusremotewrite`) or that scrapes every agent (`prometheus`).
//!
//! # How a page is answered
//! For each request, the metrics the pages read are asked of the storage
//! all at once (the Map and Analytics: the bytes first, below), with one
//! instant query each (one range query each for time
//! series; a histogram's buckets in two, `promql::HISTOGRAM_SHARDS`),
//! aggregated there: `sum by (<labels the page needs>)` of the increase of
//! each counter in the time range. The answer holds one series per
//! dependency and peer address, never the agents' raw series (process ids,
//! instances). Those aggregated series are put into a [`Store`] of their
//! own, and the page is computed from it by the same code as on one node
//! ([`super::query`]), so both modes give the same JSON fields.
//!
//! # Only what a page shows
//! The Map and Analytics show the 2,000 dependencies with the most bytes
//! (ties by name). For them the bytes are asked first, alone (of
//! Prometheus in two queries, by direction, `promql::DIRECTION_SHARDS`); the
//! dependencies are ranked from a store of that answer, made as the page's
//! own is, and the other metrics (the RTT buckets above all) are asked
//! only for series that can belong to a shown one ([`Shown`]). Every
//! series of a dependency has its own workload on one side: a client's
//! report is the client side, a server's the server side, each read from
//! one label ([`super::query::local_key`]: `service_name` for both pages'
//! default groupings). So one matcher per flow role,
//! `flowscope_flow_role="client",service_name=~"a|b|..."`, selects every
//! series of the shown dependencies, of any metric, and some of others
//! (harmless: they make rows that are not shown). Its values are the shown
//! rows' names that the storage holds for that label
//! (`/api/v1/label/<label>/values`: an unresolved server's address is no
//! `service_name`), never a request's text, escaped for the regular
//! expression and then for the PromQL string. The rows shown are those of
//! reading everything:
//! - a dependency that only the other metrics would add has no bytes, and
//!   ranks after the last one shown, which has bytes (else everything is
//!   read);
//! - which workload has which address is learned from the bytes alone
//!   ([`join`]), so each series is named the same either way;
//! - every series of a shown dependency is read.
//!
//! Everything is read, as for the other pages, when the page shows every
//! dependency that has bytes, when the matchers would still select half of
//! the bytes' series or more, or when one would pass VictoriaMetrics'
//! 16 KiB query limit. At 100 simulated nodes (10,000 dependencies, 2,000
//! shown) the second phase reads a fifth of the series.
//!
//! The increase is exact, not extrapolated: for a cumulative counter it is
//! the last value in the range minus the value at its start, or the last
//! value for a series born inside the range (its counter starts at zero),
//! or the last value alone after a counter reset (an agent restart).
//! Prometheus' `increase()` extrapolates to the range's edges, which would
//! make byte counts approximate. In PromQL that exact increase is a join of
//! two selections; a storage that knows MetricsQL's `increase_pure()`
//! (VictoriaMetrics) is asked for that instead, the same increase in one
//! pass ([`Increase`], probed once per UI).
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
    DNS_DURATION, FLOW_DROPS, FLOW_IO, FLOW_PACKETS, HOST_DROPS, PATH_METRICS, PATH_PROBES_LOST,
    PATH_PROBES_SENT, PATH_REACHABLE, PATH_ROUTE_CHANGES, PATH_TLS_CHECK_FAILED,
    PATH_TLS_TIME_LEFT, TCP_CLOSED, TCP_DURATION, TCP_FAILED, TCP_OPENED, TCP_RESETS,
    TCP_RETRANSMITS, TCP_RTT,
};
use flowscope_model::names::{attr, k8s, path, resource};
use flowscope_model::{Attrs, Histogram, Kind, MetricBatch, MetricId, Point, PointValue};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::prometheus::{Options, metric_name, sanitize};
use crate::ui::store::Store;

mod answer;
mod join;
mod load;
mod paths;
mod promql;
mod shown;

use answer::*;
use join::Directory;
pub use paths::path_expr;
use paths::*;
use promql::*;
pub use promql::{Increase, RULE_METRICS, expr, expr_offset, prom_name, rule_expr, rule_name};
pub use shown::Shown;
use shown::*;

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
        (PATH_TLS_TIME_LEFT, TLS_LABELS),
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
    /// Where answered requests' stores go to be freed ([`Fleet::free_later`]);
    /// none when no thread could be started for it (each frees its own).
    freer: Option<std::sync::mpsc::SyncSender<Store>>,
    /// How the storage is asked for an increase, learned at the first
    /// request that reaches it ([`Fleet::increase`]).
    increase: tokio::sync::OnceCell<Increase>,
}

/// Form (or URL query) encoding of `pairs`.
fn encoded(pairs: &[(&str, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// Stores waiting to be freed: past this, a request frees its own.
const FREE_QUEUE: usize = 2;

/// What a page reads from the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Label names only (`/api/keys`, `/api/status`).
    Keys,
    /// The dependency metrics with RTT (Map, Analytics, time series).
    Dependencies,
    /// The dependency counts without RTT and bytes (no finding reads
    /// either; the ends are named from the packets, [`Directory::of`]), with
    /// the connection durations (churn), DNS and paths (Health), and the
    /// baseline spans' counts.
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
                PATH_TLS_TIME_LEFT,
                FLOW_DROPS,
                HOST_DROPS,
            ]
            .contains(&m),
            Need::Health => m != TCP_RTT && m != FLOW_IO,
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
        let (freer, freed) = std::sync::mpsc::sync_channel::<Store>(FREE_QUEUE);
        // Ends when the Fleet (its sender) is dropped.
        let freer = match std::thread::Builder::new()
            .name("fleet-free".into())
            .spawn(move || freed.into_iter().for_each(drop))
        {
            Ok(_) => Some(freer),
            Err(e) => {
                tracing::warn!("fleet view: answers are freed in the request: {e}");
                None
            }
        };
        Ok(Fleet {
            base,
            client,
            timeout,
            max_series,
            keys_by_label,
            rules: true,
            freer,
            increase: tokio::sync::OnceCell::new(),
        })
    }

    /// Frees a store once its answer is made, on a thread of its own, so
    /// that the answer does not wait for it: freeing the 190,000 series of
    /// a Map at 100 simulated nodes took an eighth of the request (#18).
    /// At most [`FREE_QUEUE`] wait; past that the caller frees its own.
    pub fn free_later(&self, st: Store) {
        // A full queue hands the store back in the error, freed here.
        if let Some(freer) = &self.freer {
            let _ = freer.try_send(st);
        }
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
    /// Prometheus answer, read as `T` while it is parsed.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<T, FleetError> {
        let url = format!("{}{path}", self.base);
        let req = Request::post(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(encoded(form))));
        self.send(url, req).await
    }

    /// GETs `path` with `query` (for an endpoint that Prometheus serves to
    /// GET only, such as a label's values), as [`Fleet::call`] does.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, FleetError> {
        let url = format!("{}{path}?{}", self.base, encoded(query));
        let req = Request::get(&url).body(Full::new(Bytes::new()));
        self.send(url, req).await
    }

    /// Sends a request built for `url` and reads the answer's `data`.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
        req: Result<Request<Full<Bytes>>, http::Error>,
    ) -> Result<T, FleetError> {
        let mut req = req.map_err(|e| FleetError::Url {
            url: format!("{url} ({e})"),
        })?;
        let headers = req.headers_mut();
        headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::USER_AGENT,
            header::HeaderValue::from_static(concat!("flowscope-ui/", env!("CARGO_PKG_VERSION"))),
        );
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
        let parsed: Result<Envelope<T>, _> = serde_json::from_slice(&bytes);
        match parsed {
            Ok(env) if env.status.as_deref() == Some("success") => {
                env.data.ok_or_else(|| FleetError::NotPrometheus {
                    url,
                    reason: "a successful answer without `data`".into(),
                })
            }
            Ok(env) if env.status.as_deref() == Some("error") => Err(FleetError::Query {
                error_type: env.error_type.unwrap_or_default(),
                error: env.error.unwrap_or_default(),
            }),
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

    /// How this storage is asked for an increase: [`Increase::Pure`] when it
    /// answers [`INCREASE_PROBE`], [`Increase::Joined`] (plain PromQL) when
    /// it refuses it in any way: Prometheus says `bad_data`, but a proxy or
    /// another engine may answer an HTTP error or text. Asked once; a
    /// storage that could not be reached is asked again at the next request.
    pub(super) async fn increase(&self) -> Result<Increase, FleetError> {
        self.increase
            .get_or_try_init(|| async {
                let probe = self
                    .call::<QueryData>("/api/v1/query", &[("query", INCREASE_PROBE.to_string())])
                    .await;
                match probe {
                    Ok(_) => Ok(Increase::Pure),
                    Err(e @ (FleetError::Unreachable { .. } | FleetError::Timeout { .. })) => {
                        Err(e)
                    }
                    Err(_) => Ok(Increase::Joined),
                }
            })
            .await
            .copied()
    }

    /// Every label name the flow series carry in `range`.
    async fn label_names(&self, r: Range) -> Result<Vec<String>, FleetError> {
        let name = prom_name(FLOW_IO);
        self.call(
            "/api/v1/labels",
            &[
                ("match[]", name),
                ("start", secs(r.from)),
                ("end", secs(r.to)),
            ],
        )
        .await
    }

    /// The store a request over `range` reads for `need`, with
    /// `extra_keys` (the keys it groups or filters by) summed by as well,
    /// and with one slot per `step` when given (time series), else one slot
    /// for the whole range. For a page that shows only its busiest
    /// dependencies (`shown`), the metrics besides the bytes are complete
    /// for those only.
    pub fn store(
        &self,
        need: Need,
        range: Range,
        extra_keys: &[String],
        step: Option<u64>,
        shown: Option<&Shown<'_>>,
    ) -> Result<Store, FleetError> {
        let handle = tokio::runtime::Handle::current();
        if need == Need::Paths {
            return handle.block_on(self.load_paths(range, step));
        }
        handle.block_on(self.load(need, range, extra_keys, step, shown))
    }
}

#[cfg(test)]
mod tests {
    use super::load::*;
    use super::*;
    use flowscope_model::Role;

    #[test]
    fn promql_is_built_from_label_names_only() {
        let by: BTreeSet<String> = ["service_name".to_string(), "flowscope_flow_role".into()]
            .into_iter()
            .collect();
        let j = Increase::Joined;
        assert_eq!(
            expr(FLOW_IO, &by, 3600 * NS, j),
            "sum by (flowscope_flow_role, service_name) (((last_over_time(\
             network_flow_io_bytes_total[3600s]) - network_flow_io_bytes_total offset 3600s) \
             >= 0) or last_over_time(network_flow_io_bytes_total[3600s]))"
        );
        assert!(expr(TCP_RTT, &by, 60 * NS, j).contains("flowscope_tcp_rtt_seconds_bucket"));
        assert!(expr(TCP_RTT, &by, 60 * NS, j).contains("service_name, le)"));
        assert!(expr(PATH_REACHABLE, &by, 60 * NS, j).starts_with("max by"));
        // MetricsQL's exact increase: one function, the same window.
        assert_eq!(
            expr(FLOW_IO, &by, 3600 * NS, Increase::Pure),
            "sum by (flowscope_flow_role, service_name) \
             (increase_pure(network_flow_io_bytes_total[3600s]))"
        );
        assert_eq!(
            expr(PATH_REACHABLE, &by, 60 * NS, Increase::Pure),
            expr(PATH_REACHABLE, &by, 60 * NS, j)
        );
        // The baseline spans: the same window, a span or a day back.
        assert_eq!(
            expr_offset(TCP_FAILED, &by, 900 * NS, 86_400 * NS, j),
            "sum by (flowscope_flow_role, service_name) (((last_over_time(\
             flowscope_tcp_connection_failed_total[900s] offset 86400s) - \
             flowscope_tcp_connection_failed_total offset 87300s) >= 0) or \
             last_over_time(flowscope_tcp_connection_failed_total[900s] offset 86400s))"
        );
        assert_eq!(
            expr_offset(TCP_FAILED, &by, 900 * NS, 86_400 * NS, Increase::Pure),
            "sum by (flowscope_flow_role, service_name) (increase_pure(\
             flowscope_tcp_connection_failed_total[900s] offset 86400s))"
        );
        // A histogram is asked in two parts that split its buckets between
        // them: each selector of the expression carries the part's matcher.
        let part = expr_shard(TCP_RTT, &by, 60 * NS, 0, HISTOGRAM_SHARDS[1], j);
        assert_eq!(
            part.matches(r#"flowscope_tcp_rtt_seconds_bucket{le!~".*5"}"#)
                .count(),
            3,
            "{part}"
        );
        assert!(
            rule_query(TCP_RTT, &by, 60 * NS, HISTOGRAM_SHARDS[0])
                .contains(r#":increase1m{le=~".*5"}[60s]"#)
        );
        // The bytes in two parts, by direction: the label as translated.
        assert_eq!(
            DIRECTION_SHARDS.map(|m| m.split('!').next().unwrap().split('=').next().unwrap()),
            [sanitize(attr::IO_DIRECTION, false).as_str(); 2]
        );
        assert!(DIRECTION_SHARDS[0].ends_with(&format!("=\"{}\"", attr::TRANSMIT)));
        // A user's key is sanitized to a label name before it can reach a
        // query: quotes, braces and spaces cannot survive.
        assert_eq!(sanitize("a\"}) or vector(1", false), "a_or_vector_1");
    }

    /// A storage that refuses the probe in a way other than Prometheus'
    /// `bad_data` (here a proxy's HTTP 400 in plain text) is asked plain
    /// PromQL; one that cannot be reached is an error, not a choice.
    #[test]
    fn any_refusal_of_the_probe_means_plain_promql() {
        use std::io::{Read, Write};
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = refusing.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in refusing.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut req = [0u8; 4096];
                let _ = conn.read(&mut req);
                let _ = conn.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 14\r\n\r\nno such thing\n",
                );
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fleet = Fleet::new(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(5),
            10,
        )
        .unwrap();
        assert_eq!(rt.block_on(fleet.increase()).unwrap(), Increase::Joined);

        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let fleet = Fleet::new(
            &format!("http://127.0.0.1:{dead_port}"),
            Duration::from_secs(5),
            10,
        )
        .unwrap();
        assert!(matches!(
            rt.block_on(fleet.increase()),
            Err(FleetError::Unreachable { .. })
        ));
    }

    #[test]
    fn the_shipped_recording_rules_are_the_ones_read() {
        let file = include_str!("../../../../deploy/prometheus/flowscope-fleet-rules.yaml");
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
        Directory::of(&p).name(&mut p);
        let peer = |i: usize, k: &str| p[i].attrs.get_str(k).map(str::to_string);
        assert_eq!(peer(0, attr::PEER_SERVICE_NAME).as_deref(), Some("api"));
        assert_eq!(
            peer(0, crate::ui::query::PEER_HOST_NAME).as_deref(),
            Some("n2")
        );
        assert_eq!(peer(1, attr::PEER_SERVICE_NAME).as_deref(), Some("web"));
        assert_eq!(peer(2, attr::PEER_SERVICE_NAME), None);
        assert_eq!(peer(3, attr::PEER_SERVICE_NAME), None);
    }

    /// The directory is learned from the bytes when the batch has them
    /// (what the Map and Analytics read first), else from the packets (the
    /// Health page reads no bytes), never from the other metrics: a flow
    /// is named the same on every page.
    #[test]
    fn ends_are_named_from_the_bytes_else_the_packets() {
        let with = |m: MetricId, p: Point| Point { metric: m, ..p };
        let client = || flow("web", "n1", Role::Client, "198.18.0.1", "198.18.0.2", 80);
        let server =
            |service: &str| flow(service, "n2", Role::Server, "198.18.0.2", "198.18.0.1", 80);
        let named = |mut p: Vec<Point>| {
            Directory::of(&p).name(&mut p);
            p[0].attrs
                .get_str(attr::PEER_SERVICE_NAME)
                .map(str::to_string)
        };
        // Health: packets and retransmits, no bytes. The retransmits' server
        // (another workload on the same address and port) is not asked.
        let health = vec![
            with(FLOW_PACKETS, client()),
            with(FLOW_PACKETS, server("api")),
            with(TCP_RETRANSMITS, server("other")),
        ];
        assert_eq!(named(health).as_deref(), Some("api"));
        // With bytes, only the bytes name: the packets' server is not asked.
        let map = vec![
            with(FLOW_IO, client()),
            with(FLOW_IO, server("api")),
            with(FLOW_PACKETS, server("other")),
        ];
        assert_eq!(named(map).as_deref(), Some("api"));
        // Neither: any metric names.
        let other = vec![with(TCP_OPENED, client()), with(TCP_OPENED, server("api"))];
        assert_eq!(named(other).as_deref(), Some("api"));
    }

    #[test]
    fn health_reads_neither_bytes_nor_rtt() {
        assert!(!Need::Health.reads(FLOW_IO));
        assert!(!Need::Health.reads(TCP_RTT));
        assert!(Need::Health.reads(FLOW_PACKETS));
        assert!(Need::Dependencies.reads(FLOW_IO));
    }
}
