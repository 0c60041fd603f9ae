//! Network Health findings for packets the kernel dropped
//! (`flowscope.flow.drops`, `flowscope.host.drops`; docs/health.md).
//!
//! One finding per client, server and drop reason: "Blocked by a firewall
//! rule: web → 198.18.0.2:53, 312 packets", with what to do next. The
//! flow's own side names the ends: a client flow's local workload is the
//! client and its peer the server, a server flow the other way round.
//! Drops that belong to no monitored flow give one finding per reason on
//! each host. A finding needs at least `health.min_failures` packets in
//! the range. The same code runs over a fleet's storage, which puts the
//! same series in the store (super::fleet).

use std::collections::BTreeMap;
use std::net::IpAddr;

use flowscope_model::names::{attr, metric, resource};
use flowscope_model::{Attrs, PointValue};

use super::query::{Cidr, Finding, finding};
use super::store::{SeriesKey, Store};

/// What a drop reason means, and the one thing to do about it.
fn explain(reason: &str) -> (&'static str, &'static str) {
    match reason {
        "NETFILTER_DROP" => (
            "Blocked by a firewall rule",
            "check the nftables/iptables rules on the path (`nft list ruleset`) and allow the port if the traffic is wanted",
        ),
        "NO_SOCKET" => (
            "No socket listening",
            "start the service or fix the client's port: nothing listens at the destination",
        ),
        "SOCKET_RCVBUFF"
        | "PROTO_MEM"
        | "SOCKET_BACKLOG"
        | "TCP_LISTEN_OVERFLOW"
        | "TCP_OVERWINDOW" => (
            "The receiver is not keeping up",
            "the receiving socket's queue is full: make the application read faster or raise its buffer (SO_RCVBUF, net.core.rmem_max, somaxconn)",
        ),
        "TCP_CSUM" | "UDP_CSUM" | "IP_CSUM" | "SKB_CSUM" => (
            "Bad checksums",
            "packets arrive corrupted: check the NIC, cables and checksum offload settings on the path",
        ),
        "QDISC_DROP" | "TC_DROP" | "TC_EGRESS" | "TC_INGRESS" | "FULL_RING" | "CPU_BACKLOG" => (
            "Dropped in a queue",
            "a traffic-control queue or a CPU backlog overflowed: look at `tc -s qdisc` and the host's load",
        ),
        "IP_NOROUTE" | "IP_INADDRERRORS" | "IP_OUTNOROUTES" | "NEIGH_FAILED" => (
            "No route",
            "the host has no route or neighbour for the destination: check `ip route` and the peer's address",
        ),
        _ => (
            "Dropped by the kernel",
            "look the reason up in the kernel's include/net/dropreason-core.h and at the host's network settings",
        ),
    }
}

fn packets(v: &PointValue) -> u64 {
    match v {
        PointValue::Int(n) => *n,
        PointValue::Double(d) if *d > 0.0 => *d as u64,
        _ => 0,
    }
}

/// (client, server) of a flow series, named from the local side's Resource
/// and the peer attributes.
fn ends(res: &Attrs, attrs: &Attrs) -> (String, String, Option<IpAddr>) {
    let local = res
        .get_str(resource::SERVICE_NAME)
        .unwrap_or("unknown")
        .to_string();
    let peer_ip = attrs.get_str(attr::PEER_ADDRESS);
    let peer_name = attrs
        .get_str(attr::PEER_SERVICE_NAME)
        .map(str::to_string)
        .or_else(|| peer_ip.map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    let port = |k: &str| attrs.get(k).map(|p| format!(":{p}")).unwrap_or_default();
    let ip = peer_ip.and_then(|s| s.parse().ok());
    if attrs.get_str(attr::FLOW_ROLE) == Some("server") {
        (peer_name, format!("{local}{}", port(attr::LOCAL_PORT)), ip)
    } else {
        (local, format!("{peer_name}{}", port(attr::PEER_PORT)), ip)
    }
}

/// The drop findings of `(from, to]`; with `cidr`, only flows whose peer
/// address is inside (host drops have no peer and are left out then).
pub fn drop_findings(
    store: &Store,
    from: u64,
    to: u64,
    cidr: Option<Cidr>,
    min_packets: u64,
) -> Vec<Finding> {
    // (client, server, reason) -> packets; (host, reason) -> packets.
    let mut flows: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut host: BTreeMap<(String, String), u64> = BTreeMap::new();
    let keep =
        |(_, m, _): &SeriesKey| m.name == metric::FLOW_DROPS.0 || m.name == metric::HOST_DROPS.0;
    for ((res, m, attrs), slots) in store.series_slots(from, to, keep) {
        let n: u64 = slots.map(|s| packets(&s.value)).sum();
        if n == 0 {
            continue;
        }
        let reason = attrs
            .get_str(attr::DROP_REASON)
            .unwrap_or("unknown")
            .to_string();
        if m.name == metric::HOST_DROPS.0 {
            if cidr.is_none() {
                let name = res.get_str(resource::HOST_NAME).unwrap_or("this host");
                *host.entry((name.to_string(), reason)).or_default() += n;
            }
            continue;
        }
        let (client, server, peer) = ends(res, attrs);
        if let Some(c) = &cidr
            && !peer.is_some_and(|ip| c.contains(ip))
        {
            continue;
        }
        *flows.entry((client, server, reason)).or_default() += n;
    }
    let mut out = Vec::new();
    for ((client, server, reason), n) in flows {
        if n < min_packets {
            continue;
        }
        let (what, todo) = explain(&reason);
        out.push(finding(
            "drops",
            false,
            n as f64,
            format!("{what}: {client} → {server}, {n} packets"),
            format!(
                "the kernel dropped {n} packets between {client} and {server} ({reason}): {todo}"
            ),
            &client,
            &server,
            Some(&reason),
            n,
        ));
    }
    for ((name, reason), n) in host {
        if n < min_packets {
            continue;
        }
        let (what, todo) = explain(&reason);
        out.push(finding(
            "host_drops",
            false,
            n as f64,
            format!("{what} on {name}, {n} packets"),
            format!(
                "the kernel on {name} dropped {n} packets of no monitored flow ({reason}): {todo}"
            ),
            &name,
            "",
            Some(&reason),
            n,
        ));
    }
    out
}
