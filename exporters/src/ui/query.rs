//! What the pages ask of the [`Store`]: client/server dependencies grouped
//! by any two keys, the map, time series and the health findings.
//!
//! # Sides of a point
//! flowscope reports each flow from its local side: the Resource is the
//! local workload, `flowscope.flow.role` says whether it is the client or
//! the server, and the peer attributes describe the other end. A group key
//! is resolved on each side:
//! - on the local side, from the Resource (or a flow-level attribute such
//!   as the locality); a peer key (`service.peer.name`) asks for its local
//!   counterpart (`service.name`);
//! - on the remote side, from the peer attributes: a local key
//!   (`service.name`) asks for its peer counterpart (`service.peer.name`),
//!   a peer or flow-level key is read as is. A remote side without a value
//!   is *unresolved* and shows as its address.
//!
//! When both ends of a connection run on the monitored host each end
//! reports it. The server's report of a connection whose client is local
//! (`flowscope.network.locality` is `same_host`, or the peer was named
//! after a local process) is left out: the client's report has the same
//! bytes, so nothing is counted twice. Servers' reports of remote clients
//! are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use flowscope_model::names::{attr, metric, resource, ui};
use flowscope_model::{Attrs, Histogram, MetricId, PointValue, Role};
use flowscope_otel_config::exporters::UiHealthConfig;
use serde::Serialize;

use super::store::{SeriesKey, Slot, Store, Values};

/// The peer's `host.name`: never emitted by an agent (an agent does not
/// know the other node's name); set by the fleet view when it joins a flow
/// to the node that reports its other end ([`super::fleet::join`]).
pub const PEER_HOST_NAME: &str = "flowscope.peer.host.name";
/// The peer's `k8s.node.name`, likewise.
pub const PEER_K8S_NODE_NAME: &str = "flowscope.peer.k8s.node.name";

/// Pairs of (local key, peer key) naming the same property of either end.
const PAIRS: &[(&str, &str)] = &[
    (resource::SERVICE_NAME, attr::PEER_SERVICE_NAME),
    (resource::CLOUD_PROVIDER, attr::PEER_CLOUD_PROVIDER),
    (resource::CLOUD_REGION, attr::PEER_CLOUD_REGION),
    (resource::HOST_NAME, PEER_HOST_NAME),
    (flowscope_model::names::k8s::NODE_NAME, PEER_K8S_NODE_NAME),
];

/// Keys offered first in the pages' group-by selectors.
pub const SUGGESTED_KEYS: &[&str] = &[
    resource::SERVICE_NAME,
    resource::K8S_NAMESPACE_NAME,
    resource::CONTAINER_ID,
    resource::CLOUD_AVAILABILITY_ZONE,
    attr::PEER_SERVICE_NAME,
    attr::PEER_CLOUD_SERVICE,
    attr::LOCALITY,
    attr::PEER_ADDRESS,
];

/// Shown for a local side without the key.
pub const NONE: &str = "(none)";
/// Shown for a remote side with neither the key nor an address.
pub const UNKNOWN: &str = "(unknown)";

/// Whether `key` describes the remote end (`network.peer.*`,
/// `service.peer.*`, `flowscope.peer.*`, ...).
fn is_peer_key(key: &str) -> bool {
    key.starts_with(attr::PEER_TAG_PREFIX)
        || PAIRS.iter().any(|(_, p)| *p == key)
        || [
            attr::PEER_ADDRESS,
            attr::PEER_PORT,
            attr::PEER_DOMAIN,
            attr::PEER_CLOUD_SERVICE,
        ]
        .contains(&key)
        || key.split('.').any(|segment| segment == "peer")
}

fn value(a: &Attrs, key: &str) -> Option<String> {
    a.get(key).map(ToString::to_string)
}

/// `key` on the local side of a point.
pub fn local_value(res: &Attrs, attrs: &Attrs, key: &str) -> Option<String> {
    if let Some((local, _)) = PAIRS.iter().find(|(_, p)| *p == key) {
        return value(res, local);
    }
    if is_peer_key(key) {
        return None;
    }
    value(res, key).or_else(|| value(attrs, key))
}

/// `key` on the remote side of a point.
pub fn remote_value(res: &Attrs, attrs: &Attrs, key: &str) -> Option<String> {
    if let Some((_, peer)) = PAIRS.iter().find(|(l, _)| *l == key) {
        return value(attrs, peer);
    }
    if is_peer_key(key) || res.get(key).is_none() {
        return value(attrs, key);
    }
    None
}

/// The locality of a flow between two processes of this host.
const SAME_HOST: &str = "same_host";

/// Whether the client of a server-side point runs on this host, and so
/// reports the same connection itself.
fn client_is_local(attrs: &Attrs) -> bool {
    attrs.get_str(attr::LOCALITY) == Some(SAME_HOST) || attrs.get(attr::PEER_SERVICE_NAME).is_some()
}

/// Whether the local side of a point is the client (None: not a flow).
fn local_is_client(attrs: &Attrs) -> Option<bool> {
    match attrs.get_str(attr::FLOW_ROLE) {
        Some(r) if r == Role::Client.as_str() => Some(true),
        Some(r) if r == Role::Server.as_str() => Some(false),
        _ => None,
    }
}

/// An IP network, `198.18.0.0/15` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use flowscope_model::net::{self, NetError, Spaces};
        net::parse(s, Spaces::Trim).map(Cidr).map_err(|e| match e {
            NetError::Address => format!("`{s}` is not an IP network like 10.0.0.0/8"),
            NetError::PrefixLength { max } | NetError::PrefixTooLong { max } => {
                format!("`{s}`: the prefix length must be 0 to {max}")
            }
        })
    }
}

impl Cidr {
    /// Whether `ip` is in the network; an IPv4 network also holds the
    /// IPv4-mapped IPv6 form of its addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (ipnet::IpNet::V4(n), IpAddr::V6(a)) => {
                a.to_ipv4_mapped().is_some_and(|a| n.contains(&a))
            }
            (n, ip) => n.contains(&ip),
        }
    }
}

/// What a query covers.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Slots ending in `(from, to]`, unix ns.
    pub from: u64,
    pub to: u64,
    pub client_key: String,
    pub server_key: String,
    /// `key=value` pairs; each must hold on the client or the server side.
    pub filters: Vec<(String, String)>,
    /// Only flows whose peer address is in this network.
    pub cidr: Option<Cidr>,
    /// Leave out dependencies with an unresolved side.
    pub hide_unresolved: bool,
}

impl Selection {
    /// The dependencies between services over `(from, to]`, as the Health
    /// page groups them (`service.name` on both sides, no filter).
    pub fn services(from: u64, to: u64, cidr: Option<Cidr>) -> Self {
        Selection {
            from,
            to,
            client_key: resource::SERVICE_NAME.to_string(),
            server_key: resource::SERVICE_NAME.to_string(),
            filters: Vec::new(),
            cidr,
            hide_unresolved: false,
        }
    }
}

/// A dependency's numbers over a time range or one bucket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    pub packets: u64,
    pub retransmits: u64,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub resets: u64,
    #[serde(skip)]
    pub failed_by_type: BTreeMap<String, u64>,
    #[serde(skip)]
    pub rtt: Option<Histogram>,
    /// Lifetimes of the connections closed (`flowscope.tcp.connection.duration`),
    /// read only when asked for ([`edges_reading`]).
    #[serde(skip)]
    pub durations: Option<Histogram>,
}

fn count(v: &PointValue) -> u64 {
    match v {
        PointValue::Int(n) => *n,
        PointValue::Double(d) if *d > 0.0 => *d as u64,
        _ => 0,
    }
}

fn is(m: &MetricId, name: metric::Def) -> bool {
    m.name == name.0
}

/// Whether the dependency views read this metric.
fn is_flow_metric(m: &MetricId) -> bool {
    [
        metric::FLOW_IO,
        metric::FLOW_PACKETS,
        metric::TCP_RETRANSMITS,
        metric::TCP_OPENED,
        metric::TCP_CLOSED,
        metric::TCP_FAILED,
        metric::TCP_RESETS,
        metric::TCP_RTT,
    ]
    .iter()
    .any(|n| is(m, *n))
}

/// What one series' points add to a dependency's [`Totals`]: decided once
/// per series (metric name, direction, error type), then applied to each of
/// its slots.
enum Field {
    BytesClientToServer,
    BytesServerToClient,
    Packets,
    Retransmits,
    Opened,
    Closed,
    Failed(String),
    Resets,
    Rtt,
    Duration,
    Nothing,
}

impl Field {
    fn of(m: &MetricId, attrs: &Attrs, local_client: bool) -> Field {
        if is(m, metric::FLOW_IO) {
            let tx = attrs.get_str(attr::IO_DIRECTION) == Some(attr::TRANSMIT);
            if tx == local_client {
                Field::BytesClientToServer
            } else {
                Field::BytesServerToClient
            }
        } else if is(m, metric::FLOW_PACKETS) {
            Field::Packets
        } else if is(m, metric::TCP_RETRANSMITS) {
            Field::Retransmits
        } else if is(m, metric::TCP_OPENED) {
            Field::Opened
        } else if is(m, metric::TCP_CLOSED) {
            Field::Closed
        } else if is(m, metric::TCP_FAILED) {
            Field::Failed(
                attrs
                    .get_str(attr::ERROR_TYPE)
                    .unwrap_or("_OTHER")
                    .to_string(),
            )
        } else if is(m, metric::TCP_RESETS) {
            Field::Resets
        } else if is(m, metric::TCP_RTT) {
            Field::Rtt
        } else if is(m, metric::TCP_DURATION) {
            Field::Duration
        } else {
            Field::Nothing
        }
    }
}

impl Totals {
    fn add(&mut self, f: &Field, v: &PointValue) {
        let n = || count(v);
        match f {
            Field::BytesClientToServer => self.bytes_client_to_server += n(),
            Field::BytesServerToClient => self.bytes_server_to_client += n(),
            Field::Packets => self.packets += n(),
            Field::Retransmits => self.retransmits += n(),
            Field::Opened => self.opened += n(),
            Field::Closed => self.closed += n(),
            Field::Failed(t) => {
                let n = n();
                self.failed += n;
                match self.failed_by_type.get_mut(t) {
                    Some(c) => *c += n,
                    None => {
                        self.failed_by_type.insert(t.clone(), n);
                    }
                }
            }
            Field::Resets => self.resets += n(),
            Field::Rtt => merge_histogram(&mut self.rtt, v),
            Field::Duration => merge_histogram(&mut self.durations, v),
            Field::Nothing => {}
        }
    }

    fn merge(&mut self, o: &Totals) {
        self.bytes_client_to_server += o.bytes_client_to_server;
        self.bytes_server_to_client += o.bytes_server_to_client;
        self.packets += o.packets;
        self.retransmits += o.retransmits;
        self.opened += o.opened;
        self.closed += o.closed;
        self.failed += o.failed;
        self.resets += o.resets;
        for (k, v) in &o.failed_by_type {
            *self.failed_by_type.entry(k.clone()).or_default() += v;
        }
        for (mine, theirs) in [(&mut self.rtt, &o.rtt), (&mut self.durations, &o.durations)] {
            if let Some(h) = theirs {
                match mine {
                    Some(r) => r.merge(h),
                    None => *mine = Some(h.clone()),
                }
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_client_to_server + self.bytes_server_to_client
    }

    /// Retransmitted segments per packet (0 without packets).
    pub fn retransmit_ratio(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.retransmits as f64 / self.packets as f64
        }
    }

    /// RTT quantile in seconds from the merged histogram.
    pub fn rtt_quantile(&self, q: f64) -> Option<f64> {
        self.rtt.as_ref().and_then(|h| quantile(h, q))
    }
}

/// Merges a histogram point into a running histogram.
fn merge_histogram(into: &mut Option<Histogram>, v: &PointValue) {
    if let PointValue::Histogram(h) = v {
        match into {
            Some(r) => r.merge(h),
            None => *into = Some(h.clone()),
        }
    }
}

/// The `q` quantile of an explicit-bucket histogram, interpolating
/// linearly inside the bucket it falls in (as Prometheus'
/// `histogram_quantile` does), clamped to the recorded min and max.
pub fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    if h.count == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * h.count as f64;
    let mut cum = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        let before = cum;
        cum += c;
        if *c > 0 && cum as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { h.bounds[i - 1] };
            let upper = h.bounds.get(i).copied().unwrap_or(h.max);
            let frac = (rank - before as f64) / *c as f64;
            let v = lower + (upper - lower) * frac;
            let (lo, hi) = if h.min <= h.max {
                (h.min, h.max)
            } else {
                (v, v)
            };
            return Some(v.clamp(lo, hi));
        }
    }
    Some(h.max)
}

/// One client/server dependency.
#[derive(Clone, Debug, Default)]
pub struct Edge {
    pub client: String,
    pub server: String,
    pub client_unresolved: bool,
    pub server_unresolved: bool,
    pub totals: Totals,
    /// Per bucket end (unix ns), when asked for.
    pub buckets: BTreeMap<u64, Totals>,
}

fn resolve(res: &Attrs, attrs: &Attrs, key: &str, local: bool) -> (String, /* unresolved */ bool) {
    if local {
        match local_value(res, attrs, key) {
            Some(v) => (v, false),
            None => (NONE.to_string(), false),
        }
    } else {
        match remote_value(res, attrs, key) {
            Some(v) => (v, false),
            None => match attrs.get(attr::PEER_ADDRESS) {
                Some(a) => (a.to_string(), true),
                None => (UNKNOWN.to_string(), true),
            },
        }
    }
}

/// A series' part of a range: its slots (per-interval buckets wanted), or
/// only what it adds up to.
enum SeriesSlots<'a> {
    Slots(Box<dyn Iterator<Item = &'a Slot> + 'a>),
    Values(Values<'a>),
}

/// The dependencies of `sel`, busiest first; with `buckets`, each with its
/// numbers per interval (or minute, past the full-resolution span).
pub fn edges(store: &Store, sel: &Selection, buckets: bool) -> Vec<Edge> {
    edges_reading(store, sel, buckets, &[])
}

/// [`edges`], reading the metrics in `extra` as well (the connection
/// durations, which only the churn finding needs).
pub fn edges_reading(
    store: &Store,
    sel: &Selection,
    buckets: bool,
    extra: &[MetricId],
) -> Vec<Edge> {
    let reads = |m: &MetricId| is_flow_metric(m) || extra.contains(m);
    let mut edges: HashMap<(String, String), Edge> = HashMap::new();
    // Everything but the values is decided once per series, not per slot;
    // without buckets, a series the range covers whole adds its kept total
    // (one value) instead of each of its slots.
    let series: Box<dyn Iterator<Item = (&SeriesKey, SeriesSlots<'_>)>> = if buckets {
        Box::new(
            store
                .series_slots(sel.from, sel.to, |(_, m, _)| reads(m))
                .map(|(k, s)| (k, SeriesSlots::Slots(Box::new(s)))),
        )
    } else {
        Box::new(
            store
                .series_values(sel.from, sel.to, |(_, m, _)| reads(m))
                .map(|(k, v)| (k, SeriesSlots::Values(v))),
        )
    };
    for ((res, m, attrs), slots) in series {
        if !reads(m) {
            continue;
        }
        let Some(local_client) = local_is_client(attrs) else {
            continue;
        };
        if !local_client && client_is_local(attrs) {
            continue;
        }
        if let Some(c) = &sel.cidr {
            let inside = attrs
                .get_str(attr::PEER_ADDRESS)
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|ip| c.contains(ip));
            if !inside {
                continue;
            }
        }
        let side = |key: &str, client: bool| resolve(res, attrs, key, client == local_client);
        let keep = sel.filters.iter().all(|(k, v)| {
            // A filter on a key holds when either side has that value.
            let (c, cu) = side(k, true);
            let (s, su) = side(k, false);
            (!cu && &c == v) || (!su && &s == v)
        });
        if !keep {
            continue;
        }
        let (client, cu) = side(&sel.client_key, true);
        let (server, su) = side(&sel.server_key, false);
        if sel.hide_unresolved && (cu || su) {
            continue;
        }
        let field = Field::of(m, attrs, local_client);
        let e = edges
            .entry((client.clone(), server.clone()))
            .or_insert_with(|| Edge {
                client,
                server,
                client_unresolved: cu,
                server_unresolved: su,
                ..Default::default()
            });
        match slots {
            SeriesSlots::Values(values) => {
                for v in values {
                    e.totals.add(&field, v);
                }
            }
            SeriesSlots::Slots(slots) => {
                for slot in slots {
                    e.totals.add(&field, &slot.value);
                    e.buckets
                        .entry(slot.end)
                        .or_default()
                        .add(&field, &slot.value);
                }
            }
        }
    }
    let mut out: Vec<Edge> = edges.into_values().collect();
    out.sort_by(|a, b| {
        b.totals
            .bytes()
            .cmp(&a.totals.bytes())
            .then_with(|| (&a.client, &a.server).cmp(&(&b.client, &b.server)))
    });
    out
}

/// Sums edges' buckets into one series.
pub fn merged_buckets<'a>(edges: impl Iterator<Item = &'a Edge>) -> BTreeMap<u64, Totals> {
    let mut out: BTreeMap<u64, Totals> = BTreeMap::new();
    for e in edges {
        for (t, b) in &e.buckets {
            out.entry(*t).or_default().merge(b);
        }
    }
    out
}

/// One Network Health finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `dns_failure`, `connection_failure`, `resets`, `retransmits`,
    /// `path_unreachable`, `path_loss`, `route_changed`,
    /// `certificate_expired`, `certificate_expiring`, `drops`,
    /// `host_drops`, the rises over the baseline ([`super::baseline`]:
    /// `retransmits_rise`, `connection_failure_rise`, `dns_failure_rise`)
    /// and `connection_churn` ([`super::churn`]); [`RUNBOOK`] has them all.
    pub kind: &'static str,
    /// `critical` or `warning`.
    pub severity: &'static str,
    /// Ranking: higher is worse (critical findings first, then by impact).
    pub score: f64,
    pub title: String,
    pub evidence: String,
    pub client: String,
    pub server: String,
    /// `error.type` of failures (`NXDOMAIN`, `refused`, ...), if any.
    pub error_type: Option<String>,
    /// How many failed lookups, connections, resets, retransmits or lost
    /// probes.
    pub count: u64,
    /// What to do next, in one sentence ([`runbook`]).
    pub runbook: &'static str,
}

/// Every kind of finding with what to do next, in one sentence: the
/// runbook line each finding carries (docs/health.md lists them).
pub const RUNBOOK: &[(&str, &str)] = &[
    (
        "dns_failure",
        "Check that the name exists in the zone the client asks (NXDOMAIN) or that the DNS server \
         and its upstreams answer (SERVFAIL, REFUSED, timeout).",
    ),
    (
        "connection_failure",
        "Check that the server listens on that port and that no firewall rule or security group \
         between the two rejects or drops the connection.",
    ),
    (
        "resets",
        "Read the server's logs for aborted requests and check the idle timeouts of proxies and \
         load balancers between the two.",
    ),
    (
        "retransmits",
        "Look for loss on the path between the two (interface errors and drops in `ip -s link`, \
         a saturated link) and test it from the Network Path page.",
    ),
    (
        "path_unreachable",
        "Check the routes and firewall rules towards the destination; the Paths page shows the \
         last hop that answered.",
    ),
    (
        "path_loss",
        "Find the hop where the loss starts on the Paths page and check that link or device.",
    ),
    (
        "route_changed",
        "Compare the old and the new route on the Paths page and confirm that the change was \
         intended.",
    ),
    (
        "certificate_expired",
        "Renew the certificate now and reload the server that presents it.",
    ),
    (
        "certificate_expiring",
        "Renew the certificate before it expires and reload the server that presents it.",
    ),
    (
        "retransmits_rise",
        "Find what changed on the path or on either end (a deployment, a link, a busy host) \
         when the rise began, and compare the two spans on the Analytics page.",
    ),
    (
        "connection_failure_rise",
        "Find what changed on the server side when the rise began: a deployment, a restart, a \
         full accept queue or a new firewall rule.",
    ),
    (
        "dns_failure_rise",
        "Check what changed in the failing names' zone or in the DNS server when the rise \
         began (the evidence names the error).",
    ),
    // Drops: the line of the reason (ui/drops.rs) when it has one.
    (
        "drops",
        "Look the reason up in the kernel's include/net/dropreason-core.h and at the host's \
         network settings.",
    ),
    (
        "host_drops",
        "Look the reason up in the kernel's include/net/dropreason-core.h and at the host's \
         network settings.",
    ),
    (
        "connection_churn",
        "Make the client reuse its connections (HTTP keep-alive, a connection pool) instead \
         of opening one per request.",
    ),
];

/// The runbook line of a kind of finding (empty for a kind without one,
/// which the tests do not allow).
pub fn runbook(kind: &str) -> &'static str {
    RUNBOOK
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("", |(_, line)| line)
}

#[allow(clippy::too_many_arguments)] // one constructor for every kind of finding
pub(super) fn finding(
    kind: &'static str,
    critical: bool,
    impact: f64,
    title: String,
    evidence: String,
    client: &str,
    server: &str,
    error_type: Option<&str>,
    count: u64,
) -> Finding {
    Finding {
        kind,
        severity: if critical { "critical" } else { "warning" },
        score: if critical { 1e12 + impact } else { impact },
        title,
        evidence,
        client: client.to_string(),
        server: server.to_string(),
        error_type: error_type.map(str::to_string),
        count,
        runbook: runbook(kind),
    }
}

/// How a DNS lookup series failed (`error.type`, else a response code
/// other than `NOERROR`), if it did.
pub(super) fn dns_failure(attrs: &Attrs) -> Option<&str> {
    attrs.get_str(attr::ERROR_TYPE).or_else(|| {
        attrs
            .get_str(attr::DNS_RESPONSE_CODE)
            .filter(|c| *c != "NOERROR")
    })
}

/// Whether a DNS series is a client's lookups (not a server's answers).
pub(super) fn is_dns_client(attrs: &Attrs) -> bool {
    local_is_client(attrs) != Some(false)
}

#[derive(Default)]
struct DnsAcc {
    lookups: u64,
    failed: BTreeMap<String, (u64, BTreeSet<String>)>,
}

/// The findings of `(from, to]`, worst first.
/// With `cidr`, only flows whose peer address, and lookups and paths whose
/// server address, is inside.
pub fn health(
    store: &Store,
    from: u64,
    to: u64,
    cidr: Option<Cidr>,
    th: &UiHealthConfig,
) -> Vec<Finding> {
    let mut out = Vec::new();

    // DNS: failed lookups per client and server, by error type.
    let mut dns: BTreeMap<(String, String), DnsAcc> = BTreeMap::new();
    let mut dns_servers: BTreeMap<String, String> = BTreeMap::new();
    let mut paths: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut probes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let read = |m: &MetricId| {
        is(m, metric::DNS_DURATION)
            || is(m, ui::PATH_REACHABLE)
            || is(m, ui::PATH_PROBES_SENT)
            || is(m, ui::PATH_PROBES_LOST)
    };
    for ((res, m, attrs), slots) in store.series_slots(from, to, |(_, m, _)| read(m)) {
        let server = attrs.get_str(attr::SERVER_ADDRESS).unwrap_or(UNKNOWN);
        if let Some(c) = &cidr
            && !server.parse::<IpAddr>().is_ok_and(|ip| c.contains(ip))
        {
            continue;
        }
        if is(m, metric::DNS_DURATION) {
            if !is_dns_client(attrs) {
                if let Some(name) = res.get_str(resource::SERVICE_NAME) {
                    dns_servers.insert(server.to_string(), name.to_string());
                }
                continue;
            }
            let lookups: u64 = slots
                .filter_map(|sl| match &sl.value {
                    PointValue::Histogram(h) => Some(h.count),
                    _ => None,
                })
                .sum();
            let client = res.get_str(resource::SERVICE_NAME).unwrap_or(NONE);
            let acc = dns
                .entry((client.to_string(), server.to_string()))
                .or_default();
            acc.lookups += lookups;
            if let Some(kind) = dns_failure(attrs) {
                let f = acc.failed.entry(kind.to_string()).or_default();
                f.0 += lookups;
                if f.1.len() < 5
                    && let Some(q) = attrs.get_str(attr::DNS_QUESTION_NAME)
                {
                    f.1.insert(q.to_string());
                }
            }
        } else if is(m, ui::PATH_REACHABLE) {
            // The slots are in time order: the last is the newest.
            if let Some(last) = slots.last() {
                let p = paths.entry(server.to_string()).or_insert((0, 1.0));
                if last.end >= p.0 {
                    *p = (last.end, last.value.as_f64());
                }
            }
        } else {
            let n: u64 = slots.map(|sl| count(&sl.value)).sum();
            let p = probes.entry(server.to_string()).or_default();
            if is(m, ui::PATH_PROBES_SENT) {
                p.0 += n;
            } else {
                p.1 += n;
            }
        }
    }
    for ((client, server), acc) in &dns {
        for (kind, (n, names)) in &acc.failed {
            if *n < th.min_failures {
                continue;
            }
            let server_label = match dns_servers.get(server) {
                Some(name) => format!("{server} ({name})"),
                None => server.clone(),
            };
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let critical = kind != "NXDOMAIN";
            out.push(finding(
                "dns_failure",
                critical,
                *n as f64,
                format!("DNS {kind}: {client} → {server_label}"),
                format!(
                    "{n} of {} lookups by {client} to DNS server {server_label} failed with {kind}; names: {}",
                    acc.lookups,
                    names.join(", ")
                ),
                client,
                server,
                Some(kind),
                *n,
            ));
        }
    }

    // Connections: failures, resets and retransmits per service pair.
    let sel = Selection::services(from, to, cidr);
    for e in edges(store, &sel, false) {
        let t = &e.totals;
        for (kind, n) in &t.failed_by_type {
            if *n < th.min_failures {
                continue;
            }
            out.push(finding(
                "connection_failure",
                true,
                *n as f64,
                format!("Connections {kind}: {} → {}", e.client, e.server),
                format!(
                    "{n} connection attempts from {} to {} failed ({kind}); {} opened in the same time",
                    e.client, e.server, t.opened
                ),
                &e.client,
                &e.server,
                Some(kind),
                *n,
            ));
        }
        if t.resets >= th.min_failures {
            out.push(finding(
                "resets",
                false,
                t.resets as f64,
                format!("TCP resets: {} → {}", e.client, e.server),
                format!(
                    "{} resets between {} and {} ({} connections opened, {} closed)",
                    t.resets, e.client, e.server, t.opened, t.closed
                ),
                &e.client,
                &e.server,
                None,
                t.resets,
            ));
        }
        let ratio = t.retransmit_ratio();
        if t.packets >= th.min_packets && ratio > th.retransmit_ratio {
            out.push(finding(
                "retransmits",
                false,
                t.retransmits as f64,
                format!(
                    "Retransmits {:.1} %: {} → {}",
                    ratio * 100.0,
                    e.client,
                    e.server
                ),
                format!(
                    "{} of {} packets retransmitted (threshold {:.1} %)",
                    t.retransmits,
                    t.packets,
                    th.retransmit_ratio * 100.0
                ),
                &e.client,
                &e.server,
                None,
                t.retransmits,
            ));
        }
    }

    // Network paths.
    for (server, (_, reachable)) in &paths {
        if *reachable == 0.0 {
            out.push(finding(
                "path_unreachable",
                true,
                1.0,
                format!("Path unreachable: {server}"),
                format!("the last path test to {server} got no answer from the destination"),
                "",
                server,
                None,
                1,
            ));
        }
    }
    for (server, (sent, lost)) in &probes {
        if *sent == 0 {
            continue;
        }
        let loss = *lost as f64 / *sent as f64;
        if loss > th.path_loss_ratio {
            out.push(finding(
                "path_loss",
                false,
                *lost as f64,
                format!("Path loss {:.1} %: {server}", loss * 100.0),
                format!(
                    "{lost} of {sent} probes to {server} lost (threshold {:.1} %)",
                    th.path_loss_ratio * 100.0
                ),
                "",
                server,
                None,
                *lost,
            ));
        }
    }
    out.extend(super::drops::drop_findings(
        store,
        from,
        to,
        cidr,
        th.min_failures,
    ));
    out.extend(super::paths::route_findings(store, from, to, cidr));
    out.extend(super::paths::certificate_findings(
        store,
        from,
        to,
        cidr,
        th.certificate_warning,
    ));
    out.extend(super::baseline::findings(store, from, to, cidr, th));
    out.extend(super::churn::findings(store, from, to, cidr, th));
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.title.cmp(&b.title))
    });
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowscope_model::metrics::{FLOW_IO, TCP_FAILED, TCP_RTT};
    use flowscope_model::{MetricBatch, Point};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn svc(name: &str) -> Arc<Attrs> {
        Arc::new(Attrs::new().with(resource::SERVICE_NAME, name))
    }

    fn flow(role: Role, peer: &str, peer_service: Option<&str>) -> Attrs {
        let mut a = Attrs::new()
            .with(attr::FLOW_ROLE, role.as_str())
            .with(attr::PEER_ADDRESS, peer);
        if let Some(s) = peer_service {
            a.set(attr::PEER_SERVICE_NAME, s);
        }
        a
    }

    fn io(res: &Arc<Attrs>, a: &Attrs, dir: &str, n: u64) -> Point {
        Point {
            resource: res.clone(),
            metric: FLOW_IO,
            attrs: a.clone().with(attr::IO_DIRECTION, dir),
            value: PointValue::Int(n),
        }
    }

    /// web -> api seen from both ends, api -> db from api only, and a
    /// refused connect from `cli` to an address nobody serves.
    fn store() -> Store {
        let mut st = Store::new(3600 * S, 600 * S, 1000);
        let mut b = MetricBatch::new(0, 10 * S);
        let web_c = flow(Role::Client, "198.18.0.2", Some("api"));
        let api_s = flow(Role::Server, "198.18.0.1", Some("web"));
        let api_c = flow(Role::Client, "198.18.0.3", None);
        b.points.push(io(&svc("web"), &web_c, attr::TRANSMIT, 1000));
        b.points.push(io(&svc("web"), &web_c, attr::RECEIVE, 50));
        b.points.push(io(&svc("api"), &api_s, attr::RECEIVE, 1000));
        b.points.push(io(&svc("api"), &api_s, attr::TRANSMIT, 50));
        b.points.push(io(&svc("api"), &api_c, attr::TRANSMIT, 7));
        // A remote client of api, seen only by api.
        let ext = flow(Role::Server, "203.0.113.5", None);
        b.points.push(io(&svc("api"), &ext, attr::RECEIVE, 3));
        let mut h = Histogram::new(Arc::from(&[0.001, 0.01][..]));
        h.record(0.0005);
        h.record(0.004);
        b.points.push(Point {
            resource: svc("web"),
            metric: TCP_RTT,
            attrs: web_c.clone(),
            value: PointValue::Histogram(h),
        });
        b.points.push(Point {
            resource: svc("cli"),
            metric: TCP_FAILED,
            attrs: flow(Role::Client, "198.18.0.9", None).with(attr::ERROR_TYPE, "refused"),
            value: PointValue::Int(3),
        });
        st.insert(&b);
        st
    }

    fn sel(ck: &str, sk: &str) -> Selection {
        Selection {
            from: 0,
            to: u64::MAX,
            client_key: ck.into(),
            server_key: sk.into(),
            filters: vec![],
            cidr: None,
            hide_unresolved: false,
        }
    }

    #[test]
    fn each_dependency_once_with_exact_bytes() {
        let st = store();
        let e = edges(
            &st,
            &sel(resource::SERVICE_NAME, resource::SERVICE_NAME),
            false,
        );
        let pairs: Vec<(&str, &str, u64, u64)> = e
            .iter()
            .map(|e| {
                (
                    e.client.as_str(),
                    e.server.as_str(),
                    e.totals.bytes_client_to_server,
                    e.totals.bytes_server_to_client,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("web", "api", 1000, 50),
                ("api", "198.18.0.3", 7, 0),
                ("203.0.113.5", "api", 3, 0),
                ("cli", "198.18.0.9", 0, 0)
            ]
        );
        assert!(e[1].server_unresolved);
        let p50 = e[0].totals.rtt_quantile(0.5).unwrap();
        assert!((p50 - 0.001).abs() < 1e-9, "{p50}");
        // The peer key asks for the same thing from the other end.
        let e2 = edges(
            &st,
            &sel(resource::SERVICE_NAME, attr::PEER_SERVICE_NAME),
            false,
        );
        assert_eq!(e2[0].server, "api");
    }

    #[test]
    fn filters_cidr_and_hiding() {
        let st = store();
        let mut s = sel(resource::SERVICE_NAME, resource::SERVICE_NAME);
        s.filters = vec![(resource::SERVICE_NAME.into(), "api".into())];
        let e = edges(&st, &s, false);
        let names: Vec<_> = e
            .iter()
            .map(|e| (e.client.clone(), e.server.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("web".to_string(), "api".to_string()),
                ("api".to_string(), "198.18.0.3".to_string()),
                ("203.0.113.5".to_string(), "api".to_string())
            ]
        );
        let mut s = sel(resource::SERVICE_NAME, resource::SERVICE_NAME);
        s.cidr = Some("198.18.0.2/32".parse().unwrap());
        assert_eq!(edges(&st, &s, false).len(), 1);
        let mut s = sel(resource::SERVICE_NAME, resource::SERVICE_NAME);
        s.hide_unresolved = true;
        assert_eq!(edges(&st, &s, false).len(), 1);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("x/8".parse::<Cidr>().is_err());
        let c: Cidr = "fd00::/8".parse().unwrap();
        assert!(c.contains("fd00:1::2".parse().unwrap()));
        assert!(!c.contains("198.18.0.1".parse().unwrap()));
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains("198.18.0.1".parse().unwrap()));
    }

    #[test]
    fn every_finding_has_its_runbook_line_in_the_docs() {
        let doc = include_str!("../../../docs/health.md");
        for (kind, line) in RUNBOOK {
            assert!(
                line.ends_with('.') && !line.contains('\n'),
                "{kind}: {line}"
            );
            assert!(
                doc.contains(&format!("| `{kind}` |")),
                "{kind} not in docs/health.md"
            );
            assert!(
                doc.contains(line),
                "{kind}'s runbook line not in docs/health.md"
            );
        }
        for m in super::super::baseline::METRICS {
            assert!(!runbook(m.kind).is_empty(), "{}", m.kind);
        }
        assert_eq!(runbook("no_such_kind"), "");
    }

    #[test]
    fn health_names_the_refused_client_and_server() {
        let st = store();
        let f = health(&st, 0, u64::MAX, None, &UiHealthConfig::default());
        let none = health(
            &st,
            0,
            u64::MAX,
            Some("198.18.0.0/30".parse().unwrap()),
            &UiHealthConfig::default(),
        );
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, "connection_failure");
        assert_eq!(f[0].client, "cli");
        assert_eq!(f[0].server, "198.18.0.9");
        assert_eq!(f[0].count, 3);
        assert_eq!(f[0].error_type.as_deref(), Some("refused"));
        assert_eq!(f[0].runbook, runbook("connection_failure"));
    }
}
