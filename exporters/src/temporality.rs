//! Cumulative temporality: running totals per series.
//!
//! The pipeline hands exporters deltas. An exporter configured for
//! `cumulative` (and the Prometheus exporter, whose counters are cumulative
//! by nature) keeps, per series (Resource, metric, attributes), the start
//! time of its first delta and the running total. Gauges and UpDownCounters
//! (whose points are current counts) are not summed: their latest value is
//! kept. A series not updated for `idle_timeout` is
//! forgotten, so memory stays bounded by the series seen recently; if it
//! comes back it starts again with a new start time, which is how OTLP
//! signals a reset.

use std::collections::HashMap;
use std::sync::Arc;

use flowscope_model::{Attrs, Kind, MetricBatch, MetricId, Point, PointValue};

type Key = (Arc<Attrs>, MetricId, Attrs);

/// One series' state.
#[derive(Clone, Debug)]
pub struct Series {
    /// Start of the first delta that went into the total (ns).
    pub start_unix_nanos: u64,
    /// The running total (sums, histograms) or the last value (gauges).
    pub value: PointValue,
    /// End of the last interval that updated it (ns).
    pub last_unix_nanos: u64,
}

/// Running totals of every series seen within the idle timeout.
#[derive(Debug)]
pub struct Cumulative {
    series: HashMap<Key, Series>,
    idle_nanos: u64,
}

impl Cumulative {
    pub fn new(idle_timeout: std::time::Duration) -> Self {
        Self {
            series: HashMap::new(),
            idle_nanos: u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Folds `batch` in and returns the updated series of this batch as
    /// (point with the running value, series start time). Series idle for
    /// longer than the timeout at `batch.time` are dropped first.
    pub fn update(&mut self, batch: &MetricBatch) -> Vec<(Point, u64)> {
        let now = batch.time_unix_nanos;
        self.expire(now);
        let mut out = Vec::with_capacity(batch.points.len());
        for p in &batch.points {
            let key = (p.resource.clone(), p.metric, p.attrs.clone());
            let s = self.series.entry(key).or_insert_with(|| Series {
                start_unix_nanos: batch.start_unix_nanos,
                value: empty_like(&p.value),
                last_unix_nanos: now,
            });
            match p.metric.kind() {
                // Both carry the current value: the latest replaces.
                Kind::Gauge | Kind::UpDownCounter => s.value = p.value.clone(),
                Kind::Sum | Kind::Histogram => s.value.merge(&p.value),
            }
            s.last_unix_nanos = now;
            let start = if p.metric.kind() == Kind::Gauge {
                0
            } else {
                s.start_unix_nanos
            };
            out.push((
                Point {
                    resource: p.resource.clone(),
                    metric: p.metric,
                    attrs: p.attrs.clone(),
                    value: s.value.clone(),
                },
                start,
            ));
        }
        out
    }

    /// Forgets series last updated more than the idle timeout before `now`.
    pub fn expire(&mut self, now: u64) {
        let idle = self.idle_nanos;
        self.series
            .retain(|_, s| now.saturating_sub(s.last_unix_nanos) <= idle);
    }

    /// Every live series.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Series)> {
        self.series.iter()
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// A zero of the same shape, for merging the first delta into.
fn empty_like(v: &PointValue) -> PointValue {
    match v {
        PointValue::Int(_) => PointValue::Int(0),
        PointValue::Double(_) => PointValue::Double(0.0),
        PointValue::Mean { .. } => PointValue::Mean { sum: 0.0, count: 0 },
        PointValue::Histogram(h) => {
            PointValue::Histogram(flowscope_model::Histogram::new(h.bounds.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flowscope_model::Histogram;
    use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE, TCP_RTT};

    use super::*;

    fn batch(start_s: u64, points: Vec<(MetricId, &str, PointValue)>) -> MetricBatch {
        let r = Arc::new(Attrs::new().with("service.name", "a"));
        let mut b = MetricBatch::new(start_s * 1_000_000_000, (start_s + 10) * 1_000_000_000);
        for (m, peer, v) in points {
            b.points.push(Point {
                resource: r.clone(),
                metric: m,
                attrs: Attrs::new().with("network.peer.address", peer),
                value: v,
            });
        }
        b
    }

    #[test]
    fn sums_accumulate_gauges_replace_and_idle_series_restart() {
        let mut c = Cumulative::new(Duration::from_secs(15));
        let out = c.update(&batch(
            0,
            vec![
                (FLOW_IO, "x", PointValue::Int(100)),
                (TCP_ACTIVE, "x", PointValue::Int(2)),
            ],
        ));
        assert_eq!(out[0].0.value, PointValue::Int(100));
        assert_eq!(out[0].1, 0);
        let out = c.update(&batch(
            10,
            vec![
                (FLOW_IO, "x", PointValue::Int(50)),
                (TCP_ACTIVE, "x", PointValue::Int(1)),
            ],
        ));
        assert_eq!(
            (out[0].0.value.clone(), out[0].1),
            (PointValue::Int(150), 0)
        );
        assert_eq!((out[1].0.value.clone(), out[1].1), (PointValue::Int(1), 0));
        // y appears at 20 s; x is silent at 20 s and 30 s: at 40 s (end 50 s)
        // its last update (20 s) is 30 s old > 15 s, so it restarts.
        c.update(&batch(20, vec![(FLOW_IO, "y", PointValue::Int(1))]));
        assert_eq!(c.len(), 3);
        let out = c.update(&batch(40, vec![(FLOW_IO, "x", PointValue::Int(7))]));
        assert_eq!(
            (out[0].0.value.clone(), out[0].1),
            (PointValue::Int(7), 40_000_000_000)
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn histograms_merge_buckets() {
        let b: Arc<[f64]> = Arc::from(&[1.0][..]);
        let mut h1 = Histogram::new(b.clone());
        h1.record(0.5);
        let mut h2 = Histogram::new(b);
        h2.record(3.0);
        let mut c = Cumulative::new(Duration::from_secs(60));
        c.update(&batch(0, vec![(TCP_RTT, "x", PointValue::Histogram(h1))]));
        let out = c.update(&batch(10, vec![(TCP_RTT, "x", PointValue::Histogram(h2))]));
        let PointValue::Histogram(h) = &out[0].0.value else {
            panic!("not a histogram")
        };
        assert_eq!((h.counts.clone(), h.count, h.sum), (vec![1, 1], 2, 3.5));
        assert_eq!((h.min, h.max), (0.5, 3.0));
    }
}
