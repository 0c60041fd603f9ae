//! Flow builders shared by the tests and benchmarks.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use flowscope_model::names::{attr, resource};
use flowscope_model::{Attrs, Flow, FlowBatch, FlowStats, Point, PointValue, Role, Transport};

pub fn resource(service: &str) -> Arc<Attrs> {
    Arc::new(
        Attrs::new()
            .with(resource::SERVICE_NAME, service)
            .with(resource::HOST_NAME, "node-1")
            .with(resource::OS_TYPE, "linux"),
    )
}

/// A flow with the contract's attributes derived from its endpoints, as the
/// receiver builds them.
pub fn flow(res: &Arc<Attrs>, transport: Transport, role: Role, local: &str, peer: &str) -> Flow {
    let local: SocketAddr = local.parse().expect("test address");
    let peer: SocketAddr = peer.parse().expect("test address");
    let mut attrs = Attrs::new()
        .with(attr::NETWORK_TRANSPORT, transport.as_str())
        .with(
            attr::NETWORK_TYPE,
            if peer.is_ipv4() { "ipv4" } else { "ipv6" },
        )
        .with(attr::FLOW_ROLE, role.as_str())
        .with(attr::PEER_ADDRESS, peer.ip().to_string());
    match role {
        Role::Client => attrs.set(attr::PEER_PORT, peer.port()),
        Role::Server => attrs.set(attr::LOCAL_PORT, local.port()),
    }
    Flow {
        resource: res.clone(),
        attrs,
        transport,
        role,
        local,
        peer,
        netns: 4026531840,
        pid: 100,
        stats: FlowStats::default(),
    }
}

pub fn with_bytes(mut f: Flow, tx: u64, rx: u64) -> Flow {
    f.stats.bytes_tx = tx;
    f.stats.bytes_rx = rx;
    f
}

pub fn batch(flows: Vec<Flow>) -> FlowBatch {
    FlowBatch {
        start_unix_nanos: 1_000,
        end_unix_nanos: 2_000,
        flows,
        points: Vec::new(),
    }
}

/// The value of the one point of `metric` whose attributes include all of
/// `want`; panics when there is not exactly one.
pub fn value_of<'a>(points: &'a [Point], metric: &str, want: &[(&str, &str)]) -> &'a PointValue {
    let found: Vec<&Point> = points
        .iter()
        .filter(|p| p.metric.name() == metric)
        .filter(|p| {
            want.iter()
                .all(|(k, v)| p.attrs.get(k).map(|x| x.to_string()).as_deref() == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "points of {metric} with {want:?}: {found:#?}"
    );
    &found[0].value
}

/// Builds one chain per named pipeline from a full YAML config (processors
/// given as the text under `processors:`, indented by 2), the way the agent
/// does: one [`flowscope_processors::Builder`] on `ctx` for every listed
/// processor, in order.
pub fn chains_from_yaml(
    processors: &str,
    pipelines: &[(&str, &[&str])],
    ctx: &flowscope_model::Context,
) -> Vec<flowscope_processors::Chain> {
    chains_from_yaml_with(
        processors,
        pipelines,
        &flowscope_processors::Builder::new(ctx),
    )
}

/// As [`chains_from_yaml`], with the caller's builder (to look at what its
/// processors share, e.g. cloud detections).
pub fn chains_from_yaml_with(
    processors: &str,
    pipelines: &[(&str, &[&str])],
    builder: &flowscope_processors::Builder,
) -> Vec<flowscope_processors::Chain> {
    let mut text = format!(
        "receivers:\n  ebpf:\nprocessors:\n{processors}\nexporters:\n  console:\nservice:\n  pipelines:\n"
    );
    for (name, procs) in pipelines {
        text.push_str(&format!(
            "    {name}:\n      receivers: [ebpf]\n      processors: [{}]\n      exporters: [console]\n",
            procs.join(", ")
        ));
    }
    let loaded = flowscope_otel_config::load_str_with_env(&text, "test.yaml", &|_| None)
        .unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    pipelines
        .iter()
        .map(|(_, procs)| {
            let built = procs
                .iter()
                .map(|p| {
                    let id: flowscope_otel_config::ComponentId = p.parse().expect("id");
                    builder
                        .build(&id, &loaded.config.processors[&id])
                        .unwrap_or_else(|e| panic!("build {p}: {e}"))
                })
                .collect();
            builder.chain(built)
        })
        .collect()
}

pub fn chain_from_yaml(processors: &str, list: &[&str]) -> flowscope_processors::Chain {
    chains_from_yaml(
        processors,
        &[("metrics", list)],
        &flowscope_model::Context::default(),
    )
    .remove(0)
}

/// The attribute `key` of the only point of `metric` as a string.
pub fn attr_of(points: &[Point], metric: &str, key: &str) -> Option<String> {
    let found: Vec<&Point> = points
        .iter()
        .filter(|p| p.metric.name() == metric)
        .collect();
    assert_eq!(found.len(), 1, "points of {metric}: {found:#?}");
    found[0].attrs.get(key).map(|v| v.to_string())
}
