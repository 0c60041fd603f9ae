//! Exporter benchmarks: data points per second encoded (OTLP protobuf and
//! JSON) and compressed, and delivered end to end (submit -> queue ->
//! encode -> send -> loopback receiver decodes) over gRPC and HTTP with and
//! without compression; plus bytes on the wire per data point, printed once.
//!
//! Run: `cargo bench -p flowscope-exporters --bench exporters`
//! (numbers in docs/benchmarks-exporters.md).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Receiver, flows_batch, grpc_receiver, http_receiver};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowscope_exporters::{ExporterHandle, build_with_env, encode, json::request_to_json};
use flowscope_model::{Context, MetricBatch};
use flowscope_otel_config::exporters::{
    Compression, HttpEncoding, OtlpExporterConfig, OtlpHttpExporterConfig, SendingQueueConfig,
    TlsClientConfig,
};
use flowscope_otel_config::{ComponentId, ExporterConfig};
use prost::Message;

const FLOWS: usize = 1000;

fn bytes_per_point(batch: &MetricBatch) {
    let enc = encode(batch);
    let n = enc.points as f64;
    let proto = enc.request.encode_to_vec();
    let json = request_to_json(&enc.request).unwrap().into_bytes();
    let gz = |b: &[u8]| {
        flowscope_exporters::http::compress(Compression::Gzip, b.to_vec())
            .unwrap()
            .len()
    };
    let zs = |b: &[u8]| {
        flowscope_exporters::http::compress(Compression::Zstd, b.to_vec())
            .unwrap()
            .len()
    };
    eprintln!(
        "bytes per data point ({} points, {} resources):",
        enc.points,
        enc.request.resource_metrics.len()
    );
    eprintln!("  protobuf        {:7.1}", proto.len() as f64 / n);
    eprintln!("  protobuf+gzip   {:7.1}", gz(&proto) as f64 / n);
    eprintln!("  protobuf+zstd   {:7.1}", zs(&proto) as f64 / n);
    eprintln!("  json            {:7.1}", json.len() as f64 / n);
    eprintln!("  json+gzip       {:7.1}", gz(&json) as f64 / n);
    eprintln!("  json+zstd       {:7.1}", zs(&json) as f64 / n);
}

fn encoding(c: &mut Criterion) {
    let batch = flows_batch(FLOWS);
    bytes_per_point(&batch);
    let points = batch.points.len() as u64;
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(points));
    g.bench_function("build_request", |b| b.iter(|| black_box(encode(&batch))));
    let req = encode(&batch).request;
    g.bench_function("serialize_protobuf", |b| {
        b.iter(|| black_box(req.encode_to_vec()))
    });
    g.bench_function("otlp_protobuf", |b| {
        b.iter(|| black_box(encode(&batch).request.encode_to_vec()))
    });
    g.bench_function("otlp_json", |b| {
        b.iter(|| black_box(request_to_json(&encode(&batch).request).unwrap()))
    });
    let proto = encode(&batch).request.encode_to_vec();
    for (name, comp) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        g.bench_function(format!("compress_{name}"), |b| {
            b.iter(|| black_box(flowscope_exporters::http::compress(comp, proto.clone()).unwrap()))
        });
    }
    g.finish();
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Submits `n` batches (at most 8 queued at a time) and waits until the
/// receiver counted all their points.
async fn run(h: &ExporterHandle, rx: &Receiver, batch: &Arc<MetricBatch>, n: u64) -> Duration {
    let target = rx.counted() + n * batch.points.len() as u64;
    let start = Instant::now();
    for _ in 0..n {
        while h.health().queued >= 8 {
            tokio::task::yield_now().await;
        }
        h.submit(batch.clone());
    }
    while rx.counted() < target {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    start.elapsed()
}

fn delivery(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batch = flows_batch(FLOWS);
    let mut g = c.benchmark_group("deliver_loopback");
    g.throughput(Throughput::Elements(batch.points.len() as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    let queue = SendingQueueConfig {
        queue_size: 16,
        ..Default::default()
    };
    for (name, comp) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
    ] {
        let (h, rx) = rt.block_on(async {
            let rx = Receiver::counting();
            let addr = grpc_receiver("127.0.0.1:0", rx.clone(), None).await;
            let cfg = ExporterConfig::Otlp(OtlpExporterConfig {
                endpoint: Some(format!("127.0.0.1:{}", addr.port())),
                tls: TlsClientConfig {
                    insecure: Some(true),
                    ..Default::default()
                },
                compression: Some(comp),
                sending_queue: queue.clone(),
                ..Default::default()
            });
            let id: ComponentId = "otlp".parse().unwrap();
            (
                build_with_env(&id, &cfg, &Context::default(), &no_env).unwrap(),
                rx,
            )
        });
        g.bench_function(format!("grpc_{name}"), |b| {
            b.iter_custom(|n| rt.block_on(run(&h, &rx, &batch, n)))
        });
        rt.block_on(h.shutdown());
    }
    for (name, enc, comp) in [
        ("proto_none", HttpEncoding::Proto, Compression::None),
        ("proto_gzip", HttpEncoding::Proto, Compression::Gzip),
        ("proto_zstd", HttpEncoding::Proto, Compression::Zstd),
        ("json_gzip", HttpEncoding::Json, Compression::Gzip),
    ] {
        let (h, rx) = rt.block_on(async {
            let rx = Receiver::counting();
            let addr = http_receiver("127.0.0.1:0", rx.clone(), None).await;
            let cfg = ExporterConfig::OtlpHttp(OtlpHttpExporterConfig {
                endpoint: Some(format!("http://127.0.0.1:{}", addr.port())),
                encoding: enc,
                compression: Some(comp),
                sending_queue: queue.clone(),
                ..Default::default()
            });
            let id: ComponentId = "otlphttp".parse().unwrap();
            (
                build_with_env(&id, &cfg, &Context::default(), &no_env).unwrap(),
                rx,
            )
        });
        g.bench_function(format!("http_{name}"), |b| {
            b.iter_custom(|n| rt.block_on(run(&h, &rx, &batch, n)))
        });
        rt.block_on(h.shutdown());
    }
    g.finish();
}

criterion_group!(benches, encoding, delivery);
criterion_main!(benches);
