//! `prometheusremotewrite` benchmark: data points per second translated to
//! Prometheus series, serialized as a `WriteRequest` and snappy-compressed
//! (what the exporter does to every batch at submit time, after the
//! cumulative fold), on one core; plus bytes per data point, printed once.
//!
//! Run: `cargo bench -p flowscope-exporters --bench remote_write`
//! (numbers in docs/benchmarks-exporters.md).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use common::flows_batch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowscope_exporters::prometheus::Options;
use flowscope_exporters::remote_write::{Translation, compress, encode};
use flowscope_exporters::temporality::Cumulative;

const FLOWS: usize = 1000;
/// The default `max_batch_size_bytes`.
const MAX_BYTES: usize = 3_000_000;

fn translation() -> Translation {
    Translation {
        names: Options {
            namespace: None,
            add_metric_suffixes: true,
            resource_labels: false,
        },
        target_info: true,
        external_labels: BTreeMap::from([("cluster".to_string(), "eu-1".to_string())]),
    }
}

fn bench(c: &mut Criterion) {
    let batch = flows_batch(FLOWS);
    // The running totals the exporter encodes (one fold, as at submit).
    let folded = Cumulative::new(Duration::from_secs(300)).update(&batch);
    let points: Vec<_> = folded.into_iter().map(|(p, _)| p).collect();
    let t = translation();
    let enc = encode(&points, batch.time_unix_nanos, &t, MAX_BYTES);
    let wire: usize = enc.requests.iter().map(|r| r.body.len()).sum();
    let raw: Vec<u8> = enc
        .requests
        .iter()
        .flat_map(|r| snap::raw::Decoder::new().decompress_vec(&r.body).unwrap())
        .collect();
    eprintln!(
        "remote write: {} points, {} requests, {:.1} bytes per point uncompressed, {:.1} snappy",
        enc.points,
        enc.requests.len(),
        raw.len() as f64 / enc.points as f64,
        wire as f64 / enc.points as f64
    );
    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.bench_function("encode_compress", |b| {
        b.iter(|| black_box(encode(&points, batch.time_unix_nanos, &t, MAX_BYTES)))
    });
    g.bench_function("snappy_only", |b| b.iter(|| black_box(compress(&raw))));
    g.bench_function("fold_encode_compress", |b| {
        let mut state = Cumulative::new(Duration::from_secs(300));
        b.iter(|| {
            let folded = state.update(&batch);
            black_box(encode(
                folded.iter().map(|(p, _)| p),
                batch.time_unix_nanos,
                &t,
                MAX_BYTES,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
