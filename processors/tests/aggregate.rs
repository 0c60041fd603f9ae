//! Aggregation: exact sums after grouping, merged histograms, gauges, dropped
//! attributes, and two pipelines grouping one receiver's flows differently.

mod common;

use std::sync::Arc;

use common::*;
use flowscope_model::names::{attr, resource as res};
use flowscope_model::{Attrs, Context, Flow, PointValue, Role, Transport};

fn process_resource(service: &str, pid: i64) -> Arc<Attrs> {
    Arc::new((*resource(service)).clone().with(res::PROCESS_PID, pid))
}

/// checkout (two processes) talking to two database replicas on 5432, and
/// to a cache over UDP.
fn flows() -> Vec<Flow> {
    let bounds: Arc<[f64]> = Arc::from(&[0.001, 0.01, 0.1][..]);
    let p1 = process_resource("checkout", 11);
    let p2 = process_resource("checkout", 12);
    let mut a = with_bytes(
        flow(
            &p1,
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40000",
            "198.18.1.1:5432",
        ),
        100,
        10,
    );
    a.stats.active = 1;
    a.stats.record_rtt(&bounds, 0.0005, 0.0001);
    a.stats.record_duration(&bounds, 0.05);
    let mut b = with_bytes(
        flow(
            &p2,
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40001",
            "198.18.1.2:5432",
        ),
        200,
        20,
    );
    b.stats.active = 3;
    b.stats.record_rtt(&bounds, 0.005, 0.0003);
    b.stats.record_rtt(&bounds, 0.5, 0.0002);
    b.stats.record_duration(&bounds, 0.05);
    let mut c = with_bytes(
        flow(
            &p1,
            Transport::Udp,
            Role::Client,
            "198.18.0.1:40002",
            "198.18.1.3:11211",
        ),
        7,
        0,
    );
    c.stats.active = 1;
    vec![a, b, c]
}

const COARSE: &str = "  aggregate/coarse:
    group_by:
      resource: [service.name, host.name]
      attributes: [network.transport, network.peer.port]";

#[test]
fn two_pipelines_group_one_receivers_flows_differently() {
    let ctx = Context::default();
    let mut chains = chains_from_yaml(
        COARSE,
        &[
            ("metrics/fine", &[]),
            ("metrics/coarse", &["aggregate/coarse"]),
        ],
        &ctx,
    );
    let batch = batch(flows());
    let fine = chains[0].process(batch.clone());
    let coarse = chains[1].process(batch);

    // Fine: one series per process and replica, every attribute kept.
    let fine_tx: Vec<(String, &PointValue)> = fine
        .points_named("network.flow.io")
        .filter(|p| p.attrs.get_str(attr::IO_DIRECTION) == Some("transmit"))
        .map(|p| {
            (
                p.attrs
                    .get(attr::PEER_ADDRESS)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                &p.value,
            )
        })
        .collect();
    assert_eq!(fine_tx.len(), 3);
    assert!(fine_tx.contains(&("198.18.1.1".into(), &PointValue::Int(100))));
    assert!(fine_tx.contains(&("198.18.1.2".into(), &PointValue::Int(200))));
    assert!(fine_tx.contains(&("198.18.1.3".into(), &PointValue::Int(7))));

    // Coarse: the two TCP flows become one series; pid and peer address gone.
    let want = [(attr::IO_DIRECTION, "transmit"), (attr::PEER_PORT, "5432")];
    assert_eq!(
        *value_of(&coarse.points, "network.flow.io", &want),
        PointValue::Int(300)
    );
    let want = [(attr::IO_DIRECTION, "receive"), (attr::PEER_PORT, "5432")];
    assert_eq!(
        *value_of(&coarse.points, "network.flow.io", &want),
        PointValue::Int(30)
    );
    assert_eq!(
        *value_of(
            &coarse.points,
            "network.flow.io",
            &[(attr::PEER_PORT, "11211")]
        ),
        PointValue::Int(7)
    );
    for p in &coarse.points {
        assert_eq!(p.resource.get(res::PROCESS_PID), None, "{p:?}");
        assert_eq!(p.resource.get_str(res::SERVICE_NAME), Some("checkout"));
        assert_eq!(p.attrs.get(attr::PEER_ADDRESS), None, "{p:?}");
        assert_eq!(p.attrs.get(attr::FLOW_ROLE), None, "{p:?}");
    }
    // Gauges: open connections add up; the mean of RTT variance pools.
    assert_eq!(
        *value_of(&coarse.points, "flowscope.tcp.connection.active", &[]),
        PointValue::Int(4)
    );
    assert_eq!(
        *value_of(&coarse.points, "flowscope.udp.flow.active", &[]),
        PointValue::Int(1)
    );
    let PointValue::Mean { sum, count } =
        value_of(&coarse.points, "flowscope.tcp.rtt.variance", &[])
    else {
        panic!("not a mean")
    };
    assert_eq!(*count, 3);
    assert!((sum - 0.0006).abs() < 1e-15, "{sum}");
    // Histograms: buckets merged.
    let PointValue::Histogram(h) = value_of(&coarse.points, "flowscope.tcp.rtt", &[]) else {
        panic!("not a histogram")
    };
    assert_eq!(h.counts, vec![1, 1, 0, 1]);
    assert_eq!(h.count, 3);
    assert_eq!((h.min, h.max), (0.0005, 0.5));
    let PointValue::Histogram(d) =
        value_of(&coarse.points, "flowscope.tcp.connection.duration", &[])
    else {
        panic!("not a histogram")
    };
    assert_eq!(d.counts, vec![0, 0, 2, 0]);
}

#[test]
fn dropping_transport_merges_tcp_and_udp_bytes() {
    let mut chain = chain_from_yaml(
        "  aggregate:\n    group_by:\n      resource: [service.name]\n      attributes: []",
        &["aggregate"],
    );
    let out = chain.process(batch(flows()));
    assert_eq!(
        *value_of(
            &out.points,
            "network.flow.io",
            &[(attr::IO_DIRECTION, "transmit")]
        ),
        PointValue::Int(307)
    );
    assert_eq!(
        *value_of(
            &out.points,
            "network.flow.io",
            &[(attr::IO_DIRECTION, "receive")]
        ),
        PointValue::Int(30)
    );
    // TCP-only and UDP-only metrics stay apart.
    assert_eq!(
        *value_of(&out.points, "flowscope.tcp.connection.active", &[]),
        PointValue::Int(4)
    );
    assert_eq!(
        *value_of(&out.points, "flowscope.udp.flow.active", &[]),
        PointValue::Int(1)
    );
    for p in &out.points {
        let keys: Vec<&str> = p.attrs.iter().map(|(k, _)| k).collect();
        assert!(keys.is_empty() || keys == [attr::IO_DIRECTION], "{keys:?}");
    }
}

#[test]
fn wildcard_keeps_tag_attributes_only() {
    let mut f = flows();
    for (i, fl) in f.iter_mut().enumerate() {
        fl.attrs.set(
            "flowscope.peer.tag.team",
            if i == 2 { "cache" } else { "db" },
        );
    }
    let mut chain = chain_from_yaml(
        "  aggregate:\n    group_by:\n      attributes: [\"flowscope.peer.tag.*\"]",
        &["aggregate"],
    );
    let out = chain.process(batch(f));
    let want = [
        (attr::IO_DIRECTION, "transmit"),
        ("flowscope.peer.tag.team", "db"),
    ];
    // Resources are kept whole: the two checkout processes stay apart.
    let db: Vec<_> = out
        .points_named("network.flow.io")
        .filter(|p| want.iter().all(|(k, v)| p.attrs.get_str(k) == Some(*v)))
        .map(|p| p.value.clone())
        .collect();
    assert_eq!(db.len(), 2);
    assert!(db.contains(&PointValue::Int(100)) && db.contains(&PointValue::Int(200)));
}
