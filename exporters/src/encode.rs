//! `MetricBatch` -> OTLP `ExportMetricsServiceRequest`.
//!
//! A batch is flat (one entry per point); OTLP nests points under their
//! Resource and their metric. The encoder groups them in first-seen order:
//! one `ResourceMetrics` per distinct Resource, one `ScopeMetrics` (scope
//! `flowscope`, this crate's version) per Resource, one `Metric` per
//! (name, unit, instrument), with the metric's description. Monotonic sums
//! and histograms have the temporality the caller chooses. UpDownCounters
//! (non-monotonic sums: active connections, queue sizes) carry the current
//! count and are always cumulative, as the OpenTelemetry SDKs export them
//! under a delta preference; their start time is the interval start under
//! delta and the series' first sight under cumulative. Each point carries its
//! own start time so that the cumulative state (see [`crate::temporality`])
//! can give every series the time it was first seen.

use std::collections::HashMap;
use std::sync::Arc;

use flowscope_model::names::SCOPE_NAME;
use flowscope_model::{Attrs, Histogram, Kind, MetricBatch, MetricId, Point, PointValue, Value};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Temporality of exported sums and histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Temporality {
    /// Each point covers one interval: `[batch start, batch time]`.
    #[default]
    Delta,
    /// Each point is a running total since the series' start time.
    Cumulative,
}

impl Temporality {
    fn proto(self) -> i32 {
        match self {
            Temporality::Delta => AggregationTemporality::Delta as i32,
            Temporality::Cumulative => AggregationTemporality::Cumulative as i32,
        }
    }
}

/// The outcome of encoding one batch.
#[derive(Debug, Default)]
pub struct Encoded {
    pub request: ExportMetricsServiceRequest,
    /// Data points in `request`.
    pub points: u64,
    /// Points that could not be encoded (a histogram metric whose value is
    /// not a histogram: a bug upstream, counted rather than hidden).
    pub skipped: u64,
}

/// Encodes `batch` with delta temporality: every sum and histogram point
/// starts at the batch start.
pub fn encode(batch: &MetricBatch) -> Encoded {
    encode_points(
        batch.points.iter().map(|p| (p, batch.start_unix_nanos)),
        batch.time_unix_nanos,
        Temporality::Delta,
    )
}

/// Encodes `(point, start time)` pairs, all observed at `time`.
pub fn encode_points<'a>(
    points: impl IntoIterator<Item = (&'a Point, u64)>,
    time: u64,
    temporality: Temporality,
) -> Encoded {
    let mut out = Encoded::default();
    // Resource -> index in resource_metrics; (resource index, metric) -> index in metrics.
    let mut resources: HashMap<&Attrs, usize> = HashMap::new();
    let mut metrics: HashMap<(usize, MetricId), usize> = HashMap::new();
    let rms = &mut out.request.resource_metrics;
    for (p, start) in points {
        let ri = *resources.entry(p.resource.as_ref()).or_insert_with(|| {
            rms.push(resource_metrics(&p.resource));
            rms.len() - 1
        });
        let scope = &mut rms[ri].scope_metrics[0];
        let mi = *metrics.entry((ri, p.metric)).or_insert_with(|| {
            scope.metrics.push(new_metric(p.metric, temporality));
            scope.metrics.len() - 1
        });
        if push_point(&mut scope.metrics[mi], p, start, time) {
            out.points += 1;
        } else {
            out.skipped += 1;
        }
    }
    // A metric whose only points were skipped stays out of the request.
    for rm in rms.iter_mut() {
        for sm in rm.scope_metrics.iter_mut() {
            sm.metrics.retain(|m| metric_points(m) > 0);
        }
    }
    rms.retain(|rm| rm.scope_metrics.iter().any(|sm| !sm.metrics.is_empty()));
    out
}

/// Number of data points in a metric.
pub fn metric_points(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Number of data points in a request.
pub fn request_points(r: &ExportMetricsServiceRequest) -> u64 {
    r.resource_metrics
        .iter()
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter())
        .map(|m| metric_points(m) as u64)
        .sum()
}

/// The scope every ScopeMetrics names.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

fn resource_metrics(resource: &Arc<Attrs>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: key_values(resource),
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn new_metric(id: MetricId, temporality: Temporality) -> Metric {
    let data = match id.kind() {
        Kind::Sum => metric::Data::Sum(Sum {
            data_points: Vec::new(),
            aggregation_temporality: temporality.proto(),
            is_monotonic: true,
        }),
        // The current count, so always cumulative: the temporality the
        // OpenTelemetry SDKs give UpDownCounters under a delta preference.
        Kind::UpDownCounter => metric::Data::Sum(Sum {
            data_points: Vec::new(),
            aggregation_temporality: Temporality::Cumulative.proto(),
            is_monotonic: false,
        }),
        Kind::Gauge => metric::Data::Gauge(Gauge {
            data_points: Vec::new(),
        }),
        Kind::Histogram => {
            metric::Data::Histogram(opentelemetry_proto::tonic::metrics::v1::Histogram {
                data_points: Vec::new(),
                aggregation_temporality: temporality.proto(),
            })
        }
    };
    Metric {
        name: id.name().to_string(),
        description: id.description().to_string(),
        unit: id.unit().to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// Appends `p` to `m`; false when the value does not fit the instrument.
fn push_point(m: &mut Metric, p: &Point, start: u64, time: u64) -> bool {
    let attributes = key_values(&p.attrs);
    match &mut m.data {
        Some(metric::Data::Sum(s)) => match number(&p.value) {
            Some(value) => {
                s.data_points.push(NumberDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    value: Some(value),
                    ..Default::default()
                });
                true
            }
            None => false,
        },
        Some(metric::Data::Gauge(g)) => match number(&p.value) {
            Some(value) => {
                // Gauges are instantaneous: OTLP leaves their start time unset.
                g.data_points.push(NumberDataPoint {
                    attributes,
                    time_unix_nano: time,
                    value: Some(value),
                    ..Default::default()
                });
                true
            }
            None => false,
        },
        Some(metric::Data::Histogram(h)) => match &p.value {
            PointValue::Histogram(v) => {
                h.data_points
                    .push(histogram_point(v, attributes, start, time));
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn number(v: &PointValue) -> Option<number_data_point::Value> {
    match v {
        // Counts above i64::MAX cannot occur in practice (2^63 bytes); clamp
        // rather than wrap to a negative number.
        PointValue::Int(i) => Some(number_data_point::Value::AsInt(
            i64::try_from(*i).unwrap_or(i64::MAX),
        )),
        PointValue::Double(d) => Some(number_data_point::Value::AsDouble(*d)),
        PointValue::Mean { .. } => Some(number_data_point::Value::AsDouble(v.as_f64())),
        PointValue::Histogram(_) => None,
    }
}

fn histogram_point(
    h: &Histogram,
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
) -> HistogramDataPoint {
    let has = h.count > 0;
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: h.count,
        sum: Some(h.sum),
        bucket_counts: h.counts.clone(),
        explicit_bounds: h.bounds.to_vec(),
        // An empty histogram's min/max are +-inf, which JSON cannot carry
        // and which mean nothing: leave them out.
        min: has.then_some(h.min),
        max: has.then_some(h.max),
        ..Default::default()
    }
}

/// OTLP attributes from an attribute set (already sorted by key).
pub fn key_values(attrs: &Attrs) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(any_value(v)),
            }),
            ..Default::default()
        })
        .collect()
}

fn any_value(v: &Value) -> any_value::Value {
    match v {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(i) => any_value::Value::IntValue(*i),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE, TCP_RTT, TCP_RTT_VARIANCE};
    use flowscope_model::names::{attr, resource};

    fn res(name: &str) -> Arc<Attrs> {
        Arc::new(
            Attrs::new()
                .with(resource::SERVICE_NAME, name)
                .with(resource::PROCESS_PID, 42i64),
        )
    }

    fn point(r: &Arc<Attrs>, metric: MetricId, attrs: Attrs, value: PointValue) -> Point {
        Point {
            resource: r.clone(),
            metric,
            attrs,
            value,
        }
    }

    fn sample() -> MetricBatch {
        let a = res("checkout");
        let b = res("cart");
        let flow = Attrs::new()
            .with(attr::NETWORK_TRANSPORT, "tcp")
            .with(attr::PEER_PORT, 443u16)
            .with(attr::OVERFLOW, true);
        let mut h = Histogram::new(Arc::from(&[0.001, 0.01][..]));
        for v in [0.0005, 0.002, 0.003, 0.5] {
            h.record(v);
        }
        let mut batch = MetricBatch::new(1_000_000_000, 11_000_000_000);
        batch.points = vec![
            point(
                &a,
                FLOW_IO,
                flow.clone().with(attr::IO_DIRECTION, "transmit"),
                PointValue::Int(1_000_000),
            ),
            point(&b, TCP_ACTIVE, flow.clone(), PointValue::Int(3)),
            point(
                &a,
                FLOW_IO,
                flow.clone().with(attr::IO_DIRECTION, "receive"),
                PointValue::Int(250_000),
            ),
            point(&a, TCP_RTT, flow.clone(), PointValue::Histogram(h)),
            point(
                &a,
                TCP_RTT_VARIANCE,
                flow,
                PointValue::Mean {
                    sum: 0.003,
                    count: 2,
                },
            ),
        ];
        batch
    }

    fn int(p: &NumberDataPoint) -> i64 {
        match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            other => panic!("not an int: {other:?}"),
        }
    }

    #[test]
    fn groups_by_resource_and_metric_with_exact_values() {
        let e = encode(&sample());
        assert_eq!((e.points, e.skipped), (5, 0));
        let rms = &e.request.resource_metrics;
        assert_eq!(rms.len(), 2);
        let ra = rms[0].resource.as_ref().unwrap();
        assert_eq!(ra.attributes.len(), 2);
        assert_eq!(ra.attributes[0].key, "process.pid");
        assert_eq!(
            ra.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
        assert_eq!(ra.attributes[1].key, "service.name");
        assert_eq!(
            ra.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("checkout".into()))
        );
        assert_eq!(rms[0].scope_metrics.len(), 1);
        let sm = &rms[0].scope_metrics[0];
        assert_eq!(sm.scope.as_ref().unwrap().name, "flowscope");
        assert_eq!(
            sm.scope.as_ref().unwrap().version,
            env!("CARGO_PKG_VERSION")
        );
        let names: Vec<_> = sm
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.unit.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("network.flow.io", "By"),
                ("flowscope.tcp.rtt", "s"),
                ("flowscope.tcp.rtt.variance", "s")
            ]
        );

        let Some(metric::Data::Sum(io)) = &sm.metrics[0].data else {
            panic!("io is not a sum")
        };
        assert!(io.is_monotonic);
        assert_eq!(
            io.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        assert_eq!(io.data_points.len(), 2);
        assert_eq!(int(&io.data_points[0]), 1_000_000);
        assert_eq!(int(&io.data_points[1]), 250_000);
        assert_eq!(io.data_points[0].start_time_unix_nano, 1_000_000_000);
        assert_eq!(io.data_points[0].time_unix_nano, 11_000_000_000);
        let keys: Vec<_> = io.data_points[1]
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "network.io.direction",
                "network.peer.port",
                "network.transport",
                "otel.metric.overflow"
            ]
        );
        let vals: Vec<_> = io.data_points[1]
            .attributes
            .iter()
            .map(|kv| kv.value.as_ref().unwrap().value.clone().unwrap())
            .collect();
        assert_eq!(
            vals,
            [
                any_value::Value::StringValue("receive".into()),
                any_value::Value::IntValue(443),
                any_value::Value::StringValue("tcp".into()),
                any_value::Value::BoolValue(true),
            ]
        );

        let Some(metric::Data::Histogram(rtt)) = &sm.metrics[1].data else {
            panic!("rtt")
        };
        assert_eq!(
            rtt.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        let hp = &rtt.data_points[0];
        assert_eq!(hp.explicit_bounds, [0.001, 0.01]);
        assert_eq!(hp.bucket_counts, [1, 2, 1]);
        assert_eq!(hp.count, 4);
        assert_eq!(hp.sum, Some(0.0005 + 0.002 + 0.003 + 0.5));
        assert_eq!((hp.min, hp.max), (Some(0.0005), Some(0.5)));
        assert_eq!(hp.start_time_unix_nano, 1_000_000_000);

        let Some(metric::Data::Gauge(var)) = &sm.metrics[2].data else {
            panic!("variance")
        };
        assert_eq!(
            var.data_points[0].value,
            Some(number_data_point::Value::AsDouble(0.0015))
        );
        assert_eq!(var.data_points[0].start_time_unix_nano, 0);

        let sb = &rms[1].scope_metrics[0];
        assert_eq!(sb.metrics.len(), 1);
        // An UpDownCounter: cumulative and non-monotonic whatever the
        // exporter's temporality, carrying the current count.
        let Some(metric::Data::Sum(active)) = &sb.metrics[0].data else {
            panic!("active")
        };
        assert!(!active.is_monotonic);
        assert_eq!(
            active.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(int(&active.data_points[0]), 3);
        assert_eq!(sb.metrics[0].description, TCP_ACTIVE.description());
        assert_eq!(request_points(&e.request), 5);
    }

    #[test]
    fn mismatched_value_is_counted_not_encoded() {
        let r = res("x");
        let mut batch = MetricBatch::new(0, 1);
        batch
            .points
            .push(point(&r, TCP_RTT, Attrs::new(), PointValue::Int(1)));
        let e = encode(&batch);
        assert_eq!((e.points, e.skipped), (0, 1));
        assert!(e.request.resource_metrics.is_empty());
    }

    #[test]
    fn empty_histogram_has_no_min_max() {
        let r = res("x");
        let mut batch = MetricBatch::new(0, 1);
        let h = Histogram::new(Arc::from(&[1.0][..]));
        batch
            .points
            .push(point(&r, TCP_RTT, Attrs::new(), PointValue::Histogram(h)));
        let e = encode(&batch);
        let Some(metric::Data::Histogram(rtt)) =
            &e.request.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("rtt")
        };
        assert_eq!(
            (rtt.data_points[0].min, rtt.data_points[0].max),
            (None, None)
        );
        assert_eq!(rtt.data_points[0].bucket_counts, [0, 0]);
    }
}

/// Bytes a length-delimited field can add besides its payload: one tag byte
/// (field numbers below 16) and a varint length of at most 10 bytes.
const FIELD: usize = 11;

/// Splits `req` into requests whose encoded size is at most `max` bytes:
/// whole Resources while they fit, then metrics of one Resource (repeating
/// its Resource and scope), then data points of one metric. Only a single
/// data point larger than `max` can exceed it; it travels alone. Points are
/// neither lost nor duplicated, and keep their order.
pub fn split(req: ExportMetricsServiceRequest, max: usize) -> Vec<ExportMetricsServiceRequest> {
    use prost::Message;
    if req.encoded_len() <= max {
        return vec![req];
    }
    let pieces = req
        .resource_metrics
        .into_iter()
        .flat_map(|rm| split_resource(rm, max));
    chunk(pieces, max)
        .into_iter()
        .map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
        .collect()
}

/// Groups messages into runs whose summed field size fits `budget` (a run
/// holds at least one message).
fn chunk<T: prost::Message>(items: impl IntoIterator<Item = T>, budget: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut cur_len = 0;
    for item in items {
        let len = FIELD + item.encoded_len();
        if !cur.is_empty() && cur_len + len > budget {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        cur.push(item);
        cur_len += len;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn split_resource(rm: ResourceMetrics, max: usize) -> Vec<ResourceMetrics> {
    use prost::Message;
    if FIELD + rm.encoded_len() <= max {
        return vec![rm];
    }
    let mut out = Vec::new();
    for sm in rm.scope_metrics {
        let rm_shell = ResourceMetrics {
            resource: rm.resource.clone(),
            scope_metrics: Vec::new(),
            schema_url: rm.schema_url.clone(),
        };
        let sm_shell = ScopeMetrics {
            scope: sm.scope.clone(),
            metrics: Vec::new(),
            schema_url: sm.schema_url.clone(),
        };
        let overhead = 2 * FIELD + rm_shell.encoded_len() + FIELD + sm_shell.encoded_len();
        let budget = max.saturating_sub(overhead).max(1);
        let metrics = sm.metrics.into_iter().flat_map(|m| split_metric(m, budget));
        for run in chunk(metrics, budget) {
            let mut piece = rm_shell.clone();
            let mut s = sm_shell.clone();
            s.metrics = run;
            piece.scope_metrics.push(s);
            out.push(piece);
        }
    }
    out
}

fn split_metric(m: Metric, budget: usize) -> Vec<Metric> {
    use prost::Message;
    if FIELD + m.encoded_len() <= budget {
        return vec![m];
    }
    let mut shell = m.clone();
    let dp_budget = |shell: &Metric| {
        budget
            .saturating_sub(2 * FIELD + shell.encoded_len())
            .max(1)
    };
    macro_rules! split_points {
        ($variant:ident, $inner:expr) => {{
            let mut inner = $inner;
            let points = std::mem::take(&mut inner.data_points);
            shell.data = Some(metric::Data::$variant(inner.clone()));
            let b = dp_budget(&shell);
            chunk(points, b)
                .into_iter()
                .map(|run| {
                    let mut piece = shell.clone();
                    let mut i = inner.clone();
                    i.data_points = run;
                    piece.data = Some(metric::Data::$variant(i));
                    piece
                })
                .collect()
        }};
    }
    match m.data {
        Some(metric::Data::Sum(s)) => split_points!(Sum, s),
        Some(metric::Data::Gauge(g)) => split_points!(Gauge, g),
        Some(metric::Data::Histogram(h)) => split_points!(Histogram, h),
        // The encoder never produces other kinds; send them whole.
        _ => vec![m],
    }
}

#[cfg(test)]
mod split_tests {
    use flowscope_model::metrics::{FLOW_IO, TCP_RTT};
    use prost::Message;

    use super::*;

    #[test]
    fn split_respects_the_limit_and_keeps_every_point_in_order() {
        let mut batch = MetricBatch::new(1, 2);
        for r in 0..3 {
            let res = Arc::new(Attrs::new().with("service.name", format!("svc-{r}")));
            for i in 0..400i64 {
                batch.points.push(Point {
                    resource: res.clone(),
                    metric: if i % 2 == 0 { FLOW_IO } else { TCP_RTT },
                    attrs: Attrs::new().with("network.peer.port", i),
                    value: if i % 2 == 0 {
                        PointValue::Int(i as u64)
                    } else {
                        let mut h = Histogram::new(Arc::from(&[0.1, 1.0][..]));
                        h.record(i as f64);
                        PointValue::Histogram(h)
                    },
                });
            }
        }
        let whole = encode(&batch).request;
        let total = whole.encoded_len();
        let parts = split(whole.clone(), 4096);
        assert!(
            parts.len() >= total / 4096,
            "{} parts for {total} bytes",
            parts.len()
        );
        for p in &parts {
            assert!(p.encoded_len() <= 4096, "{}", p.encoded_len());
        }
        assert_eq!(parts.iter().map(request_points).sum::<u64>(), 1200);
        // Same points, same order: flatten (resource, metric, attrs) of both.
        let flat = |reqs: &[ExportMetricsServiceRequest]| -> Vec<(String, String, Vec<KeyValue>)> {
            let mut v = Vec::new();
            for r in reqs {
                for rm in &r.resource_metrics {
                    let res = format!("{:?}", rm.resource);
                    for m in &rm.scope_metrics[0].metrics {
                        let attrs: Vec<Vec<KeyValue>> = match &m.data {
                            Some(metric::Data::Sum(s)) => {
                                s.data_points.iter().map(|p| p.attributes.clone()).collect()
                            }
                            Some(metric::Data::Histogram(h)) => {
                                h.data_points.iter().map(|p| p.attributes.clone()).collect()
                            }
                            _ => Vec::new(),
                        };
                        for a in attrs {
                            v.push((res.clone(), m.name.clone(), a));
                        }
                    }
                }
            }
            v
        };
        let a = flat(std::slice::from_ref(&whole));
        assert_eq!(a.len(), 1200);
        assert_eq!(a, flat(&parts));
        // Under the limit nothing changes.
        assert_eq!(split(whole.clone(), total), vec![whole]);
    }
}
