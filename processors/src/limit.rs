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
use flowscope_model::{Attrs, Point, Telemetry};
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

/// The slots of one metric.
struct Table {
    /// Series allowed to hold a slot.
    max: usize,
    held: HashTable<Slot>,
    /// Series that took a slot in the batch being limited.
    admitted: usize,
}

/// Per-metric series limits with slots that persist across intervals.
pub struct Limiter {
    default_max: usize,
    per_metric: HashMap<String, usize>,
    /// One table per metric seen, found by name in `by_name`.
    tables: Vec<Table>,
    by_name: hashbrown::HashMap<&'static str, usize>,
    /// The same tables by the address and length of the name: the points
    /// of one metric carry one `&'static str`, so most lookups read no name.
    by_address: hashbrown::HashMap<(usize, usize), usize>,
    /// Two independently seeded hashers for the fingerprint; the first
    /// also places the slot in its table.
    state: (DefaultHashBuilder, DefaultHashBuilder),
    interval: u64,
    telemetry: Telemetry,
}

/// Marks a point whose series holds a slot, in [`Limiter::apply`]'s list
/// of each point's table.
const KEPT: u32 = 1 << 31;

/// Points whose fingerprints [`Limiter::apply`] reads before it looks
/// their series up.
const CHUNK: usize = 32;

/// One metric's overflow point while a batch is limited.
struct Overflow {
    table: usize,
    point: Point,
    count: u64,
    /// Resources known to have every pair of the point's (which only ever
    /// loses pairs), by address; each is held so that its address is not
    /// reused.
    fits: hashbrown::HashMap<usize, Arc<Attrs>>,
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
            tables: Vec::new(),
            by_name: hashbrown::HashMap::new(),
            by_address: hashbrown::HashMap::new(),
            state: (DefaultHashBuilder::default(), DefaultHashBuilder::default()),
            interval: 0,
            telemetry,
        }
    }

    /// Series currently holding a slot for `metric`.
    pub fn held(&self, metric: &str) -> usize {
        self.by_name
            .get(metric)
            .map_or(0, |&t| self.tables[t].held.len())
    }

    /// The table of metric `name`, made on first sight.
    fn table(&mut self, name: &'static str) -> usize {
        let address = (name.as_ptr() as usize, name.len());
        if let Some(&t) = self.by_address.get(&address) {
            return t;
        }
        let t = match self.by_name.get(name) {
            Some(&t) => t,
            None => {
                self.tables.push(Table {
                    max: self
                        .per_metric
                        .get(name)
                        .copied()
                        .unwrap_or(self.default_max),
                    held: HashTable::new(),
                    admitted: 0,
                });
                self.by_name.insert(name, self.tables.len() - 1);
                self.tables.len() - 1
            }
        };
        self.by_address.insert(address, t);
        t
    }

    /// A point's fingerprint: two hashes of its Resource's and its
    /// attributes' fingerprints (each set keeps its own, see [`Attrs`]),
    /// one per lane.
    fn fingerprint(state: &(DefaultHashBuilder, DefaultHashBuilder), p: &Point) -> (u64, u64) {
        let (r, t) = (p.resource.fingerprint(), p.attrs.fingerprint());
        (
            state.0.hash_one((r[0], t[0])),
            state.1.hash_one((r[1], t[1])),
        )
    }

    /// Applies the limits to one interval's points (already coalesced, so
    /// one point per series).
    pub fn apply(&mut self, mut points: Vec<Point>) -> Vec<Point> {
        self.interval += 1;
        let now = self.interval;

        // 1. Series that hold a slot keep it. Each point's table, with
        // `KEPT` when it keeps its slot. Fingerprints are read a chunk of
        // points ahead of the lookups, so that the reads of sets and slots
        // not in cache overlap.
        let mut tables = Vec::with_capacity(points.len());
        for chunk in points.chunks(CHUNK) {
            let mut series = [(0, (0, 0)); CHUNK];
            for (s, p) in series.iter_mut().zip(chunk) {
                *s = (
                    self.table(p.metric.name()),
                    Self::fingerprint(&self.state, p),
                );
            }
            for &(t, hash) in &series[..chunk.len()] {
                let kept = match self.tables[t]
                    .held
                    .find_mut(hash.0, |s| s.fingerprint == hash)
                {
                    Some(slot) => {
                        slot.last = now;
                        KEPT
                    }
                    None => 0,
                };
                tables.push(t as u32 | kept);
            }
        }
        // 2. Slots of series that did not report are released.
        for t in &mut self.tables {
            t.held.retain(|slot| slot.last == now);
            if t.held.is_empty() {
                t.held = HashTable::new();
            }
            t.admitted = 0;
        }

        // 3. New series take free slots in arrival order; the rest overflow.
        // Kept in place: the batch can hold hundreds of thousands of points.
        let mut overflow: Vec<Overflow> = Vec::new();
        let state = &self.state;
        let all = &mut self.tables;
        let mut i = 0;
        points.retain(|p| {
            let t = tables[i];
            i += 1;
            if t & KEPT != 0 {
                return true;
            }
            let t = t as usize;
            let table = &mut all[t];
            let hash = Self::fingerprint(state, p);
            // A duplicate of a series admitted earlier in this batch.
            if table.admitted > 0
                && let Some(slot) = table.held.find_mut(hash.0, |s| s.fingerprint == hash)
            {
                slot.last = now;
                return true;
            }
            if table.held.len() < table.max {
                let slot = Slot {
                    fingerprint: hash,
                    last: now,
                };
                table.held.insert_unique(hash.0, slot, |s| s.fingerprint.0);
                table.admitted += 1;
                return true;
            }
            match overflow.iter_mut().find(|o| o.table == t) {
                Some(o) => {
                    o.point.value.merge(&p.value);
                    let address = Arc::as_ptr(&p.resource) as usize;
                    if !o.fits.contains_key(&address) {
                        if !contains(&p.resource, &o.point.resource) {
                            o.point.resource = Arc::new(common(&o.point.resource, &p.resource));
                        }
                        o.fits.insert(address, p.resource.clone());
                    }
                    o.count += 1;
                }
                None => overflow.push(Overflow {
                    table: t,
                    point: Point {
                        resource: p.resource.clone(),
                        metric: p.metric,
                        attrs: Attrs::new().with(attr::OVERFLOW, true),
                        value: p.value.clone(),
                    },
                    count: 1,
                    fits: hashbrown::HashMap::new(),
                }),
            }
            false
        });
        for o in overflow {
            self.telemetry.emit(FlowsOverflow {
                metric: o.point.metric.name(),
                count: o.count,
            });
            points.push(o.point);
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
