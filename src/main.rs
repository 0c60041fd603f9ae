//! The flowscope agent: every TCP and UDP flow on the host as OpenTelemetry
//! metrics.

mod bench;
mod check;
mod extensions;
mod fleet;
mod logs;
mod otlp_push;
mod path;
mod pipeline;
mod readers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowscope_model::{Context, HostFacts};
use flowscope_otel_config::Loaded;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "flowscope",
    version,
    about = "OpenTelemetry-native network monitoring agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent. Without --config it runs the embedded default: the
    /// eBPF receiver to the console and to ./flowscope-metrics.jsonl.
    Run {
        /// Configuration file (YAML, OpenTelemetry Collector shape).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Serve /healthz on this address (e.g. 127.0.0.1:13133): 200 when
        /// every exporter delivers, 503 otherwise, with details as JSON.
        #[arg(long, value_name = "ADDR")]
        healthz: Option<String>,
    },
    /// Check a configuration file and print what it would run.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the version.
    Version,
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Measure the user-space pipeline's throughput on synthetic kernel
    /// records (no eBPF, no network); prints JSON.
    Bench(bench::BenchArgs),
    /// Trace the path to HOST once and print its hops (like `mtr --report`).
    /// Needs CAP_NET_RAW.
    Path(path::PathArgs),
    /// Serve the Map, Analytics and Health pages for the whole fleet from
    /// Prometheus-compatible storage the agents write to (no root needed).
    Ui(fleet::UiArgs),
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Loaded> {
    let loaded = match config {
        Some(path) => flowscope_otel_config::load_file(path)?,
        None => flowscope_otel_config::default_config(),
    };
    for w in &loaded.warnings {
        warn!("config: {w}");
    }
    Ok(loaded)
}

async fn run(config: Option<PathBuf>, healthz: Option<String>) -> anyhow::Result<()> {
    // The log is set up from `service.telemetry.logs` once the file is
    // read (an error loading it is printed by `main`).
    let loaded = match config.as_ref() {
        Some(path) => flowscope_otel_config::load_file(path)?,
        None => flowscope_otel_config::default_config(),
    };
    let host = HostFacts::detect();
    let log_provider = logs::provider(&loaded.config.service.telemetry.logs, &host.self_resource)?;
    logs::init(
        logs::filter(&loaded.config.service.telemetry.logs),
        log_provider.as_ref(),
    );
    for w in &loaded.warnings {
        warn!("config: {w}");
    }
    check::components(&loaded)?;
    // The one context every component is built with: host facts (with the
    // agent's own OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME), the
    // self-telemetry provider (with one SDK reader per
    // `service.telemetry.metrics.readers`), and the shared services.
    let telemetry = readers::telemetry(&loaded.config, &host.self_resource)?;
    let ctx = Context::with_self_telemetry(telemetry, host);
    let agent = pipeline::Agent::start(&loaded.config, &ctx)?;
    let self_readers = readers::start(&loaded.config, &ctx, agent.interval())?;
    let health = match healthz {
        Some(addr) => Some(
            flowscope_exporters::serve_healthz(&addr, agent.exporters().to_vec(), &ctx.telemetry)
                .map_err(|e| anyhow::anyhow!("serving /healthz on {addr}: {e}"))?,
        ),
        None => None,
    };
    let extensions = extensions::start(&loaded.config, agent.exporters(), &ctx.telemetry)?;
    info!(
        pipelines = loaded.config.service.pipelines.len(),
        "flowscope {} running; SIGINT or SIGTERM flushes the last interval and exits",
        env!("CARGO_PKG_VERSION")
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: flushing"),
        _ = term.recv() => info!("SIGTERM: flushing"),
    }
    agent.stop().await;
    self_readers.stop().await;
    if let Some(h) = health {
        h.abort();
    }
    for e in extensions {
        e.abort();
    }
    info!("stopped");
    if let Some(p) = log_provider {
        // Sends what is still batched (on the blocking pool: it waits).
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
    Ok(())
}

fn main() -> ExitCode {
    // Before any thread: few malloc arenas keep the resident size near the
    // heap in use (docs/reliability.md).
    flowscope_model::memory::limit_arenas();
    // ring is the process's rustls provider: the OTLP log exporter's HTTP
    // client (reqwest, `rustls-no-provider`) takes the process default;
    // everything else names ring itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // `run` sets the log up from its configuration.
    if !matches!(cli.command, Command::Run { .. }) {
        logs::init(
            logs::filter(&flowscope_otel_config::telemetry::LogsConfig::default()),
            None,
        );
    }
    let result = match cli.command {
        Command::Version => {
            println!("flowscope {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{}", flowscope_otel_config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Validate { config } => load(Some(&config))
            .and_then(|l| check::components(&l).map(|()| l))
            .map(|l| {
                let c = &l.config;
                println!(
                    "{}: valid ({} receivers, {} processors, {} exporters, {} pipelines)",
                    config.display(),
                    c.receivers.len(),
                    c.processors.len(),
                    c.exporters.len(),
                    c.service.pipelines.len()
                );
            }),
        Command::Bench(args) => bench::run(args),
        Command::Path(args) => path::command(args),
        Command::Ui(args) => fleet::command(args),
        Command::Run { config, healthz } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(config, healthz))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
