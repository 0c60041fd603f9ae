//! Network Health's rises over the baseline and connection churn (issue
//! 21) with a real agent, real connections in network namespaces and its
//! `ui` exporter's `/api/health`:
//! - a quiet span with 3 refused connects, then a span of the same length
//!   with 30: exactly one rise finding, for that client and server, with
//!   both counts in its evidence;
//! - a client opening 500 short connections gets the churn finding, a
//!   client that sends 50 requests over one connection does not.
//!
//! Every client lives (holds) until the test ends, so the agent names it
//! however late it reads /proc. The pairs are in 198.19.N.0/24
//! ([`NetPair::new_apart`]) and every request asks for that CIDR, so other
//! tests' traffic on the host cannot add to the numbers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowscope_integration::{Agent, Held, NetPair, traffic};
use serde_json::Value;

/// How long the agent may take to show what the traffic did (the machine
/// may be loaded).
const WAIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get_json(port: u16, path: &str) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the ui exporter");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn enc(s: &str) -> String {
    s.replace('/', "%2F")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits (polling the clock) until `ms`.
fn until_ms(ms: u64) {
    while now_ms() < ms {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent with the `ui` exporter on `port` and `health` settings.
fn agent(port: u16, health: &str) -> Agent {
    Agent::start_with(&format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         processors:\n  peer: {{}}\n  locality: {{}}\n\
         exporters:\n  file:\n    path: OUTPUT\n  ui:\n    endpoint: 127.0.0.1:{port}\n    health:\n{health}\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [peer, locality]\n\
         \x20     exporters: [file, ui]\n"
    ))
    .unwrap()
}

fn findings<'a>(h: &'a Value, kind: &str) -> Vec<&'a Value> {
    h["findings"]
        .as_array()
        .map(|f| f.iter().filter(|f| f["kind"] == kind).collect())
        .unwrap_or_default()
}

/// `n` refused connects from `burst` to `addr`, each process held.
fn refused(net: &NetPair, addr: &str, n: usize, held: &mut Vec<Held>) {
    let t = traffic();
    for _ in 0..n {
        let mut c = Held::start(&net.b, "burst", &[&t, "tcp-connect", addr]);
        assert_eq!(c.until("done"), ["ConnectionRefused"]);
        held.push(c);
    }
}

/// Polls the Analytics API until `client` -> `server` has `failed` failed
/// connects in the store.
fn until_failed(port: u16, cidr: &str, server: &str, failed: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = get_json(port, &format!("/api/analytics?range=1h&cidr={}", enc(cidr)));
        let got = a["rows"].as_array().and_then(|rows| {
            rows.iter()
                .find(|r| r["client"] == "burst" && r["server"] == server)
                .and_then(|r| r["connections_failed"].as_u64())
        });
        if got == Some(failed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never showed {failed} failed connects of burst (now {got:?}): {a:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_quiet_span_then_ten_times_the_failures_is_one_rise() {
    let net = NetPair::new_apart().unwrap();
    let port = free_port();
    let _agent = agent(
        port,
        "      baseline_ratio: 3\n      baseline_min_count: 20\n",
    );
    let cidr = net.v4_cidr();
    let server = net.a_v4();
    // Nothing listens on this port: every connect is refused.
    let addr = format!("{server}:7399");
    // The store has data before the quiet span starts, so it holds it.
    let deadline = Instant::now() + WAIT;
    while get_json(port, "/api/status")["latest_ms"].as_u64() == Some(0) {
        assert!(Instant::now() < deadline, "the ui store never got a batch");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two spans of SPAN ms: (t0, t0 + SPAN] quiet, (t0 + SPAN, t0 + 2 SPAN]
    // ten times as many. Each burst starts 2 s into its span, so the 1 s
    // batches that carry it end inside it.
    const SPAN: u64 = 20_000;
    let t0 = now_ms();
    let mut held = Vec::new();
    until_ms(t0 + 2_000);
    refused(&net, &addr, 3, &mut held);
    until_failed(port, &cidr, &server, 3);
    until_ms(t0 + SPAN + 2_000);
    refused(&net, &addr, 30, &mut held);
    until_failed(port, &cidr, &server, 33);
    assert!(
        now_ms() < t0 + 2 * SPAN,
        "the rise's connects took longer than their span"
    );
    until_ms(t0 + 2 * SPAN + 1_500);
    let q = format!(
        "from={}&to={}&cidr={}",
        (t0 + SPAN) as f64 / 1000.0,
        (t0 + 2 * SPAN) as f64 / 1000.0,
        enc(&cidr)
    );
    let h = get_json(port, &format!("/api/health?{q}"));
    assert_eq!(
        h["baselines"],
        serde_json::json!(["the span before"]),
        "{h:#}"
    );
    let rises: Vec<&Value> = h["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"].as_str().is_some_and(|k| k.ends_with("_rise")))
        .collect();
    assert_eq!(rises.len(), 1, "{h:#}");
    let f = rises[0];
    assert_eq!(f["kind"], "connection_failure_rise", "{f:#}");
    assert_eq!(f["client"], "burst", "{f:#}");
    assert_eq!(f["server"], server.as_str(), "{f:#}");
    assert_eq!(f["count"], 30, "{f:#}");
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("30 failed connections in this range, against 3 in the span before"),
        "{f:#}"
    );
    assert!(
        f["runbook"]
            .as_str()
            .unwrap()
            .starts_with("Find what changed"),
        "{f:#}"
    );
    // The same pair's absolute finding is there as before, with its count.
    let abs = findings(&h, "connection_failure");
    assert_eq!(abs.len(), 1, "{h:#}");
    assert_eq!(abs[0]["count"], 30);

    // The quiet span against the one before it (which held nothing of
    // burst): 3 failures are under the minimum count, no rise.
    let q = format!(
        "from={}&to={}&cidr={}",
        t0 as f64 / 1000.0,
        (t0 + SPAN) as f64 / 1000.0,
        enc(&cidr)
    );
    let h = get_json(port, &format!("/api/health?{q}"));
    assert_eq!(findings(&h, "connection_failure_rise").len(), 0, "{h:#}");
}

#[test]
fn five_hundred_short_connections_churn_a_pooled_client_does_not() {
    let net = NetPair::new_apart().unwrap();
    let port = free_port();
    let _agent = agent(
        port,
        "      churn_connections_per_second: 5\n      churn_short_ratio: 0.5\n",
    );
    let cidr = net.v4_cidr();
    let a = net.a_v4();
    let t = traffic();
    // churner: 500 connections one after another, 10 bytes each way.
    let churn_addr = format!("{a}:7301");
    let mut srv = Held::start(
        &net.a,
        "api",
        &[&t, "tcp-serve-each", &churn_addr, "500", "10", "10"],
    );
    srv.until("listening");
    // pooled: one connection carrying 50 requests of 100 bytes, 10 ms apart.
    let pool_addr = format!("{a}:7302");
    let mut pool_srv = Held::start(
        &net.a,
        "api",
        &[&t, "tcp-server", &pool_addr, "5000", "100"],
    );
    pool_srv.until("listening");
    let mut pooled = Held::start(
        &net.b,
        "pooled",
        &[&t, "tcp-hold", &pool_addr, "100", "10", "50"],
    );
    let mut churner = Held::start(
        &net.b,
        "churner",
        &[&t, "tcp-client-each", &churn_addr, "500", "10"],
    );
    let answers = churner.until("done");
    assert_eq!(answers.len(), 500);
    assert!(answers.iter().all(|a| a == "10"), "{answers:?}");
    srv.until("done");
    pooled.until("done");
    pool_srv.until("done");

    let deadline = Instant::now() + WAIT;
    let h = loop {
        let h = get_json(port, &format!("/api/health?range=1m&cidr={}", enc(&cidr)));
        let opened = findings(&h, "connection_churn")
            .iter()
            .find(|f| f["client"] == "churner")
            .and_then(|f| f["count"].as_u64());
        if opened == Some(500) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no churn finding with 500 connections for churner: {h:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let churn = findings(&h, "connection_churn");
    assert_eq!(churn.len(), 1, "only churner churns: {h:#}");
    let f = churn[0];
    assert_eq!(f["server"], "api", "{f:#}");
    assert_eq!(f["severity"], "warning");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("500 of 500 closed lasted at most 100 ms"),
        "{f:#}"
    );
    assert!(
        f["runbook"].as_str().unwrap().contains("connection pool"),
        "{f:#}"
    );
    // pooled talked to api too, with one connection: no finding names it.
    let all = h["findings"].as_array().unwrap();
    assert!(all.iter().all(|f| f["client"] != "pooled"), "{h:#}");
    // The thresholds the finding was judged by.
    let thresholds = &h["thresholds"];
    assert_eq!(thresholds["churn_connections_per_second"], 5.0);
    assert_eq!(thresholds["churn_short_ratio"], 0.5);
}
