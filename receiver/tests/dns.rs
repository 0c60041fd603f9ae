//! DNS receiver against real servers: dnsmasq in one network namespace
//! answers dig in another, over a veth pair (198.18.<n>.0/24 and
//! fd00:<n>::/64 only). Needs root, dnsmasq, dig and nft
//! (`scripts/bootstrap.sh --test`); fails, never skips, without them.
//!
//! Every test starts its own receiver, which captures every namespace on
//! the host, so each test uses its own subnet and tells its lookups apart
//! by `server.address`.
//!
//! Also here: the hostile packet corpus (receiver/fuzz/corpus/dns_packet)
//! replayed through the parser and the engine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowscope_model::names::attr;
use flowscope_model::telemetry::{EVENTS_LOST, EVENTS_RECEIVED};
use flowscope_model::{Attrs, Context, FlowBatch, PeerNames, Point, PointValue, Telemetry};
use flowscope_otel_config::receivers::DnsReceiverConfig;
use flowscope_receiver::dns::engine::{Captured, Direction, Engine, EngineSettings, FixedOwner};
use flowscope_receiver::dns::packet::build;
use flowscope_receiver::dns::{DnsNames, DnsReceiver, DnsSettings, message};
use flowscope_receiver::loader::Hooks;
use tokio::sync::{mpsc, watch};

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e} (install with scripts/bootstrap.sh --test)")
        });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair: `a` (server, .1) and `b`
/// (client, .2). Deleted on drop, with every process started in them.
struct Pair {
    a: String,
    b: String,
    n: u8,
    children: Vec<Child>,
}

impl Pair {
    fn new(n: u8) -> Self {
        assert_eq!(unsafe { libc::geteuid() }, 0, "the DNS tests need root");
        let pid = std::process::id();
        let a = format!("fsdns-{pid}-{n}a");
        let b = format!("fsdns-{pid}-{n}b");
        let pair = Pair {
            a: a.clone(),
            b: b.clone(),
            n,
            children: Vec::new(),
        };
        let (va, vb) = (format!("fsd{pid}{n}a"), format!("fsd{pid}{n}b"));
        // Interface names are at most 15 bytes.
        let (va, vb) = (
            va[va.len().saturating_sub(15)..].to_string(),
            vb[vb.len().saturating_sub(15)..].to_string(),
        );
        run(&["ip", "netns", "add", &a]);
        run(&["ip", "netns", "add", &b]);
        run(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ]);
        run(&["ip", "link", "set", &va, "netns", &a]);
        run(&["ip", "link", "set", &vb, "netns", &b]);
        for (ns, dev, host) in [(&a, &va, 1), (&b, &vb, 2)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("198.18.{n}.{host}/24"),
                "dev",
                dev,
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("fd00:{n}::{host}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn server(&self) -> String {
        format!("198.18.{}.1", self.n)
    }
    fn client(&self) -> String {
        format!("198.18.{}.2", self.n)
    }
    fn server6(&self) -> String {
        format!("fd00:{}::1", self.n)
    }

    fn inode(ns: &str) -> u32 {
        std::fs::metadata(format!("/run/netns/{ns}"))
            .map(|m| m.ino() as u32)
            .expect("netns file")
    }

    /// dnsmasq in `a`: `known.test` -> .1 / ::1, other `*.test` NXDOMAIN,
    /// `fail.test` forwarded to an upstream that answers SERVFAIL.
    fn start_dnsmasq(&mut self) {
        let (s, s6) = (self.server(), self.server6());
        self.start_servfail_upstream();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.a,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
            ])
            .args([
                "--bind-interfaces",
                "--listen-address",
                &s,
                "--listen-address",
                &s6,
                "--listen-address",
                "127.0.0.1",
            ])
            .arg(format!("--address=/known.test/{s}"))
            .arg(format!("--address=/known.test/{s6}"))
            .arg("--local=/test/")
            .arg(format!("--server=/fail.test/{s}#5300"))
            .args(["--cache-size=0", "--log-facility=/dev/null", "--pid-file="])
            .stdout(Stdio::null())
            .spawn()
            .expect("dnsmasq (install with scripts/bootstrap.sh --test)");
        self.children.push(child);
        // Ready when it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .dig(&["+tries=1", "+time=1", &format!("@{s}"), "ready.known.test"])
                .contains("NOERROR")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq did not answer within 10 s");
    }

    /// A one-line upstream on udp/5300 in `a` answering SERVFAIL to all.
    fn start_servfail_upstream(&mut self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.a)).expect("netns");
        let addr = format!("{}:5300", self.server());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let sock = std::net::UdpSocket::bind(&addr).expect("bind upstream");
            ready_tx.send(()).ok();
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                buf[2] |= 0x80;
                buf[3] = 0x80 | 2;
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("upstream bound");
    }

    fn dig(&self, args: &[&str]) -> String {
        self.dig_in(&self.b, args)
    }

    fn dig_in(&self, ns: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "env",
                "OTEL_SERVICE_NAME=dig-client",
                "dig",
            ])
            .args(args)
            .output()
            .expect("dig (install with scripts/bootstrap.sh --test)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft(&self, ns: &str, rules: &str) {
        let path =
            std::env::temp_dir().join(format!("fsdns-{}-{}.nft", std::process::id(), self.n));
        std::fs::write(&path, rules).expect("write nft rules");
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "-f",
            path.to_str().expect("utf-8"),
        ]);
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A receiver running on its own runtime, collecting every point it sends.
struct Agent {
    rt: tokio::runtime::Runtime,
    engine: Arc<std::sync::Mutex<Engine>>,
    names: PeerNames,
    telemetry: Telemetry,
    points: Vec<Point>,
    rx: mpsc::Receiver<FlowBatch>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    namespaces_ok: bool,
    /// Which owner programs the receiver attached.
    hooks: Option<Hooks>,
}

impl Agent {
    fn start(settings: DnsSettings, namespaces: &[&str]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // The receiver writes names into the context's shared cache; this
        // test reads them where the `peer` processor would.
        let ctx = Context::default();
        let telemetry = ctx.telemetry.clone();
        let names = ctx.peer_names.clone();
        let receiver = DnsReceiver::start_with(settings, &ctx).expect("start the dns receiver");
        // Capturing in both namespaces before any traffic.
        let want: Vec<u32> = namespaces.iter().map(|n| Pair::inode(n)).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut namespaces_ok = false;
        while Instant::now() < deadline {
            let open = receiver.namespaces();
            if want.iter().all(|w| open.contains(w)) {
                namespaces_ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            namespaces_ok,
            "the receiver did not open sockets in the test namespaces within 10 s"
        );
        let engine = receiver.engine();
        let hooks = receiver.owner_hooks();
        let (tx, rx) = mpsc::channel(64);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = rt.spawn(async move {
            receiver
                .run(tx, shutdown_rx)
                .await
                .expect("dns receiver run");
        });
        Agent {
            rt,
            engine,
            names,
            telemetry,
            points: Vec::new(),
            rx,
            shutdown,
            task: Some(task),
            namespaces_ok,
            hooks,
        }
    }

    fn drain(&mut self) {
        while let Ok(b) = self.rx.try_recv() {
            assert!(b.flows.is_empty());
            self.points.extend(b.points);
        }
    }

    /// Polls until `done(points)` holds, or panics after `secs`.
    fn wait_for(&mut self, secs: u64, what: &str, done: impl Fn(&[Point]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.drain();
            if done(&self.points) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; points: {:#?}",
                summary(&self.points)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `n` more batches (so late points would have arrived).
    fn settle(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < n {
            if let Ok(b) = self.rx.try_recv() {
                self.points.extend(b.points);
                seen += 1;
                continue;
            }
            assert!(Instant::now() < deadline, "no batch within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            self.rt.block_on(t).expect("receiver task");
        }
        self.drain();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.namespaces_ok;
    }
}

fn summary(points: &[Point]) -> Vec<String> {
    points
        .iter()
        .map(|p| {
            let v = match &p.value {
                PointValue::Histogram(h) => format!("count={} sum={}", h.count, h.sum),
                v => format!("{}", v.as_f64()),
            };
            let a: Vec<String> = p.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{} {} [{}] {:?}",
                p.metric.name(),
                v,
                a.join(" "),
                p.resource.get_str("service.name")
            )
        })
        .collect()
}

/// Sum of counts of `metric` points whose attributes include `filter`.
fn count(points: &[Point], metric: &str, filter: &[(&str, &str)]) -> u64 {
    points
        .iter()
        .filter(|p| p.metric.name() == metric)
        .filter(|p| filter.iter().all(|(k, v)| p.attrs.get_str(k) == Some(v)))
        .map(|p| match &p.value {
            PointValue::Histogram(h) => h.count,
            PointValue::Int(n) => *n,
            v => v.as_f64() as u64,
        })
        .sum()
}

fn histograms<'a>(
    points: &'a [Point],
    filter: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a flowscope_model::Histogram> + 'a {
    points
        .iter()
        .filter(|p| p.metric.name() == DUR)
        .filter(move |p| filter.iter().all(|(k, v)| p.attrs.get_str(k) == Some(v)))
        .filter_map(|p| match &p.value {
            PointValue::Histogram(h) => Some(h),
            _ => None,
        })
}

/// The shortest interval the configuration accepts (1 s), and a fast
/// namespace rescan (a tunable the configuration does not expose).
fn test_settings() -> DnsSettings {
    DnsSettings {
        config: DnsReceiverConfig {
            collection_interval: Duration::from_secs(1),
            ..DnsReceiverConfig::default()
        },
        namespace_rescan: Duration::from_millis(100),
        ..DnsSettings::default()
    }
}

const DUR: &str = flowscope_model::names::metric::DNS_DURATION.0;

#[test]
fn lookups_over_udp_tcp_and_ipv6_with_rcodes_sides_and_names() {
    let mut pair = Pair::new(1);
    pair.start_dnsmasq();
    let mut agent = Agent::start(test_settings(), &[&pair.a, &pair.b]);
    let (s, s6) = (pair.server(), pair.server6());
    let at = format!("@{s}");
    const N: u64 = 20;
    for _ in 0..N {
        let out = pair.dig(&["+tries=1", "+time=2", &at, "known.test", "A"]);
        assert!(out.contains("status: NOERROR"), "{out}");
    }
    let out = pair.dig(&["+tries=1", "+time=2", &at, "nothere.test", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let out = pair.dig(&["+tries=1", "+time=3", &at, "x.fail.test", "A"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    let out = pair.dig(&["+tcp", "+tries=1", "+time=2", &at, "known.test", "A"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    let out = pair.dig(&[
        "+tries=1",
        "+time=2",
        &format!("@{s6}"),
        "known.test",
        "AAAA",
    ]);
    assert!(out.contains("status: NOERROR"), "{out}");

    let client = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&'static str, &'static str)> = vec![(attr::FLOW_ROLE, "client")];
        f.extend_from_slice(extra);
        f
    };
    let s_static: &'static str = Box::leak(s.clone().into_boxed_str());
    let s6_static: &'static str = Box::leak(s6.clone().into_boxed_str());
    let udp_known = client(&[
        (attr::SERVER_ADDRESS, s_static),
        (attr::NETWORK_TRANSPORT, "udp"),
        (attr::DNS_QUESTION_NAME, "known.test"),
        (attr::DNS_QUESTION_TYPE, "A"),
        (attr::DNS_RESPONSE_CODE, "NOERROR"),
    ]);
    // Failed lookups carry their RCODE's name as error.type too.
    let nx = client(&[
        (attr::SERVER_ADDRESS, s_static),
        (attr::DNS_RESPONSE_CODE, "NXDOMAIN"),
        (attr::ERROR_TYPE, "NXDOMAIN"),
    ]);
    let sf = client(&[
        (attr::SERVER_ADDRESS, s_static),
        (attr::DNS_RESPONSE_CODE, "SERVFAIL"),
        (attr::ERROR_TYPE, "SERVFAIL"),
    ]);
    let tcp = client(&[
        (attr::SERVER_ADDRESS, s_static),
        (attr::NETWORK_TRANSPORT, "tcp"),
        (attr::DNS_RESPONSE_CODE, "NOERROR"),
    ]);
    let v6 = client(&[
        (attr::SERVER_ADDRESS, s6_static),
        (attr::NETWORK_TYPE, "ipv6"),
        (attr::DNS_QUESTION_TYPE, "AAAA"),
        (attr::DNS_RESPONSE_CODE, "NOERROR"),
    ]);
    agent.wait_for(20, "every lookup", |p| {
        count(p, DUR, &udp_known) >= N
            && count(p, DUR, &nx) >= 1
            && count(p, DUR, &sf) >= 1
            && count(p, DUR, &tcp) >= 1
            && count(p, DUR, &v6) >= 1
    });
    agent.settle(2);
    let p = &agent.points;
    assert_eq!(count(p, DUR, &udp_known), N, "{:#?}", summary(p));
    assert_eq!(count(p, DUR, &nx), 1);
    assert_eq!(count(p, DUR, &sf), 1);
    assert_eq!(count(p, DUR, &tcp), 1);
    assert_eq!(count(p, DUR, &v6), 1);
    assert_eq!(
        count(
            p,
            DUR,
            &[
                (attr::SERVER_ADDRESS, s_static),
                (attr::ERROR_TYPE, "timeout")
            ]
        ),
        0
    );
    // error.type is set if and only if the lookup failed.
    for pt in p.iter().filter(|pt| pt.metric.name() == DUR) {
        let rcode = pt.attrs.get_str(attr::DNS_RESPONSE_CODE);
        let error = pt.attrs.get_str(attr::ERROR_TYPE);
        match rcode {
            Some("NOERROR") => assert_eq!(error, None, "{pt:?}"),
            Some(code) => assert_eq!(error, Some(code), "{pt:?}"),
            None => assert_eq!(error, Some("timeout"), "{pt:?}"),
        }
    }
    for h in histograms(p, &udp_known) {
        assert!(
            h.min > 0.0 && h.sum > 0.0,
            "latency must be positive: {h:?}"
        );
    }
    // The server side is dnsmasq, which saw the same lookups; the client
    // side is dig, every time, although each dig exits right after its
    // answer (the kernel recorded the owner when the query left), over
    // IPv4 and IPv6.
    for pt in p.iter().filter(|pt| {
        pt.metric.name() == DUR
            && matches!(pt.attrs.get_str(attr::SERVER_ADDRESS), Some(a) if a == s_static || a == s6_static)
    }) {
        let svc = pt.resource.get_str("service.name");
        match pt.attrs.get_str(attr::FLOW_ROLE) {
            Some("client") => assert_eq!(svc, Some("dig-client"), "{:#?}", summary(p)),
            Some("server") => assert_eq!(svc, Some("dnsmasq"), "{:#?}", summary(p)),
            other => panic!("role {other:?}"),
        }
    }
    let server_known = [
        (attr::FLOW_ROLE, "server"),
        (attr::SERVER_ADDRESS, s_static),
        (attr::NETWORK_TRANSPORT, "udp"),
        (attr::DNS_QUESTION_NAME, "known.test"),
        (attr::DNS_RESPONSE_CODE, "NOERROR"),
    ];
    assert_eq!(count(p, DUR, &server_known), N);

    // The client resolved known.test: its namespace names the address,
    // the server's does not.
    let (ns_a, ns_b) = (Pair::inode(&pair.a), Pair::inode(&pair.b));
    let ip: IpAddr = s.parse().expect("ip");
    let ip6: IpAddr = s6.parse().expect("ip");
    assert_eq!(agent.names.name_of(ns_b, ip).as_deref(), Some("known.test"));
    assert_eq!(
        agent.names.name_of(ns_b, ip6).as_deref(),
        Some("known.test")
    );
    assert_eq!(agent.names.name_of(ns_a, ip), None);
    // And a connection to that address afterwards finds it (the flow
    // receiver asks exactly this when it reports the flow).
    // A client that outlives its lookups is always attributed: a shell
    // sending a query for known.test from a UDP socket it keeps open.
    const M: u64 = 3;
    let query =
        r"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05known\x04test\x00\x00\x01\x00\x01";
    for _ in 0..M {
        let script = format!(
            "exec 3<>/dev/udp/{s}/53; printf '{query}' >&3; read -r -t 3 -N 12 -u 3 _; sleep 0.3"
        );
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &pair.b,
                "env",
                "OTEL_SERVICE_NAME=shell-client",
                "bash",
                "-c",
                &script,
            ])
            .status()
            .expect("bash");
        assert!(st.success());
    }
    let shell = [
        (attr::FLOW_ROLE, "client"),
        (attr::SERVER_ADDRESS, s_static),
        (attr::DNS_RESPONSE_CODE, "NOERROR"),
    ];
    let by_shell = |p: &[Point]| -> u64 {
        p.iter()
            .filter(|pt| pt.resource.get_str("service.name") == Some("shell-client"))
            .map(|pt| count(std::slice::from_ref(pt), DUR, &shell))
            .sum()
    };
    agent.wait_for(20, "the shell's lookups", |p| by_shell(p) >= M);
    agent.settle(1);
    assert_eq!(by_shell(&agent.points), M, "{:#?}", summary(&agent.points));

    let lost = agent
        .telemetry
        .total_matching(EVENTS_LOST, &Attrs::new().with(attr::REASON, "parse_error"));
    assert_eq!(lost, 0, "no parse errors on real traffic");
    assert!(
        agent
            .telemetry
            .total_matching(EVENTS_RECEIVED, &Attrs::new().with(attr::SOURCE, "dns"))
            > 0
    );
    agent.stop();
}

#[test]
fn dropped_responses_time_out_once_each() {
    let mut pair = Pair::new(2);
    pair.start_dnsmasq();
    let mut settings = test_settings();
    settings.config.query_timeout = Duration::from_millis(500);
    let mut agent = Agent::start(settings, &[&pair.a, &pair.b]);
    // The server's answers never leave its namespace.
    pair.nft(
        &pair.a,
        "table inet fsdns {\n  chain out {\n    type filter hook output priority 0;\n    udp sport 53 drop\n    tcp sport 53 drop\n  }\n}\n",
    );
    let s = pair.server();
    let s_static: &'static str = Box::leak(s.clone().into_boxed_str());
    const N: u64 = 3;
    for i in 0..N {
        let out = pair.dig(&[
            "+tries=1",
            "+time=1",
            &format!("@{s}"),
            &format!("t{i}.known.test"),
            "A",
        ]);
        assert!(out.contains("timed out"), "{out}");
    }
    let f = [
        (attr::FLOW_ROLE, "client"),
        (attr::SERVER_ADDRESS, s_static),
    ];
    let timed_out = [
        (attr::FLOW_ROLE, "client"),
        (attr::SERVER_ADDRESS, s_static),
        (attr::ERROR_TYPE, "timeout"),
    ];
    agent.wait_for(20, "the timeouts", |p| count(p, DUR, &timed_out) >= N);
    // Several more intervals: nothing is counted twice.
    agent.settle(4);
    let p = &agent.points;
    // Every lookup is a dns.lookup.duration sample: the client's N
    // timed-out ones, each lasting exactly the timeout, with no response
    // code, and nothing else on the client's side.
    assert_eq!(count(p, DUR, &timed_out), N, "{:#?}", summary(p));
    assert_eq!(count(p, DUR, &f), N);
    let total: f64 = histograms(p, &timed_out).map(|h| h.sum).sum();
    assert!((total - N as f64 * 0.5).abs() < 1e-9, "{total}");
    assert!(
        p.iter()
            .filter(|pt| pt.metric.name() == DUR)
            .filter(|pt| f.iter().all(|(k, v)| pt.attrs.get_str(k) == Some(v)))
            .all(|pt| pt.attrs.get(attr::DNS_RESPONSE_CODE).is_none()),
        "{:#?}",
        summary(p)
    );
    for i in 0..N {
        let name = format!("t{i}.known.test");
        let one: u64 = p
            .iter()
            .filter(|pt| {
                pt.metric.name() == DUR
                    && pt.attrs.get_str(attr::DNS_QUESTION_NAME) == Some(name.as_str())
            })
            .filter(|pt| pt.attrs.get_str(attr::FLOW_ROLE) == Some("client"))
            .map(|pt| match &pt.value {
                PointValue::Histogram(h) => h.count,
                v => panic!("not a histogram: {v:?}"),
            })
            .sum();
        assert_eq!(one, 1, "{name}");
    }
    agent.stop();
}

/// Namespaces and processes of the routed test, removed on drop.
struct Routed {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Routed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A client namespace reaches a server namespace through a router
/// namespace (as a host routes its containers' traffic): the lookup is
/// reported once per side, never by the router that only forwards it.
#[test]
fn routed_lookups_are_reported_where_they_are_local() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the DNS tests need root");
    let pid = std::process::id();
    let [c, r, s] = ["c", "r", "s"].map(|x| format!("fsdns-{pid}-4{x}"));
    let mut nets = Routed {
        names: vec![c.clone(), r.clone(), s.clone()],
        children: Vec::new(),
    };
    for ns in &nets.names {
        run(&["ip", "netns", "add", ns]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    let dev = |x: &str| {
        let d = format!("fr{pid}{x}");
        d[d.len().saturating_sub(15)..].to_string()
    };
    for (left, right, l, rr, net) in [
        (&c, &r, dev("cr"), dev("rc"), 4),
        (&r, &s, dev("rs"), dev("sr"), 5),
    ] {
        run(&["ip", "link", "add", &l, "type", "veth", "peer", "name", &rr]);
        run(&["ip", "link", "set", &l, "netns", left]);
        run(&["ip", "link", "set", &rr, "netns", right]);
        let (lh, rh) = if net == 4 { (2, 1) } else { (1, 2) };
        run(&[
            "ip",
            "-n",
            left,
            "addr",
            "add",
            &format!("198.18.{net}.{lh}/24"),
            "dev",
            &l,
        ]);
        run(&[
            "ip",
            "-n",
            right,
            "addr",
            "add",
            &format!("198.18.{net}.{rh}/24"),
            "dev",
            &rr,
        ]);
        run(&["ip", "-n", left, "link", "set", &l, "up"]);
        run(&["ip", "-n", right, "link", "set", &rr, "up"]);
    }
    run(&[
        "ip",
        "-n",
        &c,
        "route",
        "add",
        "default",
        "via",
        "198.18.4.1",
    ]);
    run(&[
        "ip",
        "-n",
        &s,
        "route",
        "add",
        "default",
        "via",
        "198.18.5.1",
    ]);
    // /proc/sys/net is per namespace (no procps needed).
    run(&[
        "ip",
        "netns",
        "exec",
        &r,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
    ]);
    // A process in the router namespace, as a host always has.
    nets.children.push(
        Command::new("ip")
            .args(["netns", "exec", &r, "sleep", "300"])
            .spawn()
            .expect("sleep"),
    );
    nets.children.push(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &s,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
            ])
            .args([
                "--bind-interfaces",
                "--listen-address",
                "198.18.5.2",
                "--local=/test/",
            ])
            .args([
                "--address=/known.test/198.18.5.2",
                "--cache-size=0",
                "--log-facility=/dev/null",
                "--pid-file=",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("dnsmasq"),
    );
    let dig = |args: &[&str]| -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &c, "dig"])
            .args(args)
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dig(&["+tries=1", "+time=1", "@198.18.5.2", "ready.known.test"]).contains("NOERROR") {
        assert!(
            Instant::now() < deadline,
            "dnsmasq did not answer through the router"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut agent = Agent::start(test_settings(), &[&c, &r, &s]);
    // The router's addresses are read at a rescan once it has a process.
    let router = Pair::inode(&r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent
        .engine
        .lock()
        .map(|e| e.knows_addrs_of(router))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the router's addresses were not read within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    const N: u64 = 5;
    for _ in 0..N {
        let out = dig(&["+tries=1", "+time=2", "@198.18.5.2", "known.test", "A"]);
        assert!(out.contains("status: NOERROR"), "{out}");
    }
    let side = |role: &'static str| {
        [
            (attr::SERVER_ADDRESS, "198.18.5.2"),
            (attr::DNS_QUESTION_NAME, "known.test"),
            (attr::FLOW_ROLE, role),
        ]
    };
    agent.wait_for(20, "both sides", |p| {
        count(p, DUR, &side("client")) >= N && count(p, DUR, &side("server")) >= N
    });
    agent.settle(2);
    assert_eq!(
        count(&agent.points, DUR, &side("client")),
        N,
        "{:#?}",
        summary(&agent.points)
    );
    assert_eq!(
        count(&agent.points, DUR, &side("server")),
        N,
        "{:#?}",
        summary(&agent.points)
    );
    agent.stop();
}

/// On loopback the kernel shows each packet twice (outgoing, then
/// incoming): each lookup still counts once, as the client's.
#[test]
fn loopback_lookups_count_once() {
    let mut pair = Pair::new(3);
    pair.start_dnsmasq();
    let mut agent = Agent::start(test_settings(), &[&pair.a, &pair.b]);
    const N: u64 = 5;
    for _ in 0..N {
        let out = pair.dig_in(
            &pair.a,
            &["+tries=1", "+time=2", "@127.0.0.1", "known.test", "A"],
        );
        assert!(out.contains("status: NOERROR"), "{out}");
    }
    let any = [
        (attr::SERVER_ADDRESS, "127.0.0.1"),
        (attr::DNS_QUESTION_NAME, "known.test"),
    ];
    let client = [
        (attr::SERVER_ADDRESS, "127.0.0.1"),
        (attr::FLOW_ROLE, "client"),
    ];
    agent.wait_for(20, "the loopback lookups", |p| count(p, DUR, &any) >= N);
    agent.settle(2);
    // Every receiver captures every namespace, but only this test asks
    // 127.0.0.1.
    assert_eq!(
        count(&agent.points, DUR, &any),
        N,
        "{:#?}",
        summary(&agent.points)
    );
    assert_eq!(count(&agent.points, DUR, &client), N);
    agent.stop();
}

/// Runs every file of the hostile corpus through the parser and the engine
/// (as a UDP query, a UDP response and a TCP stream): none panics, every
/// `bad-*` file is one parse error, every `ok-*` file parses.
#[test]
fn hostile_corpus_is_counted_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dns_packet");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in std::fs::read_dir(&dir).expect("corpus dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(e.path()).expect("read"));
    }
    let bad = files.keys().filter(|n| n.starts_with("bad-")).count() as u64;
    assert!(bad >= 10, "corpus has {bad} hostile files");
    let t = Telemetry::new();
    let settings = EngineSettings {
        timeout: Duration::from_secs(5),
        max_outstanding: 1024,
        top_k: 10,
        buckets: Arc::from(flowscope_model::hist::DNS_BOUNDS),
        max_tcp_streams: 64,
    };
    let names = Arc::new(DnsNames::new(64, Duration::ZERO));
    let mut engine = Engine::new(
        settings,
        t.clone(),
        names,
        Box::new(FixedOwner(Arc::new(Attrs::new()))),
    );
    let c = "198.18.0.2:40000".parse().expect("addr");
    let s = "198.18.0.1:53".parse().expect("addr");
    let mut port = 1000u16;
    for (name, bytes) in &files {
        let parsed = message::parse(bytes);
        if name.starts_with("ok-") {
            assert!(parsed.is_ok(), "{name}: {parsed:?}");
        } else {
            assert!(parsed.is_err(), "{name} parsed: {parsed:?}");
        }
        // Also as a raw packet, a UDP query/response and a TCP stream.
        let feed = |e: &mut Engine, data: &[u8], direction| {
            e.on_packet(&Captured {
                netns: 1,
                ts_ns: 1,
                direction,
                loopback: false,
                data,
            })
        };
        feed(&mut engine, bytes, Direction::Incoming);
        feed(&mut engine, &build::udp(c, s, bytes), Direction::Outgoing);
        feed(&mut engine, &build::udp(s, c, bytes), Direction::Incoming);
        port += 1;
        let tc = std::net::SocketAddr::new(c.ip(), port);
        let mut framed = (bytes.len().min(65535) as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        feed(
            &mut engine,
            &build::tcp(tc, s, 0, 0x02, &[]),
            Direction::Outgoing,
        );
        for (i, chunk) in framed.chunks(7).enumerate() {
            feed(
                &mut engine,
                &build::tcp(tc, s, 1 + 7 * i as u32, 0x18, chunk),
                Direction::Outgoing,
            );
        }
    }
    // Each bad file fails three times as a message (UDP query, UDP
    // response, TCP); as a raw IP packet it is not even a packet.
    let parse_errors = t.total(
        EVENTS_LOST,
        &Attrs::new()
            .with(attr::REASON, "parse_error")
            .with(attr::SOURCE, "dns"),
    );
    let raw_ok = files
        .values()
        .filter(|b| flowscope_receiver::dns::packet::decode(b).is_ok())
        .count() as u64;
    assert_eq!(raw_ok, 0, "no corpus file is a valid IP packet");
    assert_eq!(parse_errors, 3 * bad + files.len() as u64);
    engine.expire(u64::MAX);
    let _ = engine.finish();
}

/// A namespace created after the receiver started gets a capture socket at
/// the next rescan; a deleted one has its socket closed (which also lets
/// the kernel free the namespace).
#[test]
fn namespaces_are_picked_up_and_dropped() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the DNS tests need root");
    let receiver = DnsReceiver::start_with(test_settings(), &Context::default()).expect("start");
    let name = format!("fsdns-{}-late", std::process::id());
    run(&["ip", "netns", "add", &name]);
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let guard = Del(name.clone());
    let inode = Pair::inode(&name);
    let wait = |want: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.namespaces().contains(&inode) != want {
            assert!(
                Instant::now() < deadline,
                "namespace {inode} open={} after 10 s",
                !want
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(true);
    drop(guard);
    wait(false);
}

/// The lookups lost their owner (`flowscope.events.lost{reason=owner_unknown}`).
fn owner_unknown(t: &Telemetry) -> u64 {
    t.total(
        EVENTS_LOST,
        &Attrs::new()
            .with(attr::SOURCE, "dns")
            .with(attr::REASON, "owner_unknown"),
    )
}

/// A DNS query for `name` (type A, class IN, recursion desired).
fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A steady load of lookups from a thread of this process inside
/// namespace `ns`: `rate` queries per second for `name` on one UDP socket,
/// connected or (`sendto`, as musl's resolver does) not, answers read as
/// they come. Stopped (and its counts
/// returned: sent, answered) by [`Load::stop`].
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Load {
    fn start(ns: &str, server: &str, name: &'static str, rate: u32, connected: bool) -> Load {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
        let server = format!("{server}:53");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            if connected {
                sock.connect(&server).expect("connect");
            }
            sock.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).ok();
            let every = Duration::from_secs(1) / rate;
            let (mut sent, mut answered) = (0u64, 0u64);
            let mut next = Instant::now();
            let mut buf = [0u8; 512];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                while Instant::now() >= next {
                    let q = query_bytes(sent as u16, name);
                    let r = if connected {
                        sock.send(&q)
                    } else {
                        sock.send_to(&q, &server)
                    };
                    if r.is_ok() {
                        sent += 1;
                    }
                    next += every;
                }
                while sock.recv(&mut buf).is_ok() {
                    answered += 1;
                }
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            while answered < sent && Instant::now() < deadline {
                match sock.recv(&mut buf) {
                    Ok(_) => answered += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            (sent, answered)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("load socket ready");
        Load {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `n` dig processes started at once in `ns`, each with `service` as its
/// OTEL_SERVICE_NAME and `args`; waits until every one exited and checks
/// that each got NOERROR.
fn digs_at_once(ns: &str, service: &str, n: usize, args: &[&str]) {
    let children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new("ip")
                .args(["netns", "exec", ns, "env"])
                .arg(format!("OTEL_SERVICE_NAME={service}"))
                .arg("dig")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dig (install with scripts/bootstrap.sh --test)")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("dig");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("status: NOERROR"), "{text}");
    }
}

/// Issue 22: 50 lookups by 50 dig processes that exit as soon as they have
/// their answer, started together while another client makes 1,000
/// lookups per second: every one is attributed to its service, exactly,
/// none to unknown_service. The load's socket is unconnected with the
/// classic tracepoint (the sock_addr programs name it a DNS socket).
fn short_lived_clients_under_load(n: u8, tcp: bool, classic: bool) {
    let mut pair = Pair::new(n);
    pair.start_dnsmasq();
    let mut settings = test_settings();
    settings.classic_tracepoint = classic;
    let mut agent = Agent::start(settings, &[&pair.a, &pair.b]);
    let want = if classic {
        Hooks::Tracepoints
    } else {
        Hooks::BtfTracepoints
    };
    assert_eq!(agent.hooks, Some(want), "owner programs attached");
    let s = pair.server();
    let s_static: &'static str = Box::leak(s.clone().into_boxed_str());
    let load = Load::start(&pair.b, &s, "load.known.test", 1000, !classic);
    std::thread::sleep(Duration::from_millis(300));
    const N: u64 = 50;
    let at = format!("@{s}");
    let mut args = vec!["+tries=1", "+time=5", &at, "short.known.test", "A"];
    if tcp {
        args.insert(0, "+tcp");
    }
    digs_at_once(&pair.b, "short-dig", N as usize, &args);
    std::thread::sleep(Duration::from_millis(300));
    let (sent, answered) = load.stop();
    assert!(sent >= 500, "the load sent {sent} queries");
    let transport = if tcp { "tcp" } else { "udp" };
    let short = [
        (attr::FLOW_ROLE, "client"),
        (attr::SERVER_ADDRESS, s_static),
        (attr::NETWORK_TRANSPORT, transport),
        (attr::DNS_QUESTION_NAME, "short.known.test"),
    ];
    let load_f = [
        (attr::FLOW_ROLE, "client"),
        (attr::SERVER_ADDRESS, s_static),
        (attr::DNS_QUESTION_NAME, "load.known.test"),
        (attr::DNS_RESPONSE_CODE, "NOERROR"),
    ];
    agent.wait_for(30, "the short-lived clients' lookups", |p| {
        count(p, DUR, &short) >= N && count(p, DUR, &load_f) >= answered
    });
    agent.settle(2);
    let p = &agent.points;
    let by = |svc: &str, f: &[(&str, &str)]| -> u64 {
        p.iter()
            .filter(|pt| pt.resource.get_str("service.name") == Some(svc))
            .map(|pt| count(std::slice::from_ref(pt), DUR, f))
            .sum()
    };
    assert_eq!(count(p, DUR, &short), N, "{:#?}", summary(p));
    assert_eq!(by("short-dig", &short), N, "{:#?}", summary(p));
    // The load's lookups are the test process's (named after its
    // executable), every one.
    let me = std::env::current_exe().expect("exe");
    let me = me.file_name().expect("name").to_string_lossy().into_owned();
    assert_eq!(count(p, DUR, &load_f), answered);
    assert_eq!(by(&me, &load_f), answered, "{:#?}", summary(p));
    assert_eq!(by("unknown_service", &[]), 0, "{:#?}", summary(p));
    assert_eq!(owner_unknown(&agent.telemetry), 0);
    agent.stop();
}

#[test]
fn short_lived_udp_clients_keep_their_service_under_load() {
    short_lived_clients_under_load(6, false, false);
}

#[test]
fn short_lived_tcp_clients_keep_their_service_under_load() {
    short_lived_clients_under_load(7, true, false);
}

/// The same with the classic-tracepoint owner program (the fallback where
/// BTF-typed raw tracepoints do not load).
#[test]
fn short_lived_clients_with_the_classic_tracepoint() {
    short_lived_clients_under_load(8, false, true);
}

/// Two clients with the same source port in two namespaces, each its own
/// service: `app-in-b` asks dnsmasq across the veth from namespace b,
/// `app-in-a` asks it over loopback in namespace a, both from port 40053,
/// at the same moment, five times. Each lookup is its own client's.
#[test]
fn same_source_port_in_two_namespaces_is_two_clients() {
    let mut pair = Pair::new(9);
    pair.start_dnsmasq();
    let mut agent = Agent::start(test_settings(), &[&pair.a, &pair.b]);
    let s = pair.server();
    let s_static: &'static str = Box::leak(s.clone().into_boxed_str());
    const N: u64 = 5;
    let (at, from_b) = (format!("@{s}"), format!("{}#40053", pair.client()));
    for _ in 0..N {
        let spawn = |ns: &str, svc: &str, args: &[&str]| {
            Command::new("ip")
                .args(["netns", "exec", ns, "env"])
                .arg(format!("OTEL_SERVICE_NAME={svc}"))
                .arg("dig")
                .args(["+tries=1", "+time=3"])
                .args(args)
                .stdout(Stdio::piped())
                .spawn()
                .expect("dig")
        };
        let b = spawn(
            &pair.b,
            "app-in-b",
            &["-b", &from_b, &at, "port.known.test"],
        );
        let a = spawn(
            &pair.a,
            "app-in-a",
            &["-b", "127.0.0.1#40053", "@127.0.0.1", "port.known.test"],
        );
        for c in [a, b] {
            let out = c.wait_with_output().expect("dig");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("status: NOERROR"), "{text}");
        }
    }
    let f = |server: &'static str| {
        [
            (attr::FLOW_ROLE, "client"),
            (attr::SERVER_ADDRESS, server),
            (attr::DNS_QUESTION_NAME, "port.known.test"),
        ]
    };
    agent.wait_for(20, "both clients' lookups", |p| {
        count(p, DUR, &f(s_static)) >= N && count(p, DUR, &f("127.0.0.1")) >= N
    });
    agent.settle(2);
    let p = &agent.points;
    let by = |svc: &str, server: &'static str| -> u64 {
        p.iter()
            .filter(|pt| pt.resource.get_str("service.name") == Some(svc))
            .map(|pt| count(std::slice::from_ref(pt), DUR, &f(server)))
            .sum()
    };
    assert_eq!(by("app-in-b", s_static), N, "{:#?}", summary(p));
    assert_eq!(by("app-in-a", "127.0.0.1"), N, "{:#?}", summary(p));
    assert_eq!(count(p, DUR, &f(s_static)), N);
    assert_eq!(count(p, DUR, &f("127.0.0.1")), N);
    assert_eq!(owner_unknown(&agent.telemetry), 0);
    agent.stop();
}
