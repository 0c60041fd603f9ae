//! Exporter settings (`exporters:` section): one file per exporter type,
//! and `tls`, `queue` (sending queue, retry) and `checks` (URL, header and
//! listen-address checks, refused Collector settings) that they share.
//! Every public item is re-exported here, so `exporters::TlsClientConfig`
//! and the like keep their paths.
//!
//! # Adding an exporter type
//! 1. Define `FooExporterConfig` in `exporters/foo.rs` with `#[derive(Debug, Clone, PartialEq,
//!    Deserialize)]`, `#[serde(deny_unknown_fields)]` and doc comments on every
//!    field (they are the reference docs; mirror them in docs/configuration.md).
//!    Give it `#[serde(default)]` + `impl Default` if every field has a default.
//!    Validate values in the serde pass (`deserialize_with`), so errors carry
//!    the line and key path.
//! 2. Add a variant `Foo(FooExporterConfig)` to [`ExporterConfig`], its type
//!    string to [`ExporterConfig::KINDS`] and to the `match` in
//!    [`ExporterConfig::kind`], and one arm to the `match` in
//!    [`ExporterSeed::deserialize`], and `mod foo; pub use foo::*;` here.
//!    Nothing outside this directory changes.
//! 3. Add a test to `exporters/tests.rs` that parses a minimal YAML for the
//!    new type.

use serde::de::{DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{component_body, unknown_kind};

mod checks;
mod console;
mod file;
mod otlp;
mod otlp_http;
mod prometheus;
mod queue;
mod remote_write;
mod tls;
mod ui;

pub use checks::*;
pub use console::*;
pub use file::*;
pub use otlp::*;
pub use otlp_http::*;
pub use prometheus::*;
pub use queue::*;
pub use remote_write::*;
pub use tls::*;
pub use ui::*;

/// The settings of one exporter, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExporterConfig {
    /// `console`: a live table in the terminal.
    Console(ConsoleExporterConfig),
    /// `file`: OTLP JSON lines in a file, rotated by size.
    File(FileExporterConfig),
    /// `otlp` (alias `otlp_grpc`): OTLP over gRPC.
    Otlp(OtlpExporterConfig),
    /// `otlphttp` (alias `otlp_http`): OTLP over HTTP (protobuf or JSON) to
    /// `/v1/metrics`.
    OtlpHttp(OtlpHttpExporterConfig),
    /// `prometheus`: a pull endpoint in the Prometheus text format.
    Prometheus(PrometheusExporterConfig),
    /// `prometheusremotewrite`: pushes to Prometheus-compatible storage
    /// with the remote-write 1.0 protocol.
    PrometheusRemoteWrite(PrometheusRemoteWriteExporterConfig),
    /// `ui`: the last hour in memory, served as a web UI and JSON API.
    Ui(UiExporterConfig),
}

impl ExporterConfig {
    /// Every exporter type this build knows, as written in the config.
    /// `otlp_grpc` and `otlp_http` are the Collector's newer names of
    /// `otlp` and `otlphttp` (same settings).
    pub const KINDS: &'static [&'static str] = &[
        "console",
        "file",
        "otlp",
        "otlp_grpc",
        "otlphttp",
        "otlp_http",
        "prometheus",
        "prometheusremotewrite",
        "ui",
    ];

    /// The component type of these settings (`console`, `file`).
    pub fn kind(&self) -> &'static str {
        match self {
            ExporterConfig::Console(_) => "console",
            ExporterConfig::File(_) => "file",
            ExporterConfig::Otlp(_) => "otlp",
            ExporterConfig::OtlpHttp(_) => "otlphttp",
            ExporterConfig::Prometheus(_) => "prometheus",
            ExporterConfig::PrometheusRemoteWrite(_) => "prometheusremotewrite",
            ExporterConfig::Ui(_) => "ui",
        }
    }
}

/// Reads an exporter's settings for the type named by its id.
pub(crate) struct ExporterSeed<'a> {
    pub(crate) id: &'a ComponentId,
}

impl<'de> DeserializeSeed<'de> for ExporterSeed<'_> {
    type Value = ExporterConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.id.kind.as_str() {
            "console" => component_body(deserializer).map(ExporterConfig::Console),
            "file" => component_body(deserializer).map(ExporterConfig::File),
            "otlp" | "otlp_grpc" => component_body(deserializer).map(ExporterConfig::Otlp),
            "otlphttp" | "otlp_http" => component_body(deserializer).map(ExporterConfig::OtlpHttp),
            "prometheus" => component_body(deserializer).map(ExporterConfig::Prometheus),
            "prometheusremotewrite" => {
                component_body(deserializer).map(ExporterConfig::PrometheusRemoteWrite)
            }
            "ui" => component_body(deserializer).map(ExporterConfig::Ui),
            other => unknown_kind(deserializer, "exporter", other, ExporterConfig::KINDS),
        }
    }
}

impl ExporterConfig {
    /// The Collector settings this exporter's config sets that flowscope
    /// accepts without acting on (key paths relative to the exporter, e.g.
    /// `sending_queue.num_consumers`). Loading warns about them.
    /// The exporter's `sending_queue`, for those that have one.
    pub fn sending_queue_mut(&mut self) -> Option<&mut SendingQueueConfig> {
        match self {
            ExporterConfig::Otlp(c) => Some(&mut c.sending_queue),
            ExporterConfig::OtlpHttp(c) => Some(&mut c.sending_queue),
            ExporterConfig::PrometheusRemoteWrite(c) => Some(&mut c.sending_queue),
            _ => None,
        }
    }

    pub fn unused_collector_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            ExporterConfig::Otlp(c) => c.unused(&mut out),
            ExporterConfig::OtlpHttp(c) => c.unused(&mut out),
            ExporterConfig::Prometheus(c) => {
                c.send_timestamps.note("", "send_timestamps", &mut out);
                c.enable_open_metrics
                    .note("", "enable_open_metrics", &mut out);
            }
            ExporterConfig::PrometheusRemoteWrite(c) => c.unused(&mut out),
            ExporterConfig::Console(_) | ExporterConfig::File(_) | ExporterConfig::Ui(_) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod collector_tests;
