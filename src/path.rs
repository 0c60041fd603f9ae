//! Network Path glue: the `path` receiver's config turned into its
//! settings, and the `flowscope path HOST` command.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use flowscope_model::HostFacts;
use flowscope_otel_config::receivers::{
    PathProbeConfig, PathProtocol, PathReceiverConfig, PathTestConfig,
};
use flowscope_receiver::path::dynamic::{Cidr, TableSettings};
use flowscope_receiver::path::netns::Netns;
use flowscope_receiver::path::prober::{Protocol, TraceRequest, TraceResult, TrippyProber};
use flowscope_receiver::path::tls::TlsCheck;
use flowscope_receiver::path::{
    DynamicSettings, PathSettings, ProbeSettings, ScheduledTest, resolve, run_once,
};

pub fn protocol(p: PathProtocol) -> Protocol {
    match p {
        PathProtocol::Tcp => Protocol::Tcp,
        PathProtocol::Udp => Protocol::Udp,
        PathProtocol::Icmp => Protocol::Icmp,
    }
}

fn probe(p: &PathProbeConfig) -> ProbeSettings {
    ProbeSettings {
        max_ttl: p.max_ttl,
        timeout: p.timeout,
        queries: p.queries,
        e2e_probes: p.e2e_probes,
    }
}

/// The port a test probes: TCP needs one, UDP defaults to 33434 (a closed
/// port answers with ICMP port unreachable), ICMP has none.
fn test_port(t: &PathTestConfig) -> anyhow::Result<u16> {
    match (t.protocol, t.port) {
        (PathProtocol::Tcp, None) => bail!(
            "test to {}: protocol tcp needs a port (the server's listening port)",
            t.host
        ),
        (PathProtocol::Udp, None) => Ok(PathTestConfig::DEFAULT_UDP_PORT),
        (_, p) => Ok(p.unwrap_or(0)),
    }
}

/// A test's TLS check (`tls: true`): TCP only, with its `server_name` and
/// `ca_file`.
fn tls_check(t: &PathTestConfig) -> anyhow::Result<Option<TlsCheck>> {
    if !t.tls {
        if t.server_name.is_some() || t.ca_file.is_some() {
            bail!(
                "test to {}: `server_name` and `ca_file` need `tls: true`",
                t.host
            );
        }
        return Ok(None);
    }
    if t.protocol != PathProtocol::Tcp {
        bail!(
            "test to {}: `tls: true` needs protocol tcp (the handshake goes to the TCP port)",
            t.host
        );
    }
    let check = TlsCheck::new(&t.host, t.server_name.as_deref(), t.ca_file.as_deref())
        .map_err(|e| anyhow!("test to {}: {:#}", t.host, anyhow::Error::new(e)))?;
    Ok(Some(check))
}

/// The `path` receiver's settings from its config; scheduled tests' points
/// carry the host's Resource attributes (`host`).
pub fn settings(c: &PathReceiverConfig, host: &HostFacts) -> anyhow::Result<PathSettings> {
    let tests = c
        .tests
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let port = test_port(t).map_err(|e| anyhow!("tests[{i}]: {e}"))?;
            Ok(ScheduledTest {
                host: t.host.clone(),
                port,
                protocol: protocol(t.protocol),
                interval: t.interval,
                probe: probe(&t.probe()),
                tags: t.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                netns: t.netns.clone(),
                tls: tls_check(t).map_err(|e| anyhow!("tests[{i}]: {e:#}"))?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let d = &c.dynamic;
    let dynamic = if d.enabled {
        let cidrs = |key: &str, list: &[String]| {
            list.iter()
                .map(|s| {
                    Cidr::parse(s).ok_or_else(|| anyhow!("dynamic.{key}: {s:?} is not a CIDR"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        };
        let include_cidrs = cidrs("include_cidrs", &d.include_cidrs)?;
        let exclude_cidrs = cidrs("exclude_cidrs", &d.exclude_cidrs)?;
        Some(DynamicSettings {
            table: TableSettings {
                interval: d.interval,
                ttl: d.ttl,
                max_new_per_minute: d.max_new_per_minute,
                max_destinations: d.max_destinations,
                include_cidrs,
                exclude_cidrs,
                exclude_domains: d.exclude_domains.clone(),
            },
            workers: d.workers,
            probe: probe(&d.probe()),
        })
    } else {
        None
    };
    Ok(PathSettings {
        tests,
        dynamic,
        resource: Arc::new(host.attrs.clone()),
        rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
        resolve_hops: c.resolve_hops,
        asn_database: c.asn_database.clone(),
    })
}

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
