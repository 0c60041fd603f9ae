//! The `ui` exporter at 2,000 series for an hour: the memory the store
//! holds (measured with a counting allocator, printed once) and the time the
//! JSON API takes to answer the map and analytics queries over the whole
//! hour (criterion).
//!
//! Run: `cargo bench -p flowscope-exporters --bench ui`
//! (numbers in docs/benchmarks.md).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flowscope_exporters::ui::{Ui, api};
use flowscope_model::counting_alloc::{CountingAlloc, live_bytes};
use flowscope_model::hist::RTT_BOUNDS;
use flowscope_model::metrics::{
    FLOW_IO, FLOW_PACKETS, TCP_ACTIVE, TCP_CLOSED, TCP_OPENED, TCP_RESETS, TCP_RETRANSMITS, TCP_RTT,
};
use flowscope_model::names::{attr, resource};
use flowscope_model::{Attrs, Histogram, MetricBatch, Point, PointValue, Role};
use flowscope_otel_config::exporters::UiExporterConfig;

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

const SERIES_PER_EDGE: usize = 10;
const EDGES: usize = 200;
const INTERVAL_S: u64 = 10;

/// One 10 s interval of 200 client->server dependencies between 40
/// services, 10 series each (bytes and packets both ways, opened, closed,
/// retransmits, resets, active, an RTT histogram): 2,000 series.
fn batch(i: u64, resources: &[Arc<Attrs>]) -> MetricBatch {
    let end = (1_000_000 + i * INTERVAL_S) * 1_000_000_000;
    let mut b = MetricBatch::new(end - INTERVAL_S * 1_000_000_000, end);
    for e in 0..EDGES {
        let client = &resources[e % 40];
        let server = format!("service-{}", (e * 7 + 1) % 40);
        let a = Attrs::new()
            .with(attr::FLOW_ROLE, Role::Client.as_str())
            .with(attr::NETWORK_TRANSPORT, "tcp")
            .with(attr::PEER_ADDRESS, format!("10.0.{}.{}", e / 200, e % 200))
            .with(attr::PEER_PORT, 443u16)
            .with(attr::PEER_SERVICE_NAME, server)
            .with(attr::LOCALITY, "same_zone");
        let mut push = |metric, attrs: Attrs, value| {
            b.points.push(Point {
                resource: client.clone(),
                metric,
                attrs,
                value,
            })
        };
        for dir in [attr::TRANSMIT, attr::RECEIVE] {
            let d = a.clone().with(attr::IO_DIRECTION, dir);
            push(FLOW_IO, d.clone(), PointValue::Int(10_000 + i));
            push(FLOW_PACKETS, d, PointValue::Int(20));
        }
        push(TCP_OPENED, a.clone(), PointValue::Int(2));
        push(TCP_CLOSED, a.clone(), PointValue::Int(2));
        push(TCP_RETRANSMITS, a.clone(), PointValue::Int(1));
        push(
            TCP_RESETS,
            a.clone().with(attr::IO_DIRECTION, attr::RECEIVE),
            PointValue::Int(1),
        );
        push(TCP_ACTIVE, a.clone(), PointValue::Int(3));
        let mut h = Histogram::new(Arc::from(RTT_BOUNDS));
        for k in 0..4 {
            h.record(0.0002 * (k + 1) as f64);
        }
        push(TCP_RTT, a, PointValue::Histogram(h));
    }
    b
}

fn bench(c: &mut Criterion) {
    let resources: Vec<Arc<Attrs>> = (0..40)
        .map(|s| {
            Arc::new(
                Attrs::new()
                    .with(resource::SERVICE_NAME, format!("service-{s}"))
                    .with(resource::HOST_NAME, "node-7"),
            )
        })
        .collect();
    let before = live_bytes();
    let ui = Ui::new(&UiExporterConfig::default(), &|_| None).unwrap();
    let hour = 3600 / INTERVAL_S;
    for i in 1..=hour {
        let b = batch(i, &resources);
        ui.store.lock().unwrap().insert(&b);
    }
    let bytes = live_bytes() - before;
    {
        let st = ui.store.lock().unwrap();
        assert_eq!(st.series_count(), EDGES * SERIES_PER_EDGE);
        println!(
            "ui store: {} series, {} slots for 1 h (10 s intervals, 10 min full resolution): \
             {:.1} MiB, {:.0} bytes per series",
            st.series_count(),
            st.slot_count(),
            bytes as f64 / 1048576.0,
            bytes as f64 / st.series_count() as f64
        );
    }
    let mut g = c.benchmark_group("ui_api_2000_series_1h");
    g.sample_size(20);
    for (name, path, query) in [
        ("map", "map", "range=1h"),
        ("analytics", "analytics", "range=1h"),
        ("analytics_5m", "analytics", "range=5m"),
        ("health", "health", "range=1h"),
    ] {
        let p = api::Params::parse(query);
        let r = api::answer(&ui, path, &p);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        g.bench_function(name, |b| b.iter(|| black_box(api::answer(&ui, path, &p))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
