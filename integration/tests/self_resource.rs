//! The agent's own environment (the Kubernetes downward-API pattern):
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` set the Resource of its
//! self-telemetry, and the host keys among them (`host.name`,
//! `k8s.node.name`) reach the flows' Resources too.

use std::time::Duration;

use flowscope_integration::{Agent, NetPair, sum};

const WAIT: Duration = Duration::from_secs(40);

#[test]
fn agent_environment_names_its_resources() {
    let net = NetPair::new().unwrap();
    let id = std::process::id();
    let node = format!("node-{id}");
    let host = format!("fs-host-{id}");
    let attrs =
        format!("k8s.node.name={node}, host.name={host},deployment.environment.name=lab%20one");
    let agent = Agent::start_env(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n",
        &[],
        &[
            ("OTEL_RESOURCE_ATTRIBUTES", attrs.as_str()),
            ("OTEL_SERVICE_NAME", "flowscope-lab"),
        ],
    )
    .unwrap();
    let server = net.a_v4();
    net.tcp_exchange(&format!("{server}:5012"), 300, 0, &[])
        .unwrap();
    let filter = [
        ("network.peer.address", server.as_str()),
        ("network.peer.port", "5012"),
        ("network.io.direction", "transmit"),
    ];
    let points = agent.wait_for("the flow and self-telemetry", WAIT, |p| {
        (sum(p, "network.flow.io", &filter) >= 300.0
            && sum(
                p,
                "flowscope.events.received",
                &[("flowscope.source", "ebpf.tcp")],
            ) > 0.0)
            .then(|| p.to_vec())
    });

    let flows: Vec<_> = points
        .iter()
        .filter(|p| {
            p.metric == "network.flow.io" && filter.iter().all(|(k, v)| p.attr(k) == Some(*v))
        })
        .collect();
    assert_eq!(flows.iter().map(|p| p.value).sum::<f64>(), 300.0);
    for p in &flows {
        let r = &p.resource;
        assert_eq!(r.get("host.name"), Some(&host), "{p:?}");
        assert_eq!(r.get("k8s.node.name"), Some(&node), "{p:?}");
        // Only the host keys reach the flows: the rest describes the agent.
        assert_eq!(r.get("deployment.environment.name"), None, "{p:?}");
        assert_ne!(
            r.get("service.name").map(String::as_str),
            Some("flowscope-lab")
        );
    }

    let own: Vec<_> = points
        .iter()
        .filter(|p| {
            [
                "flowscope.events.",
                "flowscope.flows.",
                "flowscope.exporter.",
            ]
            .iter()
            .any(|own| p.metric.starts_with(own))
        })
        .collect();
    assert!(!own.is_empty());
    for p in &own {
        let r = &p.resource;
        assert_eq!(
            r.get("service.name").map(String::as_str),
            Some("flowscope-lab"),
            "{p:?}"
        );
        assert_eq!(
            r.get("deployment.environment.name").map(String::as_str),
            Some("lab one"),
            "{p:?}"
        );
        assert_eq!(r.get("host.name"), Some(&host), "{p:?}");
        assert_eq!(r.get("k8s.node.name"), Some(&node), "{p:?}");
    }
}
