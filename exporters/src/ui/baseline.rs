//! Rises over a baseline: the Health findings that say "worse than usual"
//! rather than "over a fixed threshold".
//!
//! For each client/server pair, a metric's value in the time range is
//! compared with its value in the baseline spans the store holds
//! ([`Store::holds`]): the span of the same length just before the range,
//! and the same span one day earlier. A pair is a finding when its value
//! is at least `health.baseline_ratio` times the highest baseline value
//! (so a daily peak that was there yesterday as well is not a rise) and
//! the range holds at least `health.baseline_min_count` events (so three
//! failures after one is not a rise). A pair with nothing in a baseline
//! has a baseline of zero: any value that has the minimum count is a
//! rise. Without any held baseline span there is nothing to compare with,
//! and no finding.
//!
//! On one node the store keeps `retention` (default 1 h, at most 24 h):
//! the span before is held when the range is at most half the data kept
//! (a 15 min or 30 min range after an hour of running), the day-earlier
//! span never (it needs more than 24 h). In fleet mode the storage is
//! asked for both spans ([`super::fleet`], PromQL `offset`), and a span is
//! held when the storage had flow series in the hour before it started.
//!
//! The metrics are the entries of [`METRICS`]: a new metric (drops) is one
//! entry, with the function that measures it per pair and span.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flowscope_model::metrics::{DNS_DURATION, FLOW_PACKETS, TCP_FAILED, TCP_RETRANSMITS};
use flowscope_model::names::{attr, metric, resource};
use flowscope_model::{MetricId, PointValue};
use flowscope_otel_config::exporters::UiHealthConfig;

use super::query::{self, Cidr, Finding, NONE, Selection, UNKNOWN};
use super::store::Store;

/// One day in nanoseconds: how far back the day-earlier baseline is.
pub const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// A span of time, `(from, to]` in unix ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from: u64,
    pub to: u64,
}

/// A client/server pair.
pub type Pair = (String, String);

/// A metric's value for one pair in one span.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measure {
    /// Events counted (retransmitted segments, failed connections, failed
    /// lookups).
    pub count: u64,
    /// What the count is a share of (packets, for the retransmit ratio);
    /// `None`: the count itself is compared.
    pub of: Option<u64>,
}

impl Measure {
    /// What is compared: the count, or its share of `of`.
    pub fn value(&self) -> f64 {
        match self.of {
            Some(0) => 0.0,
            Some(n) => self.count as f64 / n as f64,
            None => self.count as f64,
        }
    }

    fn show(&self) -> String {
        match self.of {
            Some(n) => format!("{:.2} % ({} of {n})", self.value() * 100.0, self.count),
            None => self.count.to_string(),
        }
    }
}

/// One metric whose rise over its baseline is a finding.
pub struct Metric {
    /// The finding's kind (`retransmits_rise`).
    pub kind: &'static str,
    /// How titles and evidence name it.
    pub what: &'static str,
    /// The metrics it reads: the fleet asks the storage for these over the
    /// baseline spans.
    pub reads: &'static [MetricId],
    /// Its value per pair in a span.
    pub measure: fn(&Store, Span, Option<Cidr>) -> BTreeMap<Pair, Measure>,
}

/// The metrics compared with their baseline.
pub const METRICS: &[Metric] = &[
    Metric {
        kind: "retransmits_rise",
        what: "retransmit ratio",
        reads: &[FLOW_PACKETS, TCP_RETRANSMITS],
        measure: retransmits,
    },
    Metric {
        kind: "connection_failure_rise",
        what: "failed connections",
        reads: &[TCP_FAILED],
        measure: failed_connections,
    },
    Metric {
        kind: "dns_failure_rise",
        what: "failed DNS lookups",
        reads: &[DNS_DURATION],
        measure: dns_failures,
    },
];

/// The dependencies of a span, per service pair, as the Health page groups
/// them.
fn dependencies(store: &Store, span: Span, cidr: Option<Cidr>) -> Vec<query::Edge> {
    let sel = Selection::services(span.from, span.to, cidr);
    query::edges(store, &sel, false)
}

fn retransmits(store: &Store, span: Span, cidr: Option<Cidr>) -> BTreeMap<Pair, Measure> {
    dependencies(store, span, cidr)
        .into_iter()
        .map(|e| {
            let m = Measure {
                count: e.totals.retransmits,
                of: Some(e.totals.packets),
            };
            ((e.client, e.server), m)
        })
        .collect()
}

fn failed_connections(store: &Store, span: Span, cidr: Option<Cidr>) -> BTreeMap<Pair, Measure> {
    dependencies(store, span, cidr)
        .into_iter()
        .filter(|e| e.totals.failed > 0)
        .map(|e| {
            let m = Measure {
                count: e.totals.failed,
                of: None,
            };
            ((e.client, e.server), m)
        })
        .collect()
}

/// Failed lookups per client service and DNS server address.
fn dns_failures(store: &Store, span: Span, cidr: Option<Cidr>) -> BTreeMap<Pair, Measure> {
    let mut out: BTreeMap<Pair, Measure> = BTreeMap::new();
    let series = store.series_values(span.from, span.to, |(_, m, _)| {
        m.name() == metric::DNS_DURATION.0
    });
    for ((res, _, attrs), values) in series {
        if !query::is_dns_client(attrs) || query::dns_failure(attrs).is_none() {
            continue;
        }
        let server = attrs.get_str(attr::SERVER_ADDRESS).unwrap_or(UNKNOWN);
        if let Some(c) = &cidr
            && !server.parse::<IpAddr>().is_ok_and(|ip| c.contains(ip))
        {
            continue;
        }
        let lookups: u64 = values
            .filter_map(|v| match v {
                PointValue::Histogram(h) => Some(h.count),
                _ => None,
            })
            .sum();
        let client = res.get_str(resource::SERVICE_NAME).unwrap_or(NONE);
        out.entry((client.to_string(), server.to_string()))
            .or_default()
            .count += lookups;
    }
    out
}

/// The baseline spans of `(from, to]` the store holds, each with how the
/// evidence names it: the span before, the same span a day earlier.
pub fn held_spans(store: &Store, from: u64, to: u64) -> Vec<(&'static str, Span)> {
    let len = to.saturating_sub(from);
    let mut out = Vec::new();
    if let Some(before) = from.checked_sub(len) {
        out.push((
            "the span before",
            Span {
                from: before,
                to: from,
            },
        ));
    }
    if let (Some(f), Some(t)) = (from.checked_sub(DAY_NS), to.checked_sub(DAY_NS)) {
        out.push(("the same span a day earlier", Span { from: f, to: t }));
    }
    out.retain(|(_, s)| len > 0 && store.holds(s.from, s.to));
    out
}

/// Whether `now` is a rise over `baselines`: at least `min_count` events,
/// and at least `ratio` times the highest baseline value (a baseline
/// without events is zero). No baseline: nothing to compare with.
pub fn is_rise(now: Measure, baselines: &[Measure], ratio: f64, min_count: u64) -> bool {
    if baselines.is_empty() || now.count < min_count {
        return false;
    }
    let base = baselines.iter().map(Measure::value).fold(0.0, f64::max);
    let v = now.value();
    v > 0.0 && v >= ratio * base
}

/// The rise findings of `(from, to]`.
pub fn findings(
    store: &Store,
    from: u64,
    to: u64,
    cidr: Option<Cidr>,
    th: &UiHealthConfig,
) -> Vec<Finding> {
    let spans = held_spans(store, from, to);
    if spans.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for m in METRICS {
        let now = (m.measure)(store, Span { from, to }, cidr);
        let before: Vec<BTreeMap<Pair, Measure>> = spans
            .iter()
            .map(|(_, s)| (m.measure)(store, *s, cidr))
            .collect();
        for (pair, cur) in now {
            let base: Vec<Measure> = before
                .iter()
                .map(|b| {
                    b.get(&pair).copied().unwrap_or(Measure {
                        count: 0,
                        of: cur.of.map(|_| 0),
                    })
                })
                .collect();
            if !is_rise(cur, &base, th.baseline_ratio, th.baseline_min_count) {
                continue;
            }
            out.push(rise_finding(m, &pair, cur, &spans, &base, th));
        }
    }
    out
}

fn rise_finding(
    m: &Metric,
    (client, server): &Pair,
    now: Measure,
    spans: &[(&'static str, Span)],
    base: &[Measure],
    th: &UiHealthConfig,
) -> Finding {
    let top = base.iter().map(Measure::value).fold(0.0, f64::max);
    let factor = if top > 0.0 {
        format!("{:.1}×", now.value() / top)
    } else {
        "from none".to_string()
    };
    let against: Vec<String> = spans
        .iter()
        .zip(base)
        .map(|((name, _), b)| format!("{} in {name}", b.show()))
        .collect();
    query::finding(
        m.kind,
        false,
        now.count as f64,
        format!("{} up {factor}: {client} → {server}", capitalized(m.what)),
        format!(
            "{} {} in this range, against {} (threshold {}× and at least {} events)",
            now.show(),
            m.what,
            against.join(", "),
            th.baseline_ratio,
            th.baseline_min_count
        ),
        client,
        server,
        None,
        now.count,
    )
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowscope_model::names::attr;
    use flowscope_model::{Attrs, MetricBatch, Point, Role};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn count(n: u64) -> Measure {
        Measure { count: n, of: None }
    }

    #[test]
    fn a_rise_needs_the_ratio_and_the_count() {
        // 10x with enough events.
        assert!(is_rise(count(30), &[count(3)], 3.0, 20));
        // 10x, too few events.
        assert!(!is_rise(count(10), &[count(1)], 3.0, 20));
        // Enough events, not enough of a rise.
        assert!(!is_rise(count(50), &[count(20)], 3.0, 20));
        // Exactly the ratio is a rise.
        assert!(is_rise(count(60), &[count(20)], 3.0, 20));
        // The highest baseline decides: yesterday had the same peak.
        assert!(!is_rise(count(30), &[count(3), count(25)], 3.0, 20));
        // Nothing before: any value with the count is a rise.
        assert!(is_rise(count(20), &[count(0)], 3.0, 20));
        // No baseline held: nothing to compare with.
        assert!(!is_rise(count(1000), &[], 3.0, 20));
        // Ratios compare shares, not counts: more packets, same ratio.
        let r = |n, of| Measure {
            count: n,
            of: Some(of),
        };
        assert!(!is_rise(r(100, 10_000), &[r(10, 1_000)], 3.0, 20));
        assert!(is_rise(r(100, 1_000), &[r(10, 1_000)], 3.0, 20));
        assert!(!is_rise(r(0, 1_000), &[r(0, 1_000)], 1.0, 0));
    }

    fn failed(client: &str, end: u64, n: u64) -> MetricBatch {
        let mut b = MetricBatch::new(end - 10 * S, end);
        b.points.push(Point {
            resource: Arc::new(Attrs::new().with(resource::SERVICE_NAME, client)),
            metric: TCP_FAILED,
            attrs: Attrs::new()
                .with(attr::FLOW_ROLE, Role::Client.as_str())
                .with(attr::PEER_ADDRESS, "198.18.0.9")
                .with(attr::ERROR_TYPE, "refused"),
            value: PointValue::Int(n),
        });
        b
    }

    /// A quiet span, then ten times as many failures: one finding, for
    /// the pair that rose, naming both numbers.
    #[test]
    fn a_quiet_span_then_ten_times_as_many() {
        let base = 1_000_000 * S;
        let mut st = Store::new(3600 * S, 600 * S, 1000);
        // 0..300 s: 3 failures for `cli`, 30 steady for `steady`.
        // 300..600 s: 30 for `cli`, 30 for `steady`.
        for i in 1..=60u64 {
            let end = base + i * 10 * S;
            let quiet = i <= 30;
            let n = if quiet { u64::from(i % 10 == 0) } else { 1 };
            let mut b = failed("cli", end, n);
            b.points.extend(failed("steady", end, 1).points);
            st.insert(&b);
        }
        let th = UiHealthConfig::default();
        let (from, to) = (base + 300 * S, base + 600 * S);
        let f = findings(&st, from, to, None, &th);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].kind, "connection_failure_rise");
        assert_eq!(
            (f[0].client.as_str(), f[0].server.as_str()),
            ("cli", "198.18.0.9")
        );
        assert_eq!(f[0].count, 30);
        assert_eq!(f[0].title, "Failed connections up 10.0×: cli → 198.18.0.9");
        assert!(
            f[0].evidence.contains("against 3 in the span before"),
            "{}",
            f[0].evidence
        );
        assert!(!f[0].runbook.is_empty());
        // The whole of what is kept has no span before it: no finding.
        assert!(findings(&st, base, to, None, &th).is_empty());
        // A higher minimum count silences it.
        let strict = UiHealthConfig {
            baseline_min_count: 31,
            ..Default::default()
        };
        assert!(findings(&st, from, to, None, &strict).is_empty());
        // The CIDR filter applies to the peer address.
        assert!(findings(&st, from, to, Some("10.0.0.0/8".parse().unwrap()), &th).is_empty());
        // The Health page carries it.
        let all = query::health(&st, from, to, None, &th);
        assert_eq!(
            all.iter().filter(|f| f.kind.ends_with("_rise")).count(),
            1,
            "{all:#?}"
        );
    }

    #[test]
    fn spans_held() {
        let mut st = Store::new(3600 * S, 600 * S, 1000);
        let t0 = 10 * DAY_NS;
        st.insert(&failed("a", t0 + 10 * S, 1));
        st.insert(&failed("a", t0 + 3600 * S, 1));
        let to = t0 + 3600 * S;
        let names = |from| -> Vec<&str> {
            held_spans(&st, from, to)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(names(to - 900 * S), vec!["the span before"]);
        assert_eq!(names(to - 1800 * S), vec!["the span before"]);
        assert!(names(to - 2400 * S).is_empty());
        // A day-long store holds the day before.
        let mut day = Store::new(2 * DAY_NS, 600 * S, 1000);
        day.insert(&failed("a", t0 - DAY_NS, 1));
        day.insert(&failed("a", to, 1));
        let spans = held_spans(&day, to - 900 * S, to);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].1.to, to - DAY_NS);
    }
}
