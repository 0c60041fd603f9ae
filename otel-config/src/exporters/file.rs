//! `file` exporter: OTLP JSON lines to a file, with rotation.

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::validate::{non_empty_path, positive_u64};

/// `file` exporter: one OTLP `ExportMetricsServiceRequest` per line, in the
/// protobuf JSON mapping (like the Collector's file exporter).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// File to write (required). Relative paths are relative to the agent's
    /// working directory. Created if missing, appended to if present; its
    /// directory must exist.
    #[serde(deserialize_with = "output_file")]
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

pub(super) fn output_file<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = non_empty_path(d)?;
    if path.is_dir() {
        return Err(de::Error::custom(format_args!(
            "`{}` is a directory; give a file path",
            path.display()
        )));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(de::Error::custom(format_args!(
            "the directory `{}` of `{}` does not exist",
            parent.display(),
            path.display()
        )));
    }
    Ok(path)
}
