//! A dependency's numbers: what each series adds to them ([`Field`],
//! decided once per series) and the histogram quantiles read from them.

use std::collections::BTreeMap;

use flowscope_model::names::{attr, metric};
use flowscope_model::{Attrs, Histogram, MetricId, PointValue};
use serde::Serialize;

/// A dependency's numbers over a time range or one bucket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    pub packets: u64,
    pub retransmits: u64,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub resets: u64,
    #[serde(skip)]
    pub failed_by_type: BTreeMap<String, u64>,
    #[serde(skip)]
    pub rtt: Option<Histogram>,
    /// Lifetimes of the connections closed (`flowscope.tcp.connection.duration`),
    /// read only when asked for ([`super::edges_reading`]).
    #[serde(skip)]
    pub durations: Option<Histogram>,
}

pub(super) fn count(v: &PointValue) -> u64 {
    match v {
        PointValue::Int(n) => *n,
        PointValue::Double(d) if *d > 0.0 => *d as u64,
        _ => 0,
    }
}

pub(super) fn is(m: &MetricId, name: metric::Def) -> bool {
    m.name() == name.0
}

/// Whether the dependency views read this metric.
pub(super) fn is_flow_metric(m: &MetricId) -> bool {
    [
        metric::FLOW_IO,
        metric::FLOW_PACKETS,
        metric::TCP_RETRANSMITS,
        metric::TCP_OPENED,
        metric::TCP_CLOSED,
        metric::TCP_FAILED,
        metric::TCP_RESETS,
        metric::TCP_RTT,
    ]
    .iter()
    .any(|n| is(m, *n))
}

/// What one series' points add to a dependency's [`Totals`]: decided once
/// per series (metric name, direction, error type), then applied to each of
/// its slots.
pub(super) enum Field {
    BytesClientToServer,
    BytesServerToClient,
    Packets,
    Retransmits,
    Opened,
    Closed,
    Failed(String),
    Resets,
    Rtt,
    Duration,
    Nothing,
}

impl Field {
    pub(super) fn of(m: &MetricId, attrs: &Attrs, local_client: bool) -> Field {
        if is(m, metric::FLOW_IO) {
            let tx = attrs.get_str(attr::IO_DIRECTION) == Some(attr::TRANSMIT);
            if tx == local_client {
                Field::BytesClientToServer
            } else {
                Field::BytesServerToClient
            }
        } else if is(m, metric::FLOW_PACKETS) {
            Field::Packets
        } else if is(m, metric::TCP_RETRANSMITS) {
            Field::Retransmits
        } else if is(m, metric::TCP_OPENED) {
            Field::Opened
        } else if is(m, metric::TCP_CLOSED) {
            Field::Closed
        } else if is(m, metric::TCP_FAILED) {
            Field::Failed(
                attrs
                    .get_str(attr::ERROR_TYPE)
                    .unwrap_or("_OTHER")
                    .to_string(),
            )
        } else if is(m, metric::TCP_RESETS) {
            Field::Resets
        } else if is(m, metric::TCP_RTT) {
            Field::Rtt
        } else if is(m, metric::TCP_DURATION) {
            Field::Duration
        } else {
            Field::Nothing
        }
    }
}

impl Totals {
    pub(super) fn add(&mut self, f: &Field, v: &PointValue) {
        let n = || count(v);
        match f {
            Field::BytesClientToServer => self.bytes_client_to_server += n(),
            Field::BytesServerToClient => self.bytes_server_to_client += n(),
            Field::Packets => self.packets += n(),
            Field::Retransmits => self.retransmits += n(),
            Field::Opened => self.opened += n(),
            Field::Closed => self.closed += n(),
            Field::Failed(t) => {
                let n = n();
                self.failed += n;
                match self.failed_by_type.get_mut(t) {
                    Some(c) => *c += n,
                    None => {
                        self.failed_by_type.insert(t.clone(), n);
                    }
                }
            }
            Field::Resets => self.resets += n(),
            Field::Rtt => merge_histogram(&mut self.rtt, v),
            Field::Duration => merge_histogram(&mut self.durations, v),
            Field::Nothing => {}
        }
    }

    pub(super) fn merge(&mut self, o: &Totals) {
        self.bytes_client_to_server += o.bytes_client_to_server;
        self.bytes_server_to_client += o.bytes_server_to_client;
        self.packets += o.packets;
        self.retransmits += o.retransmits;
        self.opened += o.opened;
        self.closed += o.closed;
        self.failed += o.failed;
        self.resets += o.resets;
        for (k, v) in &o.failed_by_type {
            *self.failed_by_type.entry(k.clone()).or_default() += v;
        }
        for (mine, theirs) in [(&mut self.rtt, &o.rtt), (&mut self.durations, &o.durations)] {
            if let Some(h) = theirs {
                match mine {
                    Some(r) => r.merge(h),
                    None => *mine = Some(h.clone()),
                }
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_client_to_server + self.bytes_server_to_client
    }

    /// Retransmitted segments per packet (0 without packets).
    pub fn retransmit_ratio(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.retransmits as f64 / self.packets as f64
        }
    }

    /// RTT quantile in seconds from the merged histogram.
    pub fn rtt_quantile(&self, q: f64) -> Option<f64> {
        self.rtt.as_ref().and_then(|h| quantile(h, q))
    }
}

/// Merges a histogram point into a running histogram.
fn merge_histogram(into: &mut Option<Histogram>, v: &PointValue) {
    if let PointValue::Histogram(h) = v {
        match into {
            Some(r) => r.merge(h),
            None => *into = Some(h.clone()),
        }
    }
}

/// The `q` quantile of an explicit-bucket histogram, interpolating
/// linearly inside the bucket it falls in (as Prometheus'
/// `histogram_quantile` does), clamped to the recorded min and max.
pub fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    if h.count == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * h.count as f64;
    let mut cum = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        let before = cum;
        cum += c;
        if *c > 0 && cum as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { h.bounds[i - 1] };
            let upper = h.bounds.get(i).copied().unwrap_or(h.max);
            let frac = (rank - before as f64) / *c as f64;
            let v = lower + (upper - lower) * frac;
            let (lo, hi) = if h.min <= h.max {
                (h.min, h.max)
            } else {
                (v, v)
            };
            return Some(v.clamp(lo, hi));
        }
    }
    Some(h.max)
}
