//! TLS and mTLS against loopback receivers, with a CA made at test time.

mod common;

use flowscope_model::Context;
use std::path::Path;
use std::time::Duration;

use common::pki::Pki;
use common::*;
use flowscope_exporters::build_with_env;
use flowscope_model::Telemetry;
use flowscope_otel_config::exporters::{
    OtlpExporterConfig, OtlpHttpExporterConfig, RetryConfig, TlsClientConfig, TlsVersion,
};
use flowscope_otel_config::{ComponentId, ExporterConfig};

fn no_retry() -> RetryConfig {
    RetryConfig {
        enabled: false,
        ..Default::default()
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

async fn run(cfg: ExporterConfig) -> (Telemetry, u64, u64) {
    let t = Telemetry::new();
    let h = build_with_env(
        &"x".parse::<ComponentId>().unwrap(),
        &cfg,
        &Context::with_telemetry(t.clone()),
        &no_env,
    )
    .unwrap();
    h.submit(batch(0, 3));
    h.shutdown().await;
    let (s, f) = (sent(&t, "x"), failed_all(&t, "x"));
    (t, s, f)
}

fn grpc(port: u16, tls: TlsClientConfig) -> ExporterConfig {
    ExporterConfig::Otlp(OtlpExporterConfig {
        endpoint: Some(format!("localhost:{port}")),
        tls,
        retry_on_failure: no_retry(),
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    })
}

fn http(port: u16, tls: TlsClientConfig) -> ExporterConfig {
    ExporterConfig::OtlpHttp(OtlpHttpExporterConfig {
        endpoint: Some(format!("https://localhost:{port}")),
        tls,
        retry_on_failure: no_retry(),
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    })
}

#[tokio::test]
async fn grpc_tls_and_mtls() {
    let pki = Pki::new();
    // Server-authenticated TLS with the test CA.
    let rx = Receiver::new([]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(false))).await;
    assert_eq!(run(grpc(addr.port(), pki.client(true, false))).await.1, 6);
    assert_eq!(rx.accepted_points(), 6);

    // mTLS: with the client certificate it is accepted ...
    let rx = Receiver::new([]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(true))).await;
    assert_eq!(run(grpc(addr.port(), pki.client(true, true))).await.1, 6);
    assert_eq!(rx.accepted_points(), 6);
    // ... without it the handshake fails and the points are counted.
    let (_, s, f) = run(grpc(addr.port(), pki.client(true, false))).await;
    assert_eq!((s, f), (0, 6));
    assert_eq!(rx.accepted_points(), 6);

    // Without the test CA (public roots only) the server is not trusted.
    let (_, s, f) = run(grpc(addr.port(), pki.client(false, true))).await;
    assert_eq!((s, f), (0, 6));
}

#[tokio::test]
async fn http_tls_mtls_and_skip_verify() {
    let pki = Pki::new();
    let rx = Receiver::new([]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(true))).await;
    assert_eq!(run(http(addr.port(), pki.client(true, true))).await.1, 6);
    assert_eq!(rx.accepted_points(), 6);
    let (t, s, f) = run(http(addr.port(), pki.client(true, false))).await;
    assert_eq!((s, f), (0, 6));
    assert_eq!(failed(&t, "x", "connection"), 6);

    let rx = Receiver::new([]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(false))).await;
    let (_, s, f) = run(http(addr.port(), pki.client(false, false))).await;
    assert_eq!((s, f), (0, 6), "public roots must not trust the test CA");
    let skip = TlsClientConfig {
        insecure_skip_verify: true,
        ..Default::default()
    };
    assert_eq!(run(http(addr.port(), skip)).await.1, 6);
    assert_eq!(rx.accepted_points(), 6);
}

#[tokio::test]
async fn bad_tls_files_are_build_errors_naming_the_key() {
    let pki = Pki::new();
    let missing = TlsClientConfig {
        ca_file: Some(Path::new("/nonexistent/ca.pem").into()),
        ..Default::default()
    };
    let t = Telemetry::new();
    let id: ComponentId = "otlp".parse().unwrap();
    let err = build_with_env(
        &id,
        &grpc(4317, missing),
        &Context::with_telemetry(t.clone()),
        &no_env,
    )
    .err()
    .unwrap();
    let mut msg = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    assert!(
        msg.contains("tls.ca_file") && msg.contains("/nonexistent/ca.pem"),
        "{msg}"
    );
    let half = TlsClientConfig {
        cert_file: Some(pki.path("client.pem")),
        ..Default::default()
    };
    let err = build_with_env(&id, &http(4318, half), &Context::with_telemetry(t), &no_env)
        .err()
        .unwrap();
    let src = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        src.contains("cert_file") && src.contains("key_file"),
        "{src}"
    );
}

#[tokio::test]
async fn inline_pem_as_in_the_collector() {
    let pki = Pki::new();
    let rx = Receiver::new([]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(true))).await;
    let inline = TlsClientConfig {
        ca_pem: Some(pki.ca_pem.clone()),
        cert_pem: Some(pki.client.0.clone()),
        key_pem: Some(pki.client.1.clone()),
        ..Default::default()
    };
    assert_eq!(run(http(addr.port(), inline.clone())).await.1, 6);
    assert_eq!(rx.accepted_points(), 6);
    // Same over gRPC.
    let rx = Receiver::new([]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(true))).await;
    assert_eq!(run(grpc(addr.port(), inline)).await.1, 6);
    assert_eq!(rx.accepted_points(), 6);
}

#[tokio::test]
async fn min_and_max_version_decide_the_handshake() {
    let pki = Pki::new();
    let rx = Receiver::new([]);
    let mut server = pki.server_tls(false);
    server.tls12_only = true;
    let addr = http_receiver("127.0.0.1:0", rx.clone(), Some(server)).await;
    let with = |min, max| TlsClientConfig {
        min_version: min,
        max_version: max,
        ..pki.client(true, false)
    };
    // Default (1.2 to 1.3) and max 1.2 reach a TLS 1.2-only server ...
    assert_eq!(run(http(addr.port(), with(None, None))).await.1, 6);
    assert_eq!(
        run(http(addr.port(), with(None, Some(TlsVersion::V1_2))))
            .await
            .1,
        6
    );
    // ... min 1.3 does not.
    let (t, s, f) = run(http(addr.port(), with(Some(TlsVersion::V1_3), None))).await;
    assert_eq!((s, f), (0, 6));
    assert_eq!(failed(&t, "x", "connection"), 6);
    assert_eq!(rx.accepted_points(), 12);
    // A TLS 1.3 server takes min 1.3.
    let rx = Receiver::new([]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(false))).await;
    assert_eq!(
        run(http(addr.port(), with(Some(TlsVersion::V1_3), None)))
            .await
            .1,
        6
    );
    assert_eq!(rx.accepted_points(), 6);
}
