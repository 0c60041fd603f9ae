//! The alert rules and dashboards against live data (issue 13): the real
//! agent's `prometheus` exporter is scraped every second by a real
//! Prometheus (Debian's) that also loads deploy/prometheus/flowscope-rules.yaml,
//! while test traffic flows between two namespaces: a TCP exchange, a
//! refused connect, and lookups answered NOERROR and NXDOMAIN by a real
//! dnsmasq. Then EVERY PromQL expression of the rules and of the Grafana
//! dashboards is evaluated through Prometheus's HTTP API: each must parse
//! and evaluate, and those about this traffic must return its series with
//! exact values (the failed-connect alert fires with error_type="refused",
//! the DNS one with NXDOMAIN, the map has the edge with the bytes moved).
//! `for:` is not waited out: the rule's expression itself is polled.

mod deploy_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploy_support::*;
use flowscope_integration::{Agent, NetPair, traffic};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    flowscope_model::percent::query_value(s)
}

/// GET `path` from Prometheus on 127.0.0.1:`port` (HTTP/1.0: no chunking);
/// (status line, body).
fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// An instant query's answer: Ok(result vector) or Err(Prometheus's error).
fn query(port: u16, expr: &str) -> Result<Vec<Value>, String> {
    let (status, body) = get(port, &format!("/api/v1/query?query={}", encode(expr)))
        .map_err(|e| format!("asking Prometheus: {e}"))?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Grafana's variables as a dashboard with everything selected sends them.
fn grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$host", ".*")
        .replace("$service", ".*")
}

/// (where, expression) of every rule and every dashboard query.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/flowscope-rules.yaml")).unwrap();
    let rules: Value = serde_saphyr::from_str(&rules).unwrap();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            out.push((
                format!("rule {name}"),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(repo().join("deploy/grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    for f in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let dash = d["title"].as_str().unwrap().to_string();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    format!(
                        "{dash} / {} / {}",
                        p["title"].as_str().unwrap(),
                        t["refId"].as_str().unwrap()
                    ),
                    grafana(t["expr"].as_str().unwrap()),
                ));
            }
        }
    }
    out
}

fn expr_of<'a>(all: &'a [(String, String)], name: &str) -> &'a str {
    &all.iter()
        .find(|(w, _)| w == name)
        .unwrap_or_else(|| panic!("no expression {name}"))
        .1
}

/// The value of the first series whose labels include all of `labels`.
fn value_of(result: &[Value], labels: &[(&str, &str)]) -> Option<f64> {
    result
        .iter()
        .find(|s| labels.iter().all(|(k, v)| s["metric"][*k] == *v))
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
}

/// (what, expression, labels of the series, its value or None for any).
type Check<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Option<f64>);

fn dig(net: &NetPair, name: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &net.b, "dig", "+time=1", "+tries=1"])
        .arg(format!("@{}", net.a_v4()))
        .args([name, "A"])
        // Another service than the TCP client's, so the map's checkout
        // edge carries only the TCP exchange's bytes.
        .env("OTEL_SERVICE_NAME", "resolver")
        .output()
        .expect("dig (scripts/bootstrap.sh --test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_rule_and_dashboard_query_evaluates_against_live_traffic() {
    let net = NetPair::new().unwrap();
    let a = net.a_v4();
    let exporter = free_port();
    let agent = Agent::start_with(&format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n  dns:\n    collection_interval: 1s\n\
         exporters:\n  prometheus:\n    endpoint: 127.0.0.1:{exporter}\n    resource_to_telemetry_conversion:\n      enabled: true\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf, dns]\n      exporters: [prometheus]\n"
    ))
    .unwrap();

    // Prometheus: 1 s scrapes and rule evaluations, the shipped rules.
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: flowscope\n    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n",
            repo().join("deploy/prometheus/flowscope-rules.yaml").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package; scripts/bootstrap.sh --test)"),
    );
    let deadline = Instant::now() + WAIT;
    while !get(prom_port, "/-/ready").is_ok_and(|(s, _)| s.contains("200")) {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not get ready: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The rules file loaded.
    let (_, rules) = get(prom_port, "/api/v1/rules").unwrap();
    assert!(rules.contains("FlowscopeTcpConnectionFailures"), "{rules}");

    // Traffic. Clients linger so /proc still names them ("checkout").
    let t = traffic();
    let client_env = [
        ("OTEL_SERVICE_NAME", "checkout"),
        ("FLOWSCOPE_TRAFFIC_LINGER_MS", "3000"),
    ];
    let tcp = format!("{a}:5401");
    let server = net
        .serve(
            &net.a,
            &[
                "env",
                "OTEL_SERVICE_NAME=api",
                &t,
                "tcp-server",
                &tcp,
                "3000",
                "5000",
            ],
        )
        .unwrap();
    net.run(
        &net.b,
        &client_env,
        &[&t, "tcp-client", &tcp, "3000", "5000"],
    )
    .unwrap();
    server.finish().unwrap();
    // Nothing listens on 5402: the connect is refused (RST).
    net.run(
        &net.b,
        &client_env,
        &[&t, "tcp-connect", &format!("{a}:5402")],
    )
    .unwrap();
    let _dns = net.dnsmasq().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if dig(&net, "db.lab.test").contains("status: NOERROR") {
            break;
        }
        assert!(Instant::now() < deadline, "dnsmasq never answered");
    }
    let nx = dig(&net, "nope.lab.test");
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");

    let all = expressions();
    let checkout_client = [
        ("service_name", "checkout"),
        ("flowscope_flow_role", "client"),
        ("network_peer_address", a.as_str()),
        ("network_peer_port", "5401"),
    ];
    let refused = [
        ("error_type", "refused"),
        ("network_peer_address", a.as_str()),
        ("network_peer_port", "5402"),
    ];
    // (what, expression, labels, expected value or None for "present")
    let nxdomain = [
        ("flowscope_dns_response_code", "NXDOMAIN"),
        ("server_address", a.as_str()),
    ];
    let failed_lookup = [
        ("dns_question_name", "nope.lab.test"),
        ("flowscope_dns_response_code", "NXDOMAIN"),
        ("server_address", a.as_str()),
    ];
    let raw_tx = format!(
        "network_flow_io_bytes_total{{service_name=\"checkout\",flowscope_flow_role=\"client\",network_peer_address=\"{a}\",network_peer_port=\"5401\",network_io_direction=\"transmit\"}}"
    );
    let raw_rx = raw_tx.replace("transmit", "receive");
    let alerts = "ALERTS{alertname=\"FlowscopeTcpConnectionFailures\",alertstate=\"firing\"}";
    let checks: Vec<Check> = vec![
        (
            "bytes sent, as scraped",
            raw_tx.clone(),
            vec![],
            Some(3000.0),
        ),
        (
            "bytes received, as scraped",
            raw_rx.clone(),
            vec![],
            Some(5000.0),
        ),
        (
            "rule FlowscopeTcpConnectionFailures",
            expr_of(&all, "rule FlowscopeTcpConnectionFailures").to_string(),
            refused.to_vec(),
            Some(1.0),
        ),
        (
            "the firing alert",
            alerts.to_string(),
            refused.to_vec(),
            Some(1.0),
        ),
        (
            "rule FlowscopeDnsFailures",
            expr_of(&all, "rule FlowscopeDnsFailures").to_string(),
            nxdomain.to_vec(),
            None,
        ),
        (
            "TCP dashboard: failed connects by error type",
            expr_of(
                &all,
                "flowscope / TCP health / Failed connects by error type / A",
            )
            .to_string(),
            refused.to_vec(),
            Some(1.0),
        ),
        (
            "DNS dashboard: failed lookups",
            expr_of(&all, "flowscope / DNS / Failed lookups / A").to_string(),
            failed_lookup.to_vec(),
            Some(1.0),
        ),
        (
            "analytics: bytes sent per dependency",
            expr_of(&all, "flowscope / Network Analytics / Dependencies / tx").to_string(),
            checkout_client.to_vec(),
            Some(3000.0),
        ),
        (
            "analytics: bytes received per dependency",
            expr_of(&all, "flowscope / Network Analytics / Dependencies / rx").to_string(),
            checkout_client.to_vec(),
            Some(5000.0),
        ),
        (
            "map: the checkout node",
            expr_of(&all, "flowscope / Network Map / Service map / nodes").to_string(),
            vec![("id", "checkout")],
            None,
        ),
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let mut missing = Vec::new();
        for (what, expr, labels, want) in &checks {
            match query(prom_port, expr) {
                Err(e) => panic!("{what}: {e}\n{expr}"),
                Ok(result) => match (value_of(&result, labels), want) {
                    (Some(v), Some(w)) if v == *w => {}
                    (Some(_), None) => {}
                    (got, _) => {
                        missing.push(format!("{what}: got {got:?}, want {want:?} for {labels:?}"))
                    }
                },
            }
        }
        // The map's edge: checkout -> the server (by service or address),
        // carrying both directions' bytes.
        let edges = query(
            prom_port,
            expr_of(&all, "flowscope / Network Map / Service map / edges"),
        )
        .unwrap();
        let edge = edges.iter().find(|s| {
            s["metric"]["source"] == "checkout"
                && (s["metric"]["target"] == "api" || s["metric"]["target"] == a.as_str())
        });
        match edge {
            Some(e) if e["value"][1] == "8000" => {
                let id = e["metric"]["id"].as_str().unwrap();
                assert!(id.starts_with("checkout -> "), "{e}");
            }
            other => missing.push(format!("map edge checkout -> {a}: {other:?}")),
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {WAIT:?}:\n{}\nscraped: {}",
            missing.join("\n"),
            get(exporter, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(a.as_str()) || l.starts_with("# TYPE"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every expression parses and evaluates.
    let mut failed = Vec::new();
    for (what, expr) in &all {
        if let Err(e) = query(prom_port, expr) {
            failed.push(format!("{what}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    eprintln!("{} expressions evaluated", all.len());
    drop(agent);
}
