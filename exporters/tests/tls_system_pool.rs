//! The system CA pool is trusted besides the bundled roots: a CA placed in
//! the pool's directory (`SSL_CERT_DIR`, as OpenSSL and rustls-native-certs
//! read it; `/etc/ssl/certs` by default) lets the exporter reach a server
//! its certificate signed, with no `ca_file`. One test in its own binary,
//! because it changes the process environment the pool is read from.

mod common;

use std::time::Duration;

use common::pki::Pki;
use common::*;
use flowscope_exporters::build_with_env;
use flowscope_model::Telemetry;
use flowscope_otel_config::exporters::{OtlpHttpExporterConfig, RetryConfig, TlsClientConfig};
use flowscope_otel_config::{ComponentId, ExporterConfig};

fn no_env(_: &str) -> Option<String> {
    None
}

async fn deliver(port: u16, tls: TlsClientConfig) -> (u64, u64) {
    let cfg = ExporterConfig::OtlpHttp(OtlpHttpExporterConfig {
        endpoint: Some(format!("https://localhost:{port}")),
        tls,
        retry_on_failure: RetryConfig {
            enabled: false,
            ..Default::default()
        },
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    });
    let t = Telemetry::new();
    let id: ComponentId = "x".parse().unwrap();
    let ctx = flowscope_model::Context::with_telemetry(t.clone());
    let h = build_with_env(&id, &cfg, &ctx, &no_env).unwrap();
    h.submit(batch(0, 3));
    h.shutdown().await;
    (sent(&t, "x"), failed_all(&t, "x"))
}

fn set_pool(dir: &std::path::Path) {
    // SAFETY: the only test of this binary; nothing else reads the
    // environment concurrently (tokio's current-thread runtime).
    unsafe {
        std::env::set_var("SSL_CERT_DIR", dir);
        std::env::set_var("SSL_CERT_FILE", dir.join("none.pem"));
    }
}

#[tokio::test]
async fn a_ca_in_the_system_pool_directory_is_trusted() {
    let pki = Pki::new();
    let other = Pki::new();
    let rx = Receiver::new([]);
    let addr = http_receiver("127.0.0.1:0", rx.clone(), Some(pki.server_tls(false))).await;
    let pool = tempfile::tempdir().unwrap();

    // An empty pool: only the bundled public roots, which do not know the CA.
    set_pool(pool.path());
    assert_eq!(
        deliver(addr.port(), TlsClientConfig::default()).await,
        (0, 6)
    );
    assert_eq!(rx.accepted_points(), 0);

    // The CA copied into the pool directory, as update-ca-certificates does.
    std::fs::write(pool.path().join("flowscope-test-ca.pem"), &pki.ca_pem).unwrap();
    assert_eq!(
        deliver(addr.port(), TlsClientConfig::default()).await,
        (6, 0)
    );
    assert_eq!(rx.accepted_points(), 6);

    // With a CA of its own the exporter trusts only that one ...
    let own = TlsClientConfig {
        ca_pem: Some(other.ca_pem.clone()),
        ..Default::default()
    };
    assert_eq!(deliver(addr.port(), own.clone()).await, (0, 6));
    // ... unless the pool is asked for too, as in the Collector.
    let both = TlsClientConfig {
        include_system_ca_certs_pool: true,
        ..own
    };
    assert_eq!(deliver(addr.port(), both).await, (6, 0));
    assert_eq!(rx.accepted_points(), 12);
}
