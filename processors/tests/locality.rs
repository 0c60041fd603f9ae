//! Locality and cost: flows between configured zones, regions and clouds get
//! the right `flowscope.network.locality` and an exact `flowscope.flow.cost`.

mod common;

use common::*;
use flowscope_model::names::attr;
use flowscope_model::{PointValue, Role, Transport};

const GIB: u64 = 1 << 30;

/// The local host is in aws eu-west-1a (set by configuration, detection
/// off); subnets give the zones of private peers. Prices are binary
/// fractions so that the expected costs are exact.
const PIPELINE: &str = "  cloud:
    detectors: []
    set: {provider: aws, region: eu-west-1, availability_zone: eu-west-1a}
  peer:
  locality:
    subnets:
      - {cidr: 198.18.1.0/24, zone: eu-west-1a}
      - {cidr: 198.18.2.0/24, zone: eu-west-1b}
      - {cidr: 198.18.3.0/24, zone: us-east-1a, region: us-east-1}
      - {cidr: 198.18.4.0/24, zone: europe-west4-a, region: europe-west4, provider: gcp}
  cost:
    prices: {cross_zone: 0.25, cross_region: 0.5, cross_cloud: 1.0, internet: 2.0}";

/// (peer, expected locality, expected cost in USD of 3.5 GiB sent)
const CASES: &[(&str, &str, Option<f64>)] = &[
    ("198.18.1.20:5432", "same_zone", None),
    ("198.18.2.20:5432", "cross_zone", Some(0.875)),
    ("198.18.3.20:5432", "cross_region", Some(1.75)),
    ("198.18.4.20:5432", "cross_cloud", Some(3.5)),
    // GCP's published range, seen from AWS.
    ("34.1.208.9:443", "cross_cloud", Some(3.5)),
    // AWS S3 in cn-north-1, seen from eu-west-1.
    ("140.179.36.210:443", "cross_region", Some(1.75)),
    // AWS in eu-west-1 itself: same region, zone unknowable.
    ("3.4.12.4:443", "unknown", None),
    // Not in any cloud's ranges, globally routable.
    ("9.9.9.9:443", "internet", Some(7.0)),
    // Private, no subnet configured.
    ("198.18.9.9:443", "private", None),
    ("10.1.2.3:443", "private", None),
    ("127.0.0.1:6379", "same_host", None),
    // The host's own address.
    ("198.18.1.10:8080", "same_host", None),
];

#[test]
fn flows_between_zones_get_locality_and_exact_cost() {
    let mut chain = chain_from_yaml(PIPELINE, &["cloud", "peer", "locality", "cost"]);
    for (peer, locality, cost) in CASES {
        let f = with_bytes(
            flow(
                &resource("app"),
                Transport::Tcp,
                Role::Client,
                "198.18.1.10:40000",
                peer,
            ),
            3 * GIB + GIB / 2,
            GIB,
        );
        let out = chain.process(batch(vec![f]));
        // One io point per direction: check both carry the locality.
        let io: Vec<_> = out.points_named("network.flow.io").collect();
        assert_eq!(io.len(), 2, "{peer}");
        for p in &io {
            assert_eq!(p.attrs.get_str(attr::LOCALITY), Some(*locality), "{peer}");
        }
        let costs: Vec<_> = out.points_named("flowscope.flow.cost").collect();
        match cost {
            None => assert!(costs.is_empty(), "{peer}: {costs:?}"),
            Some(usd) => {
                assert_eq!(costs.len(), 1, "{peer}");
                assert_eq!(costs[0].value, PointValue::Double(*usd), "{peer}");
                assert_eq!(costs[0].attrs.get_str(attr::LOCALITY), Some(*locality));
                assert_eq!(costs[0].metric.unit(), "{USD}");
                assert_eq!(costs[0].attrs.get(attr::IO_DIRECTION), None);
            }
        }
    }
}

#[test]
fn both_directions_and_aggregated_costs_add_up() {
    let yaml = format!(
        "{PIPELINE}\n    directions: [transmit, receive]\n  aggregate:\n    group_by:\n      resource: [service.name]\n      attributes: [flowscope.network.locality]"
    );
    let mut chain = chain_from_yaml(&yaml, &["cloud", "peer", "locality", "cost", "aggregate"]);
    // Two cross-zone flows and one internet flow; receive counts too now.
    let flows = vec![
        with_bytes(
            flow(
                &resource("app"),
                Transport::Tcp,
                Role::Client,
                "198.18.1.10:40000",
                "198.18.2.1:443",
            ),
            GIB,
            GIB,
        ),
        with_bytes(
            flow(
                &resource("app"),
                Transport::Tcp,
                Role::Client,
                "198.18.1.10:40001",
                "198.18.2.2:443",
            ),
            2 * GIB,
            0,
        ),
        with_bytes(
            flow(
                &resource("app"),
                Transport::Udp,
                Role::Client,
                "198.18.1.10:40002",
                "9.9.9.9:53",
            ),
            GIB / 4,
            GIB / 4,
        ),
    ];
    let out = chain.process(batch(flows));
    assert_eq!(
        *value_of(
            &out.points,
            "flowscope.flow.cost",
            &[(attr::LOCALITY, "cross_zone")]
        ),
        PointValue::Double(4.0 * 0.25)
    );
    assert_eq!(
        *value_of(
            &out.points,
            "flowscope.flow.cost",
            &[(attr::LOCALITY, "internet")]
        ),
        PointValue::Double(1.0)
    );
}

#[test]
fn without_a_known_cloud_cloud_peers_are_internet() {
    let yaml = "  peer:\n  locality:";
    let mut chain = chain_from_yaml(yaml, &["peer", "locality"]);
    for (peer, want) in [
        ("34.1.208.9:443", "internet"),
        ("198.18.2.1:443", "private"),
        ("[fd00::9]:443", "private"),
        ("[2001:db8::1]:443", "unknown"),
    ] {
        let local = if peer.starts_with('[') {
            "[fd00::1]:40000"
        } else {
            "198.18.1.10:40000"
        };
        let f = with_bytes(
            flow(&resource("app"), Transport::Tcp, Role::Client, local, peer),
            1,
            0,
        );
        let out = chain.process(batch(vec![f]));
        assert_eq!(
            attr_of(&out.points, "network.flow.io", attr::LOCALITY).as_deref(),
            Some(want),
            "{peer}"
        );
    }
}

/// The snippet docs/processors.md gives for the end-to-end test.
#[test]
fn the_documented_cidr_tag_snippet() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/processors.md"
    ))
    .expect("docs");
    let start = doc.find("  peer/lab:").expect("snippet start");
    let end = doc[start..].find("service:").expect("snippet end") + start;
    let snippet = &doc[start..end];
    let mut chain = chain_from_yaml(snippet, &["peer/lab", "locality"]);

    let client = with_bytes(
        flow(
            &resource("app"),
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40000",
            "198.18.1.5:5432",
        ),
        10,
        0,
    );
    let out = chain.process(batch(vec![client.clone()]));
    let p = &out.points[0];
    assert_eq!(p.attrs.get_str("flowscope.peer.tag.env"), Some("lab"));
    assert_eq!(p.attrs.get_str("flowscope.peer.tag.tier"), Some("db"));
    assert_eq!(p.attrs.get_str(attr::LOCALITY), Some("cross_zone"));

    // With the server's side in the batch, the peer is this host.
    let server = with_bytes(
        flow(
            &resource("db"),
            Transport::Tcp,
            Role::Server,
            "198.18.1.5:5432",
            "198.18.0.1:40000",
        ),
        0,
        10,
    );
    let out = chain.process(batch(vec![client, server]));
    for p in out.points_named("network.flow.io") {
        assert_eq!(p.attrs.get_str(attr::LOCALITY), Some("same_host"), "{p:?}");
    }
}
