//! What one read of the open-socket iterator costs with N TCP connections
//! open in the calling network namespace (both ends: 2N sockets), on
//! 127.0.0.1 only. `scripts/bench-open-tcp.sh` runs it in a namespace of
//! its own, with `kernel.bpf_stats_enabled=1`.
//!
//! `open_tcp_cost N ROUNDS [EMPTY_NETNS_PATH]` prints, as `key value`
//! lines: the sockets read, the wall and the thread's CPU time of each
//! read of the own namespace (min/median/max), the program's run count
//! and run time from bpftool, the same for one read of the namespace at
//! EMPTY_NETNS_PATH (no sockets; made on a thread that entered it) and of
//! every namespace of the host. The server ends are held by a child
//! process (the same binary with `--hold N`), so that neither process
//! needs more than N descriptors.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flowscope_receiver::open_tcp::OpenTcpReader;

/// The calling thread's CPU time, user and system together
/// (`CLOCK_THREAD_CPUTIME_ID`, precise where getrusage counts ticks).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// (runs, run time ns) of the newest `open_tcp` program: the one this
/// process just loaded (bpftool lists every program of the host; the
/// highest id is the last loaded).
fn prog_stats() -> anyhow::Result<(u64, u64)> {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "show", "name", "open_tcp", "--json"])
        .output()
        .context("bpftool")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // One match is printed as an object, several as an array.
    let all = match v {
        serde_json::Value::Array(a) => a,
        one => vec![one],
    };
    let newest = all.iter().max_by_key(|p| p["id"].as_u64().unwrap_or(0));
    match newest {
        Some(p) if p.get("run_cnt").is_some() => Ok((
            p["run_cnt"].as_u64().unwrap_or(0),
            p["run_time_ns"].as_u64().unwrap_or(0),
        )),
        _ => bail!(
            "no open_tcp program with run statistics (kernel.bpf_stats_enabled=1?): {}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name}_ms min {:.3} median {:.3} max {:.3}",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    );
}

/// `--hold N`: accepts N connections on 127.0.0.1, prints the port
/// first and `held` once all are accepted, and keeps them until its
/// standard input closes.
fn hold(n: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let held: Vec<TcpStream> = (0..n)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<Result<_, _>>()?;
    println!("held");
    std::io::stdout().flush()?;
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    drop(held);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let first = args.next().context("N")?;
    if first == "--hold" {
        return hold(args.next().context("--hold N")?.parse()?);
    }
    let n: usize = first.parse()?;
    let rounds: usize = args.next().context("ROUNDS")?.parse()?;
    let empty = args.next();

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--hold", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let port: u16 = lines.next().context("child's port")??.parse()?;
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.write_all(&[0u8; 100])?;
        clients.push(c);
    }
    if lines.next().context("child's held")?? != "held" {
        bail!("the child did not hold the connections");
    }

    let reader = OpenTcpReader::load()?;
    let own_path = Path::new("/proc/self/ns/net");
    let own = std::fs::metadata(own_path)?.ino() as u32;
    let first = reader.read_namespace(own_path, own)?;
    println!("connections {n}");
    println!("sockets_read {}", first.len());
    if first.len() < 2 * n {
        bail!("read {} sockets, {} are open", first.len(), 2 * n);
    }
    let (runs0, ns0) = prog_stats()?;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let c0 = thread_cpu();
        let t = Instant::now();
        let got = reader.read_namespace(own_path, own)?;
        wall.push(t.elapsed());
        cpu.push(thread_cpu() - c0);
        assert_eq!(got.len(), first.len());
    }
    let (runs1, ns1) = prog_stats()?;
    stats("read", wall.clone());
    stats("read_cpu", cpu);
    let runs = runs1 - runs0;
    println!("prog_runs {runs}");
    println!("prog_run_time_ns {}", ns1 - ns0);
    println!("prog_ns_per_run {:.1}", (ns1 - ns0) as f64 / runs as f64);
    let median = {
        let mut w = wall;
        w.sort();
        w[w.len() / 2]
    };
    println!(
        "read_ns_per_socket {:.1}",
        median.as_nanos() as f64 / first.len() as f64
    );

    if let Some(path) = empty {
        let ino = std::fs::metadata(&path)?.ino() as u32;
        let mut wall = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let got = reader.read_namespace(Path::new(&path), ino)?;
            wall.push(t.elapsed());
            assert!(got.is_empty(), "{path} has {} sockets", got.len());
        }
        stats("empty_namespace_read", wall);
    }
    let mut reader = reader;
    let mut wall = Vec::new();
    let mut namespaces = 0;
    for _ in 0..rounds.min(5) {
        let t = Instant::now();
        let snap = reader.read_all();
        wall.push(t.elapsed());
        namespaces = snap.namespaces.len();
        if !snap.failed.is_empty() {
            bail!("namespaces failed: {:?}", snap.failed);
        }
    }
    println!("host_namespaces {namespaces}");
    stats("read_all", wall);
    drop(clients);
    drop(child.stdin.take());
    child.wait()?;
    Ok(())
}
