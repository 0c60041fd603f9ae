//! Agent CPU under DNS load: a client in one network namespace makes
//! `--rate` lookups per second to a responder in another (veth pair,
//! 198.18.200.0/24) for `--seconds`, while the DNS receiver captures both
//! namespaces (so it matches each lookup twice: client side and server
//! side). Prints, and writes to `--out` if given, a JSON object with the
//! CPU the receiver's capture thread used, per core.
//!
//! Run as root: `cargo run --release -p flowscope-receiver --example dns_load -- --rate 5000 --seconds 20`
//!
//! `--sockets fresh` makes each lookup from a new socket (as `getaddrinfo`
//! in a new process does), waiting for each answer, instead of one socket
//! for all; `--port P` sends to port P, which the receiver does not watch
//! (its ports stay `[53]`): every send is then one the owner program
//! looks at and leaves. scripts/bench-dns-owner.sh reads the kernel's
//! per-program statistics while this runs.

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flowscope_model::Telemetry;
use flowscope_receiver::dns::{DnsReceiver, DnsSettings};

struct Namespaces(String, String);

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.1]).status();
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{args:?} failed"))
    }
}

fn enter(ns: &str) -> Result<(), String> {
    let f = File::open(format!("/run/netns/{ns}")).map_err(|e| e.to_string())?;
    // SAFETY: setns on the calling thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// utime + stime of this process's thread named `name`, in clock ticks.
fn thread_ticks(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that ends comm: state is field 3; utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            total += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

fn query(id: u16, i: u32) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    b[0..2].copy_from_slice(&id.to_be_bytes());
    b[2] = 1;
    b[5] = 1;
    let label = format!("host{}", i % 1000);
    for l in [label.as_str(), "load", "test"] {
        b.push(l.len() as u8);
        b.extend_from_slice(l.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b
}

fn main() -> Result<(), String> {
    let mut rate = 5000u64;
    let mut seconds = 20u64;
    let mut out = None;
    let mut fresh = false;
    let mut port = 53u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--rate" => rate = v.parse().map_err(|_| "bad --rate")?,
            "--seconds" => seconds = v.parse().map_err(|_| "bad --seconds")?,
            "--out" => out = Some(v),
            "--sockets" => fresh = v == "fresh",
            "--port" => port = v.parse().map_err(|_| "bad --port")?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let pid = std::process::id();
    let ns = Namespaces(format!("fsdnsload-{pid}-a"), format!("fsdnsload-{pid}-b"));
    let (va, vb) = (format!("fsl{pid}a"), format!("fsl{pid}b"));
    sh(&["ip", "netns", "add", &ns.0])?;
    sh(&["ip", "netns", "add", &ns.1])?;
    sh(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ])?;
    sh(&["ip", "link", "set", &va, "netns", &ns.0])?;
    sh(&["ip", "link", "set", &vb, "netns", &ns.1])?;
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "198.18.200.1/24",
        "dev",
        &va,
    ])?;
    sh(&[
        "ip",
        "-n",
        &ns.1,
        "addr",
        "add",
        "198.18.200.2/24",
        "dev",
        &vb,
    ])?;
    sh(&["ip", "-n", &ns.0, "link", "set", &va, "up"])?;
    sh(&["ip", "-n", &ns.1, "link", "set", &vb, "up"])?;

    let stop = Arc::new(AtomicBool::new(false));
    // Responder: answers every query with one A record.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let a = ns.0.clone();
    let stop_r = stop.clone();
    let responder = std::thread::spawn(move || -> Result<(), String> {
        enter(&a)?;
        let sock = UdpSocket::bind(("198.18.200.1", port)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let mut buf = [0u8; 512];
        while !stop_r.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80;
            r[3] = 0x80;
            r[7] = 1;
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 200, 9]);
            let _ = sock.send_to(&r, from);
        }
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "responder did not start")?;

    let telemetry = Telemetry::new();
    let settings = DnsSettings {
        namespace_rescan: Duration::from_millis(200),
        ..DnsSettings::default()
    };
    let ctx = flowscope_model::Context::with_telemetry(telemetry);
    let receiver = DnsReceiver::start_with(settings, &ctx).map_err(|e| format!("{e:?}"))?;
    use std::os::unix::fs::MetadataExt;
    let inode = |n: &str| {
        std::fs::metadata(format!("/run/netns/{n}"))
            .map(|m| m.ino() as u32)
            .unwrap_or(0)
    };
    let want = [inode(&ns.0), inode(&ns.1)];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|w| receiver.namespaces().contains(w)) {
        if Instant::now() > deadline {
            return Err("receiver did not open its sockets within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let engine = receiver.engine();

    // Client: one socket, paced sends every millisecond, a reader thread.
    let b = ns.1.clone();
    let received = Arc::new(AtomicU64::new(0));
    let (rx_recv, stop_c) = (received.clone(), stop.clone());
    let client = std::thread::spawn(move || -> Result<u64, String> {
        enter(&b)?;
        if fresh {
            // A new socket per lookup, answered before the next.
            let start = Instant::now();
            let mut sent = 0u64;
            let total = rate * seconds;
            let mut buf = [0u8; 512];
            while sent < total {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due.min(total) {
                    let sock = UdpSocket::bind("198.18.200.2:0").map_err(|e| e.to_string())?;
                    sock.connect(("198.18.200.1", port))
                        .map_err(|e| e.to_string())?;
                    sock.set_read_timeout(Some(Duration::from_millis(200)))
                        .map_err(|e| e.to_string())?;
                    let _ = sock.send(&query(sent as u16, sent as u32));
                    if sock.recv(&mut buf).is_ok() {
                        rx_recv.fetch_add(1, Ordering::Relaxed);
                    }
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            std::thread::sleep(Duration::from_millis(500));
            stop_c.store(true, Ordering::Relaxed);
            return Ok(sent);
        }
        let sock = UdpSocket::bind("198.18.200.2:0").map_err(|e| e.to_string())?;
        sock.connect(("198.18.200.1", port))
            .map_err(|e| e.to_string())?;
        let reader = sock.try_clone().map_err(|e| e.to_string())?;
        reader
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let stop_rd = stop_c.clone();
        let rd = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop_rd.load(Ordering::Relaxed) {
                if reader.recv(&mut buf).is_ok() {
                    rx_recv.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let start = Instant::now();
        let mut sent = 0u64;
        let total = rate * seconds;
        while sent < total {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due.min(total) {
                let _ = sock.send(&query(sent as u16, sent as u32));
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop_c.store(true, Ordering::Relaxed);
        let _ = rd.join();
        Ok(sent)
    });

    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t0 = Instant::now();
    let cpu0 = thread_ticks("flowscope-dns");
    let sent = client.join().map_err(|_| "client panicked")??;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (thread_ticks("flowscope-dns") - cpu0) as f64 / ticks_per_s;
    stop.store(true, Ordering::Relaxed);
    let _ = responder.join();
    let answered = engine.lock().map(|e| e.answered).unwrap_or(0);
    let result = serde_json::json!({
        "rate_per_s": rate,
        "sockets": if fresh { "fresh" } else { "one" },
        "port": port,
        "seconds": seconds,
        "lookups_sent": sent,
        "responses_received": received.load(Ordering::Relaxed),
        "lookups_matched_by_agent": answered,
        "capture_thread_cpu_seconds": cpu,
        "wall_seconds": wall,
        "capture_thread_cpu_percent_of_one_core": 100.0 * cpu / wall,
    });
    println!("{result:#}");
    if let Some(path) = out {
        std::fs::write(&path, format!("{result:#}\n")).map_err(|e| format!("{path}: {e}"))?;
    }
    drop(receiver);
    Ok(())
}
