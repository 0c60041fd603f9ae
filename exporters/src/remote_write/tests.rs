use std::collections::VecDeque;
use std::sync::Arc;

use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE, TCP_RTT};
use flowscope_model::names::{attr, resource};
use flowscope_model::{Histogram, MetricId};

use super::*;

fn translation() -> Translation {
    Translation {
        names: Options {
            namespace: None,
            add_metric_suffixes: true,
            resource_labels: false,
        },
        target_info: true,
        external_labels: BTreeMap::new(),
    }
}

fn res() -> Arc<Attrs> {
    Arc::new(
        Attrs::new()
            .with(resource::SERVICE_NAME, "checkout")
            .with("service.namespace", "shop")
            .with("service.instance.id", "pod-1")
            .with(resource::HOST_NAME, "node-7"),
    )
}

fn peer() -> Attrs {
    Attrs::new()
        .with(attr::PEER_ADDRESS, "198.18.0.2")
        .with(attr::PEER_PORT, 443u16)
}

fn point(metric: MetricId, attrs: Attrs, value: PointValue) -> Point {
    Point {
        resource: res(),
        metric,
        attrs,
        value,
    }
}

/// One decoded series: (labels, value, timestamp).
type Series = (Vec<(String, String)>, f64, i64);

/// Every series of every request, decoded.
fn decoded(e: &Encoded) -> Vec<Series> {
    let mut out = Vec::new();
    for r in &e.requests {
        for ts in decode(&r.body).unwrap().timeseries {
            assert_eq!(ts.samples.len(), 1);
            let labels = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
            out.push((labels, ts.samples[0].value, ts.samples[0].timestamp));
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const T: u64 = 1_765_000_000_123_456_789;
const MS: i64 = 1_765_000_000_123;

fn scope() -> [(&'static str, &'static str); 2] {
    [
        ("otel_scope_name", "flowscope"),
        ("otel_scope_version", env!("CARGO_PKG_VERSION")),
    ]
}

#[test]
fn a_counter_round_trips_with_its_translated_name_and_target_info() {
    let p = point(
        FLOW_IO,
        peer().with(attr::IO_DIRECTION, attr::TRANSMIT),
        PointValue::Int(1500),
    );
    let e = encode([&p], T, &translation(), 1 << 20);
    assert_eq!((e.points, e.skipped, e.requests.len()), (1, 0, 1));
    assert_eq!(e.requests[0].points, 1);
    let [s1, s2] = scope();
    assert_eq!(
        decoded(&e),
        vec![
            (
                labels(&[
                    ("__name__", "network_flow_io_bytes_total"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                    ("network_io_direction", "transmit"),
                    ("network_peer_address", "198.18.0.2"),
                    ("network_peer_port", "443"),
                    s1,
                    s2,
                ]),
                1500.0,
                MS
            ),
            (
                labels(&[
                    ("__name__", "target_info"),
                    ("host_name", "node-7"),
                    ("instance", "pod-1"),
                    ("job", "shop/checkout"),
                    ("service_instance_id", "pod-1"),
                    ("service_name", "checkout"),
                    ("service_namespace", "shop"),
                ]),
                1.0,
                MS
            ),
        ]
    );
}

#[test]
fn an_up_down_counter_is_a_gauge_without_total() {
    let p = point(TCP_ACTIVE, peer(), PointValue::Int(3));
    let mut t = translation();
    t.target_info = false;
    let d = decoded(&encode([&p], T, &t, 1 << 20));
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].0[0],
        (
            "__name__".to_string(),
            "flowscope_tcp_connection_active".to_string()
        )
    );
    assert_eq!(d[0].1, 3.0);
}

#[test]
fn a_histogram_is_cumulative_buckets_with_le_then_sum_and_count() {
    let mut h = Histogram::new(Arc::from(&[0.001, 0.01][..]));
    h.record(0.0005);
    h.record(0.002);
    h.record(0.02);
    h.record(0.03);
    let p = point(TCP_RTT, peer(), PointValue::Histogram(h));
    let mut t = translation();
    t.target_info = false;
    let d = decoded(&encode([&p], T, &t, 1 << 20));
    let got: Vec<(String, Option<String>, f64)> = d
        .iter()
        .map(|(l, v, _)| {
            let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            (get("__name__").unwrap(), get("le"), *v)
        })
        .collect();
    let s = |n: &str, le: Option<&str>, v: f64| (n.to_string(), le.map(str::to_string), v);
    assert_eq!(
        got,
        vec![
            s("flowscope_tcp_rtt_seconds_bucket", Some("0.001"), 1.0),
            s("flowscope_tcp_rtt_seconds_bucket", Some("0.01"), 2.0),
            s("flowscope_tcp_rtt_seconds_bucket", Some("+Inf"), 4.0),
            s("flowscope_tcp_rtt_seconds_sum", None, 0.0525),
            s("flowscope_tcp_rtt_seconds_count", None, 4.0),
        ]
    );
    // `le` sits in name order among the others.
    let names: Vec<&str> = d[0].0.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "__name__",
            "instance",
            "job",
            "le",
            "network_peer_address",
            "network_peer_port",
            "otel_scope_name",
            "otel_scope_version"
        ]
    );
}

#[test]
fn external_labels_fill_in_but_never_override() {
    let p = point(TCP_ACTIVE, peer(), PointValue::Int(1));
    let mut t = translation();
    t.external_labels.insert("cluster".into(), "eu-1".into());
    // The series' own `job` wins.
    t.external_labels.insert("job".into(), "ignored".into());
    let d = decoded(&encode([&p], T, &t, 1 << 20));
    for (l, _, _) in &d {
        let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("cluster"), Some("eu-1"));
        assert_eq!(get("job"), Some("shop/checkout"));
    }
    assert_eq!(d.len(), 2, "the series and target_info");
}

#[test]
fn target_info_or_resource_labels_as_configured() {
    let p = point(TCP_ACTIVE, peer(), PointValue::Int(1));
    let mut t = translation();
    t.names.resource_labels = true;
    t.target_info = false;
    let d = decoded(&encode([&p], T, &t, 1 << 20));
    assert_eq!(d.len(), 1);
    let get = |k: &str| d[0].0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("host_name"), Some("node-7"));
    assert_eq!(get("service_name"), Some("checkout"));
    // Default (Collector): no Resource labels on the series, target_info.
    let d = decoded(&encode([&p], T, &translation(), 1 << 20));
    assert_eq!(d.len(), 2);
    assert!(d[0].0.iter().all(|(k, _)| k != "host_name"));
    assert_eq!(d[1].0[0].1, "target_info");
    // Both at once: the Collector allows it.
    t.target_info = true;
    assert_eq!(decoded(&encode([&p], T, &t, 1 << 20)).len(), 2);
}

#[test]
fn labels_are_sorted_unique_and_never_empty() {
    // Attribute keys that collide once sanitized, an empty value, and
    // keys that sort before `__name__` (upper case) and around `le`.
    let a = Attrs::new()
        .with("a.b", "1")
        .with("a_b", "2")
        .with("Zone", "z")
        .with("empty", "")
        .with("le", "mine")
        .with("__name__", "mine");
    let mut h = Histogram::new(Arc::from(&[1.0][..]));
    h.record(0.5);
    let pts = [
        point(TCP_ACTIVE, a.clone(), PointValue::Int(1)),
        point(TCP_RTT, a, PointValue::Histogram(h)),
    ];
    let d = decoded(&encode(&pts, T, &translation(), 1 << 20));
    assert_eq!(d.len(), 1 + 4 + 1);
    for (l, _, _) in &d {
        let names: Vec<&String> = l.iter().map(|(k, _)| k).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "sorted and unique: {l:?}");
        assert!(l.iter().all(|(_, v)| !v.is_empty()), "{l:?}");
        assert!(names.iter().any(|n| *n == "__name__"));
        let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_ne!(get("__name__"), Some("mine"));
        if get("__name__").is_some_and(|n| n.ends_with("_bucket")) {
            assert_ne!(get("le"), Some("mine"), "{l:?}");
        }
    }
    assert_eq!(d[0].0[0], ("Zone".to_string(), "z".to_string()));
}

#[test]
fn big_batches_split_on_whole_points_within_the_limit() {
    let pts: Vec<Point> = (0..200u16)
        .map(|i| {
            point(
                FLOW_IO,
                peer().with(attr::LOCAL_PORT, i),
                PointValue::Int(u64::from(i)),
            )
        })
        .collect();
    let e = encode(&pts, T, &translation(), 4096);
    assert!(e.requests.len() > 5, "{}", e.requests.len());
    assert_eq!(e.points, 200);
    assert_eq!(e.requests.iter().map(|r| r.points).sum::<u64>(), 200);
    let mut values = Vec::new();
    for r in &e.requests {
        let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
        assert!(raw.len() <= 4096, "{}", raw.len());
        let w = WriteRequest::decode(raw.as_slice()).unwrap();
        // Each request names the Resource of its series.
        let infos = w
            .timeseries
            .iter()
            .filter(|ts| ts.labels[0].value == "target_info")
            .count();
        assert_eq!(infos, 1);
        values.extend(
            w.timeseries
                .iter()
                .filter(|ts| ts.labels[0].value != "target_info")
                .map(|ts| ts.samples[0].value as u64),
        );
    }
    assert_eq!(values, (0..200).collect::<Vec<u64>>());
}

#[test]
fn a_value_that_does_not_fit_its_instrument_is_skipped() {
    let pts = [
        point(TCP_RTT, peer(), PointValue::Int(1)),
        point(TCP_ACTIVE, peer(), PointValue::Int(1)),
    ];
    let e = encode(&pts, T, &translation(), 1 << 20);
    assert_eq!((e.points, e.skipped), (1, 1));
}

#[test]
fn codec_round_trips_and_rejects_truncation() {
    let pts = [
        point(TCP_ACTIVE, peer(), PointValue::Int(1)),
        point(FLOW_IO, peer(), PointValue::Int(2)),
    ];
    let e = encode(&pts, T, &translation(), 300);
    assert_eq!(e.requests.len(), 2);
    let bytes = EncodedCodec.encode(&e);
    let back = EncodedCodec.decode(&bytes).unwrap();
    assert_eq!(back, Encoded { skipped: 0, ..e });
    assert!(EncodedCodec.decode(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn statuses() {
    let mut h = http::HeaderMap::new();
    h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("3"));
    assert_eq!(
        classify(StatusCode::NO_CONTENT, &h, b""),
        Attempt::Accepted {
            rejected: 0,
            message: String::new()
        }
    );
    for s in [500, 501, 503, 507] {
        assert!(
            matches!(
                classify(StatusCode::from_u16(s).unwrap(), &h, b"x"),
                Attempt::Retry { after: Some(d), .. } if d == std::time::Duration::from_secs(3)
            ),
            "{s}"
        );
    }
    assert!(matches!(
        classify(StatusCode::TOO_MANY_REQUESTS, &http::HeaderMap::new(), b""),
        Attempt::Retry { after: None, .. }
    ));
    assert_eq!(
        classify(StatusCode::BAD_REQUEST, &h, b"out of order sample\n"),
        Attempt::Fail {
            error_type: "400".into(),
            message: "HTTP 400 Bad Request: out of order sample".into()
        }
    );
}

/// A transport that answers from a script and keeps every body it got.
struct Script(VecDeque<Attempt>, Vec<Bytes>);

impl Transport for Script {
    type Request = Bytes;
    async fn send(&mut self, body: &Bytes) -> Attempt {
        self.1.push(body.clone());
        self.0.pop_front().unwrap_or(Attempt::Accepted {
            rejected: 0,
            message: String::new(),
        })
    }
}

fn batch(i: u64, bytes: u64) -> MetricBatch {
    let mut b = MetricBatch::new(T + i * 10_000_000_000, T + (i + 1) * 10_000_000_000);
    b.points
        .push(point(FLOW_IO, peer(), PointValue::Int(bytes)));
    b.points.push(point(TCP_ACTIVE, peer(), PointValue::Int(i)));
    b
}

#[tokio::test(start_paused = true)]
async fn deltas_fold_once_and_a_retry_resends_the_same_bytes() {
    let cfg = PrometheusRemoteWriteExporterConfig::new("http://127.0.0.1:1/api/v1/write");
    let p = Preparer::new(
        Component::new("test", "prometheusremotewrite"),
        Telemetry::new(),
        &cfg,
    );
    let first = p.prepare(&batch(0, 100)).unwrap();
    let second = p.prepare(&batch(1, 50)).unwrap();
    let busy = || Attempt::Retry {
        error_type: "503".into(),
        after: None,
        message: "busy".into(),
    };
    let mut sink = RemoteWriteSink {
        transport: Script(VecDeque::from([busy(), busy(), busy()]), Vec::new()),
        retry: RetryConfig {
            randomization_factor: 0.0,
            ..RetryConfig::default()
        },
        health: None,
    };
    let out = sink.export(&first).await;
    assert_eq!((out.sent, out.retries), (2, 3));
    assert!(out.failed.is_empty());
    let out = sink.export(&second).await;
    assert_eq!((out.sent, out.retries), (2, 0));
    let bodies = &sink.transport.1;
    assert_eq!(bodies.len(), 5);
    assert!(bodies[..4].iter().all(|b| *b == first.requests[0].body));
    let io = |b: &Bytes| {
        decode(b)
            .unwrap()
            .timeseries
            .iter()
            .find(|ts| ts.labels[0].value == "network_flow_io_bytes_total")
            .map(|ts| ts.samples[0].value)
    };
    // 100, then the running total 150 (not 100 + 150 nor 50).
    assert_eq!((io(&bodies[0]), io(&bodies[4])), (Some(100.0), Some(150.0)));
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_is_not_retried_and_is_counted_failed() {
    let cfg = PrometheusRemoteWriteExporterConfig::new("http://127.0.0.1:1/api/v1/write");
    let p = Preparer::new(Component::new("test", "rw"), Telemetry::new(), &cfg);
    let item = p.prepare(&batch(0, 100)).unwrap();
    let mut sink = RemoteWriteSink {
        transport: Script(
            VecDeque::from([Attempt::Fail {
                error_type: "400".into(),
                message: "bad".into(),
            }]),
            Vec::new(),
        ),
        retry: RetryConfig::default(),
        health: None,
    };
    let out = sink.export(&item).await;
    assert_eq!(sink.transport.1.len(), 1);
    assert_eq!((out.sent, out.failed), (0, vec![("400".to_string(), 2)]));
}

/// docs/telemetry.md's "Fleet storage names" tables are the code's
/// translation. `FLOWSCOPE_BLESS_DOCS=1` rewrites them from the code.
#[test]
fn the_fleet_storage_names_in_the_docs_match_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/telemetry.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (begin, end) = (
        "<!-- fleet-storage-names:begin (generated, see remote_write::fleet_storage_table) -->\n",
        "<!-- fleet-storage-names:end -->",
    );
    let a = doc.find(begin).expect("begin marker") + begin.len();
    let b = doc.find(end).expect("end marker");
    let want = fleet_storage_table();
    if std::env::var_os("FLOWSCOPE_BLESS_DOCS").is_some() {
        std::fs::write(path, format!("{}{want}{}", &doc[..a], &doc[b..])).unwrap();
        return;
    }
    assert_eq!(
        &doc[a..b],
        want,
        "docs/telemetry.md is stale: rerun with FLOWSCOPE_BLESS_DOCS=1"
    );
    // Every metric the contract's tables name has its row.
    for line in doc[..a].lines().filter(|l| {
        l.starts_with("| `flowscope.") || l.starts_with("| `network.") || l.starts_with("| `dns.")
    }) {
        let name = line.split('`').nth(1).unwrap_or_default();
        if name.contains(',') || name.ends_with('.') {
            continue;
        }
        assert!(
            want.contains(&format!("| `{name}` |")),
            "`{name}` is in the contract but has no fleet storage name"
        );
    }
    // The examples the contract names.
    assert!(
        want.contains(
            "| `network.flow.io` | Sum (counter) | `By` | `network_flow_io_bytes_total` |"
        )
    );
    assert!(want.contains("`flowscope_tcp_rtt_seconds_bucket`, `flowscope_tcp_rtt_seconds_sum`, `flowscope_tcp_rtt_seconds_count`"));
    assert!(want.contains("| `flowscope.tcp.connection.active` | UpDownCounter (gauge) | `{connection}` | `flowscope_tcp_connection_active` |"));
}

/// The hand-written protobuf is what prost writes for the same messages.
#[test]
fn direct_encoding_is_the_prost_encoding() {
    let mut h = Histogram::new(Arc::from(&[0.001, 0.01][..]));
    h.record(0.002);
    let pts = [
        point(TCP_RTT, peer(), PointValue::Histogram(h)),
        point(TCP_ACTIVE, peer(), PointValue::Int(0)),
        point(FLOW_IO, peer().with("x", "é ü"), PointValue::Int(1 << 40)),
    ];
    for time in [T, 0] {
        let e = encode(&pts, time, &translation(), 1 << 20);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&e.requests[0].body)
            .unwrap();
        let msg = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(msg.timeseries.len(), 5 + 1 + 1 + 1);
        assert_eq!(msg.encode_to_vec(), raw);
    }
}
