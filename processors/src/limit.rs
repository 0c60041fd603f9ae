//! Cardinality limits: at most N series per metric, the rest merged into one
//! overflow point, as the OpenTelemetry SDKs do.
//!
//! A series is a (Resource, attributes) pair of one metric. Each metric has
//! a table of slots. Every interval, series that already hold a slot keep it
//! first; slots whose series sent nothing this interval are released; then
//! new series take free slots in the order their points arrive. A series
//! with a slot therefore keeps it for as long as it reports every interval,
//! however many new series show up. Points of series left without a slot
//! merge into one point per metric with the only attribute
//! `otel.metric.overflow=true` (sums add, histograms merge, gauges add or
//! pool as their value kind says), so totals stay exact. Its Resource is the
//! part every overflowing Resource shares (typically `host.*` and
//! `cloud.*`). Each overflowing point is counted in
//! `flowscope.flows.overflow{metric}`.

use std::collections::HashMap;
use std::sync::Arc;

use flowscope_model::names::attr;
use flowscope_model::{Attrs, MetricId, Point, Telemetry};

/// Default series per metric.
pub const DEFAULT_MAX_SERIES: usize = 2_000;

type SeriesKey = (Arc<Attrs>, Attrs);

#[derive(Default)]
struct Slots {
    /// Series -> the last interval it reported in.
    held: HashMap<SeriesKey, u64>,
}

/// Per-metric series limits with slots that persist across intervals.
pub struct Limiter {
    default_max: usize,
    per_metric: HashMap<String, usize>,
    slots: HashMap<&'static str, Slots>,
    interval: u64,
    telemetry: Telemetry,
}

impl Limiter {
    /// `default_max` series for every metric, except those in `per_metric`
    /// (by metric name).
    pub fn new(
        default_max: usize,
        per_metric: HashMap<String, usize>,
        telemetry: Telemetry,
    ) -> Self {
        Limiter {
            default_max,
            per_metric,
            slots: HashMap::new(),
            interval: 0,
            telemetry,
        }
    }

    fn max_for(&self, metric: &str) -> usize {
        self.per_metric
            .get(metric)
            .copied()
            .unwrap_or(self.default_max)
    }

    /// Series currently holding a slot for `metric`.
    pub fn held(&self, metric: &str) -> usize {
        self.slots.get(metric).map_or(0, |s| s.held.len())
    }

    /// Applies the limits to one interval's points (already coalesced, so
    /// one point per series).
    pub fn apply(&mut self, points: Vec<Point>) -> Vec<Point> {
        self.interval += 1;
        let now = self.interval;

        // 1. Series that hold a slot keep it.
        let mut keep = vec![false; points.len()];
        for (i, p) in points.iter().enumerate() {
            if let Some(s) = self.slots.get_mut(p.metric.name)
                && let Some(last) = s.held.get_mut(&(p.resource.clone(), p.attrs.clone()))
            {
                *last = now;
                keep[i] = true;
            }
        }
        // 2. Slots of series that did not report are released.
        for s in self.slots.values_mut() {
            s.held.retain(|_, last| *last == now);
        }
        self.slots.retain(|_, s| !s.held.is_empty());

        // 3. New series take free slots in arrival order; the rest overflow.
        let mut out = Vec::with_capacity(points.len());
        let mut overflow: Vec<(MetricId, Point, u64)> = Vec::new();
        for (p, kept) in points.into_iter().zip(keep) {
            if kept {
                out.push(p);
                continue;
            }
            let max = self.max_for(p.metric.name);
            let slots = self.slots.entry(p.metric.name).or_default();
            let key = (p.resource.clone(), p.attrs.clone());
            if let Some(last) = slots.held.get_mut(&key) {
                // A duplicate of a series admitted earlier in this batch.
                *last = now;
                out.push(p);
            } else if slots.held.len() < max {
                slots.held.insert(key, now);
                out.push(p);
            } else {
                match overflow.iter_mut().find(|(m, _, _)| *m == p.metric) {
                    Some((_, o, n)) => {
                        o.value.merge(&p.value);
                        if o.resource != p.resource {
                            o.resource = Arc::new(common(&o.resource, &p.resource));
                        }
                        *n += 1;
                    }
                    None => {
                        let o = Point {
                            resource: p.resource.clone(),
                            metric: p.metric,
                            attrs: Attrs::new().with(attr::OVERFLOW, true),
                            value: p.value,
                        };
                        overflow.push((p.metric, o, 1));
                    }
                }
            }
        }
        for (metric, point, n) in overflow {
            tracing::debug!(
                metric = metric.name,
                points = n,
                "cardinality limit reached; merged into overflow point"
            );
            self.telemetry.flows_overflow(metric.name, n);
            out.push(point);
        }
        out
    }
}

/// The pairs two attribute sets share.
fn common(a: &Attrs, b: &Attrs) -> Attrs {
    a.iter()
        .filter(|(k, v)| b.get(k) == Some(*v))
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}
