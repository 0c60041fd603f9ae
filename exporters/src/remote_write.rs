//! `prometheusremotewrite`: pushes the metrics to Prometheus-compatible
//! storage (Prometheus with `--web.enable-remote-write-receiver`, Mimir,
//! Cortex, Thanos Receive, VictoriaMetrics) with the remote-write 1.0
//! protocol: a protobuf `prometheus.WriteRequest`, snappy block-compressed,
//! `POST`ed with `Content-Encoding: snappy`, `Content-Type:
//! application/x-protobuf` and `X-Prometheus-Remote-Write-Version: 0.1.0`.
//!
//! Names and labels are the `prometheus` exporter's translation
//! ([`crate::prometheus::metric_name`], [`series_labels`]), plus
//! `__name__` and the configured `external_labels` (a label the series
//! already has keeps its value). A histogram becomes `_bucket` series (the
//! cumulative count per `le`, `+Inf` last), `_sum` and `_count`; a gauge or
//! an UpDownCounter one gauge series without `_total`; with `target_info`
//! enabled every Resource of a request also gets one `target_info` series
//! (value 1) with its attributes.
//!
//! Sums and histograms are sent as running totals (Prometheus counters):
//! each batch's deltas are folded into [`Cumulative`] state once, when the
//! batch is submitted, and the batch is encoded and compressed right away.
//! The queue (and its directory, with `sending_queue.storage`) holds those
//! finished bodies: a retry, or a restart that finds the batch on disk,
//! sends the very same bytes, never a second fold. Because every body
//! carries totals, a batch that is dropped (full queue) or refused costs a
//! sample, not the counts: the next one carries them.
//!
//! Delivery is the OTLP exporters' ([`crate::otlp::deliver`]): 5xx and 429
//! answers, timeouts and connection errors are retried with the
//! `retry_on_failure` backoff, honouring `Retry-After`; any other status
//! fails at once and its points are counted as
//! `flowscope.exporter.failed{error.type=<status>}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use flowscope_model::internal_events::ExporterFailed;
use flowscope_model::telemetry::Component;
use flowscope_model::{Attrs, Kind, MetricBatch, MetricId, Point, PointValue, Telemetry};
use flowscope_otel_config::exporters::{PrometheusRemoteWriteExporterConfig, RetryConfig};
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use prost::Message;
use tokio::time::Instant;

use crate::http::{HttpError, Poster, refused};
use crate::otlp::{Attempt, Transport, deliver};
use crate::prometheus::{self, Options, metric_name, number, series_labels, target_info_labels};
use crate::queue::{Codec, Item};
use crate::settings::DEFAULT_SERIES_IDLE;
use crate::temporality::Cumulative;
use crate::{HealthCell, Outcome, Sink};

/// `prometheus.WriteRequest` of remote write 1.0 (metadata, field 3, is
/// not sent).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, then samples.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: a value at a Unix time in milliseconds.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The protocol version header's value (remote write 1.0).
pub const PROTOCOL_VERSION: &str = "0.1.0";

/// How points become series.
#[derive(Clone, Debug)]
pub struct Translation {
    /// Name options shared with the `prometheus` exporter
    /// (`resource_labels` is `resource_to_telemetry_conversion`).
    pub names: Options,
    /// One `target_info` series per Resource.
    pub target_info: bool,
    /// Added to every series that lacks the label.
    pub external_labels: BTreeMap<String, String>,
}

impl From<&PrometheusRemoteWriteExporterConfig> for Translation {
    fn from(c: &PrometheusRemoteWriteExporterConfig) -> Self {
        Self {
            names: Options {
                namespace: c.namespace.clone(),
                add_metric_suffixes: c.add_metric_suffixes,
                resource_labels: c.resource_to_telemetry_conversion.enabled,
            },
            target_info: c.target_info.enabled,
            external_labels: c.external_labels.clone(),
        }
    }
}

/// One request body, ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Data points it carries (a histogram point is one, whatever its
    /// series count).
    pub points: u64,
    /// The snappy-compressed `WriteRequest`.
    pub body: Bytes,
}

/// A batch translated, split and compressed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded {
    pub requests: Vec<Request>,
    /// Data points encoded.
    pub points: u64,
    /// Points whose value does not fit their instrument (not sent).
    pub skipped: u64,
}

impl Item for Encoded {
    fn points(&self) -> u64 {
        self.points
    }
}

/// The series of one point, appended to `out`; false if its value does
/// not fit its instrument.
fn point_series(
    p: &Point,
    name: &str,
    timestamp: i64,
    t: &Translation,
    out: &mut Vec<TimeSeries>,
) -> bool {
    let mut labels = series_labels(&p.resource, &p.attrs, &t.names);
    for (k, v) in &t.external_labels {
        if !labels.contains_key(k) {
            labels.insert(k.clone(), v.clone());
        }
    }
    let series = |suffix: &str, le: Option<&str>, value: f64| {
        let mut l: Vec<Label> = Vec::with_capacity(labels.len() + 2);
        let full = format!("{name}{suffix}");
        let mut name_done = false;
        let mut le_done = le.is_none();
        // Labels sorted by name: `__name__` and `le` go in their place;
        // they replace a label of the same name.
        for (k, v) in &labels {
            if !name_done && k.as_str() >= "__name__" {
                l.push(Label {
                    name: "__name__".into(),
                    value: full.clone(),
                });
                name_done = true;
            }
            if let Some(le) = le
                && !le_done
                && k.as_str() >= "le"
            {
                l.push(Label {
                    name: "le".into(),
                    value: le.to_string(),
                });
                le_done = true;
            }
            if k == "__name__" || (le.is_some() && k == "le") {
                continue;
            }
            l.push(Label {
                name: k.clone(),
                value: v.clone(),
            });
        }
        if !name_done {
            l.push(Label {
                name: "__name__".into(),
                value: full,
            });
        }
        if let (Some(le), false) = (le, le_done) {
            l.push(Label {
                name: "le".into(),
                value: le.to_string(),
            });
        }
        TimeSeries {
            labels: l,
            samples: vec![Sample { value, timestamp }],
        }
    };
    match (&p.value, p.metric.kind) {
        (PointValue::Histogram(h), Kind::Histogram) => {
            let mut cum = 0u64;
            for (i, c) in h.counts.iter().enumerate() {
                cum += c;
                let le = h
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| number(*b));
                out.push(series("_bucket", Some(&le), cum as f64));
            }
            out.push(series("_sum", None, h.sum));
            out.push(series("_count", None, h.count as f64));
            true
        }
        (PointValue::Histogram(_), _) | (_, Kind::Histogram) => false,
        (v, _) => {
            out.push(series("", None, v.as_f64()));
            true
        }
    }
}

/// The `target_info` series of a Resource.
fn target_info(res: &Attrs, timestamp: i64, t: &Translation) -> TimeSeries {
    let mut l = target_info_labels(res);
    for (k, v) in &t.external_labels {
        l.entry(k.clone()).or_insert_with(|| v.clone());
    }
    l.insert("__name__".into(), "target_info".into());
    TimeSeries {
        labels: l
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        samples: vec![Sample {
            value: 1.0,
            timestamp,
        }],
    }
}

/// Compresses a serialized `WriteRequest` in the snappy block format.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    // Only inputs above ~4 GiB fail, far past any request size limit.
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .unwrap_or_default()
}

/// Decodes a request body (the receiving side; tests).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

/// Encodes cumulative points observed at `time_unix_nanos` into requests
/// whose uncompressed size stays within `max_bytes` (a point's series are
/// never split; a single point larger than that goes alone).
pub fn encode<'a>(
    points: impl IntoIterator<Item = &'a Point>,
    time_unix_nanos: u64,
    t: &Translation,
    max_bytes: usize,
) -> Encoded {
    let timestamp = i64::try_from(time_unix_nanos / 1_000_000).unwrap_or(i64::MAX);
    let mut out = Encoded::default();
    let mut current = WriteRequest::default();
    let mut size = 0usize;
    let mut points_in = 0u64;
    // Resources whose `target_info` the current request already has.
    let mut with_info: HashSet<&Attrs> = HashSet::new();
    // Metric names, translated once per metric.
    let mut names: HashMap<MetricId, String> = HashMap::new();
    let mut group = Vec::new();
    let flush = |req: &mut WriteRequest, points_in: &mut u64, out: &mut Encoded| {
        if req.timeseries.is_empty() {
            return;
        }
        let raw = std::mem::take(req).encode_to_vec();
        out.requests.push(Request {
            points: *points_in,
            body: Bytes::from(compress(&raw)),
        });
        *points_in = 0;
    };
    for p in points {
        group.clear();
        let name = names
            .entry(p.metric)
            .or_insert_with(|| metric_name(p.metric, &t.names));
        if !point_series(p, name, timestamp, t, &mut group) {
            out.skipped += 1;
            continue;
        }
        let new_resource = t.target_info && !with_info.contains(&p.resource.as_ref());
        if new_resource {
            group.push(target_info(&p.resource, timestamp, t));
        }
        let mut add: usize = group
            .iter()
            .map(|ts| prost::encoding::message::encoded_len(1, ts))
            .sum();
        if size > 0 && size + add > max_bytes {
            flush(&mut current, &mut points_in, &mut out);
            size = 0;
            with_info.clear();
            if t.target_info && !new_resource {
                // The new request needs this Resource's target_info too.
                let info = target_info(&p.resource, timestamp, t);
                add += prost::encoding::message::encoded_len(1, &info);
                group.push(info);
            }
        }
        if t.target_info {
            with_info.insert(p.resource.as_ref());
        }
        size += add;
        current.timeseries.append(&mut group);
        points_in += 1;
        out.points += 1;
    }
    flush(&mut current, &mut points_in, &mut out);
    out
}

/// Queue records: per request, its point count and body length as varints,
/// then the body.
pub(crate) struct EncodedCodec;

impl Codec<Encoded> for EncodedCodec {
    fn encode(&self, item: &Encoded) -> Vec<u8> {
        let mut buf = Vec::new();
        for r in &item.requests {
            prost::encoding::encode_varint(r.points, &mut buf);
            prost::encoding::encode_varint(r.body.len() as u64, &mut buf);
            buf.extend_from_slice(&r.body);
        }
        buf
    }

    fn decode(&self, mut bytes: &[u8]) -> Result<Encoded, String> {
        let mut out = Encoded::default();
        while !bytes.is_empty() {
            let points = prost::encoding::decode_varint(&mut bytes).map_err(|e| e.to_string())?;
            let len = prost::encoding::decode_varint(&mut bytes).map_err(|e| e.to_string())?;
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            if len > bytes.len() {
                return Err(format!("body of {len} bytes, {} left", bytes.len()));
            }
            let (body, rest) = bytes.split_at(len);
            bytes = rest;
            out.points += points;
            out.requests.push(Request {
                points,
                body: Bytes::copy_from_slice(body),
            });
        }
        Ok(out)
    }
}

/// Folds batches into running totals and encodes them, at submit time.
pub(crate) struct Preparer {
    component: Component,
    telemetry: Telemetry,
    cumulative: Mutex<Cumulative>,
    translation: Translation,
    max_bytes: usize,
}

impl Preparer {
    pub(crate) fn new(
        component: Component,
        telemetry: Telemetry,
        c: &PrometheusRemoteWriteExporterConfig,
    ) -> Self {
        Self {
            component,
            telemetry,
            cumulative: Mutex::new(Cumulative::new(DEFAULT_SERIES_IDLE)),
            translation: Translation::from(c),
            max_bytes: c.max_batch_size_bytes,
        }
    }

    pub(crate) fn prepare(&self, batch: &MetricBatch) -> Option<Encoded> {
        let folded = self
            .cumulative
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(batch);
        let enc = encode(
            folded.iter().map(|(p, _)| p),
            batch.time_unix_nanos,
            &self.translation,
            self.max_bytes,
        );
        if enc.skipped > 0 {
            self.telemetry.emit(ExporterFailed {
                exporter: &self.component,
                error_type: "encode",
                count: enc.skipped,
            });
            tracing::warn!(exporter = %self.component, points = enc.skipped, "points whose value does not match their instrument were not exported");
        }
        (enc.points > 0).then_some(enc)
    }
}

/// `POST`s bodies to the remote-write endpoint.
pub(crate) struct RemoteWrite {
    poster: Poster,
}

fn endpoint(c: &PrometheusRemoteWriteExporterConfig) -> Result<Uri, HttpError> {
    c.endpoint
        .parse::<Uri>()
        .map_err(|_| HttpError::Endpoint(c.endpoint.clone()))
}

/// Everything [`RemoteWrite::new`] checks, without building the client.
pub(crate) fn check(c: &PrometheusRemoteWriteExporterConfig) -> Result<(), HttpError> {
    endpoint(c)?;
    crate::tls::connector(&c.tls, false)?;
    crate::http::header_map(&c.headers)?;
    Ok(())
}

impl RemoteWrite {
    pub(crate) fn new(c: &PrometheusRemoteWriteExporterConfig) -> Result<Self, HttpError> {
        Ok(Self {
            poster: Poster::new(endpoint(c)?, &c.tls, &c.headers, c.timeout)?,
        })
    }
}

/// What an answer means: 2xx accepted; 5xx and 429 retried (the spec's
/// rule); any other status refused for good.
pub(crate) fn classify(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Attempt {
    if status.is_success() {
        return Attempt::Accepted {
            rejected: 0,
            message: String::new(),
        };
    }
    let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    refused(status, headers, body, retryable)
}

impl Transport for RemoteWrite {
    type Request = Bytes;

    async fn send(&mut self, body: &Bytes) -> Attempt {
        let extra = [
            (CONTENT_ENCODING, HeaderValue::from_static("snappy")),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            ),
            (
                HeaderName::from_static("x-prometheus-remote-write-version"),
                HeaderValue::from_static(PROTOCOL_VERSION),
            ),
        ];
        match self.poster.post(body.clone(), &extra).await {
            Ok((status, headers, answer)) => classify(status, &headers, &answer),
            Err(attempt) => attempt,
        }
    }
}

/// The exporter's sink: every request of a batch in order, each retried
/// as [`deliver`] does.
pub(crate) struct RemoteWriteSink<T> {
    pub(crate) transport: T,
    pub(crate) retry: RetryConfig,
    pub(crate) health: Option<HealthCell>,
}

impl<T: Transport<Request = Bytes>> Sink for RemoteWriteSink<T> {
    type Item = Encoded;

    async fn export(&mut self, item: &Encoded) -> Outcome {
        let mut out = Outcome::default();
        let started = Instant::now();
        for r in &item.requests {
            deliver(
                &mut self.transport,
                &r.body,
                r.points,
                &self.retry,
                started,
                &mut out,
                self.health.as_ref(),
            )
            .await;
        }
        out
    }
}

/// The Prometheus names of a metric, as sent: a histogram's three series
/// names, else its one name.
pub fn series_names(m: flowscope_model::MetricId, o: &Options) -> Vec<String> {
    let name = prometheus::metric_name(m, o);
    match m.kind {
        Kind::Histogram => vec![
            format!("{name}_bucket"),
            format!("{name}_sum"),
            format!("{name}_count"),
        ],
        _ => vec![name],
    }
}

#[cfg(test)]
mod tests;

/// The metrics of the telemetry contract, in the order docs/telemetry.md
/// lists them: flows, DNS, Network Path, self-telemetry.
fn contract_metrics() -> Vec<flowscope_model::MetricId> {
    use flowscope_model::MetricId;
    use flowscope_model::names::path;
    let mut all = flowscope_model::metrics::FLOW_METRICS.to_vec();
    all.push(flowscope_model::metrics::DNS_DURATION);
    all.extend([
        MetricId::gauge(path::REACHABLE),
        MetricId::gauge(path::HOPS),
        MetricId::histogram(path::RTT),
        MetricId::sum(path::PROBES_SENT),
        MetricId::sum(path::PROBES_LOST),
        MetricId::gauge(path::JITTER),
        MetricId::histogram(path::HOP_RTT),
        MetricId::sum(path::HOP_PROBES_SENT),
        MetricId::sum(path::HOP_PROBES_LOST),
    ]);
    all.extend(flowscope_model::telemetry::SELF_METRICS);
    all
}

/// The data-point attribute keys of the contract.
const CONTRACT_KEYS: &[&str] = {
    use flowscope_model::names::{attr, k8s, nat, path};
    &[
        attr::NETWORK_TRANSPORT,
        attr::NETWORK_TYPE,
        attr::PEER_ADDRESS,
        attr::PEER_PORT,
        attr::LOCAL_PORT,
        attr::IO_DIRECTION,
        attr::PEER_SERVICE_NAME,
        k8s::PEER_SERVICE_NAMESPACE,
        attr::ERROR_TYPE,
        attr::FLOW_ROLE,
        attr::PEER_DOMAIN,
        attr::PEER_CLOUD_PROVIDER,
        attr::PEER_CLOUD_REGION,
        attr::PEER_CLOUD_SERVICE,
        attr::PEER_TAG_PREFIX,
        nat::PEER_NAT_ADDRESS,
        nat::PEER_NAT_PORT,
        k8s::PEER_POD_NAME,
        k8s::PEER_NAMESPACE_NAME,
        attr::LOCALITY,
        attr::OVERFLOW,
        attr::DNS_QUESTION_NAME,
        attr::DNS_QUESTION_TYPE,
        attr::DNS_RESPONSE_CODE,
        attr::SERVER_ADDRESS,
        path::SERVER_PORT,
        path::PROTOCOL,
        path::TEST,
        path::HOP_INDEX,
        path::HOP_ADDRESS,
        attr::SOURCE,
        attr::REASON,
        attr::METRIC,
        attr::COMPONENT_TYPE,
        attr::COMPONENT_NAME,
    ]
};

/// The "Fleet storage names" tables of docs/telemetry.md: what every
/// contract metric and attribute is called once the `prometheus` or
/// `prometheusremotewrite` exporter has translated it (default settings).
pub fn fleet_storage_table() -> String {
    use std::fmt::Write as _;
    let o = Options {
        namespace: None,
        add_metric_suffixes: true,
        resource_labels: false,
    };
    let mut s =
        String::from("| OTLP name | instrument | unit | Prometheus name(s) |\n|---|---|---|---|\n");
    for m in contract_metrics() {
        let kind = match m.kind {
            Kind::Sum => "Sum (counter)",
            Kind::UpDownCounter => "UpDownCounter (gauge)",
            Kind::Gauge => "Gauge",
            Kind::Histogram => "Histogram",
        };
        let names: Vec<String> = series_names(m, &o)
            .iter()
            .map(|n| format!("`{n}`"))
            .collect();
        let _ = writeln!(
            s,
            "| `{}` | {kind} | `{}` | {} |",
            m.name,
            m.unit,
            names.join(", ")
        );
    }
    s.push_str("\n| attribute key | label |\n|---|---|\n");
    for k in CONTRACT_KEYS {
        let (key, label) = match k.strip_suffix('.') {
            Some(prefix) => (
                format!("{k}<key>"),
                format!("{}_<key>", prometheus::sanitize(prefix, false)),
            ),
            None => (k.to_string(), prometheus::sanitize(k, false)),
        };
        let _ = writeln!(s, "| `{key}` | `{label}` |");
    }
    s.push_str(
        "| (every series) | `otel_scope_name` = `flowscope`, `otel_scope_version` |\n\
         | (histogram buckets) | `le` |\n",
    );
    s.push_str("\n| Resource attribute | label |\n|---|---|\n");
    s.push_str(
        "| `service.name`, `service.namespace` | `job` = `<service.namespace>/<service.name>` (or `<service.name>`) |\n\
         | `service.instance.id` | `instance` |\n",
    );
    let r = {
        use flowscope_model::names::resource as r;
        [
            r::SERVICE_NAME,
            r::SERVICE_NAMESPACE,
            r::SERVICE_VERSION,
            r::HOST_NAME,
            r::HOST_ID,
            r::OS_TYPE,
            r::PROCESS_PID,
            r::PROCESS_EXECUTABLE_NAME,
            r::PROCESS_COMMAND,
            r::PROCESS_COMMAND_LINE,
            r::CONTAINER_ID,
            r::CONTAINER_NAME,
            r::K8S_NAMESPACE_NAME,
            r::K8S_POD_NAME,
            r::K8S_POD_UID,
            r::K8S_NODE_NAME,
            r::CLOUD_PROVIDER,
            r::CLOUD_PLATFORM,
            r::CLOUD_REGION,
            r::CLOUD_AVAILABILITY_ZONE,
            r::CLOUD_ACCOUNT_ID,
        ]
    };
    for k in r {
        let _ = writeln!(
            s,
            "| `{k}` | `{}` on `target_info` (on every series with `resource_to_telemetry_conversion`) |",
            prometheus::sanitize(k, false)
        );
    }
    s
}
