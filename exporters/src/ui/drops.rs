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
            "Check the nftables/iptables rules on the path (`nft list ruleset`) and allow the port if the traffic is wanted.",
        ),
        "NO_SOCKET" => (
            "No socket listening",
            "Start the service or fix the client's port: nothing listens at the destination.",
        ),
        "SOCKET_RCVBUFF"
        | "PROTO_MEM"
        | "SOCKET_BACKLOG"
        | "TCP_LISTEN_OVERFLOW"
        | "TCP_OVERWINDOW" => (
            "The receiver is not keeping up",
            "The receiving socket's queue is full: make the application read faster or raise its buffer (SO_RCVBUF, net.core.rmem_max, somaxconn).",
        ),
        "TCP_CSUM" | "UDP_CSUM" | "IP_CSUM" | "SKB_CSUM" => (
            "Bad checksums",
            "Packets arrive corrupted: check the NIC, cables and checksum offload settings on the path.",
        ),
        "QDISC_DROP" | "TC_DROP" | "TC_EGRESS" | "TC_INGRESS" | "FULL_RING" | "CPU_BACKLOG" => (
            "Dropped in a queue",
            "A traffic-control queue or a CPU backlog overflowed: look at `tc -s qdisc` and the host's load.",
        ),
        "IP_NOROUTE" | "IP_INADDRERRORS" | "IP_OUTNOROUTES" | "NEIGH_FAILED" => (
            "No route",
            "The host has no route or neighbour for the destination: check `ip route` and the peer's address.",
        ),
        _ => (
            "Dropped by the kernel",
            "Look the reason up in the kernel's include/net/dropreason-core.h and at the host's network settings.",
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
    let keep = |(_, m, _): &SeriesKey| {
        m.name() == metric::FLOW_DROPS.0 || m.name() == metric::HOST_DROPS.0
    };
    for ((res, m, attrs), slots) in store.series_slots(from, to, keep) {
        let n: u64 = slots.map(|s| packets(&s.value)).sum();
        if n == 0 {
            continue;
        }
        let reason = attrs
            .get_str(attr::DROP_REASON)
            .unwrap_or("unknown")
            .to_string();
        if m.name() == metric::HOST_DROPS.0 {
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
        let mut f = finding(
            "drops",
            false,
            n as f64,
            format!("{what}: {client} → {server}, {n} packets"),
            format!("the kernel dropped {n} packets between {client} and {server} ({reason})"),
            &client,
            &server,
            Some(&reason),
            n,
        );
        // The next step depends on the reason.
        f.runbook = todo;
        out.push(f);
    }
    for ((name, reason), n) in host {
        if n < min_packets {
            continue;
        }
        let (what, todo) = explain(&reason);
        let mut f = finding(
            "host_drops",
            false,
            n as f64,
            format!("{what} on {name}, {n} packets"),
            format!("the kernel on {name} dropped {n} packets of no monitored flow ({reason})"),
            &name,
            "",
            Some(&reason),
            n,
        );
        f.runbook = todo;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowscope_model::metrics::{FLOW_DROPS, HOST_DROPS};
    use flowscope_model::{MetricBatch, Point};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn point(res: Attrs, metric: flowscope_model::MetricId, attrs: Attrs, n: u64) -> Point {
        Point {
            resource: Arc::new(res),
            metric,
            attrs,
            value: PointValue::Int(n),
        }
    }

    /// web's client flow to db dropped by a firewall in two slots, db's
    /// server flow with a full receive buffer, two packets under the
    /// minimum, and the host's own drops.
    fn store() -> Store {
        let mut st = Store::new(3600 * S, 600 * S, 1000);
        let web = Attrs::new().with(resource::SERVICE_NAME, "web");
        let db = Attrs::new().with(resource::SERVICE_NAME, "db");
        let client = Attrs::new()
            .with(attr::FLOW_ROLE, "client")
            .with(attr::PEER_ADDRESS, "198.18.0.2")
            .with(attr::PEER_PORT, 5432i64)
            .with(attr::IO_DIRECTION, attr::TRANSMIT);
        let server = Attrs::new()
            .with(attr::FLOW_ROLE, "server")
            .with(attr::PEER_ADDRESS, "198.18.0.1")
            .with(attr::PEER_SERVICE_NAME, "web")
            .with(attr::LOCAL_PORT, 5432i64)
            .with(attr::IO_DIRECTION, attr::RECEIVE);
        for (t, n) in [(10, 200), (20, 112)] {
            let mut b = MetricBatch::new((t - 10) * S, t * S);
            b.points.push(point(
                web.clone(),
                FLOW_DROPS,
                client.clone().with(attr::DROP_REASON, "NETFILTER_DROP"),
                n,
            ));
            st.insert(&b);
        }
        let mut b = MetricBatch::new(20 * S, 30 * S);
        b.points.push(point(
            db.clone(),
            FLOW_DROPS,
            server.clone().with(attr::DROP_REASON, "SOCKET_RCVBUFF"),
            9,
        ));
        b.points.push(point(
            web,
            FLOW_DROPS,
            client.with(attr::DROP_REASON, "TCP_CSUM"),
            2,
        ));
        b.points.push(point(
            Attrs::new().with(resource::HOST_NAME, "node-1"),
            HOST_DROPS,
            Attrs::new().with(attr::DROP_REASON, "OTHERHOST"),
            40,
        ));
        st.insert(&b);
        st
    }

    #[test]
    fn one_finding_per_client_server_and_reason() {
        let st = store();
        let f = drop_findings(&st, 0, u64::MAX, None, 3);
        let got: Vec<(&str, &str, &str, Option<&str>, u64)> = f
            .iter()
            .map(|f| {
                (
                    f.kind,
                    f.client.as_str(),
                    f.server.as_str(),
                    f.error_type.as_deref(),
                    f.count,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "drops",
                    "web",
                    "198.18.0.2:5432",
                    Some("NETFILTER_DROP"),
                    312
                ),
                ("drops", "web", "db:5432", Some("SOCKET_RCVBUFF"), 9),
                ("host_drops", "node-1", "", Some("OTHERHOST"), 40),
            ]
        );
        assert_eq!(
            f[0].title,
            "Blocked by a firewall rule: web → 198.18.0.2:5432, 312 packets"
        );
        assert!(
            f[0].runbook
                .ends_with("allow the port if the traffic is wanted.")
        );
        assert_eq!(
            f[1].title,
            "The receiver is not keeping up: web → db:5432, 9 packets"
        );
        // The range counts: only the first slot.
        let early = drop_findings(&st, 0, 10 * S, None, 3);
        assert_eq!(early.len(), 1);
        assert_eq!(early[0].count, 200);
        // With a CIDR only flows whose peer is inside, and no host drops.
        let cidr = drop_findings(&st, 0, u64::MAX, Some("198.18.0.2/32".parse().unwrap()), 3);
        assert_eq!(cidr.len(), 1);
        assert_eq!(cidr[0].server, "198.18.0.2:5432");
    }
}
