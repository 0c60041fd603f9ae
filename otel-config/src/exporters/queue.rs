//! The exporters' sending queue (in memory or persistent, in a storage
//! extension's directory) and retry on failure.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::de::duration;
use crate::validate::{positive_u64, positive_usize};

use super::checks::{Unused, multiplier, unit_interval};

/// The queue between the pipeline and the exporter (`sending_queue`).
///
/// Besides its own keys it takes the Collector's: `enabled: true`,
/// `num_consumers`, `sizer: requests`, `wait_for_result: false`,
/// `block_on_overflow: false`, `blocking: false` and `batch` are accepted
/// and ignored (one warning names them); `enabled: false`, `sizer: items`
/// or `bytes`, `wait_for_result: true`, `block_on_overflow: true`,
/// `blocking: true` are errors that say what to write instead. `storage`
/// may name a `file_storage` extension (see [`crate::extensions`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendingQueueConfig {
    /// Batches (one per interval) held while the backend is slow or down;
    /// when full the oldest is dropped and counted. Default 100, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub queue_size: usize,
    /// Directory of the persistent queue. When set, every batch is written
    /// there before the pipeline moves on and removed only once the backend
    /// accepted it (or rejected it for good), so a crash or restart loses
    /// nothing accepted. Unset: memory only. Created if missing. A
    /// Collector storage extension id (`file_storage`, `file_storage/x`)
    /// is never read as a relative path: loading replaces it with the
    /// exporter's subdirectory of that extension's `directory` (an error
    /// when it is not a `file_storage` extension listed in
    /// `service.extensions`).
    #[serde(deserialize_with = "storage_dir")]
    pub storage: Option<PathBuf>,
    /// Most MiB the persistent queue may take on disk; the oldest batches
    /// are dropped (and counted) beyond it. Default 256, at least 1.
    #[serde(deserialize_with = "positive_u64")]
    pub max_storage_mib: u64,
    /// Collector: `true` is accepted (flowscope always queues), `false` is
    /// an error.
    #[serde(deserialize_with = "queue_enabled")]
    pub enabled: Unused,
    /// Collector: accepted and ignored; one task per exporter sends the
    /// batches in order.
    pub num_consumers: Unused,
    /// Collector: `requests` is accepted (`queue_size` counts batches, one
    /// request each); `items` and `bytes` are errors.
    #[serde(deserialize_with = "queue_sizer")]
    pub sizer: Unused,
    /// Collector: `false` accepted; `true` is an error (the pipeline never
    /// waits on a backend).
    #[serde(deserialize_with = "must_be_false")]
    pub wait_for_result: Unused,
    /// Collector: `false` accepted; `true` is an error (a full queue drops
    /// its oldest batch, it never blocks the kernel reader).
    #[serde(deserialize_with = "must_be_false")]
    pub block_on_overflow: Unused,
    /// Collector (older name of `block_on_overflow`): as that.
    #[serde(deserialize_with = "must_be_false")]
    pub blocking: Unused,
    /// Collector: accepted and ignored; each interval is one batch already,
    /// split at `max_request_bytes`.
    pub batch: Unused,
}

impl Default for SendingQueueConfig {
    fn default() -> Self {
        SendingQueueConfig {
            queue_size: 100,
            storage: None,
            max_storage_mib: 256,
            enabled: Unused::default(),
            num_consumers: Unused::default(),
            sizer: Unused::default(),
            wait_for_result: Unused::default(),
            block_on_overflow: Unused::default(),
            blocking: Unused::default(),
            batch: Unused::default(),
        }
    }
}

impl SendingQueueConfig {
    pub(super) fn unused(&self, prefix: &str, out: &mut Vec<String>) {
        let p = format!("{prefix}sending_queue.");
        self.enabled.note(&p, "enabled", out);
        self.num_consumers.note(&p, "num_consumers", out);
        self.sizer.note(&p, "sizer", out);
        self.wait_for_result.note(&p, "wait_for_result", out);
        self.block_on_overflow.note(&p, "block_on_overflow", out);
        self.blocking.note(&p, "blocking", out);
        self.batch.note(&p, "batch", out);
    }
}

/// Types of the Collector's storage extensions (core and contrib). A
/// `storage` value naming one, alone or as `type/name`, is an extension id.
pub(super) const STORAGE_EXTENSIONS: &[&str] = &["file_storage", "db_storage", "redis_storage"];

/// Whether `value` is a Collector extension id (`file_storage`,
/// `file_storage/queue`) rather than a path: `^[a-z_]+(/[^/]*)?$` whose type
/// is a storage extension (or ends in `_storage`).
pub fn is_extension_id(value: &str) -> bool {
    let (kind, name) = match value.split_once('/') {
        Some((kind, name)) => (kind, Some(name)),
        None => (value, None),
    };
    let kind_ok = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    let name_ok = name.is_none_or(|n| !n.contains('/'));
    kind_ok && name_ok && (STORAGE_EXTENSIONS.contains(&kind) || kind.ends_with("_storage"))
}

pub(super) fn storage_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(d)?;
    if is_extension_id(&text) {
        // Resolved against `extensions:` once the whole file is read
        // (`resolve_storage` in lib.rs): never a relative path.
        return Ok(Some(PathBuf::from(text)));
    }
    if text.trim().is_empty() {
        return Err(de::Error::custom("must be a directory path"));
    }
    let path = PathBuf::from(&text);
    check_queue_dir(&path).map_err(de::Error::custom)?;
    Ok(Some(path))
}

/// The queue directory is usable: it is a directory, or can be created
/// (its nearest existing ancestor is a directory).
pub(crate) fn check_queue_dir(path: &std::path::Path) -> Result<(), String> {
    let mut at = Some(path);
    while let Some(p) = at {
        match std::fs::metadata(if p.as_os_str().is_empty() {
            ".".as_ref()
        } else {
            p
        }) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) if p == path => {
                return Err(format!(
                    "`{}` exists and is not a directory",
                    path.display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "`{}` cannot be created: `{}` is not a directory",
                    path.display(),
                    p.display()
                ));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                at = p.parent();
            }
            Err(e) => return Err(format!("`{}`: {e}", p.display())),
        }
    }
    Ok(())
}

pub(super) fn queue_enabled<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    if bool::deserialize(d)? {
        Ok(Unused::SET)
    } else {
        Err(de::Error::custom(
            "flowscope cannot turn the queue off: every exporter has one, so a slow backend \
             never stalls the pipeline; remove `enabled: false` (use `queue_size: 1` for the \
             smallest queue)",
        ))
    }
}

pub(super) fn queue_sizer<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    let text = String::deserialize(d)?;
    match text.as_str() {
        "requests" => Ok(Unused::SET),
        "items" | "bytes" => Err(de::Error::custom(format_args!(
            "`sizer: {text}` is not supported: flowscope's `queue_size` counts batches (one \
             per collection interval); remove `sizer` and give `queue_size` in batches"
        ))),
        _ => Err(de::Error::custom(format_args!(
            "unknown sizer `{text}`; flowscope's queue counts batches (`requests`)"
        ))),
    }
}

pub(super) fn must_be_false<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    if bool::deserialize(d)? {
        Err(de::Error::custom(
            "`true` is not supported: flowscope never makes the pipeline wait on a backend; \
             when the queue is full the oldest batch is dropped and counted. Remove the key \
             (raise `queue_size` or set `storage` to hold more)",
        ))
    } else {
        Ok(Unused::SET)
    }
}

/// Retries of a failed request (`retry_on_failure`), as the OTLP
/// specification prescribes: exponential backoff with jitter on retryable
/// errors only, honouring the server's `Retry-After`/`RetryInfo`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retry at all. Default true.
    pub enabled: bool,
    /// Wait before the first retry. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub initial_interval: Duration,
    /// Longest wait between two tries. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub max_interval: Duration,
    /// Give up on a request after this long since its first try (the points
    /// are counted as failed). Default `5m`.
    #[serde(deserialize_with = "duration")]
    pub max_elapsed_time: Duration,
    /// Growth of the wait per try. Default 1.5, at least 1.
    #[serde(deserialize_with = "multiplier")]
    pub multiplier: f64,
    /// Each wait is drawn from `wait * (1 ± randomization_factor)`.
    /// Default 0.5, between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}
