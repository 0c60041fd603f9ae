//! The `ui` exporter in a real browser (issue 10): headless Chromium, driven
//! over WebDriver (chromedriver + fantoccini), looks at the Network Map,
//! Network Analytics and Network Health pages while real services talk in
//! network namespaces: `web` calls `api`, `api` calls `db`, `batch`'s
//! connects are refused, `lookup` asks a real dnsmasq for a name that does
//! not exist, and a client whose service name is HTML shows as text.
//! Screenshots of the three pages land in target/ui-screenshots/.
//!
//! Nothing here races the agent: every flow's traffic process lives until
//! the test ends, so the agent reads its service name from /proc however
//! late it looks. The `lookup` does not: it exits as soon as it has its
//! answer, as real clients do, and the DNS receiver still names it (the
//! kernel recorded its socket's owner when the query left, issue 22); the
//! pair's addresses (198.19.N.0/24) are not those of any other test's
//! namespaces, and every request asks for that CIDR; the API is polled
//! until everything expected is there, and then checked exactly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod browser;

use browser::{
    Kill, browser, free_port, js, loaded, map_graph, range_control, screenshot, table_rows,
};
use fantoccini::Locator;
use flowscope_integration::{Agent, Held, NetPair, exchange, sum, traffic};
use flowscope_model::names::{attr, metric, resource};
use serde_json::Value;

/// How long the agent may take to show what the traffic did (the machine
/// may be loaded).
const WAIT: Duration = Duration::from_secs(120);
const XSS: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "ui-test-token-5d1e";
const WEB_UP: u64 = 123_457;
const WEB_DOWN: u64 = 4_321;
const API_UP: u64 = 54_321;
const API_DOWN: u64 = 999;

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    flowscope_model::percent::query_value(s)
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

    // web -> api, api -> db, the HTML-named client -> db, refused: these
    // processes stay until the end of the test. The NXDOMAIN lookup's
    // process exits at once.
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
    let rcode = net
        .run(
            &net.b,
            &[("OTEL_SERVICE_NAME", "lookup")],
            &[&t, "dns-query", &server, "missing.lab.test"],
        )
        .expect("the lookup");
    assert_eq!(rcode.trim(), "NXDOMAIN");

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
    range_control(&c, &["5m", "15m", "30m", "1h"]).await;
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
    range_control(&c, &["5m", "15m", "30m", "1h"]).await;
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
    range_control(&c, &["5m", "15m", "30m", "1h"]).await;
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
    // Every finding says what to do next (docs/health.md).
    assert!(
        refused["Next step"]
            .as_str()
            .is_some_and(|s| s.starts_with("Check that the server listens on that port")),
        "{refused}"
    );
    let nx = find("dns_failure", "lookup");
    assert_eq!(nx["Server"], server.as_str(), "{nx}");
    assert_eq!(nx["Error"], "NXDOMAIN", "{nx}");
    assert_eq!(nx["Count"], "1", "{nx}");
    screenshot(&c, "health").await;

    c.close().await.unwrap();
    drop(held);
    drop(agent);
}
