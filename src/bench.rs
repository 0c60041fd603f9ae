//! `flowscope bench`: throughput of the user-space pipeline, without the
//! kernel.
//!
//! Each simulated 10 s interval synthesizes what the eBPF side hands user
//! space for many short TCP connections and some UDP flows, as the kernel
//! side writes it now that it keeps nothing per connection (issue 24):
//!
//! - the ring buffer's records, as bytes: per TCP connection a 24-byte
//!   `CONNECT_MIN` [`ConnectRec`] (a client, at connect()) or `ACCEPT` (a
//!   server's accepted socket, one in four), then a 104-byte `CLOSE_MIN`
//!   [`CloseRec`] with TCP's final counters; in the first interval also a
//!   `PROCESS` [`Event`] per process (the kernel announces a tgid once) and
//!   a `LISTEN` [`Event`] per process that accepts connections (its own
//!   port), which is how the join names a server's process;
//! - a `UdpKey`/`UdpStats` pair per UDP flow (the `UDP_FLOWS` map walk).
//!
//! The connections open and close within the interval, a few dozen open at
//! a time, so the agent's walk of open sockets (`iter/tcp`, which feeds
//! `Collector::on_conn` once an interval) never sees them, and the bench
//! has no such walk. The records go through the same code the agent runs:
//! the TCP record join ([`TcpJoin`], built from [`JoinSettings`] on a
//! [`TickClock`] as the agent builds it, fed with `feed_bytes` as the
//! receiver's `drain()` feeds it and expired at each interval's end), the
//! [`Collector`] (`on_event` with each event the join makes, `on_udp`,
//! `finish`), the default processor chain (no processors: every key kept,
//! default cardinality limits) and the `file` exporter's encoding (OTLP
//! `ExportMetricsServiceRequest`, one line of OTLP JSON). Every stage is
//! timed on its own; the join is part of the collector stage
//! (`events_per_sec`). The ring's bytes are written before the clock starts
//! (that is the kernel's work).
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
use flowscope_common::{AF_INET, CloseRec, Conn, ConnectRec, Event, UdpKey, UdpStats, event_kind};
use flowscope_model::telemetry::FLOWS_OVERFLOW;
use flowscope_model::{Attrs, Context, FlowBatch, HostFacts};
use flowscope_processors::Chain;
use flowscope_receiver::JoinSettings;
use flowscope_receiver::collector::{Collector, CollectorSettings, Granularity};
use flowscope_receiver::tcp_join::{TcpJoin, TickClock};
use serde_json::json;

/// Options of `flowscope bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Kernel records per simulated interval: UDP flows (a tenth), and TCP
    /// connections with a CONNECT or ACCEPT and a CLOSE record each (the
    /// rest, less one per process: the first interval also has a PROCESS
    /// and maybe a LISTEN record per process).
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

/// The kernel tick rate of the synthetic records (`bpf_jiffies64()`): at
/// 1,000 a tick is a millisecond, so the short connections' durations keep
/// the range (1 - 10 ms) they had when the records carried ns.
const HZ: u32 = 1000;
/// The tick the records' clock reads at monotonic time 0: as in a real
/// kernel, jiffies do not start at 0 (`INITIAL_JIFFIES`, five minutes
/// before the 32-bit wrap); the [`TickClock`]'s anchor absorbs it.
const ANCHOR_TICK: u64 = (1 << 32) - 300 * HZ as u64;
/// A simulated interval, as `JoinSettings` takes it (the agent's default
/// `collection_interval`): the join keeps closed connections two of these.
const INTERVAL: Duration = Duration::from_secs(10);
/// Connections open at once: the ring holds a connection's CONNECT (or
/// ACCEPT), then this many connections later its CLOSE.
const OPEN_AT_ONCE: u64 = 64;
/// Socket addresses the connections take in turn, as the kernel's socket
/// slab hands a freed socket's memory to the next one: connection `i` has
/// address `i % SOCKET_SLOTS` (times 2,048, a TCP socket's size rounded
/// up). More than [`OPEN_AT_ONCE`], so no two open connections share one.
/// The join and the collector key their tables by this address, so a reuse
/// replaces an entry instead of adding one, as in the agent (a host at
/// 10,000 connections a second reuses a few hundred addresses).
const SOCKET_SLOTS: u64 = 4096;
/// Where the listening sockets' addresses start (apart from the
/// connections' socket addresses, which count up from 0).
const LISTENER_SK: u64 = 0xffff_8880_0000_0000;
/// The network namespace of every socket (the host's, `/proc/self/ns/net`
/// of init on most kernels).
const NETNS: u32 = 4_026_531_840;

/// One interval's ring-buffer bytes, record after record, as the kernel's
/// programs write them (native byte order, every byte written) and as
/// `drain()` hands them to [`TcpJoin::feed_bytes`]: each record is one
/// slice of exactly its layout's size.
#[derive(Default)]
struct Ring {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Ring {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let r = &self.bytes[start..end];
            start = end;
            r
        })
    }

    fn put(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    fn end_record(&mut self) {
        self.ends.push(self.bytes.len());
    }

    /// One record as the kernel's programs write it: the bytes of `r`, a
    /// [`ConnectRec`] (`CONNECT_MIN`, `ACCEPT`), a [`CloseRec`]
    /// (`CLOSE_MIN`) or a whole [`Event`] (PROCESS, LISTEN).
    fn record<T: aya::Pod>(&mut self, r: &T) {
        // SAFETY: `T` is Pod: repr(C) integers and byte arrays with no
        // padding, so all of its `size_of` bytes are initialized, and `r`
        // is a live reference to one.
        let bytes =
            unsafe { std::slice::from_raw_parts((r as *const T).cast::<u8>(), size_of::<T>()) };
        self.put(bytes);
        self.end_record();
    }
}

/// The TCP record join as the agent builds it (`EbpfReceiver::collect`):
/// sized by [`JoinSettings`] for the collector's `max_tracked` and the
/// interval, on a [`TickClock`] of [`HZ`] anchored at monotonic time 0.
fn new_join(max_tracked: usize) -> anyhow::Result<(TcpJoin, TickClock)> {
    let clock = TickClock::new(HZ, ANCHOR_TICK, 0).context("the bench's tick clock")?;
    let limits = JoinSettings::new(max_tracked, INTERVAL)
        .limits(&clock)
        .context("sizing the TCP record join")?;
    Ok((TcpJoin::new(limits, clock), clock))
}

/// What one interval feeds the collector.
struct Workload {
    procs: Vec<Proc>,
    /// Whether process `k` accepts connections (one in four connections is
    /// a server's, so with an even number of processes only some do): it
    /// then listens on port `8080 + k`.
    serves: Vec<bool>,
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
        let connections = (rest / 2).max(1);
        let nprocs = procs.len() as u64;
        let mut serves = vec![false; procs.len()];
        for i in (3..connections).step_by(4) {
            serves[(i % nprocs) as usize] = true;
        }
        Workload {
            connections,
            udp_flows,
            peers: peers.max(1),
            procs,
            serves,
        }
    }

    /// Records of a steady interval: a CONNECT or ACCEPT and a CLOSE per
    /// connection, and the UDP map walk's entries.
    fn records(&self) -> u64 {
        self.connections * 2 + self.udp_flows
    }

    fn peer(&self, i: u64) -> [u8; 16] {
        // Peers 198.18.0.1 upwards (i < 2^17 fits the /15).
        let p = (i % u64::from(self.peers)) as u32 + 1;
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[198, 18 + ((p >> 16) & 1) as u8, (p >> 8) as u8, p as u8]);
        raw
    }

    /// The port process `k` listens on.
    fn server_port(k: usize) -> u16 {
        8080 + (k % 20_000) as u16
    }

    /// Socket address of connection `i` of interval `round`: a slot of
    /// [`SOCKET_SLOTS`], taken in turn across intervals.
    fn sk(&self, round: u64, i: u64) -> u64 {
        ((round * self.connections + i) % SOCKET_SLOTS) * 2048
    }

    /// The tick connection `i` of interval `round` opens at: the
    /// connections open one after the other over 8 s of the interval's
    /// 10, from 1 s in.
    fn open_tick(&self, round: u64, i: u64) -> u64 {
        let hz = u64::from(HZ);
        ANCHOR_TICK + round * INTERVAL.as_secs() * hz + hz + i * 8 * hz / self.connections
    }

    /// Connection `i`'s CONNECT (a client) or ACCEPT (a server; one in
    /// four): process `i % P`.
    fn open(&self, round: u64, i: u64) -> ConnectRec {
        let p = &self.procs[(i % self.procs.len() as u64) as usize];
        let server = i % 4 == 3;
        ConnectRec {
            kind: if server {
                event_kind::ACCEPT
            } else {
                event_kind::CONNECT_MIN
            },
            // The handshake of an accepted socket ends in softirq.
            tgid: if server { 0 } else { p.pid },
            sk: self.sk(round, i),
            ts: self.open_tick(round, i),
        }
    }

    /// Connection `i`'s CLOSE after 2 to 8 ticks, with TCP's final
    /// counters: peer `(i / P) % peers`; a server's local port is its
    /// process's listening port, a client's an ephemeral one. A client's
    /// sent bytes hold its SYN, as the kernel's figure does (the join
    /// takes it off).
    fn close(&self, round: u64, i: u64) -> CloseRec {
        let nprocs = self.procs.len() as u64;
        let k = (i % nprocs) as usize;
        let server = i % 4 == 3;
        let ephemeral = 32768 + (i % 28000) as u16;
        let bytes_tx = 150 + i % 1000;
        let mut r = CloseRec {
            kind: event_kind::CLOSE_MIN,
            family: AF_INET,
            lport: if server {
                Self::server_port(k)
            } else {
                ephemeral
            },
            rport: if server {
                ephemeral
            } else {
                [443, 5432, 6379, 80][(i % 4) as usize]
            },
            netns: NETNS,
            sk: self.sk(round, i),
            bytes_tx: if server { bytes_tx } else { bytes_tx + 1 },
            bytes_rx: 200 + i % 5000,
            segs_in: 7,
            segs_out: 6,
            total_retrans: u32::from(i.is_multiple_of(50)),
            srtt_us: 50 + (i % 400) as u32,
            rttvar_us: 10 + (i % 40) as u32,
            ts: self.open_tick(round, i) + 2 + i % 7,
            ..CloseRec::default()
        };
        r.laddr[..4].copy_from_slice(&[198, 19, 0, 1]);
        r.raddr = self.peer(i / nprocs);
        r
    }

    /// What the kernel's programs write to the ring in interval `round`.
    /// The first interval begins with a PROCESS record per process (the
    /// kernel announces a tgid once, until its `SEEN_PIDS` LRU forgets
    /// it) and a LISTEN record per process that accepts connections (its
    /// listen(), on the wildcard address). Then every connection's CONNECT
    /// or ACCEPT and its CLOSE, in the order they happen: up to
    /// [`OPEN_AT_ONCE`] connections are open at a time, and all of them
    /// close within the interval, so the walk of open sockets never sees
    /// them.
    fn fill_ring(&self, ring: &mut Ring, round: u64) {
        ring.clear();
        if round == 0 {
            for p in &self.procs {
                ring.record(&Event {
                    kind: event_kind::PROCESS,
                    conn: Conn {
                        tgid: p.pid,
                        comm: p.comm,
                        ..Conn::default()
                    },
                    ..Event::default()
                });
            }
            let tick = ANCHOR_TICK + u64::from(HZ) / 2;
            for (k, p) in self.procs.iter().enumerate() {
                if !self.serves[k] {
                    continue;
                }
                ring.record(&Event {
                    kind: event_kind::LISTEN,
                    sk: LISTENER_SK + k as u64 * 4096,
                    ts_ns: tick,
                    conn: Conn {
                        tgid: p.pid,
                        netns: NETNS,
                        family: AF_INET,
                        lport: Self::server_port(k),
                        comm: p.comm,
                        ..Conn::default()
                    },
                    ..Event::default()
                });
            }
        }
        let n = self.connections;
        for i in 0..n + OPEN_AT_ONCE {
            if i < n {
                ring.record(&self.open(round, i));
            }
            if i >= OPEN_AT_ONCE {
                ring.record(&self.close(round, i - OPEN_AT_ONCE));
            }
        }
    }

    /// One interval through the join and the collector, as the agent's
    /// `drain()` and its interval end run them: every ring record through
    /// [`TcpJoin::feed_bytes`], each event it makes to
    /// [`Collector::on_event`], the join's expiry at the interval's end,
    /// then the UDP map walk. Returns the records read.
    fn feed(
        &self,
        ring: &Ring,
        join: &mut TcpJoin,
        clock: &TickClock,
        col: &mut Collector,
        round: u64,
    ) -> anyhow::Result<u64> {
        for rec in ring.records() {
            match join.feed_bytes(rec) {
                Ok(Some(ev)) => col.on_event(&ev),
                Ok(None) => {}
                Err(e) => return Err(e).context("a synthetic ring record"),
            }
        }
        join.expire(clock.tick((round + 1) * INTERVAL.as_nanos() as u64));
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
                netns: NETNS,
                comm: p.comm,
            };
            col.on_udp(&key, &st, Some(&owner));
        }
        Ok(ring.len() + self.udp_flows)
    }
}

/// The agent's side of one run: the join and its clock, the collector,
/// and the ring buffer's bytes of the interval.
struct Agent {
    join: TcpJoin,
    clock: TickClock,
    col: Collector,
    ring: Ring,
}

impl Agent {
    fn new(
        settings: CollectorSettings,
        telemetry: flowscope_model::Telemetry,
    ) -> anyhow::Result<Self> {
        let (join, clock) = new_join(settings.max_tracked)?;
        Ok(Agent {
            join,
            clock,
            col: Collector::new(settings, telemetry),
            ring: Ring::default(),
        })
    }

    /// Writes interval `round`'s ring records (the kernel's work: not in
    /// what the bench times).
    fn prepare(&mut self, w: &Workload, round: u64) {
        w.fill_ring(&mut self.ring, round);
    }

    /// Interval `round`'s records through the join and the collector: the
    /// records read, and the interval's batch.
    fn collect(&mut self, w: &Workload, round: u64) -> anyhow::Result<(u64, FlowBatch)> {
        let records = w.feed(
            &self.ring,
            &mut self.join,
            &self.clock,
            &mut self.col,
            round,
        )?;
        let batch = self
            .col
            .finish(round * 10_000_000_000, (round + 1) * 10_000_000_000);
        Ok((records, batch))
    }
}

fn one_interval(
    w: &Workload,
    agent: &mut Agent,
    chain: &mut Chain,
    round: u64,
) -> anyhow::Result<Totals> {
    use prost::Message as _;
    agent.prepare(w, round);
    let t0 = Instant::now();
    let (records, batch) = agent.collect(w, round)?;
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
        records,
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
    let mut agent = Agent::new(settings, telemetry.clone())?;
    let mut chain = Chain::new(Vec::new(), telemetry.clone());

    let started = Instant::now();
    let first = one_interval(&w, &mut agent, &mut chain, 0)?;
    let mut steady = Totals::default();
    let mut round = 1;
    while round < u64::from(args.intervals.max(2)) || started.elapsed().as_secs_f64() < args.seconds
    {
        steady.add(&one_interval(&w, &mut agent, &mut chain, round)?);
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
        let mut agent = Agent::new(settings, telemetry.clone()).unwrap();
        let mut chain = Chain::new(Vec::new(), telemetry.clone());
        let mut out = Vec::new();
        for round in 0..intervals {
            agent.prepare(&w, round);
            let (_, mut batch) = agent.collect(&w, round).unwrap();
            batch.flows.sort_by(|a, b| {
                (&*a.resource, &a.attrs, a.transport).cmp(&(&*b.resource, &b.attrs, b.transport))
            });
            let metrics = chain.process(batch);
            let enc = flowscope_exporters::encode(&metrics);
            let line = flowscope_exporters::json::request_to_json(&enc.request).unwrap();
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        // The join named every connection: it dropped nothing but the
        // closed connections it stops waiting on at its table's limit.
        for (reason, n) in agent.join.drops().iter() {
            assert_eq!(
                reason,
                flowscope_receiver::tcp_join::DropReason::RecentEvicted,
                "{n} dropped"
            );
        }
        let overflow = telemetry.total_matching(FLOWS_OVERFLOW, &Attrs::new());
        (out, overflow)
    }

    /// The ring's bytes are the layouts the join decodes: every field of
    /// each kind written where `repr(C)` puts it.
    #[test]
    fn ring_records_decode_to_what_was_written() {
        use flowscope_receiver::tcp_join::{Record, decode};
        let w = Workload::with_processes(synthetic_processes(3), 400, 2);
        let mut ring = Ring::default();
        w.fill_ring(&mut ring, 1);
        let got: Vec<Record> = ring.records().map(|r| decode(r).unwrap()).collect();
        assert_eq!(got[0], Record::Connect(w.open(1, 0)));
        assert_eq!(got[3], Record::Accept(w.open(1, 3)));
        assert_eq!(got[65], Record::Close(w.close(1, 0)));
        let mut ev = Event {
            kind: event_kind::LISTEN,
            errno: -3,
            sk: 7,
            ts_ns: 8,
            conn: Conn {
                opened_ns: 1,
                bytes_tx: 2,
                bytes_rx: 3,
                segs_out: 4,
                segs_in: 5,
                total_retrans: 6,
                srtt_us: 7,
                rttvar_us: 8,
                resets_tx: 9,
                resets_rx: 10,
                tgid: 11,
                netns: 12,
                family: 13,
                lport: 14,
                rport: 15,
                role: 16,
                established: 17,
                laddr: [18; 16],
                raddr: [19; 16],
                comm: [20; 16],
                snap_jiffies: 21,
            },
        };
        ev.conn.laddr[0] = 1;
        ring.clear();
        ring.record(&ev);
        let one: Vec<&[u8]> = ring.records().collect();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), size_of::<Event>());
        assert_eq!(decode(one[0]).unwrap(), Record::Event(ev));
        // A close: its counters differ field by field.
        let mut c = w.close(1, 5);
        c._pad = 0x1234;
        c.copied_seq = 0x5678;
        ring.clear();
        ring.record(&c);
        let one: Vec<&[u8]> = ring.records().collect();
        assert_eq!(one[0].len(), size_of::<CloseRec>());
        assert_eq!(decode(one[0]).unwrap(), Record::Close(c));
        // The first interval announces the processes and listeners first.
        w.fill_ring(&mut ring, 0);
        let first: Vec<Record> = ring.records().map(|r| decode(r).unwrap()).collect();
        let kinds: Vec<u32> = first[..5]
            .iter()
            .map(|r| match r {
                Record::Event(e) => e.kind,
                _ => 0,
            })
            .collect();
        // 3 processes; 178 connections, servers at i = 3, 7, 11, ...: every
        // process accepts some.
        assert_eq!(
            kinds,
            [
                event_kind::PROCESS,
                event_kind::PROCESS,
                event_kind::PROCESS,
                event_kind::LISTEN,
                event_kind::LISTEN
            ]
        );
        assert_eq!(first.len() as u64, 3 + 3 + 2 * w.connections);
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
    /// limit: its 3 intervals (about 17 MB of JSON) held by length and hash.
    #[test]
    fn default_workload_output_is_unchanged() {
        let (out, overflow) = fixed_output(100_000, 50, 20, 3);
        assert_eq!(
            (out.len(), fnv1a(&out), overflow),
            (16_840_304, 7_382_326_375_314_827_101, 12_000)
        );
    }
}
