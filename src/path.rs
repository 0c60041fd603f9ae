//! The `flowscope path HOST` command. (The `path` receiver's settings are
//! mapped from its config beside the receiver:
//! `flowscope_receiver::path::settings`.)

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use flowscope_otel_config::receivers::{PathProbeConfig, PathProtocol, PathTestConfig};
use flowscope_receiver::path::netns::Netns;
use flowscope_receiver::path::prober::{TraceRequest, TraceResult, TrippyProber};
use flowscope_receiver::path::settings::protocol;
use flowscope_receiver::path::{ProbeSettings, resolve, run_once};

/// `flowscope path HOST`: one run, printed like `mtr --report`.
#[derive(clap::Args, Debug)]
pub struct PathArgs {
    /// Destination: a host name or an IP address.
    pub host: String,
    /// Destination port (TCP needs one; UDP defaults to 33434).
    #[arg(long, short)]
    pub port: Option<u16>,
    /// tcp (SYN), udp or icmp (echo).
    #[arg(long, default_value = "icmp", value_parser = ["tcp", "udp", "icmp"])]
    pub protocol: String,
    /// Probe from this network namespace (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long)]
    pub netns: Option<std::path::PathBuf>,
    /// Highest TTL probed (1 to 64).
    #[arg(long, default_value_t = PathProbeConfig::DEFAULT_MAX_TTL,
          value_parser = clap::value_parser!(u8).range(1..=64))]
    pub max_ttl: u8,
    /// Probes per hop.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub queries: u32,
    /// End-to-end probes.
    #[arg(long, default_value_t = PathProbeConfig::DEFAULT_E2E_PROBES,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub e2e_probes: u32,
    /// Per-probe timeout in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=10000))]
    pub timeout_ms: u64,
}

/// The report: one line per hop, then the end-to-end summary.
pub fn report(host: &str, target: std::net::IpAddr, r: &TraceResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "HOST: {host} ({target})");
    let _ = writeln!(
        s,
        "{:>3}  {:<40} {:>6} {:>4} {:>8} {:>8} {:>8}",
        "", "ADDRESS", "LOSS%", "SNT", "AVG ms", "BEST ms", "WRST ms"
    );
    for h in &r.hops {
        let ms: Vec<f64> = h.rtts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        let (avg, best, worst) = if ms.is_empty() {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            let avg = ms.iter().sum::<f64>() / ms.len() as f64;
            let best = ms.iter().copied().fold(f64::INFINITY, f64::min);
            let worst = ms.iter().copied().fold(0.0, f64::max);
            (
                format!("{avg:.2}"),
                format!("{best:.2}"),
                format!("{worst:.2}"),
            )
        };
        let loss = if h.sent == 0 {
            0.0
        } else {
            100.0 * h.lost as f64 / h.sent as f64
        };
        let addr = h.address.map_or_else(|| "*".to_string(), |a| a.to_string());
        let _ = writeln!(
            s,
            "{:>3}. {:<40} {:>5.1}% {:>4} {:>8} {:>8} {:>8}",
            h.ttl, addr, loss, h.sent, avg, best, worst
        );
    }
    let e2e_loss = if r.e2e_sent == 0 {
        0.0
    } else {
        100.0 * r.e2e_lost as f64 / r.e2e_sent as f64
    };
    let avg = if r.e2e_rtts.is_empty() {
        "-".to_string()
    } else {
        format!(
            "{:.2}",
            r.e2e_rtts.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1000.0
                / r.e2e_rtts.len() as f64
        )
    };
    let jitter = r
        .jitter()
        .map_or_else(|| "-".to_string(), |j| format!("{:.2}", j * 1000.0));
    let _ = writeln!(
        s,
        "{}: {} hops, end to end {} sent, {:.1}% loss, avg {avg} ms, jitter {jitter} ms",
        if r.reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        },
        r.hop_count(),
        r.e2e_sent,
        e2e_loss
    );
    s
}

/// Runs the command; fails (non-zero exit) on bad input, prints the report
/// (reachable or not) otherwise.
pub fn command(args: PathArgs) -> anyhow::Result<()> {
    let proto = match args.protocol.as_str() {
        "tcp" => PathProtocol::Tcp,
        "udp" => PathProtocol::Udp,
        _ => PathProtocol::Icmp,
    };
    let port = match (proto, args.port) {
        (PathProtocol::Tcp, None) => bail!("--protocol tcp needs --port"),
        (PathProtocol::Udp, None) => PathTestConfig::DEFAULT_UDP_PORT,
        (_, p) => p.unwrap_or(0),
    };
    if !flowscope_receiver::path::netns::has_net_raw() {
        return Err(flowscope_receiver::path::PathError::NoNetRaw.into());
    }
    let probe = ProbeSettings {
        max_ttl: args.max_ttl,
        timeout: Duration::from_millis(args.timeout_ms),
        queries: args.queries,
        e2e_probes: args.e2e_probes,
    };
    let netns = args.netns.clone().map_or(Netns::Own, Netns::Path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let target = resolve(&args.host).await?;
        let req = TraceRequest {
            target,
            port,
            protocol: protocol(proto),
            max_ttl: probe.max_ttl,
            timeout: probe.timeout,
            queries: probe.queries,
            e2e_probes: probe.e2e_probes,
        };
        let r = run_once(Arc::new(TrippyProber), &netns, req, &probe, false).await?;
        print!("{}", report(&args.host, target, &r));
        Ok(())
    })
}
