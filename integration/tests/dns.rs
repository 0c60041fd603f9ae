//! End to end with DNS (issue 5): a lookup answered by a real dnsmasq is a
//! `dns.lookup.duration` point with its rcode, and the connection the client
//! then makes to the answered address carries `flowscope.peer.domain`, set by
//! the `peer` processor from the name cache the DNS receiver fills (the two
//! share only the agent's context).

use std::time::Duration;

use flowscope_integration::{Agent, NetPair, sum};

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
