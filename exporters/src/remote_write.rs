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

/// Appends one `TimeSeries` as field 1 of a `WriteRequest` to `buf`,
/// byte for byte what prost writes for the [`TimeSeries`] message (the
/// unit tests hold it to that), without building the message: `labels`
/// must be sorted by name, unique and non-empty.
fn put_series(buf: &mut Vec<u8>, labels: &[(&str, &str)], value: f64, timestamp: i64) {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let field = |n: usize| 1 + encoded_len_varint(n as u64) + n;
    let label_len = |(k, v): &(&str, &str)| field(k.len()) + field(v.len());
    let sample_len = if value != 0.0 { 9 } else { 0 }
        + if timestamp != 0 {
            1 + encoded_len_varint(timestamp as u64)
        } else {
            0
        };
    let series_len: usize =
        labels.iter().map(|l| field(label_len(l))).sum::<usize>() + field(sample_len);
    buf.push(0x0a);
    encode_varint(series_len as u64, buf);
    for l in labels {
        buf.push(0x0a);
        encode_varint(label_len(l) as u64, buf);
        for (tag, s) in [(0x0a, l.0), (0x12, l.1)] {
            buf.push(tag);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
    }
    buf.push(0x12);
    encode_varint(sample_len as u64, buf);
    if value != 0.0 {
        buf.push(0x09);
        buf.extend_from_slice(&value.to_le_bytes());
    }
    if timestamp != 0 {
        buf.push(0x10);
        encode_varint(timestamp as u64, buf);
    }
}

/// A metric's Prometheus names: the base, `_bucket`, `_sum`, `_count`.
struct Names([String; 4]);

impl Names {
    fn new(m: MetricId, o: &Options) -> Self {
        let n = metric_name(m, o);
        Names([
            format!("{n}_bucket"),
            format!("{n}_sum"),
            format!("{n}_count"),
            n,
        ])
    }
}

/// `labels` with `__name__` and (for a bucket) `le` in their sorted
/// places, replacing a label of the same name.
fn with_name<'a>(
    labels: &[(&'a str, &'a str)],
    name: &'a str,
    le: Option<&'a str>,
    out: &mut Vec<(&'a str, &'a str)>,
) {
    out.clear();
    // Sorted: `_` sorts before lower-case letters.
    let both = [("__name__", name), ("le", le.unwrap_or(""))];
    let extra = if le.is_some() { &both[..] } else { &both[..1] };
    let mut e = extra.iter().peekable();
    for &(k, v) in labels {
        while let Some(&&(ek, ev)) = e.peek() {
            if ek > k {
                break;
            }
            out.push((ek, ev));
            e.next();
        }
        if extra.iter().any(|(ek, _)| *ek == k) {
            continue;
        }
        out.push((k, v));
    }
    out.extend(e.copied());
}

/// Appends the series of one point to `buf`; false if its value does not
/// fit its instrument.
fn point_series(
    p: &Point,
    names: &Names,
    timestamp: i64,
    t: &Translation,
    buf: &mut Vec<u8>,
) -> bool {
    let fits = match (&p.value, p.metric.kind()) {
        (PointValue::Histogram(_), Kind::Histogram) => true,
        (PointValue::Histogram(_), _) | (_, Kind::Histogram) => false,
        _ => true,
    };
    if !fits {
        return false;
    }
    let mut map = series_labels(&p.resource, &p.attrs, &t.names);
    for (k, v) in &t.external_labels {
        if !map.contains_key(k) {
            map.insert(k.clone(), v.clone());
        }
    }
    let labels: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let [bucket, sum, count, base] = &names.0;
    match &p.value {
        PointValue::Histogram(h) => {
            let les: Vec<String> = (0..h.counts.len())
                .map(|i| {
                    h.bounds
                        .get(i)
                        .map_or_else(|| "+Inf".to_string(), |b| number(*b))
                })
                .collect();
            let mut l = Vec::with_capacity(labels.len() + 2);
            let mut cum = 0u64;
            for (c, le) in h.counts.iter().zip(&les) {
                cum += c;
                with_name(&labels, bucket, Some(le), &mut l);
                put_series(buf, &l, cum as f64, timestamp);
            }
            with_name(&labels, sum, None, &mut l);
            put_series(buf, &l, h.sum, timestamp);
            with_name(&labels, count, None, &mut l);
            put_series(buf, &l, h.count as f64, timestamp);
        }
        v => {
            let mut l = Vec::with_capacity(labels.len() + 1);
            with_name(&labels, base, None, &mut l);
            put_series(buf, &l, v.as_f64(), timestamp);
        }
    }
    true
}

/// Appends the `target_info` series of a Resource to `buf`.
fn target_info(res: &Attrs, timestamp: i64, t: &Translation, buf: &mut Vec<u8>) {
    let mut map = target_info_labels(res);
    for (k, v) in &t.external_labels {
        map.entry(k.clone()).or_insert_with(|| v.clone());
    }
    map.insert("__name__".into(), "target_info".into());
    let l: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    put_series(buf, &l, 1.0, timestamp);
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
    // The serialized `WriteRequest` being filled, and its point count.
    let mut current: Vec<u8> = Vec::new();
    let mut points_in = 0u64;
    // Resources whose `target_info` the current request already has.
    let mut with_info: HashSet<&Attrs> = HashSet::new();
    // Metric names, translated once per metric.
    let mut names: HashMap<MetricId, Names> = HashMap::new();
    let mut group: Vec<u8> = Vec::new();
    let mut info: Vec<u8> = Vec::new();
    let flush = |current: &mut Vec<u8>, points_in: &mut u64, out: &mut Encoded| {
        if current.is_empty() {
            return;
        }
        out.requests.push(Request {
            points: *points_in,
            body: Bytes::from(compress(current)),
        });
        current.clear();
        *points_in = 0;
    };
    for p in points {
        group.clear();
        let n = names
            .entry(p.metric)
            .or_insert_with(|| Names::new(p.metric, &t.names));
        if !point_series(p, n, timestamp, t, &mut group) {
            out.skipped += 1;
            continue;
        }
        // A request names the Resource of every series it carries.
        info.clear();
        if t.target_info && !with_info.contains(&p.resource.as_ref()) {
            target_info(&p.resource, timestamp, t, &mut info);
        }
        if !current.is_empty() && current.len() + group.len() + info.len() > max_bytes {
            flush(&mut current, &mut points_in, &mut out);
            with_info.clear();
            if t.target_info && info.is_empty() {
                target_info(&p.resource, timestamp, t, &mut info);
            }
        }
        current.extend_from_slice(&group);
        if !info.is_empty() {
            current.extend_from_slice(&info);
            with_info.insert(p.resource.as_ref());
        }
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
    match m.kind() {
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
    let mut all = flowscope_model::metrics::FLOW_METRICS.to_vec();
    all.push(flowscope_model::metrics::HOST_DROPS);
    all.push(flowscope_model::metrics::DNS_DURATION);
    all.extend(flowscope_model::metrics::PATH_METRICS);
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
        attr::LOCAL_ADDRESS,
        attr::IO_DIRECTION,
        attr::DROP_REASON,
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
        path::HOP_NAME,
        path::HOP_AS_NUMBER,
        path::HOP_AS_NAME,
        path::TLS_SUBJECT,
        path::TLS_ISSUER,
        path::TLS_NOT_AFTER,
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
        let kind = match m.kind() {
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
            m.name(),
            m.unit(),
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
