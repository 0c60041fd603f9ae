//! `flowscope bench`: throughput of the user-space pipeline, without the
//! kernel.
//!
//! Each simulated interval synthesizes what the eBPF side would hand user
//! space for many short TCP connections and some UDP flows: a `Conn`
//! snapshot per live connection (the `CONNS` map walk), a `CLOSE` event per
//! connection and a `PROCESS` event per process (the ring buffer), and a
//! `UdpKey`/`UdpStats` pair per UDP flow (the `UDP_FLOWS` map walk). These
//! go through the same code the agent runs: [`Collector`] (`on_conn`,
//! `on_event`, `on_udp`, `finish`), the default processor chain (no
//! processors: every key kept, default cardinality limits) and the `file`
//! exporter's encoding (OTLP `ExportMetricsServiceRequest`, one line of
//! OTLP JSON). Every stage is timed on its own.
//!
//! The processes are real: the bench's own pid and other live pids from
//! /proc with their real `comm`, so process attribution reads /proc
//! (`exe`, `cmdline`, `environ`, `cgroup`) exactly as the agent does; the
//! cache then serves later intervals, as it does in the agent. Peers are
//! addresses in 198.18.0.0/15; nothing touches the network.
//!
//! This measures; it asserts nothing. Results are one JSON object.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flowscope_common::{AF_INET, Conn, Event, UdpKey, UdpStats, event_kind, role};
use flowscope_model::telemetry::FLOWS_OVERFLOW;
use flowscope_model::{Attrs, Context, FlowBatch, HostFacts};
use flowscope_processors::Chain;
use flowscope_receiver::collector::{Collector, CollectorSettings, Granularity};
use serde_json::json;

/// Options of `flowscope bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Kernel records per simulated interval: a CONNS snapshot and a CLOSE
    /// event per TCP connection, a PROCESS event per process, and UDP flows
    /// (a tenth of the records).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Distinct processes owning the connections (real pids from /proc,
    /// capped at the number of live processes).
    #[arg(long, default_value_t = 50)]
    processes: usize,
    /// Distinct peer addresses (198.18.0.0/15).
    #[arg(long, default_value_t = 20)]
    peers: u32,
    /// Keep running intervals for this long (at least `--intervals`).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Minimum number of simulated intervals (the first, with a cold
    /// /proc cache, is reported apart).
    #[arg(long, default_value_t = 3)]
    intervals: u32,
    /// Resource per process (`process`) instead of per service.
    #[arg(long)]
    process_granularity: bool,
    /// Write the JSON result here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// One real process: its pid and its kernel `comm`.
struct Proc {
    pid: u32,
    comm: [u8; 16],
}

fn comm_of(pid: u32) -> Option<[u8; 16]> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let mut comm = [0u8; 16];
    let b = s.trim_end().as_bytes();
    let n = b.len().min(15);
    comm[..n].copy_from_slice(&b[..n]);
    Some(comm)
}

/// The bench itself first, then other live processes in /proc order.
fn real_processes(max: usize) -> anyhow::Result<Vec<Proc>> {
    let me = std::process::id();
    let mut out = vec![Proc {
        pid: me,
        comm: comm_of(me).unwrap_or(*b"flowscope\0\0\0\0\0\0\0"),
    }];
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        if out.len() >= max {
            break;
        }
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(comm) = comm_of(pid) {
            out.push(Proc { pid, comm });
        }
    }
    Ok(out)
}

/// Time spent per stage, summed over intervals.
#[derive(Default)]
struct Totals {
    intervals: u64,
    records: u64,
    flows: u64,
    points: u64,
    json_bytes: u64,
    proto_bytes: u64,
    collect: Duration,
    chain: Duration,
    encode: Duration,
    json: Duration,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.intervals += o.intervals;
        self.records += o.records;
        self.flows += o.flows;
        self.points += o.points;
        self.json_bytes += o.json_bytes;
        self.proto_bytes += o.proto_bytes;
        self.collect += o.collect;
        self.chain += o.chain;
        self.encode += o.encode;
        self.json += o.json;
    }

    fn report(&self) -> serde_json::Value {
        let per_sec = |n: u64, d: Duration| {
            let s = d.as_secs_f64();
            if s > 0.0 { (n as f64 / s).round() } else { 0.0 }
        };
        let per = |a: u64, b: u64| {
            if b > 0 {
                (a as f64 / b as f64 * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        let total = self.collect + self.chain + self.encode + self.json;
        json!({
            "intervals": self.intervals,
            "kernel_records": self.records,
            "flow_updates": self.flows,
            "points": self.points,
            "events_per_sec": per_sec(self.records, self.collect),
            "flows_per_sec": per_sec(self.flows, self.chain),
            "points_per_sec": per_sec(self.points, self.encode + self.json),
            "end_to_end_events_per_sec": per_sec(self.records, total),
            "bytes_per_point_json": per(self.json_bytes, self.points),
            "bytes_per_point_protobuf": per(self.proto_bytes, self.points),
            "ms_per_interval": {
                "collector": ms(self.collect, self.intervals),
                "chain": ms(self.chain, self.intervals),
                "encode": ms(self.encode, self.intervals),
                "json": ms(self.json, self.intervals),
                "total": ms(total, self.intervals),
            },
        })
    }
}

fn ms(d: Duration, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    (d.as_secs_f64() * 1e3 / n as f64 * 100.0).round() / 100.0
}

/// What one interval feeds the collector.
struct Workload {
    procs: Vec<Proc>,
    peers: u32,
    connections: u64,
    udp_flows: u64,
}

impl Workload {
    fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let procs = real_processes(args.processes.max(1))?;
        Ok(Self::with_processes(procs, args.events, args.peers))
    }

    fn with_processes(procs: Vec<Proc>, events: u64, peers: u32) -> Self {
        let udp_flows = events / 10;
        let rest = events.saturating_sub(udp_flows + procs.len() as u64);
        Workload {
            connections: (rest / 2).max(1),
            udp_flows,
            peers: peers.max(1),
            procs,
        }
    }

    fn records(&self) -> u64 {
        self.connections * 2 + self.procs.len() as u64 + self.udp_flows
    }

    fn peer(&self, i: u64) -> [u8; 16] {
        // Peers 198.18.0.1 upwards (i < 2^17 fits the /15).
        let p = (i % u64::from(self.peers)) as u32 + 1;
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[198, 18 + ((p >> 16) & 1) as u8, (p >> 8) as u8, p as u8]);
        raw
    }

    /// Connection `i` of interval `round`: process `i % P`, peer
    /// `(i / P) % peers`; one in four is a server connection.
    fn conn(&self, round: u64, i: u64) -> Conn {
        let nprocs = self.procs.len() as u64;
        let p = &self.procs[(i % nprocs) as usize];
        let server = i % 4 == 3;
        let mut c = Conn {
            opened_ns: 1_000_000_000 * (round + 1) + i,
            bytes_tx: 100 + i % 1000,
            bytes_rx: 200 + i % 5000,
            segs_out: 4,
            segs_in: 5,
            total_retrans: u32::from(i.is_multiple_of(50)),
            srtt_us: 50 + (i % 400) as u32,
            rttvar_us: 10 + (i % 40) as u32,
            tgid: p.pid,
            netns: 4_026_531_840,
            family: AF_INET,
            lport: if server {
                8080
            } else {
                32768 + (i % 28000) as u16
            },
            rport: if server {
                32768 + (i % 28000) as u16
            } else {
                [443, 5432, 6379, 80][(i % 4) as usize]
            },
            role: if server { role::SERVER } else { role::CLIENT },
            established: 1,
            comm: p.comm,
            ..Conn::default()
        };
        c.laddr[..4].copy_from_slice(&[198, 19, 0, 1]);
        c.raddr = self.peer(i / nprocs);
        c
    }

    /// One interval through the collector: a map walk that sees every
    /// connection live, then their CLOSE events (final counters), the
    /// PROCESS events and the UDP map walk.
    fn feed(&self, col: &mut Collector, round: u64) {
        let base_sk = round * (self.connections + 1) * 64;
        for p in &self.procs {
            let conn = Conn {
                tgid: p.pid,
                comm: p.comm,
                ..Conn::default()
            };
            col.on_event(&Event {
                kind: event_kind::PROCESS,
                errno: 0,
                sk: 0,
                ts_ns: 0,
                conn,
            });
        }
        for i in 0..self.connections {
            let mut c = self.conn(round, i);
            col.on_conn(base_sk + i * 64, &c);
            c.bytes_tx += 50;
            c.segs_out += 2;
            c.segs_in += 2;
            let ts_ns = c.opened_ns + 1_000_000 + i % 1_000_000;
            col.on_event(&Event {
                kind: event_kind::CLOSE,
                errno: 0,
                sk: base_sk + i * 64,
                ts_ns,
                conn: c,
            });
        }
        let nprocs = self.procs.len() as u64;
        for i in 0..self.udp_flows {
            let key = UdpKey {
                cookie: 1 + i,
                raddr: self.peer(i / nprocs),
                rport: 53,
                family: AF_INET,
                _pad: 0,
            };
            // Running totals grow every interval, so every flow has a delta.
            let mut st = UdpStats {
                bytes_tx: 60 * (round + 1),
                bytes_rx: 120 * (round + 1),
                packets_tx: round + 1,
                packets_rx: round + 1,
                lport: 40000 + (i % 20000) as u16,
                ..UdpStats::default()
            };
            st.laddr[..4].copy_from_slice(&[198, 19, 0, 1]);
            let p = &self.procs[(i % nprocs) as usize];
            let owner = flowscope_common::Owner {
                tgid: p.pid,
                netns: 4_026_531_840,
                comm: p.comm,
            };
            col.on_udp(&key, &st, Some(&owner));
        }
    }
}

fn one_interval(
    w: &Workload,
    col: &mut Collector,
    chain: &mut Chain,
    round: u64,
) -> anyhow::Result<Totals> {
    use prost::Message as _;
    let t0 = Instant::now();
    w.feed(col, round);
    let batch: FlowBatch = col.finish(round * 10_000_000_000, (round + 1) * 10_000_000_000);
    let t1 = Instant::now();
    let flows = batch.flows.len() as u64;
    let metrics = chain.process(batch);
    let t2 = Instant::now();
    let enc = flowscope_exporters::encode(&metrics);
    let t3 = Instant::now();
    let line =
        flowscope_exporters::json::request_to_json(&enc.request).context("encoding OTLP JSON")?;
    let t4 = Instant::now();
    Ok(Totals {
        intervals: 1,
        records: w.records(),
        flows,
        points: enc.points,
        json_bytes: line.len() as u64 + 1,
        proto_bytes: enc.request.encoded_len() as u64,
        collect: t1 - t0,
        chain: t2 - t1,
        encode: t3 - t2,
        json: t4 - t3,
    })
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs the bench and prints (or writes) one JSON object.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let w = Workload::new(&args)?;
    let ctx = Context::new(HostFacts::detect());
    let telemetry = ctx.telemetry.clone();
    let settings = CollectorSettings {
        max_tracked: 65_536,
        granularity: if args.process_granularity {
            Granularity::Process
        } else {
            Granularity::Service
        },
        include_command_line: false,
        rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
        duration_bounds: Arc::from(flowscope_model::hist::DURATION_BOUNDS),
        ephemeral: ctx.host.ephemeral_ports,
        host: ctx.host.attrs.clone(),
    };
    let mut col = Collector::new(settings, telemetry.clone());
    let mut chain = Chain::new(Vec::new(), telemetry.clone());

    let started = Instant::now();
    let first = one_interval(&w, &mut col, &mut chain, 0)?;
    let mut steady = Totals::default();
    let mut round = 1;
    while round < u64::from(args.intervals.max(2)) || started.elapsed().as_secs_f64() < args.seconds
    {
        steady.add(&one_interval(&w, &mut col, &mut chain, round)?);
        round += 1;
    }
    let overflow = telemetry.total_matching(FLOWS_OVERFLOW, &Attrs::new());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let s = steady.report();
    let result = json!({
        "benchmark": "flowscope bench (user-space pipeline, synthetic kernel records)",
        "workload": {
            "kernel_records_per_interval": w.records(),
            "tcp_connections_per_interval": w.connections,
            "udp_flows_per_interval": w.udp_flows,
            "processes": w.procs.len(),
            "processes_are_real_pids": true,
            "peers": w.peers,
            "resource_granularity": if args.process_granularity { "process" } else { "service" },
            "chain": "default (no processors; every key kept; default cardinality limits)",
        },
        "events_per_sec": s["events_per_sec"],
        "flows_per_sec": s["flows_per_sec"],
        "points_per_sec": s["points_per_sec"],
        "bytes_per_point_json": s["bytes_per_point_json"],
        "steady": s,
        "first_interval_cold_proc_cache": first.report(),
        "cardinality_overflow_points": overflow,
        "peak_rss_kib": peak_rss_kib(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.trim(),
        "flowscope_version": env!("CARGO_PKG_VERSION"),
    });
    let text = serde_json::to_string_pretty(&result)?;
    match args.output {
        Some(path) => std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The pipeline's output for a fixed input, held byte for byte: a
    //! change that makes the chain or the encoders faster must not change
    //! what they emit.
    use super::*;

    /// Processes that cannot exist (pids above `pid_max`'s ceiling of
    /// 2^22), so attribution falls back to the `comm` on every machine.
    fn synthetic_processes(n: u32) -> Vec<Proc> {
        (0..n)
            .map(|k| {
                let mut comm = [0u8; 16];
                let name = format!("svc-{k}");
                comm[..name.len()].copy_from_slice(name.as_bytes());
                Proc {
                    pid: 4_000_000_000 + k,
                    comm,
                }
            })
            .collect()
    }

    /// OTLP JSON lines of `intervals` intervals through the collector, the
    /// default chain and the encoders. The collector's table is a hash map
    /// with a per-process seed, so its flows are put in a fixed order
    /// before the chain (the order decides which series overflow).
    fn fixed_output(events: u64, processes: u32, peers: u32, intervals: u64) -> (Vec<u8>, u64) {
        let w = Workload::with_processes(synthetic_processes(processes), events, peers);
        let telemetry = flowscope_model::Telemetry::new();
        let settings = CollectorSettings {
            max_tracked: 65_536,
            granularity: Granularity::Service,
            include_command_line: false,
            rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
            duration_bounds: Arc::from(flowscope_model::hist::DURATION_BOUNDS),
            ephemeral: (32768, 60999),
            host: Attrs::new()
                .with("host.name", "bench-host")
                .with("os.type", "linux"),
        };
        let mut col = Collector::new(settings, telemetry.clone());
        let mut chain = Chain::new(Vec::new(), telemetry.clone());
        let mut out = Vec::new();
        for round in 0..intervals {
            w.feed(&mut col, round);
            let mut batch = col.finish(round * 10_000_000_000, (round + 1) * 10_000_000_000);
            batch.flows.sort_by(|a, b| {
                (&*a.resource, &a.attrs, a.transport).cmp(&(&*b.resource, &b.attrs, b.transport))
            });
            let metrics = chain.process(batch);
            let enc = flowscope_exporters::encode(&metrics);
            let line = flowscope_exporters::json::request_to_json(&enc.request).unwrap();
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        let overflow = telemetry.total_matching(FLOWS_OVERFLOW, &Attrs::new());
        (out, overflow)
    }

    /// FNV-1a, 64 bits: enough to tell two outputs apart, with no
    /// dependency for a test.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    const SMALL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/bench-output-small.jsonl"
    );

    /// A small workload, every byte in the repository (readable diffs);
    /// `FLOWSCOPE_BLESS=1` rewrites the file after an intended change.
    #[test]
    fn small_workload_output_is_unchanged() {
        let (out, overflow) = fixed_output(400, 4, 3, 3);
        assert_eq!(overflow, 0);
        if std::env::var_os("FLOWSCOPE_BLESS").is_some() {
            std::fs::write(SMALL, &out).unwrap();
        }
        let want = std::fs::read(SMALL).unwrap();
        assert!(
            out == want,
            "the pipeline's output changed; diff it against {SMALL} (FLOWSCOPE_BLESS=1 rewrites it)"
        );
    }

    /// The bench's default workload, which overflows the default series
    /// limit: its 3 intervals (about 18 MB of JSON) held by length and hash.
    #[test]
    fn default_workload_output_is_unchanged() {
        let (out, overflow) = fixed_output(100_000, 50, 20, 3);
        assert_eq!(
            (out.len(), fnv1a(&out), overflow),
            (18_345_580, 6_585_357_855_065_474_152, 12_000)
        );
    }
}
