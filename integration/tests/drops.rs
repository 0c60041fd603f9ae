//! End to end: kernel drop reasons per flow (issue 21). A firewall rule in
//! the server's namespace drops what a client in the other namespace
//! sends; the agent counts exactly the packets nftables dropped, with the
//! kernel's reason, on the client's flow. A datagram to a port where no
//! socket listens is the kernel's NO_SOCKET, on the sender's flow too.

use std::time::Duration;

use flowscope_integration::{Agent, Held, NetPair, Point, sum, traffic};

const WAIT: Duration = Duration::from_secs(60);
const DROPS: &str = "flowscope.flow.drops";

/// Every agent's drop program sees every drop on the host, the other
/// tests' included: one test at a time, so that one test's drops never
/// fill another's small map (a flake: `map_full` counted in the test of
/// an 8-entry map while another test's drops ran).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding it poisons it; the next still runs.
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The drops of the client flow to `server:port` with `reason`, sent by
/// the client (transmit).
fn client_drops(p: &[Point], server: &str, port: u16, reason: &str) -> f64 {
    let port = port.to_string();
    sum(
        p,
        DROPS,
        &[
            ("flowscope.flow.role", "client"),
            ("network.peer.address", server),
            ("network.peer.port", &port),
            ("flowscope.drop.reason", reason),
            ("network.io.direction", "transmit"),
        ],
    )
}

/// Packets nftables' rule in table `inet fs` of `ns` counted (and dropped).
fn nft_dropped(net: &NetPair, ns: &str) -> u64 {
    let out = net
        .run(ns, &[], &["nft", "list", "table", "inet", "fs"])
        .unwrap();
    let at = out.find("packets ").expect("an nft counter");
    out[at + 8..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {out}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn agent_with_ui(ui_port: u16) -> Agent {
    Agent::start_with(&format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         exporters:\n  file:\n    path: OUTPUT\n  ui:\n    endpoint: 127.0.0.1:{ui_port}\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file, ui]\n"
    ))
    .expect("agent starts")
}

fn get_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the ui");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {head}\n{body}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// 40 datagrams to a port a firewall rule drops: exactly 40 NETFILTER_DROP
/// on the client's flow, none anywhere else under that flow, and Network
/// Health names the client and the server.
#[test]
fn firewall_drops_of_udp_count_on_the_client_flow() {
    let _serial = serial();
    let net = NetPair::new().unwrap();
    let ui_port = free_port();
    let agent = agent_with_ui(ui_port);
    net.drop_input(&net.a, "udp dport 7101 counter").unwrap();
    let t = traffic();
    let server = net.a_v4();
    // Held until the end, so the agent reads its service name in /proc.
    let mut client = Held::start(
        &net.b,
        "dropper",
        &[&t, "udp-client", &format!("{server}:7101"), "40", "64", "0"],
    );
    client.until("done");
    assert_eq!(nft_dropped(&net, &net.a), 40);
    agent.wait_for("40 firewall drops", WAIT, |p| {
        (client_drops(p, &server, 7101, "NETFILTER_DROP") >= 40.0).then_some(())
    });
    let p = agent.points();
    assert_eq!(client_drops(&p, &server, 7101, "NETFILTER_DROP"), 40.0);
    // Nothing else of this flow was dropped, in either direction.
    let all = sum(
        &p,
        DROPS,
        &[
            ("network.peer.address", &server),
            ("network.peer.port", "7101"),
        ],
    );
    assert_eq!(all, 40.0);
    let d = p
        .iter()
        .find(|pt| pt.metric == DROPS && pt.attr("network.peer.address") == Some(&server))
        .unwrap();
    assert_eq!(d.unit, "{packet}");
    assert_eq!(d.attr("network.transport"), Some("udp"));

    // Network Health: one drops finding, client and server named.
    let want_server = format!("{server}:7101");
    let mut found = None;
    for _ in 0..300 {
        let h = get_json(ui_port, "/api/health?range=5m");
        found = h["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["kind"] == "drops" && f["server"] == want_server.as_str())
            .cloned();
        if found.as_ref().is_some_and(|f| f["count"] == 40) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let f = found.expect("a drops finding");
    assert_eq!(f["count"], 40, "{f}");
    assert_eq!(f["client"], "dropper", "{f}");
    assert_eq!(f["error_type"], "NETFILTER_DROP", "{f}");
    assert_eq!(
        f["title"],
        format!("Blocked by a firewall rule: dropper → {want_server}, 40 packets"),
    );
    assert!(
        f["runbook"].as_str().unwrap().contains("nft list ruleset"),
        "{f}"
    );
}

/// SYNs to a filtered port: every SYN the client sent (the first and its
/// retransmissions, as many as nftables dropped) is a NETFILTER_DROP on
/// the client's TCP flow.
#[test]
fn firewall_drops_of_syns_count_on_the_client_flow() {
    let _serial = serial();
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    net.drop_input(&net.a, "tcp dport 7102 counter").unwrap();
    // One SYN retry: the connect gives up after about 3 s.
    net.run(
        &net.b,
        &[],
        &["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"],
    )
    .unwrap();
    let t = traffic();
    let server = net.a_v4();
    let out = net
        .run(&net.b, &[], &[&t, "tcp-connect", &format!("{server}:7102")])
        .unwrap();
    assert_eq!(out.trim(), "TimedOut");
    let syns = nft_dropped(&net, &net.a);
    // The first SYN and its retries (tcp_syn_retries counts those sent on
    // the retransmission timer; the connect's own timeout may add none).
    assert!(syns >= 2, "{syns} SYNs dropped");
    agent.wait_for("the dropped SYNs", WAIT, |p| {
        (client_drops(p, &server, 7102, "NETFILTER_DROP") >= syns as f64).then_some(())
    });
    let p = agent.points();
    assert_eq!(
        client_drops(&p, &server, 7102, "NETFILTER_DROP"),
        syns as f64
    );
    let d = p
        .iter()
        .find(|pt| pt.metric == DROPS && pt.attr("network.peer.port") == Some("7102"))
        .unwrap();
    assert_eq!(d.attr("network.transport"), Some("tcp"));
}

/// Datagrams to a port where nothing listens: the server's kernel drops
/// each with NO_SOCKET, counted on the sender's flow.
#[test]
fn datagrams_to_a_closed_port_are_no_socket_on_the_sender_flow() {
    let _serial = serial();
    let net = NetPair::new().unwrap();
    let agent = Agent::start("1s").unwrap();
    let t = traffic();
    let server = net.a_v6();
    net.run(
        &net.b,
        &[],
        &[
            &t,
            "udp-client",
            &format!("[{server}]:7103"),
            "7",
            "10",
            "0",
        ],
    )
    .unwrap();
    agent.wait_for("7 NO_SOCKET drops", WAIT, |p| {
        (client_drops(p, &server, 7103, "NO_SOCKET") >= 7.0).then_some(())
    });
    let p = agent.points();
    assert_eq!(client_drops(&p, &server, 7103, "NO_SOCKET"), 7.0);
    let all = sum(&p, DROPS, &[("network.peer.address", &server)]);
    assert_eq!(all, 7.0);
}

/// Clients whose ports lie outside the host's ephemeral range (their
/// namespace hands out 10000-20000; the host's is 32768-60999): the port a
/// local server was seen listening on tells the program which end is the
/// client, so a client's dropped datagrams share one key whatever their
/// source ports. 40 datagrams from 40 sockets fit a map of 16 entries, and
/// all 40 are counted on the client's flow; none is lost for room.
#[test]
fn client_ports_outside_the_host_range_share_one_key_by_the_listening_port() {
    let _serial = serial();
    let net = NetPair::new().unwrap();
    let agent = Agent::start_with(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n    drops: {max_tracked: 16}\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n",
    )
    .unwrap();
    net.run(
        &net.b,
        &[],
        &["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 20000"],
    )
    .unwrap();
    let t = traffic();
    let server = net.a_v4();
    let addr = format!("{server}:7105");
    // One exchange, so that the agent sees a server on port 7105.
    let srv = net
        .serve(&net.a, &[&t, "udp-server", &addr, "1", "1", "8"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "udp-client", &addr, "1", "8", "1"])
        .unwrap();
    srv.finish().unwrap();
    agent.wait_for("the server flow on 7105", WAIT, |p| {
        (sum(
            p,
            "flowscope.flow.packets",
            &[
                ("flowscope.flow.role", "server"),
                ("network.local.port", "7105"),
            ],
        ) >= 1.0)
            .then_some(())
    });
    net.drop_input(&net.a, "udp dport 7105 counter").unwrap();
    // 40 datagrams, each from a socket of its own (a port of its own).
    let spray = format!("for i in $(seq 40); do printf x > /dev/udp/{server}/7105; done");
    net.run(&net.b, &[], &["bash", "-c", &spray]).unwrap();
    assert_eq!(nft_dropped(&net, &net.a), 40);
    agent.wait_for("40 firewall drops on the client's flow", WAIT, |p| {
        (client_drops(p, &server, 7105, "NETFILTER_DROP") >= 40.0).then_some(())
    });
    let p = agent.points();
    assert_eq!(client_drops(&p, &server, 7105, "NETFILTER_DROP"), 40.0);
    let full = sum(
        &p,
        "flowscope.events.lost",
        &[
            ("flowscope.source", "ebpf.drops"),
            ("flowscope.reason", "map_full"),
        ],
    );
    assert_eq!(full, 0.0);
}
