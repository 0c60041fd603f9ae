//! The agent killed and started again (issue 19): with the `ebpf`
//! receiver's `pin_directory`, the connection ends the killed agent had
//! not delivered are counted by the next one as
//! `flowscope.events.lost{flowscope.source=ebpf.tcp,
//! flowscope.reason=agent_restart}`, and a second agent on the same
//! directory is refused while the first runs.
//!
//! This file holds one test: the kernel counts connection ends host-wide,
//! and cargo runs test files one after another, so no other test's traffic
//! falls into the count.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flowscope_integration::{Agent, NetPair, sum};

const WAIT: Duration = Duration::from_secs(60);

/// A fresh directory on bpffs, removed (with its pin) when dropped.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        let dir = PathBuf::from(format!("/sys/fs/bpf/flowscope-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(interval: &str, dir: &Path) -> String {
    format!(
        "receivers:\n  ebpf:\n    collection_interval: {interval}\n    pin_directory: {}\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n",
        dir.display()
    )
}

fn restart_loss(agent: &Agent) -> f64 {
    agent.wait_for("the restart's loss count", WAIT, |p| {
        p.iter()
            .any(|x| x.metric == "flowscope.events.received")
            .then(|| {
                sum(
                    p,
                    "flowscope.events.lost",
                    &[
                        ("flowscope.source", "ebpf.tcp"),
                        ("flowscope.reason", "agent_restart"),
                    ],
                )
            })
    })
}

#[test]
fn a_killed_agents_undelivered_connection_ends_are_counted_by_the_next() {
    let net = NetPair::new().unwrap();
    let pins = PinDir::new();
    // The first agent ever on the directory: nothing to take over.
    let mut first = Agent::start_with(&config("60s", &pins.0)).unwrap();
    // A second agent on the same directory while the first runs: refused,
    // naming the first.
    let second = Agent::start_with(&config("1s", &pins.0));
    let refused = format!(
        "{:#}",
        second.err().expect("a second agent was not refused")
    );
    let pid = first.pid().unwrap();
    assert!(
        refused.contains(&format!("in use by another flowscope (pid {pid})")),
        "{refused}"
    );
    // 20 exchanges inside the first agent's 60 s interval: none delivered.
    for i in 0..20 {
        net.tcp_exchange(&format!("{}:{}", net.a_v4(), 7300 + i), 100, 100, &[])
            .unwrap();
    }
    first.kill().unwrap();
    let next = Agent::start_with(&config("1s", &pins.0)).unwrap();
    let lost = restart_loss(&next);
    assert!(
        next.log_text().contains(&format!(
            "the previous agent (pid {pid}) stopped without delivering"
        )),
        "{}",
        next.log_text()
    );
    // Each exchange ends two sockets on this host: the client's and the
    // server's accepted one.
    assert_eq!(lost, 40.0);
}
