//! The extensions `service.extensions` lists, started after the pipelines:
//! `health_check` serves the exporters' health (the answers of `--healthz`)
//! through the exporters' shared HTTP server, with its `Host` check and
//! limits. `file_storage` has nothing to run: loading already pointed each
//! queue that names it at its directory. `pprof` and `zpages` do nothing
//! (loading warned).

use anyhow::Context as _;
use flowscope_exporters::ExporterHandle;
use flowscope_model::Telemetry;
use flowscope_otel_config::{Config, ExtensionConfig};
use tokio::task::JoinHandle;

/// Starts every enabled extension that serves something; the tasks run
/// until aborted.
pub fn start(
    config: &Config,
    exporters: &[ExporterHandle],
    telemetry: &Telemetry,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for id in &config.service.extensions {
        if let Some(ExtensionConfig::HealthCheck(c)) = config.extensions.get(id) {
            let task = flowscope_exporters::serve_health(
                &c.endpoint,
                &c.path,
                exporters.to_vec(),
                telemetry,
            )
            .with_context(|| format!("extension {id}: serving {} on {}", c.path, c.endpoint))?;
            tracing::info!(extension = %id, endpoint = %c.endpoint, path = %c.path, "health_check serving");
            tasks.push(task);
        }
    }
    Ok(tasks)
}
