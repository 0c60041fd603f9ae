//! One run's result as the contract's `flowscope.path.*` points.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use flowscope_model::metrics::{
    MetricId, PATH_HOP_PROBES_LOST, PATH_HOP_PROBES_SENT, PATH_HOP_RTT, PATH_HOPS, PATH_JITTER,
    PATH_PROBES_LOST, PATH_PROBES_SENT, PATH_REACHABLE, PATH_ROUTE_CHANGES, PATH_RTT,
    PATH_TLS_CHECK_FAILED, PATH_TLS_TIME_LEFT, Point, PointValue,
};
use flowscope_model::names::path;
use flowscope_model::{Attrs, Histogram};

use super::prober::{Protocol, TraceResult};

/// What is known about a hop's address besides the address: its reverse
/// DNS name and its autonomous system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HopNames {
    pub name: Option<String>,
    pub as_number: Option<u32>,
    pub as_name: Option<String>,
}

/// Hop names by address (only the addresses something is known of).
pub type HopNameMap = HashMap<IpAddr, HopNames>;

/// Identifies a test on every point it emits.
#[derive(Clone, Debug)]
pub struct TestLabels {
    /// The destination as configured (a name or an IP) or observed.
    pub server_address: String,
    /// TCP/UDP tests only.
    pub server_port: Option<u16>,
    pub protocol: Protocol,
    /// [`path::SCHEDULED`] or [`path::DYNAMIC`].
    pub test: &'static str,
    /// The user's tags.
    pub tags: Vec<(String, String)>,
}

impl TestLabels {
    pub fn attrs(&self) -> Attrs {
        let mut a = Attrs::new()
            .with(path::SERVER_ADDRESS, self.server_address.as_str())
            .with(path::PROTOCOL, self.protocol.as_str())
            .with(path::TEST, self.test);
        if let Some(p) = self.server_port {
            a.set(path::SERVER_PORT, p);
        }
        for (k, v) in &self.tags {
            a.set(k.as_str(), v.as_str());
        }
        a
    }
}

fn hop_address(a: Option<IpAddr>) -> String {
    a.map_or_else(|| path::NO_ANSWER.to_string(), |a| a.to_string())
}

/// The points of one run. A run that could not probe at all (`result`
/// `None`: unknown host, no route) reports only `reachable` 0 and `hops` 0.
/// A run that probed reports `route_changes` (0 or 1, from
/// [`super::route::RouteTracker`]) and each hop with what `names` knows of
/// its address.
pub fn run_points(
    resource: &Arc<Attrs>,
    labels: &TestLabels,
    result: Option<&TraceResult>,
    route_changes: u64,
    names: &HopNameMap,
    bounds: &Arc<[f64]>,
) -> Vec<Point> {
    let base = labels.attrs();
    let mut out = Vec::new();
    let mut push = |metric: MetricId, attrs: Attrs, value: PointValue| {
        out.push(Point {
            resource: resource.clone(),
            metric,
            attrs,
            value,
        });
    };
    let Some(r) = result else {
        push(PATH_REACHABLE, base.clone(), PointValue::Int(0));
        push(PATH_HOPS, base, PointValue::Int(0));
        return out;
    };
    push(
        PATH_REACHABLE,
        base.clone(),
        PointValue::Int(u64::from(r.reachable)),
    );
    push(PATH_HOPS, base.clone(), PointValue::Int(r.hop_count()));
    push(PATH_PROBES_SENT, base.clone(), PointValue::Int(r.e2e_sent));
    push(PATH_PROBES_LOST, base.clone(), PointValue::Int(r.e2e_lost));
    push(
        PATH_ROUTE_CHANGES,
        base.clone(),
        PointValue::Int(route_changes),
    );
    if !r.e2e_rtts.is_empty() {
        let mut h = Histogram::new(bounds.clone());
        for rtt in &r.e2e_rtts {
            h.record(rtt.as_secs_f64());
        }
        push(PATH_RTT, base.clone(), PointValue::Histogram(h));
    }
    if let Some(j) = r.jitter() {
        push(PATH_JITTER, base.clone(), PointValue::Double(j));
    }
    for hop in &r.hops {
        let mut attrs = base
            .clone()
            .with(path::HOP_INDEX, i64::from(hop.ttl))
            .with(path::HOP_ADDRESS, hop_address(hop.address));
        if let Some(n) = hop.address.and_then(|a| names.get(&a)) {
            if let Some(name) = &n.name {
                attrs.set(path::HOP_NAME, name.as_str());
            }
            if let Some(asn) = n.as_number {
                attrs.set(path::HOP_AS_NUMBER, i64::from(asn));
            }
            if let Some(org) = &n.as_name {
                attrs.set(path::HOP_AS_NAME, org.as_str());
            }
        }
        push(
            PATH_HOP_PROBES_SENT,
            attrs.clone(),
            PointValue::Int(hop.sent),
        );
        push(
            PATH_HOP_PROBES_LOST,
            attrs.clone(),
            PointValue::Int(hop.lost),
        );
        if !hop.rtts.is_empty() {
            let mut h = Histogram::new(bounds.clone());
            for rtt in &hop.rtts {
                h.record(rtt.as_secs_f64());
            }
            push(PATH_HOP_RTT, attrs, PointValue::Histogram(h));
        }
    }
    out
}

/// The points of one TLS check: the certificate's time left when one was
/// received (verified or not), and a failed check with its `error.type`.
pub fn tls_points(
    resource: &Arc<Attrs>,
    labels: &TestLabels,
    outcome: &super::tls::TlsOutcome,
    now: std::time::SystemTime,
) -> Vec<Point> {
    let base = labels.attrs();
    let mut out = Vec::new();
    if let Some(c) = &outcome.certificate {
        out.push(Point {
            resource: resource.clone(),
            metric: PATH_TLS_TIME_LEFT,
            attrs: base
                .clone()
                .with(path::TLS_SUBJECT, c.subject.as_str())
                .with(path::TLS_ISSUER, c.issuer.as_str())
                .with(path::TLS_NOT_AFTER, c.not_after_rfc3339()),
            value: PointValue::Double(c.time_left(now)),
        });
    }
    if let Some(e) = outcome.error {
        out.push(Point {
            resource: resource.clone(),
            metric: PATH_TLS_CHECK_FAILED,
            attrs: base.with(flowscope_model::names::attr::ERROR_TYPE, e),
            value: PointValue::Int(1),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::prober::HopResult;
    use std::time::Duration;

    #[test]
    fn points_of_a_run() {
        let labels = TestLabels {
            server_address: "db.example".into(),
            server_port: Some(5432),
            protocol: Protocol::Tcp,
            test: path::SCHEDULED,
            tags: vec![("team".into(), "core".into())],
        };
        let r = TraceResult {
            hops: vec![
                HopResult {
                    ttl: 1,
                    address: Some("198.18.0.1".parse().unwrap()),
                    sent: 3,
                    lost: 0,
                    rtts: vec![Duration::from_millis(1); 3],
                },
                HopResult {
                    ttl: 2,
                    address: None,
                    sent: 3,
                    lost: 3,
                    rtts: vec![],
                },
            ],
            reachable: false,
            e2e_sent: 4,
            e2e_lost: 4,
            e2e_rtts: vec![],
        };
        let bounds: Arc<[f64]> = Arc::from(flowscope_model::hist::RTT_BOUNDS);
        let res = Arc::new(Attrs::new());
        let mut names = HopNameMap::new();
        names.insert(
            "198.18.0.1".parse().unwrap(),
            HopNames {
                name: Some("gw.example".into()),
                as_number: Some(64500),
                as_name: Some("Example Net".into()),
            },
        );
        let pts = run_points(&res, &labels, Some(&r), 1, &names, &bounds);
        let find = |name: &str, hop: Option<i64>| {
            pts.iter()
                .find(|p| {
                    p.metric.name() == name
                        && hop.is_none_or(|h| p.attrs.get(path::HOP_INDEX) == Some(&h.into()))
                })
                .map(|p| p.value.clone())
        };
        assert_eq!(find(path::REACHABLE.0, None), Some(PointValue::Int(0)));
        assert_eq!(find(path::HOPS.0, None), Some(PointValue::Int(1)));
        assert_eq!(find(path::PROBES_LOST.0, None), Some(PointValue::Int(4)));
        assert_eq!(find(path::RTT.0, None), None);
        assert_eq!(
            find(path::HOP_PROBES_LOST.0, Some(2)),
            Some(PointValue::Int(3))
        );
        let hop2 = pts
            .iter()
            .find(|p| p.attrs.get(path::HOP_INDEX) == Some(&2i64.into()))
            .unwrap();
        assert_eq!(hop2.attrs.get_str(path::HOP_ADDRESS), Some("*"));
        assert_eq!(hop2.attrs.get(path::HOP_NAME), None);
        let hop1 = pts
            .iter()
            .find(|p| p.attrs.get(path::HOP_INDEX) == Some(&1i64.into()))
            .unwrap();
        assert_eq!(hop1.attrs.get_str(path::HOP_NAME), Some("gw.example"));
        assert_eq!(hop1.attrs.get(path::HOP_AS_NUMBER), Some(&64500i64.into()));
        assert_eq!(hop1.attrs.get_str(path::HOP_AS_NAME), Some("Example Net"));
        assert_eq!(find(path::ROUTE_CHANGES.0, None), Some(PointValue::Int(1)));
        assert_eq!(hop2.attrs.get_str("team"), Some("core"));
        assert_eq!(hop2.attrs.get(path::SERVER_PORT), Some(&5432u16.into()));
    }
}
