//! Tests of the queue and task seam with a sink the test controls.

use std::sync::Arc;
use std::time::Duration;

use flowscope_model::metrics::FLOW_IO;
use flowscope_model::names::attr;
use flowscope_model::telemetry::{
    EXPORTER_FAILED, EXPORTER_QUEUE_CAPACITY, EXPORTER_QUEUE_SIZE, EXPORTER_SENT,
};
use flowscope_model::{Attrs, MetricBatch, Point, PointValue, Telemetry};
use tokio::sync::{Semaphore, mpsc};

use super::*;

/// A batch with `n` points, tagged with `id` as its start time.
fn batch(id: u64, n: usize) -> Arc<MetricBatch> {
    let r = Arc::new(Attrs::new().with("service.name", "t"));
    let mut b = MetricBatch::new(id, id + 1);
    for i in 0..n {
        b.points.push(Point {
            resource: r.clone(),
            metric: FLOW_IO,
            attrs: Attrs::new().with(attr::PEER_PORT, i as i64),
            value: PointValue::Int(1),
        });
    }
    Arc::new(b)
}

/// Reports each batch it starts, then waits for a permit before sending it.
struct Gated {
    started: mpsc::UnboundedSender<u64>,
    gate: Arc<Semaphore>,
}

impl Sink for Gated {
    type Item = MetricBatch;
    async fn export(&mut self, batch: &MetricBatch) -> Outcome {
        let _ = self.started.send(batch.start_unix_nanos);
        match self.gate.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Outcome::failed(batch.points.len() as u64, "closed", "gate".into()),
        }
        Outcome::sent(batch.points.len() as u64)
    }
}

fn component() -> Component {
    Component::new("flowscope_exporters::tests::TestSink", "test")
}

fn ex() -> Attrs {
    component().attrs()
}

fn failed(t: &Telemetry, ty: &str) -> u64 {
    t.total(EXPORTER_FAILED, &ex().with(attr::ERROR_TYPE, ty))
}

#[tokio::test]
async fn full_queue_drops_oldest_and_counts_every_point() {
    let t = Telemetry::new();
    let (tx, mut started) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let h = spawn(
        component(),
        Gated {
            started: tx,
            gate: gate.clone(),
        },
        Box::new(Some),
        QueueSpec {
            capacity: 3,
            shutdown_timeout: Duration::from_secs(30),
            persist: None,
        },
        t.clone(),
        new_health("test"),
    );
    assert_eq!(t.level(EXPORTER_QUEUE_CAPACITY, &ex()), Some(3));
    // Batch 0 (1 point) is taken by the task and held at the gate.
    h.submit(batch(0, 1));
    assert_eq!(started.recv().await, Some(0));
    // Batches 1..=6 with 10, 20, ... 60 points: the queue keeps the last 3.
    for id in 1..=6u64 {
        h.submit(batch(id, id as usize * 10));
    }
    assert_eq!(t.level(EXPORTER_QUEUE_SIZE, &ex()), Some(3));
    assert_eq!(failed(&t, QUEUE_FULL), 10 + 20 + 30);

    gate.add_permits(100);
    h.clone().shutdown().await;
    let order: Vec<u64> = std::iter::from_fn(|| started.try_recv().ok()).collect();
    assert_eq!(order, [4, 5, 6]);
    let sent = t.total(EXPORTER_SENT, &ex());
    assert_eq!(sent, 1 + 40 + 50 + 60);
    let submitted = 1 + 10 + 20 + 30 + 40 + 50 + 60;
    assert_eq!(sent + t.total_matching(EXPORTER_FAILED, &ex()), submitted);
    assert_eq!(t.level(EXPORTER_QUEUE_SIZE, &ex()), Some(0));
    assert!(h.health().delivering);

    // After shutdown a batch is refused and counted, not lost.
    h.submit(batch(7, 5));
    assert_eq!(failed(&t, SHUTDOWN), 5);
}

#[tokio::test(start_paused = true)]
async fn shutdown_bound_counts_what_it_abandons() {
    let t = Telemetry::new();
    let (tx, mut started) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let h = spawn(
        component(),
        Gated { started: tx, gate },
        Box::new(Some),
        QueueSpec {
            capacity: 8,
            shutdown_timeout: Duration::from_millis(500),
            persist: None,
        },
        t.clone(),
        new_health("test"),
    );
    h.submit(batch(0, 4));
    assert_eq!(started.recv().await, Some(0));
    h.submit(batch(1, 6));
    h.submit(batch(2, 7));
    // The gate never opens: after 500 ms (virtual) shutdown gives up on the
    // in-flight batch (4 points) and the two queued ones (13).
    h.shutdown().await;
    assert_eq!(failed(&t, SHUTDOWN), 17);
    assert_eq!(t.total(EXPORTER_SENT, &ex()), 0);
    assert_eq!(t.level(EXPORTER_QUEUE_SIZE, &ex()), Some(0));
}

/// Fails every batch with one error type.
struct Broken;

impl Sink for Broken {
    type Item = MetricBatch;
    async fn export(&mut self, batch: &MetricBatch) -> Outcome {
        Outcome::failed(batch.points.len() as u64, "io", "disk on fire".into())
    }
}

#[tokio::test]
async fn failures_are_counted_and_reported_unhealthy() {
    let t = Telemetry::new();
    let h = spawn(
        component(),
        Broken,
        Box::new(Some),
        QueueSpec {
            capacity: 4,
            shutdown_timeout: Duration::from_secs(5),
            persist: None,
        },
        t.clone(),
        new_health("test"),
    );
    h.submit(batch(0, 3));
    h.submit(batch(1, 2));
    h.clone().shutdown().await;
    assert_eq!(failed(&t, "io"), 5);
    let health = h.health();
    assert!(!health.delivering);
    assert_eq!(health.consecutive_failures, 2);
    assert_eq!(health.last_error.as_deref(), Some("disk on fire"));
}

/// Lines in a file (0 when it cannot be read yet).
fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// Polls `f` on the test's own thread (not an async worker, so a stuck
/// runtime cannot stop the polling) until it holds or `within` passes.
fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A UI query holding the store's lock, and a file exporter whose disk
/// stopped taking writes (a pipe nobody reads), delay no other exporter's
/// intervals: on a runtime of ONE async worker, a third exporter writes
/// every interval while both are stuck, and submitting never waits. Then
/// the UI catches up once the query ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[allow(clippy::await_holding_lock)] // the held lock is the test: a long UI query
async fn a_held_ui_store_and_a_stuck_disk_delay_no_other_export() {
    use flowscope_model::names::value;
    use std::os::unix::fs::OpenOptionsExt;

    let t = Telemetry::new();
    let dir = tempfile::tempdir().unwrap();
    // The stuck disk: a FIFO with a reader that never reads, so opening it
    // succeeds and writes block once the pipe's buffer (64 KiB) is full.
    let fifo = dir.path().join("stuck.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000) // O_NONBLOCK (Linux): the open does not wait for a writer
        .open(&fifo)
        .unwrap();
    let stuck = spawn_batches(
        Component::new(value::COMPONENT_TYPE_FILE, "file/stuck"),
        file::FileSink::new(file::RotatingFile::open(&fifo, 0, 0).unwrap()),
        t.clone(),
    );
    let store = Arc::new(std::sync::Mutex::new(ui::store::Store::new(
        3600 * 1_000_000_000,
        600 * 1_000_000_000,
        100_000,
    )));
    let ui = spawn_batches(
        Component::new(value::COMPONENT_TYPE_UI, "ui"),
        ui::UiSink {
            store: store.clone(),
        },
        t.clone(),
    );
    let out = dir.path().join("ok.jsonl");
    let ok = spawn_batches(
        Component::new(value::COMPONENT_TYPE_FILE, "file/ok"),
        file::FileSink::new(file::RotatingFile::open(&out, 0, 0).unwrap()),
        t.clone(),
    );

    let query = store.lock().unwrap();
    // Five intervals of 2,000 points: each JSON line is far over 64 KiB.
    for i in 1..=5 {
        let b = batch(i * 10_000_000_000, 2000);
        stuck.submit(b.clone());
        ui.submit(b.clone());
        ok.submit(b);
    }
    assert!(
        wait_for(Duration::from_secs(30), || lines(&out) == 5),
        "the healthy exporter got {} of 5 intervals while the UI store was locked \
         and the other file's disk was stuck",
        lines(&out)
    );
    let sent = |id: &str| {
        t.total(
            EXPORTER_SENT,
            &Component::new(value::COMPONENT_TYPE_FILE, id).attrs(),
        )
    };
    assert_eq!(sent("file/ok"), 5 * 2000);
    assert_eq!(sent("file/stuck"), 0, "the pipe took a whole interval");
    // The query ends: the UI files every interval.
    drop(query);
    assert!(wait_for(Duration::from_secs(30), || {
        store.lock().unwrap().slot_count() == 5 * 2000
    }));
    // The disk goes away: the stuck writes fail (EPIPE) and are counted.
    drop(reader);
    for h in [stuck, ui, ok] {
        h.shutdown().await;
    }
    assert_eq!(failed_of(&t, "file/stuck", "io"), 5 * 2000);
}

fn failed_of(t: &Telemetry, id: &str, ty: &str) -> u64 {
    t.total(
        EXPORTER_FAILED,
        &Component::new(flowscope_model::names::value::COMPONENT_TYPE_FILE, id)
            .attrs()
            .with(attr::ERROR_TYPE, ty),
    )
}
