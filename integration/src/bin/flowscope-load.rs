//! Load for the agent's benchmark (`scripts/bench-load.sh`): many short TCP
//! connections at a paced rate, each sending a fixed number of bytes and
//! reading them back from an echo server, then closing.
//!
//! ```text
//! flowscope-load server ADDR [THREADS]
//! flowscope-load client ADDR RATE SECONDS BYTES [WORKERS]
//! ```
//! The server prints `listening` once it accepts, then echoes every
//! connection until the client closes, on THREADS accepting threads
//! (default 4). The client opens RATE connections per second for SECONDS,
//! spread over WORKERS threads (default: one per 1,000/s, 1 to 8), each on
//! its own schedule (open loop: a worker that falls behind starts its next
//! connection at once rather than skipping it). It prints one JSON object:
//! the rate asked for and the rate achieved, connections completed and
//! failed (with the first error), connect-to-close latency percentiles and
//! the client's own CPU seconds.
//! It never asserts a rate: the benchmark reports what was reached.
//!
//! ```text
//! flowscope-load udp-server ADDR [THREADS]
//! flowscope-load udp-client ADDR RATE SECONDS BYTES [WORKERS]
//! ```
//! The same over UDP: RATE exchanges per second, each one datagram of
//! BYTES sent with sendto() on an unconnected socket (one per worker) and
//! its echo read back with recvfrom(); the server echoes every datagram to
//! its sender from one unconnected socket read by THREADS threads. The
//! JSON's `completed` counts exchanges (one datagram each way).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    let raw = args
        .get(i)
        .ok_or_else(|| format!("missing argument {what}"))?;
    raw.parse().map_err(|_| format!("bad {what}: {raw:?}"))
}

fn opt<T: std::str::FromStr>(args: &[String], i: usize, what: &str, default: T) -> Result<T> {
    if args.len() > i {
        arg(args, i, what)
    } else {
        Ok(default)
    }
}

/// Echoes until the peer closes.
fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn server(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let threads: usize = opt(args, 1, "THREADS", 4)?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    // std listens with a backlog of 128; bursts of 10,000/s need more.
    // Calling listen() again on a listening socket only changes the backlog.
    // SAFETY: a valid listening socket fd.
    if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
        return Err(format!("listen: {}", std::io::Error::last_os_error()));
    }
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        let l = listener.try_clone().map_err(|e| format!("listener: {e}"))?;
        handles.push(std::thread::spawn(move || {
            for conn in l.incoming() {
                match conn {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        echo(s);
                    }
                    Err(e) => eprintln!("accept: {e}"),
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Echoes every datagram to its sender, on `THREADS` threads sharing one
/// unconnected socket, until killed.
fn udp_server(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let threads: usize = opt(args, 1, "THREADS", 4)?;
    let socket = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        let s = socket.try_clone().map_err(|e| format!("socket: {e}"))?;
        handles.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let _ = s.send_to(&buf[..n], from);
                    }
                    Err(e) => eprintln!("recv: {e}"),
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// One UDP exchange: a datagram to `addr`, its echo back.
fn one_udp(s: &UdpSocket, addr: SocketAddr, payload: &[u8], buf: &mut [u8]) -> Result<()> {
    s.send_to(payload, addr).map_err(|e| format!("send: {e}"))?;
    let (n, _) = s.recv_from(buf).map_err(|e| format!("recv: {e}"))?;
    if n != payload.len() {
        return Err(format!("echo of {n} bytes, sent {}", payload.len()));
    }
    Ok(())
}

/// One connection: connect, send `payload`, read as many bytes back, close.
fn one(addr: SocketAddr, payload: &[u8], buf: &mut [u8]) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| format!("timeout: {e}"))?;
    s.write_all(payload).map_err(|e| format!("write: {e}"))?;
    let mut got = 0;
    while got < payload.len() {
        let want = buf.len().min(payload.len() - got);
        match s.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(format!(
                    "server closed after {got} of {} bytes",
                    payload.len()
                ));
            }
            Ok(n) => got += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(())
}

#[derive(Default)]
struct WorkerResult {
    completed: u64,
    failed: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

fn client(args: &[String], udp: bool) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let rate: f64 = arg(args, 1, "RATE")?;
    let seconds: f64 = arg(args, 2, "SECONDS")?;
    let bytes: usize = arg(args, 3, "BYTES")?;
    let default_workers = ((rate / 1000.0).ceil() as usize).clamp(1, 8);
    let workers: usize = opt(args, 4, "WORKERS", default_workers)?.max(1);
    if !(rate > 0.0 && seconds > 0.0) {
        return Err("RATE and SECONDS must be positive".into());
    }
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(seconds);
    // Each worker runs at rate/workers, offset so the starts interleave.
    let period = Duration::from_secs_f64(workers as f64 / rate);
    let mut handles = Vec::new();
    for w in 0..workers {
        let first = start + period.mul_f64(w as f64 / workers as f64);
        handles.push(std::thread::spawn(move || {
            let payload = vec![b'l'; bytes];
            let mut buf = vec![0u8; bytes.clamp(1, 65536)];
            let mut r = WorkerResult::default();
            let socket = if udp {
                let bind = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                match UdpSocket::bind(bind).and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(3)))?;
                    Ok(s)
                }) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        r.first_error = Some(format!("udp socket: {e}"));
                        return r;
                    }
                }
            } else {
                None
            };
            let mut k: u32 = 0;
            loop {
                let due = first + period * k;
                if due >= end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let t = Instant::now();
                let done = match &socket {
                    Some(s) => one_udp(s, addr, &payload, &mut buf),
                    None => one(addr, &payload, &mut buf),
                };
                match done {
                    Ok(()) => {
                        r.completed += 1;
                        r.latencies_us
                            .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Err(e) => {
                        r.failed += 1;
                        r.first_error.get_or_insert(e);
                    }
                }
                k += 1;
            }
            r
        }));
    }
    let mut total = WorkerResult::default();
    for h in handles {
        let r = h.join().map_err(|_| "a worker panicked".to_string())?;
        total.completed += r.completed;
        total.failed += r.failed;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
        total.latencies_us.extend(r.latencies_us);
    }
    let elapsed = start.elapsed().as_secs_f64().max(seconds);
    total.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let n = total.latencies_us.len();
        if n == 0 {
            return 0;
        }
        total.latencies_us[((n - 1) as f64 * p).round() as usize]
    };
    // The client's own CPU time (all workers), to compare agent on/off:
    // the eBPF programs run in the context of these syscalls.
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    let cpu_seconds = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        ((tv(ru.ru_utime) + tv(ru.ru_stime)) * 1000.0).round() / 1000.0
    } else {
        -1.0
    };
    let out = serde_json::json!({
        "target_rate": rate,
        "seconds": seconds,
        "elapsed_seconds": (elapsed * 1000.0).round() / 1000.0,
        "bytes_each_way": bytes,
        "workers": workers,
        "completed": total.completed,
        "failed": total.failed,
        "first_error": total.first_error,
        "achieved_rate": (total.completed as f64 / elapsed).round(),
        "latency_us_p50": pct(0.5),
        "latency_us_p99": pct(0.99),
        "cpu_seconds": cpu_seconds,
    });
    println!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("client") => client(&args[1..], false),
        Some("udp-server") => udp_server(&args[1..]),
        Some("udp-client") => client(&args[1..], true),
        _ => Err("usage: flowscope-load [udp-]server ADDR [THREADS] | [udp-]client ADDR RATE SECONDS BYTES [WORKERS]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowscope-load: {e}");
            ExitCode::FAILURE
        }
    }
}
