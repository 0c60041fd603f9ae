//! Extension settings (`extensions:` section and `service.extensions`).
//!
//! flowscope takes the Collector's extensions that mean something for an
//! agent whose data are flows:
//! - `health_check`: serves the agent's health (the same answers as
//!   `flowscope run --healthz`) at `endpoint` + `path`;
//! - `file_storage`: a directory an exporter's persistent queue lives in
//!   (`sending_queue: {storage: file_storage/x}`), one subdirectory per
//!   exporter, as the Collector keeps one file per component;
//! - `pprof` and `zpages`: accepted with one warning (they serve the Go
//!   runtime's profiles and the Collector's own pages; flowscope has neither).
//!
//! Any other type is an error naming the known ones. As in the Collector an
//! extension runs only when `service.extensions` lists it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{component_body, duration, unknown_kind};
use crate::exporters::Unused;

/// The settings of one extension, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExtensionConfig {
    /// `health_check`: see [`HealthCheckConfig`].
    HealthCheck(HealthCheckConfig),
    /// `file_storage`: see [`FileStorageConfig`].
    FileStorage(FileStorageConfig),
    /// `pprof`: accepted, does nothing (one warning).
    Pprof,
    /// `zpages`: accepted, does nothing (one warning).
    Zpages,
}

impl ExtensionConfig {
    /// Every extension type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] = &["health_check", "file_storage", "pprof", "zpages"];

    /// The component type of these settings (`health_check`).
    pub fn kind(&self) -> &'static str {
        match self {
            ExtensionConfig::HealthCheck(_) => "health_check",
            ExtensionConfig::FileStorage(_) => "file_storage",
            ExtensionConfig::Pprof => "pprof",
            ExtensionConfig::Zpages => "zpages",
        }
    }

    /// Why the extension changes nothing in flowscope, for those accepted
    /// only so that a Collector file loads.
    pub fn ignored_because(&self) -> Option<&'static str> {
        match self {
            ExtensionConfig::Pprof => Some(
                "pprof serves the Go runtime's profiles; flowscope is not a Go program \
                 (profile it with `perf` or `flowscope bench`)",
            ),
            ExtensionConfig::Zpages => Some(
                "zpages serves the Collector's own debug pages; flowscope's are the `ui` \
                 exporter and its self-telemetry",
            ),
            _ => None,
        }
    }
}

/// Reads an extension's settings for the type named by its id.
pub(crate) struct ExtensionSeed<'a> {
    pub(crate) id: &'a ComponentId,
}

impl<'de> DeserializeSeed<'de> for ExtensionSeed<'_> {
    type Value = ExtensionConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.id.kind.as_str() {
            "health_check" => component_body(deserializer).map(ExtensionConfig::HealthCheck),
            "file_storage" => component_body(deserializer).map(ExtensionConfig::FileStorage),
            "pprof" => de::IgnoredAny::deserialize(deserializer).map(|_| ExtensionConfig::Pprof),
            "zpages" => de::IgnoredAny::deserialize(deserializer).map(|_| ExtensionConfig::Zpages),
            other => unknown_kind(deserializer, "extension", other, ExtensionConfig::KINDS),
        }
    }
}

// ------------------------------------------------------------- health_check

/// `health_check` extension: `GET <path>` on `endpoint` answers 200 and a
/// JSON body when every exporter delivers, 503 otherwise: the answers of
/// `flowscope run --healthz`. The server checks `Host`, times out idle
/// clients and caps connections like every server of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `address:port` to listen on. Default `localhost:13133`, as in the
    /// Collector.
    #[serde(deserialize_with = "crate::exporters::listen_address")]
    pub endpoint: String,
    /// The path answered. Default `/`, as in the Collector; must start with
    /// `/`.
    #[serde(deserialize_with = "url_path")]
    pub path: String,
    /// Collector: accepted and ignored (the body is always the JSON status).
    pub response_body: Unused,
    /// Collector (deprecated): accepted and ignored; health always follows
    /// the exporters' deliveries.
    pub check_collector_pipeline: Unused,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "localhost:13133".to_owned(),
            path: "/".to_owned(),
            response_body: Unused::default(),
            check_collector_pipeline: Unused::default(),
        }
    }
}

fn url_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if !text.starts_with('/') || text.chars().any(|c| c.is_whitespace() || c == '?') {
        return Err(de::Error::custom(format_args!(
            "`{text}` is not a URL path; write one starting with `/`, e.g. `/health/status`"
        )));
    }
    Ok(text)
}

// ------------------------------------------------------------- file_storage

/// `file_storage` extension: a directory for the persistent queues of the
/// exporters whose `sending_queue.storage` names it. Each exporter keeps
/// its queue in its own subdirectory (`<directory>/exporter_<type>_<name>`),
/// so several exporters can share one extension. Created if missing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStorageConfig {
    /// Default `/var/lib/otelcol/file_storage`, as in the Collector.
    #[serde(deserialize_with = "storage_directory")]
    pub directory: PathBuf,
    /// Collector: accepted (flowscope creates the directory in any case).
    pub create_directory: Unused,
    /// Collector: accepted and ignored (the queue takes its lock at once).
    #[serde(deserialize_with = "ignored_duration")]
    pub timeout: Unused,
    /// Collector: accepted and ignored (every batch is fsynced).
    pub fsync: Unused,
    /// Collector: accepted and ignored (the queue removes each batch's file
    /// once delivered; there is nothing to compact).
    pub compaction: Unused,
    /// Collector: accepted and ignored (the queue's files are created
    /// `0600`).
    pub directory_permissions: Unused,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: PathBuf::from("/var/lib/otelcol/file_storage"),
            create_directory: Unused::default(),
            timeout: Unused::default(),
            fsync: Unused::default(),
            compaction: Unused::default(),
            directory_permissions: Unused::default(),
        }
    }
}

impl FileStorageConfig {
    /// The queue directory of the exporter `exporter` in this storage.
    pub fn queue_dir(&self, exporter: &ComponentId) -> PathBuf {
        let name: String = format!("exporter_{}", exporter.to_string().replace('/', "_"))
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.directory.join(name)
    }

    pub(crate) fn unused(&self, prefix: &str, out: &mut Vec<String>) {
        for (u, key) in [
            (self.create_directory, "create_directory"),
            (self.timeout, "timeout"),
            (self.fsync, "fsync"),
            (self.compaction, "compaction"),
            (self.directory_permissions, "directory_permissions"),
        ] {
            if u.set {
                out.push(format!("{prefix}{key}"));
            }
        }
    }
}

fn ignored_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    let _: Duration = duration(d)?;
    Ok(Unused { set: true })
}

fn storage_directory<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(de::Error::custom("must be a directory path"));
    }
    let path = PathBuf::from(&text);
    crate::exporters::check_queue_dir(&path).map_err(de::Error::custom)?;
    Ok(path)
}

impl fmt::Display for ExtensionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_dir_is_one_subdirectory_per_exporter() {
        let fs = FileStorageConfig {
            directory: "/q".into(),
            ..FileStorageConfig::default()
        };
        assert_eq!(
            fs.queue_dir(&ComponentId {
                kind: "otlp".into(),
                name: Some("gate:way".into())
            }),
            PathBuf::from("/q/exporter_otlp_gate_way")
        );
        assert_eq!(
            fs.queue_dir(&"otlphttp".parse().unwrap()),
            PathBuf::from("/q/exporter_otlphttp")
        );
    }
}
