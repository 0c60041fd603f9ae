//! The container image (issue 13): scripts/image.sh builds it from scratch
//! with buildah around the agent built for these tests; podman runs it the
//! way the DaemonSet does (host PID and network namespaces, uid 0 with
//! exactly the capabilities of receiver/src/capabilities.rs and nothing
//! else, the DaemonSet's mounts, podman's default seccomp profile), and the
//! containerised agent reports a transfer between two test namespaces
//! with exact bytes, TCP and UDP, as the bare binary does.

mod deploy_support;

use std::process::Command;
use std::time::{Duration, Instant};

use deploy_support::*;
use flowscope_integration::{NetPair, built_binary, read_points, require_root, sum, traffic};
use flowscope_model::names::{attr, metric};

const WAIT: Duration = Duration::from_secs(60);

/// Removes the container and the image, also when the test fails.
struct Podman {
    container: String,
    image: String,
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "5", &self.container])
            .output();
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// `ulimit -H` of this process for `resource`: podman's runc sets the
/// container's limits explicitly, and may not raise them past ours.
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
    r.rlim_max
}

#[test]
fn containerised_agent_sees_exact_bytes() {
    require_root();
    let id = std::process::id();
    let image = format!("localhost/flowscope-test:{id}");
    let guard = Podman {
        container: format!("flowscope-test-{id}"),
        image: image.clone(),
    };
    let out = run(
        Command::new(repo().join("scripts/image.sh"))
            .arg(&image)
            .env("FLOWSCOPE_BIN", built_binary("flowscope")),
        "scripts/image.sh needs buildah and podman (scripts/bootstrap.sh --test)",
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("built {image}")), "{said}");
    eprintln!("{}", said.trim());

    let net = NetPair::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flowscope.yaml"),
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         exporters:\n  file:\n    path: /out/metrics.jsonl\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n",
    )
    .unwrap();
    std::fs::create_dir_all("/run/netns").unwrap();
    let caps: Vec<String> = code_caps_short();
    let nofile = hard_limit(libc::RLIMIT_NOFILE);
    // Lowering is always allowed; the agent runs a handful of threads.
    let nproc = hard_limit(libc::RLIMIT_NPROC).min(4096);
    let cfg = format!(
        "{}:/etc/flowscope/flowscope.yaml:ro",
        dir.path().join("flowscope.yaml").display()
    );
    let outdir = format!("{}:/out", dir.path().display());
    run(
        Command::new("podman")
            .args(["run", "-d", "--name", &guard.container])
            // crun refuses this machine's hybrid cgroup layout.
            .args(["--runtime", "runc"])
            .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
            .arg(format!("--ulimit=nproc={nproc}:{nproc}"))
            .args(["--pid=host", "--network=host", "--cap-drop=all"])
            .arg(format!("--cap-add={}", caps.join(",")))
            // The DaemonSet's mounts.
            .args(["-v", "/sys/kernel/btf:/sys/kernel/btf:ro"])
            .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro"])
            .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"])
            .args(["-v", "/run/netns:/run/netns:ro"])
            .args(["-v", &cfg, "-v", &outdir])
            .arg(&image),
        "podman (scripts/bootstrap.sh --test)",
    );
    // Ready once it logs that it runs (programs attached).
    let deadline = Instant::now() + WAIT;
    loop {
        let logs = Command::new("podman")
            .args(["logs", &guard.container])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&logs.stderr).to_string()
            + &String::from_utf8_lossy(&logs.stdout);
        if text.contains("running") {
            break;
        }
        assert!(
            !text.contains("error:") && Instant::now() < deadline,
            "the containerised agent did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 123,456 bytes up and 7,890 down over TCP; 5 datagrams of 700 bytes up
    // and 2 of 300 down over UDP (the peers seen by the cgroup sock_addr
    // programs at the host's root cgroup, reached through the cgroup mount).
    let tcp = format!("{}:5301", net.a_v4());
    net.tcp_exchange(&tcp, 123_456, 7_890, &[]).unwrap();
    let udp = format!("{}:5302", net.a_v4());
    let t = traffic();
    let server = net
        .serve(&net.a, &[&t, "udp-server", &udp, "5", "2", "300"])
        .unwrap();
    net.run(&net.b, &[], &[&t, "udp-client", &udp, "5", "700", "2"])
        .unwrap();
    server.finish().unwrap();

    let file = dir.path().join("metrics.jsonl");
    let (io, role, peer, port, dir_key, transport) = (
        metric::FLOW_IO.0,
        attr::FLOW_ROLE,
        attr::PEER_ADDRESS,
        attr::PEER_PORT,
        attr::IO_DIRECTION,
        attr::NETWORK_TRANSPORT,
    );
    let a = net.a_v4();
    let want = [
        ("tcp", "5301", "transmit", 123_456.0),
        ("tcp", "5301", "receive", 7_890.0),
        ("udp", "5302", "transmit", 3_500.0),
        ("udp", "5302", "receive", 600.0),
    ];
    let got = |points: &[flowscope_integration::Point],
               (proto, p, d, _): (&str, &str, &str, f64)| {
        sum(
            points,
            io,
            &[
                (role, "client"),
                (peer, &a),
                (port, p),
                (dir_key, d),
                (transport, proto),
            ],
        )
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let points = read_points(&file);
        if want.iter().all(|w| got(&points, *w) >= w.3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the containerised agent did not report the transfers: {:?} of {want:?} ({} points)",
            want.iter().map(|w| got(&points, *w)).collect::<Vec<_>>(),
            points.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // SIGTERM flushes; then the totals are final and exact.
    run(
        Command::new("podman").args(["stop", "-t", "20", &guard.container]),
        "podman stop",
    );
    let points = read_points(&file);
    for w in want {
        assert_eq!(got(&points, w), w.3, "{w:?}");
    }
}
