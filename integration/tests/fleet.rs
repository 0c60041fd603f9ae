//! The fleet view end to end: three agents on this host play three nodes
//! (distinct `host.name` through `OTEL_RESOURCE_ATTRIBUTES`, each keeping
//! only its node's workloads with the `filter` processor), each pushes by
//! remote write to a real Prometheus (and, in a second test, to
//! VictoriaMetrics, or is scraped by Prometheus), and `flowscope ui --prometheus` serves
//! the pages over it (and headless Chromium looks at them). `web` (node 1)
//! calls `api` (node 2), `api` calls
//! `db` (node 3): the fleet's analytics rows carry exactly the bytes sent,
//! once, with both ends named although each agent alone sees the other end
//! as a bare address.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowscope_integration::{Agent, NetPair, built_binary, exchange};
use serde_json::Value;

mod browser;

const UP1: u64 = 150_000;
const DOWN1: u64 = 7_000;
const UP2: u64 = 90_000;
const DOWN2: u64 = 3_000;

use browser::free_port;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` on 127.0.0.1:`port`: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

/// How the agents reach the storage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// Remote write to Prometheus (`--web.enable-remote-write-receiver`).
    PrometheusRemoteWrite,
    /// Remote write to VictoriaMetrics.
    VictoriaMetrics,
    /// Prometheus scraping each agent's `prometheus` exporter.
    PrometheusScrape,
}

/// An agent for one node: the services it keeps, its `host.name`, and its
/// exporter: remote write to `write_url`, or a `prometheus` exporter on
/// `port` when `write_url` is empty.
fn node(host: &str, service: &str, port: u16, write_url: &str) -> Agent {
    let exporter = if write_url.is_empty() {
        format!("prometheus:\n    endpoint: 127.0.0.1:{port}")
    } else {
        format!(
            "prometheusremotewrite:\n    endpoint: {write_url}\n    \
             resource_to_telemetry_conversion:\n      enabled: true"
        )
    };
    let name = exporter.split(':').next().unwrap_or_default().to_string();
    let config = format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         processors:\n  filter:\n    include:\n      - services: [{service}]\n\
         exporters:\n  {exporter}\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [filter]\n      exporters: [{name}, file]\n"
    );
    let attrs = format!("host.name={host}");
    Agent::start_env(&config, &[], &[("OTEL_RESOURCE_ATTRIBUTES", &attrs)]).expect("agent")
}

/// Debian's Prometheus scraping `targets` every second, and taking remote
/// writes.
fn prometheus(dir: &std::path::Path, targets: &[u16]) -> (Killed, u16) {
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    let port = free_port();
    let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flowscope\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("`{bin}` could not start ({e}): install it with scripts/bootstrap.sh --test")
        });
    (Killed(child), port)
}

/// Debian's VictoriaMetrics, fresh samples queryable at once.
fn victoria_metrics(dir: &std::path::Path) -> (Killed, u16) {
    let bin = std::env::var("VICTORIA_METRICS_BIN")
        .unwrap_or_else(|_| "/usr/bin/victoria-metrics".into());
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("-storageDataPath={}", dir.join("vm").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        // Fresh samples are hidden for 30 s by default, and answers cached.
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        // Every query in /api/v1/status/top_queries, however fast.
        .arg("-search.queryStats.minQueryDuration=0s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("`{bin}` could not start ({e}): install it with scripts/bootstrap.sh --test")
        });
    let killed = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/health").0 != 200 {
        assert!(Instant::now() < deadline, "VictoriaMetrics did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (killed, port)
}

/// `flowscope ui --prometheus` on a free port, once it answers.
fn fleet_ui(prom_url: &str) -> (Killed, u16) {
    let port = free_port();
    let child = Command::new(built_binary("flowscope"))
        .args([
            "ui",
            "--prometheus",
            prom_url,
            "--endpoint",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flowscope ui");
    let killed = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "flowscope ui did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (killed, port)
}

fn row<'a>(rows: &'a [Value], client: &str, server: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["client"] == client && r["server"] == server)
}

fn bytes(r: &Value) -> (u64, u64) {
    (
        r["bytes_client_to_server"].as_u64().unwrap_or(0),
        r["bytes_server_to_client"].as_u64().unwrap_or(0),
    )
}

#[test]
fn three_nodes_one_map_counted_once() {
    fleet(Storage::PrometheusRemoteWrite, true);
}

#[test]
fn victoria_metrics_as_the_storage() {
    fleet(Storage::VictoriaMetrics, false);
}

#[test]
fn scraped_agents_work_as_well() {
    fleet(Storage::PrometheusScrape, false);
}

/// The three-node tests run one at a time: their agents would each see the
/// others' `web`, `api` and `db`.
static ONE_FLEET_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Three nodes, one storage, one fleet view (with the pages in Chromium
/// when `look`).
fn fleet(storage: Storage, look: bool) {
    let _one = ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // web (n1) -> api (n2) on one link, api -> db (n3) on another; the two
    // api processes are one service on node 2.
    // Before the storage has anything: the Health span below starts here.
    let started = now_ms();
    let front = NetPair::new_apart().unwrap(); // a = api server, b = web
    let back = NetPair::new_apart().unwrap(); // a = db server, b = api client
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let (_engine, prom_port) = match storage {
        Storage::VictoriaMetrics => victoria_metrics(dir.path()),
        _ => prometheus(dir.path(), &[p1, p2, p3]),
    };
    let write = match storage {
        Storage::PrometheusScrape => String::new(),
        _ => format!("http://127.0.0.1:{prom_port}/api/v1/write"),
    };
    let _n1 = node("node-1", "web", p1, &write);
    let _n2 = node("node-2", "api", p2, &write);
    let _n3 = node("node-3", "db", p3, &write);

    // Every traffic process lives until the test ends, so each agent reads
    // its service name from /proc however late it looks.
    let _held = [
        exchange(&front, "web", "api", 7100, UP1, DOWN1),
        exchange(&back, "api", "db", 7100, UP2, DOWN2),
    ];

    // The churn test's server starts now: node 2 names its process long
    // before the 500 connections come.
    let churn_server = churn_server(&front);

    let (_ui, ui_port) = fleet_ui(&format!("http://127.0.0.1:{prom_port}"));
    let cidr = "198.19.0.0/16";
    let path = format!(
        "/api/analytics?range=1h&client_key=service.name&server_key=service.name&cidr={}",
        cidr.replace('/', "%2F")
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let (code, body) = get(ui_port, &path);
        let rows: Vec<Value> = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|j| j["rows"].as_array().cloned())
            .unwrap_or_default();
        let done = row(&rows, "web", "api").map(bytes) == Some((UP1, DOWN1))
            && row(&rows, "api", "db").map(bytes) == Some((UP2, DOWN2));
        if done {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet never showed both dependencies exactly: HTTP {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Counted once: no row names api or db from a bare address.
    for r in &rows {
        let (c, s) = (r["client"].as_str().unwrap(), r["server"].as_str().unwrap());
        assert!(
            !(r["client_unresolved"] == true && (s == "api" || s == "db")),
            "row from a bare address: {r}"
        );
        assert!(
            !(r["server_unresolved"] == true && (c == "web" || c == "api")),
            "row to a bare address: {r}"
        );
    }
    let web_api = row(&rows, "web", "api").unwrap();
    assert_eq!(bytes(web_api), (UP1, DOWN1), "{web_api}");
    // VictoriaMetrics knows MetricsQL's exact increase, so the UI asked
    // for it by name (the bytes above are its answer), not for the join
    // that any PromQL engine answers (Prometheus, the other tests).
    if storage == Storage::VictoriaMetrics {
        let (_, body) = get(prom_port, "/api/v1/status/top_queries?topN=1000");
        assert!(
            body.contains("(increase_pure(network_flow_io_bytes_total[3600s]))")
                && !body.contains("last_over_time(network_flow_io_bytes_total"),
            "{body}"
        );
    }

    // Node to node: the same bytes, grouped by host.name.
    let (_, body) = get(
        ui_port,
        &format!(
            "/api/analytics?range=1h&group=host.name&cidr={}",
            cidr.replace('/', "%2F")
        ),
    );
    let j: Value = serde_json::from_str(&body).expect(&body);
    let hosts = j["rows"].as_array().unwrap();
    assert_eq!(
        row(hosts, "node-1", "node-2").map(bytes),
        Some((UP1, DOWN1)),
        "{body}"
    );
    assert_eq!(
        row(hosts, "node-2", "node-3").map(bytes),
        Some((UP2, DOWN2)),
        "{body}"
    );

    // The map has the three services as nodes, joined by two edges.
    let (_, body) = get(
        ui_port,
        &format!("/api/map?range=1h&cidr={}", cidr.replace('/', "%2F")),
    );
    let m: Value = serde_json::from_str(&body).expect(&body);
    let mut nodes: Vec<&str> = m["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec!["api", "db", "web"], "{body}");

    // A filter value with quotes and braces is matched literally (no row),
    // and does not break the query.
    let (code, body) = get(
        ui_port,
        "/api/analytics?range=1h&filter=service.name%3Dweb%22%7D%20or%20vector(1)",
    );
    assert_eq!(code, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["rows"].as_array().unwrap().len(), 0, "{body}");

    churn(&front, churn_server, started, ui_port, cidr);

    // The same in headless Chromium, with the fleet's longer ranges.
    if !look {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_driver, _profile, c) = browser::browser().await;
        let base = format!("http://127.0.0.1:{ui_port}");
        let q = format!("range=1h&cidr={}", cidr.replace('/', "%2F"));
        c.goto(&format!("{base}/map?{q}")).await.unwrap();
        browser::loaded(&c, 1).await;
        browser::range_control(&c, &["5m", "15m", "30m", "1h", "6h", "1d", "7d"]).await;
        let (mut nodes, edges) = browser::map_graph(&c).await;
        nodes.sort();
        assert_eq!(nodes, vec!["api", "db", "web"], "{edges:?}");
        let has = |a: &str, b: &str| edges.iter().any(|(s, t)| s == a && t == b);
        assert!(has("web", "api") && has("api", "db"), "{edges:?}");
        browser::screenshot(&c, "fleet-map").await;
        c.goto(&format!("{base}/analytics?{q}")).await.unwrap();
        browser::loaded(&c, 1).await;
        let mut rows = browser::table_rows(&c).await;
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("api".to_string(), "db".to_string()),
                ("web".to_string(), "api".to_string())
            ]
        );
        browser::screenshot(&c, "fleet-analytics").await;
        c.close().await.unwrap();
    });
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `web` (node 1) opens 500 short connections to `api` (node 2), one byte
/// each way (after the byte counts above were checked): the fleet's Health
/// page, over the whole test (from before the storage had any series, so
/// every series is counted whole, in every storage mode), has the churn
/// finding web -> api with exactly 501 connections (the exchange's and the
/// 500), read from the storage's opened counts and duration histogram. The
/// baseline spans are asked with PromQL `offset`; a storage that started
/// with this test holds neither.
/// This starts the server (`api`, 500 connections of one byte each way).
fn churn_server(front: &NetPair) -> flowscope_integration::Held {
    let t = flowscope_integration::traffic();
    let addr = format!("{}:7101", front.a_v4());
    let mut srv = flowscope_integration::Held::start(
        &front.a,
        "api",
        &[&t, "tcp-serve-each", &addr, "500", "1", "1"],
    );
    srv.until("listening");
    srv
}

/// The churn itself, against the server [`churn_server`] started.
fn churn(
    front: &NetPair,
    mut srv: flowscope_integration::Held,
    from: u64,
    ui_port: u16,
    cidr: &str,
) {
    let t = flowscope_integration::traffic();
    let addr = format!("{}:7101", front.a_v4());
    let mut cli = flowscope_integration::Held::start(
        &front.b,
        "web",
        &[&t, "tcp-client-each", &addr, "500", "1"],
    );
    assert_eq!(cli.until("done").len(), 500);
    srv.until("done");
    let to = now_ms() + 3_000;
    while now_ms() < to + 1_000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = format!(
        "/api/health?from={}&to={}&cidr={}",
        from as f64 / 1000.0,
        to as f64 / 1000.0,
        cidr.replace('/', "%2F")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let h = loop {
        let (code, body) = get(ui_port, &path);
        let h: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        // Until both ends are in: api's reports name the server.
        let count = h["findings"].as_array().and_then(|f| {
            f.iter()
                .find(|f| {
                    f["kind"] == "connection_churn" && f["client"] == "web" && f["server"] == "api"
                })
                .and_then(|f| f["count"].as_u64())
        });
        if count == Some(501) {
            break h;
        }
        if Instant::now() >= deadline {
            let (_, rows) = get(ui_port, &path.replace("/api/health", "/api/analytics"));
            panic!(
                "the fleet never showed web's churn with 501 connections: HTTP {code} {body}\n\
                 analytics of the span: {rows}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let churn: Vec<&Value> = h["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "connection_churn")
        .collect();
    assert_eq!(churn.len(), 1, "{h:#}");
    assert_eq!(churn[0]["server"], "api", "{h:#}");
    assert!(
        churn[0]["evidence"]
            .as_str()
            .unwrap()
            .starts_with("501 connections opened in "),
        "{h:#}"
    );
    assert_eq!(
        h["baselines"],
        serde_json::json!([]),
        "a storage younger than the span holds no baseline: {h:#}"
    );
    // api -> db kept its one connection: no churn.
    assert!(churn.iter().all(|f| f["client"] != "api"), "{h:#}");
    drop((srv, cli));
}

#[test]
fn unreachable_or_wrong_storage_is_a_clear_502() {
    // Nothing listens here.
    let dead = free_port();
    let (_ui, port) = fleet_ui(&format!("http://127.0.0.1:{dead}"));
    let (code, body) = get(port, "/api/map?range=1h");
    assert_eq!(code, 502, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap();
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{body}"
    );
    assert_eq!(j["parameter"], "prometheus");

    // A server that is not Prometheus: this UI itself answers HTML.
    let (_other, other_port) = fleet_ui(&format!("http://127.0.0.1:{dead}"));
    let (_ui2, port2) = fleet_ui(&format!("http://127.0.0.1:{other_port}/map"));
    let (code, body) = get(port2, "/api/analytics?range=1h");
    assert_eq!(code, 502, "{body}");
    assert!(
        body.contains("not a Prometheus query API") || body.contains("answered HTTP"),
        "{body}"
    );

    // A storage that never answers: an error after the timeout, no hang.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (_ui3, port3) = fleet_ui(&format!("http://127.0.0.1:{silent_port}"));
    let (code, body) = get(port3, "/api/health?range=1h");
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("did not answer within"), "{body}");
    drop(silent);

    // A storage that answers without end: refused once the answer passes
    // the UI's cap, with an error naming the storage, and the UI answers
    // the next request.
    let endless = TcpListener::bind("127.0.0.1:0").unwrap();
    let endless_port = endless.local_addr().unwrap().port();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    std::thread::spawn(move || {
        for conn in endless.incoming() {
            let Ok(mut conn) = conn else { return };
            let counted = counted.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut req = [0u8; 4096];
                let _ = conn.read(&mut req);
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b' '; 1 << 20];
                loop {
                    let frame =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if conn.write_all(&frame).is_err() {
                        return;
                    }
                    counted.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let (_ui4, port4) = fleet_ui(&format!("http://127.0.0.1:{endless_port}"));
    let (code, body) = get(port4, "/api/keys");
    assert_eq!(code, 502, "{body}");
    assert!(
        body.contains("answered more than 268435456 bytes; refused"),
        "{body}"
    );
    // It stopped reading about there (the socket buffers hold a few MiB
    // more that were written but never read).
    let total = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(total < (256 + 64) << 20, "{total} bytes sent");
}

/// Kernel drops in fleet mode (issue 21): a node's client whose datagrams
/// a firewall rule drops in the server's namespace; the fleet's Health
/// lists the drops with client, server and count, read from the storage.
#[test]
fn fleet_health_lists_kernel_drops() {
    let _one = ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let net = NetPair::new_apart().unwrap(); // a = server, b = client
    let dir = tempfile::tempdir().unwrap();
    let (_engine, prom_port) = prometheus(dir.path(), &[]);
    let write = format!("http://127.0.0.1:{prom_port}/api/v1/write");
    let _node = node("node-1", "dropper", free_port(), &write);
    net.drop_input(&net.a, "udp dport 7104 counter").unwrap();
    let server = format!("{}:7104", net.a_v4());
    let t = flowscope_integration::traffic();
    let mut client = flowscope_integration::Held::start(
        &net.b,
        "dropper",
        &[&t, "udp-client", &server, "25", "64", "0"],
    );
    client.until("done");
    let (_ui, ui_port) = fleet_ui(&format!("http://127.0.0.1:{prom_port}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let finding = loop {
        let (code, body) = get(ui_port, "/api/health?range=1h");
        let found = serde_json::from_str::<Value>(&body).ok().and_then(|h| {
            h["findings"]
                .as_array()?
                .iter()
                .find(|f| f["kind"] == "drops" && f["server"] == server.as_str())
                .cloned()
        });
        if let Some(f) = found.filter(|f| f["count"] == 25) {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet's Health never listed the 25 drops: HTTP {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(finding["client"], "dropper", "{finding}");
    assert_eq!(finding["error_type"], "NETFILTER_DROP", "{finding}");
    assert_eq!(
        finding["title"],
        format!("Blocked by a firewall rule: dropper → {server}, 25 packets")
    );
}
