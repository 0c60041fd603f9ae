//! The persistent queue: an exporter killed with SIGKILL while its backend
//! is down delivers every accepted batch after a restart; a damaged record
//! is skipped with a warning and the others still arrive.
//!
//! The "agent" is this test binary re-run as a child, running the same test
//! with `FLOWSCOPE_QUEUE_HELPER` set: in that role the test becomes the
//! agent ([`agent_child`]), so SIGKILL hits a real separate process. There
//! is no helper `#[test]` of its own, which without the variable could only
//! return at once and pass having checked nothing.

mod common;

use flowscope_model::Context;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use flowscope_exporters::build_with_env;
use flowscope_model::Telemetry;
use flowscope_otel_config::exporters::{OtlpHttpExporterConfig, RetryConfig, SendingQueueConfig};
use flowscope_otel_config::{ComponentId, ExporterConfig};

fn config(port: u16, dir: &Path) -> ExporterConfig {
    ExporterConfig::OtlpHttp(OtlpHttpExporterConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        timeout: Some(Duration::from_secs(2)),
        sending_queue: SendingQueueConfig {
            queue_size: 100,
            storage: Some(dir.to_path_buf()),
            max_storage_mib: 64,
            ..Default::default()
        },
        retry_on_failure: RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(300),
            max_elapsed_time: Duration::from_secs(3600),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Queue records (`*.rec`) in `dir`.
fn records(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rec"))
        .collect();
    v.sort();
    v
}

fn id() -> ComponentId {
    "otlphttp/durable".parse().unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The test that re-runs itself as the agent.
const SIGKILL_TEST: &str = "sigkill_while_backend_down_loses_no_accepted_batch";

/// The child's role: submits `FLOWSCOPE_QUEUE_BATCHES` batches to a dead
/// port, says so on stdout, and waits to be killed.
async fn agent_child(dir: &str) {
    let port: u16 = std::env::var("FLOWSCOPE_QUEUE_PORT")
        .unwrap()
        .parse()
        .unwrap();
    let n: u64 = std::env::var("FLOWSCOPE_QUEUE_BATCHES")
        .unwrap()
        .parse()
        .unwrap();
    let h = build_with_env(
        &id(),
        &config(port, Path::new(dir)),
        &Context::default(),
        &no_env,
    )
    .unwrap();
    for i in 0..n {
        h.submit(batch(i, 10));
    }
    println!("SUBMITTED {n}");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test]
async fn sigkill_while_backend_down_loses_no_accepted_batch() {
    if let Ok(dir) = std::env::var("FLOWSCOPE_QUEUE_HELPER") {
        agent_child(&dir).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", SIGKILL_TEST, "--nocapture", "--test-threads=1"])
        .env("FLOWSCOPE_QUEUE_HELPER", dir.path())
        .env("FLOWSCOPE_QUEUE_PORT", port.to_string())
        .env("FLOWSCOPE_QUEUE_BATCHES", "7")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("SUBMITTED") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "helper exited before submitting"
        );
    }
    // SIGKILL: no shutdown, no flush.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        records(dir.path()).len(),
        7,
        "one record per accepted batch"
    );

    // Restart with the backend up: every batch arrives, in order.
    let rx = Receiver::new([]);
    http_receiver(&format!("127.0.0.1:{port}"), rx.clone(), None).await;
    let t = Telemetry::new();
    let h = build_with_env(
        &id(),
        &config(port, dir.path()),
        &Context::with_telemetry(t.clone()),
        &no_env,
    )
    .unwrap();
    wait_for("7 batches", Duration::from_secs(20), || {
        rx.accepted_points() == 140
    })
    .await;
    h.clone().shutdown().await;
    let io = io_values(&rx.accepted());
    assert_eq!(io.len(), 70);
    for (k, (port, v, _, _)) in io.iter().enumerate() {
        let (b, i) = (k as u64 / 10, k as u64 % 10);
        assert_eq!((*port, *v as u64), (1000 + i as i64, 1000 * (b + 1) + i));
    }
    assert_eq!(sent(&t, "otlphttp/durable"), 140);
    // Delivered records are gone.
    assert_eq!(records(dir.path()).len(), 0);
}

#[tokio::test]
async fn damaged_record_is_skipped_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let t = Telemetry::new();
    // Backend down: three batches go to disk; shutdown leaves them there.
    let h = build_with_env(
        &id(),
        &config(port, dir.path()),
        &Context::with_telemetry(t.clone()),
        &no_env,
    )
    .unwrap();
    for i in 0..3 {
        h.submit(batch(i, 4));
    }
    h.shutdown().await;
    assert_eq!(
        failed_all(&t, "otlphttp/durable"),
        0,
        "batches on disk are not counted as lost"
    );
    let files = records(dir.path());
    assert_eq!(files.len(), 3);
    // Flip a byte in the middle record's payload.
    let mut b = std::fs::read(&files[1]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&files[1], b).unwrap();

    let rx = Receiver::new([]);
    http_receiver(&format!("127.0.0.1:{port}"), rx.clone(), None).await;
    let t = Telemetry::new();
    let h = build_with_env(
        &id(),
        &config(port, dir.path()),
        &Context::with_telemetry(t.clone()),
        &no_env,
    )
    .unwrap();
    wait_for("batches 0 and 2", Duration::from_secs(20), || {
        rx.accepted_points() == 16
    })
    .await;
    h.clone().shutdown().await;
    let io = io_values(&rx.accepted());
    let values: Vec<i64> = io.iter().map(|x| x.1).collect();
    assert_eq!(values, [1000, 1001, 1002, 1003, 3000, 3001, 3002, 3003]);
    // The damaged record was set aside (renamed .bad), not deleted silently.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].ends_with(".bad"), "{left:?}");
    assert_eq!(left[1], "queue.lock");
}

#[tokio::test]
async fn size_cap_drops_oldest_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let t = Telemetry::new();
    let mut cfg = config(port, dir.path());
    if let ExporterConfig::OtlpHttp(c) = &mut cfg {
        c.sending_queue.max_storage_mib = 1;
    }
    let h = build_with_env(&id(), &cfg, &Context::with_telemetry(t.clone()), &no_env).unwrap();
    // ~60 KB per batch: the 1 MiB cap holds about 17 of 40.
    for i in 0..40 {
        h.submit(batch(i, 400));
    }
    let bytes: u64 = records(dir.path())
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(bytes <= 1024 * 1024, "{bytes} bytes on disk");
    let dropped = failed(&t, "otlphttp/durable", "queue_full");
    assert!(dropped > 0 && dropped.is_multiple_of(800), "{dropped}");
    let kept = records(dir.path()).len() as u64;
    // Every batch is either on disk or counted as dropped (one may be in flight, still on disk).
    assert_eq!(kept * 800 + dropped, 40 * 800);
    // A second exporter on the same directory is refused while this one runs.
    let err = build_with_env(&id(), &cfg, &Context::default(), &no_env)
        .err()
        .unwrap();
    let why = std::error::Error::source(&err).unwrap().to_string();
    assert!(why.contains("in use"), "{why}");
    h.shutdown().await;
}
