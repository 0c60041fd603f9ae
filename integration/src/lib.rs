//! Harness for flowscope's end-to-end tests: network namespaces joined by a
//! veth pair (addresses from 198.18.0.0/15 and fd00::/8 only), the real
//! agent binary writing OTLP JSON to a temporary file, and readers for that
//! file. Everything is torn down on drop, also when a test fails.
//!
//! These tests need root (CI runs as root). They do not skip: without
//! privileges they fail and say so.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

pub mod mmdb;
pub mod topology;

static NEXT_NET: AtomicU32 = AtomicU32::new(1);

/// Runs a command, failing with its stderr when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(cmd).args(args).output().with_context(|| {
        format!("running {cmd} (is it installed? scripts/bootstrap.sh --test installs it)")
    })?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Fails loudly when not root: these tests must never pass by skipping.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests need root (eBPF, network namespaces); run them with sudo"
    );
}

/// Two network namespaces, `a` and `b`, joined by a veth pair:
/// a = 198.18.N.1/24 and fd00:N::1/64, b = 198.18.N.2/24 and fd00:N::2/64
/// (or in 198.19 and fd19, see [`NetPair::new_apart`]).
pub struct NetPair {
    pub a: String,
    pub b: String,
    pub n: u32,
    /// The first two octets of the IPv4 addresses (`198.18`).
    v4: &'static str,
    /// The first group of the IPv6 addresses (`fd00`).
    v6: &'static str,
}

impl NetPair {
    pub fn new() -> anyhow::Result<Self> {
        Self::with_prefixes("198.18", "fd00")
    }

    /// A pair in 198.19.N.0/24 and fd19:N::/64, addresses no pair of
    /// [`NetPair::new`] has. Every agent sees the traffic of every test
    /// running on the host; a test that asserts on everything under its
    /// own addresses (`?cidr=` of the ui exporter) uses this so that
    /// another test binary whose pair got the same N cannot add to it.
    pub fn new_apart() -> anyhow::Result<Self> {
        Self::with_prefixes("198.19", "fd19")
    }

    fn with_prefixes(v4: &'static str, v6: &'static str) -> anyhow::Result<Self> {
        require_root();
        // N is unique within this process, and the pid keeps names unique
        // between test binaries running at once.
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst) + (std::process::id() % 100) * 2;
        let n = n % 250 + 1;
        let tag = format!("{}{}", std::process::id(), n);
        let pair = NetPair {
            a: format!("fsa{tag}"),
            b: format!("fsb{tag}"),
            n,
            v4,
            v6,
        };
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        sh("ip", &["netns", "add", &pair.a])?;
        sh("ip", &["netns", "add", &pair.b])?;
        sh(
            "ip",
            &["link", "add", &va, "type", "veth", "peer", "name", &vb],
        )?;
        sh("ip", &["link", "set", &va, "netns", &pair.a])?;
        sh("ip", &["link", "set", &vb, "netns", &pair.b])?;
        for (ns, dev, host) in [(&pair.a, &va, 1), (&pair.b, &vb, 2)] {
            let v4 = format!("{v4}.{n}.{host}/24");
            let v6 = format!("{v6}:{n}::{host}/64");
            sh("ip", &["-n", ns, "addr", "add", &v4, "dev", dev])?;
            sh("ip", &["-n", ns, "addr", "add", &v6, "dev", dev, "nodad"])?;
            sh("ip", &["-n", ns, "link", "set", dev, "up"])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    pub fn a_v4(&self) -> String {
        format!("{}.{}.1", self.v4, self.n)
    }
    pub fn b_v4(&self) -> String {
        format!("{}.{}.2", self.v4, self.n)
    }
    pub fn a_v6(&self) -> String {
        format!("{}:{}::1", self.v6, self.n)
    }
    pub fn b_v6(&self) -> String {
        format!("{}:{}::2", self.v6, self.n)
    }
    /// The IPv4 network of both ends (`198.18.N.0/24`).
    pub fn v4_cidr(&self) -> String {
        format!("{}.{}.0/24", self.v4, self.n)
    }

    /// Runs a command inside namespace `ns` and waits for it, failing with
    /// its stderr when it fails.
    pub fn run(&self, ns: &str, envs: &[(&str, &str)], args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .context("ip netns exec")?;
        if !out.status.success() {
            bail!(
                "{} in {ns} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One TCP exchange: a `flowscope-traffic tcp-server` in `a` on `addr`
    /// receives `up` bytes and answers `down`; a client in `b` (with `envs`)
    /// sends and reads them. Fails unless both sides moved exactly that.
    pub fn tcp_exchange(
        &self,
        addr: &str,
        up: u64,
        down: u64,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let t = traffic();
        let (up, down) = (up.to_string(), down.to_string());
        let server = self.serve(&self.a, &[&t, "tcp-server", addr, &up, &down])?;
        self.run(&self.b, envs, &[&t, "tcp-client", addr, &up, &down])?;
        server.finish()
    }

    /// Drops packets arriving in `ns` that match the nft expression `what`
    /// (e.g. `tcp dport 6000`), in a table of its own.
    pub fn drop_input(&self, ns: &str, what: &str) -> anyhow::Result<()> {
        let script = format!(
            "table inet fs {{ chain input {{ type filter hook input priority 0; {what} drop; }}; }}"
        );
        self.run(ns, &[], &["nft", &script]).map(|_| ())
    }

    /// Starts a server in `ns` and waits until it prints `listening`.
    pub fn serve(&self, ns: &str, args: &[&str]) -> anyhow::Result<Server> {
        serve_in(ns, args)
    }
}

/// Starts `args` in network namespace `ns` and waits until it prints
/// `listening` (the test servers of `flowscope-traffic` and
/// `flowscope-load` do once bound).
pub fn serve_in(ns: &str, args: &[&str]) -> anyhow::Result<Server> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a server")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "listening" {
        let _ = child.kill();
        let out = child.wait_with_output()?;
        bail!(
            "server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Server { child: Some(child) })
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// dnsmasq serving `db.lab.test` (and nothing else under `test`) as
/// namespace `a`'s address, on that address; killed on drop.
pub struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl NetPair {
    /// Starts [`Dnsmasq`] in namespace `a`.
    pub fn dnsmasq(&self) -> anyhow::Result<Dnsmasq> {
        let server = self.a_v4();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.a, "dnsmasq", "--keep-in-foreground"])
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address", &server, "--local=/test/"])
            .arg(format!("--address=/db.lab.test/{server}"))
            .args(["--cache-size=0", "--log-facility=/dev/null", "--pid-file="])
            .stdout(Stdio::null())
            .spawn()
            .context("starting dnsmasq (scripts/bootstrap.sh --test installs it)")?;
        Ok(Dnsmasq(child))
    }
}

/// A server process; `finish` checks it exited successfully.
pub struct Server {
    child: Option<Child>,
}

impl Server {
    pub fn finish(mut self) -> anyhow::Result<()> {
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("server already finished"))?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "server failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Path of a binary built next to this test's executable
/// (`target/<profile>/<name>`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: the test command builds it first (cargo build --bins)",
        p.display()
    );
    p
}

/// The traffic generator built by this crate.
pub fn traffic() -> String {
    built_binary("flowscope-traffic").display().to_string()
}

/// A running agent writing OTLP JSON lines to `output`.
pub struct Agent {
    child: Option<Child>,
    pub output: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `flowscope run` with an ebpf receiver (1 s interval) and a
    /// file exporter, plus `extra` YAML appended under `processors:`.
    pub fn start(interval: &str) -> anyhow::Result<Agent> {
        Self::start_with(&format!(
            "receivers:\n  ebpf:\n    collection_interval: {interval}\n\
             exporters:\n  file:\n    path: OUTPUT\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n"
        ))
    }

    /// Starts `flowscope run` with `config`, where `OUTPUT` stands for the
    /// output file's path.
    pub fn start_with(config: &str) -> anyhow::Result<Agent> {
        Self::start_args(config, &[])
    }

    /// Like [`Agent::start_with`], with extra `flowscope run` arguments.
    pub fn start_args(config: &str, args: &[&str]) -> anyhow::Result<Agent> {
        Self::start_env(config, args, &[])
    }

    /// Like [`Agent::start_args`], with `envs` set in the agent's
    /// environment (e.g. `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn start_env(config: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Agent> {
        require_root();
        let dir = tempfile::tempdir()?;
        let output = dir.path().join("metrics.jsonl");
        let cfg = dir.path().join("flowscope.yaml");
        std::fs::write(
            &cfg,
            config.replace("OUTPUT", &output.display().to_string()),
        )?;
        let log = std::fs::File::create(dir.path().join("agent.log"))?;
        let mut cmd = Command::new(built_binary("flowscope"));
        cmd.args(["run", "--config"])
            .arg(&cfg)
            .args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the agent dies with this test
        // process (PDEATHSIG follows the spawning thread, which is why tests
        // start agents from the thread that keeps them).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting flowscope")?;
        let agent = Agent {
            child: Some(child),
            output,
            dir,
        };
        agent.wait_ready()?;
        Ok(agent)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits until the agent logged that it runs (programs attached).
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if log.contains("running") {
                return Ok(());
            }
            if log.contains("error:") || Instant::now() > deadline {
                bail!("flowscope did not start:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().ok_or_else(|| anyhow!("agent gone"))?;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait()?;
        self.child = None;
        Ok(status)
    }

    /// SIGKILLs the agent (nothing is flushed) and waits for it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("agent gone"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        self.log()
    }

    /// The agent's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let child = self.child.as_ref().ok_or_else(|| anyhow!("agent gone"))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{}/status", child.id()))?;
        Ok(kb * 1024)
    }

    pub fn points(&self) -> Vec<Point> {
        read_points(&self.output)
    }

    /// Polls until `check` over all points returns Some, or the deadline.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Point]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let pts = self.points();
            if let Some(v) = check(&pts) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; {} points written; agent log:\n{}",
                    pts.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One exported data point, flattened.
#[derive(Clone, Debug)]
pub struct Point {
    pub resource: BTreeMap<String, String>,
    pub metric: String,
    pub unit: String,
    pub attrs: BTreeMap<String, String>,
    /// Sum or gauge value; for histograms, the count.
    pub value: f64,
    pub time: u64,
}

impl Point {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }
}

fn attrs_of(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kv in v.as_array().into_iter().flatten() {
        let key = kv["key"].as_str().unwrap_or_default().to_string();
        let val = &kv["value"];
        let s = if let Some(s) = val["stringValue"].as_str() {
            s.to_string()
        } else if let Some(i) = val.get("intValue") {
            i.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| i.to_string())
        } else if let Some(b) = val["boolValue"].as_bool() {
            b.to_string()
        } else {
            val.to_string()
        };
        out.insert(key, s);
    }
    out
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Parses the file exporter's output (one ExportMetricsServiceRequest per
/// line, OTLP JSON). A torn last line (being written) is skipped.
pub fn read_points(path: &Path) -> Vec<Point> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(req) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rm in req["resourceMetrics"].as_array().into_iter().flatten() {
            let resource = attrs_of(&rm["resource"]["attributes"]);
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    let name = m["name"].as_str().unwrap_or_default().to_string();
                    let unit = m["unit"].as_str().unwrap_or_default().to_string();
                    for (kind, field) in
                        [("sum", None), ("gauge", None), ("histogram", Some("count"))]
                    {
                        for dp in m[kind]["dataPoints"].as_array().into_iter().flatten() {
                            let value = match field {
                                Some(f) => num(&dp[f]),
                                None => num(&dp["asInt"]).or_else(|| num(&dp["asDouble"])),
                            }
                            .unwrap_or(f64::NAN);
                            out.push(Point {
                                resource: resource.clone(),
                                metric: name.clone(),
                                unit: unit.clone(),
                                attrs: attrs_of(&dp["attributes"]),
                                value,
                                time: dp["timeUnixNano"]
                                    .as_str()
                                    .and_then(|s| s.parse().ok())
                                    .unwrap_or(0),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// Sum of `metric` over points whose attributes include every pair in
/// `filter`.
pub fn sum(points: &[Point], metric: &str, filter: &[(&str, &str)]) -> f64 {
    points
        .iter()
        .filter(|p| p.metric == metric && filter.iter().all(|(k, v)| p.attr(k) == Some(*v)))
        .map(|p| p.value)
        .sum()
}

/// A `flowscope-traffic` process in hold mode: once its work succeeded it
/// says `done` and stays until dropped, so its /proc entry (service name,
/// open sockets) is there whenever the agent reads it.
pub struct Held {
    what: String,
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Held {
    /// Starts `args` in namespace `ns` as service `service`.
    pub fn start(ns: &str, service: &str, args: &[&str]) -> Held {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .env("OTEL_SERVICE_NAME", service)
            .env("FLOWSCOPE_TRAFFIC_HOLD", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec flowscope-traffic");
        let out = BufReader::new(child.stdout.take().unwrap());
        Held {
            what: format!("{service}: {}", args[1..].join(" ")),
            child,
            out,
        }
    }

    /// Writes `line` and a newline to the process's stdin (a step that
    /// waits for one, like `tcp-client-gated`'s gate).
    pub fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write to the held process");
        stdin.flush().expect("flush the held process's stdin");
    }

    /// The lines printed before `line`; fails with the process's stderr
    /// when it exits first.
    pub fn until(&mut self, line: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.out.read_line(&mut l).unwrap();
            if n == 0 {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                let status = self.child.wait().unwrap();
                panic!(
                    "{} exited ({status}) before saying {line:?}; said {before:?}: {}",
                    self.what,
                    err.trim()
                );
            }
            if l.trim_end() == line {
                return before;
            }
            before.push(l.trim_end().to_string());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One TCP exchange of exactly `up` and `down` bytes between `client` in b
/// and `server` in a; both hold.
pub fn exchange(
    net: &NetPair,
    client: &str,
    server: &str,
    port: u16,
    up: u64,
    down: u64,
) -> [Held; 2] {
    let t = traffic();
    let addr = format!("{}:{port}", net.a_v4());
    let (up, down) = (up.to_string(), down.to_string());
    let mut srv = Held::start(&net.a, server, &[&t, "tcp-server", &addr, &up, &down]);
    srv.until("listening");
    let mut cli = Held::start(&net.b, client, &[&t, "tcp-client", &addr, &up, &down]);
    cli.until("done");
    srv.until("done");
    [srv, cli]
}
