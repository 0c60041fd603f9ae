//! Exporter settings (`exporters:` section).
//!
//! # Adding an exporter type
//! 1. Define `FooExporterConfig` below with `#[derive(Debug, Clone, PartialEq,
//!    Deserialize)]`, `#[serde(deny_unknown_fields)]` and doc comments on every
//!    field (they are the reference docs; mirror them in docs/configuration.md).
//!    Give it `#[serde(default)]` + `impl Default` if every field has a default.
//!    Validate values in the serde pass (`deserialize_with`), so errors carry
//!    the line and key path.
//! 2. Add a variant `Foo(FooExporterConfig)` to [`ExporterConfig`], its type
//!    string to [`ExporterConfig::KINDS`] and to the `match` in
//!    [`ExporterConfig::kind`], and one arm to the `match` in
//!    [`ExporterSeed::deserialize`]. Nothing outside this file changes.
//! 3. Add a test at the bottom that parses a minimal YAML for the new type.

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{component_body, unknown_kind};

/// The settings of one exporter, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExporterConfig {
    /// `console`: a live table in the terminal.
    Console(ConsoleExporterConfig),
    /// `file`: OTLP JSON lines in a file, rotated by size.
    File(FileExporterConfig),
}

impl ExporterConfig {
    /// Every exporter type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] = &["console", "file"];

    /// The component type of these settings (`console`, `file`).
    pub fn kind(&self) -> &'static str {
        match self {
            ExporterConfig::Console(_) => "console",
            ExporterConfig::File(_) => "file",
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
            other => unknown_kind(deserializer, "exporter", other, ExporterConfig::KINDS),
        }
    }
}

/// `console` exporter: every interval, a table of the busiest flows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleExporterConfig {
    /// Most rows shown per interval (the busiest flows first). Default 20,
    /// at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_rows: usize,
}

impl Default for ConsoleExporterConfig {
    fn default() -> Self {
        ConsoleExporterConfig { max_rows: 20 }
    }
}

/// `file` exporter: one OTLP `ExportMetricsServiceRequest` per line, in the
/// protobuf JSON mapping (like the Collector's file exporter).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// File to write (required). Relative paths are relative to the agent's
    /// working directory. Created if missing, appended to if present.
    #[serde(deserialize_with = "non_empty_path")]
    pub path: PathBuf,
    /// When to start a new file; see [`Rotation`].
    #[serde(default)]
    pub rotation: Rotation,
}

/// Size-based rotation of the `file` exporter's output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rotation {
    /// Rotate once the file reaches this many megabytes (MiB). Default 100,
    /// at least 1.
    #[serde(deserialize_with = "positive_u64")]
    pub max_megabytes: u64,
    /// Rotated files kept besides the current one; older ones are deleted.
    /// 0 keeps none. Default 3.
    pub max_backups: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_megabytes: 100,
            max_backups: 3,
        }
    }
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if value == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(value)
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = u64::deserialize(d)?;
    if value == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(value)
}

fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let value = PathBuf::deserialize(d)?;
    if value.as_os_str().is_empty() {
        return Err(de::Error::custom("path must not be empty"));
    }
    Ok(value)
}
