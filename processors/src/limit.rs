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
use std::hash::BuildHasher;
use std::sync::Arc;

use flowscope_model::internal_events::FlowsOverflow;
use flowscope_model::names::attr;
use flowscope_model::{Attrs, MetricId, Point, Telemetry};
use hashbrown::{DefaultHashBuilder, HashTable};

/// Default series per metric.
pub const DEFAULT_MAX_SERIES: usize = 2_000;

/// One series holding a slot. The series is known by a 128-bit
/// fingerprint of its Resource and attributes (two independently seeded
/// 64-bit hashes of the two sets' own fingerprints) rather than by a copy
/// of them: a slot then costs a few dozen bytes instead of a copy of every
/// attribute, and even with millions of series the chance that two share a
/// fingerprint is below 10^-25.
struct Slot {
    fingerprint: (u64, u64),
    /// The last interval it reported in.
    last: u64,
}

#[derive(Default)]
struct Slots {
    held: HashTable<Slot>,
}

/// Per-metric series limits with slots that persist across intervals.
pub struct Limiter {
    default_max: usize,
    per_metric: HashMap<String, usize>,
    slots: hashbrown::HashMap<&'static str, Slots>,
    /// Two independently seeded hashers for the fingerprint; the first
    /// also places the slot in its table.
    state: (DefaultHashBuilder, DefaultHashBuilder),
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
            slots: hashbrown::HashMap::new(),
            state: (DefaultHashBuilder::default(), DefaultHashBuilder::default()),
            interval: 0,
            telemetry,
        }
    }

    /// Series currently holding a slot for `metric`.
    pub fn held(&self, metric: &str) -> usize {
        self.slots.get(metric).map_or(0, |s| s.held.len())
    }

    /// Each point's fingerprint: two hashes of its Resource's and its
    /// attributes' fingerprints (each set keeps its own, see [`Attrs`]),
    /// one per lane.
    fn fingerprints(&self, points: &[Point]) -> Vec<(u64, u64)> {
        let (a, b) = &self.state;
        points
            .iter()
            .map(|p| {
                let (r, t) = (p.resource.fingerprint(), p.attrs.fingerprint());
                (a.hash_one((r[0], t[0])), b.hash_one((r[1], t[1])))
            })
            .collect()
    }

    /// Applies the limits to one interval's points (already coalesced, so
    /// one point per series).
    pub fn apply(&mut self, mut points: Vec<Point>) -> Vec<Point> {
        self.interval += 1;
        let now = self.interval;
        let hashes = self.fingerprints(&points);

        // 1. Series that hold a slot keep it.
        let mut keep = vec![false; points.len()];
        for (i, p) in points.iter().enumerate() {
            if let Some(s) = self.slots.get_mut(p.metric.name)
                && let Some(slot) = s.held.find_mut(hashes[i].0, |s| s.fingerprint == hashes[i])
            {
                slot.last = now;
                keep[i] = true;
            }
        }
        // 2. Slots of series that did not report are released.
        for s in self.slots.values_mut() {
            s.held.retain(|slot| slot.last == now);
        }
        self.slots.retain(|_, s| !s.held.is_empty());

        // 3. New series take free slots in arrival order; the rest overflow.
        // Kept in place: the batch can hold hundreds of thousands of points.
        let mut overflow: Vec<(MetricId, Point, u64)> = Vec::new();
        let (per_metric, default_max) = (&self.per_metric, self.default_max);
        let slots_by_metric = &mut self.slots;
        let mut i = 0;
        points.retain(|p| {
            let (kept, hash) = (keep[i], hashes[i]);
            i += 1;
            if kept {
                return true;
            }
            let max = per_metric
                .get(p.metric.name)
                .copied()
                .unwrap_or(default_max);
            let slots = slots_by_metric.entry(p.metric.name).or_default();
            if let Some(slot) = slots.held.find_mut(hash.0, |s| s.fingerprint == hash) {
                // A duplicate of a series admitted earlier in this batch.
                slot.last = now;
                return true;
            }
            if slots.held.len() < max {
                let slot = Slot {
                    fingerprint: hash,
                    last: now,
                };
                slots.held.insert_unique(hash.0, slot, |s| s.fingerprint.0);
                return true;
            }
            match overflow.iter_mut().find(|(m, _, _)| *m == p.metric) {
                Some((_, o, n)) => {
                    o.value.merge(&p.value);
                    if !contains(&p.resource, &o.resource) {
                        o.resource = Arc::new(common(&o.resource, &p.resource));
                    }
                    *n += 1;
                }
                None => {
                    let o = Point {
                        resource: p.resource.clone(),
                        metric: p.metric,
                        attrs: Attrs::new().with(attr::OVERFLOW, true),
                        value: p.value.clone(),
                    };
                    overflow.push((p.metric, o, 1));
                }
            }
            false
        });
        for (metric, point, n) in overflow {
            self.telemetry.emit(FlowsOverflow {
                metric: metric.name,
                count: n,
            });
            points.push(point);
        }
        points
    }
}

/// Whether `set` has every pair of `part` (then what they share is `part`).
fn contains(set: &Arc<Attrs>, part: &Arc<Attrs>) -> bool {
    Arc::ptr_eq(set, part) || set == part || part.iter().all(|(k, v)| set.get(k) == Some(v))
}

/// The pairs two attribute sets share.
fn common(a: &Attrs, b: &Attrs) -> Attrs {
    a.iter()
        .filter(|(k, v)| b.get(k) == Some(*v))
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}
