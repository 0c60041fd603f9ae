//! Cardinality limits: N series per metric, one overflow point carrying the
//! exact remainder, counted, and slots that stay with active series.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use flowscope_model::names::attr;
use flowscope_model::telemetry::FLOWS_OVERFLOW;
use flowscope_model::{Attrs, Flow, PointValue, Role, Telemetry, Transport};
use flowscope_otel_config::ComponentId;
use flowscope_processors::{Chain, GroupBy, Processor};

/// Flow `i` sends `i + 1` bytes to its own peer 198.18.x.y:443.
fn peers(res: &Arc<Attrs>, range: std::ops::Range<u32>) -> Vec<Flow> {
    range
        .map(|i| {
            let peer = format!("198.18.{}.{}:443", i / 256, i % 256);
            with_bytes(
                flow(
                    res,
                    Transport::Tcp,
                    Role::Client,
                    "198.18.255.1:40000",
                    &peer,
                ),
                u64::from(i) + 1,
                0,
            )
        })
        .collect()
}

fn limited(max: usize, telemetry: &Telemetry) -> Chain {
    let id = ComponentId::new("aggregate").expect("id");
    Chain::new(
        vec![Processor::aggregate(
            id,
            GroupBy::all(),
            max,
            HashMap::new(),
        )],
        telemetry.clone(),
    )
}

fn overflow_attrs() -> Attrs {
    Attrs::new().with(attr::OVERFLOW, true)
}

#[test]
fn ten_thousand_peers_with_limit_100_give_100_series_and_the_exact_remainder() {
    let telemetry = Telemetry::new();
    let mut chain = limited(100, &telemetry);
    let res = resource("scanner");
    let out = chain.process(batch(peers(&res, 0..10_000)));

    let io: Vec<_> = out.points_named("network.flow.io").collect();
    assert_eq!(io.len(), 101);
    let over: Vec<_> = io.iter().filter(|p| p.attrs == overflow_attrs()).collect();
    assert_eq!(over.len(), 1);
    // The first 100 peers (1..=100 bytes) got slots; the rest is
    // sum(101..=10000) = 50,005,000 - 5,050.
    let total: u64 = (1..=10_000u64).sum();
    let admitted: u64 = (1..=100u64).sum();
    assert_eq!(over[0].value, PointValue::Int(total - admitted));
    assert_eq!(over[0].value, PointValue::Int(49_999_950));
    assert_eq!(over[0].resource, res);
    let kept_sum: u64 = io
        .iter()
        .filter(|p| p.attrs != overflow_attrs())
        .map(|p| match p.value {
            PointValue::Int(v) => v,
            _ => panic!("int"),
        })
        .sum();
    assert_eq!(kept_sum, admitted);
    let counted = telemetry.total(
        FLOWS_OVERFLOW,
        &Attrs::new().with(attr::METRIC, "network.flow.io"),
    );
    assert_eq!(counted, 9_900);
    assert_eq!(chain.series_held("network.flow.io"), 100);
}

#[test]
fn the_default_limit_is_2000_series_per_metric() {
    let telemetry = Telemetry::new();
    let mut chain = Chain::new(Vec::new(), telemetry.clone());
    let out = chain.process(batch(peers(&resource("scanner"), 0..2_500)));
    assert_eq!(out.points_named("network.flow.io").count(), 2_001);
    let counted = telemetry.total(
        FLOWS_OVERFLOW,
        &Attrs::new().with(attr::METRIC, "network.flow.io"),
    );
    assert_eq!(counted, 500);
}

#[test]
fn per_metric_limits_from_config() {
    let mut chain = chain_from_yaml(
        "  aggregate:\n    max_series: 10\n    max_series_per_metric: {network.flow.io: 3}",
        &["aggregate"],
    );
    let mut flows = peers(&resource("scanner"), 0..20);
    for f in &mut flows {
        f.stats.opened = 1;
    }
    let out = chain.process(batch(flows));
    assert_eq!(out.points_named("network.flow.io").count(), 4);
    assert_eq!(
        out.points_named("flowscope.tcp.connection.opened").count(),
        11
    );
    assert_eq!(
        *value_of(
            &out.points,
            "flowscope.tcp.connection.opened",
            &[(attr::OVERFLOW, "true")]
        ),
        PointValue::Int(10)
    );
}

#[test]
fn series_with_a_slot_keep_it_while_active_and_release_it_when_idle() {
    let telemetry = Telemetry::new();
    let mut chain = limited(3, &telemetry);
    let res = resource("svc");
    let addr = |p: &flowscope_model::Point| p.attrs.get(attr::PEER_ADDRESS).map(|v| v.to_string());

    // Interval 1: peers 0, 1, 2 take the slots.
    chain.process(batch(peers(&res, 0..3)));
    // Interval 2: five new peers arrive first, then 0, 1, 2 again: the old
    // ones keep their slots, all new ones overflow.
    let mut flows = peers(&res, 10..15);
    flows.extend(peers(&res, 0..3));
    let out = chain.process(batch(flows));
    let mut kept: Vec<String> = out
        .points_named("network.flow.io")
        .filter_map(addr)
        .collect();
    kept.sort();
    assert_eq!(kept, ["198.18.0.0", "198.18.0.1", "198.18.0.2"]);
    assert_eq!(
        *value_of(&out.points, "network.flow.io", &[(attr::OVERFLOW, "true")]),
        PointValue::Int(11 + 12 + 13 + 14 + 15)
    );

    // Interval 3: peer 1 is idle; its slot goes to the first new series.
    let mut flows = peers(&res, 10..12);
    flows.extend(peers(&res, 0..1));
    flows.extend(peers(&res, 2..3));
    let out = chain.process(batch(flows));
    let mut kept: Vec<String> = out
        .points_named("network.flow.io")
        .filter_map(addr)
        .collect();
    kept.sort();
    assert_eq!(kept, ["198.18.0.0", "198.18.0.10", "198.18.0.2"]);
    assert_eq!(
        *value_of(&out.points, "network.flow.io", &[(attr::OVERFLOW, "true")]),
        PointValue::Int(12)
    );
    let counted = telemetry.total(
        FLOWS_OVERFLOW,
        &Attrs::new().with(attr::METRIC, "network.flow.io"),
    );
    assert_eq!(counted, 5 + 1);
}

#[test]
fn overflow_resource_is_what_all_overflowing_resources_share() {
    let telemetry = Telemetry::new();
    let mut chain = limited(1, &telemetry);
    let mut flows = peers(&resource("a"), 0..1);
    flows.extend(peers(&resource("b"), 1..2));
    flows.extend(peers(&resource("c"), 2..3));
    let out = chain.process(batch(flows));
    let over: Vec<_> = out
        .points
        .iter()
        .filter(|p| p.attrs == overflow_attrs())
        .collect();
    assert_eq!(over.len(), 1);
    assert_eq!(over[0].value, PointValue::Int(2 + 3));
    // service.name differs, host.name and os.type are shared.
    let keys: Vec<&str> = over[0].resource.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["host.name", "os.type"]);
}

#[test]
fn histograms_past_the_limit_merge_bucket_by_bucket() {
    let telemetry = Telemetry::new();
    let mut chain = limited(2, &telemetry);
    let bounds: Arc<[f64]> = Arc::from(&[0.001, 0.01][..]);
    let mut flows = peers(&resource("svc"), 0..5);
    for (i, f) in flows.iter_mut().enumerate() {
        // Peers 2, 3, 4 overflow with samples 0.0005, 0.005 and 0.05.
        f.stats
            .record_rtt(&bounds, [0.0001, 0.0001, 0.0005, 0.005, 0.05][i], 0.0);
    }
    let out = chain.process(batch(flows));
    let PointValue::Histogram(h) = value_of(
        &out.points,
        "flowscope.tcp.rtt",
        &[(attr::OVERFLOW, "true")],
    ) else {
        panic!("not a histogram")
    };
    assert_eq!(h.counts, vec![1, 1, 1]);
    assert_eq!(h.count, 3);
    assert_eq!((h.min, h.max), (0.0005, 0.05));
    let counted = telemetry.total(
        FLOWS_OVERFLOW,
        &Attrs::new().with(attr::METRIC, "flowscope.tcp.rtt"),
    );
    assert_eq!(counted, 3);
}
