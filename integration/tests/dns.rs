//! End to end with DNS (issue 5): a lookup answered by a real dnsmasq is a
//! `dns.lookup.duration` point with its rcode, and the connection the client
//! then makes to the answered address carries `flowscope.peer.domain`, set by
//! the `peer` processor from the name cache the DNS receiver fills (the two
//! share only the agent's context). Lookups by processes that exit as soon
//! as they have their answer keep their service name (issue 22).

use std::time::Duration;

use std::process::{Command, Stdio};

use flowscope_integration::{Agent, NetPair, Point, sum};

const WAIT: Duration = Duration::from_secs(40);

#[test]
fn resolved_name_reaches_the_flow() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start_with(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n  dns:\n    collection_interval: 1s\n\
         processors:\n  peer:\n    builtin_ranges: false\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf, dns]\n      processors: [peer]\n      exporters: [file]\n",
    )
    .unwrap();
    let server = net.a_v4();
    let _dns = net.dnsmasq().unwrap();
    // Wait until dnsmasq answers (polling dig, which retries itself).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let out = net
            .run(
                &net.b,
                &[],
                &[
                    "dig",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    &format!("@{server}"),
                    "db.lab.test",
                    "A",
                ],
            )
            .unwrap_or_default();
        if !out.trim().is_empty() || std::time::Instant::now() > deadline {
            break out.trim().to_string();
        }
    };
    assert_eq!(answer, server, "dnsmasq answered {answer:?}");

    let addr = format!("{server}:5011");
    net.tcp_exchange(&addr, 777, 0, &[]).unwrap();

    let filter = [
        ("flowscope.flow.role", "client"),
        ("network.peer.address", server.as_str()),
        ("network.peer.port", "5011"),
        ("network.io.direction", "transmit"),
    ];
    agent.wait_for("the flow", WAIT, |p| {
        (sum(p, "network.flow.io", &filter) >= 777.0).then_some(())
    });
    let points = agent.points();
    let flow: Vec<_> = points
        .iter()
        .filter(|p| {
            p.metric == "network.flow.io" && filter.iter().all(|(k, v)| p.attr(k) == Some(*v))
        })
        .collect();
    for p in &flow {
        assert_eq!(
            p.attr("flowscope.peer.domain"),
            Some("db.lab.test"),
            "{p:?}"
        );
    }
    assert_eq!(flow.iter().map(|p| p.value).sum::<f64>(), 777.0);

    // The lookup itself: answered NOERROR by the server's address. The
    // first successful dig is one lookup; earlier tries while dnsmasq
    // started may have timed out: they are samples of the same histogram
    // with error.type=timeout and no response code, so this filter leaves
    // them out.
    let dns = [
        ("dns.question.name", "db.lab.test"),
        ("flowscope.dns.response.code", "NOERROR"),
        ("server.address", server.as_str()),
    ];
    let n = agent.wait_for("the lookup", WAIT, |p| {
        let n = sum(p, "dns.lookup.duration", &dns);
        (n >= 1.0).then_some(n)
    });
    // Seen from the client and from dnsmasq's side: one answered lookup each.
    assert_eq!(
        n,
        2.0,
        "{:?}",
        agent
            .points()
            .iter()
            .filter(|p| p.metric.starts_with("dns."))
            .collect::<Vec<_>>()
    );
}

/// Client-side `dns.lookup.duration` count of `server`'s lookups by
/// `service` over `transport`.
fn lookups_by(points: &[Point], service: &str, server: &str, transport: &str) -> f64 {
    points
        .iter()
        .filter(|p| p.resource.get("service.name").map(String::as_str) == Some(service))
        .filter(|p| {
            p.metric == "dns.lookup.duration"
                && p.attr("flowscope.flow.role") == Some("client")
                && p.attr("server.address") == Some(server)
                && p.attr("network.transport") == Some(transport)
        })
        .map(|p| p.value)
        .sum()
}

/// `n` digs in `ns` started at once, each with OTEL_SERVICE_NAME=`service`;
/// each must get NOERROR.
fn digs_at_once(ns: &str, service: &str, n: usize, args: &[&str]) {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new("ip")
                .args(["netns", "exec", ns, "dig"])
                .args(args)
                .env("OTEL_SERVICE_NAME", service)
                .stdout(Stdio::piped())
                .spawn()
                .expect("dig (scripts/bootstrap.sh --test installs it)")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("dig");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("status: NOERROR"), "{text}");
    }
}

/// The agent binary end to end: 20 dig processes over UDP and 20 over TCP,
/// each exiting as soon as it has its answer, are all reported under their
/// own service name, none under `unknown_service`.
#[test]
fn short_lived_clients_keep_their_service() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start_with(
        "receivers:\n  dns:\n    collection_interval: 1s\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [dns]\n      exporters: [file]\n",
    )
    .unwrap();
    let server = net.a_v4();
    let _dns = net.dnsmasq().unwrap();
    let at = format!("@{server}");
    // Until dnsmasq answers and the agent captures the pair's namespaces
    // (it finds new ones on a rescan): a probe's lookup is seen.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = net
            .run(
                &net.b,
                &[("OTEL_SERVICE_NAME", "probe")],
                &["dig", "+time=1", "+tries=1", &at, "db.lab.test", "A"],
            )
            .unwrap_or_default();
        if out.contains("status: NOERROR") {
            let seen = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < seen
                && lookups_by(&agent.points(), "probe", &server, "udp") < 1.0
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            if lookups_by(&agent.points(), "probe", &server, "udp") >= 1.0 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dnsmasq never answered or the agent never saw it"
        );
    }
    const N: usize = 20;
    let args = ["+time=5", "+tries=1", at.as_str(), "db.lab.test", "A"];
    digs_at_once(&net.b, "short-dig", N, &args);
    let tcp = [
        "+tcp",
        "+time=5",
        "+tries=1",
        at.as_str(),
        "db.lab.test",
        "A",
    ];
    digs_at_once(&net.b, "short-dig", N, &tcp);
    let (udp, tcp) = agent.wait_for("the short-lived clients' lookups", WAIT, |p| {
        let counts = (
            lookups_by(p, "short-dig", &server, "udp"),
            lookups_by(p, "short-dig", &server, "tcp"),
        );
        (counts.0 >= N as f64 && counts.1 >= N as f64).then_some(counts)
    });
    // One more interval: nothing late, nothing unattributed.
    std::thread::sleep(Duration::from_secs(2));
    let points = agent.points();
    assert_eq!((udp, tcp), (N as f64, N as f64));
    assert_eq!(lookups_by(&points, "short-dig", &server, "udp"), N as f64);
    assert_eq!(lookups_by(&points, "short-dig", &server, "tcp"), N as f64);
    for transport in ["udp", "tcp"] {
        assert_eq!(
            lookups_by(&points, "unknown_service", &server, transport),
            0.0,
            "{transport}"
        );
    }
}
