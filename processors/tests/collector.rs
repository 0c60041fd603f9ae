//! The Collector's processors in a chain: `resource` and `attributes`
//! actions change every point, and series they make equal merge exactly
//! (sums add, histograms merge) before the cardinality limit.

mod common;

use std::sync::Arc;

use common::*;
use flowscope_model::hist::RTT_BOUNDS;
use flowscope_model::names::attr;
use flowscope_model::{PointValue, Role, Transport};

#[test]
fn attributes_delete_merges_series_and_resource_upsert_labels_them() {
    let checkout = resource("checkout");
    let bounds: Arc<[f64]> = Arc::from(RTT_BOUNDS);
    // Two peers of one workload, told apart only by address and port.
    let mut a = with_bytes(
        flow(
            &checkout,
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40000",
            "198.18.0.2:443",
        ),
        1000,
        250,
    );
    a.stats.record_rtt(&bounds, 0.002, 0.0);
    let mut b = with_bytes(
        flow(
            &checkout,
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40001",
            "198.18.0.3:8443",
        ),
        500,
        50,
    );
    b.stats.record_rtt(&bounds, 0.004, 0.0);

    let mut chain = chain_from_yaml(
        "  resource:\n    attributes:\n      - {key: deployment.environment.name, value: lab, action: upsert}\n\
         \x20 attributes/coarse:\n    actions:\n      - {key: network.peer.address, action: delete}\n      - {key: network.peer.port, action: delete}\n",
        &["resource", "attributes/coarse"],
    );
    let out = chain.process(batch(vec![a, b]));
    let io: Vec<_> = out.points_named("network.flow.io").collect();
    assert_eq!(io.len(), 2, "{io:#?}");
    for p in &io {
        assert_eq!(
            p.resource.get_str("deployment.environment.name"),
            Some("lab")
        );
        assert_eq!(p.resource.get_str("service.name"), Some("checkout"));
        assert!(p.attrs.get(attr::PEER_ADDRESS).is_none());
        assert!(p.attrs.get(attr::PEER_PORT).is_none());
    }
    assert_eq!(
        value_of(
            &out.points,
            "network.flow.io",
            &[(attr::IO_DIRECTION, attr::TRANSMIT)]
        ),
        &PointValue::Int(1500)
    );
    assert_eq!(
        value_of(
            &out.points,
            "network.flow.io",
            &[(attr::IO_DIRECTION, attr::RECEIVE)]
        ),
        &PointValue::Int(300)
    );
    let PointValue::Histogram(rtt) = value_of(&out.points, "flowscope.tcp.rtt", &[]) else {
        panic!("rtt is a histogram")
    };
    assert_eq!(rtt.count, 2);
    assert!((rtt.sum - 0.006).abs() < 1e-12, "{}", rtt.sum);
    // One slot per merged series.
    assert_eq!(chain.series_held("network.flow.io"), 2);
}

#[test]
fn batch_and_resourcedetection_env_keep_or_override() {
    // `batch` changes nothing; `resourcedetection` without cloud detectors
    // and with `override: false` keeps the workload's own values.
    let checkout = resource("checkout");
    let a = with_bytes(
        flow(
            &checkout,
            Transport::Udp,
            Role::Client,
            "198.18.0.1:40000",
            "198.18.0.2:53",
        ),
        10,
        20,
    );
    let mut chain = chain_from_yaml(
        "  batch: {timeout: 5s}\n  resourcedetection: {detectors: [system], override: false}\n",
        &["resourcedetection", "batch"],
    );
    let out = chain.process(batch(vec![a]));
    assert_eq!(
        value_of(
            &out.points,
            "network.flow.io",
            &[(attr::IO_DIRECTION, attr::TRANSMIT)]
        ),
        &PointValue::Int(10)
    );
    let p = out.points_named("network.flow.io").next().unwrap();
    assert_eq!(p.resource, checkout);
}
