//! End to end with the processors: a flow to a peer tagged by CIDR arrives
//! with the tag and its locality (issue 4).

use std::time::Duration;

use flowscope_integration::{Agent, NetPair, sum};

const WAIT: Duration = Duration::from_secs(40);

#[test]
fn cidr_tagged_peer_carries_tag_and_locality() {
    let net = NetPair::new().unwrap();
    let n = net.n;
    let config = format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         processors:\n  peer/lab:\n    builtin_ranges: false\n    tags:\n\
         \x20     - cidrs: [198.18.0.0/15]\n        tags: {{env: lab}}\n\
         \x20     - cidrs: [198.18.{n}.0/24]\n        tags: {{env: lab, tier: db}}\n\
         \x20 locality: {{}}\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [peer/lab, locality]\n      exporters: [file]\n"
    );
    let agent = Agent::start_with(&config).unwrap();
    let server_ip = net.a_v4();

    // A first exchange lets the agent see both ends of a connection between
    // the namespaces, which is how it learns they are this host.
    let addr = format!("{server_ip}:5010");
    net.tcp_exchange(&addr, 10, 10, &[]).unwrap();
    agent.wait_for("the warm-up flow", WAIT, |p| {
        (sum(
            p,
            "flowscope.tcp.connection.closed",
            &[("network.peer.address", server_ip.as_str())],
        ) >= 1.0)
            .then_some(())
    });

    let addr = format!("{server_ip}:5432");
    net.tcp_exchange(&addr, 31337, 4242, &[]).unwrap();
    let filter = [
        ("flowscope.flow.role", "client"),
        ("network.peer.address", server_ip.as_str()),
        ("network.peer.port", "5432"),
        ("network.io.direction", "transmit"),
    ];
    agent.wait_for("the tagged flow", WAIT, |p| {
        (sum(p, "network.flow.io", &filter) >= 31337.0).then_some(())
    });
    let points = agent.points();
    let tagged: Vec<_> = points
        .iter()
        .filter(|p| {
            p.metric == "network.flow.io" && filter.iter().all(|(k, v)| p.attr(k) == Some(*v))
        })
        .collect();
    assert!(!tagged.is_empty());
    for p in &tagged {
        assert_eq!(p.attr("flowscope.peer.tag.env"), Some("lab"), "{p:?}");
        assert_eq!(p.attr("flowscope.peer.tag.tier"), Some("db"), "{p:?}");
        assert_eq!(
            p.attr("flowscope.network.locality"),
            Some("same_host"),
            "{p:?}"
        );
    }
    assert_eq!(tagged.iter().map(|p| p.value).sum::<f64>(), 31337.0);
}
