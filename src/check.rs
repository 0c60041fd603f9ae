//! What `flowscope run` would refuse before it touches the kernel, beyond
//! what loading the configuration already checked: the exporters' settings
//! resolved with the process's `OTEL_EXPORTER_OTLP_*` variables (including
//! `OTEL_EXPORTER_OTLP_PROTOCOL` asking for the other transport) and their
//! TLS material, the content of the `peer` processor's range files, the
//! exporters `service.telemetry` pull readers become, and what the
//! receivers need from each other (dynamic path tests need a flow source).
//! `validate` and `run` both call it, so they refuse the same things. It
//! binds, creates and connects nothing.

use anyhow::bail;
use flowscope_otel_config::processors::PeerProcessorConfig;
use flowscope_otel_config::telemetry::MetricReader;
use flowscope_otel_config::{ComponentId, Loaded, ProcessorConfig};
use flowscope_processors::ranges::RangeTable;

/// `file:line:col: section.id: error: cause: ...` for the first problem.
fn located(loaded: &Loaded, section: &str, id: &ComponentId, e: &dyn std::error::Error) -> String {
    let key = format!("{section}.{id}");
    // The outermost error only repeats the component ("exporter `x`").
    let (mut message, mut source) = match e.source() {
        Some(inner) => (inner.to_string(), inner.source()),
        None => (e.to_string(), None),
    };
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    match loaded.locations.get(&key) {
        Some(at) => format!("{at}: {key}: {message}"),
        None => format!("{key}: {message}"),
    }
}

/// Checks every component the pipelines use.
pub fn components(loaded: &Loaded) -> anyhow::Result<()> {
    let config = &loaded.config;
    let used = |list: fn(&flowscope_otel_config::Pipeline) -> &Vec<ComponentId>, id| {
        config
            .service
            .pipelines
            .values()
            .any(|p| list(p).contains(id))
    };
    let receivers = crate::pipeline::receivers(config)?;
    if let Err(e) = flowscope_receiver::component::check_supplies(
        receivers.iter().map(|(id, r)| (id.to_string(), *r)),
    ) {
        let key = format!("receivers.{}", e.id);
        match loaded.locations.get(&key) {
            Some(at) => bail!("{at}: {key}: {}", e.missing.missing()),
            None => bail!("{key}: {}", e.missing.missing()),
        }
    }
    for (id, exporter) in &config.exporters {
        if !used(|p| &p.exporters, id) {
            continue;
        }
        if let Err(e) = flowscope_exporters::check(id, exporter) {
            bail!(located(loaded, "exporters", id, &e));
        }
    }
    for (i, reader) in config.service.telemetry.metrics.readers.iter().enumerate() {
        // A periodic reader's OTLP settings were checked when loading.
        let MetricReader::Pull { exporter } = reader else {
            continue;
        };
        let id = ComponentId {
            kind: exporter.kind().to_owned(),
            name: Some(format!("readers[{i}]")),
        };
        if let Err(e) = flowscope_exporters::check(&id, exporter) {
            bail!(
                "service.telemetry.metrics.readers[{i}]: {:#}",
                anyhow::Error::new(e)
            );
        }
    }
    for (id, processor) in &config.processors {
        if let ProcessorConfig::Peer(peer) = processor
            && used(|p| &p.processors, id)
            && let Err(message) = range_files(peer)
        {
            let at = loaded
                .locations
                .get(&format!("processors.{id}"))
                .map(|at| format!("{at}: "))
                .unwrap_or_default();
            bail!("{at}processors.{id}.{message}");
        }
    }
    Ok(())
}

/// Parses the range files the `peer` processor would load at start.
fn range_files(c: &PeerProcessorConfig) -> Result<(), String> {
    type Add = fn(&mut RangeTable, &[u8]) -> Result<(), flowscope_processors::ranges::RangesError>;
    let files: [(&str, Option<&std::path::PathBuf>, Add); 3] = [
        (
            "aws_ip_ranges",
            c.aws_ip_ranges.as_ref(),
            RangeTable::add_aws,
        ),
        (
            "gcp_cloud_ranges",
            c.gcp_cloud_ranges.as_ref(),
            RangeTable::add_gcp,
        ),
        (
            "azure_service_tags",
            c.azure_service_tags.as_ref(),
            RangeTable::add_azure,
        ),
    ];
    for (key, path, add) in files {
        let Some(path) = path else { continue };
        let bytes = std::fs::read(path)
            .map_err(|e| format!("{key}: cannot read `{}`: {e}", path.display()))?;
        add(&mut RangeTable::new(), &bytes).map_err(|e| {
            let mut m = format!("{key}: `{}`: {e}", path.display());
            let mut s = std::error::Error::source(&e);
            while let Some(x) = s {
                m.push_str(&format!(": {x}"));
                s = x.source();
            }
            m
        })?;
    }
    Ok(())
}
