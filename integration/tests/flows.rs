//! End to end: the real agent, the real kernel, traffic between network
//! namespaces, the exported OTLP file. Numbers are exact where the test
//! controls them (bytes, datagrams), never "greater than zero" when an exact
//! value is knowable.

use std::time::Duration;

use flowscope_integration::{Agent, NetPair, Point, sum, traffic};

const WAIT: Duration = Duration::from_secs(40);
const IO: &str = "network.flow.io";
const PACKETS: &str = "flowscope.flow.packets";

fn peer(role: &str, addr: &str) -> Vec<(&'static str, String)> {
    vec![
        ("flowscope.flow.role", role.to_string()),
        ("network.peer.address", addr.to_string()),
    ]
}

fn total(
    points: &[Point],
    metric: &str,
    base: &[(&'static str, String)],
    extra: &[(&str, &str)],
) -> f64 {
    let mut f: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f.extend_from_slice(extra);
    sum(points, metric, &f)
}

/// An expected exact total: (metric, side, attribute filter, value).
type Want<'a> = (
    &'static str,
    &'a Vec<(&'static str, String)>,
    [(&'static str, &'static str); 3],
    f64,
);

/// Waits until every total of `want` is reached, then checks each is
/// exactly its value (nothing counted twice).
fn expect_totals(agent: &Agent, what: &str, want: &[Want]) {
    agent.wait_for(what, WAIT, |p| {
        want.iter()
            .all(|(m, side, f, v)| total(p, m, side, f) >= *v)
            .then_some(())
    });
    let p = agent.points();
    for (m, side, f, v) in want {
        assert_eq!(total(&p, m, side, f), *v, "{m} {side:?} {f:?}");
    }
}

/// 1,000,000 bytes up, 250,000 down, between two namespaces; both sides'
/// flows carry exactly those numbers, with the right roles and ports.
fn exact_tcp(v6: bool) {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let (server_ip, client_ip) = if v6 {
        (net.a_v6(), net.b_v6())
    } else {
        (net.a_v4(), net.b_v4())
    };
    let addr = if v6 {
        format!("[{server_ip}]:5001")
    } else {
        format!("{server_ip}:5001")
    };
    net.tcp_exchange(&addr, 1000000, 250000, &[]).unwrap();

    let client = peer("client", &server_ip);
    let srv = peer("server", &client_ip);
    agent.wait_for("both flows closed", WAIT, |p| {
        let closed = total(p, "flowscope.tcp.connection.closed", &client, &[])
            + total(p, "flowscope.tcp.connection.closed", &srv, &[]);
        (closed >= 2.0).then_some(())
    });
    let p = agent.points();
    let net_type = if v6 { "ipv6" } else { "ipv4" };
    // Client side: its peer is the server, port kept; no local port.
    assert_eq!(
        total(
            &p,
            IO,
            &client,
            &[
                ("network.io.direction", "transmit"),
                ("network.peer.port", "5001")
            ]
        ),
        1_000_000.0
    );
    assert_eq!(
        total(
            &p,
            IO,
            &client,
            &[
                ("network.io.direction", "receive"),
                ("network.peer.port", "5001")
            ]
        ),
        250_000.0
    );
    // Server side: the local port is the server port; the client's
    // ephemeral port is nowhere.
    assert_eq!(
        total(
            &p,
            IO,
            &srv,
            &[
                ("network.io.direction", "receive"),
                ("network.local.port", "5001")
            ]
        ),
        1_000_000.0
    );
    assert_eq!(
        total(
            &p,
            IO,
            &srv,
            &[
                ("network.io.direction", "transmit"),
                ("network.local.port", "5001")
            ]
        ),
        250_000.0
    );
    for pt in p
        .iter()
        .filter(|pt| pt.attr("network.peer.address") == Some(client_ip.as_str()))
    {
        assert_eq!(
            pt.attr("network.peer.port"),
            None,
            "client port leaked: {pt:?}"
        );
        assert_eq!(pt.attr("network.type"), Some(net_type));
        assert_eq!(pt.attr("network.transport"), Some("tcp"));
    }
    for side in [&client, &srv] {
        assert_eq!(total(&p, "flowscope.tcp.connection.opened", side, &[]), 1.0);
        assert_eq!(total(&p, "flowscope.tcp.connection.closed", side, &[]), 1.0);
        assert_eq!(
            total(&p, "flowscope.tcp.connection.duration", side, &[]),
            1.0
        );
        assert!(total(&p, PACKETS, side, &[("network.io.direction", "transmit")]) > 0.0);
        assert!(
            total(&p, "flowscope.tcp.rtt", side, &[]) >= 1.0,
            "an RTT sample"
        );
    }
    // The flow's Resource is the traffic generator's process: its executable
    // name, read from /proc when the kernel announced the process, or the
    // kernel's 15-character comm when it exited before /proc was read.
    let r = p
        .iter()
        .find(|pt| pt.metric == IO && pt.attr("network.peer.address") == Some(server_ip.as_str()))
        .map(|pt| pt.resource.clone())
        .unwrap();
    let service = r.get("service.name").map(String::as_str);
    assert!(
        matches!(service, Some("flowscope-traffic" | "flowscope-traff")),
        "{service:?}"
    );
    assert_eq!(r.get("os.type").map(String::as_str), Some("linux"));
    assert!(r.contains_key("host.name"));
}

#[test]
fn tcp_exact_bytes_ipv4() {
    exact_tcp(false);
}

#[test]
fn tcp_exact_bytes_ipv6() {
    exact_tcp(true);
}

#[test]
fn udp_exact_bytes_and_packets() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    let addr = format!("{}:5002", net.a_v4());
    // 10 datagrams of 1,000 bytes up, 4 of 300 back.
    let server = net
        .serve(&net.a, &[&t, "udp-server", &addr, "10", "4", "300"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "udp-client", &addr, "10", "1000", "4"])
        .unwrap();
    server.finish().unwrap();
    let client = peer("client", &net.a_v4());
    let srv = peer("server", &net.b_v4());
    let want = [
        (IO, &client, "transmit", 10_000.0),
        (IO, &client, "receive", 1_200.0),
        (PACKETS, &client, "transmit", 10.0),
        (PACKETS, &client, "receive", 4.0),
        (IO, &srv, "receive", 10_000.0),
        (IO, &srv, "transmit", 1_200.0),
        (PACKETS, &srv, "receive", 10.0),
        (PACKETS, &srv, "transmit", 4.0),
    ];
    agent.wait_for("UDP totals", WAIT, |p| {
        want.iter()
            .all(|(m, side, dir, v)| {
                total(
                    p,
                    m,
                    side,
                    &[("network.transport", "udp"), ("network.io.direction", dir)],
                ) >= *v
            })
            .then_some(())
    });
    let p = agent.points();
    for (m, side, dir, v) in want {
        assert_eq!(
            total(
                &p,
                m,
                side,
                &[("network.transport", "udp"), ("network.io.direction", dir)]
            ),
            v,
            "{m} {side:?} {dir}"
        );
    }
    assert_eq!(
        total(&p, IO, &client, &[("network.peer.port", "5002")]),
        11_200.0
    );
    assert_eq!(
        total(&p, IO, &srv, &[("network.local.port", "5002")]),
        11_200.0
    );
}

/// Which addresses [`udp_one_socket_two_peers`] uses.
#[derive(Clone, Copy, PartialEq)]
enum Udp {
    V4,
    V6,
    /// An IPv6 socket sending to IPv4-mapped addresses: the kernel sends
    /// IPv4, and the flow's peer is the IPv4 address.
    Mapped,
}

/// One unconnected UDP socket talking to two peers (two server ports):
/// sendto() with one datagram corked in two parts (MSG_MORE), sendmmsg(),
/// recvmmsg() with the senders' addresses. Each peer's flow, on both sides,
/// has exactly its own bytes and datagrams.
fn udp_one_socket_two_peers(mode: Udp) {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    let (server_ip, client_ip) = if mode == Udp::V6 {
        (net.a_v6(), net.b_v6())
    } else {
        (net.a_v4(), net.b_v4())
    };
    let addr = |port: u16| match mode {
        Udp::V4 => format!("{server_ip}:{port}"),
        Udp::V6 => format!("[{server_ip}]:{port}"),
        Udp::Mapped => format!("[::ffff:{server_ip}]:{port}"),
    };
    // 5003: 3 datagrams of 100 bytes in, 2 of 50 back; 5004: 5 of 200 in,
    // 4 of 70 back.
    let s1 = net
        .serve(&net.a, &[&t, "udp-server", &addr(5003), "3", "2", "50"])
        .unwrap();
    let s2 = net
        .serve(&net.a, &[&t, "udp-server", &addr(5004), "5", "4", "70"])
        .unwrap();
    net.run(
        &net.b,
        &[],
        &[
            &t,
            "udp-two",
            &addr(5003),
            "3",
            "100",
            &addr(5004),
            "5",
            "200",
            "6",
        ],
    )
    .unwrap();
    s1.finish().unwrap();
    s2.finish().unwrap();
    let client = peer("client", &server_ip);
    let srv = peer("server", &client_ip);
    let udp = ("network.transport", "udp");
    let (tx, rx) = (
        ("network.io.direction", "transmit"),
        ("network.io.direction", "receive"),
    );
    // (side, its port attribute, port, direction, exact bytes, exact
    // datagrams): each row is checked on the bytes and the packets metric.
    let rows = [
        (&client, "network.peer.port", "5003", tx, 300.0, 3.0),
        (&client, "network.peer.port", "5003", rx, 100.0, 2.0),
        (&client, "network.peer.port", "5004", tx, 1_000.0, 5.0),
        (&client, "network.peer.port", "5004", rx, 280.0, 4.0),
        (&srv, "network.local.port", "5003", rx, 300.0, 3.0),
        (&srv, "network.local.port", "5003", tx, 100.0, 2.0),
        (&srv, "network.local.port", "5004", rx, 1_000.0, 5.0),
        (&srv, "network.local.port", "5004", tx, 280.0, 4.0),
    ];
    let want: Vec<Want> = rows
        .iter()
        .flat_map(|&(side, key, port, dir, bytes, packets)| {
            let f = [udp, dir, (key, port)];
            [(IO, side, f, bytes), (PACKETS, side, f, packets)]
        })
        .collect();
    expect_totals(&agent, "UDP totals per peer", &want);
    let p = agent.points();
    let net_type = if mode == Udp::V6 { "ipv6" } else { "ipv4" };
    for pt in p.iter().filter(|pt| {
        pt.attr("network.peer.address") == Some(server_ip.as_str())
            || pt.attr("network.peer.address") == Some(client_ip.as_str())
    }) {
        assert_eq!(pt.attr("network.type"), Some(net_type), "{pt:?}");
    }
}

#[test]
fn udp_one_socket_two_peers_ipv4() {
    udp_one_socket_two_peers(Udp::V4);
}

#[test]
fn udp_one_socket_two_peers_ipv6() {
    udp_one_socket_two_peers(Udp::V6);
}

#[test]
fn udp_one_socket_two_peers_ipv4_mapped() {
    udp_one_socket_two_peers(Udp::Mapped);
}

/// One 1,200-byte `sendto` from a socket with UDP_SEGMENT 500: GSO sends
/// three datagrams (500, 500, 200). Counted at the socket, the send is
/// three packets (bytes / segment size, rounded up); the server reads
/// three datagrams.
#[test]
fn udp_gso_send_counts_its_segments() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    let addr = format!("{}:5005", net.a_v4());
    let server = net
        .serve(&net.a, &[&t, "udp-server", &addr, "3", "0", "0"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "udp-gso", &addr, "500", "1200"])
        .unwrap();
    server.finish().unwrap();
    let client = peer("client", &net.a_v4());
    let srv = peer("server", &net.b_v4());
    let port = [("network.transport", "udp"), ("network.peer.port", "5005")];
    let tx = ("network.io.direction", "transmit");
    let rx = ("network.io.direction", "receive");
    let want = [
        (IO, &client, [port[0], port[1], tx], 1_200.0),
        (PACKETS, &client, [port[0], port[1], tx], 3.0),
        (
            IO,
            &srv,
            [port[0], ("network.local.port", "5005"), rx],
            1_200.0,
        ),
        (
            PACKETS,
            &srv,
            [port[0], ("network.local.port", "5005"), rx],
            3.0,
        ),
    ];
    expect_totals(&agent, "the GSO send on both sides", &want);
}

/// A server reading with recv() on an unconnected socket never asks for
/// the sender. Counted at the socket (the default), the datagrams go to the
/// unspecified peer (`0.0.0.0`, port 0) of the server's flow; with the
/// classic-tracepoint fallback the cgroup_skb programs still see the
/// sender in the packet. Bytes and datagrams are exact either way.
#[test]
fn udp_recv_without_the_sender() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    let addr = format!("{}:5006", net.a_v4());
    let server = net
        .serve(&net.a, &[&t, "udp-server", &addr, "4", "0", "0", "recv"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "udp-client", &addr, "4", "250", "0"])
        .unwrap();
    server.finish().unwrap();
    let fallback = std::env::var("FLOWSCOPE_EBPF_HOOKS").is_ok_and(|v| v == "tracepoint");
    let sender = if fallback {
        net.b_v4()
    } else {
        "0.0.0.0".to_string()
    };
    let client = peer("client", &net.a_v4());
    let srv = peer("server", &sender);
    let (udp, tx, rx) = (
        ("network.transport", "udp"),
        ("network.io.direction", "transmit"),
        ("network.io.direction", "receive"),
    );
    let port = ("network.local.port", "5006");
    let want = [
        (
            IO,
            &client,
            [udp, tx, ("network.peer.port", "5006")],
            1_000.0,
        ),
        (
            PACKETS,
            &client,
            [udp, tx, ("network.peer.port", "5006")],
            4.0,
        ),
        (IO, &srv, [udp, rx, port], 1_000.0),
        (PACKETS, &srv, [udp, rx, port], 4.0),
    ];
    expect_totals(&agent, "the datagrams on both sides", &want);
}

#[test]
fn refused_and_timed_out_connects() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    // Nothing listens on 5999: the server's kernel answers with a RST.
    let out = net
        .run(
            &net.b,
            &[],
            &[&t, "tcp-connect", &format!("{}:5999", net.a_v4())],
        )
        .unwrap();
    assert_eq!(out.trim(), "ConnectionRefused");
    // SYNs to 6000 vanish; one SYN retry keeps the timeout near 3 s.
    net.drop_input(&net.a, "tcp dport 6000").unwrap();
    net.run(
        &net.b,
        &[],
        &["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"],
    )
    .unwrap();
    let out = net
        .run(
            &net.b,
            &[],
            &[&t, "tcp-connect", &format!("{}:6000", net.a_v4())],
        )
        .unwrap();
    assert_eq!(out.trim(), "TimedOut");

    let client = peer("client", &net.a_v4());
    let failed = "flowscope.tcp.connection.failed";
    agent.wait_for("both failures", WAIT, |p| {
        let r = total(
            p,
            failed,
            &client,
            &[("error.type", "refused"), ("network.peer.port", "5999")],
        );
        let t = total(
            p,
            failed,
            &client,
            &[("error.type", "timeout"), ("network.peer.port", "6000")],
        );
        (r >= 1.0 && t >= 1.0).then_some(())
    });
    let p = agent.points();
    assert_eq!(
        total(&p, failed, &client, &[("error.type", "refused")]),
        1.0
    );
    assert_eq!(
        total(&p, failed, &client, &[("error.type", "timeout")]),
        1.0
    );
    assert_eq!(
        total(&p, "flowscope.tcp.connection.opened", &client, &[]),
        0.0
    );
}

#[test]
fn reset_by_server_is_counted_on_both_sides() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    let addr = format!("{}:5004", net.a_v4());
    let server = net
        .serve(&net.a, &[&t, "tcp-server", &addr, "1000", "500", "--reset"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "tcp-client", &addr, "1000", "500"])
        .unwrap();
    server.finish().unwrap();
    let client = peer("client", &net.a_v4());
    let srv = peer("server", &net.b_v4());
    let resets = "flowscope.tcp.resets";
    agent.wait_for("resets", WAIT, |p| {
        (total(p, resets, &client, &[("network.io.direction", "receive")]) >= 1.0
            && total(p, resets, &srv, &[("network.io.direction", "transmit")]) >= 1.0)
            .then_some(())
    });
    let p = agent.points();
    assert_eq!(
        total(&p, resets, &client, &[("network.io.direction", "receive")]),
        1.0
    );
    assert_eq!(
        total(&p, resets, &srv, &[("network.io.direction", "transmit")]),
        1.0
    );
    // The bytes before the reset are all there.
    assert_eq!(
        total(&p, IO, &client, &[("network.io.direction", "transmit")]),
        1000.0
    );
    assert_eq!(
        total(&p, IO, &client, &[("network.io.direction", "receive")]),
        500.0
    );
}

#[test]
fn dropped_segments_are_retransmitted() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    // Drop one in eight data segments arriving at the server.
    net.drop_input(
        &net.a,
        "tcp dport 5003 meta length > 200 numgen random mod 8 == 0",
    )
    .unwrap();
    let addr = format!("{}:5003", net.a_v4());
    net.tcp_exchange(&addr, 2000000, 0, &[]).unwrap();
    let client = peer("client", &net.a_v4());
    agent.wait_for("the close", WAIT, |p| {
        (total(p, "flowscope.tcp.connection.closed", &client, &[]) >= 1.0).then_some(())
    });
    let p = agent.points();
    let retrans = total(&p, "flowscope.tcp.retransmits", &client, &[]);
    assert!(retrans > 0.0, "no retransmits counted for a lossy path");
    // Retransmissions are not application bytes: still exactly 2,000,000.
    assert_eq!(
        total(&p, IO, &client, &[("network.io.direction", "transmit")]),
        2_000_000.0
    );
}

#[test]
fn long_lived_connection_reports_every_interval() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    let addr = format!("{}:5005", net.a_v4());
    // 10,000 bytes every 250 ms for 5 s: five intervals of traffic.
    let server = net
        .serve(&net.a, &[&t, "tcp-server", &addr, "200000", "0"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "tcp-hold", &addr, "10000", "250", "20"])
        .unwrap();
    server.finish().unwrap();
    let client = peer("client", &net.a_v4());
    agent.wait_for("the close", WAIT, |p| {
        (total(p, "flowscope.tcp.connection.closed", &client, &[]) >= 1.0).then_some(())
    });
    let p = agent.points();
    let tx: Vec<&Point> = p
        .iter()
        .filter(|pt| {
            pt.metric == IO
                && pt.attr("flowscope.flow.role") == Some("client")
                && pt.attr("network.peer.address") == Some(net.a_v4().as_str())
                && pt.attr("network.io.direction") == Some("transmit")
        })
        .collect();
    let mut times: Vec<u64> = tx.iter().map(|pt| pt.time).collect();
    times.sort();
    times.dedup();
    assert!(
        times.len() >= 3,
        "bytes reported in only {} intervals",
        times.len()
    );
    assert_eq!(tx.iter().map(|pt| pt.value).sum::<f64>(), 200_000.0);
    // While open, the connection was counted active.
    assert!(total(&p, "flowscope.tcp.connection.active", &client, &[]) >= 2.0);
}

#[test]
fn service_name_from_the_environment() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let addr = format!("{}:5006", net.a_v4());
    // The environment is only readable from /proc while the process runs;
    // the client lingers so that the agent's /proc read cannot lose the race
    // on a loaded machine.
    net.tcp_exchange(
        &addr,
        100,
        100,
        &[
            ("OTEL_SERVICE_NAME", "checkout"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.namespace=shop,service.version=1.4.2",
            ),
            ("FLOWSCOPE_TRAFFIC_LINGER_MS", "500"),
        ],
    )
    .unwrap();
    let server_ip = net.a_v4();
    let resource = agent.wait_for("the client's flow", WAIT, |p| {
        p.iter()
            .find(|pt| {
                pt.metric == IO
                    && pt.attr("flowscope.flow.role") == Some("client")
                    && pt.attr("network.peer.address") == Some(server_ip.as_str())
            })
            .map(|pt| pt.resource.clone())
    });
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("checkout")
    );
    assert_eq!(
        resource.get("service.namespace").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        resource.get("service.version").map(String::as_str),
        Some("1.4.2")
    );
}

#[test]
fn self_telemetry_counts_kernel_events() {
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let addr = format!("{}:5007", net.a_v4());
    net.tcp_exchange(&addr, 10, 10, &[]).unwrap();
    let p = agent.wait_for("self telemetry", WAIT, |p| {
        (sum(
            p,
            "flowscope.events.received",
            &[("flowscope.source", "ebpf.tcp")],
        ) > 0.0)
            .then(|| p.to_vec())
    });
    let own = p
        .iter()
        .find(|pt| pt.metric == "flowscope.events.received")
        .unwrap();
    assert_eq!(
        own.resource.get("service.name").map(String::as_str),
        Some("flowscope")
    );
    assert_eq!(own.unit, "{event}");
    assert!(p.iter().any(|pt| pt.metric == "flowscope.flows.tracked"));
}

#[test]
fn self_telemetry_once_per_exporter_in_two_pipelines() {
    let net = NetPair::new().unwrap();
    // One file exporter listed by two pipelines: the flows reach it through
    // both (two copies, by configuration), the agent's own telemetry once.
    let agent = Agent::start_with(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n\
         \x20   metrics:\n      receivers: [ebpf]\n      exporters: [file]\n\
         \x20   metrics/copy:\n      receivers: [ebpf]\n      exporters: [file]\n",
    )
    .unwrap();
    let addr = format!("{}:5010", net.a_v4());
    net.tcp_exchange(&addr, 3000, 700, &[]).unwrap();
    let client = peer("client", &net.a_v4());
    let sent = |p: &[Point]| total(p, IO, &client, &[("network.io.direction", "transmit")]);
    let received = "flowscope.events.received";
    // Three self-telemetry intervals after the exchange is counted.
    let p = agent.wait_for("flows and three self-telemetry intervals", WAIT, |p| {
        let times: std::collections::BTreeSet<u64> = p
            .iter()
            .filter(|pt| pt.metric == received)
            .map(|pt| pt.time)
            .collect();
        (sent(p) >= 6000.0 && times.len() >= 3).then(|| p.to_vec())
    });
    assert_eq!(sent(&p), 6000.0, "each pipeline delivers the flows once");
    let mut copies = std::collections::BTreeMap::new();
    for pt in p.iter().filter(|pt| pt.metric == received) {
        *copies.entry((pt.time, pt.attrs.clone())).or_insert(0u32) += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "self-telemetry points not exported once: {twice:?}"
    );
}

#[test]
fn sigterm_flushes_the_last_interval() {
    let net = NetPair::new().unwrap();
    // An interval far longer than the test: only the shutdown flush writes.
    let mut agent = Agent::start("300s").unwrap();
    let addr = format!("{}:5008", net.a_v4());
    net.tcp_exchange(&addr, 4321, 1234, &[]).unwrap();
    assert!(
        agent.points().is_empty(),
        "nothing is written before the interval ends"
    );
    let status = agent.terminate().unwrap();
    assert!(status.success(), "agent exit: {status}");
    let p = agent.points();
    let client = peer("client", &net.a_v4());
    assert_eq!(
        total(&p, IO, &client, &[("network.io.direction", "transmit")]),
        4321.0
    );
    assert_eq!(
        total(&p, IO, &client, &[("network.io.direction", "receive")]),
        1234.0
    );
}

#[test]
fn full_connection_table_is_counted_not_fatal() {
    let net = NetPair::new().unwrap();
    // Room for two connections in the agent's table; twenty will be open at
    // once. (The kernel keeps nothing per TCP connection: the table that
    // fills is the collector's, and the join's CONNECT table, both sized by
    // max_tracked_flows.)
    let agent = Agent::start_with(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n    max_tracked_flows: 2\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n",
    )
    .unwrap();
    let t = traffic();
    let addr = format!("{}:5009", net.a_v4());
    let server = net
        .serve(&net.a, &[&t, "tcp-many-server", &addr, "20"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "tcp-many", &addr, "20", "1500"])
        .unwrap();
    server.finish().unwrap();
    // Every refusal happened before this instant. The receiver reads the
    // kernel's counters once an interval (1 s) and the self-telemetry
    // reports them on its own 1 s tick, so the self-telemetry interval
    // ending 3 s later (one spare for a slow tick) has all of them: an
    // interval that ended during the traffic has only part, which is what
    // this test used to read when it stopped at the first refusal.
    let traffic_end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let lost = agent.wait_for("an interval 3 s after the traffic", WAIT, |p| {
        p.iter()
            .any(|pt| {
                pt.resource.get("service.name").map(String::as_str) == Some("flowscope")
                    && pt.time >= traffic_end + 3_000_000_000
            })
            .then(|| {
                sum(
                    p,
                    "flowscope.events.lost",
                    &[
                        ("flowscope.source", "ebpf.tcp"),
                        ("flowscope.reason", "table_full"),
                    ],
                )
            })
    });
    // Every connection either was tracked or was counted as lost: 20 client
    // and 20 server sockets competed for 2 slots of the collector's table
    // (other host traffic may take slots too), so at least 36 refusals,
    // each socket counted once; the join's table of accepted sockets, as
    // large, forgets the servers' opens beyond it and counts those too.
    assert!(lost >= 36.0, "only {lost} connections counted as lost");
    // And the agent keeps exporting.
    let before = agent.points().len();
    agent.wait_for("more intervals", WAIT, |p| (p.len() > before).then_some(()));
}
