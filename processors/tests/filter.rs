//! Filter: include and exclude by CIDR, port, transport, service and
//! process name, and loopback on or off.

mod common;

use std::sync::Arc;

use common::*;
use flowscope_model::names::{attr, resource as res};
use flowscope_model::{Attrs, Flow, Role, Transport};

fn with_process(service: &str, exe: &str) -> Arc<Attrs> {
    Arc::new(
        (*resource(service))
            .clone()
            .with(res::PROCESS_EXECUTABLE_NAME, exe),
    )
}

/// Six flows, each sending a distinct byte count so the survivors can be
/// read off the total.
fn flows() -> Vec<Flow> {
    let web = with_process("web", "nginx");
    let db = with_process("db", "postgres");
    vec![
        with_bytes(
            flow(
                &web,
                Transport::Tcp,
                Role::Server,
                "198.18.0.1:443",
                "198.18.5.5:50000",
            ),
            1,
            0,
        ),
        with_bytes(
            flow(
                &web,
                Transport::Tcp,
                Role::Client,
                "198.18.0.1:40000",
                "198.18.0.9:5432",
            ),
            2,
            0,
        ),
        with_bytes(
            flow(
                &db,
                Transport::Tcp,
                Role::Server,
                "198.18.0.9:5432",
                "198.18.0.1:40000",
            ),
            4,
            0,
        ),
        with_bytes(
            flow(
                &web,
                Transport::Udp,
                Role::Client,
                "198.18.0.1:40001",
                "198.18.7.7:53",
            ),
            8,
            0,
        ),
        with_bytes(
            flow(
                &db,
                Transport::Tcp,
                Role::Client,
                "127.0.0.1:40002",
                "127.0.0.1:6379",
            ),
            16,
            0,
        ),
        with_bytes(
            flow(
                &web,
                Transport::Tcp,
                Role::Client,
                "[fd00::1]:40003",
                "[fd00::7]:8080",
            ),
            32,
            0,
        ),
    ]
}

fn total_sent(yaml: &str) -> u64 {
    let mut chain = chain_from_yaml(yaml, &["filter"]);
    chain
        .process(batch(flows()))
        .points_named("network.flow.io")
        .filter(|p| p.attrs.get_str(attr::IO_DIRECTION) == Some("transmit"))
        .map(|p| match p.value {
            flowscope_model::PointValue::Int(v) => v,
            _ => panic!("int"),
        })
        .sum()
}

#[test]
fn rules_select_exactly_the_matching_flows() {
    assert_eq!(total_sent("  filter:"), 63);
    assert_eq!(total_sent("  filter:\n    loopback: false"), 63 - 16);
    // Service port: the peer's for clients, the local one for servers.
    assert_eq!(
        total_sent("  filter:\n    include: [{ports: [5432]}]"),
        2 + 4
    );
    assert_eq!(
        total_sent("  filter:\n    include: [{ports: [\"400-500\", 8080]}]"),
        1 + 32
    );
    assert_eq!(
        total_sent("  filter:\n    include: [{transports: [udp]}]"),
        8
    );
    assert_eq!(
        total_sent("  filter:\n    include: [{cidrs: [198.18.0.0/24, \"fd00::/8\"]}]"),
        2 + 4 + 32
    );
    assert_eq!(
        total_sent("  filter:\n    exclude: [{cidrs: [198.18.0.0/16]}]"),
        16 + 32
    );
    assert_eq!(
        total_sent("  filter:\n    include: [{services: [db]}]"),
        4 + 16
    );
    assert_eq!(
        total_sent("  filter:\n    include: [{processes: [nginx]}]"),
        1 + 2 + 8 + 32
    );
    // Fields of one rule AND, rules OR, exclude wins.
    assert_eq!(
        total_sent("  filter:\n    include: [{processes: [nginx], transports: [tcp]}]"),
        1 + 2 + 32
    );
    assert_eq!(
        total_sent(
            "  filter:\n    include: [{services: [db]}, {transports: [udp]}]\n    exclude: [{ports: [6379]}]"
        ),
        4 + 8
    );
}
