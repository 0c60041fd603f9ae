//! The `file` exporter through the public seam: `build`, `submit`,
//! `shutdown`, then the file read back as OTLP JSON.

use std::path::Path;
use std::sync::Arc;

use flowscope_exporters::{build, json::request_from_json};
use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE};
use flowscope_model::names::{attr, resource};
use flowscope_model::telemetry::{EXPORTER_FAILED, EXPORTER_SENT};
use flowscope_model::{Attrs, Context, MetricBatch, Point, PointValue, Telemetry};
use flowscope_otel_config::exporters::{FileExporterConfig, Rotation};
use flowscope_otel_config::{ComponentId, ExporterConfig};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

fn config(path: &Path, max_megabytes: u64, max_backups: u32) -> ExporterConfig {
    ExporterConfig::File(FileExporterConfig {
        path: path.to_path_buf(),
        rotation: Rotation {
            max_megabytes,
            max_backups,
        },
    })
}

/// `n` client flows of `service`, each sending `bytes` to a distinct peer port.
fn batch(service: &str, n: usize, bytes: u64) -> Arc<MetricBatch> {
    let r = Arc::new(Attrs::new().with(resource::SERVICE_NAME, service));
    let mut b = MetricBatch::new(1_000_000_000, 11_000_000_000);
    for i in 0..n {
        let a = Attrs::new()
            .with(attr::FLOW_ROLE, "client")
            .with(attr::PEER_ADDRESS, "198.18.0.2")
            .with(attr::PEER_PORT, 1000 + i as i64);
        b.points.push(Point {
            resource: r.clone(),
            metric: FLOW_IO,
            attrs: a.clone().with(attr::IO_DIRECTION, attr::TRANSMIT),
            value: PointValue::Int(bytes),
        });
        b.points.push(Point {
            resource: r.clone(),
            metric: TCP_ACTIVE,
            attrs: a,
            value: PointValue::Int(1),
        });
    }
    Arc::new(b)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn writes_one_parseable_request_per_batch_with_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let t = Telemetry::new();
    let id = ComponentId::new("file").unwrap();
    let h = build(
        &id,
        &config(&path, 100, 3),
        &Context::with_telemetry(t.clone()),
    )
    .unwrap();
    h.submit(batch("checkout", 2, 1_000_000));
    h.submit(batch("cart", 1, 250_000));
    h.clone().shutdown().await;

    let lines = lines(&path);
    assert_eq!(lines.len(), 2);
    let req = request_from_json(&lines[0]).unwrap();
    assert_eq!(req.resource_metrics.len(), 1);
    let sm = &req.resource_metrics[0].scope_metrics[0];
    let Some(metric::Data::Sum(io)) = &sm.metrics[0].data else {
        panic!("no sum")
    };
    let values: Vec<_> = io.data_points.iter().map(|p| p.value).collect();
    let v = Some(number_data_point::Value::AsInt(1_000_000));
    assert_eq!(values, [v, v]);
    // 64-bit integers are JSON strings in the OTLP mapping.
    let raw: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let dp = &raw["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0];
    assert_eq!(dp["asInt"], "250000");
    assert_eq!(dp["timeUnixNano"], "11000000000");

    let ex = file_component("file");
    assert_eq!(t.total(EXPORTER_SENT, &ex), 4 + 2);
    assert_eq!(t.total_matching(EXPORTER_FAILED, &ex), 0);
}

#[tokio::test]
async fn rotates_at_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let t = Telemetry::new();
    let id: ComponentId = "file/rot".parse().unwrap();
    let h = build(
        &id,
        &config(&path, 1, 1),
        &Context::with_telemetry(t.clone()),
    )
    .unwrap();
    // Each batch encodes to well over half a MiB, so every batch after the
    // first starts a new file; with one backup, 3 batches leave 2 files.
    let one = batch("svc", 1000, 7);
    for _ in 0..3 {
        h.submit(one.clone());
    }
    h.shutdown().await;
    let current = lines(&path);
    let backup = lines(&dir.path().join("m.jsonl.1"));
    assert_eq!((current.len(), backup.len()), (1, 1));
    assert!(
        current[0].len() > 512 * 1024 && current[0].len() < 1024 * 1024,
        "{}",
        current[0].len()
    );
    assert!(!dir.path().join("m.jsonl.2").exists());
    for l in current.iter().chain(backup.iter()) {
        let req = request_from_json(l).unwrap();
        assert_eq!(flowscope_exporters::encode::request_points(&req), 2000);
    }
    let ex = file_component("file/rot");
    assert_eq!(t.total(EXPORTER_SENT, &ex), 6_000);
}

#[tokio::test]
async fn unwritable_path_is_a_build_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("m.jsonl");
    let id = ComponentId::new("file").unwrap();
    let err = build(&id, &config(&path, 1, 1), &Context::default())
        .err()
        .unwrap();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("exporter `file`") && chain.contains("missing-dir"),
        "{chain}"
    );
}

/// A file exporter's `otel.component.*`: the registry has no type for it,
/// so it is the sink's Rust type path.
fn file_component(id: &str) -> flowscope_model::Attrs {
    flowscope_model::Attrs::new()
        .with(attr::COMPONENT_TYPE, "flowscope_exporters::file::FileSink")
        .with(attr::COMPONENT_NAME, id)
}
