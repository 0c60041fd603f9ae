//! The Network Path page's API at 1,000 dynamic tests over an hour: the
//! memory the `ui` store holds for them (counting allocator, printed once)
//! and the time `/api/paths`, `/api/path` and `/api/health` take over the
//! whole hour (criterion).
//!
//! Each test is a client workload (one of 50 services) tracing a server
//! with 8 hops, run every 10 minutes (the dynamic tests' default
//! `interval`), its runs spread over the interval: 6 runs per test in the
//! hour, 6,000 batches. A run has the contract's points: reachable, hops,
//! RTT histogram, probes sent and lost, jitter, route changes, and per hop
//! probes sent and lost and an RTT histogram: 31 series per test, 31,000
//! in all (`max_series` is raised to 40,000 for it). Every tenth test
//! changes its route at half time (a ninth hop series set).
//!
//! Run: `cargo bench -p flowscope-exporters --bench ui_paths`
//! (numbers in docs/benchmarks.md).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flowscope_exporters::ui::{Ui, api};
use flowscope_model::counting_alloc::{CountingAlloc, live_bytes};
use flowscope_model::hist::RTT_BOUNDS;
use flowscope_model::metrics::{
    PATH_HOP_PROBES_LOST, PATH_HOP_PROBES_SENT, PATH_HOP_RTT, PATH_HOPS, PATH_JITTER,
    PATH_PROBES_LOST, PATH_PROBES_SENT, PATH_REACHABLE, PATH_ROUTE_CHANGES, PATH_RTT,
};
use flowscope_model::names::{path, resource};
use flowscope_model::{Attrs, Histogram, MetricBatch, Point, PointValue};
use flowscope_otel_config::exporters::UiExporterConfig;

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

const TESTS: u64 = 1000;
const HOPS: u64 = 8;
const INTERVAL_S: u64 = 600;
const T0: u64 = 1_000_000;

fn hist(ms: f64) -> PointValue {
    let mut h = Histogram::new(Arc::from(RTT_BOUNDS));
    for k in 0..3 {
        h.record((ms + k as f64 * 0.1) / 1000.0);
    }
    PointValue::Histogram(h)
}

/// Run `r` (0..6) of test `t`.
fn run(t: u64, r: u64, resources: &[Arc<Attrs>]) -> MetricBatch {
    let end = (T0 + r * INTERVAL_S + t * INTERVAL_S / TESTS + 5) * 1_000_000_000;
    let mut b = MetricBatch::new(end - 5_000_000_000, end);
    let res = &resources[(t % 50) as usize];
    let base = Attrs::new()
        .with(
            path::SERVER_ADDRESS,
            format!("10.{}.{}.{}", t / 65536, (t / 256) % 256, t % 256),
        )
        .with(path::SERVER_PORT, 443u16)
        .with(path::PROTOCOL, "tcp")
        .with(path::TEST, path::DYNAMIC);
    let mut push = |metric, attrs: Attrs, value| {
        b.points.push(Point {
            resource: res.clone(),
            metric,
            attrs,
            value,
        })
    };
    let changed = t.is_multiple_of(10) && r >= 3;
    push(PATH_REACHABLE, base.clone(), PointValue::Int(1));
    push(PATH_HOPS, base.clone(), PointValue::Int(HOPS));
    push(PATH_RTT, base.clone(), hist(8.0));
    push(PATH_PROBES_SENT, base.clone(), PointValue::Int(20));
    push(PATH_PROBES_LOST, base.clone(), PointValue::Int(r % 2));
    push(PATH_JITTER, base.clone(), PointValue::Double(0.0004));
    push(
        PATH_ROUTE_CHANGES,
        base.clone(),
        PointValue::Int(u64::from(t.is_multiple_of(10) && r == 3)),
    );
    for h in 1..=HOPS {
        let addr = if changed && h == 4 {
            format!("192.0.2.{}", t % 250)
        } else {
            format!("172.16.{h}.{}", t % 250)
        };
        let a = base
            .clone()
            .with(path::HOP_INDEX, h as i64)
            .with(path::HOP_ADDRESS, addr);
        push(PATH_HOP_PROBES_SENT, a.clone(), PointValue::Int(3));
        push(PATH_HOP_PROBES_LOST, a.clone(), PointValue::Int(0));
        push(PATH_HOP_RTT, a, hist(h as f64));
    }
    b
}

fn bench(c: &mut Criterion) {
    let resources: Vec<Arc<Attrs>> = (0..50)
        .map(|s| {
            Arc::new(
                Attrs::new()
                    .with(resource::SERVICE_NAME, format!("service-{s}"))
                    .with(resource::HOST_NAME, "node-7"),
            )
        })
        .collect();
    let before = live_bytes();
    let cfg = UiExporterConfig {
        max_series: 40_000,
        ..UiExporterConfig::default()
    };
    let ui = Ui::new(&cfg, &|_| None).unwrap();
    // Runs in time order, as the receiver sends them.
    let mut runs: Vec<(u64, u64)> = (0..6)
        .flat_map(|r| (0..TESTS).map(move |t| (r, t)))
        .collect();
    runs.sort_by_key(|(r, t)| r * INTERVAL_S * TESTS + t * INTERVAL_S);
    for (r, t) in runs {
        ui.store.lock().unwrap().insert(&run(t, r, &resources));
    }
    let bytes = live_bytes() - before;
    {
        let st = ui.store.lock().unwrap();
        assert_eq!(st.dropped(), 0);
        println!(
            "ui store: {} series, {} slots for 1,000 dynamic tests over 1 h: {:.1} MiB",
            st.series_count(),
            st.slot_count(),
            bytes as f64 / 1048576.0,
        );
    }
    let list = api::answer(&ui, "paths", &api::Params::parse("range=1h"));
    assert_eq!(list.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(json["tests"].as_array().unwrap().len(), TESTS as usize);
    let id = json["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["route_changes"] == 1)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let detail = format!("range=1h&id={id}");
    let mut g = c.benchmark_group("ui_paths_1000_tests_1h");
    g.sample_size(10);
    for (name, p, query) in [
        ("paths", "paths", "range=1h"),
        ("path", "path", detail.as_str()),
        ("health", "health", "range=1h"),
    ] {
        let params = api::Params::parse(query);
        let r = api::answer(&ui, p, &params);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        g.bench_function(name, |b| b.iter(|| black_box(api::answer(&ui, p, &params))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
