//! flowscope's configuration: YAML in the OpenTelemetry Collector's shape.
//!
//! ```yaml
//! receivers:
//!   ebpf:
//!     collection_interval: 10s
//! exporters:
//!   console: {}
//!   file:
//!     path: /tmp/x.jsonl
//! service:
//!   pipelines:
//!     metrics:
//!       receivers: [ebpf]
//!       exporters: [console, file]
//! ```
//!
//! [`load_file`] / [`load_str`] substitute `${env:NAME}` references, parse
//! the YAML in ONE serde pass (each component's settings are read by the seed
//! its area file picks from the component type, so every error keeps its line,
//! column and key path), then check the pipelines against the defined
//! components. The typed settings of every component live here, one file per
//! area: [`receivers`], [`processors`], [`exporters`].
//!
//! The user reference is docs/configuration.md.

use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

mod de;
mod env;
mod error;
pub mod exporters;
pub mod extensions;
mod id;
mod parse;
pub mod processors;
pub mod receivers;
pub mod telemetry;
mod validate;

pub use error::{ConfigError, Location};
pub use exporters::ExporterConfig;
pub use extensions::ExtensionConfig;
pub use id::{ComponentId, IdError, PipelineId};
pub use indexmap;
pub use processors::ProcessorConfig;
pub use receivers::ReceiverConfig;
pub use telemetry::TelemetryConfig;

/// The default configuration, used when the agent is started without one:
/// the `ebpf` receiver every 10 s into the `console` exporter and a `file`
/// exporter writing `flowscope-metrics.jsonl` in the working directory.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `receivers:`, in file order.
    pub receivers: IndexMap<ComponentId, ReceiverConfig>,
    /// `processors:`, in file order.
    pub processors: IndexMap<ComponentId, ProcessorConfig>,
    /// `exporters:`, in file order.
    pub exporters: IndexMap<ComponentId, ExporterConfig>,
    /// `extensions:`, in file order (only those `service.extensions` lists
    /// run).
    pub extensions: IndexMap<ComponentId, ExtensionConfig>,
    /// `service:`.
    pub service: Service,
}

/// `service:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// `service.extensions`: the extensions that run, each defined under
    /// `extensions`.
    pub extensions: Vec<ComponentId>,
    /// `service.pipelines`, in file order; at least one.
    pub pipelines: IndexMap<PipelineId, Pipeline>,
    /// `service.telemetry`: the agent's own logs and metrics.
    pub telemetry: TelemetryConfig,
}

/// One pipeline: receivers feed the processors in order, whose output goes
/// to every exporter. Every id refers to a defined component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// At least one.
    pub receivers: Vec<ComponentId>,
    /// Applied in this order; may be empty.
    pub processors: Vec<ComponentId>,
    /// At least one.
    pub exporters: Vec<ComponentId>,
}

/// A configuration that loaded, and what is suspicious about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Human-readable warnings, e.g. components that no pipeline uses. The
    /// agent logs them and runs.
    pub warnings: Vec<String>,
    /// Where each component is defined, by its key path
    /// (`exporters.otlp/gateway`), for errors found after loading.
    pub locations: IndexMap<String, Location>,
}

/// Loads, substitutes and validates the configuration file at `path`.
///
/// # Errors
/// [`ConfigError`]: the file cannot be read, a variable is unset, the YAML
/// is malformed or does not match, or the pipelines are inconsistent.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        origin: origin.clone(),
        source,
    })?;
    load_str(&text, &origin)
}

/// Loads configuration text; `origin` names it in error messages (usually
/// the file name). Environment variables come from the process environment.
///
/// # Errors
/// As [`load_file`].
pub fn load_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    load_str_with_env(text, origin, &|name| {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    })
}

/// As [`load_str`], with `env(name)` giving each variable's value (`None`
/// when unset) instead of the process environment. Useful in tests.
///
/// # Errors
/// As [`load_file`].
pub fn load_str_with_env(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let substituted = env::substitute(text, origin, env)?;
    let raw = parse::parse(&substituted, origin)?;
    validate(raw, &substituted, origin)
}

/// The built-in default ([`DEFAULT_CONFIG`]), loaded.
pub fn default_config() -> Loaded {
    match load_str_with_env(DEFAULT_CONFIG, "<default config>", &|_| None) {
        Ok(loaded) => loaded,
        // The default is a constant, and `default_config_loads` tests it.
        Err(e) => unreachable!("the built-in default configuration is invalid: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Parsing: the file's shape, with source spans kept for validation.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "receiver_map")]
    receivers: IndexMap<ComponentId, ReceiverConfig>,
    #[serde(default, deserialize_with = "processor_map")]
    processors: IndexMap<ComponentId, ProcessorConfig>,
    #[serde(default, deserialize_with = "exporter_map")]
    exporters: IndexMap<ComponentId, ExporterConfig>,
    #[serde(default, deserialize_with = "extension_map")]
    extensions: IndexMap<ComponentId, ExtensionConfig>,
    service: RawService,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    extensions: Vec<Spanned<ComponentId>>,
    #[serde(default)]
    telemetry: TelemetryConfig,
    pipelines: Spanned<IndexMap<PipelineId, Spanned<RawPipeline>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    receivers: Vec<Spanned<ComponentId>>,
    #[serde(default)]
    processors: Vec<Spanned<ComponentId>>,
    #[serde(default)]
    exporters: Vec<Spanned<ComponentId>>,
}

fn receiver_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<ComponentId, ReceiverConfig>, D::Error> {
    de::component_map::<D, Receivers>(d)
}

fn processor_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<ComponentId, ProcessorConfig>, D::Error> {
    de::component_map::<D, Processors>(d)
}

fn exporter_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<ComponentId, ExporterConfig>, D::Error> {
    de::component_map::<D, Exporters>(d)
}

fn extension_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<IndexMap<ComponentId, ExtensionConfig>, D::Error> {
    de::component_map::<D, Extensions>(d)
}

struct Extensions;
impl de::Area for Extensions {
    const NAME: &'static str = "extension";
    type Config = ExtensionConfig;
    type Seed<'a> = extensions::ExtensionSeed<'a>;
    fn seed(id: &ComponentId) -> Self::Seed<'_> {
        extensions::ExtensionSeed { id }
    }
}

struct Receivers;
impl de::Area for Receivers {
    const NAME: &'static str = "receiver";
    type Config = ReceiverConfig;
    type Seed<'a> = receivers::ReceiverSeed<'a>;
    fn seed(id: &ComponentId) -> Self::Seed<'_> {
        receivers::ReceiverSeed { id }
    }
}

struct Processors;
impl de::Area for Processors {
    const NAME: &'static str = "processor";
    type Config = ProcessorConfig;
    type Seed<'a> = processors::ProcessorSeed<'a>;
    fn seed(id: &ComponentId) -> Self::Seed<'_> {
        processors::ProcessorSeed { id }
    }
}

struct Exporters;
impl de::Area for Exporters {
    const NAME: &'static str = "exporter";
    type Config = ExporterConfig;
    type Seed<'a> = exporters::ExporterSeed<'a>;
    fn seed(id: &ComponentId) -> Self::Seed<'_> {
        exporters::ExporterSeed { id }
    }
}

// ---------------------------------------------------------------------------
// Validation: what one serde pass cannot see (references across sections).

fn spanned_location<T>(origin: &str, text: &env::Substituted, s: &Spanned<T>) -> Location {
    let line = u32::try_from(s.referenced.line()).ok().filter(|l| *l > 0);
    let column = u32::try_from(s.referenced.column())
        .ok()
        .filter(|c| *c > 0)
        .zip(line)
        .map(|(c, l)| text.original_column(l, c));
    Location::new(origin, line, column)
}

/// Where each component id is written, read in a second, lenient pass over
/// the text (the first pass keeps plain string keys, so its error paths name
/// the component).
fn component_locations(text: &env::Substituted, origin: &str) -> IndexMap<String, Location> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Sections {
        receivers: Option<IndexMap<Spanned<String>, serde::de::IgnoredAny>>,
        processors: Option<IndexMap<Spanned<String>, serde::de::IgnoredAny>>,
        exporters: Option<IndexMap<Spanned<String>, serde::de::IgnoredAny>>,
        extensions: Option<IndexMap<Spanned<String>, serde::de::IgnoredAny>>,
    }
    // Where a queue's `storage` is written: it may name an extension,
    // resolved after the first pass.
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Queue {
        sending_queue: Option<Storage>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Storage {
        storage: Option<Spanned<serde::de::IgnoredAny>>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Queues {
        exporters: Option<IndexMap<String, Option<Queue>>>,
    }
    let sections: Sections = serde_saphyr::from_str(&text.text).unwrap_or_default();
    let mut out = IndexMap::new();
    let queues: Queues = serde_saphyr::from_str(&text.text).unwrap_or_default();
    for (id, q) in queues.exporters.unwrap_or_default() {
        if let Some(storage) = q.and_then(|q| q.sending_queue).and_then(|s| s.storage) {
            out.insert(
                format!("exporters.{id}.sending_queue.storage"),
                spanned_location(origin, text, &storage),
            );
        }
    }
    for (name, section) in [
        ("receivers", sections.receivers),
        ("processors", sections.processors),
        ("exporters", sections.exporters),
        ("extensions", sections.extensions),
    ] {
        for key in section.unwrap_or_default().into_keys() {
            let at = spanned_location(origin, text, &key);
            out.insert(format!("{name}.{}", key.value), at);
        }
    }
    out
}

fn validate(raw: RawConfig, text: &env::Substituted, origin: &str) -> Result<Loaded, ConfigError> {
    let locations = component_locations(text, origin);
    let invalid =
        |at: Location, path: String, message: String| ConfigError::Invalid { at, path, message };
    if raw.service.pipelines.value.is_empty() {
        return Err(invalid(
            spanned_location(origin, text, &raw.service.pipelines),
            "service.pipelines".to_owned(),
            "at least one pipeline is required, e.g. `metrics: {receivers: [ebpf], exporters: [console]}`"
                .to_owned(),
        ));
    }

    let mut used_receivers = vec![false; raw.receivers.len()];
    let mut used_processors = vec![false; raw.processors.len()];
    let mut used_exporters = vec![false; raw.exporters.len()];
    let mut pipelines = IndexMap::new();
    for (pid, spanned) in raw.service.pipelines.value {
        let p = &spanned.value;
        let base = format!("service.pipelines.{pid}");
        for (list, what) in [(&p.receivers, "receiver"), (&p.exporters, "exporter")] {
            if list.is_empty() {
                return Err(invalid(
                    spanned_location(origin, text, &spanned),
                    base.clone(),
                    format!("pipeline `{pid}` has no {what}s; list at least one under `{what}s`"),
                ));
            }
        }
        let receivers = resolve(
            &p.receivers,
            "receiver",
            &raw.receivers,
            &mut used_receivers,
            &base,
            origin,
            text,
        )?;
        let processors = resolve(
            &p.processors,
            "processor",
            &raw.processors,
            &mut used_processors,
            &base,
            origin,
            text,
        )?;
        check_aggregates(&pid, &processors, &raw.processors).map_err(|message| {
            invalid(
                spanned_location(origin, text, &spanned),
                base.clone(),
                message,
            )
        })?;
        let exporters = resolve(
            &p.exporters,
            "exporter",
            &raw.exporters,
            &mut used_exporters,
            &base,
            origin,
            text,
        )?;
        pipelines.insert(
            pid,
            Pipeline {
                receivers,
                processors,
                exporters,
            },
        );
    }

    let mut warnings = Vec::new();
    let unused =
        |section: &str, ids: Vec<&ComponentId>, used: &[bool], warnings: &mut Vec<String>| {
            for (id, used) in ids.into_iter().zip(used) {
                if !used {
                    warnings.push(format!(
                    "{origin}: {section}.{id} is defined but no pipeline uses it; it will not run"
                ));
                }
            }
        };
    unused(
        "receivers",
        raw.receivers.keys().collect(),
        &used_receivers,
        &mut warnings,
    );
    unused(
        "processors",
        raw.processors.keys().collect(),
        &used_processors,
        &mut warnings,
    );
    unused(
        "exporters",
        raw.exporters.keys().collect(),
        &used_exporters,
        &mut warnings,
    );

    let mut exporters = raw.exporters;
    let service_extensions = resolve(
        &raw.service.extensions,
        "extension",
        &raw.extensions,
        &mut vec![false; raw.extensions.len()],
        "service",
        origin,
        text,
    )?;
    for (id, ext) in &raw.extensions {
        if !service_extensions.contains(id) {
            warnings.push(format!(
                "{origin}: extensions.{id} is defined but `service.extensions` does not list \
                 it; it will not run"
            ));
        } else if let Some(why) = ext.ignored_because() {
            warnings.push(format!(
                "{origin}: extensions.{id} is accepted and does nothing: {why}"
            ));
        }
    }
    resolve_storage(
        &mut exporters,
        &raw.extensions,
        &service_extensions,
        &locations,
        origin,
    )?;
    check_exporter_resources(&exporters, &used_exporters, &locations, origin)?;
    let mut unused: Vec<String> = exporters
        .iter()
        .flat_map(|(id, c)| {
            c.unused_collector_keys()
                .into_iter()
                .map(move |key| format!("exporters.{id}.{key}"))
        })
        .collect();
    let mut limiters = Vec::new();
    for ((id, p), used) in raw.processors.iter().zip(&used_processors) {
        let prefix = format!("processors.{id}.");
        match p {
            ProcessorConfig::ResourceDetection(c) => c.unused(&prefix, &mut unused),
            ProcessorConfig::Batch(c) => {
                for (u, key) in [
                    (c.metadata_keys, "metadata_keys"),
                    (c.metadata_cardinality_limit, "metadata_cardinality_limit"),
                ] {
                    if u.set {
                        unused.push(format!("{prefix}{key}"));
                    }
                }
                if *used {
                    warnings.push(format!("{origin}: processors.{id}: {}", c.warning()));
                }
            }
            ProcessorConfig::MemoryLimiter(_) if *used => limiters.push(id.to_string()),
            _ => {}
        }
    }
    if limiters.len() > 1 {
        return Err(ConfigError::Invalid {
            at: locations
                .get(&format!("processors.{}", limiters[1]))
                .cloned()
                .unwrap_or_else(|| Location::new(origin, None, None)),
            path: format!("processors.{}", limiters[1]),
            message: format!(
                "the pipelines use {} memory_limiter processors ({}); the limit is on the \
                 agent's heap, so define one and list it in every pipeline",
                limiters.len(),
                limiters.join(", ")
            ),
        });
    }
    raw.service.telemetry.unused(&mut unused);
    for (id, ext) in &raw.extensions {
        match ext {
            ExtensionConfig::FileStorage(c) => c.unused(&format!("extensions.{id}."), &mut unused),
            ExtensionConfig::HealthCheck(c) => {
                for (u, key) in [
                    (c.response_body, "response_body"),
                    (c.check_collector_pipeline, "check_collector_pipeline"),
                ] {
                    if u.set {
                        unused.push(format!("extensions.{id}.{key}"));
                    }
                }
            }
            _ => {}
        }
    }
    if !unused.is_empty() {
        warnings.push(format!(
            "{origin}: Collector settings accepted and ignored (they change nothing in \
             flowscope, see \"Coming from the Collector\" in docs/configuration.md): {}",
            unused.join(", ")
        ));
    }

    Ok(Loaded {
        locations,
        config: Config {
            receivers: raw.receivers,
            processors: raw.processors,
            exporters,
            extensions: raw.extensions,
            service: Service {
                extensions: service_extensions,
                pipelines,
                telemetry: raw.service.telemetry,
            },
        },
        warnings,
    })
}

/// `sending_queue.storage: file_storage[/name]`: the extension must be a
/// `file_storage` that `service.extensions` lists; the queue then lives in
/// its own subdirectory of the extension's `directory`.
fn resolve_storage(
    exporters: &mut IndexMap<ComponentId, ExporterConfig>,
    extensions: &IndexMap<ComponentId, ExtensionConfig>,
    enabled: &[ComponentId],
    locations: &IndexMap<String, Location>,
    origin: &str,
) -> Result<(), ConfigError> {
    for (id, config) in exporters.iter_mut() {
        let Some(queue) = config.sending_queue_mut() else {
            continue;
        };
        let Some(storage) = queue.storage.as_ref().and_then(|p| p.to_str()) else {
            continue;
        };
        if !exporters::is_extension_id(storage) {
            continue;
        }
        let err = |message: String| ConfigError::Invalid {
            at: locations
                .get(&format!("exporters.{id}.sending_queue.storage"))
                .or_else(|| locations.get(&format!("exporters.{id}")))
                .cloned()
                .unwrap_or_else(|| Location::new(origin, None, None)),
            path: format!("exporters.{id}.sending_queue.storage"),
            message,
        };
        let ext_id: ComponentId = storage
            .parse()
            .map_err(|e: IdError| err(format!("`{storage}`: {e}")))?;
        let dir = match extensions.get(&ext_id) {
            Some(ExtensionConfig::FileStorage(fs)) => fs.queue_dir(id),
            Some(other) => {
                return Err(err(format!(
                    "`{ext_id}` is a `{}` extension; a queue needs a `file_storage` extension \
                     (or a directory path)",
                    other.kind()
                )));
            }
            None => {
                let defined: Vec<String> = extensions
                    .iter()
                    .filter(|(_, e)| matches!(e, ExtensionConfig::FileStorage(_)))
                    .map(|(k, _)| k.to_string())
                    .collect();
                let hint = if ext_id.kind == "file_storage" {
                    format!(
                        "define it under `extensions` (`{ext_id}: {{directory: /var/lib/flowscope/queue}}`) \
                         and list it in `service.extensions`"
                    )
                } else {
                    format!(
                        "flowscope's only storage extension is `file_storage`; defined: {}",
                        if defined.is_empty() {
                            "none".to_owned()
                        } else {
                            defined.join(", ")
                        }
                    )
                };
                return Err(err(format!(
                    "storage extension `{ext_id}` is not defined under `extensions`: {hint}"
                )));
            }
        };
        if !enabled.contains(&ext_id) {
            return Err(err(format!(
                "storage extension `{ext_id}` is defined but `service.extensions` does not list \
                 it; add it there"
            )));
        }
        queue.storage = Some(dir);
    }
    Ok(())
}

/// A pipeline groups its flows once: at most one `aggregate` processor.
fn check_aggregates(
    pid: &PipelineId,
    processors: &[ComponentId],
    defined: &IndexMap<ComponentId, ProcessorConfig>,
) -> Result<(), String> {
    let aggregates: Vec<String> = processors
        .iter()
        .filter(|id| defined.get(*id).is_some_and(|c| c.kind() == "aggregate"))
        .map(ToString::to_string)
        .collect();
    if aggregates.len() > 1 {
        return Err(format!(
            "pipeline `{pid}` lists {} aggregate processors ({}); a pipeline groups its flows \
             once, so list one",
            aggregates.len(),
            aggregates.join(", ")
        ));
    }
    Ok(())
}

/// What two running exporters cannot share: a queue directory (it is
/// locked), a Prometheus listen address, an output file.
fn check_exporter_resources(
    exporters: &IndexMap<ComponentId, ExporterConfig>,
    used: &[bool],
    locations: &IndexMap<String, Location>,
    origin: &str,
) -> Result<(), ConfigError> {
    use std::path::PathBuf;
    let mut taken: Vec<(String, &'static str, &ComponentId)> = Vec::new();
    for ((id, config), used) in exporters.iter().zip(used) {
        if !used {
            continue;
        }
        let normal = |p: &PathBuf| p.components().collect::<PathBuf>().display().to_string();
        let (resource, key, what) = match config {
            ExporterConfig::Otlp(c) => match &c.sending_queue.storage {
                Some(dir) => (normal(dir), "sending_queue.storage", "queue directory"),
                None => continue,
            },
            ExporterConfig::OtlpHttp(c) => match &c.sending_queue.storage {
                Some(dir) => (normal(dir), "sending_queue.storage", "queue directory"),
                None => continue,
            },
            ExporterConfig::PrometheusRemoteWrite(c) => match &c.sending_queue.storage {
                Some(dir) => (normal(dir), "sending_queue.storage", "queue directory"),
                None => continue,
            },
            ExporterConfig::File(c) => (normal(&c.path), "path", "output file"),
            ExporterConfig::Prometheus(c) => (c.endpoint.clone(), "endpoint", "listen address"),
            ExporterConfig::Ui(c) => (c.endpoint.clone(), "endpoint", "listen address"),
            ExporterConfig::Console(_) => continue,
        };
        if let Some((_, _, other)) = taken.iter().find(|(r, w, _)| *r == resource && *w == what) {
            return Err(ConfigError::Invalid {
                at: locations
                    .get(&format!("exporters.{id}"))
                    .cloned()
                    .unwrap_or_else(|| Location::new(origin, None, None)),
                path: format!("exporters.{id}.{key}"),
                message: format!(
                    "`{resource}` is also the {what} of exporter `{other}`; each exporter needs \
                     its own"
                ),
            });
        }
        taken.push((resource, what, id));
    }
    Ok(())
}

/// Checks one pipeline list against its section: every id defined, none
/// listed twice. Marks the ones used.
fn resolve<V>(
    list: &[Spanned<ComponentId>],
    what: &str,
    defined: &IndexMap<ComponentId, V>,
    used: &mut [bool],
    base: &str,
    origin: &str,
    text: &env::Substituted,
) -> Result<Vec<ComponentId>, ConfigError> {
    let mut out: Vec<ComponentId> = Vec::with_capacity(list.len());
    for (i, id) in list.iter().enumerate() {
        let path = format!("{base}.{what}s[{i}]");
        let at = || spanned_location(origin, text, id);
        if out.contains(&id.value) {
            return Err(ConfigError::Invalid {
                at: at(),
                path,
                message: format!("{what} `{}` is listed twice", id.value),
            });
        }
        let Some(index) = defined.get_index_of(&id.value) else {
            let known: Vec<String> = defined.keys().map(ToString::to_string).collect();
            let known = if known.is_empty() {
                format!("no {what}s are defined")
            } else {
                format!("defined {what}s: {}", known.join(", "))
            };
            return Err(ConfigError::Invalid {
                at: at(),
                path,
                message: format!(
                    "{what} `{}` is not defined under `{what}s` ({known})",
                    id.value
                ),
            });
        };
        if let Some(flag) = used.get_mut(index) {
            *flag = true;
        }
        out.push(id.value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
