//! Self-telemetry: the agent's own metrics (`flowscope.*`), made with the
//! OpenTelemetry Rust SDK.
//!
//! Components never name a metric or an attribute here: they emit typed
//! events ([`crate::internal_events`]), each of which logs and records on
//! an SDK instrument. The instruments belong to one `SdkMeterProvider`
//! with two readers:
//!
//! - the *interval* reader: delta temporality for counters, cumulative for
//!   the UpDownCounters (the OpenTelemetry "delta" preference), so each
//!   interval reports what counters added and the level of every
//!   UpDownCounter. Once an interval the agent calls
//!   [`Telemetry::collect_interval`], which collects its `ResourceMetrics`
//!   and turns them into the model's [`Point`]s ([`points_of`]); they go
//!   through the same processors and exporters as the flows.
//! - the *totals* reader: cumulative, read on demand by
//!   [`Telemetry::total`], [`Telemetry::total_matching`] and
//!   [`Telemetry::level`] (health checks, tests, benchmarks).
//!
//! Counts that go up and down (flows tracked, queue size and capacity) are
//! SDK `UpDownCounter`s, exported as non-monotonic Sums as the contract
//! says. Their events report a level ("the queue holds 3"); [`Level`]
//! turns it into the `add` of the difference from the last level of the
//! same attribute set.
//!
//! The SDK's `ManualReader` does the collecting; a thin [`MetricReader`]
//! wrapper around it chooses the temporality per instrument kind and lets
//! the handle keep a reference to collect from (the SDK takes its readers
//! by value).
//!
//! The SDK carries only these metrics: flows are pre-aggregated per
//! interval with one Resource per workload, which the SDK's data types
//! cannot hold (see docs/architecture.md), so they stay on the hand-built
//! `opentelemetry-proto` path.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, MeterProvider as _, UpDownCounter};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, MeterProviderBuilder, Pipeline, SdkMeterProvider, Temporality,
};

use crate::attr::{Attrs, Value};
use crate::metrics::{MetricId, Point, PointValue};
use crate::names::{SCOPE_NAME, SELF_SERVICE_NAME, attr, metric, resource};

pub use crate::internal_events::InternalEvent;

pub const EVENTS_RECEIVED: MetricId = MetricId::sum(&metric::EVENTS_RECEIVED);
pub const EVENTS_LOST: MetricId = MetricId::sum(&metric::EVENTS_LOST);
pub const FLOWS_TRACKED: MetricId = MetricId::up_down_counter(&metric::FLOWS_TRACKED);
pub const FLOWS_OVERFLOW: MetricId = MetricId::sum(&metric::FLOWS_OVERFLOW);
pub const EXPORTER_SENT: MetricId = MetricId::sum(&metric::EXPORTER_SENT);
pub const EXPORTER_FAILED: MetricId = MetricId::sum(&metric::EXPORTER_FAILED);
pub const EXPORTER_QUEUE_SIZE: MetricId = MetricId::up_down_counter(&metric::EXPORTER_QUEUE_SIZE);
pub const EXPORTER_QUEUE_CAPACITY: MetricId =
    MetricId::up_down_counter(&metric::EXPORTER_QUEUE_CAPACITY);
pub const SERVER_REFUSED: MetricId = MetricId::sum(&metric::SERVER_REFUSED);
pub const EXPORTER_RETRIES: MetricId = MetricId::sum(&metric::EXPORTER_RETRIES);

/// A component as its self-telemetry names it: `otel.component.name` is
/// its config id (`otlp/backend`), `otel.component.type` what it is.
///
/// The type is the registry's value where one applies (an `otlp` exporter
/// is an `otlp_grpc_metric_exporter`, see [`crate::names::value`]); for
/// the others the registry asks for the implementation's own type name:
/// the sink's Rust type path, spelt as a constant in
/// [`crate::names::value`].
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    id: Arc<str>,
    kind: &'static str,
    /// The two attributes, made once: every queue push and pop emits them
    /// (cloning shares the id, it does not copy it).
    key_values: [KeyValue; 2],
}

impl Component {
    pub fn new(kind: &'static str, id: impl Into<String>) -> Self {
        let id: Arc<str> = Arc::from(id.into());
        let key_values = [
            KeyValue::new(attr::COMPONENT_TYPE, kind),
            KeyValue::new(
                attr::COMPONENT_NAME,
                opentelemetry::StringValue::from(id.clone()),
            ),
        ];
        Self {
            id,
            kind,
            key_values,
        }
    }

    /// The config id (`otlp/backend`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `otel.component.type` value.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// `otel.component.type` and `otel.component.name`.
    pub fn attrs(&self) -> Attrs {
        Attrs::new()
            .with(attr::COMPONENT_TYPE, self.kind)
            .with(attr::COMPONENT_NAME, self.id.to_string())
    }

    pub(crate) fn key_values(&self) -> &[KeyValue; 2] {
        &self.key_values
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// Every self-telemetry metric, so that what the SDK collects maps back to
/// the contract's [`MetricId`] (name, unit, kind).
pub const SELF_METRICS: [MetricId; 10] = [
    EVENTS_RECEIVED,
    EVENTS_LOST,
    FLOWS_TRACKED,
    FLOWS_OVERFLOW,
    EXPORTER_SENT,
    EXPORTER_FAILED,
    EXPORTER_QUEUE_SIZE,
    EXPORTER_QUEUE_CAPACITY,
    SERVER_REFUSED,
    EXPORTER_RETRIES,
];

/// The instruments the typed events record on.
pub(crate) struct Instruments {
    pub(crate) events_received: Counter<u64>,
    pub(crate) events_lost: Counter<u64>,
    pub(crate) flows_tracked: Level,
    pub(crate) flows_overflow: Counter<u64>,
    pub(crate) exporter_sent: Counter<u64>,
    pub(crate) exporter_failed: Counter<u64>,
    pub(crate) exporter_queue_size: Level,
    pub(crate) exporter_queue_capacity: Level,
    pub(crate) server_refused: Counter<u64>,
    pub(crate) exporter_retries: Counter<u64>,
}

/// An `UpDownCounter` fed with levels: [`Level::set`] adds the difference
/// between the new level and the last one set for the same component, so
/// the SDK's sum is always the last level.
pub(crate) struct Level {
    counter: UpDownCounter<i64>,
    /// The last level per component id (`""` for the agent-wide ones).
    last: Mutex<HashMap<String, i64>>,
}

impl Level {
    fn new(counter: UpDownCounter<i64>) -> Self {
        Level {
            counter,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the level of the series `attrs`, which `component` names.
    pub(crate) fn set(&self, component: &str, level: usize, attrs: &[KeyValue]) {
        let level = i64::try_from(level).unwrap_or(i64::MAX);
        // A poisoned lock only means another thread panicked mid-update;
        // the map of numbers is still usable.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // The component's entry exists after its first level: no
        // allocation on the later ones.
        let before = match last.get_mut(component) {
            Some(l) => Some(std::mem::replace(l, level)),
            None => last.insert(component.to_owned(), level),
        };
        if before != Some(level) {
            self.counter
                .add(level.saturating_sub(before.unwrap_or(0)), attrs);
        }
    }
}

/// A `ManualReader` shared between the provider (which registers it) and
/// the handle (which collects from it), with its own temporality choice.
#[derive(Clone)]
struct SharedReader {
    inner: Arc<ManualReader>,
    temporality: fn(InstrumentKind) -> Temporality,
}

impl fmt::Debug for SharedReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flowscope::SharedReader")
    }
}

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.inner.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.inner.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        (self.temporality)(kind)
    }
}

/// Once an interval: what counters added since the last collection, the
/// level UpDownCounters are at now.
fn interval_temporality(kind: InstrumentKind) -> Temporality {
    match kind {
        InstrumentKind::Counter | InstrumentKind::Histogram => Temporality::Delta,
        _ => Temporality::Cumulative,
    }
}

fn cumulative(_: InstrumentKind) -> Temporality {
    Temporality::Cumulative
}

struct Inner {
    provider: SdkMeterProvider,
    interval: SharedReader,
    totals: SharedReader,
    /// More interval readers, one per `service.telemetry` reader: each
    /// sees every delta once, whoever else collects.
    extra: Vec<SharedReader>,
    resource: Arc<Attrs>,
    pub(crate) instruments: Instruments,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Shared handle to the agent's self-telemetry. Cheap to clone; every clone
/// records into the same provider.
#[derive(Clone)]
pub struct Telemetry(Arc<Inner>);

/// A [`Telemetry`] that may be gone ([`Telemetry::downgrade`]).
#[derive(Clone, Default)]
pub struct WeakTelemetry(Weak<Inner>);

impl WeakTelemetry {
    /// The telemetry, while it lives.
    pub fn upgrade(&self) -> Option<Telemetry> {
        self.0.upgrade().map(Telemetry)
    }
}

impl fmt::Debug for WeakTelemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakTelemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("resource", &self.0.resource)
            .finish()
    }
}

impl Telemetry {
    /// Self-telemetry under a Resource with only `service.name=flowscope`
    /// (tests, benchmarks). The agent uses [`Telemetry::with_resource`].
    pub fn new() -> Self {
        Self::with_resource(&Attrs::new().with(resource::SERVICE_NAME, SELF_SERVICE_NAME))
    }

    /// Self-telemetry whose points carry `resource`.
    pub fn with_resource(resource: &Attrs) -> Self {
        Self::with_readers(resource, 0)
    }

    /// As [`Telemetry::with_resource`], with `extra` more interval readers
    /// (collected with [`Telemetry::collect_reader`]), for the
    /// `service.telemetry` readers that send the agent's own metrics apart
    /// from the pipelines.
    pub fn with_readers(resource: &Attrs, extra: usize) -> Self {
        Self::with_sdk_readers(resource, extra, |b| b)
    }

    /// As [`Telemetry::with_readers`], and `add` registers more SDK readers
    /// on the provider: the `periodic` readers of `service.telemetry`, each
    /// an SDK `PeriodicReader` with the SDK's OTLP exporter, which collect
    /// and send on their own threads ([`Telemetry::force_flush`] sends what
    /// they hold).
    pub fn with_sdk_readers(
        resource: &Attrs,
        extra: usize,
        add: impl FnOnce(MeterProviderBuilder) -> MeterProviderBuilder,
    ) -> Self {
        let extra: Vec<SharedReader> = (0..extra)
            .map(|_| SharedReader {
                inner: Arc::new(ManualReader::builder().build()),
                temporality: interval_temporality,
            })
            .collect();
        let interval = SharedReader {
            inner: Arc::new(ManualReader::builder().build()),
            temporality: interval_temporality,
        };
        let totals = SharedReader {
            inner: Arc::new(ManualReader::builder().build()),
            temporality: cumulative,
        };
        let provider = SdkMeterProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_attributes(resource.iter().map(|(k, v)| {
                        KeyValue::new(
                            k.to_string(),
                            match v {
                                Value::Str(s) => opentelemetry::Value::from(s.to_string()),
                                Value::Int(i) => opentelemetry::Value::I64(*i),
                                Value::Bool(b) => opentelemetry::Value::Bool(*b),
                            },
                        )
                    }))
                    .build(),
            )
            .with_reader(interval.clone())
            .with_reader(totals.clone());
        let provider = add(extra.iter().fold(provider, |p, r| p.with_reader(r.clone()))).build();
        let meter = provider.meter_with_scope(
            InstrumentationScope::builder(SCOPE_NAME)
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let counter = |m: MetricId| meter.u64_counter(m.name()).with_unit(m.unit()).build();
        let level = |m: MetricId| {
            Level::new(
                meter
                    .i64_up_down_counter(m.name())
                    .with_unit(m.unit())
                    .build(),
            )
        };
        let instruments = Instruments {
            events_received: counter(EVENTS_RECEIVED),
            events_lost: counter(EVENTS_LOST),
            flows_tracked: level(FLOWS_TRACKED),
            flows_overflow: counter(FLOWS_OVERFLOW),
            exporter_sent: counter(EXPORTER_SENT),
            exporter_failed: counter(EXPORTER_FAILED),
            exporter_queue_size: level(EXPORTER_QUEUE_SIZE),
            exporter_queue_capacity: level(EXPORTER_QUEUE_CAPACITY),
            server_refused: counter(SERVER_REFUSED),
            exporter_retries: counter(EXPORTER_RETRIES),
        };
        Telemetry(Arc::new(Inner {
            provider,
            interval,
            totals,
            extra,
            resource: Arc::new(resource.clone()),
            instruments,
        }))
    }

    /// Makes every SDK reader send what it holds (the `periodic` readers of
    /// [`Telemetry::with_sdk_readers`]). Blocking: it waits for the sends.
    pub fn force_flush(&self) {
        if let Err(e) = self.0.provider.force_flush() {
            tracing::warn!(error = %e, "flushing the agent's own metrics failed");
        }
    }

    /// A handle that does not keep the telemetry alive (for what the
    /// provider itself owns, such as an SDK exporter counting its sends).
    pub fn downgrade(&self) -> WeakTelemetry {
        WeakTelemetry(Arc::downgrade(&self.0))
    }

    /// Records one typed event (it logs and counts itself).
    pub fn emit(&self, event: impl InternalEvent) {
        event.emit(self);
    }

    pub(crate) fn instruments(&self) -> &Instruments {
        &self.0.instruments
    }

    /// The Resource of the agent's own points.
    pub fn resource(&self) -> &Arc<Attrs> {
        &self.0.resource
    }

    /// Collects the interval reader: counter deltas since the last call and
    /// every UpDownCounter's current level, as points under [`Telemetry::resource`].
    pub fn collect_interval(&self) -> Vec<Point> {
        let mut rm = ResourceMetrics::default();
        match self.0.interval.collect(&mut rm) {
            Ok(()) => points_of(&rm),
            Err(e) => {
                tracing::warn!(error = %e, "collecting self-telemetry failed");
                Vec::new()
            }
        }
    }

    /// Collects extra interval reader `i` (see [`Telemetry::with_readers`]):
    /// counter deltas since its last collection and every level. Empty for
    /// a reader that does not exist.
    pub fn collect_reader(&self, i: usize) -> Vec<Point> {
        let Some(reader) = self.0.extra.get(i) else {
            return Vec::new();
        };
        let mut rm = ResourceMetrics::default();
        match reader.collect(&mut rm) {
            Ok(()) => points_of(&rm),
            Err(e) => {
                tracing::warn!(error = %e, "collecting self-telemetry failed");
                Vec::new()
            }
        }
    }

    fn totals(&self) -> Vec<Point> {
        let mut rm = ResourceMetrics::default();
        match self.0.totals.collect(&mut rm) {
            Ok(()) => points_of(&rm),
            Err(_) => Vec::new(),
        }
    }

    /// The running total of counter `metric` with exactly `attrs` since
    /// start.
    pub fn total(&self, metric: MetricId, attrs: &Attrs) -> u64 {
        self.totals()
            .into_iter()
            .filter(|p| p.metric == metric && p.attrs == *attrs)
            .map(|p| int(&p.value))
            .sum()
    }

    /// Sum over every attribute set of counter `metric` whose attributes
    /// include all of `filter`.
    pub fn total_matching(&self, metric: MetricId, filter: &Attrs) -> u64 {
        self.totals()
            .into_iter()
            .filter(|p| p.metric == metric && filter.iter().all(|(k, v)| p.attrs.get(k) == Some(v)))
            .map(|p| int(&p.value))
            .sum()
    }

    /// The current level of UpDownCounter `metric` with exactly `attrs`
    /// (`None` if it was never set).
    pub fn level(&self, metric: MetricId, attrs: &Attrs) -> Option<i64> {
        let mut rm = ResourceMetrics::default();
        self.0.totals.collect(&mut rm).ok()?;
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == metric.name()) {
                if let AggregatedMetrics::I64(MetricData::Sum(s)) = m.data() {
                    for dp in s.data_points() {
                        if attrs_of(dp.attributes()) == *attrs {
                            return Some(dp.value());
                        }
                    }
                }
            }
        }
        None
    }
}

fn int(v: &PointValue) -> u64 {
    match v {
        PointValue::Int(n) => *n,
        _ => 0,
    }
}

fn value_of(v: &opentelemetry::Value) -> Value {
    match v {
        opentelemetry::Value::Bool(b) => Value::Bool(*b),
        opentelemetry::Value::I64(i) => Value::Int(*i),
        opentelemetry::Value::String(s) => Value::from(s.as_str()),
        other => Value::from(other.to_string()),
    }
}

fn attrs_of<'a>(kvs: impl Iterator<Item = &'a KeyValue>) -> Attrs {
    kvs.map(|kv| (Arc::<str>::from(kv.key.as_str()), value_of(&kv.value)))
        .collect()
}

/// The model's points for what a reader collected: each SDK metric maps back
/// to its [`MetricId`] in [`SELF_METRICS`] by name (metrics of other names
/// are skipped), each data point keeps its attributes, and every point
/// carries the collected Resource. Counters become integer sums (deltas or
/// totals, as the reader's temporality says), UpDownCounters their level
/// (negative values as 0, as the model's integers are unsigned).
pub fn points_of(rm: &ResourceMetrics) -> Vec<Point> {
    let resource: Arc<Attrs> = Arc::new(
        rm.resource()
            .iter()
            .map(|(k, v)| (Arc::<str>::from(k.as_str()), value_of(v)))
            .collect(),
    );
    let mut out = Vec::new();
    for sm in rm.scope_metrics() {
        for m in sm.metrics() {
            let Some(id) = SELF_METRICS.iter().find(|id| id.name() == m.name()) else {
                tracing::debug!(metric = m.name(), "self-telemetry metric without an id");
                continue;
            };
            let mut push = |attrs: Attrs, value: PointValue| {
                out.push(Point {
                    resource: resource.clone(),
                    metric: *id,
                    attrs,
                    value,
                })
            };
            match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    for dp in s.data_points() {
                        push(attrs_of(dp.attributes()), PointValue::Int(dp.value()));
                    }
                }
                AggregatedMetrics::I64(MetricData::Sum(s)) => {
                    for dp in s.data_points() {
                        push(
                            attrs_of(dp.attributes()),
                            PointValue::Int(dp.value().max(0) as u64),
                        );
                    }
                }
                other => {
                    tracing::debug!(metric = m.name(), data = ?std::mem::discriminant(other), "self-telemetry data kind not converted");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal_events::{EventsLost, ExporterQueue, LossReason, Source};
    use crate::names::{attr, value};

    #[test]
    fn interval_reader_reports_exact_deltas_once() {
        let t = Telemetry::new();
        t.emit(EventsLost::new(Source::EbpfTcp, LossReason::RingbufFull, 3));
        let p = t.collect_interval();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].metric, EVENTS_LOST);
        assert_eq!(p[0].value, PointValue::Int(3));
        assert_eq!(
            p[0].attrs,
            Attrs::new()
                .with(attr::SOURCE, "ebpf.tcp")
                .with(attr::REASON, "ringbuf_full")
        );
        assert_eq!(
            p[0].resource.get_str(resource::SERVICE_NAME),
            Some(SELF_SERVICE_NAME)
        );
        assert!(t.collect_interval().is_empty(), "no change, no point");
        t.emit(EventsLost::new(Source::EbpfTcp, LossReason::RingbufFull, 2));
        // Zero counts record nothing at all.
        t.emit(EventsLost::new(Source::EbpfUdp, LossReason::MapFull, 0));
        let p = t.collect_interval();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].value, PointValue::Int(2));
        // The totals reader is independent of the interval reader.
        let f = Attrs::new().with(attr::SOURCE, "ebpf.tcp");
        assert_eq!(t.total_matching(EVENTS_LOST, &f), 5);
        assert_eq!(t.total_matching(EVENTS_LOST, &Attrs::new()), 5);
    }

    #[test]
    fn up_down_counters_report_their_level_every_interval() {
        let t = Telemetry::with_resource(&Attrs::new().with(resource::SERVICE_NAME, "agent-7"));
        let a = Component::new(value::COMPONENT_TYPE_OTLP_GRPC, "otlp/a");
        let b = Component::new(value::COMPONENT_TYPE_OTLP_HTTP, "otlp_http/b");
        t.emit(ExporterQueue {
            exporter: &a,
            size: 4,
        });
        let ex = a.attrs();
        assert_eq!(
            ex.get_str(attr::COMPONENT_TYPE),
            Some("otlp_grpc_metric_exporter")
        );
        for _ in 0..2 {
            let p = t.collect_interval();
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].metric, EXPORTER_QUEUE_SIZE);
            assert_eq!(p[0].value, PointValue::Int(4));
            assert_eq!(p[0].attrs, ex);
            assert_eq!(
                p[0].resource.get_str(resource::SERVICE_NAME),
                Some("agent-7")
            );
        }
        assert_eq!(t.level(EXPORTER_QUEUE_SIZE, &ex), Some(4));
        assert_eq!(t.level(EXPORTER_QUEUE_CAPACITY, &ex), None);
        // A lower level is a negative add: the sum is the new level, for
        // each component apart.
        t.emit(ExporterQueue {
            exporter: &a,
            size: 1,
        });
        t.emit(ExporterQueue {
            exporter: &b,
            size: 7,
        });
        t.emit(ExporterQueue {
            exporter: &a,
            size: 1,
        });
        assert_eq!(t.level(EXPORTER_QUEUE_SIZE, &ex), Some(1));
        assert_eq!(t.level(EXPORTER_QUEUE_SIZE, &b.attrs()), Some(7));
        let p = t.collect_interval();
        assert_eq!(p.len(), 2, "{p:?}");
        // Emitted as a non-monotonic sum, the contract's instrument.
        let mut rm = ResourceMetrics::default();
        t.0.totals.collect(&mut rm).unwrap();
        let m = rm
            .scope_metrics()
            .flat_map(|sm| sm.metrics())
            .find(|m| m.name() == EXPORTER_QUEUE_SIZE.name())
            .unwrap();
        let AggregatedMetrics::I64(MetricData::Sum(s)) = m.data() else {
            panic!("not an i64 sum");
        };
        assert!(!s.is_monotonic());
    }
}
