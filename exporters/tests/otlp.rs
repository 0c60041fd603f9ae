//! `otlp` and `otlphttp` against test receivers on 127.0.0.1: exact
//! delivery in both temporalities, splitting, encodings, compression,
//! headers, and faults with exact accounting (points submitted = points the
//! receiver accepted + points counted as failed).

mod common;

use flowscope_model::Context;
use std::time::Duration;

use common::*;
use flowscope_exporters::{ExporterHandle, build_with_env};
use flowscope_model::Telemetry;
use flowscope_otel_config::exporters::{
    Compression, HttpEncoding, OtlpExporterConfig, OtlpHttpExporterConfig, RetryConfig,
    Temporality, TlsClientConfig,
};
use flowscope_otel_config::{ComponentId, ExporterConfig};

fn no_env(_: &str) -> Option<String> {
    None
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_millis(500),
        max_elapsed_time: Duration::from_secs(60),
        multiplier: 2.0,
        randomization_factor: 0.1,
    }
}

fn grpc(port: u16) -> OtlpExporterConfig {
    OtlpExporterConfig {
        endpoint: Some(format!("127.0.0.1:{port}")),
        tls: TlsClientConfig {
            insecure: Some(true),
            ..Default::default()
        },
        retry_on_failure: fast_retry(),
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    }
}

fn http(port: u16) -> OtlpHttpExporterConfig {
    OtlpHttpExporterConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        retry_on_failure: fast_retry(),
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    }
}

/// The exporter `name` built from `config` with no environment, counting
/// into `t`.
fn start(t: &Telemetry, name: &str, config: ExporterConfig) -> ExporterHandle {
    build_with_env(
        &id(name),
        &config,
        &Context::with_telemetry(t.clone()),
        &no_env,
    )
    .unwrap()
}

fn id(s: &str) -> ComponentId {
    s.parse().unwrap()
}

#[tokio::test]
async fn grpc_delta_delivers_exact_values_split_by_size() {
    let rx = Receiver::new([]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let mut c = grpc(addr.port());
    c.max_request_bytes = Some(4096);
    c.headers.insert("api-key".into(), "s3cret".into());
    let h = start(&t, "otlp", ExporterConfig::Otlp(c));
    h.submit(batch(0, 100));
    h.submit(batch(1, 100));
    h.clone().shutdown().await;

    assert_eq!((sent(&t, "otlp"), failed_all(&t, "otlp")), (400, 0));
    assert_eq!(rx.accepted_points(), 400);
    let arrivals = rx.arrivals();
    assert!(
        arrivals.len() > 2,
        "4 KiB limit should split: {} requests",
        arrivals.len()
    );
    assert!(arrivals.iter().all(|a| {
        a.headers
            .iter()
            .any(|(k, v)| k == "api-key" && v == "s3cret")
    }));
    let io = io_values(&rx.accepted());
    assert_eq!(io.len(), 200);
    for (k, (port, value, start, time)) in io.iter().enumerate() {
        let (id, i) = ((k / 100) as u64, (k % 100) as u64);
        assert_eq!(*port, 1000 + i as i64);
        assert_eq!(*value as u64, 1000 * (id + 1) + i);
        assert_eq!(*start, 1_700_000_000_000_000_000 + id * 10_000_000_000);
        assert_eq!(*time, start + 10_000_000_000);
    }
    assert!(h.health().delivering);
}

#[tokio::test]
async fn grpc_cumulative_keeps_start_and_running_totals() {
    let rx = Receiver::new([]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let mut c = grpc(addr.port());
    c.temporality = Some(Temporality::Cumulative);
    c.compression = Some(Compression::Zstd);
    let h = start(&t, "otlp/cum", ExporterConfig::Otlp(c));
    h.submit(batch(0, 10));
    h.submit(batch(1, 10));
    h.clone().shutdown().await;
    assert_eq!((sent(&t, "otlp/cum"), failed_all(&t, "otlp/cum")), (40, 0));
    let io = io_values(&rx.accepted());
    let start = 1_700_000_000_000_000_000;
    for i in 0..10u64 {
        assert_eq!(
            io[i as usize],
            (
                1000 + i as i64,
                (1000 + i) as i64,
                start,
                start + 10_000_000_000
            )
        );
        // Second interval: 1000+i then 2000+i, from the same start.
        assert_eq!(
            io[10 + i as usize],
            (
                1000 + i as i64,
                (3000 + 2 * i) as i64,
                start,
                start + 20_000_000_000
            )
        );
    }
}

#[tokio::test]
async fn http_proto_gzip_and_json_zstd_with_env_headers() {
    for (encoding, compression, ctype, cenc) in [
        (
            HttpEncoding::Proto,
            Compression::Gzip,
            "application/x-protobuf",
            Some("gzip"),
        ),
        (
            HttpEncoding::Json,
            Compression::Zstd,
            "application/json",
            Some("zstd"),
        ),
        (
            HttpEncoding::Json,
            Compression::None,
            "application/json",
            None,
        ),
    ] {
        let rx = Receiver::new([]);
        let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
        let t = Telemetry::new();
        let mut c = http(addr.port());
        c.encoding = encoding;
        c.compression = Some(compression);
        let env =
            |k: &str| (k == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "x-api-key=k%20ey".to_string());
        let h = build_with_env(
            &id("otlphttp"),
            &ExporterConfig::OtlpHttp(c),
            &Context::with_telemetry(t.clone()),
            &env,
        )
        .unwrap();
        h.submit(batch(3, 25));
        h.shutdown().await;
        assert_eq!((sent(&t, "otlphttp"), failed_all(&t, "otlphttp")), (50, 0));
        assert_eq!(rx.accepted_points(), 50);
        let a = &rx.arrivals()[0];
        let header = |k: &str| {
            a.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some(ctype));
        assert_eq!(header("content-encoding"), cenc);
        assert_eq!(header("x-api-key"), Some("k ey"));
        assert_eq!(io_values(&rx.accepted())[7].1, 4007);
    }
}

#[tokio::test]
async fn receiver_down_for_20s_then_back_loses_nothing() {
    let port = free_port();
    let t = Telemetry::new();
    let mut c = grpc(port);
    c.retry_on_failure.max_interval = Duration::from_secs(2);
    c.timeout = Some(Duration::from_secs(1));
    let h = start(&t, "otlp", ExporterConfig::Otlp(c));
    for i in 0..5 {
        h.submit(batch(i, 20));
    }
    // The scenario: nobody listens for 20 s.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(sent(&t, "otlp"), 0);
    // /healthz says so while the first batch is still being retried.
    let health = h.health();
    assert!(!health.delivering, "{health:?}");
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("retrying")),
        "{health:?}"
    );
    assert_eq!(health.queued, 4);
    let rx = Receiver::new([]);
    grpc_receiver(&format!("127.0.0.1:{port}"), rx.clone(), None).await;
    wait_for("all 200 points", Duration::from_secs(30), || {
        rx.accepted_points() == 200
    })
    .await;
    h.clone().shutdown().await;
    assert_eq!((sent(&t, "otlp"), failed_all(&t, "otlp")), (200, 0));
    let io = io_values(&rx.accepted());
    assert_eq!(io.len(), 100);
    assert_eq!(io[99].1, 5019);
    assert!(h.health().delivering);
}

#[tokio::test]
async fn http_503_retry_after_is_honoured() {
    let rx = Receiver::new([Reply::Http(503, Some("2")), Reply::Ok]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let h = start(&t, "otlphttp", ExporterConfig::OtlpHttp(http(addr.port())));
    h.submit(batch(0, 5));
    wait_for("the retry", Duration::from_secs(10), || {
        rx.arrivals().len() == 2
    })
    .await;
    h.clone().shutdown().await;
    let a = rx.arrivals();
    let gap = a[1].at - a[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert_eq!((sent(&t, "otlphttp"), failed_all(&t, "otlphttp")), (10, 0));
    assert_eq!(rx.accepted_points(), 10);
}

#[tokio::test]
async fn http_400_is_not_retried_and_counted() {
    let rx = Receiver::new([Reply::Http(400, None)]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let h = start(&t, "otlphttp", ExporterConfig::OtlpHttp(http(addr.port())));
    h.submit(batch(0, 5));
    h.submit(batch(1, 3));
    h.clone().shutdown().await;
    assert_eq!(rx.arrivals().len(), 2);
    assert_eq!(failed(&t, "otlphttp", "400"), 10);
    assert_eq!(sent(&t, "otlphttp"), 6);
    assert_eq!(rx.accepted_points(), 6);
    // The second batch succeeded, so the exporter is healthy again.
    assert!(h.health().delivering);
}

#[tokio::test]
async fn grpc_unavailable_then_ok() {
    let rx = Receiver::new([
        Reply::Grpc(tonic::Code::Unavailable),
        Reply::Grpc(tonic::Code::Unavailable),
        Reply::Ok,
    ]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let h = start(&t, "otlp", ExporterConfig::Otlp(grpc(addr.port())));
    h.submit(batch(0, 4));
    h.clone().shutdown().await;
    assert_eq!(rx.arrivals().len(), 3);
    assert_eq!((sent(&t, "otlp"), failed_all(&t, "otlp")), (8, 0));
    assert_eq!(rx.accepted_points(), 8);
}

#[tokio::test]
async fn grpc_permanent_error_is_not_retried() {
    let rx = Receiver::new([Reply::Grpc(tonic::Code::InvalidArgument)]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let h = start(&t, "otlp", ExporterConfig::Otlp(grpc(addr.port())));
    h.submit(batch(0, 4));
    h.clone().shutdown().await;
    assert_eq!(rx.arrivals().len(), 1);
    assert_eq!(failed(&t, "otlp", "invalid_argument"), 8);
    assert_eq!(sent(&t, "otlp"), 0);
    let health = h.health();
    assert!(!health.delivering);
    assert!(health.last_error.unwrap().contains("scripted failure"));
}

#[tokio::test]
async fn partial_success_counts_rejected_points_without_retry() {
    let rx = Receiver::new([Reply::Partial(3)]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let h = start(&t, "otlp", ExporterConfig::Otlp(grpc(addr.port())));
    h.submit(batch(0, 5));
    h.clone().shutdown().await;
    assert_eq!(rx.arrivals().len(), 1);
    assert_eq!((sent(&t, "otlp"), failed(&t, "otlp", "rejected")), (7, 3));
    assert_eq!(rx.accepted_points(), 7);

    let rx = Receiver::new([Reply::Partial(4)]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
    let mut c = http(addr.port());
    c.encoding = HttpEncoding::Json;
    let h = start(&t, "otlphttp/json", ExporterConfig::OtlpHttp(c));
    h.submit(batch(0, 5));
    h.clone().shutdown().await;
    assert_eq!(
        (
            sent(&t, "otlphttp/json"),
            failed(&t, "otlphttp/json", "rejected")
        ),
        (6, 4)
    );
}

#[tokio::test]
async fn a_receiver_that_hangs_past_the_timeout_is_retried() {
    for grpc_too in [false, true] {
        let rx = Receiver::new([Reply::Hang(Duration::from_secs(3)), Reply::Ok]);
        let t = Telemetry::new();
        let cfg = if grpc_too {
            let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
            let mut c = grpc(addr.port());
            c.timeout = Some(Duration::from_millis(300));
            ExporterConfig::Otlp(c)
        } else {
            let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
            let mut c = http(addr.port());
            c.timeout = Some(Duration::from_millis(300));
            ExporterConfig::OtlpHttp(c)
        };
        let h = start(&t, "x", cfg);
        let started = tokio::time::Instant::now();
        h.submit(batch(0, 5));
        h.clone().shutdown().await;
        // Delivered by the second try, well before the hang would end.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(rx.arrivals().len(), 2);
        assert_eq!((sent(&t, "x"), failed_all(&t, "x")), (10, 0));
        assert_eq!(rx.accepted_points(), 10);
    }
}

#[tokio::test]
async fn retries_exhausted_are_counted_with_the_last_error() {
    let port = free_port();
    let t = Telemetry::new();
    let mut c = http(port);
    c.retry_on_failure.max_elapsed_time = Duration::from_millis(700);
    let h = start(&t, "otlphttp", ExporterConfig::OtlpHttp(c));
    h.submit(batch(0, 6));
    h.clone().shutdown().await;
    assert_eq!(failed(&t, "otlphttp", "connection"), 12);
    assert_eq!(sent(&t, "otlphttp"), 0);
    let (code, body) = flowscope_exporters::healthz(&[h]);
    assert_eq!(code, 503);
    assert!(body.contains(r#""delivering":false"#), "{body}");
}

#[tokio::test]
async fn grpc_resource_exhausted_with_retry_info_waits_the_given_delay() {
    let rx = Receiver::new([
        Reply::GrpcRetryInfo(tonic::Code::ResourceExhausted, Duration::from_millis(1500)),
        Reply::Ok,
    ]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let h = start(&t, "otlp", ExporterConfig::Otlp(grpc(addr.port())));
    h.submit(batch(0, 2));
    h.clone().shutdown().await;
    let a = rx.arrivals();
    assert_eq!(a.len(), 2);
    // The backoff alone would have waited about 100 ms.
    assert!(
        a[1].at - a[0].at >= Duration::from_millis(1500),
        "{:?}",
        a[1].at - a[0].at
    );
    assert_eq!((sent(&t, "otlp"), failed_all(&t, "otlp")), (4, 0));
}

#[tokio::test]
async fn healthz_is_served_over_http() {
    let rx = Receiver::new([Reply::Http(401, None)]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let h = start(&t, "otlphttp", ExporterConfig::OtlpHttp(http(addr.port())));
    let port = free_port();
    let server =
        flowscope_exporters::serve_healthz(&format!("127.0.0.1:{port}"), vec![h.clone()], &t)
            .unwrap();
    let get = move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let before = tokio::task::spawn_blocking(get).await.unwrap();
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    assert!(before.contains(r#""status":"ok""#), "{before}");
    h.submit(batch(0, 1));
    wait_for("the 401", Duration::from_secs(5), || {
        failed(&t, "otlphttp", "401") == 2
    })
    .await;
    let after = tokio::task::spawn_blocking(get).await.unwrap();
    assert!(after.starts_with("HTTP/1.1 503"), "{after}");
    assert!(
        after.contains(r#""exporter":"otlphttp""#) && after.contains("HTTP 401"),
        "{after}"
    );
    server.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn http_cumulative_json_keeps_running_totals() {
    let rx = Receiver::new([]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
    let t = Telemetry::new();
    let mut c = http(addr.port());
    c.encoding = HttpEncoding::Json;
    c.temporality = Some(Temporality::Cumulative);
    let h = start(&t, "otlphttp", ExporterConfig::OtlpHttp(c));
    for i in 0..3 {
        h.submit(batch(i, 2));
    }
    h.clone().shutdown().await;
    assert_eq!((sent(&t, "otlphttp"), failed_all(&t, "otlphttp")), (12, 0));
    let start = 1_700_000_000_000_000_000;
    let io = io_values(&rx.accepted());
    // Port 1001: 1001, then +2001, then +3001; always from the first start.
    let p1001: Vec<_> = io
        .iter()
        .filter(|x| x.0 == 1001)
        .map(|x| (x.1, x.2))
        .collect();
    assert_eq!(p1001, [(1001, start), (3002, start), (6003, start)]);
}
