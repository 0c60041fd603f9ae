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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{component_body, duration, unknown_kind};
use crate::validate::{non_empty_path, positive_f64, positive_u64, positive_usize};

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

/// Temporality of exported sums and histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Each point covers one interval (what the pipeline produces).
    Delta,
    /// Running totals since a per-series start time.
    Cumulative,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip (`Content-Encoding: gzip`, gRPC `grpc-encoding: gzip`).
    Gzip,
    /// zstd (`Content-Encoding: zstd`, gRPC `grpc-encoding: zstd`).
    Zstd,
}

/// Body encoding of `otlphttp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpEncoding {
    /// `application/x-protobuf` (default).
    #[default]
    Proto,
    /// `application/json`, the OTLP protobuf JSON mapping.
    Json,
}

/// TLS client settings, as the Collector's `configtls`. Unset fields fall
/// back to the `OTEL_EXPORTER_OTLP_*` environment variables, then to the
/// defaults named here. Files and inline PEM are read and parsed when the
/// configuration loads, so `flowscope validate` reports a missing or bad one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// `otlp` only: plaintext gRPC (no TLS at all). Default false. For
    /// `otlphttp` the endpoint's scheme decides (`http://` is plaintext).
    pub insecure: Option<bool>,
    /// Use TLS but accept any server certificate. For tests only. Default false.
    pub insecure_skip_verify: bool,
    /// PEM file of CA certificates to trust instead of the system pool and
    /// the built-in roots.
    #[serde(deserialize_with = "pem_file_certs")]
    pub ca_file: Option<PathBuf>,
    /// The same certificates inline (PEM text); not together with `ca_file`.
    #[serde(deserialize_with = "pem_certs")]
    pub ca_pem: Option<String>,
    /// With `ca_file`/`ca_pem`: trust the system pool and the built-in
    /// roots as well. Without them both are always trusted. Default false.
    pub include_system_ca_certs_pool: bool,
    /// PEM client certificate chain for mTLS (needs `key_file` or `key_pem`).
    #[serde(deserialize_with = "pem_file_certs")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate chain inline (PEM text).
    #[serde(deserialize_with = "pem_certs")]
    pub cert_pem: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(deserialize_with = "pem_file_key")]
    pub key_file: Option<PathBuf>,
    /// The private key inline (PEM text).
    #[serde(deserialize_with = "pem_key")]
    pub key_pem: Option<String>,
    /// Lowest TLS version offered: `"1.2"` (default) or `"1.3"`. `"1.0"` and
    /// `"1.1"` are refused (rustls implements neither).
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version offered: `"1.2"` or `"1.3"` (default).
    pub max_version: Option<TlsVersion>,
    /// Server name to verify instead of the endpoint's host.
    pub server_name_override: Option<String>,
    /// Collector setting accepted and ignored (a warning names it): the
    /// files are read once at start.
    pub reload_interval: Unused,
}

/// A TLS protocol version, written `"1.2"` or `"1.3"` as in the Collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim() {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            "1.0" | "1.1" => Err(de::Error::custom(format_args!(
                "TLS {text} is not supported (flowscope's TLS library, rustls, implements \
                 only 1.2 and 1.3); write \"1.2\" or \"1.3\""
            ))),
            _ => Err(de::Error::custom(format_args!(
                "unknown TLS version `{text}`; write \"1.2\" or \"1.3\""
            ))),
        }
    }
}

impl TlsClientConfig {
    /// Cross-field rules, checked when the configuration loads.
    fn check(&self) -> Result<(), String> {
        if self.ca_file.is_some() && self.ca_pem.is_some() {
            return Err("give either `ca_file` or `ca_pem`, not both".to_owned());
        }
        if self.cert_file.is_some() && self.cert_pem.is_some() {
            return Err("give either `cert_file` or `cert_pem`, not both".to_owned());
        }
        if self.key_file.is_some() && self.key_pem.is_some() {
            return Err("give either `key_file` or `key_pem`, not both".to_owned());
        }
        let cert = self.cert_file.is_some() || self.cert_pem.is_some();
        let key = self.key_file.is_some() || self.key_pem.is_some();
        if cert != key {
            return Err(
                "a client certificate needs its key: give `cert_file` (or `cert_pem`) \
                 together with `key_file` (or `key_pem`)"
                    .to_owned(),
            );
        }
        if let (Some(min), Some(max)) = (self.min_version, self.max_version)
            && min > max
        {
            return Err("`min_version` is above `max_version`".to_owned());
        }
        Ok(())
    }

    fn unused(&self, prefix: &str, out: &mut Vec<String>) {
        self.reload_interval.note(prefix, "reload_interval", out);
    }
}

fn tls_settings<'de, D: Deserializer<'de>>(d: D) -> Result<TlsClientConfig, D::Error> {
    let tls = TlsClientConfig::deserialize(d)?;
    tls.check().map_err(de::Error::custom)?;
    Ok(tls)
}

/// Parses PEM certificates; the error says what is wrong.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        certs.push(c.map_err(|e| format!("bad PEM certificate: {e}"))?);
    }
    if certs.is_empty() {
        return Err("no PEM certificate (`-----BEGIN CERTIFICATE-----`) found".to_owned());
    }
    Ok(certs)
}

/// Parses one PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn parse_pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (`-----BEGIN PRIVATE KEY-----`) found".to_owned()
        }
        e => format!("bad PEM private key: {e}"),
    })
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// A PEM certificate file, read and parsed when the configuration loads
/// (also the path receiver's `ca_file`).
pub(crate) fn pem_file_certs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = non_empty_path(d)?;
    let bytes = read_file(&path).map_err(de::Error::custom)?;
    parse_pem_certs(&bytes)
        .map_err(|e| de::Error::custom(format_args!("`{}`: {e}", path.display())))?;
    Ok(Some(path))
}

fn pem_file_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = non_empty_path(d)?;
    let bytes = read_file(&path).map_err(de::Error::custom)?;
    parse_pem_key(&bytes)
        .map_err(|e| de::Error::custom(format_args!("`{}`: {e}", path.display())))?;
    Ok(Some(path))
}

fn pem_certs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let pem = String::deserialize(d)?;
    parse_pem_certs(pem.as_bytes()).map_err(de::Error::custom)?;
    Ok(Some(pem))
}

fn pem_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let pem = String::deserialize(d)?;
    parse_pem_key(pem.as_bytes()).map_err(de::Error::custom)?;
    Ok(Some(pem))
}

/// A Collector setting flowscope accepts without acting on it, because it
/// changes nothing that matters here: whether the file sets it. Loading
/// warns once, naming every such key that is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unused {
    /// The key is in the file.
    pub set: bool,
}

impl Unused {
    const SET: Unused = Unused { set: true };

    fn note(self, prefix: &str, key: &str, out: &mut Vec<String>) {
        if self.set {
            out.push(format!("{prefix}{key}"));
        }
    }
}

impl<'de> Deserialize<'de> for Unused {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d)?;
        Ok(Unused::SET)
    }
}

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
    fn unused(&self, prefix: &str, out: &mut Vec<String>) {
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
const STORAGE_EXTENSIONS: &[&str] = &["file_storage", "db_storage", "redis_storage"];

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

fn storage_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
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

fn queue_enabled<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
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

fn queue_sizer<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
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

fn must_be_false<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
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

/// A Collector setting that would change behaviour flowscope does not
/// have; the message says what to write instead.
fn rejected<'de, D: Deserializer<'de>>(d: D, message: &'static str) -> Result<Unused, D::Error> {
    de::IgnoredAny::deserialize(d)?;
    Err(de::Error::custom(message))
}

fn reject_auth<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "flowscope has no authenticator extensions; send the credential as a header \
         instead, e.g. `headers: {authorization: \"Bearer ${env:TOKEN}\"}`",
    )
}

fn reject_authority<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "not supported: flowscope sends the endpoint's host:port as the authority; to verify \
         the server under another name set `tls.server_name_override`",
    )
}

fn reject_proxy<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "flowscope does not send through a proxy; point `endpoint` at the backend or at a \
         Collector that forwards",
    )
}

fn reject_const_labels<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "not supported: add the labels as Resource attributes instead \
         (`resource_to_telemetry_conversion` copies them onto every series)",
    )
}

fn reject_server_tls<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "the prometheus exporter serves plain HTTP; put a TLS-terminating proxy in front, or \
         listen on 127.0.0.1 only",
    )
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

/// `otlp` exporter: OTLP/gRPC (`opentelemetry.proto.collector.metrics.v1.MetricsService/Export`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporterConfig {
    /// `host:port` or `http(s)://host:port`. Default from
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`/`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else `https://localhost:4317`.
    #[serde(deserialize_with = "grpc_endpoint")]
    pub endpoint: Option<String>,
    /// TLS settings.
    #[serde(deserialize_with = "tls_settings")]
    pub tls: TlsClientConfig,
    /// Headers (gRPC metadata) sent with every request, e.g. an API key:
    /// `api-key: ${env:KEY}`. Added to `OTEL_EXPORTER_OTLP_HEADERS`.
    #[serde(deserialize_with = "grpc_headers")]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Option<Compression>,
    /// Deadline of one request. Default `10s` (or `OTEL_EXPORTER_OTLP_TIMEOUT`).
    #[serde(deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// `delta` (default) or `cumulative` (or
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`).
    pub temporality: Option<Temporality>,
    /// Cumulative only: forget a series not seen for this long, so memory
    /// stays bounded (it restarts with a new start time). Default `5m`.
    #[serde(deserialize_with = "opt_duration")]
    pub series_idle_timeout: Option<Duration>,
    /// Largest encoded request in bytes; bigger batches are split. Default
    /// 4194304 (4 MiB, gRPC's default message limit), at least 1024.
    #[serde(deserialize_with = "opt_request_size")]
    pub max_request_bytes: Option<usize>,
    /// The queue in front of the exporter.
    pub sending_queue: SendingQueueConfig,
    /// Retries of failed requests.
    pub retry_on_failure: RetryConfig,
    /// Collector, ignored: one connection to the endpoint's address.
    pub balancer_name: Unused,
    /// Collector, ignored: HTTP/2 keepalive pings.
    pub keepalive: Unused,
    /// Collector, ignored: a request waits for the connection anyway.
    pub wait_for_ready: Unused,
    /// Collector, ignored: socket buffer sizes.
    pub read_buffer_size: Unused,
    /// Collector, ignored: socket buffer sizes.
    pub write_buffer_size: Unused,
    /// Collector, ignored: compression level.
    pub compression_params: Unused,
    /// Collector: an error (no authenticator extensions; use `headers`).
    #[serde(deserialize_with = "reject_auth")]
    pub auth: Unused,
    /// Collector: an error (see `tls.server_name_override`).
    #[serde(deserialize_with = "reject_authority")]
    pub authority: Unused,
}

/// `otlphttp` exporter: OTLP/HTTP `POST` of protobuf or JSON.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; requests go to `<endpoint>/v1/metrics`. Default from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `https://localhost:4318`.
    #[serde(deserialize_with = "http_url")]
    pub endpoint: Option<String>,
    /// Full URL of the metrics endpoint, used as is (wins over `endpoint`).
    /// Default from `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
    #[serde(deserialize_with = "http_url")]
    pub metrics_endpoint: Option<String>,
    /// `proto` (default) or `json`.
    pub encoding: HttpEncoding,
    /// TLS settings (`insecure` does not apply: use an `http://` endpoint).
    #[serde(deserialize_with = "tls_settings")]
    pub tls: TlsClientConfig,
    /// HTTP headers sent with every request, e.g.
    /// `Authorization: Bearer ${env:TOKEN}`.
    #[serde(deserialize_with = "http_headers")]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Option<Compression>,
    /// Deadline of one request. Default `10s`.
    #[serde(deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// `delta` (default) or `cumulative`.
    pub temporality: Option<Temporality>,
    /// Cumulative only: forget series idle this long. Default `5m`.
    #[serde(deserialize_with = "opt_duration")]
    pub series_idle_timeout: Option<Duration>,
    /// Largest encoded request in bytes; bigger batches are split. Default
    /// 4194304, at least 1024.
    #[serde(deserialize_with = "opt_request_size")]
    pub max_request_bytes: Option<usize>,
    /// The queue in front of the exporter.
    pub sending_queue: SendingQueueConfig,
    /// Retries of failed requests.
    pub retry_on_failure: RetryConfig,
    /// Collector, ignored: flowscope sends metrics only.
    pub traces_endpoint: Unused,
    /// Collector, ignored: flowscope sends metrics only.
    pub logs_endpoint: Unused,
    /// Collector, ignored: flowscope sends metrics only.
    pub profiles_endpoint: Unused,
    /// Collector, ignored: connection pool and buffer tuning.
    pub read_buffer_size: Unused,
    /// Collector, ignored.
    pub write_buffer_size: Unused,
    /// Collector, ignored.
    pub max_idle_conns: Unused,
    /// Collector, ignored.
    pub max_idle_conns_per_host: Unused,
    /// Collector, ignored.
    pub max_conns_per_host: Unused,
    /// Collector, ignored.
    pub idle_conn_timeout: Unused,
    /// Collector, ignored.
    pub disable_keep_alives: Unused,
    /// Collector, ignored.
    pub http2_read_idle_timeout: Unused,
    /// Collector, ignored.
    pub http2_ping_timeout: Unused,
    /// Collector, ignored: compression level.
    pub compression_params: Unused,
    /// Collector, ignored: no cookies are kept.
    pub cookies: Unused,
    /// Collector: an error (no authenticator extensions; use `headers`).
    #[serde(deserialize_with = "reject_auth")]
    pub auth: Unused,
    /// Collector: an error (no proxy support).
    #[serde(deserialize_with = "reject_proxy")]
    pub proxy_url: Unused,
}

/// `prometheus` exporter: serves `/metrics` in the Prometheus text format,
/// names translated as the OpenTelemetry-to-Prometheus compatibility
/// specification says (`network.flow.io` in `By` -> `network_flow_io_bytes_total`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusExporterConfig {
    /// `address:port` to listen on. Default `127.0.0.1:9464`.
    #[serde(deserialize_with = "listen_address")]
    pub endpoint: String,
    /// Prefix added to every metric name (`namespace_`). Default none.
    pub namespace: Option<String>,
    /// Add type and unit suffixes (`_total`, `_bytes`). Default true.
    pub add_metric_suffixes: bool,
    /// Copy every Resource attribute (service.name, process.*) onto the
    /// series as labels. Default true: flowscope's Resources are its local
    /// workloads, and without them series of different processes collide.
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// Forget a series not updated for this long. Default `5m`.
    #[serde(deserialize_with = "duration")]
    pub metric_expiration: Duration,
    /// Collector, ignored: samples carry no timestamps.
    pub send_timestamps: Unused,
    /// Collector, ignored: the text format 0.0.4 is served.
    pub enable_open_metrics: Unused,
    /// Collector: an error (use Resource attributes).
    #[serde(deserialize_with = "reject_const_labels")]
    pub const_labels: Unused,
    /// Collector: an error (plain HTTP only).
    #[serde(deserialize_with = "reject_server_tls")]
    pub tls: Unused,
    /// Host names (`name` or `name:port`) a scraper may use besides IP
    /// literals, `localhost` and the endpoint's host; any other `Host` is
    /// answered 403 (DNS rebinding, as for the `ui` exporter). Default none.
    pub allowed_hosts: Vec<String>,
}

/// `prometheusremotewrite` exporter: `POST`s the metrics, translated to
/// Prometheus names and labels exactly as the `prometheus` exporter does,
/// as snappy-compressed protobuf `WriteRequest`s (remote write 1.0) to
/// Prometheus (`--web.enable-remote-write-receiver`), Mimir, Cortex, Thanos
/// Receive or VictoriaMetrics. Keys and defaults as the Collector's exporter
/// of that name, except where noted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRemoteWriteExporterConfig {
    /// The remote-write URL (required), e.g.
    /// `http://127.0.0.1:9090/api/v1/write`; `https://` uses `tls`.
    #[serde(deserialize_with = "required_http_url")]
    pub endpoint: String,
    /// HTTP headers sent with every request, e.g. `X-Scope-OrgID: team-a`
    /// (Mimir's tenant) or `Authorization: Bearer ${env:TOKEN}`.
    #[serde(default, deserialize_with = "http_headers")]
    pub headers: BTreeMap<String, String>,
    /// TLS settings (`insecure` does not apply: use an `http://` endpoint).
    #[serde(default, deserialize_with = "tls_settings")]
    pub tls: TlsClientConfig,
    /// Deadline of one request. Default `5s`.
    #[serde(default = "remote_write_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The queue in front of the exporter (`storage` makes it persistent).
    #[serde(default)]
    pub sending_queue: SendingQueueConfig,
    /// Retries of requests answered 5xx or 429, or not answered at all.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// Copy every Resource attribute onto every series as a label. Default
    /// false (as in the Collector): the Resource goes on `target_info`.
    #[serde(default)]
    pub resource_to_telemetry_conversion: RemoteWriteResourceToTelemetry,
    /// Labels added to every series, e.g. `cluster: prod-eu` (a label the
    /// series already has keeps its own value). Names must be valid
    /// Prometheus label names not starting with `__`; values not empty.
    #[serde(default, deserialize_with = "external_labels")]
    pub external_labels: BTreeMap<String, String>,
    /// Prefix added to every metric name (`namespace_`). Default none.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Add type and unit suffixes (`_total`, `_bytes`). Default true.
    #[serde(default = "yes")]
    pub add_metric_suffixes: bool,
    /// One `target_info` series per Resource, carrying its attributes.
    #[serde(default)]
    pub target_info: TargetInfo,
    /// Collector: its own queue of concurrent requests. flowscope sends one
    /// request at a time, in order, from `sending_queue` (out-of-order
    /// samples would be refused by the storage), so its keys (`enabled`,
    /// `queue_size`, `num_consumers`) are accepted and ignored.
    #[serde(default)]
    pub remote_write_queue: RemoteWriteQueueConfig,
    /// Largest uncompressed `WriteRequest` in bytes; a bigger batch is split
    /// into several requests (whole data points, in order). Default 3000000
    /// (the Collector's), at least 1024.
    #[serde(default = "remote_write_max_batch", deserialize_with = "request_size")]
    pub max_batch_size_bytes: usize,
}

fn yes() -> bool {
    true
}

fn remote_write_timeout() -> Duration {
    Duration::from_secs(5)
}

fn remote_write_max_batch() -> usize {
    3_000_000
}

/// `prometheusremotewrite.resource_to_telemetry_conversion`: as the
/// `prometheus` exporter's, but off by default (the Collector's default for
/// this exporter).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteResourceToTelemetry {
    /// Default false.
    pub enabled: bool,
}

/// `prometheusremotewrite.target_info`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetInfo {
    /// Send one `target_info` series (value 1) per Resource, labelled with
    /// its attributes plus `job`/`instance`. Default true.
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        TargetInfo { enabled: true }
    }
}

/// `prometheusremotewrite.remote_write_queue`: the Collector's concurrency
/// settings, accepted and ignored (one warning names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteQueueConfig {
    /// Collector, ignored: the `sending_queue` is always on.
    pub enabled: Unused,
    /// Collector, ignored: `sending_queue.queue_size` bounds the queue.
    pub queue_size: Unused,
    /// Collector, ignored: one request at a time keeps samples in order.
    pub num_consumers: Unused,
}

impl PrometheusRemoteWriteExporterConfig {
    /// The settings with every default and `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        PrometheusRemoteWriteExporterConfig {
            endpoint: endpoint.into(),
            headers: BTreeMap::new(),
            tls: TlsClientConfig::default(),
            timeout: remote_write_timeout(),
            sending_queue: SendingQueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            resource_to_telemetry_conversion: RemoteWriteResourceToTelemetry::default(),
            external_labels: BTreeMap::new(),
            namespace: None,
            add_metric_suffixes: true,
            target_info: TargetInfo::default(),
            remote_write_queue: RemoteWriteQueueConfig::default(),
            max_batch_size_bytes: remote_write_max_batch(),
        }
    }

    fn unused(&self, out: &mut Vec<String>) {
        self.tls.unused("tls.", out);
        self.sending_queue.unused("", out);
        let q = &self.remote_write_queue;
        q.enabled.note("remote_write_queue.", "enabled", out);
        q.queue_size.note("remote_write_queue.", "queue_size", out);
        q.num_consumers
            .note("remote_write_queue.", "num_consumers", out);
    }
}

/// Whether `name` is a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn external_labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (k, v) in &map {
        if !is_label_name(k) {
            return Err(de::Error::custom(format_args!(
                "`{k}` is not a Prometheus label name (letters, digits and `_`, not starting \
                 with a digit)"
            )));
        }
        if k.starts_with("__") {
            return Err(de::Error::custom(format_args!(
                "`{k}`: label names starting with `__` are reserved for Prometheus"
            )));
        }
        if v.is_empty() {
            return Err(de::Error::custom(format_args!(
                "the value of `{k}` is empty; Prometheus treats an empty label as absent"
            )));
        }
    }
    Ok(map)
}

fn required_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    parse_http_url(&text).map_err(de::Error::custom)?;
    Ok(text)
}

fn request_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    opt_request_size(d).map(|v| v.unwrap_or(1024))
}

impl OtlpExporterConfig {
    fn unused(&self, out: &mut Vec<String>) {
        self.tls.unused("tls.", out);
        self.sending_queue.unused("", out);
        self.balancer_name.note("", "balancer_name", out);
        self.keepalive.note("", "keepalive", out);
        self.wait_for_ready.note("", "wait_for_ready", out);
        self.read_buffer_size.note("", "read_buffer_size", out);
        self.write_buffer_size.note("", "write_buffer_size", out);
        self.compression_params.note("", "compression_params", out);
    }
}

impl OtlpHttpExporterConfig {
    fn unused(&self, out: &mut Vec<String>) {
        self.tls.unused("tls.", out);
        self.sending_queue.unused("", out);
        for (u, key) in [
            (self.traces_endpoint, "traces_endpoint"),
            (self.logs_endpoint, "logs_endpoint"),
            (self.profiles_endpoint, "profiles_endpoint"),
            (self.read_buffer_size, "read_buffer_size"),
            (self.write_buffer_size, "write_buffer_size"),
            (self.max_idle_conns, "max_idle_conns"),
            (self.max_idle_conns_per_host, "max_idle_conns_per_host"),
            (self.max_conns_per_host, "max_conns_per_host"),
            (self.idle_conn_timeout, "idle_conn_timeout"),
            (self.disable_keep_alives, "disable_keep_alives"),
            (self.http2_read_idle_timeout, "http2_read_idle_timeout"),
            (self.http2_ping_timeout, "http2_ping_timeout"),
            (self.compression_params, "compression_params"),
            (self.cookies, "cookies"),
        ] {
            u.note("", key, out);
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

/// The gRPC endpoint as [`OtlpExporterConfig::endpoint`] takes it: the URL
/// it stands for (`host:port` gets `https://`, or `http://` if `insecure`
/// is decided later; the scheme does not change what is checked here).
///
/// # Errors
/// A message saying what is wrong and what to write.
pub fn parse_grpc_endpoint(endpoint: &str) -> Result<http::Uri, String> {
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    };
    let uri = parse_url(endpoint, &url)?;
    Ok(uri)
}

/// An `http://` or `https://` URL with a host.
///
/// # Errors
/// A message saying what is wrong and what to write.
pub fn parse_http_url(url: &str) -> Result<http::Uri, String> {
    parse_url(url, url)
}

fn parse_url(written: &str, url: &str) -> Result<http::Uri, String> {
    let example = "write `host:port` or `http(s)://host:port`";
    if !url.contains("://") {
        return Err(format!(
            "`{written}` has no scheme; write `http(s)://host:port`"
        ));
    }
    if let Some((scheme, _)) = url.split_once("://")
        && !matches!(scheme, "http" | "https")
    {
        return Err(format!(
            "`{written}`: scheme `{scheme}` is not supported, only `http` and `https`; {example}"
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{written}` is not a valid URL ({e}); {example}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "`{written}`: scheme `{other}` is not supported, only `http` and `https`; \
                 {example}"
            ));
        }
        None => return Err(format!("`{written}` has no scheme; {example}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{written}` has no host; {example}"));
    }
    Ok(uri)
}

fn grpc_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    parse_grpc_endpoint(&text).map_err(de::Error::custom)?;
    Ok(Some(text))
}

fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    parse_http_url(&text).map_err(de::Error::custom)?;
    Ok(Some(text))
}

/// Checks one header as [`OtlpExporterConfig::headers`] (`grpc`) or
/// [`OtlpHttpExporterConfig::headers`] send it.
///
/// # Errors
/// A message naming the header and what is wrong.
pub fn check_header(name: &str, value: &str, grpc: bool) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "`{name}` is not a valid header name (letters, digits and `!#$%&'*+-.^_`|~`)"
        ));
    }
    if grpc && name.to_ascii_lowercase().ends_with("-bin") {
        return Err(format!(
            "`{name}`: gRPC metadata ending in `-bin` is binary, which headers cannot carry"
        ));
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "the value of header `{name}` may only hold visible ASCII characters, spaces and tabs"
        ));
    }
    Ok(())
}

fn headers<'de, D: Deserializer<'de>>(
    d: D,
    grpc: bool,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (k, v) in &map {
        check_header(k, v, grpc).map_err(de::Error::custom)?;
    }
    Ok(map)
}

fn grpc_headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    headers(d, true)
}

fn http_headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    headers(d, false)
}

/// A server's `address:port` (the `prometheus` exporter, `health_check`,
/// a `pull` reader).
pub(crate) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    check_listen_address(&text).map_err(de::Error::custom)?;
    Ok(text)
}

/// Why `text` is not an address to listen on, if it is not.
pub(crate) fn check_listen_address(text: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let fail = |why: String| {
        format!(
            "`{text}` is not an address to listen on ({why}); write `address:port`, e.g. \
             `127.0.0.1:9464` or `[::]:9464`"
        )
    };
    if text.contains("://") {
        return Err(fail("no scheme".to_owned()));
    }
    let addrs = text.to_socket_addrs().map_err(|e| fail(e.to_string()))?;
    if addrs.count() == 0 {
        return Err(fail("it resolves to no address".to_owned()));
    }
    Ok(())
}

/// `resource_to_telemetry_conversion` (as in the Collector).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceToTelemetry {
    /// Default true.
    pub enabled: bool,
}

impl Default for ResourceToTelemetry {
    fn default() -> Self {
        ResourceToTelemetry { enabled: true }
    }
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        PrometheusExporterConfig {
            endpoint: "127.0.0.1:9464".to_string(),
            namespace: None,
            add_metric_suffixes: true,
            resource_to_telemetry_conversion: ResourceToTelemetry::default(),
            metric_expiration: Duration::from_secs(300),
            send_timestamps: Unused::default(),
            enable_open_metrics: Unused::default(),
            const_labels: Unused::default(),
            tls: Unused::default(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// `ui` exporter: keeps the last `retention` of metrics in memory and serves
/// the Network Map, Network Analytics and Network Health pages and their
/// JSON API (docs/ui.md). Read-only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiExporterConfig {
    /// `address:port` to listen on. Default `127.0.0.1:8686` (loopback).
    /// Any other address needs `auth.token`: the exporter refuses to start
    /// without one.
    pub endpoint: String,
    /// How much history is kept. Default `1h`, between `1m` and `24h`.
    #[serde(deserialize_with = "ui_retention")]
    pub retention: Duration,
    /// The most recent span kept at the collection interval's resolution;
    /// older data is rolled up per minute. Default `10m`, at most
    /// `retention`.
    #[serde(deserialize_with = "duration")]
    pub full_resolution: Duration,
    /// Most series (Resource, metric, attributes) held; points of new
    /// series beyond it are dropped and counted
    /// (`flowscope.exporter.failed{error.type="series_limit"}`). Default
    /// 10000, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_series: usize,
    /// Access control.
    pub auth: UiAuthConfig,
    /// Host names (`name` or `name:port`) the pages may be reached by,
    /// besides IP literals, `localhost` and the endpoint's own host: a
    /// reverse proxy's or a DNS name of the node (`flowscope.example.com`).
    /// A request whose `Host` (or `Origin`) names anything else is answered
    /// 403, so a page whose DNS name is rebound to this address cannot read
    /// the API. Default none.
    pub allowed_hosts: Vec<String>,
    /// API queries answered at once; one more is answered 503 (try again)
    /// rather than queued. Default 4, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_concurrent_queries: usize,
    /// Stored slots one API query may read; a query over more is answered
    /// 413 naming `range` to narrow. Default 2000000 (an hour of the
    /// default 10,000 series is about 1.1 million), at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_query_slots: usize,
    /// Thresholds of the Network Health findings.
    pub health: UiHealthConfig,
    /// Serve the pages over HTTPS with this certificate. Default none
    /// (plain HTTP, meant for loopback or behind a TLS-terminating proxy).
    #[serde(deserialize_with = "server_tls")]
    pub tls: Option<ServerTlsConfig>,
}

/// TLS server settings (`ui.tls`), as the Collector's `confighttp` server
/// `tls`: a certificate chain and its key, both PEM files, read and parsed
/// when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// PEM certificate chain the server presents (leaf first).
    #[serde(deserialize_with = "pem_file_certs")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "pem_file_key")]
    pub key_file: Option<PathBuf>,
}

fn server_tls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ServerTlsConfig>, D::Error> {
    let tls = ServerTlsConfig::deserialize(d)?;
    if tls.cert_file.is_none() || tls.key_file.is_none() {
        return Err(de::Error::custom(
            "serving HTTPS needs both `cert_file` and `key_file` (PEM files)",
        ));
    }
    Ok(Some(tls))
}

impl Default for UiExporterConfig {
    fn default() -> Self {
        UiExporterConfig {
            endpoint: "127.0.0.1:8686".to_string(),
            retention: Duration::from_secs(3600),
            full_resolution: Duration::from_secs(600),
            max_series: 10_000,
            auth: UiAuthConfig::default(),
            allowed_hosts: Vec::new(),
            max_concurrent_queries: 4,
            max_query_slots: 2_000_000,
            health: UiHealthConfig::default(),
            tls: None,
        }
    }
}

/// `ui.auth`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiAuthConfig {
    /// Bearer token every request must carry (`Authorization: Bearer
    /// <token>`, or the cookie the page sets after `/?token=<token>`).
    /// Unset: the `FLOWSCOPE_UI_TOKEN` environment variable, else none
    /// (allowed on loopback only).
    pub token: Option<String>,
}

/// `ui.health`: when a Network Health finding is raised.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiHealthConfig {
    /// Retransmitted segments per transmitted packet above which a
    /// dependency is reported. Default 0.02 (2 %), between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub retransmit_ratio: f64,
    /// Transmitted packets a dependency needs before its retransmit ratio
    /// is judged (a handful of packets says nothing). Default 100.
    pub min_packets: u64,
    /// Probe loss (lost / sent) above which a network path is reported
    /// lossy. Default 0.05 (5 %), between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub path_loss_ratio: f64,
    /// Failed DNS lookups, failed connections or resets a client/server
    /// pair needs in the time range to be reported. Default 1.
    #[serde(deserialize_with = "positive_u64")]
    pub min_failures: u64,
    /// A path test's TLS certificate with less time left than this is a
    /// warning (an expired one is critical). Default `14d`.
    #[serde(deserialize_with = "duration")]
    pub certificate_warning: Duration,
    /// A rise over the baseline (docs/health.md, "Baselines") is a finding
    /// when this range's value is at least this many times the baseline's:
    /// the retransmit ratio, failed connections, failed DNS lookups.
    /// Default 3, at least 1.
    #[serde(deserialize_with = "multiplier")]
    pub baseline_ratio: f64,
    /// Events (retransmitted segments, failed connections, failed lookups)
    /// a client/server pair needs in this range before a rise over its
    /// baseline is a finding. Default 20, at least 1.
    #[serde(deserialize_with = "positive_u64")]
    pub baseline_min_count: u64,
    /// New connections per second from one client to one server, over the
    /// range, at or above which the pair may be churning. Default 5, a
    /// positive number.
    #[serde(deserialize_with = "positive_f64")]
    pub churn_connections_per_second: f64,
    /// Share of the pair's closed connections that lasted at most 100 ms
    /// (`flowscope.tcp.connection.duration`) at or above which the rate
    /// above is churn. Default 0.5, between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub churn_short_ratio: f64,
}

impl Default for UiHealthConfig {
    fn default() -> Self {
        UiHealthConfig {
            retransmit_ratio: 0.02,
            min_packets: 100,
            path_loss_ratio: 0.05,
            min_failures: 1,
            certificate_warning: Duration::from_secs(14 * 86_400),
            baseline_ratio: 3.0,
            baseline_min_count: 20,
            churn_connections_per_second: 5.0,
            churn_short_ratio: 0.5,
        }
    }
}

fn ui_retention<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value < Duration::from_secs(60) || value > Duration::from_secs(86_400) {
        return Err(de::Error::custom("must be between 1m and 24h"));
    }
    Ok(value)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn opt_request_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let value = usize::deserialize(d)?;
    if value < 1024 {
        return Err(de::Error::custom("must be at least 1024 bytes"));
    }
    Ok(Some(value))
}

fn multiplier<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !value.is_finite() || value < 1.0 {
        return Err(de::Error::custom("must be a number of at least 1"));
    }
    Ok(value)
}

fn unit_interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(de::Error::custom("must be between 0 and 1"));
    }
    Ok(value)
}

fn output_file<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str_with_env;

    fn exporter(yaml_body: &str, id: &str) -> Result<ExporterConfig, String> {
        let text = format!(
            "receivers:\n  ebpf:\nexporters:\n  {id}:\n{yaml_body}\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [{id}]\n"
        );
        let loaded = load_str_with_env(&text, "t.yaml", &|v| (v == "KEY").then(|| "s3cret".into()))
            .map_err(|e| e.to_string())?;
        let cid: ComponentId = id.parse().map_err(|e: crate::IdError| e.to_string())?;
        loaded
            .config
            .exporters
            .get(&cid)
            .cloned()
            .ok_or_else(|| "missing".to_string())
    }

    #[test]
    fn otlp_with_everything() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["gateway".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let c = exporter(
            &format!("    endpoint: gateway:4317\n    tls:\n      ca_file: {}\n    headers:\n      api-key: ${{env:KEY}}\n    compression: zstd\n    timeout: 3s\n    temporality: cumulative\n    sending_queue:\n      queue_size: 7\n      storage: /tmp/flowscope-test-q\n    retry_on_failure:\n      initial_interval: 1s\n      multiplier: 2", ca.display()),
            "otlp/gw",
        )
        .unwrap();
        let ExporterConfig::Otlp(c) = c else {
            panic!("not otlp: {c:?}")
        };
        assert_eq!(c.endpoint.as_deref(), Some("gateway:4317"));
        assert_eq!(c.tls.ca_file, Some(ca.clone()));
        assert_eq!(c.headers.get("api-key").map(String::as_str), Some("s3cret"));
        assert_eq!(c.compression, Some(Compression::Zstd));
        assert_eq!(c.timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.temporality, Some(Temporality::Cumulative));
        assert_eq!(c.sending_queue.queue_size, 7);
        assert_eq!(
            c.sending_queue.storage,
            Some(PathBuf::from("/tmp/flowscope-test-q"))
        );
        assert_eq!(c.sending_queue.max_storage_mib, 256);
        assert_eq!(c.retry_on_failure.initial_interval, Duration::from_secs(1));
        assert_eq!(c.retry_on_failure.multiplier, 2.0);
        assert_eq!(c.retry_on_failure.max_interval, Duration::from_secs(30));
    }

    #[test]
    fn otlphttp_and_prometheus_defaults() {
        let ExporterConfig::OtlpHttp(h) = exporter("    encoding: json", "otlphttp").unwrap()
        else {
            panic!("not otlphttp")
        };
        assert_eq!(h.encoding, HttpEncoding::Json);
        assert_eq!(h.endpoint, None);
        assert!(h.retry_on_failure.enabled);
        let ExporterConfig::Prometheus(p) = exporter("    namespace: fs", "prometheus").unwrap()
        else {
            panic!("not prometheus")
        };
        assert_eq!(p.endpoint, "127.0.0.1:9464");
        assert_eq!(p.namespace.as_deref(), Some("fs"));
        assert!(p.resource_to_telemetry_conversion.enabled);
    }

    #[test]
    fn prometheusremotewrite_defaults_values_and_errors() {
        let ExporterConfig::PrometheusRemoteWrite(c) = exporter(
            "    endpoint: http://127.0.0.1:9090/api/v1/write",
            "prometheusremotewrite",
        )
        .unwrap() else {
            panic!("not prometheusremotewrite")
        };
        assert_eq!(
            c,
            PrometheusRemoteWriteExporterConfig::new("http://127.0.0.1:9090/api/v1/write")
        );
        assert!(!c.resource_to_telemetry_conversion.enabled);
        assert!(c.target_info.enabled && c.add_metric_suffixes);
        assert_eq!(
            (c.timeout, c.max_batch_size_bytes),
            (Duration::from_secs(5), 3_000_000)
        );
        let ExporterConfig::PrometheusRemoteWrite(c) = exporter(
            "    endpoint: https://mimir:443/api/v1/push\n    headers:\n      X-Scope-OrgID: ${env:KEY}\n    timeout: 2s\n    namespace: fs\n    add_metric_suffixes: false\n    external_labels:\n      cluster: eu\n    resource_to_telemetry_conversion:\n      enabled: true\n    target_info:\n      enabled: false\n    remote_write_queue:\n      num_consumers: 5\n    max_batch_size_bytes: 65536\n    sending_queue:\n      storage: /tmp/flowscope-rw-q\n    retry_on_failure:\n      max_elapsed_time: 1m",
            "prometheusremotewrite/mimir",
        )
        .unwrap() else {
            panic!("not prometheusremotewrite")
        };
        assert_eq!(
            c.headers.get("X-Scope-OrgID").map(String::as_str),
            Some("s3cret")
        );
        assert_eq!(
            c.external_labels.get("cluster").map(String::as_str),
            Some("eu")
        );
        assert!(c.resource_to_telemetry_conversion.enabled && !c.target_info.enabled);
        assert!(!c.add_metric_suffixes);
        assert_eq!(c.namespace.as_deref(), Some("fs"));
        assert_eq!(c.max_batch_size_bytes, 65536);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.retry_on_failure.max_elapsed_time, Duration::from_secs(60));
        assert_eq!(
            ExporterConfig::PrometheusRemoteWrite(c).unused_collector_keys(),
            vec!["remote_write_queue.num_consumers".to_string()]
        );
        let e = exporter("    {}", "prometheusremotewrite").unwrap_err();
        assert!(e.contains("endpoint"), "{e}");
        let e = exporter(
            "    endpoint: http://x:1/w\n    external_labels:\n      __x: y",
            "prometheusremotewrite",
        )
        .unwrap_err();
        assert!(
            e.contains("external_labels") && e.contains("reserved"),
            "{e}"
        );
        let e = exporter(
            "    endpoint: http://x:1/w\n    external_labels:\n      a-b: y",
            "prometheusremotewrite",
        )
        .unwrap_err();
        assert!(e.contains("not a Prometheus label name"), "{e}");
        let e = exporter(
            "    endpoint: http://x:1/w\n    max_batch_size_bytes: 10",
            "prometheusremotewrite",
        )
        .unwrap_err();
        assert!(
            e.contains("max_batch_size_bytes") && e.contains("1024"),
            "{e}"
        );
        let e = exporter(
            "    endpoint: http://x:1/w\n    wal:\n      directory: /tmp",
            "prometheusremotewrite",
        )
        .unwrap_err();
        assert!(e.contains("wal"), "{e}");
    }

    #[test]
    fn ui_defaults_and_values() {
        let ExporterConfig::Ui(u) = exporter("    {}", "ui").unwrap() else {
            panic!("not ui")
        };
        assert_eq!(u, UiExporterConfig::default());
        assert_eq!(u.endpoint, "127.0.0.1:8686");
        assert_eq!(u.retention, Duration::from_secs(3600));
        let ExporterConfig::Ui(u) = exporter(
            "    endpoint: 0.0.0.0:9000\n    retention: 30m\n    auth:\n      token: ${env:KEY}\n    health:\n      retransmit_ratio: 0.1",
            "ui",
        )
        .unwrap() else {
            panic!("not ui")
        };
        assert_eq!(u.auth.token.as_deref(), Some("s3cret"));
        assert_eq!(u.retention, Duration::from_secs(1800));
        assert_eq!(u.health.retransmit_ratio, 0.1);
        assert_eq!(u.health.min_packets, 100);
        let e = exporter("    retention: 2d", "ui").unwrap_err();
        assert!(
            e.contains("retention") && e.contains("between 1m and 24h"),
            "{e}"
        );
        let e = exporter("    health:\n      path_loss_ratio: 3", "ui").unwrap_err();
        assert!(e.contains("path_loss_ratio"), "{e}");
        let ExporterConfig::Ui(u) = exporter(
            "    health:\n      baseline_ratio: 4\n      baseline_min_count: 7\n      \
             churn_connections_per_second: 2.5\n      churn_short_ratio: 0.8",
            "ui",
        )
        .unwrap() else {
            panic!("not ui")
        };
        assert_eq!(u.health.baseline_ratio, 4.0);
        assert_eq!(u.health.baseline_min_count, 7);
        assert_eq!(u.health.churn_connections_per_second, 2.5);
        assert_eq!(u.health.churn_short_ratio, 0.8);
        for (yaml, key, says) in [
            ("baseline_ratio: 0.5", "baseline_ratio", "at least 1"),
            ("baseline_min_count: 0", "baseline_min_count", "at least 1"),
            (
                "churn_connections_per_second: 0",
                "churn_connections_per_second",
                "above 0",
            ),
            (
                "churn_short_ratio: 1.5",
                "churn_short_ratio",
                "between 0 and 1",
            ),
        ] {
            let e = exporter(&format!("    health:\n      {yaml}"), "ui").unwrap_err();
            // The file, the line and the key path.
            assert!(
                e.contains("t.yaml:") && e.contains(&format!("health.{key}")) && e.contains(says),
                "{yaml}: {e}"
            );
        }
    }

    #[test]
    fn rejects_bad_values_with_their_key() {
        let e = exporter("    encoding: json", "otlp").unwrap_err();
        assert!(e.contains("encoding"), "{e}");
        let e = exporter(
            "    retry_on_failure:\n      randomization_factor: 2",
            "otlp",
        )
        .unwrap_err();
        assert!(
            e.contains("randomization_factor") && e.contains("between 0 and 1"),
            "{e}"
        );
        let e = exporter("    compression: brotli", "otlphttp").unwrap_err();
        assert!(e.contains("compression"), "{e}");
    }
}

#[cfg(test)]
mod collector_tests;
