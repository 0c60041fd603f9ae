//! Issue 8's "Done when": a Collector `otlp_grpc` exporter config with
//! `${OTLP_ENDPOINT}` and a `sending_queue` block loads (with one warning
//! naming the keys flowscope ignores), passes the checks `validate` runs,
//! and delivers exact points to a gRPC receiver on loopback; the same config
//! with a storage extension id gets the clear error.

mod common;

use std::time::Duration;

use common::*;
use flowscope_exporters::{build_with_env, check_with_env};
use flowscope_model::Telemetry;
use flowscope_otel_config::{ComponentId, ExporterConfig, load_str_with_env};

/// As a Collector user writes it (the receiver section is flowscope's).
const CONFIG: &str = "receivers:
  ebpf:
exporters:
  otlp_grpc/gateway:
    endpoint: ${OTLP_ENDPOINT}
    tls:
      insecure: true
    sending_queue:
      enabled: true
      num_consumers: 4
      queue_size: 50
    retry_on_failure:
      enabled: true
      initial_interval: 100ms
service:
  pipelines:
    metrics:
      receivers: [ebpf]
      exporters: [otlp_grpc/gateway]
";

#[tokio::test]
async fn a_collector_otlp_grpc_config_validates_and_delivers() {
    let rx = Receiver::new([]);
    let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
    let endpoint = format!("127.0.0.1:{}", addr.port());
    let env = |name: &str| (name == "OTLP_ENDPOINT").then(|| endpoint.clone());

    let loaded = load_str_with_env(CONFIG, "collector.yaml", &env).unwrap();
    assert_eq!(
        loaded.warnings,
        vec![
            "collector.yaml: Collector settings accepted and ignored (they change nothing in \
             flowscope, see \"Coming from the Collector\" in docs/configuration.md): \
             exporters.otlp_grpc/gateway.sending_queue.enabled, \
             exporters.otlp_grpc/gateway.sending_queue.num_consumers"
                .to_owned()
        ]
    );
    let id: ComponentId = "otlp_grpc/gateway".parse().unwrap();
    let config = &loaded.config.exporters[&id];
    let ExporterConfig::Otlp(otlp) = config else {
        panic!("otlp_grpc is not the gRPC exporter: {config:?}")
    };
    assert_eq!(otlp.endpoint.as_deref(), Some(endpoint.as_str()));
    assert_eq!(otlp.sending_queue.queue_size, 50);
    // What `flowscope validate` adds to loading, with no OTLP variables set.
    let no_env = |_: &str| None;
    check_with_env(&id, config, &no_env).unwrap();

    let t = Telemetry::new();
    let ctx = flowscope_model::Context::with_telemetry(t.clone());
    let h = build_with_env(&id, config, &ctx, &no_env).unwrap();
    // 3 batches of 5 flows: 2 points per flow.
    for i in 0..3 {
        h.submit(batch(i, 5));
    }
    wait_for("30 points accepted", Duration::from_secs(30), || {
        rx.accepted_points() == 30
    })
    .await;
    h.shutdown().await;
    assert_eq!(rx.accepted_points(), 30);
    assert_eq!(sent(&t, "otlp_grpc/gateway"), 30);
    assert_eq!(failed_all(&t, "otlp_grpc/gateway"), 0);
    // The exact values arrived: network.flow.io of batch i, flow j is
    // 1000 * (i + 1) + j.
    let mut io: Vec<(i64, i64)> = io_values(&rx.accepted())
        .into_iter()
        .map(|(port, v, _, _)| (port, v))
        .collect();
    io.sort_unstable();
    let mut want: Vec<(i64, i64)> = (0..3)
        .flat_map(|i| (0..5).map(move |j| (1000 + j, 1000 * (i + 1) + j)))
        .collect();
    want.sort_unstable();
    assert_eq!(io, want);
}

#[test]
fn a_storage_extension_gets_the_clear_error() {
    let text = CONFIG.replace(
        "      queue_size: 50\n",
        "      queue_size: 50\n      storage: file_storage/otlp\n",
    );
    let env = |name: &str| (name == "OTLP_ENDPOINT").then(|| "127.0.0.1:4317".to_owned());
    let err = load_str_with_env(&text, "collector.yaml", &env)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "collector.yaml:12:16: exporters.otlp_grpc/gateway.sending_queue.storage: storage \
         extension `file_storage/otlp` is not defined under `extensions`: define it under \
         `extensions` (`file_storage/otlp: {directory: /var/lib/flowscope/queue}`) and list it \
         in `service.extensions`"
    );
}
