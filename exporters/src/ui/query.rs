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

mod edges;
mod findings;
mod health;
mod totals;

use std::net::IpAddr;

use flowscope_model::names::{attr, resource};
use flowscope_model::{Attrs, Role};

pub use edges::{Edge, edges, edges_reading, merged_buckets};
pub use findings::{Finding, RUNBOOK, runbook};
pub(super) use findings::{dns_failure, finding, is_dns_client};
pub use health::health;
pub use totals::{Totals, quantile};

/// The peer's `host.name`: never emitted by an agent (an agent does not
/// know the other node's name); set by the fleet view when it joins a flow
/// to the node that reports its other end (the fleet module's documentation, "Joined across nodes, counted
/// once").
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

/// The key whose value is `key` on the local side of a point: its local
/// counterpart for a peer key that has one (`service.peer.name` ->
/// `service.name`), none for any other peer key (the local side never has
/// it), else `key` itself.
pub fn local_key(key: &str) -> Option<&str> {
    if let Some((local, _)) = PAIRS.iter().find(|(_, p)| *p == key) {
        return Some(local);
    }
    (!is_peer_key(key)).then_some(key)
}

/// `key` on the local side of a point ([`local_key`]): from the Resource,
/// else from the flow's attributes.
pub fn local_value(res: &Attrs, attrs: &Attrs, key: &str) -> Option<String> {
    let key = local_key(key)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowscope_model::metrics::{FLOW_IO, TCP_FAILED, TCP_RTT};
    use flowscope_model::{Histogram, MetricBatch, Point, PointValue};
    use flowscope_otel_config::exporters::UiHealthConfig;

    use super::*;
    use crate::ui::store::Store;

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

    /// The churn finding's connection durations are read with the other
    /// findings' dependencies, but a pair that only they name is no
    /// dependency: even when every dependency is a resets finding
    /// (`min_failures` 0), it is none.
    #[test]
    fn health_makes_no_dependency_of_durations_alone() {
        let mut st = store();
        let mut b = MetricBatch::new(0, 10 * S);
        let mut h = Histogram::new(Arc::from(&[0.1][..]));
        h.record(0.05);
        b.points.push(Point {
            resource: svc("lonely"),
            metric: flowscope_model::metrics::TCP_DURATION,
            attrs: flow(Role::Client, "198.18.0.20", Some("db")),
            value: PointValue::Histogram(h),
        });
        st.insert(&b);
        let th = UiHealthConfig {
            min_failures: 0,
            ..Default::default()
        };
        let f = health(&st, 0, u64::MAX, None, &th);
        let mut resets: Vec<(&str, &str)> = f
            .iter()
            .filter(|f| f.kind == "resets")
            .map(|f| (f.client.as_str(), f.server.as_str()))
            .collect();
        resets.sort();
        assert_eq!(
            resets,
            [
                ("203.0.113.5", "api"),
                ("api", "198.18.0.3"),
                ("cli", "198.18.0.9"),
                ("web", "api"),
            ],
            "{f:#?}"
        );
    }
}
