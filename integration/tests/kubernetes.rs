//! The `kubernetes` processor end to end: real processes in real cgroup v2
//! directories laid out as the kubelet lays them out (systemd and cgroupfs
//! drivers), real TCP between test namespaces, and a local HTTPS server
//! answering as the kubelet (`/pods`) and as the API server (pods,
//! Services, ReplicaSets; list and watch) from fixtures in the exact shape
//! of the Kubernetes API (`tests/k8s_fixtures/`).
//!
//! Checked exactly: the processes' flows carry their pod, namespace,
//! container, node and Deployment (a pod the kubelet's first answer did not
//! list asks for a new read and is named from it); a connection to another fixture pod's IP
//! names that pod's workload, one to a Service IP the Service; after the
//! watch sends DELETED for that pod, new flows to it are not named; a
//! watch the server ends resumes from the last bookmark's version; a
//! watch ended with 410 Gone makes the agent list again; and
//! kubelets that answer garbage, are down, or never answer each cost one
//! warning and one `flowscope.events.lost` while flows go on; an API server
//! that answers 403 costs one warning for its three collections, and the
//! kubelet alone still names the local pods.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowscope_integration::{Agent, NetPair, Point, read_points, sum, traffic};
use flowscope_model::names::{attr, k8s, metric, resource};
use flowscope_otel_config::processors::{KubernetesProcessorConfig, ProcessorConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const WEB_UID: &str = "8f3c2a1e-5b6d-4c7e-9f80-1a2b3c4d5e6f";
const WEB_CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const CHECKOUT_UID: &str = "4a5b6c7d-8e9f-4a0b-9c1d-2e3f4a5b6c7d";
const CHECKOUT_CONTAINER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const TOKEN: &str = "flowscope-test-token";

const SOURCE_KUBELET: &str = "kubernetes.kubelet";
const SOURCE_API: &str = "kubernetes.api";

// ---------------------------------------------------------------- cgroups

/// The cgroup v2 mount point, from /proc/self/mountinfo (/sys/fs/cgroup on
/// unified hosts, /sys/fs/cgroup/unified on hybrid ones).
fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next() != Some("cgroup2") {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("no cgroup2 mount in /proc/self/mountinfo")
}

/// A test-made cgroup with pod cgroups below it; removed on drop (its
/// processes moved back to the root first).
struct TestCgroups {
    root: PathBuf,
    top: PathBuf,
}

impl TestCgroups {
    fn new() -> Self {
        let root = cgroup2_root();
        let top = root.join(format!("flowscope-k8s-{}", std::process::id()));
        std::fs::create_dir_all(&top).expect("creating the test cgroup");
        TestCgroups { root, top }
    }

    /// Creates `rel` (a path of cgroups) under the test cgroup.
    fn leaf(&self, rel: &str) -> PathBuf {
        let p = self.top.join(rel);
        std::fs::create_dir_all(&p).expect("creating a pod cgroup");
        p
    }

    fn remove(dir: &Path, root: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    Self::remove(&e.path(), root);
                }
            }
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        Self::remove(&self.top, &self.root);
    }
}

// ---------------------------------------------------- kubelet and API server

/// What a fake server answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Kubelet and API server from the fixtures.
    Good,
    /// `200 OK` with a body that is not JSON.
    Garbage,
    /// Accepts, reads the request, never answers.
    Silent,
    /// A kubelet from the fixtures, but an API server that forbids
    /// everything (the ClusterRole is missing): 403 with a `v1.Status`.
    Forbidden,
}

struct Fixtures {
    /// The kubelet's first answer (before the checkout pod started).
    kubelet_first: String,
    kubelet: String,
    pods: String,
    services: String,
    replicasets: String,
}

/// One HTTPS listener on 127.0.0.1 answering in `mode`. Pod watch events
/// come from `events`, each delivered once (to the watch open when it is
/// pushed), as a real API server's watch from a list's version would.
struct Fake {
    port: u16,
}

#[derive(Clone)]
struct Shared {
    fixtures: Arc<Fixtures>,
    events: tokio::sync::watch::Receiver<Vec<String>>,
    delivered: Arc<std::sync::atomic::AtomicUsize>,
    /// `/pods` requests the good kubelet answered.
    kubelet_reads: Arc<std::sync::atomic::AtomicUsize>,
    /// (path and query, had the right bearer token)
    requests: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Shared {
    /// What the fake servers serve, with the watch events they stream
    /// from `events`; nothing delivered or requested yet.
    fn new(fixtures: Fixtures, events: tokio::sync::watch::Receiver<Vec<String>>) -> Self {
        Shared {
            fixtures: Arc::new(fixtures),
            events,
            delivered: Default::default(),
            kubelet_reads: Default::default(),
            requests: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

fn tls(dir: &Path) -> TlsAcceptor {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "flowscope test cluster CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

impl Fake {
    async fn start(mode: Mode, acceptor: TlsAcceptor, shared: Shared) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    return;
                };
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        let _ = serve(s, mode, shared).await;
                    }
                });
            }
        });
        Fake { port }
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    mode: Mode,
    shared: Shared,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() > 65536 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let authorized = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("authorization") && v.trim() == format!("Bearer {TOKEN}")
        })
    });
    if mode == Mode::Good {
        shared
            .requests
            .lock()
            .unwrap()
            .push((target.clone(), authorized));
    }
    match mode {
        Mode::Silent => {
            // Hold the connection until the client gives up.
            let _ = s.read(&mut buf).await;
            return Ok(());
        }
        Mode::Garbage => return respond(&mut s, 200, "<html>upstream went away</html>").await,
        Mode::Forbidden if target == "/pods" => {
            return respond(&mut s, 200, &shared.fixtures.kubelet).await;
        }
        Mode::Forbidden => {
            let what = target
                .split('?')
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("");
            let status = format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{what} is forbidden: User \"system:serviceaccount:flowscope:flowscope\" cannot list resource \"{what}\" in API group \"\" at the cluster scope","reason":"Forbidden","details":{{"kind":"{what}"}},"code":403}}"#
            );
            return respond(&mut s, 403, &status).await;
        }
        Mode::Good => {}
    }
    if !authorized {
        let status = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
        return respond(&mut s, 401, status).await;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let watch = query.split('&').any(|kv| kv == "watch=1");
    let f = &shared.fixtures;
    let body = match path {
        "/pods" if shared.kubelet_reads.fetch_add(1, Ordering::SeqCst) == 0 => {
            f.kubelet_first.as_str()
        }
        "/pods" => f.kubelet.as_str(),
        "/api/v1/pods" if watch => {
            return stream(&mut s, shared.events.clone(), shared.delivered.clone()).await;
        }
        "/api/v1/services" | "/apis/apps/v1/replicasets" if watch => {
            let (_tx, rx) = tokio::sync::watch::channel(Vec::new());
            // Nothing changes; the channel's sender is gone, so the stream
            // just holds until the client leaves.
            return stream(&mut s, rx, Default::default()).await;
        }
        "/api/v1/pods" => f.pods.as_str(),
        "/api/v1/services" => f.services.as_str(),
        "/apis/apps/v1/replicasets" => f.replicasets.as_str(),
        _ => {
            let status = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;
            return respond(&mut s, 404, status).await;
        }
    };
    respond(&mut s, 200, body).await
}

async fn respond<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.flush().await?;
    s.shutdown().await
}

/// Pushed as an event, ends the watch that takes it.
const END_WATCH: &str = "END";

/// A watch: chunked JSON lines, the events of `events` not yet
/// `delivered`, then new ones, until [`END_WATCH`].
async fn stream<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    mut events: tokio::sync::watch::Receiver<Vec<String>>,
    delivered: Arc<std::sync::atomic::AtomicUsize>,
) -> std::io::Result<()> {
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await?;
    s.flush().await?;
    loop {
        let now: Vec<String> = events.borrow_and_update().clone();
        let sent = delivered.load(Ordering::SeqCst).min(now.len());
        for (i, line) in now.iter().enumerate().skip(sent) {
            if line == END_WATCH {
                // The server ends the watch (as at its timeoutSeconds).
                delivered.store(i + 1, Ordering::SeqCst);
                s.write_all(b"0\r\n\r\n").await?;
                s.flush().await?;
                return s.shutdown().await;
            }
            let chunk = format!("{}\n", line.trim());
            s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                .await?;
        }
        delivered.store(now.len(), Ordering::SeqCst);
        s.flush().await?;
        if events.changed().await.is_err() {
            // Hold until the client closes.
            std::future::pending::<()>().await;
        }
    }
}

// ------------------------------------------------------------------ the test

fn fixture(name: &str, vars: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/k8s_fixtures")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in vars {
        text = text.replace(k, v);
    }
    text
}

fn fixtures(vars: &[(&str, &str)]) -> Fixtures {
    let kubelet = fixture("kubelet-pods.json", vars);
    // The first answer lists web only: checkout's first flows name a pod
    // the kubelet has not reported yet, which asks for a new read.
    let mut first: serde_json::Value = serde_json::from_str(&kubelet).unwrap();
    first["items"].as_array_mut().unwrap().truncate(1);
    Fixtures {
        kubelet_first: first.to_string(),
        kubelet,
        pods: fixture("api-pods.json", vars),
        services: fixture("api-services.json", vars),
        replicasets: fixture("api-replicasets.json", vars),
    }
}

fn items(json: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["items"].as_array().unwrap().len()
}

fn total(points: &[Point], metric: &str, source: &str, reason: Option<&str>) -> f64 {
    let mut f = vec![(attr::SOURCE, source)];
    if let Some(r) = reason {
        f.push((attr::REASON, r));
    }
    sum(points, metric, &f)
}

/// One exchange: a server in `a` on `addr`, a client in `b` moved into
/// `cgroup` before it runs: the shell waits for a line on its stdin while
/// the test writes its pid to the cgroup's `cgroup.procs` (from here:
/// `ip netns exec` mounts its own /sys, without the cgroup mounts), then
/// becomes the client. The client lingers so /proc stays readable.
fn exchange_in(pair: &NetPair, cgroup: &Path, addr: &str, up: u64, down: u64) {
    let t = traffic();
    let (up, down) = (up.to_string(), down.to_string());
    let server = pair
        .serve(&pair.a, &[&t, "tcp-server", addr, &up, &down])
        .unwrap();
    let script = format!("read go && exec {t} tcp-client {addr} {up} {down}");
    // `ip netns exec` execs the command itself: the child's pid is the
    // shell's, and then the client's.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &pair.b, "sh", "-c", &script])
        .env("FLOWSCOPE_TRAFFIC_LINGER_MS", "1500")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string())
        .expect("moving the client into its pod cgroup");
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), child.id().to_string());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.finish().unwrap();
}

/// The client's transmit bytes to `peer` from the pod `uid`, and the
/// points themselves.
fn client_points<'a>(points: &'a [Point], uid: &str, peer: &str, port: &str) -> Vec<&'a Point> {
    points
        .iter()
        .filter(|p| {
            p.metric == metric::FLOW_IO.0
                && p.resource.get(resource::K8S_POD_UID).map(String::as_str) == Some(uid)
                && p.attr(attr::PEER_ADDRESS) == Some(peer)
                && p.attr(attr::PEER_PORT) == Some(port)
                && p.attr(attr::IO_DIRECTION) == Some(attr::TRANSMIT)
        })
        .collect()
}

fn sent(points: &[&Point]) -> f64 {
    points.iter().map(|p| p.value).sum()
}

#[test]
fn pods_workloads_and_peers_from_kubelet_and_api_server() {
    let pair = NetPair::new().unwrap();
    let (api_ip, web_ip) = (pair.a_v4(), pair.b_v4());
    // A Service ClusterIP, answered by namespace a (on its loopback).
    let svc_ip = format!("198.18.{}.10", pair.n);
    pair.run(
        &pair.a,
        &[],
        &["ip", "addr", "add", &format!("{svc_ip}/32"), "dev", "lo"],
    )
    .unwrap();
    let checkout_ip = format!("198.18.{}.20", pair.n);
    let vars = [
        ("@WEB_IP@", web_ip.as_str()),
        ("@API_IP@", api_ip.as_str()),
        ("@SVC_IP@", svc_ip.as_str()),
        ("@CHECKOUT_IP@", checkout_ip.as_str()),
        ("@NODE_IP@", web_ip.as_str()),
    ];
    let fixtures = fixtures(&vars);
    let listed = items(&fixtures.pods) + items(&fixtures.services) + items(&fixtures.replicasets);
    let (first_pods, local_pods) = (items(&fixtures.kubelet_first), items(&fixtures.kubelet));
    let deleted = fixture("api-pods-deleted.json", &vars);
    let expired = fixture("api-pods-expired.json", &vars);
    let bookmark = fixture("api-pods-bookmark.json", &vars);
    let pods_listed = items(&fixtures.pods);

    // Pod cgroups: web under the systemd driver's names, checkout under
    // cgroupfs's.
    let cgroups = TestCgroups::new();
    let web_cg = cgroups.leaf(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{WEB_CONTAINER}.scope",
        WEB_UID.replace('-', "_")
    ));
    let checkout_cg = cgroups.leaf(&format!(
        "kubepods/burstable/pod{CHECKOUT_UID}/{CHECKOUT_CONTAINER}"
    ));

    let secrets = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (events_tx, events_rx) = tokio::sync::watch::channel(Vec::<String>::new());
    let shared = Shared::new(fixtures, events_rx);
    let acceptor = tls(secrets.path());
    let (good, forbidden, garbage, silent) = rt.block_on(async {
        (
            Fake::start(Mode::Good, acceptor.clone(), shared.clone()).await,
            Fake::start(Mode::Forbidden, acceptor.clone(), shared.clone()).await,
            Fake::start(Mode::Garbage, acceptor.clone(), shared.clone()).await,
            Fake::start(Mode::Silent, acceptor.clone(), shared.clone()).await,
        )
    });
    // A port nothing listens on: the kubelet is down.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let dir = secrets.path().display().to_string();
    let failing = |name: &str, port: u16| {
        format!(
            "  kubernetes/{name}:\n    kubelet: {{endpoint: \"https://127.0.0.1:{port}\", refresh_interval: 1h, min_refresh_interval: 1h}}\n    api: {{enabled: false}}\n    token_path: {dir}/token\n    ca_file: {dir}/ca.crt\n    timeout: 500ms\n"
        )
    };
    let config = format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         processors:\n  kubernetes:\n    kubelet: {{endpoint: \"https://127.0.0.1:{g}\", refresh_interval: 1h, min_refresh_interval: 1s}}\n    api: {{endpoint: \"https://127.0.0.1:{g}\"}}\n    token_path: {dir}/token\n    ca_file: {dir}/ca.crt\n    cluster_name: lab\n{}{}{}\
         \x20 kubernetes/noapi:\n    kubelet: {{endpoint: \"https://127.0.0.1:{f}\", refresh_interval: 1h, min_refresh_interval: 1h}}\n    api: {{endpoint: \"https://127.0.0.1:{f}\", backoff: 1h, max_backoff: 1h}}\n    token_path: {dir}/token\n    ca_file: {dir}/ca.crt\n\
         exporters:\n  file:\n    path: OUTPUT\n  file/noapi:\n    path: OUTPUT.noapi\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [kubernetes, kubernetes/garbage, kubernetes/down, kubernetes/silent]\n      exporters: [file]\n\
         \x20   metrics/noapi:\n      receivers: [ebpf]\n      processors: [kubernetes/noapi]\n      exporters: [file/noapi]\n",
        failing("garbage", garbage.port),
        failing("down", down),
        failing("silent", silent.port),
        g = good.port,
        f = forbidden.port,
    );
    let agent = Agent::start_with(&config).unwrap();

    // The kubelet's pods and the API server's lists are in before any
    // traffic: counted as received by the agent itself.
    agent.wait_for(
        "the kubelet's and the API server's answers",
        Duration::from_secs(60),
        |p| {
            // The good kubelet's first answer, and noapi's kubelet (all).
            (total(p, metric::EVENTS_RECEIVED.0, SOURCE_KUBELET, None)
                == (first_pods + local_pods) as f64
                && total(p, metric::EVENTS_RECEIVED.0, SOURCE_API, None) == listed as f64)
                .then_some(())
        },
    );

    let (p1, p2, p3) = (7101 + pair.n, 7301 + pair.n, 7501 + pair.n);
    let p2b = 7901 + pair.n;
    // web -> the api pod; checkout -> the Service IP, before the kubelet
    // reported checkout.
    exchange_in(&pair, &web_cg, &format!("{api_ip}:{p1}"), 3000, 100);
    exchange_in(&pair, &checkout_cg, &format!("{svc_ip}:{p2}"), 4000, 100);
    let (p1s, p2s, p3s) = (p1.to_string(), p2.to_string(), p3.to_string());
    let p2bs = p2b.to_string();
    let points = agent.wait_for(
        "both pods' flows and a new kubelet read",
        Duration::from_secs(60),
        |p| {
            (sent(&client_points(p, WEB_UID, &api_ip, &p1s)) == 3000.0
                && sent(&client_points(p, CHECKOUT_UID, &svc_ip, &p2s)) == 4000.0
                && total(p, metric::EVENTS_RECEIVED.0, SOURCE_KUBELET, None)
                    >= (first_pods + 2 * local_pods) as f64)
                .then(|| p.to_vec())
        },
    );
    // checkout's first batch was named from the first answer, which did not
    // list it: the pod UID without names (and the read it asked for).
    let early = client_points(&points, CHECKOUT_UID, &svc_ip, &p2s);
    let first_time = early.iter().map(|p| p.time).min().unwrap();
    for p in early.iter().filter(|p| p.time == first_time) {
        assert_eq!(p.resource.get(k8s::POD_NAME), None, "{p:?}");
        assert_eq!(p.attr(attr::PEER_SERVICE_NAME), Some("api-http"));
    }
    exchange_in(&pair, &checkout_cg, &format!("{svc_ip}:{p2b}"), 4000, 100);
    let points = agent.wait_for("checkout's second flow", Duration::from_secs(60), |p| {
        (sent(&client_points(p, CHECKOUT_UID, &svc_ip, &p2bs)) == 4000.0).then(|| p.to_vec())
    });

    // Every point of the web pod's flow names pod, container, node and
    // Deployment (from the pod-template-hash rule: its ReplicaSet is not
    // listed), and the api pod as the peer (its Deployment from its
    // ReplicaSet as listed).
    let web = client_points(&points, WEB_UID, &api_ip, &p1s);
    assert!(!web.is_empty());
    for p in &web {
        let r = |k: &str| p.resource.get(k).map(String::as_str);
        assert_eq!(r(k8s::NAMESPACE_NAME), Some("shop"), "{p:?}");
        assert_eq!(r(k8s::POD_NAME), Some("web-7d4b9c6f8-x2k9p"));
        assert_eq!(r(k8s::CONTAINER_NAME), Some("nginx"));
        assert_eq!(r(k8s::CONTAINER_RUNTIME_NAME), Some("nginx"));
        assert_eq!(r(resource::CONTAINER_ID), Some(WEB_CONTAINER));
        assert_eq!(r(k8s::NODE_NAME), Some("node-1"));
        assert_eq!(r(k8s::DEPLOYMENT_NAME), Some("web"));
        assert_eq!(r(k8s::CLUSTER_NAME), Some("lab"));
        assert_eq!(p.attr(attr::PEER_SERVICE_NAME), Some("api"));
        assert_eq!(p.attr(k8s::PEER_SERVICE_NAMESPACE), Some("shop"));
        assert_eq!(p.attr(k8s::PEER_POD_NAME), Some("api-5c8d9e7f6-m3n4b"));
        assert_eq!(p.attr(k8s::PEER_NAMESPACE_NAME), Some("shop"));
    }
    // checkout (cgroupfs names): its Deployment only the API's ReplicaSet
    // names (no pod-template-hash label); the peer is the Service.
    let checkout = client_points(&points, CHECKOUT_UID, &svc_ip, &p2bs);
    assert!(!checkout.is_empty());
    for p in &checkout {
        let r = |k: &str| p.resource.get(k).map(String::as_str);
        assert_eq!(r(k8s::POD_NAME), Some("checkout-7f9c6d5b4-q2w3e"), "{p:?}");
        assert_eq!(r(k8s::CONTAINER_NAME), Some("checkout"));
        assert_eq!(r(k8s::DEPLOYMENT_NAME), Some("checkout"));
        assert_eq!(p.attr(attr::PEER_SERVICE_NAME), Some("api-http"));
        assert_eq!(p.attr(k8s::PEER_SERVICE_NAMESPACE), Some("shop"));
        assert_eq!(p.attr(k8s::PEER_POD_NAME), None, "a Service is not a pod");
    }
    // The server side (outside any pod) sees the web pod as its peer.
    let server_side = sum(
        &points,
        metric::FLOW_IO.0,
        &[
            (attr::PEER_ADDRESS, web_ip.as_str()),
            (attr::LOCAL_PORT, p1s.as_str()),
            (attr::IO_DIRECTION, attr::RECEIVE),
            (attr::PEER_SERVICE_NAME, "web"),
            (k8s::PEER_POD_NAME, "web-7d4b9c6f8-x2k9p"),
        ],
    );
    assert_eq!(server_side, 3000.0);

    // The api pod is deleted: once the agent has the event, new flows to
    // its address are no longer named.
    events_tx.send_modify(|e| e.push(deleted));
    agent.wait_for("the DELETED event", Duration::from_secs(60), |p| {
        (total(p, metric::EVENTS_RECEIVED.0, SOURCE_API, None) == (listed + 1) as f64).then_some(())
    });
    exchange_in(&pair, &web_cg, &format!("{api_ip}:{p3}"), 5000, 100);
    let points = agent.wait_for("the flow after the delete", Duration::from_secs(60), |p| {
        (sent(&client_points(p, WEB_UID, &api_ip, &p3s)) == 5000.0).then(|| p.to_vec())
    });
    for p in client_points(&points, WEB_UID, &api_ip, &p3s) {
        assert_eq!(p.attr(attr::PEER_SERVICE_NAME), None, "{p:?}");
        assert_eq!(p.attr(k8s::PEER_POD_NAME), None);
        assert_eq!(p.attr(k8s::PEER_SERVICE_NAMESPACE), None);
        assert_eq!(
            p.resource.get(k8s::POD_NAME).map(String::as_str),
            Some("web-7d4b9c6f8-x2k9p"),
            "the local pod is still named"
        );
    }

    // A bookmark moves the watch's version; the server then ends the
    // watch, and the agent watches again from the bookmark's version.
    events_tx.send_modify(|e| {
        e.push(bookmark);
        e.push(END_WATCH.to_owned());
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !shared
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|(t, _)| t.starts_with("/api/v1/pods?watch=1") && t.contains("resourceVersion=60200"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no watch from the bookmark's version: {:?}",
            shared.requests.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The watch ends with 410 Gone: the agent lists the pods again (the
    // list still has the api pod) and names it again.
    events_tx.send_modify(|e| e.push(expired));
    agent.wait_for("the relist after 410", Duration::from_secs(60), |p| {
        (total(p, metric::EVENTS_RECEIVED.0, SOURCE_API, None) == (listed + 1 + pods_listed) as f64)
            .then_some(())
    });
    let p4 = 7701 + pair.n;
    let p4s = p4.to_string();
    exchange_in(&pair, &web_cg, &format!("{api_ip}:{p4}"), 6000, 100);
    let points = agent.wait_for("the flow after the relist", Duration::from_secs(60), |p| {
        (sent(&client_points(p, WEB_UID, &api_ip, &p4s)) == 6000.0).then(|| p.to_vec())
    });
    for p in client_points(&points, WEB_UID, &api_ip, &p4s) {
        assert_eq!(
            p.attr(k8s::PEER_POD_NAME),
            Some("api-5c8d9e7f6-m3n4b"),
            "{p:?}"
        );
        assert_eq!(p.attr(attr::PEER_SERVICE_NAME), Some("api"));
    }
    let pod_lists = shared
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.starts_with("/api/v1/pods?limit="))
        .count();
    assert_eq!(pod_lists, 2, "one list at start, one after 410");
    let pod_watches: Vec<String> = shared
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.starts_with("/api/v1/pods?watch=1"))
        .map(|(t, _)| t.split("resourceVersion=").nth(1).unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        pod_watches,
        ["60000", "60200", "60000"],
        "from the list, from the bookmark, from the list after 410"
    );

    // Each failing kubelet was asked once (refresh 1h): one loss each, by
    // reason, and one warning each; the good servers lost nothing.
    let lost = |source, reason| total(&points, metric::EVENTS_LOST.0, source, Some(reason));
    assert_eq!(lost(SOURCE_KUBELET, "parse_error"), 1.0);
    assert_eq!(lost(SOURCE_KUBELET, "unreachable"), 1.0);
    assert_eq!(lost(SOURCE_KUBELET, "timeout"), 1.0);
    assert_eq!(
        total(&points, metric::EVENTS_LOST.0, SOURCE_KUBELET, None),
        3.0
    );
    // The API server that forbids: each collection failed once (backoff
    // 1h), one warning for the three; the good API server lost nothing.
    assert_eq!(lost(SOURCE_API, "http_error"), 3.0);
    assert_eq!(total(&points, metric::EVENTS_LOST.0, SOURCE_API, None), 3.0);
    let log = std::fs::read_to_string(agent.dir.path().join("agent.log")).unwrap();
    for port in [garbage.port, down, silent.port] {
        let needle = format!("kubelet https://127.0.0.1:{port}/pods failed");
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&needle))
            .count();
        assert_eq!(warnings, 1, "{needle}:\n{log}");
    }
    let needle = format!("API server https://127.0.0.1:{} failed", forbidden.port);
    let api_warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&needle))
        .collect();
    assert_eq!(api_warnings.len(), 1, "{needle}:\n{log}");
    assert!(
        api_warnings[0].contains("HTTP 403") && api_warnings[0].contains("are not named"),
        "{}",
        api_warnings[0]
    );
    assert!(!log.contains(&format!(
        "API server https://127.0.0.1:{} failed",
        good.port
    )));

    // Without API access the kubelet still names the local pods: the
    // Deployment from the pod-template-hash rule (web), none for a pod
    // without the label (checkout), and no peer.
    let noapi_path = PathBuf::from(format!("{}.noapi", agent.output.display()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let noapi = loop {
        let p = read_points(&noapi_path);
        if sent(&client_points(&p, WEB_UID, &api_ip, &p1s)) == 3000.0
            && sent(&client_points(&p, CHECKOUT_UID, &svc_ip, &p2bs)) == 4000.0
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "noapi pipeline's flows"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for p in client_points(&noapi, WEB_UID, &api_ip, &p1s) {
        let r = |k: &str| p.resource.get(k).map(String::as_str);
        assert_eq!(r(k8s::POD_NAME), Some("web-7d4b9c6f8-x2k9p"), "{p:?}");
        assert_eq!(r(k8s::CONTAINER_NAME), Some("nginx"));
        assert_eq!(r(k8s::DEPLOYMENT_NAME), Some("web"));
        assert_eq!(p.attr(attr::PEER_SERVICE_NAME), None);
        assert_eq!(p.attr(k8s::PEER_POD_NAME), None);
    }
    for p in client_points(&noapi, CHECKOUT_UID, &svc_ip, &p2bs) {
        let r = |k: &str| p.resource.get(k).map(String::as_str);
        assert_eq!(r(k8s::POD_NAME), Some("checkout-7f9c6d5b4-q2w3e"), "{p:?}");
        assert_eq!(r(k8s::DEPLOYMENT_NAME), None);
        assert_eq!(p.attr(attr::PEER_SERVICE_NAME), None);
    }
    // Every request to the good server carried the service-account token.
    let requests = shared.requests.lock().unwrap().clone();
    let to_good: Vec<_> = requests
        .iter()
        .filter(|(t, _)| t.starts_with("/pods") || t.starts_with("/api"))
        .collect();
    assert!(to_good.iter().all(|(_, auth)| *auth), "{requests:?}");
    assert!(to_good.iter().any(|(t, _)| t.contains("watch=1")));
    drop(agent);
    drop(rt);
    drop(cgroups);
}

/// The processor's client alone (no agent, no root): the kubelet is read
/// again on its timer, and what `api.max_objects` cannot hold is counted.
#[test]
fn kubelet_refresh_timer_and_the_object_bound() {
    let vars = [
        ("@WEB_IP@", "198.18.250.2"),
        ("@API_IP@", "198.18.250.1"),
        ("@SVC_IP@", "198.18.250.10"),
        ("@CHECKOUT_IP@", "198.18.250.20"),
        ("@NODE_IP@", "198.18.250.2"),
    ];
    let fixtures = fixtures(&vars);
    let listed = items(&fixtures.pods) + items(&fixtures.services) + items(&fixtures.replicasets);
    let both = items(&fixtures.kubelet_first) + items(&fixtures.kubelet);
    let secrets = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_events_tx, events_rx) = tokio::sync::watch::channel(Vec::<String>::new());
    let shared = Shared::new(fixtures, events_rx);
    let acceptor = tls(secrets.path());
    let good = rt.block_on(Fake::start(Mode::Good, acceptor, shared.clone()));
    let base = format!("https://127.0.0.1:{}", good.port);
    let mut cfg = KubernetesProcessorConfig::default();
    cfg.kubelet.endpoint = Some(base.clone());
    cfg.kubelet.refresh_interval = Duration::from_secs(1);
    cfg.api.endpoint = Some(base);
    cfg.api.max_objects = 3;
    cfg.token_path = secrets.path().join("token");
    cfg.ca_file = secrets.path().join("ca.crt");
    let ctx = flowscope_model::Context::default();
    let id = "kubernetes".parse().unwrap();
    let processor =
        flowscope_processors::build(&id, &ProcessorConfig::Kubernetes(cfg), &ctx).unwrap();
    let count = |metric, source: &str, reason: Option<&str>| {
        let mut a = flowscope_model::Attrs::new().with(attr::SOURCE, source.to_owned());
        if let Some(r) = reason {
            a.set(attr::REASON, r.to_owned());
        }
        ctx.telemetry.total_matching(metric, &a)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Two kubelet reads (start, then the 1 s timer) with nothing asking
    // for them; the lists all in.
    while count(
        flowscope_model::telemetry::EVENTS_RECEIVED,
        SOURCE_KUBELET,
        None,
    ) < both as u64
        || count(
            flowscope_model::telemetry::EVENTS_RECEIVED,
            SOURCE_API,
            None,
        ) < listed as u64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh on the timer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(shared.kubelet_reads.load(Ordering::SeqCst) >= 2);
    // Three objects held, the rest counted, whichever list came first.
    assert_eq!(
        count(
            flowscope_model::telemetry::EVENTS_LOST,
            SOURCE_API,
            Some("table_full")
        ),
        (listed - 3) as u64
    );
    assert_eq!(
        count(
            flowscope_model::telemetry::EVENTS_LOST,
            SOURCE_KUBELET,
            None
        ),
        0
    );
    drop(processor);
}
