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
        .filter(|p| p.metric.name == metric)
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
