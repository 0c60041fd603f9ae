use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::load_str_with_env;

fn exporter(yaml_body: &str, id: &str) -> Result<ExporterConfig, String> {
    let text = format!(
        "receivers:\n  ebpf:\nexporters:\n  {id}:\n{yaml_body}\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [{id}]\n"
    );
    let loaded = load_str_with_env(&text, "t.yaml", &|v| (v == "KEY").then(|| "s3cret".into()))
        .map_err(|e| e.to_string())?;
    let cid: ComponentId = id.parse().map_err(|e: crate::IdError| e.to_string())?;
    loaded
        .config
        .exporters
        .get(&cid)
        .cloned()
        .ok_or_else(|| "missing".to_string())
}

#[test]
fn otlp_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["gateway".to_owned()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let c = exporter(
        &format!("    endpoint: gateway:4317\n    tls:\n      ca_file: {}\n    headers:\n      api-key: ${{env:KEY}}\n    compression: zstd\n    timeout: 3s\n    temporality: cumulative\n    sending_queue:\n      queue_size: 7\n      storage: /tmp/flowscope-test-q\n    retry_on_failure:\n      initial_interval: 1s\n      multiplier: 2", ca.display()),
        "otlp/gw",
    )
    .unwrap();
    let ExporterConfig::Otlp(c) = c else {
        panic!("not otlp: {c:?}")
    };
    assert_eq!(c.endpoint.as_deref(), Some("gateway:4317"));
    assert_eq!(c.tls.ca_file, Some(ca.clone()));
    assert_eq!(c.headers.get("api-key").map(String::as_str), Some("s3cret"));
    assert_eq!(c.compression, Some(Compression::Zstd));
    assert_eq!(c.timeout, Some(Duration::from_secs(3)));
    assert_eq!(c.temporality, Some(Temporality::Cumulative));
    assert_eq!(c.sending_queue.queue_size, 7);
    assert_eq!(
        c.sending_queue.storage,
        Some(PathBuf::from("/tmp/flowscope-test-q"))
    );
    assert_eq!(c.sending_queue.max_storage_mib, 256);
    assert_eq!(c.retry_on_failure.initial_interval, Duration::from_secs(1));
    assert_eq!(c.retry_on_failure.multiplier, 2.0);
    assert_eq!(c.retry_on_failure.max_interval, Duration::from_secs(30));
}

#[test]
fn otlphttp_and_prometheus_defaults() {
    let ExporterConfig::OtlpHttp(h) = exporter("    encoding: json", "otlphttp").unwrap() else {
        panic!("not otlphttp")
    };
    assert_eq!(h.encoding, HttpEncoding::Json);
    assert_eq!(h.endpoint, None);
    assert!(h.retry_on_failure.enabled);
    let ExporterConfig::Prometheus(p) = exporter("    namespace: fs", "prometheus").unwrap() else {
        panic!("not prometheus")
    };
    assert_eq!(p.endpoint, "127.0.0.1:9464");
    assert_eq!(p.namespace.as_deref(), Some("fs"));
    assert!(p.resource_to_telemetry_conversion.enabled);
}

#[test]
fn prometheusremotewrite_defaults_values_and_errors() {
    let ExporterConfig::PrometheusRemoteWrite(c) = exporter(
        "    endpoint: http://127.0.0.1:9090/api/v1/write",
        "prometheusremotewrite",
    )
    .unwrap() else {
        panic!("not prometheusremotewrite")
    };
    assert_eq!(
        c,
        PrometheusRemoteWriteExporterConfig::new("http://127.0.0.1:9090/api/v1/write")
    );
    assert!(!c.resource_to_telemetry_conversion.enabled);
    assert!(c.target_info.enabled && c.add_metric_suffixes);
    assert_eq!(
        (c.timeout, c.max_batch_size_bytes),
        (Duration::from_secs(5), 3_000_000)
    );
    let ExporterConfig::PrometheusRemoteWrite(c) = exporter(
        "    endpoint: https://mimir:443/api/v1/push\n    headers:\n      X-Scope-OrgID: ${env:KEY}\n    timeout: 2s\n    namespace: fs\n    add_metric_suffixes: false\n    external_labels:\n      cluster: eu\n    resource_to_telemetry_conversion:\n      enabled: true\n    target_info:\n      enabled: false\n    remote_write_queue:\n      num_consumers: 5\n    max_batch_size_bytes: 65536\n    sending_queue:\n      storage: /tmp/flowscope-rw-q\n    retry_on_failure:\n      max_elapsed_time: 1m",
        "prometheusremotewrite/mimir",
    )
    .unwrap() else {
        panic!("not prometheusremotewrite")
    };
    assert_eq!(
        c.headers.get("X-Scope-OrgID").map(String::as_str),
        Some("s3cret")
    );
    assert_eq!(
        c.external_labels.get("cluster").map(String::as_str),
        Some("eu")
    );
    assert!(c.resource_to_telemetry_conversion.enabled && !c.target_info.enabled);
    assert!(!c.add_metric_suffixes);
    assert_eq!(c.namespace.as_deref(), Some("fs"));
    assert_eq!(c.max_batch_size_bytes, 65536);
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(c.retry_on_failure.max_elapsed_time, Duration::from_secs(60));
    assert_eq!(
        ExporterConfig::PrometheusRemoteWrite(c).unused_collector_keys(),
        vec!["remote_write_queue.num_consumers".to_string()]
    );
    let e = exporter("    {}", "prometheusremotewrite").unwrap_err();
    assert!(e.contains("endpoint"), "{e}");
    let e = exporter(
        "    endpoint: http://x:1/w\n    external_labels:\n      __x: y",
        "prometheusremotewrite",
    )
    .unwrap_err();
    assert!(
        e.contains("external_labels") && e.contains("reserved"),
        "{e}"
    );
    let e = exporter(
        "    endpoint: http://x:1/w\n    external_labels:\n      a-b: y",
        "prometheusremotewrite",
    )
    .unwrap_err();
    assert!(e.contains("not a Prometheus label name"), "{e}");
    let e = exporter(
        "    endpoint: http://x:1/w\n    max_batch_size_bytes: 10",
        "prometheusremotewrite",
    )
    .unwrap_err();
    assert!(
        e.contains("max_batch_size_bytes") && e.contains("1024"),
        "{e}"
    );
    let e = exporter(
        "    endpoint: http://x:1/w\n    wal:\n      directory: /tmp",
        "prometheusremotewrite",
    )
    .unwrap_err();
    assert!(e.contains("wal"), "{e}");
}

#[test]
fn ui_defaults_and_values() {
    let ExporterConfig::Ui(u) = exporter("    {}", "ui").unwrap() else {
        panic!("not ui")
    };
    assert_eq!(u, UiExporterConfig::default());
    assert_eq!(u.endpoint, "127.0.0.1:8686");
    assert_eq!(u.retention, Duration::from_secs(3600));
    let ExporterConfig::Ui(u) = exporter(
        "    endpoint: 0.0.0.0:9000\n    retention: 30m\n    auth:\n      token: ${env:KEY}\n    health:\n      retransmit_ratio: 0.1",
        "ui",
    )
    .unwrap() else {
        panic!("not ui")
    };
    assert_eq!(u.auth.token.as_deref(), Some("s3cret"));
    assert_eq!(u.retention, Duration::from_secs(1800));
    assert_eq!(u.health.retransmit_ratio, 0.1);
    assert_eq!(u.health.min_packets, 100);
    let e = exporter("    retention: 2d", "ui").unwrap_err();
    assert!(
        e.contains("retention") && e.contains("between 1m and 24h"),
        "{e}"
    );
    let e = exporter("    health:\n      path_loss_ratio: 3", "ui").unwrap_err();
    assert!(e.contains("path_loss_ratio"), "{e}");
    let ExporterConfig::Ui(u) = exporter(
        "    health:\n      baseline_ratio: 4\n      baseline_min_count: 7\n      \
         churn_connections_per_second: 2.5\n      churn_short_ratio: 0.8",
        "ui",
    )
    .unwrap() else {
        panic!("not ui")
    };
    assert_eq!(u.health.baseline_ratio, 4.0);
    assert_eq!(u.health.baseline_min_count, 7);
    assert_eq!(u.health.churn_connections_per_second, 2.5);
    assert_eq!(u.health.churn_short_ratio, 0.8);
    for (yaml, key, says) in [
        ("baseline_ratio: 0.5", "baseline_ratio", "at least 1"),
        ("baseline_min_count: 0", "baseline_min_count", "at least 1"),
        (
            "churn_connections_per_second: 0",
            "churn_connections_per_second",
            "above 0",
        ),
        (
            "churn_short_ratio: 1.5",
            "churn_short_ratio",
            "between 0 and 1",
        ),
    ] {
        let e = exporter(&format!("    health:\n      {yaml}"), "ui").unwrap_err();
        // The file, the line and the key path.
        assert!(
            e.contains("t.yaml:") && e.contains(&format!("health.{key}")) && e.contains(says),
            "{yaml}: {e}"
        );
    }
}

#[test]
fn rejects_bad_values_with_their_key() {
    let e = exporter("    encoding: json", "otlp").unwrap_err();
    assert!(e.contains("encoding"), "{e}");
    let e = exporter(
        "    retry_on_failure:\n      randomization_factor: 2",
        "otlp",
    )
    .unwrap_err();
    assert!(
        e.contains("randomization_factor") && e.contains("between 0 and 1"),
        "{e}"
    );
    let e = exporter("    compression: brotli", "otlphttp").unwrap_err();
    assert!(e.contains("compression"), "{e}");
}
