//! Connection churn: clients that open a new connection per request
//! instead of reusing one (each costs a handshake, a socket in TIME_WAIT
//! and often a TLS handshake on both ends).
//!
//! Per client -> server pair, from the counts every flow already carries:
//! the connections opened in the range per second of the range (the part
//! of it the store holds), and the share of the connections closed in the
//! range that lasted at most [`SHORT_S`] (100 ms), from
//! `flowscope.tcp.connection.duration`. A pair is a finding when the rate
//! is at least `health.churn_connections_per_second` and the share at
//! least `health.churn_short_ratio`: a pooled client opens few connections
//! and keeps them, however many requests it sends.
//!
//! The share is exact when 100 ms is a bound of the duration histogram (it
//! is of the default bounds): it counts the buckets whose upper bound is
//! at most 100 ms. With other bounds it counts the connections under the
//! largest bound below 100 ms, never one that may have lasted longer.

use flowscope_model::Histogram;
use flowscope_otel_config::exporters::UiHealthConfig;

use super::query::{self, Finding};
use super::store::Store;

/// A connection that lasted at most this long (seconds) is short.
pub const SHORT_S: f64 = 0.1;

const NS_PER_S: f64 = 1e9;

/// The connections of a duration histogram that lasted at most
/// [`SHORT_S`].
pub fn short(h: &Histogram) -> u64 {
    h.bounds
        .iter()
        .zip(&h.counts)
        .take_while(|(bound, _)| **bound <= SHORT_S * (1.0 + 1e-9))
        .map(|(_, c)| c)
        .sum()
}

/// A pair's churn numbers over a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    /// Connections opened.
    pub opened: u64,
    /// Connections opened per second of the range.
    pub rate: f64,
    /// Connections closed (with a recorded duration).
    pub closed: u64,
    /// Of those, how many lasted at most [`SHORT_S`].
    pub short: u64,
}

impl Churn {
    pub fn new(opened: u64, seconds: f64, durations: Option<&Histogram>) -> Churn {
        let (closed, short) = durations.map_or((0, 0), |h| (h.count, short(h)));
        Churn {
            opened,
            rate: opened as f64 / seconds.max(1.0),
            closed,
            short,
        }
    }

    /// The share of closed connections that were short (0 without any).
    pub fn short_share(&self) -> f64 {
        if self.closed == 0 {
            0.0
        } else {
            self.short as f64 / self.closed as f64
        }
    }

    /// Whether this is churn under the thresholds.
    pub fn is_churn(&self, th: &UiHealthConfig) -> bool {
        self.rate >= th.churn_connections_per_second && self.short_share() >= th.churn_short_ratio
    }
}

/// The churn findings of `(from, to]`, from its edges read with the
/// connection durations (`query::edges_reading` with
/// [`TCP_DURATION`](flowscope_model::metrics::TCP_DURATION): the
/// Health page reads them once for its other findings too).
pub fn findings(
    store: &Store,
    edges: &[query::Edge],
    from: u64,
    to: u64,
    th: &UiHealthConfig,
) -> Vec<Finding> {
    // The part of the range the store has data for: an agent that started
    // a minute ago has a minute of connections, not an hour.
    let held_from = from.max(store.oldest());
    let held_to = to.min(store.latest());
    let seconds = held_to.saturating_sub(held_from) as f64 / NS_PER_S;
    let mut out = Vec::new();
    for e in edges {
        let c = Churn::new(e.totals.opened, seconds, e.totals.durations.as_ref());
        if !c.is_churn(th) {
            continue;
        }
        out.push(query::finding(
            "connection_churn",
            false,
            c.opened as f64,
            format!(
                "Connection churn: {} → {}, {:.1} new connections/s",
                e.client, e.server, c.rate
            ),
            format!(
                "{} connections opened in {:.0} s ({:.1}/s, threshold {}/s); {} of {} closed \
                 lasted at most 100 ms ({:.0} %, threshold {:.0} %)",
                c.opened,
                seconds.max(1.0),
                c.rate,
                th.churn_connections_per_second,
                c.short,
                c.closed,
                c.short_share() * 100.0,
                th.churn_short_ratio * 100.0
            ),
            &e.client,
            &e.server,
            None,
            c.opened,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowscope_model::hist::DURATION_BOUNDS;
    use flowscope_model::metrics::{TCP_DURATION, TCP_OPENED};

    use super::query::Selection;
    use flowscope_model::names::{attr, resource};
    use flowscope_model::{Attrs, MetricBatch, Point, PointValue, Role};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn durations(seconds: &[(f64, u64)]) -> Histogram {
        let mut h = Histogram::new(Arc::from(DURATION_BOUNDS));
        for (s, n) in seconds {
            for _ in 0..*n {
                h.record(*s);
            }
        }
        h
    }

    #[test]
    fn short_counts_up_to_100_ms_exactly() {
        let h = durations(&[(0.0005, 3), (0.05, 4), (0.1, 5), (0.11, 6), (30.0, 7)]);
        assert_eq!(short(&h), 12);
        // Without a 100 ms bound: only what is surely shorter.
        let mut h = Histogram::new(Arc::from(&[0.05, 0.2][..]));
        h.record(0.01);
        h.record(0.09);
        assert_eq!(short(&h), 1);
    }

    #[test]
    fn thresholds() {
        let th = UiHealthConfig::default();
        let short500 = durations(&[(0.002, 500)]);
        // 500 short connections in 60 s: 8.3/s, all short.
        assert!(Churn::new(500, 60.0, Some(&short500)).is_churn(&th));
        // The same count over an hour is not churn.
        assert!(!Churn::new(500, 3600.0, Some(&short500)).is_churn(&th));
        // Many connections that each live long: not churn.
        let long = durations(&[(20.0, 500)]);
        assert!(!Churn::new(500, 60.0, Some(&long)).is_churn(&th));
        // Nothing closed yet: no share, no finding.
        assert!(!Churn::new(500, 60.0, None).is_churn(&th));
        let lax = UiHealthConfig {
            churn_connections_per_second: 1.0,
            churn_short_ratio: 0.2,
            ..Default::default()
        };
        let mixed = durations(&[(0.002, 30), (20.0, 70)]);
        assert!(Churn::new(100, 60.0, Some(&mixed)).is_churn(&lax));
        assert!(!Churn::new(100, 60.0, Some(&mixed)).is_churn(&th));
    }

    #[test]
    fn a_churning_client_and_a_pooled_one() {
        let mut st = Store::new(3600 * S, 600 * S, 1000);
        let t0 = 1_000_000 * S;
        let client = |name: &str| Arc::new(Attrs::new().with(resource::SERVICE_NAME, name));
        let flow = Attrs::new()
            .with(attr::FLOW_ROLE, Role::Client.as_str())
            .with(attr::PEER_ADDRESS, "198.18.0.2")
            .with(attr::PEER_SERVICE_NAME, "api");
        for i in 1..=60u64 {
            let mut b = MetricBatch::new(t0 + (i - 1) * S, t0 + i * S);
            // churner: 10 a second, each closed within 5 ms.
            b.points.push(Point {
                resource: client("churner"),
                metric: TCP_OPENED,
                attrs: flow.clone(),
                value: PointValue::Int(10),
            });
            b.points.push(Point {
                resource: client("churner"),
                metric: TCP_DURATION,
                attrs: flow.clone(),
                value: PointValue::Histogram(durations(&[(0.005, 10)])),
            });
            // pooled: two connections at the start, kept.
            if i == 1 {
                b.points.push(Point {
                    resource: client("pooled"),
                    metric: TCP_OPENED,
                    attrs: flow.clone(),
                    value: PointValue::Int(2),
                });
            }
            st.insert(&b);
        }
        let (from, to) = (t0, t0 + 60 * S);
        let sel = Selection::services(from, to, None);
        let edges = query::edges_reading(&st, &sel, false, &[TCP_DURATION]);
        let f = findings(&st, &edges, from, to, &UiHealthConfig::default());
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].kind, "connection_churn");
        assert_eq!(
            (f[0].client.as_str(), f[0].server.as_str()),
            ("churner", "api")
        );
        assert_eq!(f[0].count, 600);
        assert_eq!(
            f[0].title,
            "Connection churn: churner → api, 10.0 new connections/s"
        );
        assert!(
            f[0].evidence.contains("600 of 600 closed"),
            "{}",
            f[0].evidence
        );
    }
}
