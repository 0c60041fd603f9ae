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

use flowscope_model::attr::prefetch;
use flowscope_model::internal_events::FlowsOverflow;
use flowscope_model::names::attr;
use flowscope_model::{Attrs, Point, Telemetry};
use hashbrown::DefaultHashBuilder;

/// Default series per metric.
pub const DEFAULT_MAX_SERIES: usize = 2_000;

/// A series' fingerprint: 128 bits of its Resource and attributes (two
/// independently seeded 64-bit hashes of the two sets' own fingerprints).
/// A series is known by it rather than by a copy of its sets: a slot then
/// costs 16 bytes instead of a copy of every attribute, and even with
/// millions of series the chance that two share a fingerprint is below
/// 10^-25.
type Fingerprint = (u64, u64);

/// The fingerprint that marks a free entry of [`Slots`]; a series whose
/// fingerprint it would be is given [`NOT_FREE`] instead (a chance of
/// 2^-128, and then it merely shares that fingerprint).
const FREE: Fingerprint = (0, 0);
const NOT_FREE: Fingerprint = (0, 1);

/// The series holding a slot of one metric: an open-addressing table of
/// their fingerprints (linear probing from the first lane's low bits, at
/// most half full), and a bit per entry saying whether its series reported
/// in the batch being limited.
///
/// Its own table rather than a `HashTable` so that [`Limiter::apply`] can
/// prefetch the entry each series of a chunk of points starts at before it
/// looks any of them up.
#[derive(Default)]
struct Slots {
    /// A power of two entries, or none.
    entries: Vec<Fingerprint>,
    seen: Vec<u64>,
    len: usize,
    /// Entries whose `seen` bit is set.
    reported: usize,
}

impl Slots {
    /// Where the probe for `fp` starts; `None` for a table of no entries.
    fn home(&self, fp: Fingerprint) -> Option<usize> {
        let n = self.entries.len();
        (n > 0).then(|| fp.0 as usize & (n - 1))
    }

    /// The entry holding `fp` (`Ok`) or the free entry its probe reached
    /// (`Err`), probing from `i`.
    fn probe(&self, fp: Fingerprint, mut i: usize) -> Result<usize, usize> {
        let mask = self.entries.len() - 1;
        loop {
            match self.entries[i] {
                e if e == fp => return Ok(i),
                FREE => return Err(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The entry holding `fp`, or the free entry where it would go.
    fn find(&self, fp: Fingerprint) -> Result<usize, usize> {
        match self.home(fp) {
            Some(i) => self.probe(fp, i),
            None => Err(usize::MAX),
        }
    }

    /// Marks entry `i`'s series as reported in this batch.
    fn report(&mut self, i: usize) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.seen[word] & bit == 0 {
            self.seen[word] |= bit;
            self.reported += 1;
        }
    }

    /// Gives `fp`, found free at `at` ([`Slots::find`]), a slot.
    fn insert(&mut self, fp: Fingerprint, mut at: usize) {
        if (self.len + 1) * 2 > self.entries.len() {
            self.rebuild((self.entries.len() * 2).max(16), false);
            let Err(free) = self.find(fp) else {
                unreachable!("a series without a slot has none after growing")
            };
            at = free;
        }
        self.entries[at] = fp;
        self.len += 1;
    }

    /// Releases the slots of series that did not report, and clears the
    /// marks for the next batch.
    fn release_unreported(&mut self) {
        if self.reported < self.len {
            if self.reported == 0 {
                *self = Slots::default();
                return;
            }
            self.rebuild(self.entries.len(), true);
        }
        self.seen.fill(0);
        self.reported = 0;
    }

    /// The table again with `capacity` entries, keeping every series or,
    /// with `reported_only`, those marked as reported.
    fn rebuild(&mut self, capacity: usize, reported_only: bool) {
        let old = std::mem::replace(
            self,
            Slots {
                entries: vec![FREE; capacity],
                seen: vec![0; capacity.div_ceil(64)],
                len: 0,
                reported: 0,
            },
        );
        for (i, &fp) in old.entries.iter().enumerate() {
            let kept = old.seen[i / 64] & (1 << (i % 64)) != 0;
            if fp != FREE && (kept || !reported_only) {
                let Err(at) = self.find(fp) else {
                    unreachable!("each series holds one slot")
                };
                self.entries[at] = fp;
                self.len += 1;
                if kept {
                    self.report(at);
                }
            }
        }
    }
}

/// The slots of one metric.
struct Table {
    /// Series allowed to hold a slot.
    max: usize,
    held: Slots,
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
            telemetry,
        }
    }

    /// Series currently holding a slot for `metric`.
    pub fn held(&self, metric: &str) -> usize {
        self.by_name
            .get(metric)
            .map_or(0, |&t| self.tables[t].held.len)
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
                    held: Slots::default(),
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
    fn fingerprint(state: &(DefaultHashBuilder, DefaultHashBuilder), p: &Point) -> Fingerprint {
        let (r, t) = (p.resource.fingerprint(), p.attrs.fingerprint());
        match (
            state.0.hash_one((r[0], t[0])),
            state.1.hash_one((r[1], t[1])),
        ) {
            FREE => NOT_FREE,
            fp => fp,
        }
    }

    /// Applies the limits to one interval's points (already coalesced, so
    /// one point per series).
    pub fn apply(&mut self, mut points: Vec<Point>) -> Vec<Point> {
        // 1. Series that hold a slot keep it. Each point's table, with
        // `KEPT` when it keeps its slot. The tables and the points' sets
        // are cold at each interval (the collector ran in between): a
        // chunk's sets are prefetched, then its fingerprints read and the
        // entry each series' probe starts at prefetched, then the chunk
        // looked up, so that the reads not in cache overlap.
        let mut tables = Vec::with_capacity(points.len());
        for chunk in points.chunks(CHUNK) {
            // Each point's sets, then each series' first entry, are
            // prefetched for the whole chunk before any is read.
            for p in chunk {
                p.resource.prefetch();
                p.attrs.prefetch();
            }
            let mut series = [(0, FREE, None); CHUNK];
            for (s, p) in series.iter_mut().zip(chunk) {
                let t = self.table(p.metric.name());
                let fp = Self::fingerprint(&self.state, p);
                let home = self.tables[t].held.home(fp);
                if let Some(i) = home {
                    prefetch(&self.tables[t].held.entries[i]);
                }
                *s = (t, fp, home);
            }
            for &(t, fp, home) in &series[..chunk.len()] {
                let held = &mut self.tables[t].held;
                let found = home.and_then(|i| held.probe(fp, i).ok());
                let kept = match found {
                    Some(i) => {
                        held.report(i);
                        KEPT
                    }
                    None => 0,
                };
                tables.push(t as u32 | kept);
            }
        }
        // 2. Slots of series that did not report are released.
        for t in &mut self.tables {
            t.held.release_unreported();
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
            if table.admitted > 0 || table.held.len < table.max {
                let fp = Self::fingerprint(state, p);
                match table.held.find(fp) {
                    // A duplicate of a series admitted earlier in this batch.
                    Ok(_) => return true,
                    Err(at) if table.held.len < table.max => {
                        table.held.insert(fp, at);
                        table.admitted += 1;
                        return true;
                    }
                    Err(_) => {}
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u64) -> Fingerprint {
        // Crowded homes: every fourth series starts at the same entry.
        (i / 4, i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    #[test]
    fn slots_grow_keep_and_release_their_series() {
        let mut s = Slots::default();
        assert_eq!(s.find(fp(1)), Err(usize::MAX));
        for i in 0..1000 {
            let Err(at) = s.find(fp(i)) else {
                panic!("{i} found before it was added")
            };
            s.insert(fp(i), at);
        }
        assert_eq!(s.len, 1000);
        assert!(s.entries.len() >= 2000);
        for i in 0..1000 {
            assert!(s.find(fp(i)).is_ok(), "{i}");
        }
        assert!(s.find(fp(1000)).is_err());
        // The even series report (twice: counted once); the odd ones go.
        for _ in 0..2 {
            for i in (0..1000).step_by(2) {
                let at = s.find(fp(i)).unwrap();
                s.report(at);
            }
        }
        assert_eq!(s.reported, 500);
        s.release_unreported();
        assert_eq!((s.len, s.reported), (500, 0));
        for i in 0..1000 {
            assert_eq!(s.find(fp(i)).is_ok(), i % 2 == 0, "{i}");
        }
        // None reports: every slot is released, and the memory with them.
        s.release_unreported();
        assert_eq!(s.len, 0);
        assert!(s.entries.is_empty());
    }
}
