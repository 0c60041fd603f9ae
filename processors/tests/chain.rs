//! The chain seam: known flows in, exact points out.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use flowscope_model::hist::RTT_BOUNDS;
use flowscope_model::metrics::{
    FLOW_IO, FLOW_PACKETS, TCP_ACTIVE, TCP_OPENED, TCP_RTT, TCP_RTT_VARIANCE, UDP_ACTIVE,
};
use flowscope_model::names::attr;
use flowscope_model::{Attrs, Histogram, Point, PointValue, Role, Telemetry, Transport};
use flowscope_otel_config::ComponentId;
use flowscope_processors::{Chain, GroupBy, KeySet, Processor};

fn canon(points: &[Point]) -> Vec<String> {
    let mut v: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{:?} | {} | {:?} | {:?}",
                p.resource,
                p.metric.name(),
                p.attrs,
                p.value
            )
        })
        .collect();
    v.sort();
    v
}

fn point(
    res: &Arc<Attrs>,
    metric: flowscope_model::MetricId,
    attrs: Attrs,
    value: PointValue,
) -> Point {
    Point {
        resource: res.clone(),
        metric,
        attrs,
        value,
    }
}

#[test]
fn known_flows_yield_exact_points_without_aggregate() {
    let checkout = resource("checkout");
    let dns = resource("dnsd");
    let bounds: Arc<[f64]> = Arc::from(RTT_BOUNDS);

    // Two updates of the same series (same Resource, same attributes) and a
    // UDP server flow of another workload.
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
    a.stats.packets_tx = 10;
    a.stats.packets_rx = 5;
    a.stats.opened = 1;
    a.stats.active = 1;
    a.stats.record_rtt(&bounds, 0.002, 0.0005);
    let mut b = with_bytes(
        flow(
            &checkout,
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40001",
            "198.18.0.2:443",
        ),
        500,
        0,
    );
    b.stats.active = 1;
    b.stats.record_rtt(&bounds, 0.004, 0.0015);
    let mut c = with_bytes(
        flow(
            &dns,
            Transport::Udp,
            Role::Server,
            "198.18.0.1:53",
            "198.18.0.9:5353",
        ),
        0,
        64,
    );
    c.stats.packets_rx = 1;
    c.stats.active = 1;
    let tcp_attrs = a.attrs.clone();
    let udp_attrs = c.attrs.clone();

    let mut chain = Chain::new(Vec::new(), Telemetry::new());
    let out = chain.process(batch(vec![a, b, c]));
    assert_eq!((out.start_unix_nanos, out.time_unix_nanos), (1_000, 2_000));

    let tx = |a: &Attrs| a.clone().with(attr::IO_DIRECTION, attr::TRANSMIT);
    let rx = |a: &Attrs| a.clone().with(attr::IO_DIRECTION, attr::RECEIVE);
    let mut rtt = Histogram::new(bounds.clone());
    rtt.record(0.002);
    rtt.record(0.004);
    let expected = vec![
        point(&checkout, FLOW_IO, tx(&tcp_attrs), PointValue::Int(1500)),
        point(&checkout, FLOW_IO, rx(&tcp_attrs), PointValue::Int(250)),
        point(&checkout, FLOW_PACKETS, tx(&tcp_attrs), PointValue::Int(10)),
        point(&checkout, FLOW_PACKETS, rx(&tcp_attrs), PointValue::Int(5)),
        point(&checkout, TCP_OPENED, tcp_attrs.clone(), PointValue::Int(1)),
        point(&checkout, TCP_ACTIVE, tcp_attrs.clone(), PointValue::Int(2)),
        point(
            &checkout,
            TCP_RTT,
            tcp_attrs.clone(),
            PointValue::Histogram(rtt),
        ),
        point(
            &checkout,
            TCP_RTT_VARIANCE,
            tcp_attrs.clone(),
            PointValue::Mean {
                sum: 0.002,
                count: 2,
            },
        ),
        point(&dns, FLOW_IO, rx(&udp_attrs), PointValue::Int(64)),
        point(&dns, FLOW_PACKETS, rx(&udp_attrs), PointValue::Int(1)),
        point(&dns, UDP_ACTIVE, udp_attrs.clone(), PointValue::Int(1)),
    ];
    assert_eq!(canon(&out.points), canon(&expected));
}

#[test]
fn ready_made_points_join_and_merge() {
    let res = resource("dns-client");
    let attrs = Attrs::new().with(attr::DNS_QUESTION_NAME, "example.com");
    let p = point(
        &res,
        flowscope_model::telemetry::EVENTS_LOST,
        attrs,
        PointValue::Int(2),
    );
    let mut b = batch(Vec::new());
    b.points = vec![p.clone(), p.clone()];
    let out = Chain::new(Vec::new(), Telemetry::new()).process(b);
    let mut want = p;
    want.value = PointValue::Int(4);
    assert_eq!(out.points, vec![want]);
}

#[test]
fn aggregate_drops_peer_address_and_sums_exactly() {
    let res = Arc::new((*resource("checkout")).clone().with("process.pid", 42i64));
    let flows = (0..5u64)
        .map(|i| {
            with_bytes(
                flow(
                    &res,
                    Transport::Tcp,
                    Role::Client,
                    "198.18.0.1:40000",
                    &format!("198.18.1.{i}:5432"),
                ),
                100 * (i + 1),
                7,
            )
        })
        .collect();
    let group_by = GroupBy {
        resource: KeySet::only(&["service.name", "host.name"]),
        attributes: KeySet::only(&[attr::NETWORK_TRANSPORT, attr::PEER_PORT]),
    };
    let agg = Processor::aggregate(
        ComponentId::new("aggregate").expect("id"),
        group_by,
        2_000,
        HashMap::new(),
    );
    let out = Chain::new(vec![agg], Telemetry::new()).process(batch(flows));
    let io: Vec<&Point> = out.points_named("network.flow.io").collect();
    assert_eq!(io.len(), 2, "{io:#?}");
    assert_eq!(
        *value_of(
            &out.points,
            "network.flow.io",
            &[(attr::IO_DIRECTION, "transmit")]
        ),
        PointValue::Int(1500)
    );
    assert_eq!(
        *value_of(
            &out.points,
            "network.flow.io",
            &[(attr::IO_DIRECTION, "receive")]
        ),
        PointValue::Int(35)
    );
    for p in &out.points {
        let keys: Vec<&str> = p.attrs.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![attr::IO_DIRECTION, attr::PEER_PORT, attr::NETWORK_TRANSPORT]
        );
        let rkeys: Vec<&str> = p.resource.iter().map(|(k, _)| k).collect();
        assert_eq!(rkeys, vec!["host.name", "service.name"]);
    }
}
