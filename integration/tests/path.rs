//! Network Path end to end: the real agent traces through real routers
//! (network namespaces with forwarding on, see integration/src/topology.rs)
//! and its points are checked hop by hop with exact values.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use flowscope_integration::topology::Topology;
use flowscope_integration::{Agent, Point, built_binary, sum, traffic};

const REACHABLE: &str = "flowscope.path.reachable";
const HOPS: &str = "flowscope.path.hops";
const SENT: &str = "flowscope.path.probes.sent";
const LOST: &str = "flowscope.path.probes.lost";
const HOP_SENT: &str = "flowscope.path.hop.probes.sent";
const HOP_LOST: &str = "flowscope.path.hop.probes.lost";
const HOP_RTT: &str = "flowscope.path.hop.rtt";
const RTT: &str = "flowscope.path.rtt";

/// The points of one run of a test: every point written with the time of
/// the first `reachable` point matching `filter`.
#[derive(Debug)]
struct Run {
    points: Vec<Point>,
}

impl Run {
    fn value(&self, metric: &str) -> f64 {
        let v: Vec<f64> = self
            .points
            .iter()
            .filter(|p| p.metric == metric && p.attr("flowscope.path.hop.index").is_none())
            .map(|p| p.value)
            .collect();
        assert_eq!(v.len(), 1, "one {metric} point per run: {:#?}", self.points);
        v[0]
    }

    /// (index, address, sent, lost) per hop, in TTL order.
    fn hops(&self) -> Vec<(u32, String, f64, f64)> {
        let mut out: Vec<(u32, String, f64, f64)> = self
            .points
            .iter()
            .filter(|p| p.metric == HOP_SENT)
            .map(|p| {
                let idx: u32 = p.attr("flowscope.path.hop.index").unwrap().parse().unwrap();
                let addr = p.attr("flowscope.path.hop.address").unwrap().to_string();
                let lost = self
                    .points
                    .iter()
                    .find(|l| l.metric == HOP_LOST && l.attrs == p.attrs)
                    .map(|l| l.value)
                    .expect("a lost point per hop");
                (idx, addr, p.value, lost)
            })
            .collect();
        out.sort_by_key(|h| h.0);
        out
    }

    fn addresses(&self) -> Vec<String> {
        self.hops().into_iter().map(|h| h.1).collect()
    }
}

fn first_run(agent: &Agent, filter: &[(&str, &str)], timeout: Duration) -> Run {
    agent.wait_for("a path run", timeout, |pts| {
        let r = pts
            .iter()
            .find(|p| p.metric == REACHABLE && filter.iter().all(|(k, v)| p.attr(k) == Some(*v)))?;
        let same = |p: &&Point| {
            p.time == r.time
                && p.resource == r.resource
                && filter.iter().all(|(k, v)| p.attr(k) == Some(*v))
        };
        Some(Run {
            points: pts.iter().filter(same).cloned().collect(),
        })
    })
}

/// An agent with one scheduled test (`test` is its YAML body, indented
/// under the list item).
fn scheduled_agent(test: &str) -> Agent {
    let body: String = test.lines().map(|l| format!("        {l}\n")).collect();
    let cfg = format!(
        "receivers:\n  path:\n    tests:\n      -\n{body}\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [file]\n"
    );
    Agent::start_with(&cfg).expect("agent starts")
}

fn test_yaml(
    topo: &Topology,
    host: &str,
    protocol: &str,
    port: Option<u16>,
    extra: &str,
) -> String {
    let mut s = format!(
        "host: \"{host}\"\nprotocol: {protocol}\ninterval: 3s\ntimeout: 500ms\n\
         queries: 3\ne2e_probes: 10\nnetns: {}\ntags:\n  env: lab\n",
        Topology::netns_path(&topo.client)
    );
    if let Some(p) = port {
        s.push_str(&format!("port: {p}\n"));
    }
    s.push_str(extra);
    s
}

/// Exactly three hops, router1, router2, server; reachable; no loss.
fn assert_clean_path(run: &Run, want: [&str; 3], queries: f64, e2e: f64) {
    assert_eq!(run.value(REACHABLE), 1.0, "{run:#?}");
    assert_eq!(run.value(HOPS), 3.0, "{run:#?}");
    assert_eq!(run.addresses(), want.map(String::from).to_vec());
    for (idx, addr, sent, lost) in run.hops() {
        assert_eq!((sent, lost), (queries, 0.0), "hop {idx} {addr}");
    }
    assert_eq!(run.value(SENT), e2e);
    assert_eq!(run.value(LOST), 0.0);
    assert_eq!(run.value(RTT), e2e, "an RTT sample per answered probe");
    let hop_rtts: Vec<f64> = run
        .points
        .iter()
        .filter(|p| p.metric == HOP_RTT)
        .map(|p| p.value)
        .collect();
    assert_eq!(hop_rtts, vec![queries; 3]);
}

fn clean_path(protocol: &str, port: Option<u16>, v6: bool) {
    let topo = Topology::new().unwrap();
    let (server, r1, r2) = if v6 {
        (
            Topology::SERVER_V6,
            Topology::ROUTER1_V6,
            Topology::ROUTER2_V6,
        )
    } else {
        (
            Topology::SERVER_V4,
            Topology::ROUTER1_V4,
            Topology::ROUTER2_V4,
        )
    };
    let _listener = match port {
        Some(p) if protocol == "tcp" => Some(
            topo.listen(&if v6 {
                format!("[{server}]:{p}")
            } else {
                format!("{server}:{p}")
            })
            .unwrap(),
        ),
        _ => None,
    };
    let agent = scheduled_agent(&test_yaml(&topo, server, protocol, port, ""));
    let run = first_run(
        &agent,
        &[("server.address", server)],
        Duration::from_secs(60),
    );
    assert_clean_path(&run, [r1, r2, server], 3.0, 10.0);
    let p = &run.points[0];
    assert_eq!(p.attr("flowscope.path.protocol"), Some(protocol));
    assert_eq!(p.attr("flowscope.path.test"), Some("scheduled"));
    assert_eq!(p.attr("env"), Some("lab"));
    let want_port = match protocol {
        "icmp" => None,
        _ => Some(port.unwrap_or(33434).to_string()),
    };
    assert_eq!(p.attr("server.port").map(str::to_string), want_port);
}

#[test]
fn scheduled_tcp_three_hops() {
    clean_path("tcp", Some(5000), false);
}

#[test]
fn scheduled_udp_three_hops() {
    clean_path("udp", None, false);
}

#[test]
fn scheduled_icmp_three_hops() {
    clean_path("icmp", None, false);
}

#[test]
fn scheduled_ipv6_tcp_udp_icmp_three_hops() {
    clean_path("tcp", Some(5000), true);
    clean_path("udp", None, true);
    clean_path("icmp", None, true);
}

#[test]
fn silent_router_is_a_star_and_the_destination_stays_reachable() {
    let topo = Topology::new().unwrap();
    topo.nft(&topo.router2, "output", "icmp type time-exceeded drop")
        .unwrap();
    let agent = scheduled_agent(&test_yaml(&topo, Topology::SERVER_V4, "icmp", None, ""));
    let run = first_run(
        &agent,
        &[("server.address", Topology::SERVER_V4)],
        Duration::from_secs(60),
    );
    assert_eq!(run.value(REACHABLE), 1.0);
    assert_eq!(run.value(HOPS), 3.0);
    assert_eq!(
        run.hops(),
        vec![
            (1, Topology::ROUTER1_V4.to_string(), 3.0, 0.0),
            (2, "*".to_string(), 3.0, 3.0),
            (3, Topology::SERVER_V4.to_string(), 3.0, 0.0),
        ]
    );
    assert_eq!((run.value(SENT), run.value(LOST)), (10.0, 0.0));
}

#[test]
fn dropping_server_is_unreachable_with_the_hops_before_it() {
    let topo = Topology::new().unwrap();
    topo.nft(&topo.server, "input", "tcp dport 5000 drop")
        .unwrap();
    let agent = scheduled_agent(&test_yaml(
        &topo,
        Topology::SERVER_V4,
        "tcp",
        Some(5000),
        "",
    ));
    let run = first_run(
        &agent,
        &[("server.address", Topology::SERVER_V4)],
        Duration::from_secs(90),
    );
    assert_eq!(run.value(REACHABLE), 0.0, "{run:#?}");
    assert_eq!(run.value(HOPS), 2.0, "the last hop that answered");
    assert_eq!(
        run.hops(),
        vec![
            (1, Topology::ROUTER1_V4.to_string(), 3.0, 0.0),
            (2, Topology::ROUTER2_V4.to_string(), 3.0, 0.0),
            (3, "*".to_string(), 3.0, 3.0),
        ]
    );
    assert_eq!((run.value(SENT), run.value(LOST)), (10.0, 10.0));
}

/// 30 % of echo requests dropped at the server (nft numgen): 300
/// end-to-end probes see 90 lost on average, with a standard deviation of
/// 7.9; the tolerance of 30 (±3.8 sigma) fails a correct build about once
/// in 7,000 runs.
#[test]
fn random_drop_shows_as_loss() {
    let topo = Topology::new().unwrap();
    topo.nft(
        &topo.server,
        "input",
        "icmp type echo-request numgen random mod 100 < 30 drop",
    )
    .unwrap();
    let agent = scheduled_agent(
        &test_yaml(&topo, Topology::SERVER_V4, "icmp", None, "")
            .replace("e2e_probes: 10", "e2e_probes: 300")
            .replace("timeout: 500ms", "timeout: 200ms")
            .replace("interval: 3s", "interval: 5m"),
    );
    let run = first_run(
        &agent,
        &[("server.address", Topology::SERVER_V4)],
        Duration::from_secs(240),
    );
    assert_eq!(run.value(SENT), 300.0);
    let lost = run.value(LOST);
    assert!((60.0..=120.0).contains(&lost), "lost {lost} of 300");
    assert_eq!(
        run.value(RTT),
        300.0 - lost,
        "RTT samples = answered probes"
    );
    assert_eq!(run.value(REACHABLE), 1.0);
}

#[test]
fn bad_destinations_report_unreachable_and_the_worker_goes_on() {
    let topo = Topology::new().unwrap();
    let missing = format!("/run/netns/fs-missing-{}", std::process::id());
    // Three bad tests and one good one in the same agent: each bad run
    // reports reachable 0, and the good test keeps running after them.
    let cfg = format!(
        "receivers:\n  path:\n    tests:\n\
         \x20     - {{host: no-such-host.invalid, protocol: icmp, interval: 2s, timeout: 200ms, e2e_probes: 2}}\n\
         \x20     - {{host: 198.19.99.1, protocol: icmp, interval: 2s, timeout: 200ms, e2e_probes: 2, netns: {r1}}}\n\
         \x20     - {{host: {srv}, protocol: icmp, interval: 2s, timeout: 200ms, e2e_probes: 2, netns: {missing}}}\n\
         \x20     - {{host: {srv}, protocol: icmp, interval: 2s, timeout: 200ms, e2e_probes: 2, netns: {c}, tags: {{good: \"yes\"}}}}\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [file]\n",
        r1 = Topology::netns_path(&topo.router1),
        c = Topology::netns_path(&topo.client),
        srv = Topology::SERVER_V4,
    );
    let agent = Agent::start_with(&cfg).unwrap();
    let unreachable = |pts: &[Point], filter: &[(&str, &str)]| {
        pts.iter().any(|p| {
            p.metric == REACHABLE
                && p.value == 0.0
                && filter.iter().all(|(k, v)| p.attr(k) == Some(*v))
        })
    };
    let bad_ns = |pts: &[Point]| {
        pts.iter().any(|p| {
            p.metric == REACHABLE
                && p.value == 0.0
                && p.attr("server.address") == Some(Topology::SERVER_V4)
                && p.attr("good").is_none()
        })
    };
    agent.wait_for(
        "unreachable results and good runs after them",
        Duration::from_secs(90),
        |pts| {
            let good_runs = pts
                .iter()
                .filter(|p| {
                    p.metric == REACHABLE && p.value == 1.0 && p.attr("good") == Some("yes")
                })
                .count();
            (unreachable(pts, &[("server.address", "no-such-host.invalid")])
                && unreachable(pts, &[("server.address", "198.19.99.1")])
                && bad_ns(pts)
                && good_runs >= 3)
                .then_some(())
        },
    );
    let pts = agent.points();
    assert!(unreachable(
        &pts,
        &[("server.address", "no-such-host.invalid")]
    ));
    assert!(unreachable(&pts, &[("server.address", "198.19.99.1")]));
    assert!(bad_ns(&pts));
    let log = std::fs::read_to_string(agent.dir.path().join("agent.log")).unwrap();
    assert!(
        log.contains(&missing),
        "the log names the missing namespace:\n{log}"
    );
    assert!(log.contains("no-such-host.invalid"), "{log}");
}

#[test]
fn max_ttl_out_of_range_is_a_config_error_naming_the_key() {
    for bad in ["0", "300"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("f.yaml");
        std::fs::write(
            &cfg,
            format!(
                "receivers:\n  path:\n    tests:\n      - host: 198.19.3.2\n        protocol: icmp\n        max_ttl: {bad}\n\
                 exporters:\n  console:\n\
                 service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [console]\n"
            ),
        )
        .unwrap();
        let out = Command::new(built_binary("flowscope"))
            .args(["validate", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "max_ttl {bad} accepted");
        assert!(err.contains("max_ttl"), "{err}");
        assert!(
            err.contains(&format!("max_ttl {bad} must be between 1 and 64")),
            "{err}"
        );
        assert!(err.contains("f.yaml:6"), "names the line: {err}");
    }
}

#[test]
fn cli_prints_the_hops() {
    let topo = Topology::new().unwrap();
    let _l = topo
        .listen(&format!("{}:5000", Topology::SERVER_V4))
        .unwrap();
    let out = Command::new(built_binary("flowscope"))
        .args([
            "path",
            Topology::SERVER_V4,
            "--protocol",
            "tcp",
            "--port",
            "5000",
            "--queries",
            "3",
            "--e2e-probes",
            "5",
            "--timeout-ms",
            "500",
            "--netns",
            &Topology::netns_path(&topo.client),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hops: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(hops.len(), 3, "{text}");
    for (line, (i, addr)) in hops.iter().zip([
        (1, Topology::ROUTER1_V4),
        (2, Topology::ROUTER2_V4),
        (3, Topology::SERVER_V4),
    ]) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], format!("{i}."), "{text}");
        assert_eq!(f[1], addr, "{text}");
        assert_eq!(f[2], "0.0%", "{text}");
        assert_eq!(f[3], "3", "{text}");
    }
    assert!(
        text.contains("reachable: 3 hops, end to end 5 sent, 0.0% loss"),
        "{text}"
    );

    // Bad input: a clear error, non-zero exit.
    let out = Command::new(built_binary("flowscope"))
        .args([
            "path",
            Topology::SERVER_V4,
            "--netns",
            "/run/netns/fs-no-such-ns",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/run/netns/fs-no-such-ns"), "{err}");

    // Without CAP_NET_RAW (dropped from the bounding set, so exec leaves
    // it out of the effective set) the command names the capability.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-net_raw", "--inh-caps", "-net_raw"])
        .arg(built_binary("flowscope"))
        .args(["path", Topology::SERVER_V4])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_NET_RAW"), "{err}");

    // The agent with a path receiver: its start-up capability check
    // (Feature::Path) fails before anything starts, naming exactly the one
    // capability missing and what the path receiver uses it for.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("f.yaml");
    std::fs::write(
        &cfg,
        "receivers:\n  path:\n    tests:\n      - {host: 198.19.3.2, protocol: icmp}\n\
         exporters:\n  console:\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [console]\n",
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-net_raw", "--inh-caps", "-net_raw"])
        .arg(built_binary("flowscope"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flowscope lacks CAP_NET_RAW (effective")
            && err.contains("raw ICMP sockets of Network Path probes"),
        "{err}"
    );
}

/// Dynamic tests: a client in the client namespace talks to the server;
/// with no scheduled test, the agent traces that server from the client's
/// namespace and labels the path with the client's service.name. Loopback
/// peers get no test; 500 destinations at once respect the per-minute
/// limit, every refusal counted.
#[test]
fn dynamic_tests_follow_observed_flows() {
    let topo = Topology::new().unwrap();
    let cfg = "receivers:\n  ebpf:\n    collection_interval: 1s\n  path:\n    dynamic:\n      enabled: true\n\
               \x20     interval: 20s\n      max_new_per_minute: 20\n      timeout: 300ms\n      e2e_probes: 3\n\
               \x20     include_cidrs: [198.19.0.0/16, 127.0.0.0/8]\n\
               exporters:\n  file:\n    path: OUTPUT\n\
               service:\n  pipelines:\n    metrics:\n      receivers: [ebpf, path]\n      exporters: [file]\n";
    let agent = Agent::start_with(cfg).unwrap();
    let t = traffic();
    let linger = [
        ("OTEL_SERVICE_NAME", "checkout"),
        ("FLOWSCOPE_TRAFFIC_LINGER_MS", "4000"),
    ];
    // A loopback exchange inside the client namespace, then the real one.
    let lo = topo
        .serve(
            &topo.client,
            &[&t, "tcp-server", "127.0.0.1:7000", "10", "10"],
        )
        .unwrap();
    topo.run(
        &topo.client,
        &linger,
        &[&t, "tcp-client", "127.0.0.1:7000", "10", "10"],
    )
    .unwrap();
    lo.finish().unwrap();
    let srv = format!("{}:6000", Topology::SERVER_V4);
    let server = topo
        .serve(&topo.server, &[&t, "tcp-server", &srv, "100", "100"])
        .unwrap();
    topo.run(
        &topo.client,
        &linger,
        &[&t, "tcp-client", &srv, "100", "100"],
    )
    .unwrap();
    server.finish().unwrap();

    let filter = [
        ("server.address", Topology::SERVER_V4),
        ("server.port", "6000"),
        ("flowscope.path.test", "dynamic"),
    ];
    let run = first_run(&agent, &filter, Duration::from_secs(60));
    assert_eq!(
        run.points[0]
            .resource
            .get("service.name")
            .map(String::as_str),
        Some("checkout")
    );
    assert_eq!(run.value(REACHABLE), 1.0, "{run:#?}");
    assert_eq!(run.value(HOPS), 3.0);
    assert_eq!(
        run.addresses(),
        vec![
            Topology::ROUTER1_V4,
            Topology::ROUTER2_V4,
            Topology::SERVER_V4
        ]
    );
    assert_eq!(run.points[0].attr("flowscope.path.protocol"), Some("tcp"));

    // 500 destinations at once (UDP, traced with ICMP): at most 20 new
    // tests a minute, the rest counted as rate_limited.
    topo.run(
        &topo.client,
        &[],
        &[&t, "udp-spray", "198.19.200.0", "500", "9999"],
    )
    .unwrap();
    let in_spray = |p: &Point| {
        p.attr("flowscope.path.test") == Some("dynamic")
            && p.attr("server.address")
                .is_some_and(|a| a.starts_with("198.19.200.") || a.starts_with("198.19.201."))
    };
    let (tested, limited) = agent.wait_for(
        "500 destinations accounted",
        Duration::from_secs(90),
        |pts| {
            let tested: BTreeSet<String> = pts
                .iter()
                .filter(|p| p.metric == REACHABLE && in_spray(p))
                .filter_map(|p| p.attr("server.address").map(str::to_string))
                .collect();
            let limited = sum(
                pts,
                "flowscope.events.lost",
                &[
                    ("flowscope.source", "path.dynamic"),
                    ("flowscope.reason", "rate_limited"),
                ],
            );
            (tested.len() as f64 + limited >= 500.0).then_some((tested.len(), limited))
        },
    );
    eprintln!("500 destinations: {tested} tested, {limited} rate_limited");
    // The minute's budget of 20 minus the server's test admitted before
    // (19 when this test runs alone; fewer when other tests' probes from
    // their own 198.19.x namespaces, seen by this agent too, took some).
    assert!(
        (1..=19).contains(&tested),
        "{tested} tested, {limited} limited"
    );
    // Every spray destination is tested or counted (alone: exactly 500;
    // other tests' refused flows can only add).
    assert!(tested as f64 + limited >= 500.0);
    // The loopback flow was seen, and no test ever went to it.
    let pts = agent.points();
    assert!(
        pts.iter()
            .any(|p| p.attr("network.peer.address") == Some("127.0.0.1")
                && p.attr("network.peer.port") == Some("7000")),
        "the loopback flow was observed"
    );
    assert!(
        !pts.iter().any(|p| p.metric == REACHABLE
            && p.attr("server.address")
                .is_some_and(|a| a.starts_with("127."))),
        "a loopback peer was tested"
    );
}

mod browser;

const XSS: &str = "<img src=x onerror=alert(1)>";

/// One plain HTTP/1.1 GET of a JSON API on loopback.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the ui");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {head}\n{body}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The run end times (`time` of `reachable`) whose hop `index` answered
/// from `address`.
fn runs_via(pts: &[Point], index: &str, address: &str) -> BTreeSet<u64> {
    pts.iter()
        .filter(|p| {
            p.metric == HOP_SENT
                && p.attr("flowscope.path.hop.index") == Some(index)
                && p.attr("flowscope.path.hop.address") == Some(address)
        })
        .map(|p| p.time)
        .collect()
}

/// The route drawn on the Paths page: each node's `data-address` after the
/// source, in order.
async fn drawn_route(c: &fantoccini::Client) -> Vec<String> {
    let v = browser::js(
        c,
        "return [...document.querySelectorAll('#route .hop[data-address]')].map(n => n.dataset.address)",
    )
    .await;
    serde_json::from_value(v).unwrap()
}

/// Waits until the detail of the selected test has loaded `n` times.
async fn detail_loaded(c: &fantoccini::Client, n: u64) {
    let deadline = std::time::Instant::now() + browser::PAGE_WAIT;
    loop {
        let v = browser::js(c, "return Number(document.body.dataset.detailLoads || 0)").await;
        if v.as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the path detail did not load"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/etc/netns/NAME/resolv.conf` (what `ip netns exec` and the path
/// receiver's PTR lookups use in namespace NAME), removed on drop.
struct NetnsResolvConf(std::path::PathBuf);

impl NetnsResolvConf {
    fn new(ns: &str, nameserver: &str) -> Self {
        let dir = std::path::Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap();
        NetnsResolvConf(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A dnsmasq in the client's namespace on 127.0.0.1 serving the routers'
/// PTR records (router3's is `r3_name`), and that namespace's resolv.conf
/// naming it.
fn ptr_server(topo: &Topology, r3_name: &str) -> (browser::Kill, NetnsResolvConf) {
    let dns = browser::Kill(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.client,
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address", "127.0.0.1"])
            .arg("--ptr-record=1.1.19.198.in-addr.arpa,r1.lab.test")
            .arg("--ptr-record=2.2.19.198.in-addr.arpa,r2.lab.test")
            .arg(format!("--ptr-record=2.4.19.198.in-addr.arpa,{r3_name}"))
            .args(["--cache-size=0", "--log-facility=/dev/null", "--pid-file="])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq (scripts/bootstrap.sh --test installs it)"),
    );
    (dns, NetnsResolvConf::new(&topo.client, "127.0.0.1"))
}

/// The Paths page in headless Chromium over the router topology: a
/// scheduled TCP test's route hop by hop with each hop's PTR name (from a
/// dnsmasq in the client's namespace) and AS (from an .mmdb the test
/// writes), the route switched to a second router (exactly one change,
/// with both hop lists), a router that stops answering shown as `*`, and a
/// hop name and a tag that are HTML shown as text.
#[tokio::test(flavor = "current_thread")]
async fn path_page_shows_the_route_its_change_and_a_silent_hop() {
    let mut topo = Topology::new().unwrap();
    topo.add_second_router().unwrap();
    let (srv, r1, r2, r3) = (
        Topology::SERVER_V4,
        Topology::ROUTER1_V4,
        Topology::ROUTER2_V4,
        Topology::ROUTER3_V4,
    );
    let _listener = topo.listen(&format!("{srv}:5000")).unwrap();
    // PTR records for the routers, served in the client's namespace.
    let r3_name = format!("{XSS}.lab.test");
    let _dns = ptr_server(&topo, &r3_name);
    // Router1 and router3 in one AS, router2 and the server in others.
    let dir = tempfile::tempdir().unwrap();
    let asn = dir.path().join("asn.mmdb");
    std::fs::write(
        &asn,
        flowscope_integration::mmdb::asn_v4(&[
            ([198, 19, 1, 0], 24, 64501, "Lab Access"),
            ([198, 19, 4, 0], 24, 64501, "Lab Access"),
            ([198, 19, 2, 0], 24, 64502, "Lab Transit"),
            ([198, 19, 3, 0], 24, 64503, "Lab DC"),
        ]),
    )
    .unwrap();
    let port = browser::free_port();
    let test = format!(
        "host: \"{srv}\"\nprotocol: tcp\nport: 5000\ninterval: 2s\ntimeout: 500ms\n\
         queries: 3\ne2e_probes: 5\nnetns: {}\ntags:\n  team: \"{XSS}\"\n",
        Topology::netns_path(&topo.client)
    );
    let body: String = test.lines().map(|l| format!("        {l}\n")).collect();
    let agent = Agent::start_with(&format!(
        "receivers:\n  path:\n    asn_database: {}\n    tests:\n      -\n{body}\
         exporters:\n  file:\n    path: OUTPUT\n  ui:\n    endpoint: 127.0.0.1:{port}\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [file, ui]\n",
        asn.display()
    ))
    .unwrap();
    let wait = Duration::from_secs(90);

    // Two runs through router2, then the switch, then two through router3.
    agent.wait_for("two runs through router2", wait, |pts| {
        (runs_via(pts, "2", r2).len() >= 2).then_some(())
    });
    topo.switch_to_second_router().unwrap();
    agent.wait_for("two runs through router3", wait, |pts| {
        (runs_via(pts, "2", r3).len() >= 2).then_some(())
    });
    let pts = agent.points();
    assert_eq!(
        sum(
            &pts,
            "flowscope.path.route.changes",
            &[("server.address", srv)]
        ),
        1.0,
        "exactly one route change"
    );
    // Names and AS numbers on the hop points.
    let hop = |addr: &str, key: &str| {
        pts.iter()
            .filter(|p| p.metric == HOP_SENT && p.attr("flowscope.path.hop.address") == Some(addr))
            .filter_map(|p| p.attr(key).map(str::to_string))
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        hop(r1, "flowscope.path.hop.name"),
        BTreeSet::from(["r1.lab.test".to_string()])
    );
    assert_eq!(
        hop(r3, "flowscope.path.hop.name"),
        BTreeSet::from([r3_name.clone()])
    );
    assert!(
        hop(srv, "flowscope.path.hop.name").is_empty(),
        "no PTR for the server"
    );
    assert_eq!(
        hop(r1, "flowscope.path.hop.as.number"),
        BTreeSet::from(["64501".to_string()])
    );
    assert_eq!(
        hop(r2, "flowscope.path.hop.as.name"),
        BTreeSet::from(["Lab Transit".to_string()])
    );
    assert_eq!(
        hop(srv, "flowscope.path.hop.as.number"),
        BTreeSet::from(["64503".to_string()])
    );
    let (via2, via3) = (runs_via(&pts, "2", r2), runs_via(&pts, "2", r3));
    assert!(
        via2.iter().max() < via3.iter().min(),
        "router2's runs all came before router3's: {via2:?} {via3:?}"
    );

    // The API: one test, one change with both hop lists.
    let list = get_json(port, "/api/paths?range=1h&cidr=198.19.3.2/32");
    let tests = list["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 1, "{list}");
    let t = &tests[0];
    assert_eq!(t["route_changes"], 1, "{t}");
    assert_eq!(t["server_port"], "5000");
    assert_eq!(t["tags"]["team"], XSS);
    assert_eq!(t["hops"], 3);
    assert_eq!(t["reachable"], true);
    let id = t["id"].as_str().unwrap().to_string();
    let d = get_json(port, &format!("/api/path?range=1h&id={id}"));
    let changes = d["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{d}");
    assert_eq!(changes[0]["from"], serde_json::json!([r1, r2, srv]));
    assert_eq!(changes[0]["to"], serde_json::json!([r1, r3, srv]));
    let history: Vec<serde_json::Value> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hops"].clone())
        .collect();
    assert_eq!(
        history,
        vec![
            serde_json::json!([r1, r2, srv]),
            serde_json::json!([r1, r3, srv])
        ]
    );

    // The Health finding.
    let h = get_json(port, "/api/health?range=1h&cidr=198.19.3.2/32");
    let found: Vec<&serde_json::Value> = h["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "route_changed")
        .collect();
    assert_eq!(found.len(), 1, "{h}");
    assert_eq!(found[0]["severity"], "warning");
    assert_eq!(found[0]["count"], 1);

    // The page.
    let (_driver, _profile, c) = browser::browser().await;
    let base = format!("http://127.0.0.1:{port}");
    c.goto(&format!(
        "{base}/path?range=1h&cidr=198.19.3.2%2F32&id={id}"
    ))
    .await
    .unwrap();
    browser::loaded(&c, 1).await;
    detail_loaded(&c, 1).await;
    browser::range_control(&c, &["5m", "15m", "30m", "1h"]).await;
    assert_eq!(drawn_route(&c).await, vec![r1, r3, srv]);
    let names = browser::js(
        &c,
        "return [...document.querySelectorAll('#route .hop[data-address]')].map(n => \
         [n.querySelector('.name')?.textContent ?? null, n.querySelector('.as')?.textContent ?? null])",
    )
    .await;
    assert_eq!(
        names,
        serde_json::json!([
            ["r1.lab.test", "AS64501 Lab Access"],
            [r3_name, "AS64501 Lab Access"],
            [null, "AS64503 Lab DC"]
        ])
    );
    // Grouped by AS: router1 and router3 in one box.
    c.find(fantoccini::Locator::Css("#group_as"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let groups = browser::js(
        &c,
        "return [...document.querySelectorAll('#route .as-group')].map(g => \
         [g.dataset.as, [...g.querySelectorAll('.hop')].map(h => h.dataset.address)])",
    )
    .await;
    assert_eq!(
        groups,
        serde_json::json!([["64501", [r1, r3]], ["64503", [srv]]])
    );
    let row = browser::js(
        &c,
        "return [...document.querySelectorAll('#tests tbody tr[data-id] td')].map(td => [td.dataset.col, td.textContent])",
    )
    .await;
    let row: Vec<(String, String)> = serde_json::from_value(row).unwrap();
    let cell = |k: &str| {
        row.iter()
            .find(|(c, _)| c == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(cell("destination"), format!("{srv}:5000"));
    assert_eq!(cell("tags_text"), format!("team={XSS}"));
    assert_eq!(cell("route_changes"), "1");
    assert_eq!(cell("hops"), "3");
    assert_eq!(cell("reachable"), "yes");
    let change = browser::js(
        &c,
        "const r = document.querySelector('#changes tr.change'); \
         return [r.querySelector('.from').textContent, r.querySelector('.to').textContent, \
         document.querySelectorAll('#changes tr.change').length]",
    )
    .await;
    assert_eq!(
        change,
        serde_json::json!([
            format!("{r1} → {r2} → {srv}"),
            format!("{r1} → {r3} → {srv}"),
            1
        ])
    );
    // The pivot back to the flows: the dependency whose peer is the server.
    let dep = browser::js(&c, "return document.querySelector('#dependency').href").await;
    assert!(
        dep.as_str()
            .unwrap()
            .contains("/analytics?range=1h&client_key=service.name&server_key=network.peer.address&cidr=198.19.3.2%2F32"),
        "{dep}"
    );
    let caveat = browser::js(&c, "return document.querySelector('#caveat').textContent").await;
    assert!(
        caveat.as_str().unwrap().contains("rate-limit"),
        "the ICMP rate-limit caveat is on the page: {caveat}"
    );
    assert_eq!(
        browser::js(&c, "return document.querySelectorAll('img').length").await,
        0
    );
    assert!(c.get_alert_text().await.is_err(), "an alert opened");
    // Tall enough for the route, the charts, the change and the history.
    c.set_window_size(1400, 1500).await.unwrap();
    browser::screenshot(&c, "path").await;

    // Router1 stops answering with time-exceeded: `*` at hop 1, and no
    // route change for it.
    topo.nft(&topo.router1, "output", "icmp type time-exceeded drop")
        .unwrap();
    agent.wait_for("a run with router1 silent", wait, |pts| {
        (!runs_via(pts, "1", "*").is_empty()).then_some(())
    });
    c.refresh().await.unwrap();
    browser::loaded(&c, 1).await;
    detail_loaded(&c, 1).await;
    assert_eq!(drawn_route(&c).await, vec!["*", r3, srv]);
    let silent = browser::js(
        &c,
        "return document.querySelector('#route .hop[data-index=\"1\"]').className",
    )
    .await;
    assert!(silent.as_str().unwrap().contains("silent"), "{silent}");
    assert_eq!(
        sum(
            &agent.points(),
            "flowscope.path.route.changes",
            &[("server.address", srv)]
        ),
        1.0,
        "a silent hop is no route change"
    );
    browser::screenshot(&c, "path-silent-hop").await;
    c.close().await.unwrap();
}

/// A child process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `GET path` on 127.0.0.1:`port` until `done` takes the JSON.
fn poll_json<T>(
    port: u16,
    path: &str,
    what: &str,
    mut done: impl FnMut(&serde_json::Value) -> Option<T>,
) -> T {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            );
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            last = text
                .split_once("\r\n\r\n")
                .map_or(text.clone(), |(_, b)| b.to_string());
            if let Some(t) = serde_json::from_str(&last)
                .ok()
                .as_ref()
                .and_then(&mut done)
            {
                return t;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never appeared at {path}: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The storages the fleet view reads.
fn storage(kind: &str, dir: &std::path::Path) -> (Killed, u16) {
    let port = browser::free_port();
    let child = if kind == "prometheus" {
        let conf = dir.join("prometheus.yml");
        std::fs::write(&conf, "global:\n  scrape_interval: 1s\n").unwrap();
        Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (scripts/bootstrap.sh --test installs it)")
    } else {
        Command::new("/usr/bin/victoria-metrics")
            .arg(format!("-storageDataPath={}", dir.join("vm").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("victoria-metrics (scripts/bootstrap.sh --test installs it)")
    };
    let killed = Killed(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{kind} did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (killed, port)
}

/// The Paths API of `flowscope ui --prometheus` over Prometheus and over
/// VictoriaMetrics, fed by remote write: the test, its one route change
/// and both routes, read from the hop series as on one node.
#[test]
fn fleet_paths_over_prometheus_and_victoria_metrics() {
    for kind in ["prometheus", "victoria-metrics"] {
        let mut topo = Topology::new().unwrap();
        topo.add_second_router().unwrap();
        let (srv, r1, r2, r3) = (
            Topology::SERVER_V4,
            Topology::ROUTER1_V4,
            Topology::ROUTER2_V4,
            Topology::ROUTER3_V4,
        );
        let dir = tempfile::tempdir().unwrap();
        let (_db, db_port) = storage(kind, dir.path());
        // PTR records are there to be asked, but resolve_hops is off.
        let _dns = ptr_server(&topo, "r3.lab.test");
        let test = test_yaml(&topo, srv, "icmp", None, "").replace("interval: 3s", "interval: 2s");
        let body: String = test.lines().map(|l| format!("        {l}\n")).collect();
        let agent = Agent::start_with(&format!(
            "receivers:\n  path:\n    resolve_hops: false\n    tests:\n      -\n{body}\
             exporters:\n  file:\n    path: OUTPUT\n  prometheusremotewrite:\n    \
             endpoint: http://127.0.0.1:{db_port}/api/v1/write\n    \
             resource_to_telemetry_conversion:\n      enabled: true\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      \
             exporters: [file, prometheusremotewrite]\n"
        ))
        .unwrap();
        let ui_port = browser::free_port();
        let _ui = Killed(
            Command::new(built_binary("flowscope"))
                .args(["ui", "--prometheus", &format!("http://127.0.0.1:{db_port}")])
                .args(["--endpoint", &format!("127.0.0.1:{ui_port}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("flowscope ui"),
        );
        // 20 s of runs through router2, then 20 s through router3: each
        // route fills whole 10 s steps of the fleet's answer.
        let wait = Duration::from_secs(90);
        agent.wait_for("10 runs through router2", wait, |pts| {
            (runs_via(pts, "2", r2).len() >= 10).then_some(())
        });
        topo.switch_to_second_router().unwrap();
        agent.wait_for("10 runs through router3", wait, |pts| {
            (runs_via(pts, "2", r3).len() >= 10).then_some(())
        });
        assert_eq!(
            sum(
                &agent.points(),
                "flowscope.path.route.changes",
                &[("server.address", srv)]
            ),
            1.0
        );
        let q = "range=5m&cidr=198.19.3.2%2F32";
        let id = poll_json(
            ui_port,
            &format!("/api/paths?{q}"),
            "the test with its change",
            |j| {
                let t = j["tests"].as_array()?.first()?;
                (t["route_changes"] == 1 && j["tests"].as_array()?.len() == 1)
                    .then(|| t["id"].as_str().map(str::to_string))?
            },
        );
        let d = poll_json(
            ui_port,
            &format!("/api/path?{q}&id={id}"),
            "both routes",
            |d| (d["history"].as_array()?.len() >= 2).then(|| d.clone()),
        );
        let t = &d["test"];
        assert_eq!(t["server_address"], srv, "{kind}: {d}");
        assert_eq!(t["protocol"], "icmp");
        assert_eq!(t["tags"]["env"], "lab", "{kind}: tags come through");
        let hops: Vec<&str> = d["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["address"].as_str().unwrap())
            .collect();
        assert_eq!(hops, [r1, r3, srv], "{kind}: {d}");
        let changes = d["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{kind}: {d}");
        assert_eq!(changes[0]["from"], serde_json::json!([r1, r2, srv]));
        assert_eq!(changes[0]["to"], serde_json::json!([r1, r3, srv]));
        let routes: Vec<serde_json::Value> = d["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["hops"].clone())
            .collect();
        assert_eq!(
            routes,
            [
                serde_json::json!([r1, r2, srv]),
                serde_json::json!([r1, r3, srv])
            ],
            "{kind}"
        );
        // The Health page's finding, in the fleet view too.
        let f = poll_json(
            ui_port,
            &format!("/api/health?{q}"),
            "the route finding",
            |j| {
                j["findings"]
                    .as_array()?
                    .iter()
                    .find(|f| f["kind"] == "route_changed")
                    .cloned()
            },
        );
        assert_eq!(f["severity"], "warning", "{kind}: {f}");
        assert_eq!(f["count"], 1, "{kind}: {f}");
        assert_eq!(f["server"], srv, "{kind}: {f}");
        // No hop name asked (resolve_hops: false).
        assert!(
            !agent
                .points()
                .iter()
                .any(|p| p.attr("flowscope.path.hop.name").is_some()),
            "{kind}: resolve_hops: false asks no name"
        );
    }
}

/// The ASN database is read again when the file changes (checked every
/// 10 s), without a restart; a missing one stops the agent at start naming
/// the file.
#[test]
fn asn_database_is_read_again_when_it_changes_and_a_missing_one_is_named() {
    let topo = Topology::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let asn = dir.path().join("asn.mmdb");
    let write = |n: u32, org: &str| {
        let bytes = flowscope_integration::mmdb::asn_v4(&[([198, 19, 0, 0], 16, n, org)]);
        // Replaced by a rename, as a download tool does.
        let tmp = dir.path().join("asn.mmdb.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &asn).unwrap();
    };
    write(64510, "Before");
    let test = test_yaml(&topo, Topology::SERVER_V4, "icmp", None, "")
        .replace("interval: 3s", "interval: 1s")
        .replace("e2e_probes: 10", "e2e_probes: 1");
    let body: String = test.lines().map(|l| format!("        {l}\n")).collect();
    let cfg = |db: &std::path::Path| {
        format!(
            "receivers:\n  path:\n    resolve_hops: false\n    asn_database: {}\n    tests:\n      -\n{body}\
             exporters:\n  file:\n    path: OUTPUT\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [file]\n",
            db.display()
        )
    };
    let agent = Agent::start_with(&cfg(&asn)).unwrap();
    let as_of = |pts: &[Point], n: &str, org: &str| {
        pts.iter().any(|p| {
            p.metric == HOP_SENT
                && p.attr("flowscope.path.hop.address") == Some(Topology::ROUTER1_V4)
                && p.attr("flowscope.path.hop.as.number") == Some(n)
                && p.attr("flowscope.path.hop.as.name") == Some(org)
        })
    };
    agent.wait_for("AS64510 on router1's hop", Duration::from_secs(60), |pts| {
        as_of(pts, "64510", "Before").then_some(())
    });
    write(64511, "After");
    agent.wait_for(
        "AS64511 after the file changed",
        Duration::from_secs(60),
        |pts| as_of(pts, "64511", "After").then_some(()),
    );

    // A missing file: the agent does not start, and says which file.
    let missing = dir.path().join("no-such.mmdb");
    let err = match Agent::start_with(&cfg(&missing)) {
        Ok(_) => panic!("the agent started without its asn_database"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("asn_database") && err.contains("no-such.mmdb"),
        "{err}"
    );
}

const TIME_LEFT: &str = "flowscope.tls.certificate.time_left";
const TLS_FAILED: &str = "flowscope.tls.check.failed";

/// A CA and two server certificates for `ip` signed by it: one valid for
/// three more days, one that expired a day ago; PEM files in `dir`.
fn tls_files(dir: &std::path::Path, ip: &str) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "flowscope path test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let now = time::OffsetDateTime::now_utc();
    for (name, not_before, not_after) in [
        (
            "valid",
            now - time::Duration::days(1),
            now + time::Duration::days(3),
        ),
        (
            "expired",
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        ),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![ip.to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, format!("{name}.path.test"));
        p.not_before = not_before;
        p.not_after = not_after;
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// Kills a spawned server when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, args: &[&str]) -> Spawned {
    Spawned(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("server starts"),
    )
}

#[test]
fn tls_checks_report_time_left_expiry_and_failures_without_hanging() {
    let topo = Topology::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    tls_files(dir.path(), Topology::SERVER_V4);
    let d = |f: &str| dir.path().join(f).display().to_string();
    let _valid = spawn_in(
        &topo.server,
        &[
            "openssl",
            "s_server",
            "-quiet",
            "-accept",
            "8443",
            "-cert",
            &d("valid.pem"),
            "-key",
            &d("valid.key"),
        ],
    );
    let _expired = spawn_in(
        &topo.server,
        &[
            "openssl",
            "s_server",
            "-quiet",
            "-accept",
            "8444",
            "-cert",
            &d("expired.pem"),
            "-key",
            &d("expired.key"),
        ],
    );
    // A plain-TCP port that answers like an HTTP server, and one that
    // accepts and never says anything.
    let _http = spawn_in(
        &topo.server,
        &[
            "python3",
            "-c",
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8445)); s.listen(16)\nwhile True:\n  c,_=s.accept(); c.recv(4096); c.sendall(b'HTTP/1.0 400 Bad Request\\r\\n\\r\\n'); c.close()",
        ],
    );
    let _silent = spawn_in(
        &topo.server,
        &[
            "python3",
            "-c",
            "import socket,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8446)); s.listen(16)\nkeep=[]\nwhile True:\n  c,_=s.accept(); keep.append(c)",
        ],
    );
    let ca = d("ca.pem");
    let test = |port: u16, extra: &str| {
        let body = test_yaml(
            &topo,
            Topology::SERVER_V4,
            "tcp",
            Some(port),
            &format!("tls: true\nca_file: {ca}\n{extra}"),
        );
        // The name check is told apart by a second tag.
        let body = if extra.is_empty() {
            body
        } else {
            body.replace("  env: lab\n", "  env: lab\n  check: name\n")
        };
        let body: String = body.lines().map(|l| format!("        {l}\n")).collect();
        format!("      -\n{body}")
    };
    let ui_port = browser::free_port();
    let cfg = format!(
        "receivers:\n  path:\n    resolve_hops: false\n    tests:\n{}{}{}{}{}\
         exporters:\n  file:\n    path: OUTPUT\n  ui:\n    endpoint: 127.0.0.1:{ui_port}\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [file, ui]\n",
        test(8443, ""),
        test(8444, ""),
        test(8445, ""),
        test(8446, ""),
        // The valid certificate under a name it does not carry.
        test(8443, "server_name: other.path.test\n"),
    );
    let agent = Agent::start_with(&cfg).expect("agent starts");
    let port_of = |p: &Point| p.attr("server.port").map(str::to_string);
    // Each check's first outcome once its server answers (a run before the
    // server listens fails to connect and is retried by the next run).
    let wanted = |pts: &[Point]| {
        let left = |port: &str| {
            pts.iter()
                .find(|p| {
                    p.metric == TIME_LEFT
                        && port_of(p).as_deref() == Some(port)
                        && p.attr("check").is_none()
                })
                .cloned()
        };
        let failed = |port: &str, check: Option<&str>| -> BTreeSet<String> {
            pts.iter()
                .filter(|p| {
                    p.metric == TLS_FAILED
                        && port_of(p).as_deref() == Some(port)
                        && p.attr("check") == check
                })
                .filter_map(|p| p.attr("error.type").map(str::to_string))
                .filter(|e| e != "connect")
                .collect()
        };
        let (valid, expired) = (left("8443")?, left("8444")?);
        let (http, silent, name) = (
            failed("8445", None),
            failed("8446", None),
            failed("8443", Some("name")),
        );
        (!http.is_empty()
            && !silent.is_empty()
            && !name.is_empty()
            && !failed("8444", None).is_empty())
        .then_some((
            valid,
            expired,
            failed("8443", None),
            failed("8444", None),
            http,
            silent,
            name,
        ))
    };
    let (valid, expired, valid_failed, expired_failed, http, silent, name) = agent.wait_for(
        "every TLS check's outcome",
        Duration::from_secs(120),
        wanted,
    );
    let day = 86_400.0;
    assert!(
        valid.value > 3.0 * day - 600.0 && valid.value <= 3.0 * day,
        "time left {} s, want just under 3 days",
        valid.value
    );
    assert_eq!(valid.attr("tls.server.subject"), Some("CN=valid.path.test"));
    assert_eq!(
        valid.attr("tls.server.issuer"),
        Some("CN=flowscope path test CA")
    );
    assert!(
        valid
            .attr("tls.server.not_after")
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(
        valid_failed.is_empty(),
        "a valid certificate failed: {valid_failed:?}"
    );
    assert!(
        expired.value < -day + 600.0 && expired.value > -day - 600.0,
        "time left {} s, want about minus one day",
        expired.value
    );
    assert_eq!(
        expired_failed,
        BTreeSet::from(["certificate_expired".to_string()])
    );
    assert_eq!(http, BTreeSet::from(["handshake".to_string()]));
    assert_eq!(silent, BTreeSet::from(["timeout".to_string()]));
    assert_eq!(name, BTreeSet::from(["name_mismatch".to_string()]));

    // Network Health: the expired certificate is critical, the one with
    // three days left a warning (under the default 14 days), once each.
    let certs = |h: &serde_json::Value| -> Vec<(String, String, String)> {
        let mut v: Vec<(String, String, String)> = h["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| {
                f["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("certificate_"))
            })
            .map(|f| {
                let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                (s("kind"), s("severity"), s("title"))
            })
            .collect();
        v.sort();
        v
    };
    let server = Topology::SERVER_V4;
    let want = vec![
        (
            "certificate_expired".to_string(),
            "critical".to_string(),
            format!("Certificate expired: {server}:8444"),
        ),
        (
            "certificate_expiring".to_string(),
            "warning".to_string(),
            format!("Certificate expires in 3.0 days: {server}:8443"),
        ),
    ];
    let mut got = Vec::new();
    for _ in 0..300 {
        got = certs(&get_json(ui_port, "/api/health?range=5m"));
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, want);
}
