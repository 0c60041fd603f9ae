//! `otel.component.type` of every exporter as built from config: the
//! registry's value where it has one (the OTLP exporters by transport and
//! body encoding, Prometheus), the sink's Rust type path otherwise, as the
//! registry's note on the attribute asks. Read from the queue-capacity level
//! each exporter reports when it is built; the expected attribute values
//! are spelt out here so that a misspelt type fails.

use flowscope_exporters::build_with_env;
use flowscope_model::names::attr;
use flowscope_model::telemetry::EXPORTER_QUEUE_CAPACITY;
use flowscope_model::{Attrs, Context, Telemetry};
use flowscope_otel_config::load_str_with_env;

#[tokio::test]
async fn each_exporter_names_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let config = format!(
        "receivers:
  ebpf:
exporters:
  otlp_grpc/a:
    endpoint: http://127.0.0.1:1
    sending_queue:
      queue_size: 7
  otlphttp/b:
    endpoint: http://127.0.0.1:1
  otlp_http/c:
    endpoint: http://127.0.0.1:1
    encoding: json
  prometheus:
    endpoint: 127.0.0.1:0
  file:
    path: {}
  console:
  ui:
    endpoint: 127.0.0.2:0
  prometheusremotewrite/fleet:
    endpoint: http://127.0.0.1:1/api/v1/write
    sending_queue:
      queue_size: 9
service:
  pipelines:
    metrics:
      receivers: [ebpf]
      exporters: [otlp_grpc/a, otlphttp/b, otlp_http/c, prometheus, file, console, ui, prometheusremotewrite/fleet]
",
        path.display()
    );
    let loaded = load_str_with_env(&config, "types.yaml", &|_| None).unwrap();
    let t = Telemetry::new();
    let ctx = Context::with_telemetry(t.clone());
    let mut handles = Vec::new();
    for (id, c) in &loaded.config.exporters {
        handles.push(build_with_env(id, c, &ctx, &|_| None).unwrap());
    }
    let level = |ty: &str, id: &str| {
        let a = Attrs::new()
            .with(attr::COMPONENT_TYPE, ty)
            .with(attr::COMPONENT_NAME, id);
        t.level(EXPORTER_QUEUE_CAPACITY, &a)
    };
    assert_eq!(level("otlp_grpc_metric_exporter", "otlp_grpc/a"), Some(7));
    assert_eq!(level("otlp_http_metric_exporter", "otlphttp/b"), Some(100));
    assert_eq!(
        level("otlp_http_json_metric_exporter", "otlp_http/c"),
        Some(100)
    );
    assert_eq!(
        level("prometheus_http_text_metric_exporter", "prometheus"),
        Some(64)
    );
    assert_eq!(
        level("flowscope_exporters::file::FileSink", "file"),
        Some(64)
    );
    assert_eq!(
        level("flowscope_exporters::console::ConsoleSink", "console"),
        Some(64)
    );
    assert_eq!(
        level(
            "flowscope_exporters::remote_write::RemoteWriteSink",
            "prometheusremotewrite/fleet"
        ),
        Some(9)
    );
    assert!(level("flowscope_exporters::ui::UiSink", "ui").is_some());
    for h in handles {
        h.shutdown().await;
    }
}
