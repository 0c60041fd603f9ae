//! What the Paths page asks of the [`Store`]: every Network Path test of a
//! time range with its numbers, and one test's route hop by hop with its
//! history.
//!
//! # Tests and runs
//! A test is the Resource (the host, or the client workload of a dynamic
//! test) and the test attributes (`server.address`, `server.port`,
//! `flowscope.path.protocol`, `flowscope.path.test`, the user's tags):
//! every `flowscope.path.*` point without its `flowscope.path.hop.*`
//! attributes. Each run of a test is one batch, so its points share one
//! slot end: the slot end is the run. Past the full-resolution span runs
//! are rolled up per minute; a minute then stands for the runs in it.
//!
//! # Routes
//! A run's route is the address that answered at each TTL (`*` for none):
//! the `flowscope.path.hop.probes.sent` series of that slot. The history
//! lists each distinct route with when it was first and last seen; the
//! changes are the runs whose route differs from the one before by the
//! receiver's rule (receiver/src/path/route.rs): an address that differs
//! where both runs got an answer, or the destination reached at another
//! hop count. A silent hop is not a change. The count of the table is the
//! receiver's own `flowscope.path.route.changes`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use flowscope_model::names::{path, resource};
use flowscope_model::{Attrs, Histogram, PointValue};
use serde::Serialize;

use super::query::{Cidr, Finding, quantile};
use super::store::{SeriesKey, Store};

/// The keys that make a point a hop's rather than the test's.
const HOP_KEYS: [&str; 5] = [
    path::HOP_INDEX,
    path::HOP_ADDRESS,
    path::HOP_NAME,
    path::HOP_AS_NUMBER,
    path::HOP_AS_NAME,
];

/// The test attributes every point carries; anything else is a tag.
const TEST_KEYS: [&str; 4] = [
    path::SERVER_ADDRESS,
    path::SERVER_PORT,
    path::PROTOCOL,
    path::TEST,
];

fn is_path_metric(name: &str) -> bool {
    name.starts_with("flowscope.path.")
}

/// A stable id of a test: FNV-1a over its Resource and attributes, as hex.
/// It only has to tell the tests of one answer apart and stay the same
/// from one request to the next.
pub fn test_id(res: &Attrs, attrs: &Attrs) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (side, a) in [(b"r", res), (b"a", attrs)] {
        for (k, v) in a.iter() {
            eat(side);
            eat(k.as_bytes());
            eat(b"=");
            eat(v.to_string().as_bytes());
            eat(b"\n");
        }
    }
    format!("{h:016x}")
}

/// Which tests a request covers.
#[derive(Clone, Debug, Default)]
pub struct PathSelection {
    pub from: u64,
    pub to: u64,
    /// `key=value`: the Resource, a test attribute or a tag has the value.
    pub filters: Vec<(String, String)>,
    /// Only tests whose `server.address` is an address inside.
    pub cidr: Option<Cidr>,
}

impl PathSelection {
    fn keeps(&self, res: &Attrs, attrs: &Attrs) -> bool {
        if let Some(c) = &self.cidr {
            let inside = attrs
                .get_str(path::SERVER_ADDRESS)
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|ip| c.contains(ip));
            if !inside {
                return false;
            }
        }
        self.filters.iter().all(|(k, v)| {
            res.get(k)
                .or_else(|| attrs.get(k))
                .is_some_and(|x| x.to_string() == *v)
        })
    }
}

/// One test's numbers over the range.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PathTest {
    pub id: String,
    /// The Resource's `service.name` (a dynamic test's client workload) or
    /// `host.name` (a scheduled test's host).
    pub source: String,
    pub resource: BTreeMap<String, String>,
    pub server_address: String,
    pub server_port: Option<String>,
    pub protocol: String,
    pub test: String,
    pub tags: BTreeMap<String, String>,
    /// The last run's `flowscope.path.reachable`.
    pub reachable: Option<bool>,
    /// The last run's `flowscope.path.hops`.
    pub hops: Option<u64>,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
    pub probes_sent: u64,
    pub probes_lost: u64,
    pub loss_ratio: Option<f64>,
    /// The last run's jitter.
    pub jitter_ms: Option<f64>,
    /// The newest run's end, unix ms.
    pub last_run_ms: u64,
    pub runs: u64,
    /// Sum of `flowscope.path.route.changes` over the range.
    pub route_changes: u64,
}

#[derive(Default)]
struct Acc {
    test: PathTest,
    rtt: Option<Histogram>,
    reachable_at: u64,
    hops_at: u64,
    jitter_at: u64,
}

fn count(v: &PointValue) -> u64 {
    match v {
        PointValue::Int(n) => *n,
        PointValue::Double(d) if *d > 0.0 => d.round() as u64,
        _ => 0,
    }
}

fn merge_hist(into: &mut Option<Histogram>, v: &PointValue) {
    if let PointValue::Histogram(h) = v {
        match into {
            Some(r) => r.merge(h),
            None => *into = Some(h.clone()),
        }
    }
}

fn map_of(a: &Attrs) -> BTreeMap<String, String> {
    a.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A point's test: its Resource and its attributes without the hop keys.
fn test_attrs(attrs: &Attrs) -> Attrs {
    let mut a = attrs.clone();
    a.retain(|k, _| !HOP_KEYS.contains(&k));
    a
}

fn describe(res: &Attrs, attrs: &Attrs) -> PathTest {
    PathTest {
        id: test_id(res, attrs),
        source: res
            .get_str(resource::SERVICE_NAME)
            .or_else(|| res.get_str(resource::HOST_NAME))
            .unwrap_or(super::query::NONE)
            .to_string(),
        resource: map_of(res),
        server_address: attrs
            .get(path::SERVER_ADDRESS)
            .map_or_else(String::new, ToString::to_string),
        server_port: attrs.get(path::SERVER_PORT).map(ToString::to_string),
        protocol: attrs
            .get(path::PROTOCOL)
            .map_or_else(String::new, ToString::to_string),
        test: attrs
            .get(path::TEST)
            .map_or_else(String::new, ToString::to_string),
        tags: attrs
            .iter()
            .filter(|(k, _)| !TEST_KEYS.contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..PathTest::default()
    }
}

const MS: u64 = 1_000_000;

fn finish(mut acc: Acc) -> PathTest {
    let t = &mut acc.test;
    t.rtt_p50_ms = acc
        .rtt
        .as_ref()
        .and_then(|h| quantile(h, 0.5))
        .map(|s| s * 1e3);
    t.rtt_p95_ms = acc
        .rtt
        .as_ref()
        .and_then(|h| quantile(h, 0.95))
        .map(|s| s * 1e3);
    t.loss_ratio = (t.probes_sent > 0).then(|| t.probes_lost as f64 / t.probes_sent as f64);
    acc.test
}

/// Every test of the selection, the most recently run first.
pub fn tests(store: &Store, sel: &PathSelection) -> Vec<PathTest> {
    collect(store, sel, |_, _| true)
}

/// The tests of the selection that `keep` (Resource, test attributes)
/// takes.
fn collect(
    store: &Store,
    sel: &PathSelection,
    keep: impl Fn(&Arc<Attrs>, &Attrs) -> bool,
) -> Vec<PathTest> {
    let mut accs: HashMap<(Arc<Attrs>, Attrs), Acc> = HashMap::new();
    // The per-hop series only count for the detail.
    let wanted = |(_, m, attrs): &SeriesKey| {
        is_path_metric(m.name()) && attrs.get(path::HOP_INDEX).is_none()
    };
    for ((res, m, attrs), slots) in store.series_slots(sel.from, sel.to, wanted) {
        if !sel.keeps(res, attrs) || !keep(res, attrs) {
            continue;
        }
        let acc = accs
            .entry((res.clone(), attrs.clone()))
            .or_insert_with(|| Acc {
                test: describe(res, attrs),
                ..Acc::default()
            });
        let name = m.name();
        for s in slots {
            let t = &mut acc.test;
            t.last_run_ms = t.last_run_ms.max(s.end / MS);
            if name == path::REACHABLE.0 {
                t.runs += 1;
                if s.end >= acc.reachable_at {
                    acc.reachable_at = s.end;
                    t.reachable = Some(s.value.as_f64() > 0.0);
                }
            } else if name == path::HOPS.0 {
                if s.end >= acc.hops_at {
                    acc.hops_at = s.end;
                    t.hops = Some(count(&s.value));
                }
            } else if name == path::JITTER.0 {
                if s.end >= acc.jitter_at {
                    acc.jitter_at = s.end;
                    t.jitter_ms = Some(s.value.as_f64() * 1e3);
                }
            } else if name == path::PROBES_SENT.0 {
                t.probes_sent += count(&s.value);
            } else if name == path::PROBES_LOST.0 {
                t.probes_lost += count(&s.value);
            } else if name == path::ROUTE_CHANGES.0 {
                t.route_changes += count(&s.value);
            } else if name == path::RTT.0 {
                merge_hist(&mut acc.rtt, &s.value);
            }
        }
    }
    let mut out: Vec<PathTest> = accs.into_values().map(finish).collect();
    out.sort_by(|a, b| {
        b.last_run_ms
            .cmp(&a.last_run_ms)
            .then_with(|| a.server_address.cmp(&b.server_address))
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

/// One hop of the route.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Hop {
    /// The TTL (1 is the first router).
    pub index: u64,
    /// The address that answered, or `*`.
    pub address: String,
    pub name: Option<String>,
    pub as_number: Option<String>,
    pub as_name: Option<String>,
    pub probes_sent: u64,
    pub probes_lost: u64,
    pub loss_ratio: Option<f64>,
    pub rtt_p50_ms: Option<f64>,
    /// This hop's RTT p50 minus the previous answering hop's: what the
    /// edge leading here adds.
    pub delta_ms: Option<f64>,
    #[serde(skip)]
    rtt: Option<Histogram>,
}

/// One distinct route and when it was seen.
#[derive(Clone, Debug, Serialize)]
pub struct Route {
    /// Addresses in TTL order, `*` for a silent hop.
    pub hops: Vec<String>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub runs: u64,
}

/// A run whose route differs from the run before it.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub at_ms: u64,
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// One run's end-to-end numbers (or one minute's, past full resolution).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunPoint {
    pub t_ms: u64,
    pub rtt_p50_ms: Option<f64>,
    pub probes_sent: u64,
    pub probes_lost: u64,
    pub loss_ratio: Option<f64>,
    pub reachable: Option<bool>,
    #[serde(skip)]
    rtt: Option<Histogram>,
}

/// One test's route hop by hop.
#[derive(Clone, Debug, Serialize)]
pub struct PathDetail {
    pub test: PathTest,
    /// The newest run's route, each hop with its numbers over the range.
    pub hops: Vec<Hop>,
    /// Distinct routes, the newest last seen last.
    pub history: Vec<Route>,
    pub changes: Vec<Change>,
    pub points: Vec<RunPoint>,
}

/// `*` at the TTLs the run has no answer for, between its hops.
fn route_of(hops: &BTreeMap<u64, (String, u64)>) -> Vec<String> {
    let Some(max) = hops.keys().next_back().copied() else {
        return Vec::new();
    };
    (1..=max)
        .map(|i| {
            hops.get(&i)
                .map_or_else(|| path::NO_ANSWER.to_string(), |(a, _)| a.clone())
        })
        .collect()
}

/// The receiver's rule: another address where both runs got an answer,
/// or the destination reached at another hop count.
fn differs(new: &[String], new_reached: bool, old: &[String], old_reached: bool) -> bool {
    let star = |a: &str| a == path::NO_ANSWER;
    let moved = new
        .iter()
        .zip(old.iter())
        .any(|(a, b)| !star(a) && !star(b) && a != b);
    moved || (new_reached && old_reached && new.len() != old.len())
}

/// The test `id` of the range, with its route, history and runs.
pub fn detail(store: &Store, sel: &PathSelection, id: &str) -> Option<PathDetail> {
    // The test's own series (its id is computed once per series).
    let mut test: Option<PathTest> = None;
    let mut hops: BTreeMap<(u64, String), Hop> = BTreeMap::new();
    // run end -> TTL -> (address, probes sent): the route of each run.
    let mut runs: BTreeMap<u64, BTreeMap<u64, (String, u64)>> = BTreeMap::new();
    let mut points: BTreeMap<u64, RunPoint> = BTreeMap::new();
    // The id of each test, computed once per test rather than per series
    // (a test has a series per metric and per hop).
    let mut ids: HashMap<(*const Attrs, Attrs), bool> = HashMap::new();
    let mut is_it = |res: &Arc<Attrs>, base: &Attrs| -> bool {
        let key = (Arc::as_ptr(res), base.clone());
        if let Some(v) = ids.get(&key) {
            return *v;
        }
        let v = test_id(res, base) == id;
        ids.insert(key, v);
        v
    };
    let mut key: Option<(Arc<Attrs>, Attrs)> = None;
    for ((res, m, attrs), slots) in
        store.series_slots(sel.from, sel.to, |(_, m, _)| is_path_metric(m.name()))
    {
        let base = test_attrs(attrs);
        if !is_it(res, &base) {
            continue;
        }
        if key.is_none() {
            key = Some((res.clone(), base.clone()));
        }
        if test.is_none() {
            test = Some(describe(res, &base));
        }
        let name = m.name();
        if let Some(index) = attrs.get(path::HOP_INDEX) {
            let index: u64 = index.to_string().parse().unwrap_or(0);
            let address = attrs
                .get(path::HOP_ADDRESS)
                .map_or_else(|| path::NO_ANSWER.to_string(), ToString::to_string);
            let hop = hops.entry((index, address.clone())).or_insert_with(|| Hop {
                index,
                address: address.clone(),
                ..Hop::default()
            });
            let text = |k: &str| attrs.get(k).map(ToString::to_string);
            hop.name = hop.name.take().or_else(|| text(path::HOP_NAME));
            hop.as_number = hop.as_number.take().or_else(|| text(path::HOP_AS_NUMBER));
            hop.as_name = hop.as_name.take().or_else(|| text(path::HOP_AS_NAME));
            for s in slots {
                if name == path::HOP_PROBES_SENT.0 {
                    let n = count(&s.value);
                    hop.probes_sent += n;
                    // Per TTL, the address that answered most in the slot.
                    let at = runs.entry(s.end).or_default();
                    let sent = if address == path::NO_ANSWER {
                        0
                    } else {
                        n.max(1)
                    };
                    match at.get(&index) {
                        Some((_, best)) if *best >= sent => {}
                        _ => {
                            at.insert(index, (address.clone(), sent));
                        }
                    }
                } else if name == path::HOP_PROBES_LOST.0 {
                    hop.probes_lost += count(&s.value);
                } else if name == path::HOP_RTT.0 {
                    merge_hist(&mut hop.rtt, &s.value);
                }
            }
            continue;
        }
        for s in slots {
            let p = points.entry(s.end).or_insert_with(|| RunPoint {
                t_ms: s.end / MS,
                ..RunPoint::default()
            });
            if name == path::RTT.0 {
                merge_hist(&mut p.rtt, &s.value);
            } else if name == path::PROBES_SENT.0 {
                p.probes_sent += count(&s.value);
            } else if name == path::PROBES_LOST.0 {
                p.probes_lost += count(&s.value);
            } else if name == path::REACHABLE.0 {
                p.reachable = Some(s.value.as_f64() > 0.0);
            }
        }
    }
    let test = test?;
    // The table's numbers for this one test.
    let (kr, ka) = key?;
    let summary_sel = PathSelection {
        from: sel.from,
        to: sel.to,
        ..PathSelection::default()
    };
    let summary = collect(store, &summary_sel, |r, a| {
        (Arc::ptr_eq(r, &kr) || **r == *kr) && *a == ka
    })
    .into_iter()
    .next()
    .unwrap_or(test);

    // History: each distinct route, and the runs that changed it.
    let mut history: Vec<Route> = Vec::new();
    let mut changes = Vec::new();
    let mut prev: Option<(Vec<String>, bool)> = None;
    for (end, at) in &runs {
        let route = route_of(at);
        if route.is_empty() {
            continue;
        }
        let t = end / MS;
        let reached = points.get(end).and_then(|p| p.reachable).unwrap_or(false);
        match history.iter_mut().find(|r| r.hops == route) {
            Some(r) => {
                r.last_seen_ms = t;
                r.runs += 1;
            }
            None => history.push(Route {
                hops: route.clone(),
                first_seen_ms: t,
                last_seen_ms: t,
                runs: 1,
            }),
        }
        if let Some((old, old_reached)) = &prev
            && differs(&route, reached, old, *old_reached)
        {
            changes.push(Change {
                at_ms: t,
                from: old.clone(),
                to: route.clone(),
            });
        }
        // A silent hop keeps the address it last answered with.
        let mut known = route;
        if let Some((old, _)) = &prev {
            for (i, a) in known.iter_mut().enumerate() {
                if a == path::NO_ANSWER
                    && let Some(o) = old.get(i)
                {
                    a.clone_from(o);
                }
            }
        }
        prev = Some((known, reached));
    }
    history.sort_by_key(|r| (r.last_seen_ms, r.first_seen_ms));

    // The newest run's route, each hop with its numbers over the range.
    let newest: Vec<(u64, String)> = runs
        .values()
        .next_back()
        .map(|at| {
            let max = at.keys().next_back().copied().unwrap_or(0);
            (1..=max)
                .map(|i| {
                    (
                        i,
                        at.get(&i)
                            .map_or_else(|| path::NO_ANSWER.to_string(), |(a, _)| a.clone()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut route = Vec::new();
    let mut before: Option<f64> = None;
    for key in newest {
        let mut h = hops.remove(&key).unwrap_or_else(|| Hop {
            index: key.0,
            address: key.1.clone(),
            ..Hop::default()
        });
        h.loss_ratio = (h.probes_sent > 0).then(|| h.probes_lost as f64 / h.probes_sent as f64);
        h.rtt_p50_ms = h
            .rtt
            .as_ref()
            .and_then(|r| quantile(r, 0.5))
            .map(|s| s * 1e3);
        if let Some(r) = h.rtt_p50_ms {
            h.delta_ms = Some(r - before.unwrap_or(0.0));
            before = Some(r);
        }
        route.push(h);
    }
    let points = points
        .into_values()
        .map(|mut p| {
            p.rtt_p50_ms = p
                .rtt
                .as_ref()
                .and_then(|h| quantile(h, 0.5))
                .map(|s| s * 1e3);
            p.loss_ratio = (p.probes_sent > 0).then(|| p.probes_lost as f64 / p.probes_sent as f64);
            p
        })
        .collect();
    Some(PathDetail {
        test: summary,
        hops: route,
        history,
        changes,
        points,
    })
}

/// Health findings: a test whose route changed in the range (warning).
pub fn route_findings(store: &Store, from: u64, to: u64, cidr: Option<Cidr>) -> Vec<Finding> {
    let sel = PathSelection {
        from,
        to,
        filters: Vec::new(),
        cidr,
    };
    tests(store, &sel)
        .into_iter()
        .filter(|t| t.route_changes > 0)
        .map(|t| {
            let dest = match &t.server_port {
                Some(p) => format!("{}:{p}", t.server_address),
                None => t.server_address.clone(),
            };
            let n = t.route_changes;
            super::query::finding(
                "route_changed",
                false,
                n as f64,
                format!("Route changed: {} → {dest}", t.source),
                format!(
                    "the route from {} to {dest} ({}) changed {n} time{} in this range; \
                     the Paths page shows each route",
                    t.source,
                    t.protocol,
                    if n == 1 { "" } else { "s" }
                ),
                &t.source,
                &t.server_address,
                None,
                n,
            )
        })
        .collect()
}

/// Health findings of the path tests' TLS checks: per server and
/// certificate, the newest time left in the range; expired is critical,
/// less than `warning` left a warning. Each says what to do next.
pub fn certificate_findings(
    store: &Store,
    from: u64,
    to: u64,
    cidr: Option<Cidr>,
    warning: std::time::Duration,
) -> Vec<Finding> {
    // (server, port, subject) -> (slot end, seconds left, not_after)
    let mut newest: BTreeMap<(String, String, String), (u64, f64, String)> = BTreeMap::new();
    let is_cert = |(_, m, _): &SeriesKey| m.name() == path::TLS_TIME_LEFT.0;
    for ((_, _, attrs), slots) in store.series_slots(from, to, is_cert) {
        let server = attrs.get_str(path::SERVER_ADDRESS).unwrap_or_default();
        if let Some(c) = &cidr
            && !server.parse::<IpAddr>().is_ok_and(|ip| c.contains(ip))
        {
            continue;
        }
        let Some(last) = slots.last() else { continue };
        let key = (
            server.to_string(),
            attrs
                .get(path::SERVER_PORT)
                .map(|p| p.to_string())
                .unwrap_or_default(),
            attrs
                .get_str(path::TLS_SUBJECT)
                .unwrap_or_default()
                .to_string(),
        );
        let not_after = attrs.get_str(path::TLS_NOT_AFTER).unwrap_or_default();
        let e = newest.entry(key).or_insert((0, 0.0, String::new()));
        if last.end >= e.0 {
            *e = (last.end, last.value.as_f64(), not_after.to_string());
        }
    }
    let warn = warning.as_secs_f64();
    newest
        .into_iter()
        .filter(|(_, (_, left, _))| *left < warn)
        .map(|((server, port, subject), (_, left, not_after))| {
            let dest = if port.is_empty() {
                server.clone()
            } else {
                format!("{server}:{port}")
            };
            let expired = left <= 0.0;
            let days = left.abs() / 86_400.0;
            let (title, evidence) = if expired {
                (
                    format!("Certificate expired: {dest}"),
                    format!(
                        "the certificate of {dest} ({subject}) expired {days:.1} days ago                          (notAfter {not_after}): renew and deploy it"
                    ),
                )
            } else {
                (
                    format!("Certificate expires in {days:.1} days: {dest}"),
                    format!(
                        "the certificate of {dest} ({subject}) expires {not_after}: renew it                          before then"
                    ),
                )
            };
            super::query::finding(
                if expired {
                    "certificate_expired"
                } else {
                    "certificate_expiring"
                },
                expired,
                // Sooner is worse.
                1e9 - left,
                title,
                evidence,
                "",
                &server,
                None,
                1,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_model::metrics::{
        PATH_HOP_PROBES_LOST, PATH_HOP_PROBES_SENT, PATH_HOP_RTT, PATH_HOPS, PATH_PROBES_LOST,
        PATH_PROBES_SENT, PATH_REACHABLE, PATH_ROUTE_CHANGES,
    };
    use flowscope_model::{MetricBatch, MetricId, Point};

    const S: u64 = 1_000_000_000;

    fn point(metric: MetricId, attrs: &Attrs, value: PointValue) -> Point {
        Point {
            resource: Arc::new(Attrs::new().with(resource::HOST_NAME, "node1")),
            metric,
            attrs: attrs.clone(),
            value,
        }
    }

    /// One run ending at `end` s along `route` (None: silent hop).
    fn run(st: &mut Store, end: u64, route: &[Option<&str>], changes: u64) {
        let base = Attrs::new()
            .with(path::SERVER_ADDRESS, "198.18.3.2")
            .with(path::SERVER_PORT, 5000u16)
            .with(path::PROTOCOL, "tcp")
            .with(path::TEST, "scheduled")
            .with("team", "db");
        let mut b = MetricBatch::new((end - 1) * S, end * S);
        b.points
            .push(point(PATH_REACHABLE, &base, PointValue::Int(1)));
        b.points
            .push(point(PATH_HOPS, &base, PointValue::Int(route.len() as u64)));
        b.points
            .push(point(PATH_PROBES_SENT, &base, PointValue::Int(10)));
        b.points
            .push(point(PATH_PROBES_LOST, &base, PointValue::Int(1)));
        b.points
            .push(point(PATH_ROUTE_CHANGES, &base, PointValue::Int(changes)));
        for (i, a) in route.iter().enumerate() {
            let attrs = base
                .clone()
                .with(path::HOP_INDEX, i as i64 + 1)
                .with(path::HOP_ADDRESS, a.unwrap_or("*"));
            let mut h = Histogram::new(Arc::from(&[0.001, 0.002, 0.004][..]));
            if a.is_some() {
                for _ in 0..3 {
                    h.record(0.0005 * (i as f64 + 1.0));
                }
                b.points
                    .push(point(PATH_HOP_RTT, &attrs, PointValue::Histogram(h)));
            }
            b.points
                .push(point(PATH_HOP_PROBES_SENT, &attrs, PointValue::Int(3)));
            b.points.push(point(
                PATH_HOP_PROBES_LOST,
                &attrs,
                PointValue::Int(if a.is_some() { 0 } else { 3 }),
            ));
        }
        st.insert(&b);
    }

    #[test]
    fn tests_routes_history_and_changes() {
        let mut st = Store::new(3600 * S, 600 * S, 1000);
        let a = [Some("198.18.1.1"), Some("198.18.2.2"), Some("198.18.3.2")];
        let silent = [Some("198.18.1.1"), None, Some("198.18.3.2")];
        let b = [Some("198.18.1.1"), Some("198.18.4.2"), Some("198.18.3.2")];
        run(&mut st, 100, &a, 0);
        run(&mut st, 110, &silent, 0);
        run(&mut st, 120, &b, 1);
        run(&mut st, 130, &b, 0);
        let sel = PathSelection {
            from: 0,
            to: u64::MAX,
            ..PathSelection::default()
        };
        let all = tests(&st, &sel);
        assert_eq!(all.len(), 1);
        let t = &all[0];
        assert_eq!(t.source, "node1");
        assert_eq!(t.server_port.as_deref(), Some("5000"));
        assert_eq!(t.tags.get("team").map(String::as_str), Some("db"));
        assert_eq!((t.runs, t.route_changes, t.hops), (4, 1, Some(3)));
        assert_eq!((t.probes_sent, t.probes_lost), (40, 4));
        assert_eq!(t.last_run_ms, 130_000);
        assert_eq!(t.reachable, Some(true));

        let d = detail(&st, &sel, &t.id).unwrap();
        let addrs: Vec<&str> = d.hops.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(addrs, ["198.18.1.1", "198.18.4.2", "198.18.3.2"]);
        assert_eq!(d.hops[1].probes_sent, 6, "two runs went through .4.2");
        assert_eq!(d.history.len(), 3, "{:?}", d.history);
        assert_eq!(
            d.history[2].hops,
            ["198.18.1.1", "198.18.4.2", "198.18.3.2"]
        );
        assert_eq!(
            (d.history[2].first_seen_ms, d.history[2].last_seen_ms),
            (120_000, 130_000)
        );
        assert_eq!(d.changes.len(), 1, "the silent hop is no change");
        assert_eq!(d.changes[0].at_ms, 120_000);
        assert_eq!(
            d.changes[0].from,
            ["198.18.1.1", "198.18.2.2", "198.18.3.2"]
        );
        assert_eq!(d.points.len(), 4);

        // Filters and CIDR.
        let mut f = sel.clone();
        f.cidr = Some("198.18.3.0/24".parse().unwrap());
        assert_eq!(tests(&st, &f).len(), 1);
        f.cidr = Some("10.0.0.0/8".parse().unwrap());
        assert!(tests(&st, &f).is_empty());
        let mut f = sel.clone();
        f.filters = vec![("team".into(), "web".into())];
        assert!(tests(&st, &f).is_empty());
        f.filters = vec![("host.name".into(), "node1".into())];
        assert_eq!(tests(&st, &f).len(), 1);

        let found = route_findings(&st, 0, u64::MAX, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, "route_changed");
        assert_eq!(found[0].severity, "warning");
        assert_eq!(found[0].count, 1);
        assert!(detail(&st, &sel, "nope").is_none());
    }
}
