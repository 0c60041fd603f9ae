//! Self-telemetry: the agent's own counters (`flowscope.*`).
//!
//! Every stage holds a clone of one [`Telemetry`] and counts what it
//! received, dropped, sent or failed to send. Once an interval the pipeline
//! drains it into points with `service.name=flowscope`, so the agent reports
//! on itself through the same exporters as the flows. Cumulative totals stay
//! readable for health checks and tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::attr::Attrs;
use crate::metrics::{MetricId, Point, PointValue};
use crate::names::{attr, metric};

pub const EVENTS_RECEIVED: MetricId = MetricId::sum(metric::EVENTS_RECEIVED);
pub const EVENTS_LOST: MetricId = MetricId::sum(metric::EVENTS_LOST);
pub const FLOWS_TRACKED: MetricId = MetricId::up_down_counter(metric::FLOWS_TRACKED);
pub const FLOWS_OVERFLOW: MetricId = MetricId::sum(metric::FLOWS_OVERFLOW);
pub const EXPORTER_SENT: MetricId = MetricId::sum(metric::EXPORTER_SENT);
pub const EXPORTER_FAILED: MetricId = MetricId::sum(metric::EXPORTER_FAILED);
pub const EXPORTER_QUEUE_SIZE: MetricId = MetricId::up_down_counter(metric::EXPORTER_QUEUE_SIZE);
pub const EXPORTER_QUEUE_CAPACITY: MetricId =
    MetricId::up_down_counter(metric::EXPORTER_QUEUE_CAPACITY);

/// The attributes naming a component by its config id (`otlp/backend`):
/// `otel.component.name` (the id) and `otel.component.type` (`otlp`).
pub fn component_attrs(id: &str) -> Attrs {
    let kind = id.split_once('/').map_or(id, |(kind, _)| kind);
    Attrs::new()
        .with(attr::COMPONENT_TYPE, kind.to_string())
        .with(attr::COMPONENT_NAME, id.to_string())
}

#[derive(Default)]
struct Counter {
    total: u64,
    drained: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(MetricId, Attrs), Counter>,
    gauges: BTreeMap<(MetricId, Attrs), i64>,
}

/// Shared handle to the agent's self-telemetry. Cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry(Arc<Mutex<Inner>>);

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps half-written
        // (every update is one insert or add), so a poisoned lock is usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `n` to counter `metric` with `attrs`.
    pub fn add(&self, metric: MetricId, attrs: Attrs, n: u64) {
        if n == 0 {
            return;
        }
        self.lock()
            .counters
            .entry((metric, attrs))
            .or_default()
            .total += n;
    }

    pub fn set_gauge(&self, metric: MetricId, attrs: Attrs, v: i64) {
        self.lock().gauges.insert((metric, attrs), v);
    }

    /// The running total of a counter since start.
    pub fn total(&self, metric: MetricId, attrs: &Attrs) -> u64 {
        self.lock()
            .counters
            .get(&(metric, attrs.clone()))
            .map_or(0, |c| c.total)
    }

    /// Sum over every attribute set of counter `metric` whose attributes
    /// include all of `filter`.
    pub fn total_matching(&self, metric: MetricId, filter: &Attrs) -> u64 {
        self.lock()
            .counters
            .iter()
            .filter(|((m, a), _)| *m == metric && filter.iter().all(|(k, v)| a.get(k) == Some(v)))
            .map(|(_, c)| c.total)
            .sum()
    }

    pub fn gauge(&self, metric: MetricId, attrs: &Attrs) -> Option<i64> {
        self.lock().gauges.get(&(metric, attrs.clone())).copied()
    }

    pub fn events_received(&self, source: &'static str, n: u64) {
        self.add(EVENTS_RECEIVED, Attrs::new().with(attr::SOURCE, source), n);
    }

    pub fn events_lost(&self, source: &'static str, reason: &'static str, n: u64) {
        self.add(
            EVENTS_LOST,
            Attrs::new()
                .with(attr::SOURCE, source)
                .with(attr::REASON, reason),
            n,
        );
    }

    pub fn exporter_sent(&self, exporter: &str, n: u64) {
        self.add(EXPORTER_SENT, component_attrs(exporter), n);
    }

    pub fn exporter_failed(&self, exporter: &str, error_type: &str, n: u64) {
        self.add(
            EXPORTER_FAILED,
            component_attrs(exporter).with(attr::ERROR_TYPE, error_type),
            n,
        );
    }

    pub fn flows_overflow(&self, metric_name: &str, n: u64) {
        self.add(
            FLOWS_OVERFLOW,
            Attrs::new().with(attr::METRIC, metric_name),
            n,
        );
    }

    /// Points for everything that changed since the last drain: counter
    /// deltas and every gauge's current value, under `resource`.
    pub fn drain(&self, resource: &Arc<Attrs>) -> Vec<Point> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for ((metric, attrs), c) in inner.counters.iter_mut() {
            let delta = c.total - c.drained;
            if delta > 0 {
                c.drained = c.total;
                out.push(Point {
                    resource: resource.clone(),
                    metric: *metric,
                    attrs: attrs.clone(),
                    value: PointValue::Int(delta),
                });
            }
        }
        for ((metric, attrs), v) in inner.gauges.iter() {
            out.push(Point {
                resource: resource.clone(),
                metric: *metric,
                attrs: attrs.clone(),
                value: PointValue::Int((*v).max(0) as u64),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_reports_deltas_once() {
        let t = Telemetry::new();
        t.events_lost("ebpf.tcp", "ringbuf_full", 3);
        let r = Arc::new(Attrs::new());
        let p = t.drain(&r);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].value, PointValue::Int(3));
        assert!(t.drain(&r).is_empty());
        t.events_lost("ebpf.tcp", "ringbuf_full", 2);
        assert_eq!(t.drain(&r)[0].value, PointValue::Int(2));
        let f = Attrs::new().with(attr::SOURCE, "ebpf.tcp");
        assert_eq!(t.total_matching(EVENTS_LOST, &f), 5);
    }
}
