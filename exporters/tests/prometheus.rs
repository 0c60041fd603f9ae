//! The `prometheus` exporter scraped by a real Prometheus (Debian's
//! package, installed by `scripts/bootstrap.sh --test`), started by the
//! test on loopback with its own data directory; its HTTP API must then
//! return the flow series with the exact value.

mod common;

use std::time::Duration;

use common::*;
use flowscope_exporters::build;
use flowscope_model::{Context, Telemetry};
use flowscope_otel_config::exporters::PrometheusExporterConfig;
use flowscope_otel_config::{ComponentId, ExporterConfig};

#[tokio::test]
async fn endpoint_serves_translated_cumulative_series() {
    let port = free_port();
    let cfg = ExporterConfig::Prometheus(PrometheusExporterConfig {
        endpoint: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    let t = Telemetry::new();
    let h = build(
        &"prometheus".parse::<ComponentId>().unwrap(),
        &cfg,
        &Context::with_telemetry(t.clone()),
    )
    .unwrap();
    h.submit(batch(0, 2));
    h.submit(batch(1, 2));
    wait_for("both batches", Duration::from_secs(5), || {
        sent(&t, "prometheus") == 8
    })
    .await;
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert!(status.contains("200"), "{status}");
    let l = |p: u16| {
        format!(
            r#"flowscope_flow_role="client",job="checkout",network_io_direction="transmit",network_peer_address="198.18.0.2",network_peer_port="{p}",otel_scope_name="flowscope",otel_scope_version="{v}",service_name="checkout""#,
            v = env!("CARGO_PKG_VERSION")
        )
    };
    // 1000 + 2000 for port 1000, 1001 + 2001 for port 1001.
    assert!(
        body.contains(&format!(
            "network_flow_io_bytes_total{{{}}} 3000\n",
            l(1000)
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "network_flow_io_bytes_total{{{}}} 3002\n",
            l(1001)
        )),
        "{body}"
    );
    assert!(
        body.contains("# TYPE flowscope_tcp_connection_active gauge\n"),
        "{body}"
    );
    let (status, _) = tokio::task::spawn_blocking(move || http_get(port, "/nope"))
        .await
        .unwrap()
        .unwrap();
    assert!(status.contains("404"), "{status}");
    h.shutdown().await;
}

#[tokio::test]
async fn real_prometheus_scrapes_the_flow_series() {
    let port = free_port();
    let cfg = ExporterConfig::Prometheus(PrometheusExporterConfig {
        endpoint: format!("127.0.0.1:{port}"),
        ..Default::default()
    });
    let t = Telemetry::new();
    let h = build(
        &"prometheus".parse::<ComponentId>().unwrap(),
        &cfg,
        &Context::with_telemetry(t.clone()),
    )
    .unwrap();
    h.submit(batch(4, 3));
    wait_for("the batch", Duration::from_secs(5), || {
        sent(&t, "prometheus") == 6
    })
    .await;

    let prom = start_prometheus(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flowscope\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
        &[],
    )
    .await;
    let prom_port = prom.port;
    let query =
        "/api/v1/query?query=network_flow_io_bytes_total%7Bnetwork_peer_port%3D%221002%22%7D";
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Ok((_, body))) =
            tokio::task::spawn_blocking(move || http_get(prom_port, query)).await
            && body.contains("\"result\":[{")
        {
            last = body;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never returned the series: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    let result = &v["data"]["result"];
    assert_eq!(result.as_array().unwrap().len(), 1, "{last}");
    let series = &result[0];
    // Batch 4, flow 2: 1000 * 5 + 2 bytes.
    assert_eq!(series["value"][1], "5002");
    assert_eq!(series["metric"]["__name__"], "network_flow_io_bytes_total");
    assert_eq!(series["metric"]["service_name"], "checkout");
    assert_eq!(series["metric"]["network_peer_address"], "198.18.0.2");
    // Our `job` label yields to the scrape job (honor_labels is off).
    assert_eq!(series["metric"]["job"], "flowscope");
    assert_eq!(series["metric"]["exported_job"], "checkout");
    h.shutdown().await;
}
