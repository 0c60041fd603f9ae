//! `flowscope ui --prometheus URL`: the Network Map, Analytics and Health
//! pages for the whole fleet, over the Prometheus-compatible storage every
//! agent writes to (docs/fleet.md). Needs no root and no eBPF.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use flowscope_exporters::server::{Limits, Server};
use flowscope_exporters::ui::fleet::Fleet;
use flowscope_exporters::ui::{TOKEN_ENV, Ui, serve};
use flowscope_model::Telemetry;
use flowscope_model::internal_events::ServerKind;
use flowscope_otel_config::exporters::{ServerTlsConfig, UiExporterConfig};

#[derive(clap::Args)]
pub struct UiArgs {
    /// Base URL of a Prometheus HTTP query API (Prometheus, Thanos,
    /// Mimir's `/prometheus`, VictoriaMetrics): `http://prometheus:9090`.
    #[arg(long, value_name = "URL")]
    prometheus: String,
    /// Address to serve the pages on. Any address but loopback needs a
    /// token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8687")]
    endpoint: String,
    /// Bearer token every request must carry (default: $FLOWSCOPE_UI_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// A host name the pages may be reached by besides IP literals,
    /// localhost and the endpoint's host (repeatable).
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// How long one query to the storage may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    query_timeout: u64,
    /// Most series one page may read from the storage; a larger answer is
    /// refused with a message saying to narrow the time range.
    #[arg(long, default_value_t = 50_000)]
    max_series: usize,
    /// Read the recording rules of deploy/prometheus/flowscope-fleet-rules.yaml
    /// when the storage has their series (`auto`), or always the agents'
    /// raw series (`off`).
    #[arg(long, value_name = "auto|off", default_value = "auto", value_parser = ["auto", "off"])]
    recording_rules: String,
    /// Serve the pages over HTTPS with this PEM certificate chain (needs
    /// `--tls-key`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

pub fn command(args: UiArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: UiArgs) -> anyhow::Result<()> {
    let mut config = UiExporterConfig {
        endpoint: args.endpoint.clone(),
        allowed_hosts: args.allowed_hosts.clone(),
        ..Default::default()
    };
    config.auth.token = args.token.clone();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(ServerTlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
        });
    }
    let fleet = Fleet::new(
        &args.prometheus,
        Duration::from_secs(args.query_timeout.max(1)),
        args.max_series,
    )?
    .with_rules(args.recording_rules == "auto");
    let env = |k: &str| (k == TOKEN_ENV).then(|| std::env::var(k).ok()).flatten();
    // The server's refusals are counted here and shown by /api/status.
    let telemetry = Telemetry::new();
    let ui = Ui::new(&config, &env)?
        .with_fleet(fleet)
        .with_telemetry(telemetry.clone());
    let listener = ui
        .bind()
        .with_context(|| format!("serving the pages on {}", args.endpoint))?;
    tracing::info!(
        prometheus = %args.prometheus,
        "fleet web UI at {}://{}/",
        ui.scheme(),
        listener.local_addr()?
    );
    let server = Server {
        kind: ServerKind::Ui,
        limits: Limits::default(),
        telemetry,
    };
    let task = tokio::spawn(serve(listener, Arc::new(ui), server));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    task.abort();
    Ok(())
}
