//! NAT resolution end to end (issue 9): a "Service" address DNATed by nft
//! rules shaped like kube-proxy's (a service chain jumping, per connection,
//! to one of two endpoint chains) to two "pods" on port 8080, once in the
//! client's own namespace (OUTPUT hook) and once in a router namespace in
//! between (PREROUTING, with masquerade towards the pods). The flows must
//! name the pods, with the Service address kept in `flowscope.peer.nat.*`,
//! and carry exactly the bytes each pod served.
//!
//! Addresses: 198.19.N.0/24 (inside 198.18.0.0/15), N from the pid like
//! the harness's pairs, the Service at 198.19.N.100:80.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flowscope_integration::{Agent, Point, require_root, serve_in, sh, sum, traffic};
use flowscope_model::names::{attr, metric, nat};

const WAIT: Duration = Duration::from_secs(60);
static NEXT: AtomicU32 = AtomicU32::new(1);

/// Namespaces and veth pairs of one test, deleted on drop.
struct Lab {
    tag: String,
    n: u32,
    namespaces: Vec<String>,
    links: u32,
}

impl Lab {
    fn new() -> Self {
        require_root();
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let n = ((std::process::id() % 100) * 2 + k) % 250 + 1;
        Lab {
            tag: format!("{}{k}", std::process::id() % 100_000),
            n,
            namespaces: Vec::new(),
            links: 0,
        }
    }

    fn ip(&self, host: u32) -> String {
        format!("198.19.{}.{host}", self.n)
    }

    fn service(&self) -> String {
        self.ip(100)
    }

    fn ns(&mut self, role: &str) -> String {
        let name = format!("fsn{role}{}", self.tag);
        sh("ip", &["netns", "add", &name]).unwrap();
        self.namespaces.push(name.clone());
        self.exec(&name, &["ip", "link", "set", "lo", "up"]);
        name
    }

    /// A veth pair between `a` (host `ha` of a /30) and `b` (host `hb`);
    /// returns the two device names.
    fn link(&mut self, a: &str, ha: u32, b: &str, hb: u32) -> (String, String) {
        self.links += 1;
        let (da, db) = (
            format!("vn{}{}a", self.tag, self.links),
            format!("vn{}{}b", self.tag, self.links),
        );
        sh(
            "ip",
            &["link", "add", &da, "type", "veth", "peer", "name", &db],
        )
        .unwrap();
        for (ns, dev, h) in [(a, &da, ha), (b, &db, hb)] {
            sh("ip", &["link", "set", dev, "netns", ns]).unwrap();
            let addr = format!("{}/30", self.ip(h));
            self.exec(ns, &["ip", "addr", "add", &addr, "dev", dev]);
            self.exec(ns, &["ip", "link", "set", dev, "up"]);
        }
        (da, db)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        String::from_utf8_lossy(&sh("ip", &full).unwrap().stdout).into_owned()
    }

    /// kube-proxy's shape (nftables mode): the Service matched in a
    /// services chain, a per-Service chain choosing an endpoint chain with
    /// `numgen` (`inc` here, so the split is exact), endpoint chains that
    /// DNAT to a pod on port 8080.
    fn service_rules(&self, hook: &str, pods: [&str; 2], extra: &str) -> String {
        let svc = self.service();
        format!(
            "table ip fsnat {{
  chain endpoint-a {{ meta l4proto tcp dnat to {p0}:8080; }}
  chain endpoint-b {{ meta l4proto tcp dnat to {p1}:8080; }}
  chain service-web {{ numgen inc mod 2 vmap {{ 0 : goto endpoint-a, 1 : goto endpoint-b }}; }}
  chain services {{ ip daddr {svc} tcp dport 80 goto service-web; }}
  chain nat-{hook} {{ type nat hook {hook} priority -100; policy accept; jump services; }}
  {extra}
}}",
            p0 = pods[0],
            p1 = pods[1],
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Starts the agent and waits until its conntrack service has followed
/// the namespaces that existed at start (ours among them).
fn agent(interval: &str) -> Agent {
    let agent = Agent::start_with(&format!(
        "receivers:\n  ebpf:\n    collection_interval: {interval}\n\
         processors:\n  locality: {{}}\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [locality]\n      exporters: [file]\n"
    ))
    .unwrap();
    let log = agent.dir.path().join("agent.log");
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("conntrack followed")
    {
        assert!(Instant::now() < deadline, "conntrack never followed");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// Serves `count` connections in each pod (answering `answers[i]` bytes
/// to 100), makes `2 * count` connections from `client` to the Service and
/// checks the answers alternate between the pods.
fn exchange(lab: &Lab, client: &str, pods: [(&str, String); 2], count: usize, answers: [u64; 2]) {
    let t = traffic();
    let mut servers = Vec::new();
    for ((ns, ip), answer) in pods.iter().zip(answers) {
        let addr = format!("{ip}:8080");
        let (count, answer) = (count.to_string(), answer.to_string());
        let args = [t.as_str(), "tcp-serve-each", &addr, &count, "100", &answer];
        servers.push(serve_in(ns, &args).unwrap());
    }
    let svc = format!("{}:80", lab.service());
    let out = lab.exec(
        client,
        &[&t, "tcp-client-each", &svc, &(2 * count).to_string(), "100"],
    );
    let sizes: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    let want: Vec<u64> = (0..2 * count).map(|i| answers[i % 2]).collect();
    assert_eq!(sizes, want, "numgen inc alternates the pods");
    for s in servers {
        s.finish().expect("a pod server failed");
    }
}

fn client_flows<'a>(points: &'a [Point], svc: &str, metric: &str) -> Vec<&'a Point> {
    points
        .iter()
        .filter(|p| {
            p.metric == metric
                && p.attr(attr::FLOW_ROLE) == Some("client")
                && (p.attr(nat::PEER_NAT_ADDRESS) == Some(svc)
                    || p.attr(attr::PEER_ADDRESS) == Some(svc))
        })
        .collect()
}

/// [`exchange`], then [`check_client`] on the same pods and answers.
fn exchange_and_check(
    agent: &Agent,
    lab: &Lab,
    client: &str,
    pods: [(&str, &String); 2],
    count: usize,
    answers: [u64; 2],
) {
    let with_ips = pods.map(|(ns, ip)| (ns, ip.clone()));
    exchange(lab, client, with_ips, count, answers);
    check_client(agent, lab, pods.map(|(_, ip)| ip.as_str()), count, answers);
}

/// Checks the client side: per pod, `count` connections opened and
/// closed, 100 bytes sent and `answer` received per connection, all
/// through the Service, none left on the Service address itself.
fn check_client(agent: &Agent, lab: &Lab, pods: [&str; 2], count: usize, answers: [u64; 2]) {
    let svc = lab.service();
    let total: f64 = answers.iter().map(|a| (a * count as u64) as f64).sum();
    agent.wait_for("every client byte", WAIT, |p| {
        let got: f64 = client_flows(p, &svc, metric::FLOW_IO.0)
            .iter()
            .filter(|p| p.attr(attr::IO_DIRECTION) == Some("receive"))
            .map(|p| p.value)
            .sum();
        (got >= total).then_some(())
    });
    // One more interval, so nothing trails.
    std::thread::sleep(Duration::from_secs(1));
    let points = agent.points();
    let io = client_flows(&points, &svc, metric::FLOW_IO.0);
    for p in &io {
        assert_eq!(p.attr(nat::PEER_NAT_ADDRESS), Some(svc.as_str()), "{p:?}");
        assert_eq!(p.attr(nat::PEER_NAT_PORT), Some("80"), "{p:?}");
        assert_eq!(p.attr(attr::PEER_PORT), Some("8080"), "{p:?}");
        assert_eq!(p.attr(attr::LOCALITY), Some("same_host"), "{p:?}");
    }
    for (pod, answer) in pods.iter().zip(answers) {
        let f = |dir| {
            [
                (attr::FLOW_ROLE, "client"),
                (attr::PEER_ADDRESS, *pod),
                (nat::PEER_NAT_ADDRESS, svc.as_str()),
                (attr::IO_DIRECTION, dir),
            ]
        };
        assert_eq!(
            sum(&points, metric::FLOW_IO.0, &f("receive")),
            (answer * count as u64) as f64,
            "bytes {pod} served"
        );
        assert_eq!(
            sum(&points, metric::FLOW_IO.0, &f("transmit")),
            (100 * count) as f64,
            "bytes sent to {pod}"
        );
        let conn = [
            (attr::FLOW_ROLE, "client"),
            (attr::PEER_ADDRESS, *pod),
            (nat::PEER_NAT_ADDRESS, svc.as_str()),
        ];
        assert_eq!(
            sum(&points, metric::TCP_CLOSED.0, &conn),
            count as f64,
            "connections to {pod}"
        );
    }
    // Nothing stayed on the Service address, nothing was unresolved.
    assert_eq!(
        sum(
            &points,
            metric::FLOW_IO.0,
            &[(attr::PEER_ADDRESS, svc.as_str())]
        ),
        0.0
    );
    assert_eq!(
        sum(
            &points,
            metric::EVENTS_LOST.0,
            &[(attr::REASON, nat::REASON_NAT_UNRESOLVED)]
        ),
        0.0
    );
}

/// DNAT in the client's own namespace (OUTPUT hook), as kube-proxy does
/// for a pod in the host network. Each connection lives about a
/// millisecond, and conntrack there destroys its entry 1 s after the close
/// (TIME_WAIT shortened), inside the 3 s interval: NEW and DESTROY events
/// both arrive before the flows are reported, and the flows still resolve.
#[test]
fn service_dnat_in_the_client_namespace() {
    let mut lab = Lab::new();
    let c = lab.ns("c");
    let p1 = lab.ns("p");
    let p2 = lab.ns("q");
    let (dc, d1) = lab.link(&c, 1, &p1, 2);
    let (_, d2) = lab.link(&c, 5, &p2, 6);
    let (pod1, pod2) = (lab.ip(2), lab.ip(6));
    let svc = lab.service();
    lab.exec(
        &c,
        &["ip", "route", "add", &format!("{svc}/32"), "dev", &dc],
    );
    for (p, dev) in [(&p1, &d1), (&p2, &d2)] {
        lab.exec(p, &["ip", "route", "add", "default", "dev", dev]);
    }
    lab.exec(
        &c,
        &["nft", &lab.service_rules("output", [&pod1, &pod2], "")],
    );
    for (k, v) in [
        ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1"),
        ("net.netfilter.nf_conntrack_tcp_timeout_close", "1"),
    ] {
        lab.exec(&c, &["sysctl", "-qw", &format!("{k}={v}")]);
    }
    let agent = agent("3s");
    let count = 5;
    exchange_and_check(
        &agent,
        &lab,
        &c,
        [(&p1, &pod1), (&p2, &pod2)],
        count,
        [1111, 2222],
    );
}

/// DNAT in a router namespace between the client and the pods
/// (PREROUTING), with masquerade towards the pods as kube-proxy does for
/// traffic it must route back through itself. The client sees only the
/// Service; the pods see only the router: conntrack in the router names
/// both real ends.
#[test]
fn service_dnat_in_a_router_namespace() {
    let mut lab = Lab::new();
    let c = lab.ns("c");
    let r = lab.ns("r");
    let p1 = lab.ns("p");
    let p2 = lab.ns("q");
    lab.link(&c, 1, &r, 2);
    lab.link(&r, 5, &p1, 6);
    lab.link(&r, 9, &p2, 10);
    let (client, pod1, pod2) = (lab.ip(1), lab.ip(6), lab.ip(10));
    lab.exec(&c, &["ip", "route", "add", "default", "via", &lab.ip(2)]);
    lab.exec(&p1, &["ip", "route", "add", "default", "via", &lab.ip(5)]);
    lab.exec(&p2, &["ip", "route", "add", "default", "via", &lab.ip(9)]);
    lab.exec(&r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let masq = format!(
        "chain nat-postrouting {{ type nat hook postrouting priority 100; policy accept; ip saddr {client} ct status dnat masquerade; }}"
    );
    lab.exec(
        &r,
        &[
            "nft",
            &lab.service_rules("prerouting", [&pod1, &pod2], &masq),
        ],
    );
    let agent = agent("2s");
    let count = 4;
    exchange_and_check(
        &agent,
        &lab,
        &c,
        [(&p1, &pod1), (&p2, &pod2)],
        count,
        [3000, 700],
    );
    // The pods' side: the peer is the real client, the router's address
    // (what masquerade made of it) is kept as the translated one.
    for (router, answer) in [(lab.ip(5), 3000u64), (lab.ip(9), 700)] {
        let f = [
            (attr::FLOW_ROLE, "server"),
            (attr::LOCAL_PORT, "8080"),
            (attr::PEER_ADDRESS, client.as_str()),
            (nat::PEER_NAT_ADDRESS, router.as_str()),
            (attr::IO_DIRECTION, "transmit"),
        ];
        agent.wait_for("the pods' flows", WAIT, |p| {
            (sum(p, metric::FLOW_IO.0, &f) >= (answer * count as u64) as f64).then_some(())
        });
        assert_eq!(
            sum(&agent.points(), metric::FLOW_IO.0, &f),
            (answer * count as u64) as f64
        );
    }
}

/// UDP to a DNATed Service address from an unconnected socket bound to
/// `0.0.0.0` (sendto, recvfrom), DNAT in the client's own namespace. UDP is
/// counted at the socket: both directions carry the address the application
/// used (the Service; conntrack turns the replies' source back into it), and
/// the socket holds no local address, so the receiver asks the namespace's
/// routes for it before matching the conntrack entry. The flow must name the
/// pod, keep the Service as the translated peer, with exact bytes and
/// datagrams, and nothing unresolved.
#[test]
fn udp_service_dnat_from_an_unconnected_socket() {
    let mut lab = Lab::new();
    let c = lab.ns("c");
    let p = lab.ns("p");
    let (dc, dp) = lab.link(&c, 1, &p, 2);
    let pod = lab.ip(2);
    let svc = lab.service();
    lab.exec(
        &c,
        &["ip", "route", "add", &format!("{svc}/32"), "dev", &dc],
    );
    lab.exec(&p, &["ip", "route", "add", "default", "dev", &dp]);
    lab.exec(
        &c,
        &[
            "nft",
            &format!(
                "table ip fsnatu {{
  chain nat-output {{ type nat hook output priority -100; policy accept; ip daddr {svc} udp dport 53 dnat to {pod}:5353; }}
}}"
            ),
        ],
    );
    let agent = agent("1s");
    let t = traffic();
    // 3 datagrams of 100 bytes to the Service, 2 of 40 back from the pod.
    let server = serve_in(
        &p,
        &[&t, "udp-server", &format!("{pod}:5353"), "3", "2", "40"],
    )
    .unwrap();
    lab.exec(
        &c,
        &[&t, "udp-client", &format!("{svc}:53"), "3", "100", "2"],
    );
    server.finish().expect("the pod's server failed");

    let f = |dir| {
        [
            (attr::FLOW_ROLE, "client"),
            (attr::NETWORK_TRANSPORT, "udp"),
            (attr::PEER_ADDRESS, pod.as_str()),
            (attr::PEER_PORT, "5353"),
            (nat::PEER_NAT_ADDRESS, svc.as_str()),
            (nat::PEER_NAT_PORT, "53"),
            (attr::IO_DIRECTION, dir),
        ]
    };
    agent.wait_for("the client's UDP flow, resolved", WAIT, |pts| {
        (sum(pts, metric::FLOW_IO.0, &f("transmit")) >= 300.0
            && sum(pts, metric::FLOW_IO.0, &f("receive")) >= 80.0)
            .then_some(())
    });
    let points = agent.points();
    assert_eq!(sum(&points, metric::FLOW_IO.0, &f("transmit")), 300.0);
    assert_eq!(sum(&points, metric::FLOW_IO.0, &f("receive")), 80.0);
    assert_eq!(sum(&points, metric::FLOW_PACKETS.0, &f("transmit")), 3.0);
    assert_eq!(sum(&points, metric::FLOW_PACKETS.0, &f("receive")), 2.0);
    assert_eq!(
        sum(
            &points,
            metric::FLOW_IO.0,
            &[(attr::PEER_ADDRESS, svc.as_str())]
        ),
        0.0,
        "bytes left on the Service address"
    );
    assert_eq!(
        sum(
            &points,
            metric::EVENTS_LOST.0,
            &[(attr::REASON, nat::REASON_NAT_UNRESOLVED)]
        ),
        0.0
    );
}
