//! Explicit-bucket histograms, as OTLP's `HistogramDataPoint` carries them.

use std::sync::Arc;

/// Bucket `i` counts values `v` with `bounds[i-1] < v <= bounds[i]`; the
/// last bucket counts everything above the last bound (OTLP semantics).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: Arc<[f64]>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl Histogram {
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let n = bounds.len() + 1;
        Self {
            bounds,
            counts: vec![0; n],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    pub fn record(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds `other` into `self`. With the same bounds the buckets add; with
    /// different bounds `other`'s buckets are re-filed by their upper bound,
    /// which can only move a count to a coarser bucket, never lose it.
    pub fn merge(&mut self, other: &Histogram) {
        // Histograms of one series share their bounds' allocation: the
        // pointer answers before the 14 values are compared.
        if Arc::ptr_eq(&self.bounds, &other.bounds) || self.bounds == other.bounds {
            for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
                *a += b;
            }
        } else {
            for (i, c) in other.counts.iter().enumerate() {
                let upper = other.bounds.get(i).copied().unwrap_or(f64::INFINITY);
                let j = self.bounds.partition_point(|b| *b < upper);
                self.counts[j] += c;
            }
        }
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Default bounds (seconds) for `flowscope.tcp.rtt`.
pub const RTT_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Default bounds (seconds) for `flowscope.tcp.connection.duration`.
pub const DURATION_BOUNDS: &[f64] = &[
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
];
/// Default bounds (seconds) for `dns.lookup.duration`.
pub const DNS_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        let mut h = Histogram::new(Arc::from(&[1.0, 2.0][..]));
        for v in [0.5, 1.0, 1.5, 2.0, 3.0] {
            h.record(v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
        assert_eq!(h.sum, 8.0);
        assert_eq!((h.min, h.max), (0.5, 3.0));
    }

    #[test]
    fn merge_keeps_every_count() {
        let b: Arc<[f64]> = Arc::from(&[1.0, 2.0][..]);
        let mut a = Histogram::new(b.clone());
        a.record(0.1);
        let mut c = Histogram::new(b);
        c.record(5.0);
        c.record(1.5);
        a.merge(&c);
        assert_eq!(a.counts, vec![1, 1, 1]);
        let mut coarse = Histogram::new(Arc::from(&[10.0][..]));
        coarse.merge(&a);
        assert_eq!(coarse.counts, vec![2, 1]);
        assert_eq!(coarse.count, 3);
    }
}
