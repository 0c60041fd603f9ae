//! A routed topology for Network Path tests: four network namespaces in a
//! line, joined by veth pairs, with forwarding on in the two routers.
//!
//! ```text
//! client ---- router1 ---- router2 ---- server
//!   .1.2    .1.1   .2.1   .2.2   .3.1   .3.2      (198.19.L.H, fd00:L::H)
//! ```
//!
//! Each namespace has its own routing table, so the fixed addresses never
//! meet another test's. Only 198.19.0.0/16 (inside 198.18.0.0/15) and
//! fd00::/8 are used, and nothing routes out of the four namespaces.
//! ICMP rate limits are switched off in every namespace: the kernel
//! otherwise answers at most about one time-exceeded per second per
//! destination after a short burst, which tests would see as loss.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Server, require_root, sh};

static NEXT: AtomicU32 = AtomicU32::new(1);

pub struct Topology {
    pub client: String,
    pub router1: String,
    pub router2: String,
    pub server: String,
    /// The second router of [`Topology::add_second_router`], when added.
    pub router3: Option<String>,
    tag: String,
}

impl Topology {
    pub const CLIENT_V4: &str = "198.19.1.2";
    pub const ROUTER1_V4: &str = "198.19.1.1";
    pub const ROUTER2_V4: &str = "198.19.2.2";
    pub const SERVER_V4: &str = "198.19.3.2";
    pub const CLIENT_V6: &str = "fd00:1::2";
    pub const ROUTER1_V6: &str = "fd00:1::1";
    pub const ROUTER2_V6: &str = "fd00:2::2";
    pub const SERVER_V6: &str = "fd00:3::2";

    pub fn new() -> anyhow::Result<Self> {
        require_root();
        let tag = format!(
            "{}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let t = Topology {
            client: format!("fpc{tag}"),
            router1: format!("fpa{tag}"),
            router2: format!("fpb{tag}"),
            server: format!("fps{tag}"),
            router3: None,
            tag: tag.clone(),
        };
        for ns in [&t.client, &t.router1, &t.router2, &t.server] {
            sh("ip", &["netns", "add", ns])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            for (k, v) in [
                // No duplicate address detection: a tentative link-local
                // address delays neighbour discovery, and the first IPv6
                // probes would be lost to it.
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv4.icmp_ratelimit", "0"),
                ("net.ipv6.icmp.ratelimit", "0"),
                ("net.ipv4.icmp_msgs_per_sec", "100000"),
            ] {
                sh(
                    "ip",
                    &["netns", "exec", ns, "sysctl", "-qw", &format!("{k}={v}")],
                )?;
            }
        }
        for ns in [&t.router1, &t.router2] {
            for k in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
                sh(
                    "ip",
                    &["netns", "exec", ns, "sysctl", "-qw", &format!("{k}=1")],
                )?;
            }
        }
        // link L joins (left, right): left is .1 / ::1, right is .2 / ::2
        let links = [
            (1, &t.client, &t.router1),
            (2, &t.router1, &t.router2),
            (3, &t.router2, &t.server),
        ];
        for (l, left, right) in links {
            let (dl, dr) = (format!("p{l}l{tag}"), format!("p{l}r{tag}"));
            let (dl, dr) = (&dl[..dl.len().min(15)], &dr[..dr.len().min(15)]);
            sh(
                "ip",
                &["link", "add", dl, "type", "veth", "peer", "name", dr],
            )?;
            // The client side of link 1 is "right" in address terms: keep
            // router addresses at .1 on their client-facing links.
            let (ns_a, ns_b) = if l == 1 { (right, left) } else { (left, right) };
            for (ns, dev, host) in [(ns_a, dl, 1), (ns_b, dr, 2)] {
                sh("ip", &["link", "set", dev, "netns", ns])?;
                sh(
                    "ip",
                    &[
                        "-n",
                        ns,
                        "addr",
                        "add",
                        &format!("198.19.{l}.{host}/24"),
                        "dev",
                        dev,
                    ],
                )?;
                sh(
                    "ip",
                    &[
                        "-n",
                        ns,
                        "addr",
                        "add",
                        &format!("fd00:{l}::{host}/64"),
                        "dev",
                        dev,
                        "nodad",
                    ],
                )?;
                sh("ip", &["-n", ns, "link", "set", dev, "up"])?;
            }
        }
        let routes: [(&String, &[&str]); 8] = [
            (&t.client, &["route", "add", "default", "via", "198.19.1.1"]),
            (
                &t.client,
                &["-6", "route", "add", "default", "via", "fd00:1::1"],
            ),
            (
                &t.router1,
                &["route", "add", "198.19.3.0/24", "via", "198.19.2.2"],
            ),
            (
                &t.router1,
                &["-6", "route", "add", "fd00:3::/64", "via", "fd00:2::2"],
            ),
            (
                &t.router2,
                &["route", "add", "198.19.1.0/24", "via", "198.19.2.1"],
            ),
            (
                &t.router2,
                &["-6", "route", "add", "fd00:1::/64", "via", "fd00:2::1"],
            ),
            (&t.server, &["route", "add", "default", "via", "198.19.3.1"]),
            (
                &t.server,
                &["-6", "route", "add", "default", "via", "fd00:3::1"],
            ),
        ];
        for (ns, args) in routes {
            let mut a = vec!["-n", ns.as_str()];
            a.extend_from_slice(args);
            sh("ip", &a)?;
        }
        // Every address usable (none tentative) before a test probes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for ns in [&t.client, &t.router1, &t.router2, &t.server] {
            loop {
                let out = sh("ip", &["-n", ns, "-6", "addr", "show", "tentative"])?;
                if out.stdout.is_empty() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    anyhow::bail!("IPv6 addresses in {ns} stay tentative");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(t)
    }

    /// `/run/netns/<name>` of a namespace.
    pub fn netns_path(ns: &str) -> String {
        format!("/run/netns/{ns}")
    }

    /// Runs a command in `ns` and waits, failing with its stderr.
    pub fn run(&self, ns: &str, envs: &[(&str, &str)], args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .envs(envs.iter().copied())
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "{} in {ns} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds an nft rule `rule` (ending in a verdict) to a chain on `hook`
    /// (`input`, `output`, `forward`) of a table of its own in `ns`.
    pub fn nft(&self, ns: &str, hook: &str, rule: &str) -> anyhow::Result<()> {
        let script = format!(
            "table inet fsp {{ chain {hook} {{ type filter hook {hook} priority 0; {rule}; }}; }}"
        );
        self.run(ns, &[], &["nft", &script]).map(|_| ())
    }

    /// Starts `args` in `ns` and waits until it prints `listening`.
    pub fn serve(&self, ns: &str, args: &[&str]) -> anyhow::Result<Server> {
        crate::serve_in(ns, args)
    }

    /// A `flowscope-traffic tcp-listen` server on `addr` in the server
    /// namespace: accepts and closes every connection (TCP probes that
    /// reach it complete their handshake).
    pub fn listen(&self, addr: &str) -> anyhow::Result<Server> {
        self.serve(&self.server, &[&crate::traffic(), "tcp-listen", addr])
    }
}

impl Topology {
    /// Router3's address towards router1 (link 4), the hop that replaces
    /// router2 after [`Topology::switch_to_second_router`].
    pub const ROUTER3_V4: &str = "198.19.4.2";

    /// Adds a second router between router1 and the server, idle until
    /// [`Topology::switch_to_second_router`]:
    ///
    /// ```text
    /// router1 ---- router3 ---- server
    ///    .4.1    .4.2   .5.1   .5.2
    /// ```
    pub fn add_second_router(&mut self) -> anyhow::Result<()> {
        let r3 = format!("fpd{}", self.tag);
        sh("ip", &["netns", "add", &r3])?;
        self.router3 = Some(r3.clone());
        sh("ip", &["-n", &r3, "link", "set", "lo", "up"])?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv4.icmp_msgs_per_sec", "100000"),
        ] {
            sh(
                "ip",
                &["netns", "exec", &r3, "sysctl", "-qw", &format!("{k}={v}")],
            )?;
        }
        for (l, left, right) in [(4, &self.router1, &r3), (5, &r3, &self.server)] {
            let (dl, dr) = (format!("p{l}l{}", self.tag), format!("p{l}r{}", self.tag));
            let (dl, dr) = (&dl[..dl.len().min(15)], &dr[..dr.len().min(15)]);
            sh(
                "ip",
                &["link", "add", dl, "type", "veth", "peer", "name", dr],
            )?;
            for (ns, dev, host) in [(left, dl, 1), (right, dr, 2)] {
                sh("ip", &["link", "set", dev, "netns", ns])?;
                sh(
                    "ip",
                    &[
                        "-n",
                        ns,
                        "addr",
                        "add",
                        &format!("198.19.{l}.{host}/24"),
                        "dev",
                        dev,
                    ],
                )?;
                sh("ip", &["-n", ns, "link", "set", dev, "up"])?;
            }
        }
        sh(
            "ip",
            &[
                "-n",
                &r3,
                "route",
                "add",
                "198.19.1.0/24",
                "via",
                "198.19.4.1",
            ],
        )?;
        sh(
            "ip",
            &[
                "-n",
                &r3,
                "route",
                "add",
                "198.19.3.0/24",
                "via",
                "198.19.5.2",
            ],
        )?;
        Ok(())
    }

    /// Sends the traffic between the client and the server through router3
    /// instead of router2, both ways: the route becomes router1, router3,
    /// server.
    pub fn switch_to_second_router(&self) -> anyhow::Result<()> {
        sh(
            "ip",
            &[
                "-n",
                &self.router1,
                "route",
                "replace",
                "198.19.3.0/24",
                "via",
                "198.19.4.2",
            ],
        )?;
        sh(
            "ip",
            &[
                "-n",
                &self.server,
                "route",
                "replace",
                "default",
                "via",
                "198.19.5.1",
            ],
        )?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.router1, &self.router2, &self.server]
            .into_iter()
            .chain(self.router3.as_ref())
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
