//! The `ui` exporter's memory: every series of the last `retention`, at the
//! pipeline's resolution for the most recent `full_resolution` and rolled
//! up per minute before that.
//!
//! Time is the data's own: the latest batch's end time is "now", so what
//! the pages show does not depend on how late a batch arrived. A slot
//! belongs to the interval it closes (`end`). When the wall clock is
//! stepped back by more than [`STEP_BACK_NS`], the next batch ends before
//! "now": the store then forgets the slots stamped after that batch, which
//! would otherwise hide every new interval until the clock caught up, and
//! "now" follows the clock back. (Smaller differences are batches of
//! different receivers arriving out of order, and merge as usual.)
//!
//! Bounded: at most `max_series` series; a point of a new series beyond
//! that is dropped and counted. Each series holds at most
//! `full_resolution / interval` fine slots plus `(retention -
//! full_resolution) / 1 min` rollups.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use flowscope_model::{Attrs, Kind, MetricBatch, MetricId, PointValue};

/// One minute in nanoseconds: the rollup width.
pub const MINUTE_NS: u64 = 60_000_000_000;

/// How far a batch may end before "now" and still be taken as late rather
/// than as a sign that the wall clock was stepped back.
pub const STEP_BACK_NS: u64 = MINUTE_NS;

/// A series' identity: its Resource, its metric and its attributes.
pub type SeriesKey = (Arc<Attrs>, MetricId, Attrs);

/// One interval's (or one minute's) value of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub start: u64,
    pub end: u64,
    pub value: PointValue,
}

#[derive(Debug, Default)]
struct Series {
    fine: VecDeque<Slot>,
    coarse: VecDeque<Slot>,
    /// For sums and histograms, every slot held merged into one value: a
    /// query whose range covers the whole series reads this instead of
    /// merging each slot again (an hour is about 110 slots). Kept in step
    /// by `insert`, rebuilt when slots are forgotten.
    total: Option<PointValue>,
}

impl Series {
    fn is_empty(&self) -> bool {
        self.fine.is_empty() && self.coarse.is_empty()
    }

    /// Adds a value just filed into a slot (sums and histograms only).
    fn count(&mut self, metric: MetricId, v: &PointValue) {
        if additive(metric) {
            add_to(&mut self.total, v);
        }
    }

    /// Rebuilds the total from the slots left.
    fn recount(&mut self, metric: MetricId) {
        self.total = None;
        if !additive(metric) {
            return;
        }
        for sl in self.coarse.iter().chain(self.fine.iter()) {
            add_to(&mut self.total, &sl.value);
        }
    }

    /// The time span of the slots held: first and last `end`.
    fn span(&self) -> Option<(u64, u64)> {
        let first = self.coarse.front().or(self.fine.front())?;
        let last = self.fine.back().or(self.coarse.back())?;
        Some((first.end, last.end))
    }
}

/// Merges `v` into a running total.
fn add_to(total: &mut Option<PointValue>, v: &PointValue) {
    match total {
        Some(t) => t.merge(v),
        None => *total = Some(v.clone()),
    }
}

/// Whether a metric's slots add up over time (sums and histograms), as
/// opposed to gauges and UpDownCounters, whose value is the last one.
fn additive(metric: MetricId) -> bool {
    !matches!(metric.kind(), Kind::Gauge | Kind::UpDownCounter)
}

/// What one series adds up to over a range: its kept total when the range
/// covers all of it, else the values of the slots inside.
#[derive(Clone)]
pub enum Values<'a> {
    Total(std::iter::Once<&'a PointValue>),
    Slots(
        std::iter::Chain<
            std::collections::vec_deque::Iter<'a, Slot>,
            std::collections::vec_deque::Iter<'a, Slot>,
        >,
    ),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a PointValue;

    fn next(&mut self) -> Option<&'a PointValue> {
        match self {
            Values::Total(t) => t.next(),
            Values::Slots(s) => s.next().map(|sl| &sl.value),
        }
    }
}

/// The slots of a time-ordered deque that end in `(from, to]`.
fn within(d: &VecDeque<Slot>, from: u64, to: u64) -> std::collections::vec_deque::Iter<'_, Slot> {
    let lo = d.partition_point(|s| s.end <= from);
    let hi = d.partition_point(|s| s.end <= to).max(lo);
    d.range(lo..hi)
}

/// The bounded history.
#[derive(Debug)]
pub struct Store {
    retention_ns: u64,
    fine_ns: u64,
    max_series: usize,
    series: HashMap<SeriesKey, Series>,
    /// Every Resource and point attribute key seen (the group-by choices).
    keys: BTreeSet<Arc<str>>,
    oldest: u64,
    latest: u64,
    dropped: u64,
    default_span_ns: Option<u64>,
}

impl Store {
    /// A store keeping `retention_ns` of history, the last `fine_ns` of it
    /// at full resolution, and at most `max_series` series.
    pub fn new(retention_ns: u64, fine_ns: u64, max_series: usize) -> Self {
        Store {
            retention_ns,
            fine_ns: fine_ns.min(retention_ns),
            max_series,
            series: HashMap::new(),
            keys: BTreeSet::new(),
            oldest: u64::MAX,
            latest: 0,
            dropped: 0,
            default_span_ns: None,
        }
    }

    /// Adds a batch; returns how many of its points were dropped because
    /// the series limit was reached.
    pub fn insert(&mut self, batch: &MetricBatch) -> u64 {
        let mut dropped = 0;
        let (start, end) = (batch.start_unix_nanos, batch.time_unix_nanos);
        if !batch.points.is_empty() && end.saturating_add(STEP_BACK_NS) < self.latest {
            self.rewind(end);
        }
        for p in &batch.points {
            let key = (p.resource.clone(), p.metric, p.attrs.clone());
            let full = self.series.len() >= self.max_series;
            let series = match self.series.get_mut(&key) {
                Some(s) => s,
                None if full => {
                    dropped += 1;
                    continue;
                }
                None => {
                    for (k, _) in p.resource.iter().chain(p.attrs.iter()) {
                        if !self.keys.contains(k) {
                            self.keys.insert(Arc::from(k));
                        }
                    }
                    self.series.entry(key).or_default()
                }
            };
            series.count(p.metric, &p.value);
            match series.fine.back_mut() {
                Some(last) if last.end == end => last.value.merge(&p.value),
                // A late batch (another receiver's, a few seconds behind):
                // filed in place, so every series stays in time order and
                // queries find a range by binary search.
                Some(last) if last.end > end => {
                    let i = series.fine.partition_point(|s| s.end < end);
                    match series.fine.get_mut(i) {
                        Some(s) if s.end == end => s.value.merge(&p.value),
                        _ => series.fine.insert(
                            i,
                            Slot {
                                start,
                                end,
                                value: p.value.clone(),
                            },
                        ),
                    }
                }
                _ => series.fine.push_back(Slot {
                    start,
                    end,
                    value: p.value.clone(),
                }),
            }
        }
        if !batch.points.is_empty() {
            self.latest = self.latest.max(end);
            self.oldest = self.oldest.min(start);
        }
        self.dropped += dropped;
        self.compact();
        dropped
    }

    /// Forgets every slot that ends after `now` (the clock was stepped
    /// back), and the keys only those slots carried.
    fn rewind(&mut self, now: u64) {
        tracing::warn!(
            from_ns = self.latest,
            to_ns = now,
            "ui: the clock went back; forgetting the history stamped after the new time"
        );
        for ((_, metric, _), s) in self.series.iter_mut() {
            s.fine.retain(|sl| sl.end <= now);
            s.coarse.retain(|sl| sl.end <= now);
            s.recount(*metric);
        }
        self.series.retain(|_, s| !s.is_empty());
        self.latest = now;
        self.oldest = self.oldest.min(now);
        self.rebuild_keys();
    }

    /// The group-by keys of the series still held: the key table shrinks
    /// when series are forgotten.
    fn rebuild_keys(&mut self) {
        let mut keys: BTreeSet<Arc<str>> = BTreeSet::new();
        for (res, _, attrs) in self.series.keys() {
            for (k, _) in res.iter().chain(attrs.iter()) {
                if !keys.contains(k) {
                    keys.insert(Arc::from(k));
                }
            }
        }
        self.keys = keys;
    }

    /// Rolls fine slots older than the full-resolution span into minutes
    /// and forgets what is older than the retention.
    fn compact(&mut self) {
        let fine_from = self.latest.saturating_sub(self.fine_ns);
        let keep_from = self.latest.saturating_sub(self.retention_ns);
        let before = self.series.len();
        self.series.retain(|(_, metric, _), s| {
            while s.fine.front().is_some_and(|f| f.end <= fine_from) {
                let Some(f) = s.fine.pop_front() else { break };
                let minute = f.end.saturating_sub(1) / MINUTE_NS * MINUTE_NS;
                match s.coarse.back_mut() {
                    Some(c) if c.start == minute => {
                        c.end = c.end.max(f.end);
                        if !additive(*metric) {
                            // A rollup of a gauge or of an UpDownCounter (a
                            // count of what exists now) is its last value.
                            c.value = f.value;
                        } else {
                            c.value.merge(&f.value);
                        }
                    }
                    _ => s.coarse.push_back(Slot {
                        start: minute,
                        end: minute + MINUTE_NS,
                        value: f.value,
                    }),
                }
            }
            let held = s.coarse.len() + s.fine.len();
            while s.coarse.front().is_some_and(|c| c.end <= keep_from) {
                s.coarse.pop_front();
            }
            while s.fine.front().is_some_and(|c| c.end <= keep_from) {
                s.fine.pop_front();
            }
            // Rolling fine slots into minutes keeps the total; forgetting
            // slots (about once a minute per series) rebuilds it.
            if s.coarse.len() + s.fine.len() < held {
                s.recount(*metric);
            }
            !s.is_empty()
        });
        if self.series.len() < before {
            self.rebuild_keys();
        }
        self.oldest = self.oldest.max(keep_from);
    }

    /// Every slot whose interval ends in `(from, to]`, with its series.
    pub fn slots(&self, from: u64, to: u64) -> impl Iterator<Item = (&SeriesKey, &Slot)> {
        self.series.iter().flat_map(move |(k, s)| {
            s.coarse
                .iter()
                .chain(s.fine.iter())
                .filter(move |sl| sl.end > from && sl.end <= to)
                .map(move |sl| (k, sl))
        })
    }

    /// Every series with its slots ending in `(from, to]`, for queries
    /// that decide once per series what its slots count for; a series with
    /// no slot in the range is left out.
    /// Only series for which `keep` holds are read.
    pub fn series_slots(
        &self,
        from: u64,
        to: u64,
        keep: impl Fn(&SeriesKey) -> bool,
    ) -> impl Iterator<Item = (&SeriesKey, impl Iterator<Item = &Slot> + Clone)> {
        // Each deque is in time order: the range is found by two binary
        // searches, not by testing every slot.
        self.series.iter().filter_map(move |(k, s)| {
            if !keep(k) {
                return None;
            }
            let (coarse, fine) = (within(&s.coarse, from, to), within(&s.fine, from, to));
            if coarse.len() + fine.len() == 0 {
                return None;
            }
            Some((k, coarse.chain(fine)))
        })
    }

    /// Every series with what it adds up to in `(from, to]`: its kept
    /// total when the range holds all its slots (no slot is read), else
    /// the values of the slots inside, as [`Store::series_slots`] finds
    /// them. Gauges and UpDownCounters always give their slots. Only
    /// series for which `keep` holds are read.
    pub fn series_values(
        &self,
        from: u64,
        to: u64,
        keep: impl Fn(&SeriesKey) -> bool,
    ) -> impl Iterator<Item = (&SeriesKey, Values<'_>)> {
        self.series.iter().filter_map(move |(k, s)| {
            if !keep(k) {
                return None;
            }
            if let (Some(t), Some((first, last))) = (&s.total, s.span())
                && first > from
                && last <= to
            {
                return Some((k, Values::Total(std::iter::once(t))));
            }
            let (coarse, fine) = (within(&s.coarse, from, to), within(&s.fine, from, to));
            if coarse.len() + fine.len() == 0 {
                return None;
            }
            Some((k, Values::Slots(coarse.chain(fine))))
        })
    }

    /// How many slots end in `(from, to]`: what a query over that range
    /// reads (each series' slots are in time order, so two binary searches
    /// per series).
    pub fn slots_in(&self, from: u64, to: u64) -> usize {
        self.series
            .values()
            .map(|s| match s.span() {
                // Covered whole (the usual page range) or not at all: no
                // search.
                Some((first, last)) if first > from && last <= to => s.coarse.len() + s.fine.len(),
                Some((first, last)) if last <= from || first > to => 0,
                _ => within(&s.coarse, from, to).len() + within(&s.fine, from, to).len(),
            })
            .sum()
    }

    /// The newest batch's end (0 before the first batch).
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// The start of the oldest data kept (`u64::MAX` before the first batch).
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    pub fn retention_ns(&self) -> u64 {
        self.retention_ns
    }

    /// The span a request without a time range covers: the retention, or
    /// what [`Store::with_default_span`] set.
    pub fn default_span_ns(&self) -> u64 {
        self.default_span_ns.unwrap_or(self.retention_ns)
    }

    /// A store whose requests without a time range cover `span_ns` rather
    /// than the whole retention: the fleet's Health store also holds the
    /// baseline spans before the range it was asked for.
    pub fn with_default_span(mut self, span_ns: u64) -> Self {
        self.default_span_ns = Some(span_ns);
        self
    }

    /// Marks the store as holding data from `start` on although it holds
    /// no slot that old: the fleet's storage had flow series then, none of
    /// which changed in the span a page reads (a baseline span of zero).
    pub fn hold_from(&mut self, start: u64) {
        self.oldest = self.oldest.min(start);
    }

    /// Whether the store holds all of `(from, to]`: its oldest data is no
    /// later than `from` and it has data up to `to` (a baseline span is
    /// compared only when held).
    pub fn holds(&self, from: u64, to: u64) -> bool {
        self.oldest <= from && to <= self.latest && from < to
    }

    /// Every Resource and point attribute key seen.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.as_ref())
    }

    /// Offers `key` as a group-by choice even before a series carries it
    /// (the fleet view lists the storage's label names).
    pub fn add_key(&mut self, key: &str) {
        if !self.keys.contains(key) {
            self.keys.insert(Arc::from(key));
        }
    }

    pub fn has_key(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    pub fn slot_count(&self) -> usize {
        self.series
            .values()
            .map(|s| s.fine.len() + s.coarse.len())
            .sum()
    }

    /// Points dropped at the series limit since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use flowscope_model::Point;
    use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE};
    use flowscope_model::names::resource;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn batch(end_s: u64, metric: MetricId, service: &str, v: u64) -> MetricBatch {
        let mut b = MetricBatch::new((end_s - 10) * S, end_s * S);
        b.points.push(Point {
            resource: Arc::new(Attrs::new().with(resource::SERVICE_NAME, service)),
            metric,
            attrs: Attrs::new(),
            value: PointValue::Int(v),
        });
        b
    }

    fn int(v: &PointValue) -> u64 {
        match v {
            PointValue::Int(v) => *v,
            _ => 0,
        }
    }

    /// The sum of the slots in `(from, to]`, checked against what
    /// `series_values` gives (the kept totals where a series is covered
    /// whole).
    fn total(st: &Store, from: u64, to: u64) -> u64 {
        let slots: u64 = st.slots(from, to).map(|(_, s)| int(&s.value)).sum();
        let values: u64 = st
            .series_values(from, to, |_| true)
            .flat_map(|(_, v)| v)
            .map(int)
            .sum();
        assert_eq!(
            slots, values,
            "kept totals differ from the slots in ({from}, {to}]"
        );
        slots
    }

    #[test]
    fn rolls_up_per_minute_and_forgets_past_retention() {
        // 30 min retention, 5 min at full resolution.
        let mut st = Store::new(1800 * S, 300 * S, 10);
        // 10 s intervals for 40 minutes, 1 byte each.
        for i in 1..=240 {
            assert_eq!(st.insert(&batch(600 + i * 10, FLOW_IO, "web", 1)), 0);
        }
        let latest = 600 + 2400;
        assert_eq!(st.latest(), latest * S);
        // Last 5 minutes: 30 fine slots; the 25 minutes before: rollups.
        assert_eq!(st.slot_count(), 30 + 25);
        // Nothing lost inside the retention: 180 intervals of 1.
        assert_eq!(total(&st, 0, u64::MAX), 180);
        // Covered whole, the series gives its kept total: one value.
        let covered: Vec<usize> = st
            .series_values(0, u64::MAX, |_| true)
            .map(|(_, v)| v.count())
            .collect();
        assert_eq!(covered, vec![1]);
        assert_eq!(total(&st, (latest - 300) * S, latest * S), 30);
    }

    #[test]
    fn gauges_roll_up_to_their_last_value() {
        let mut st = Store::new(1800 * S, 60 * S, 10);
        for i in 1..=18 {
            st.insert(&batch(600 + i * 10, TCP_ACTIVE, "web", i));
        }
        // Minute (600, 660] holds intervals ending 610..660: last value 6.
        let v: Vec<u64> = st
            .slots(600 * S, 660 * S)
            .map(|(_, s)| match s.value {
                PointValue::Int(v) => v,
                _ => 0,
            })
            .collect();
        assert_eq!(v, vec![6]);
    }

    #[test]
    fn series_limit_drops_and_counts() {
        let mut st = Store::new(3600 * S, 600 * S, 2);
        assert_eq!(st.insert(&batch(10, FLOW_IO, "a", 1)), 0);
        assert_eq!(st.insert(&batch(10, FLOW_IO, "b", 1)), 0);
        assert_eq!(st.insert(&batch(20, FLOW_IO, "c", 1)), 1);
        // Known series still take points.
        assert_eq!(st.insert(&batch(20, FLOW_IO, "a", 1)), 0);
        assert_eq!(st.series_count(), 2);
        assert_eq!(st.dropped(), 1);
        assert!(st.has_key(resource::SERVICE_NAME));
    }

    #[test]
    fn a_clock_stepped_back_does_not_hide_new_data() {
        let mut st = Store::new(3600 * S, 600 * S, 10);
        for i in 1..=6 {
            st.insert(&batch(10_000 + i * 10, FLOW_IO, "old", 1));
        }
        // Two receivers' batches a few seconds out of order: both kept, and
        // a late slot of a known series lands in time order.
        st.insert(&batch(10_055, FLOW_IO, "late", 1));
        st.insert(&batch(10_045, FLOW_IO, "old", 1));
        assert_eq!(total(&st, 10_040 * S, 10_050 * S), 2);
        assert_eq!(st.slots_in(10_040 * S, 10_050 * S), 2);
        assert_eq!(st.latest(), 10_060 * S);
        assert_eq!(total(&st, 0, u64::MAX), 8);
        // The clock goes back an hour: the next interval ends at 6,460 s.
        st.insert(&batch(6_460, FLOW_IO, "new", 5));
        assert_eq!(st.latest(), 6_460 * S);
        // The default range (the last hour before "now") shows it...
        assert_eq!(total(&st, 6_460 * S - 3600 * S, 6_460 * S), 5);
        // ...and what was stamped after the new time is gone, its keys too.
        assert_eq!(total(&st, 0, u64::MAX), 5);
        assert_eq!(st.slots_in(0, u64::MAX), 1);
        assert_eq!(st.series_count(), 1);
        // A series forgotten at the end of the retention takes its key.
        let mut st = Store::new(120 * S, 60 * S, 10);
        let mut b = batch(100, FLOW_IO, "a", 1);
        b.points[0].attrs.set("only.here", "x");
        st.insert(&b);
        assert!(st.has_key("only.here"));
        st.insert(&batch(400, FLOW_IO, "b", 1));
        assert!(!st.has_key("only.here"));
    }
}
