//! Metric batches: what processors hand to exporters.
//!
//! A batch is a flat list of points, each naming its Resource, its metric
//! and its attributes. Flat is what aggregation and cardinality limits want;
//! exporters group by Resource and metric when they encode OTLP. Sums are
//! deltas over `[start, time]`; exporters that want cumulative temporality
//! keep running totals themselves.

use std::collections::HashMap;
use std::sync::Arc;

use crate::attr::{Attrs, Value};
use crate::flow::{FailReason, Flow, Transport};
use crate::hist::Histogram;
use crate::names::{metric, path};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Monotonic sum: things that happened (bytes, opens). Points are
    /// deltas over their interval.
    Sum,
    /// Non-monotonic sum (an UpDownCounter): a count of things that exist
    /// now (active connections, queue size). A point carries the current
    /// count; exporters send it as a cumulative non-monotonic Sum, as the
    /// OpenTelemetry SDKs do for UpDownCounters under a delta preference,
    /// so that a backend dropping an attribute adds the counts correctly.
    UpDownCounter,
    Gauge,
    Histogram,
}

/// A metric of the contract: name, unit, instrument and description.
///
/// Two words: a reference to the contract's definition (name, unit,
/// description, all `'static`) and the instrument. Every point carries
/// one, so its size is paid once per point of every interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricId {
    def: &'static metric::Def,
    kind: Kind,
}

impl MetricId {
    const fn new(def: &'static metric::Def, kind: Kind) -> Self {
        Self { def, kind }
    }
    pub const fn sum(m: &'static metric::Def) -> Self {
        Self::new(m, Kind::Sum)
    }
    pub const fn up_down_counter(m: &'static metric::Def) -> Self {
        Self::new(m, Kind::UpDownCounter)
    }
    pub const fn gauge(m: &'static metric::Def) -> Self {
        Self::new(m, Kind::Gauge)
    }
    pub const fn histogram(m: &'static metric::Def) -> Self {
        Self::new(m, Kind::Histogram)
    }
    /// The metric's name in the contract.
    pub const fn name(&self) -> &'static str {
        self.def.0
    }
    /// Its UCUM unit.
    pub const fn unit(&self) -> &'static str {
        self.def.1
    }
    /// One line for OTLP `Metric.description` and Prometheus `# HELP`.
    pub const fn description(&self) -> &'static str {
        self.def.2
    }
    /// Its instrument.
    pub const fn kind(&self) -> Kind {
        self.kind
    }
}

pub const FLOW_IO: MetricId = MetricId::sum(&metric::FLOW_IO);
pub const FLOW_PACKETS: MetricId = MetricId::sum(&metric::FLOW_PACKETS);
pub const TCP_RETRANSMITS: MetricId = MetricId::sum(&metric::TCP_RETRANSMITS);
pub const TCP_RTT: MetricId = MetricId::histogram(&metric::TCP_RTT);
pub const TCP_RTT_VARIANCE: MetricId = MetricId::gauge(&metric::TCP_RTT_VARIANCE);
pub const TCP_OPENED: MetricId = MetricId::sum(&metric::TCP_OPENED);
pub const TCP_CLOSED: MetricId = MetricId::sum(&metric::TCP_CLOSED);
pub const TCP_FAILED: MetricId = MetricId::sum(&metric::TCP_FAILED);
pub const TCP_ACTIVE: MetricId = MetricId::up_down_counter(&metric::TCP_ACTIVE);
pub const TCP_RESETS: MetricId = MetricId::sum(&metric::TCP_RESETS);
pub const TCP_DURATION: MetricId = MetricId::histogram(&metric::TCP_DURATION);
pub const UDP_ACTIVE: MetricId = MetricId::up_down_counter(&metric::UDP_ACTIVE);
pub const FLOW_COST: MetricId = MetricId::sum(&metric::FLOW_COST);
pub const FLOW_DROPS: MetricId = MetricId::sum(&metric::FLOW_DROPS);
pub const HOST_DROPS: MetricId = MetricId::sum(&metric::HOST_DROPS);
pub const DNS_DURATION: MetricId = MetricId::histogram(&metric::DNS_DURATION);

/// Every metric a flow produces ([`flow_points`] and the cost processor).
pub const FLOW_METRICS: [MetricId; 14] = [
    FLOW_IO,
    FLOW_PACKETS,
    TCP_RETRANSMITS,
    TCP_RTT,
    TCP_RTT_VARIANCE,
    TCP_OPENED,
    TCP_CLOSED,
    TCP_FAILED,
    TCP_ACTIVE,
    TCP_RESETS,
    TCP_DURATION,
    UDP_ACTIVE,
    FLOW_COST,
    FLOW_DROPS,
];

pub const PATH_REACHABLE: MetricId = MetricId::gauge(&path::REACHABLE);
pub const PATH_HOPS: MetricId = MetricId::gauge(&path::HOPS);
pub const PATH_RTT: MetricId = MetricId::histogram(&path::RTT);
pub const PATH_PROBES_SENT: MetricId = MetricId::sum(&path::PROBES_SENT);
pub const PATH_PROBES_LOST: MetricId = MetricId::sum(&path::PROBES_LOST);
pub const PATH_JITTER: MetricId = MetricId::gauge(&path::JITTER);
pub const PATH_HOP_RTT: MetricId = MetricId::histogram(&path::HOP_RTT);
pub const PATH_HOP_PROBES_SENT: MetricId = MetricId::sum(&path::HOP_PROBES_SENT);
pub const PATH_HOP_PROBES_LOST: MetricId = MetricId::sum(&path::HOP_PROBES_LOST);
pub const PATH_ROUTE_CHANGES: MetricId = MetricId::sum(&path::ROUTE_CHANGES);
pub const PATH_TLS_TIME_LEFT: MetricId = MetricId::gauge(&path::TLS_TIME_LEFT);
pub const PATH_TLS_CHECK_FAILED: MetricId = MetricId::sum(&path::TLS_CHECK_FAILED);

/// Every metric a Network Path test produces, in the contract's order.
pub const PATH_METRICS: [MetricId; 12] = [
    PATH_REACHABLE,
    PATH_HOPS,
    PATH_RTT,
    PATH_PROBES_SENT,
    PATH_PROBES_LOST,
    PATH_JITTER,
    PATH_HOP_RTT,
    PATH_HOP_PROBES_SENT,
    PATH_HOP_PROBES_LOST,
    PATH_ROUTE_CHANGES,
    PATH_TLS_TIME_LEFT,
    PATH_TLS_CHECK_FAILED,
];

/// A point's value. Gauges that are means (RTT variance) carry their sum and
/// count so that merging two of them stays a correct mean.
#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    Int(u64),
    Double(f64),
    Mean { sum: f64, count: u64 },
    Histogram(Histogram),
}

impl PointValue {
    /// Merges `other` into `self` for a point of kind `kind`: sums and
    /// up-down counters add (the receiver reports one gauge point per flow,
    /// so merged flows add up), means pool, histograms merge.
    pub fn merge(&mut self, other: &PointValue) {
        match (self, other) {
            (PointValue::Int(a), PointValue::Int(b)) => *a += b,
            (PointValue::Double(a), PointValue::Double(b)) => *a += b,
            (PointValue::Double(a), PointValue::Int(b)) => *a += *b as f64,
            (PointValue::Mean { sum, count }, PointValue::Mean { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (PointValue::Histogram(a), PointValue::Histogram(b)) => a.merge(b),
            // Kinds never mix for one metric; keep what we have.
            _ => {}
        }
    }

    /// The number a sum or gauge point exports.
    pub fn as_f64(&self) -> f64 {
        match self {
            PointValue::Int(v) => *v as f64,
            PointValue::Double(v) => *v,
            PointValue::Mean { sum, count } => {
                if *count == 0 {
                    0.0
                } else {
                    sum / *count as f64
                }
            }
            PointValue::Histogram(h) => h.sum,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub resource: Arc<Attrs>,
    pub metric: MetricId,
    pub attrs: Attrs,
    pub value: PointValue,
}

/// One interval's points.
#[derive(Clone, Debug, Default)]
pub struct MetricBatch {
    pub start_unix_nanos: u64,
    pub time_unix_nanos: u64,
    pub points: Vec<Point>,
}

impl MetricBatch {
    pub fn new(start_unix_nanos: u64, time_unix_nanos: u64) -> Self {
        Self {
            start_unix_nanos,
            time_unix_nanos,
            points: Vec::new(),
        }
    }

    /// Merges points with the same Resource, metric and attributes.
    pub fn coalesce(&mut self) {
        let mut index: HashMap<(Arc<Attrs>, MetricId, Attrs), usize> = HashMap::new();
        let mut out: Vec<Point> = Vec::with_capacity(self.points.len());
        for p in self.points.drain(..) {
            let key = (p.resource.clone(), p.metric, p.attrs.clone());
            match index.get(&key) {
                Some(&i) => out[i].value.merge(&p.value),
                None => {
                    index.insert(key, out.len());
                    out.push(p);
                }
            }
        }
        self.points = out;
    }

    /// Points of metric `name`, for tests and the console.
    pub fn points_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Point> + 'a {
        self.points.iter().filter(move |p| p.metric.name() == name)
    }
}

/// The most points [`flow_points`] makes for `flow`, to size the vector
/// they go into: each counter of its transport in both directions where it
/// has them, each failure reason, and one per drop count.
pub fn max_points(flow: &Flow) -> usize {
    let per_transport = match flow.transport {
        // Bytes and packets both ways, active.
        Transport::Udp => 5,
        // Bytes, packets and resets both ways; retransmits, opened, closed,
        // active, RTT, RTT variance, duration; the failures.
        Transport::Tcp => 13 + FailReason::ALL.len(),
    };
    per_transport + flow.stats.drops.len()
}

/// Turns one flow into the contract's points, appending them to `out`.
/// Zero counters emit no point, except that a flow always reports its
/// `active` count while a connection is open.
///
/// The points of one flow share their attribute sets: one for the points
/// without a direction and one per direction, each made once.
pub fn flow_points(flow: Flow, out: &mut Vec<Point>) {
    let Flow {
        resource,
        attrs,
        transport,
        stats: mut s,
        ..
    } = flow;
    let res = &resource;
    let spelled = crate::spelled::spelled();
    let push = |out: &mut Vec<Point>, metric: MetricId, attrs: Attrs, value: PointValue| {
        out.push(Point {
            resource: res.clone(),
            metric,
            attrs,
            value,
        });
    };
    let mut directed: [Option<Attrs>; 2] = [None, None];
    let mut dir = |transmit: bool| -> Attrs {
        directed[usize::from(transmit)]
            .get_or_insert_with(|| {
                let v = if transmit {
                    &spelled.transmit
                } else {
                    &spelled.receive
                };
                attrs.clone().with(spelled.direction.clone(), v.clone())
            })
            .clone()
    };

    for (metric, tx, rx) in [
        (FLOW_IO, s.bytes_tx, s.bytes_rx),
        (FLOW_PACKETS, s.packets_tx, s.packets_rx),
    ] {
        if tx > 0 {
            push(out, metric, dir(true), PointValue::Int(tx));
        }
        if rx > 0 {
            push(out, metric, dir(false), PointValue::Int(rx));
        }
    }
    for d in std::mem::take(&mut s.drops) {
        let a = dir(d.transmit).with(spelled.drop_reason.clone(), Value::Str(d.reason));
        push(out, FLOW_DROPS, a, PointValue::Int(d.packets));
    }
    match transport {
        Transport::Udp => {
            if s.active > 0 {
                push(out, UDP_ACTIVE, attrs.clone(), PointValue::Int(s.active));
            }
        }
        Transport::Tcp => {
            for (metric, v) in [
                (TCP_RETRANSMITS, s.retransmits),
                (TCP_OPENED, s.opened),
                (TCP_CLOSED, s.closed),
            ] {
                if v > 0 {
                    push(out, metric, attrs.clone(), PointValue::Int(v));
                }
            }
            for reason in FailReason::ALL {
                let v = s.failed(reason);
                if v > 0 {
                    let a = attrs.clone().with(
                        spelled.error_type.clone(),
                        spelled.fail_reason_value(reason).clone(),
                    );
                    push(out, TCP_FAILED, a, PointValue::Int(v));
                }
            }
            if s.resets_tx > 0 {
                push(out, TCP_RESETS, dir(true), PointValue::Int(s.resets_tx));
            }
            if s.resets_rx > 0 {
                push(out, TCP_RESETS, dir(false), PointValue::Int(s.resets_rx));
            }
            if s.active > 0 {
                push(out, TCP_ACTIVE, attrs.clone(), PointValue::Int(s.active));
            }
            if let Some(h) = s.rtt {
                push(out, TCP_RTT, attrs.clone(), PointValue::Histogram(h));
            }
            if s.rtt_var_count > 0 {
                push(
                    out,
                    TCP_RTT_VARIANCE,
                    attrs.clone(),
                    PointValue::Mean {
                        sum: s.rtt_var_sum,
                        count: s.rtt_var_count,
                    },
                );
            }
            if let Some(h) = s.duration {
                push(out, TCP_DURATION, attrs.clone(), PointValue::Histogram(h));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{DropCount, FlowStats, Role};

    /// A flow with every counter of its transport non-zero, every failure
    /// reason and two drop reasons.
    fn full(transport: Transport) -> Flow {
        let bounds: Arc<[f64]> = Arc::from(&[0.001, 0.01][..]);
        let mut stats = FlowStats::default();
        for counter in [
            &mut stats.bytes_tx,
            &mut stats.bytes_rx,
            &mut stats.packets_tx,
            &mut stats.packets_rx,
            &mut stats.retransmits,
            &mut stats.opened,
            &mut stats.closed,
            &mut stats.resets_tx,
            &mut stats.resets_rx,
            &mut stats.active,
            &mut stats.rtt_var_count,
        ] {
            *counter = 1;
        }
        stats.rtt_var_sum = 0.5;
        stats.rtt = Some(crate::Histogram::new(bounds.clone()));
        stats.duration = Some(crate::Histogram::new(bounds));
        for r in FailReason::ALL {
            stats.add_failed(r, 1);
        }
        stats.drops = [true, false]
            .map(|transmit| DropCount {
                reason: Arc::from("NETFILTER_DROP"),
                transmit,
                packets: 1,
            })
            .to_vec();
        Flow {
            resource: Arc::new(Attrs::new()),
            attrs: Attrs::new(),
            transport,
            role: Role::Client,
            local: "198.18.0.1:40000".parse().unwrap(),
            peer: "198.18.0.2:80".parse().unwrap(),
            netns: 0,
            pid: 0,
            stats,
        }
    }

    /// `max_points` sizes the grouper's vector: a flow that reports
    /// everything makes exactly that many points, so a new point in
    /// `flow_points` fails here until it is counted there too.
    #[test]
    fn a_flow_reporting_everything_makes_max_points() {
        for transport in [Transport::Tcp, Transport::Udp] {
            let flow = full(transport);
            let most = max_points(&flow);
            let mut out = Vec::new();
            flow_points(flow, &mut out);
            assert_eq!(out.len(), most, "{transport:?}");
        }
    }
}
