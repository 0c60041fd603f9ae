//! The `ui` exporter in a real browser (issue 10): headless Chromium, driven
//! over WebDriver (chromedriver + fantoccini), looks at the Network Map,
//! Network Analytics and Network Health pages while real services talk in
//! network namespaces: `web` calls `api`, `api` calls `db`, `batch`'s
//! connects are refused, `lookup` asks a real dnsmasq for a name that does
//! not exist, and a client whose service name is HTML shows as text.
//! Screenshots of the three pages land in target/ui-screenshots/.
//!
//! Nothing here races the agent: every traffic process (the `lookup`
//! included, whose DNS socket stays open) lives until the test ends, so the
//! agent reads its service name from /proc however late it looks; the
//! pair's addresses (198.19.N.0/24) are not those of any other test's
//! namespaces, and every request asks for that CIDR; the API is polled
//! until everything expected is there, and then checked exactly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use flowscope_integration::{Agent, NetPair, sum, traffic};
use flowscope_model::names::{attr, metric, resource};
use serde_json::{Value, json};

/// How long the agent may take to show what the traffic did (the machine
/// may be loaded).
const WAIT: Duration = Duration::from_secs(120);
/// How long a page may take to load its data.
const PAGE_WAIT: Duration = Duration::from_secs(60);
const XSS: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "ui-test-token-5d1e";
const WEB_UP: u64 = 123_457;
const WEB_DOWN: u64 = 4_321;
const API_UP: u64 = 54_321;
const API_DOWN: u64 = 999;
/// A child process killed on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `flowscope-traffic` process in hold mode: once its work succeeded it
/// says `done` and stays until dropped, so its /proc entry (service name,
/// open sockets) is there whenever the agent reads it.
struct Held {
    what: String,
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Held {
    /// Starts `args` in namespace `ns` as service `service`.
    fn start(ns: &str, service: &str, args: &[&str]) -> Held {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .env("OTEL_SERVICE_NAME", service)
            .env("FLOWSCOPE_TRAFFIC_HOLD", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec flowscope-traffic");
        let out = BufReader::new(child.stdout.take().unwrap());
        Held {
            what: format!("{service}: {}", args[1..].join(" ")),
            child,
            out,
        }
    }

    /// The lines printed before `line`; fails with the process's stderr
    /// when it exits first.
    fn until(&mut self, line: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.out.read_line(&mut l).unwrap();
            if n == 0 {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                let status = self.child.wait().unwrap();
                panic!(
                    "{} exited ({status}) before saying {line:?}; said {before:?}: {}",
                    self.what,
                    err.trim()
                );
            }
            if l.trim_end() == line {
                return before;
            }
            before.push(l.trim_end().to_string());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One TCP exchange of exactly `up` and `down` bytes between `client` in b
/// and `server` in a; both hold.
fn exchange(net: &NetPair, client: &str, server: &str, port: u16, up: u64, down: u64) -> [Held; 2] {
    let t = traffic();
    let addr = format!("{}:{port}", net.a_v4());
    let (up, down) = (up.to_string(), down.to_string());
    let mut srv = Held::start(&net.a, server, &[&t, "tcp-server", &addr, &up, &down]);
    srv.until("listening");
    let mut cli = Held::start(&net.b, client, &[&t, "tcp-client", &addr, &up, &down]);
    cli.until("done");
    srv.until("done");
    [srv, cli]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One plain HTTP/1.1 GET to the agent on loopback: (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the ui exporter");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = get(port, path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn row<'a>(rows: &'a Value, client: &str, server: &str) -> Option<&'a Value> {
    rows.as_array()?
        .iter()
        .find(|r| r["client"] == client && r["server"] == server)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn screenshots_dir() -> PathBuf {
    // target/<profile>/deps/<test> -> target/ui-screenshots
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium behind chromedriver, with a fresh profile.
async fn browser() -> (Kill, tempfile::TempDir, Client) {
    let port = free_port();
    let driver = Kill(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/bootstrap.sh --test installs chromium-driver)"),
    );
    let deadline = Instant::now() + PAGE_WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000",
                // Resolve no name but the agent's: the browser sends nothing
                // beyond loopback.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps);
    let client = builder
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with headless Chromium");
    (driver, profile, client)
}

/// Every page has the shared time-range control, showing the range of
/// the URL (`range=1h`).
async fn range_control(c: &Client) {
    let got = js(
        c,
        "const s = document.querySelector('#range'); \
         return [s.value, [...s.options].map(o => o.value)]",
    )
    .await;
    assert_eq!(got, json!(["1h", ["5m", "15m", "30m", "1h"]]));
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect(script)
}

/// Waits until the page finished its `n`th load of API data.
async fn loaded(c: &Client, n: u64) {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let v = js(c, "return Number(document.body.dataset.loads || 0)").await;
        if v.as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "the page did not load its data");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn map_graph(c: &Client) -> (Vec<String>, Vec<(String, String)>) {
    let nodes = js(c, "return flowscopeMap.nodes().map(n => n.data('label'))").await;
    let edges = js(
        c,
        "return flowscopeMap.edges().map(e => [e.data('source'), e.data('target')])",
    )
    .await;
    (
        serde_json::from_value(nodes).unwrap(),
        serde_json::from_value(edges).unwrap(),
    )
}

async fn table_rows(c: &Client) -> Vec<(String, String)> {
    let v = js(
        c,
        "return [...document.querySelectorAll('#rows tbody tr[data-client]')].map(r => \
         [r.querySelector('td[data-col=client]').textContent, r.querySelector('td[data-col=server]').textContent])",
    )
    .await;
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn map_analytics_and_health_in_a_browser() {
    let net = NetPair::new_apart().unwrap();
    let (port, remote_port) = (free_port(), free_port());
    let agent = Agent::start_with(&format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n  dns:\n    collection_interval: 1s\n\
         processors:\n  peer: {{}}\n  locality: {{}}\n\
         exporters:\n  file:\n    path: OUTPUT\n  ui:\n    endpoint: 127.0.0.1:{port}\n\
         \x20 ui/remote:\n    endpoint: 0.0.0.0:{remote_port}\n    auth:\n      token: {TOKEN}\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf, dns]\n      processors: [peer, locality]\n\
         \x20     exporters: [file, ui, ui/remote]\n"
    ))
    .unwrap();
    let server = net.a_v4();
    let cidr = net.v4_cidr();
    let t = traffic();

    // A real DNS server answering NXDOMAIN for unknown names under test.
    let _dns = Kill(
        Command::new("ip")
            .args(["netns", "exec", &net.a, "dnsmasq", "--keep-in-foreground"])
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address", &server, "--local=/test/"])
            .arg(format!("--address=/ok.lab.test/{server}"))
            .args(["--cache-size=0", "--log-facility=/dev/null", "--pid-file="])
            .stdout(Stdio::null())
            .spawn()
            .expect("dnsmasq (scripts/bootstrap.sh --test installs it)"),
    );
    // Until dnsmasq answers and the agent's DNS capture saw an answered
    // lookup in this pair (it finds new namespaces on a rescan).
    let deadline = Instant::now() + WAIT;
    let probe = [
        (attr::DNS_QUESTION_NAME, "ok.lab.test"),
        (attr::SERVER_ADDRESS, server.as_str()),
        (attr::DNS_RESPONSE_CODE, "NOERROR"),
    ];
    'ready: loop {
        let rcode = net
            .run(&net.b, &[], &[&t, "dns-query", &server, "ok.lab.test"])
            .unwrap_or_default();
        if rcode.trim() == "NOERROR" {
            let seen = Instant::now() + Duration::from_secs(5);
            while Instant::now() < seen {
                if sum(&agent.points(), metric::DNS_DURATION.0, &probe) >= 1.0 {
                    break 'ready;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert!(
            Instant::now() < deadline,
            "dnsmasq never answered ok.lab.test (last: {rcode:?}) or the agent never saw it"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // web -> api, api -> db, the HTML-named client -> db, refused, NXDOMAIN;
    // every process stays until the end of the test.
    let mut held = Vec::new();
    held.extend(exchange(&net, "web", "api", 7001, WEB_UP, WEB_DOWN));
    held.extend(exchange(&net, "api", "db", 7002, API_UP, API_DOWN));
    held.extend(exchange(&net, XSS, "db", 7003, 100, 10));
    let mut batch = Held::start(
        &net.b,
        "batch",
        &[&t, "tcp-connect", &format!("{server}:7009")],
    );
    assert_eq!(batch.until("done"), ["ConnectionRefused"]);
    held.push(batch);
    let mut lookup = Held::start(
        &net.b,
        "lookup",
        &[&t, "dns-query", &server, "missing.lab.test"],
    );
    assert_eq!(lookup.until("done"), ["NXDOMAIN"]);
    held.push(lookup);

    // The API first: wait until every interval is in, then check exactly.
    let q = format!("range=1h&cidr={}", enc(&cidr));
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let a = get_json(port, &format!("/api/analytics?{q}"));
        let h = get_json(port, &format!("/api/health?{q}"));
        let finding = |kind: &str, client: &str| {
            h["findings"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["kind"] == kind && f["client"] == client))
        };
        let missing: Vec<&str> = [
            (
                row(&a["rows"], "web", "api")
                    .is_some_and(|r| r["bytes_client_to_server"] == WEB_UP),
                "web -> api",
            ),
            (
                row(&a["rows"], "api", "db").is_some_and(|r| r["bytes_client_to_server"] == API_UP),
                "api -> db",
            ),
            (row(&a["rows"], XSS, "db").is_some(), "html -> db"),
            (finding("dns_failure", "lookup"), "NXDOMAIN of lookup"),
            (finding("connection_failure", "batch"), "refused of batch"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .collect();
        let done = missing.is_empty();
        if done {
            break a["rows"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the UI API never showed {missing:?}: analytics {a:#}\nhealth {h:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let web_api = row(&rows, "web", "api").unwrap();
    assert_eq!(web_api["bytes_client_to_server"], WEB_UP, "{web_api}");
    assert_eq!(web_api["bytes_server_to_client"], WEB_DOWN, "{web_api}");
    assert_eq!(web_api["connections_opened"], 1, "{web_api}");
    let api_db = row(&rows, "api", "db").unwrap();
    assert_eq!(api_db["bytes_server_to_client"], API_DOWN, "{api_db}");
    assert!(row(&rows, "web", "db").is_none(), "{rows:#}");
    // Each connection once: batch only ever failed to connect.
    let batch: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["client"] == "batch")
        .collect();
    assert_eq!(batch.len(), 1, "{batch:#?}");
    assert_eq!(batch[0]["server"], server.as_str());
    assert_eq!(batch[0]["connections_failed"], 1);
    assert_eq!(batch[0]["bytes_client_to_server"], 0);
    let (_, csv) = get(port, &format!("/api/analytics.csv?{q}"), None);
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("web,api,{WEB_UP},{WEB_DOWN},"))),
        "{csv}"
    );

    // Bad requests name their parameter.
    for (path, parameter) in [
        ("/api/map?group=no.such.key", "group"),
        ("/api/analytics?cidr=198.18.0.0/99", "cidr"),
        ("/api/analytics?range=soon", "range"),
        ("/api/health?from=20&to=10", "from"),
        ("/api/analytics?filter=novalue", "filter"),
    ] {
        let (status, body) = get(port, path, None);
        assert_eq!(status, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["parameter"], parameter, "{path}: {body}");
    }

    // The non-loopback bind wants the token on every request.
    for path in ["/api/keys", "/map", "/assets/map.js", "/?token=wrong"] {
        assert_eq!(get(remote_port, path, None).0, 401, "{path}");
        assert_eq!(get(remote_port, path, Some("wrong")).0, 401, "{path}");
    }
    assert_eq!(get(remote_port, "/api/keys", Some(TOKEN)).0, 200);
    assert_eq!(get(remote_port, "/map", Some(TOKEN)).0, 200);

    let (_driver, _profile, c) = browser().await;
    let base = format!("http://127.0.0.1:{port}");

    // Network Map.
    c.goto(&format!("{base}/map?{q}")).await.unwrap();
    loaded(&c, 1).await;
    range_control(&c).await;
    let (nodes, edges) = map_graph(&c).await;
    for n in ["web", "api", "db", XSS] {
        assert!(nodes.iter().any(|x| x == n), "node {n} missing: {nodes:?}");
    }
    let has = |a: &str, b: &str| edges.iter().any(|(s, t)| s == a && t == b);
    assert!(has("web", "api") && has("api", "db"), "{edges:?}");
    assert!(!has("web", "db"), "{edges:?}");
    // The HTML name is a text label and a table cell, never markup.
    let cell = js(
        &c,
        "return [...document.querySelectorAll('#edges td')].map(td => td.textContent)",
    )
    .await;
    assert!(cell.as_array().unwrap().iter().any(|t| t == XSS), "{cell}");
    assert_eq!(
        js(&c, "return document.querySelectorAll('img').length").await,
        0
    );
    assert!(c.get_alert_text().await.is_err(), "an alert opened");
    screenshot(&c, "map").await;
    // Regroup by the transport: other nodes.
    c.find(Locator::Css("#group"))
        .await
        .unwrap()
        .select_by_value(attr::NETWORK_TRANSPORT)
        .await
        .unwrap();
    loaded(&c, 2).await;
    let (nodes, _) = map_graph(&c).await;
    assert!(nodes.iter().any(|n| n == "tcp"), "{nodes:?}");
    assert!(nodes.iter().all(|n| n == "tcp" || n == "udp"), "{nodes:?}");

    // Network Analytics.
    c.goto(&format!("{base}/analytics?{q}")).await.unwrap();
    loaded(&c, 1).await;
    range_control(&c).await;
    let sel = r#"#rows tbody tr[data-client="web"][data-server="api"]"#;
    let tr = c.find(Locator::Css(sel)).await.unwrap();
    let sent = tr
        .find(Locator::Css("td[data-col=bytes_client_to_server]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sent, format!("{} B", thousands(WEB_UP)));
    let rows_before = table_rows(&c).await;
    assert!(
        rows_before.iter().any(|(a, b)| a == XSS && b == "db"),
        "{rows_before:?}"
    );
    assert!(!rows_before.iter().any(|(a, b)| a == "web" && b == "db"));
    tr.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while js(
        &c,
        "return document.querySelectorAll('#series-chart path.series').length",
    )
    .await
        != 2
    {
        assert!(
            Instant::now() < deadline,
            "no time series for the selected row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&c, "analytics").await;
    // A filter keeps the rows where web is either side.
    let f = c.find(Locator::Css("#filter")).await.unwrap();
    f.send_keys(&format!("{}=web", resource::SERVICE_NAME))
        .await
        .unwrap();
    c.find(Locator::Css("#apply"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    loaded(&c, 2).await;
    assert_eq!(
        table_rows(&c).await,
        vec![("web".to_string(), "api".to_string())]
    );
    f.clear().await.unwrap();
    // Server group by port: one row per port.
    c.find(Locator::Css("#server_key"))
        .await
        .unwrap()
        .select_by_value(attr::PEER_PORT)
        .await
        .unwrap();
    loaded(&c, 3).await;
    let rows = table_rows(&c).await;
    for (a, b) in [
        ("web", "7001"),
        ("api", "7002"),
        (XSS, "7003"),
        ("batch", "7009"),
    ] {
        assert!(
            rows.iter().any(|(x, y)| x == a && y == b),
            "{a} -> {b}: {rows:?}"
        );
    }
    assert_eq!(
        js(&c, "return document.querySelectorAll('img').length").await,
        0
    );

    // Network Health.
    c.goto(&format!("{base}/health?{q}")).await.unwrap();
    loaded(&c, 1).await;
    range_control(&c).await;
    let findings = js(
        &c,
        "return [...document.querySelectorAll('#findings li[data-kind]')].map(li => { \
         const o = { kind: li.dataset.kind }; \
         for (const dt of li.querySelectorAll('dt')) o[dt.textContent] = dt.nextElementSibling.textContent; \
         return o; })",
    )
    .await;
    let findings = findings.as_array().unwrap();
    let find = |kind: &str, client: &str| {
        findings
            .iter()
            .find(|f| f["kind"] == kind && f["Client"] == client)
            .unwrap_or_else(|| panic!("no {kind} finding for {client}: {findings:#?}"))
    };
    let refused = find("connection_failure", "batch");
    assert_eq!(refused["Server"], server.as_str(), "{refused}");
    assert_eq!(refused["Error"], "refused", "{refused}");
    assert_eq!(refused["Count"], "1", "{refused}");
    let nx = find("dns_failure", "lookup");
    assert_eq!(nx["Server"], server.as_str(), "{nx}");
    assert_eq!(nx["Error"], "NXDOMAIN", "{nx}");
    assert_eq!(nx["Count"], "1", "{nx}");
    screenshot(&c, "health").await;

    c.close().await.unwrap();
    drop(held);
    drop(agent);
}
