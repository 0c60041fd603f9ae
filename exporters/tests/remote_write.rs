//! `prometheusremotewrite` against real storage: Debian's Prometheus 2.42
//! (`--web.enable-remote-write-receiver`) and VictoriaMetrics, both started
//! by the test on loopback with their own data directories (installed by
//! `scripts/bootstrap.sh --test`; a missing binary fails the test). The
//! exporter pushes batches with known byte counts; the storage's query API
//! must then return the exact running totals.
//!
//! A small proxy in front of Prometheus plays the outages: not listening
//! for the first 20 s, then `503` three times, then forwarding; or `400`
//! once. Nothing is lost across the outage, a retry resends the same bytes,
//! and a refused batch is counted failed without a retry.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use flowscope_exporters::remote_write::decode;
use flowscope_exporters::{ExporterHandle, build};
use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE, TCP_RTT};
use flowscope_model::names::{attr, resource};
use flowscope_model::{Attrs, Context, Histogram, MetricBatch, Point, PointValue, Telemetry};
use flowscope_otel_config::exporters::{
    PrometheusRemoteWriteExporterConfig, RetryConfig, SendingQueueConfig,
};
use flowscope_otel_config::{ComponentId, ExporterConfig};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

/// Flows per batch; each has 3 points (bytes, active connections, RTT).
const FLOWS: usize = 4;
const POINTS: u64 = 3 * FLOWS as u64;

/// Start of the first interval: a minute ago, so that every sample is
/// recent and in order.
fn base_ms() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (now.as_millis() as i64 / 1000 - 60) * 1000
}

/// End (ms) of interval `i`, one second long.
fn end_ms(base: i64, i: u64) -> i64 {
    base + (i as i64 + 1) * 1000
}

/// Interval `i`: flow `f` (peer port 1000 + f) sends `1000 * (i + 1) + f`
/// bytes, holds 1 connection and has one RTT sample of `f + 1` ms.
fn batch(base: i64, i: u64) -> Arc<MetricBatch> {
    let r = Arc::new(Attrs::new().with(resource::SERVICE_NAME, "checkout"));
    let start = (base + i as i64 * 1000) as u64 * 1_000_000;
    let mut b = MetricBatch::new(start, end_ms(base, i) as u64 * 1_000_000);
    for f in 0..FLOWS {
        let a = Attrs::new()
            .with(attr::FLOW_ROLE, "client")
            .with(attr::PEER_ADDRESS, "198.18.0.2")
            .with(attr::PEER_PORT, 1000 + f as i64);
        let mut h = Histogram::new(Arc::from(&[0.001, 0.01][..]));
        h.record((f + 1) as f64 / 1000.0);
        for (metric, attrs, value) in [
            (
                FLOW_IO,
                a.clone().with(attr::IO_DIRECTION, attr::TRANSMIT),
                PointValue::Int(1000 * (i + 1) + f as u64),
            ),
            (TCP_ACTIVE, a.clone(), PointValue::Int(1)),
            (TCP_RTT, a.clone(), PointValue::Histogram(h)),
        ] {
            b.points.push(Point {
                resource: r.clone(),
                metric,
                attrs,
                value,
            });
        }
    }
    Arc::new(b)
}

/// Bytes of flow `f` after intervals `0..n`.
fn io_total(n: u64, f: u64) -> u64 {
    1000 * n * (n + 1) / 2 + n * f
}

fn config(endpoint: String) -> PrometheusRemoteWriteExporterConfig {
    let mut c = PrometheusRemoteWriteExporterConfig::new(endpoint);
    c.external_labels.insert("cluster".into(), "test".into());
    c.retry_on_failure = RetryConfig {
        initial_interval: Duration::from_millis(500),
        max_interval: Duration::from_secs(2),
        max_elapsed_time: Duration::from_secs(120),
        randomization_factor: 0.0,
        ..RetryConfig::default()
    };
    c
}

fn start(id: &str, c: PrometheusRemoteWriteExporterConfig, t: &Telemetry) -> ExporterHandle {
    build(
        &id.parse::<ComponentId>().unwrap(),
        &ExporterConfig::PrometheusRemoteWrite(c),
        &Context::with_telemetry(t.clone()),
    )
    .unwrap()
}

/// Polls `promql` at `at_ms` until it returns one sample equal to `want`.
async fn expect_value(port: u16, promql: &str, at_ms: i64, want: f64) {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = instant_query(port, promql, at_ms).await;
        let got = (r.len() == 1)
            .then(|| {
                r[0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .flatten();
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "`{promql}` at {at_ms}: want {want}, got {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pushes 3 intervals and checks every total in the storage on `port`.
async fn push_and_check(endpoint: String, port: u16) {
    let t = Telemetry::new();
    let h = start("prometheusremotewrite", config(endpoint), &t);
    let base = base_ms();
    for i in 0..3 {
        h.submit(batch(base, i));
    }
    wait_for("3 batches sent", Duration::from_secs(30), || {
        sent(&t, "prometheusremotewrite") == 3 * POINTS
    })
    .await;
    assert_eq!(failed_all(&t, "prometheusremotewrite"), 0);
    let at = end_ms(base, 2);
    for f in 0..FLOWS as u64 {
        let sel = format!("{{network_peer_port=\"{}\",cluster=\"test\"}}", 1000 + f);
        let io = format!("network_flow_io_bytes_total{sel}");
        expect_value(port, &io, at, io_total(3, f) as f64).await;
        let count = format!("flowscope_tcp_rtt_seconds_count{sel}");
        expect_value(port, &count, at, 3.0).await;
        let inf = format!(
            "flowscope_tcp_rtt_seconds_bucket{{network_peer_port=\"{}\",le=\"+Inf\"}}",
            1000 + f
        );
        expect_value(port, &inf, at, 3.0).await;
        let sum = format!("round(flowscope_tcp_rtt_seconds_sum{sel} * 1000)");
        expect_value(port, &sum, at, 3.0 * (f + 1) as f64).await;
    }
    // 4 flows: 6000 * 4 + 3 * (0 + 1 + 2 + 3) bytes.
    expect_value(port, "sum(network_flow_io_bytes_total)", at, 24018.0).await;
    expect_value(port, "sum(flowscope_tcp_connection_active)", at, 4.0).await;
    // The 0.001 bucket holds flow 0's 1 ms samples only.
    expect_value(
        port,
        "sum(flowscope_tcp_rtt_seconds_bucket{le=\"0.001\"})",
        at,
        3.0,
    )
    .await;
    expect_value(
        port,
        "count(target_info{job=\"checkout\",service_name=\"checkout\",cluster=\"test\"})",
        at,
        1.0,
    )
    .await;
    let r = instant_query(
        port,
        "network_flow_io_bytes_total{network_peer_port=\"1000\"}",
        at,
    )
    .await;
    let m = &r[0]["metric"];
    assert_eq!(m["job"], "checkout");
    assert_eq!(m["network_io_direction"], "transmit");
    assert_eq!(m["flowscope_flow_role"], "client");
    assert_eq!(m["otel_scope_name"], "flowscope");
    // Resource attributes go on target_info, not on the series (default).
    assert!(m.get("service_name").is_none(), "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn prometheus_stores_the_exact_totals() {
    let prom = start_prometheus("global: {}\n", &["--web.enable-remote-write-receiver"]).await;
    let url = format!("http://127.0.0.1:{}/api/v1/write", prom.port);
    push_and_check(url, prom.port).await;
}

#[tokio::test]
async fn victoria_metrics_stores_the_exact_totals() {
    let vm = start_victoria_metrics().await;
    let url = format!("http://127.0.0.1:{}/api/v1/write", vm.port);
    push_and_check(url, vm.port).await;
}

/// What the proxy answered to one request.
#[derive(Clone, Debug)]
struct Seen {
    status: u16,
    body: Bytes,
    headers: Vec<(String, String)>,
}

/// A proxy to `upstream` answering the scripted statuses first (with
/// `Retry-After: 1`), then forwarding; it starts listening on `port` only
/// after `down`.
fn proxy(port: u16, upstream: u16, down: Duration, script: Vec<u16>) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let log = seen.clone();
    tokio::spawn(async move {
        tokio::time::sleep(down).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (log, script, client) = (log.clone(), script.clone(), client.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (log, script, client) = (log.clone(), script.clone(), client.clone());
                        async move {
                            let headers: Vec<(String, String)> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let scripted = script.lock().unwrap().pop_front();
                            let resp = match scripted {
                                Some(status) => http::Response::builder()
                                    .status(status)
                                    .header("retry-after", "1")
                                    .body(Full::new(Bytes::from_static(b"scripted\n")))
                                    .unwrap(),
                                None => {
                                    let mut fwd = http::Request::post(format!(
                                        "http://127.0.0.1:{upstream}{path}"
                                    ));
                                    for (k, v) in &headers {
                                        if k != "host" && k != "content-length" {
                                            fwd = fwd.header(k, v);
                                        }
                                    }
                                    let answer = client
                                        .request(fwd.body(Full::new(body.clone())).unwrap())
                                        .await
                                        .unwrap();
                                    let status = answer.status();
                                    let text =
                                        answer.into_body().collect().await.unwrap().to_bytes();
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(text))
                                        .unwrap()
                                }
                            };
                            log.lock().unwrap().push(Seen {
                                status: resp.status().as_u16(),
                                body,
                                headers,
                            });
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    seen
}

#[tokio::test]
async fn an_outage_then_three_503s_lose_nothing() {
    let prom = start_prometheus("global: {}\n", &["--web.enable-remote-write-receiver"]).await;
    let port = free_port();
    let seen = proxy(
        port,
        prom.port,
        Duration::from_secs(20),
        vec![503, 503, 503],
    );
    let t = Telemetry::new();
    let h = start(
        "prometheusremotewrite/fleet",
        config(format!("http://127.0.0.1:{port}/api/v1/write")),
        &t,
    );
    let base = base_ms();
    for i in 0..3 {
        h.submit(batch(base, i));
    }
    // Down: the first batch is being retried.
    wait_for("a failing try", Duration::from_secs(10), || {
        !h.health().delivering
    })
    .await;
    assert_eq!(sent(&t, "prometheusremotewrite/fleet"), 0);
    wait_for("every batch sent", Duration::from_secs(90), || {
        sent(&t, "prometheusremotewrite/fleet") == 3 * POINTS
    })
    .await;
    assert_eq!(failed_all(&t, "prometheusremotewrite/fleet"), 0);
    let health = h.health();
    assert!(health.delivering);
    let last = health.last_error.unwrap_or_default();
    assert!(last.contains("503") && last.contains("retrying"), "{last}");
    // The self-telemetry counts the three 503s and the tries while down.
    let retries = |ty: &str| {
        t.total_matching(
            flowscope_model::telemetry::EXPORTER_RETRIES,
            &Attrs::new()
                .with(attr::COMPONENT_NAME, "prometheusremotewrite/fleet")
                .with(attr::ERROR_TYPE, ty),
        )
    };
    assert_eq!(retries("503"), 3);
    // 20 s down, tries 0.5 s, 1 s, then every 2 s apart: at least 8.
    assert!(retries("connection") >= 8, "{}", retries("connection"));

    let seen = seen.lock().unwrap().clone();
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 503, 503, 204, 204, 204]);
    // Every retry sent the very same body: the fold happened once.
    assert!(seen[..4].iter().all(|s| s.body == seen[0].body));
    let get = |s: &Seen, k: &str| {
        s.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get(&seen[0], "content-encoding").as_deref(), Some("snappy"));
    assert_eq!(
        get(&seen[0], "content-type").as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(
        get(&seen[0], "x-prometheus-remote-write-version").as_deref(),
        Some("0.1.0")
    );
    assert!(get(&seen[0], "user-agent").is_some_and(|u| u.starts_with("flowscope/")));
    let first = decode(&seen[0].body).unwrap();
    assert_eq!(first.timeseries.len(), FLOWS * (1 + 1 + 5) + 1);

    let at = end_ms(base, 2);
    for f in 0..FLOWS as u64 {
        let q = format!(
            "network_flow_io_bytes_total{{network_peer_port=\"{}\"}}",
            1000 + f
        );
        expect_value(prom.port, &q, at, io_total(3, f) as f64).await;
        // One sample per interval: nothing stored twice.
        let q = format!(
            "count_over_time(network_flow_io_bytes_total{{network_peer_port=\"{}\"}}[1m])",
            1000 + f
        );
        expect_value(prom.port, &q, at, 3.0).await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_400_is_not_retried_and_the_next_batch_carries_the_totals() {
    let prom = start_prometheus("global: {}\n", &["--web.enable-remote-write-receiver"]).await;
    let port = free_port();
    let seen = proxy(port, prom.port, Duration::ZERO, vec![400]);
    let t = Telemetry::new();
    let h = start(
        "prometheusremotewrite",
        config(format!("http://127.0.0.1:{port}/api/v1/write")),
        &t,
    );
    let base = base_ms();
    h.submit(batch(base, 0));
    wait_for("the refusal", Duration::from_secs(30), || {
        failed_all(&t, "prometheusremotewrite") == POINTS
    })
    .await;
    assert_eq!(failed(&t, "prometheusremotewrite", "400"), POINTS);
    h.submit(batch(base, 1));
    wait_for("the next batch", Duration::from_secs(30), || {
        sent(&t, "prometheusremotewrite") == POINTS
    })
    .await;
    let statuses: Vec<u16> = seen.lock().unwrap().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [400, 204]);
    // The refused interval's bytes are in the next running total.
    let q = "network_flow_io_bytes_total{network_peer_port=\"1001\"}";
    expect_value(prom.port, q, end_ms(base, 1), io_total(2, 1) as f64).await;
    h.shutdown().await;
}

#[tokio::test]
async fn batches_persisted_across_a_restart_are_sent_once() {
    let prom = start_prometheus("global: {}\n", &["--web.enable-remote-write-receiver"]).await;
    let dir = tempfile::tempdir().unwrap();
    let queue = |endpoint: String| {
        let mut c = config(endpoint);
        c.sending_queue = SendingQueueConfig {
            storage: Some(dir.path().to_path_buf()),
            ..SendingQueueConfig::default()
        };
        c
    };
    let base = base_ms();
    // First run: the endpoint is down; two batches wait on disk.
    let t = Telemetry::new();
    let dead = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let h = start("prometheusremotewrite", queue(dead), &t);
    h.submit(batch(base, 0));
    h.submit(batch(base, 1));
    h.shutdown().await;
    assert_eq!(sent(&t, "prometheusremotewrite"), 0);
    // Second run: the same directory, Prometheus up.
    let t = Telemetry::new();
    let url = format!("http://127.0.0.1:{}/api/v1/write", prom.port);
    let h = start("prometheusremotewrite", queue(url), &t);
    wait_for("the persisted batches", Duration::from_secs(30), || {
        sent(&t, "prometheusremotewrite") == 2 * POINTS
    })
    .await;
    for f in 0..FLOWS as u64 {
        let sel = format!("{{network_peer_port=\"{}\"}}", 1000 + f);
        let q = format!("network_flow_io_bytes_total{sel}");
        expect_value(prom.port, &q, end_ms(base, 1), io_total(2, f) as f64).await;
        let q = format!("count_over_time(network_flow_io_bytes_total{sel}[1m])");
        expect_value(prom.port, &q, end_ms(base, 1), 2.0).await;
    }
    h.shutdown().await;
}
