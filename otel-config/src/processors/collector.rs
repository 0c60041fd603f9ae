//! Settings of the Collector's own processors that flowscope runs:
//! `batch`, `memory_limiter`, `resource`, `attributes` and
//! `resourcedetection`, with the Collector's keys and defaults. What each
//! does in flowscope is in docs/processors.md; `k8sattributes` is refused
//! in favour of flowscope's `kubernetes` processor (see
//! [`K8SATTRIBUTES_MESSAGE`]).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::de::duration;
use crate::exporters::Unused;

/// The error a `k8sattributes` processor gets.
pub const K8SATTRIBUTES_MESSAGE: &str = "flowscope does not run `k8sattributes`: its \
     `kubernetes` processor adds the pod, namespace, node and workload of both ends of \
     every flow (from the kubelet and the API server); replace `k8sattributes` with \
     `kubernetes: {}` here and in the pipeline (see docs/kubernetes.md)";

// -------------------------------------------------------------------- batch

/// `batch` processor: accepted so a Collector file loads, and changes
/// nothing: flowscope already sends one batch per collection interval to
/// each exporter, which splits it at its request size limit. Loading warns
/// once for each `batch` a pipeline lists, saying so.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchProcessorConfig {
    /// Collector default `200ms`. The interval is the receiver's
    /// `collection_interval`.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Collector default 8192 (points). Each interval is one batch.
    pub send_batch_size: u32,
    /// Collector default 0 (no limit); 0 or at least `send_batch_size`.
    /// Requests are split by size (`max_request_bytes`), not by points.
    pub send_batch_max_size: u32,
    /// Collector: accepted and ignored (no client metadata in flows).
    pub metadata_keys: Unused,
    /// Collector: accepted and ignored.
    pub metadata_cardinality_limit: Unused,
}

impl Default for BatchProcessorConfig {
    fn default() -> Self {
        BatchProcessorConfig {
            timeout: Duration::from_millis(200),
            send_batch_size: 8192,
            send_batch_max_size: 0,
            metadata_keys: Unused::default(),
            metadata_cardinality_limit: Unused::default(),
        }
    }
}

impl BatchProcessorConfig {
    /// The warning loading gives for a pipeline-listed `batch`.
    pub fn warning(&self) -> String {
        format!(
            "accepted and changes nothing: flowscope sends each exporter one batch per \
             collection interval (the receiver's `collection_interval` plays the part of \
             `timeout`, {:?} here), and each exporter splits it at its request size limit \
             (`max_request_bytes`), not at `send_batch_size` ({}) or `send_batch_max_size` \
             ({}) points; remove it, or keep it for the Collector",
            self.timeout, self.send_batch_size, self.send_batch_max_size
        )
    }
}

// ----------------------------------------------------------- memory_limiter

/// `memory_limiter` processor: a limit on the agent's heap, checked every
/// `check_interval`. The hard limit is `limit_mib` (or `limit_percentage`
/// of the memory available to the agent: its cgroup's limit, else the
/// host's), the soft limit that minus `spike_limit_mib` (or
/// `spike_limit_percentage`; default 20 % of the hard limit). Above the
/// soft limit the `ebpf` receiver tracks no new flow (each refused one is
/// counted as `flowscope.events.lost{flowscope.reason=memory_limit}`);
/// above the hard limit the agent also returns freed memory to the system
/// and warns. The limit is the agent's, so one `memory_limiter` per file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawMemoryLimiter")]
pub struct MemoryLimiterConfig {
    /// How often the heap is measured; more than 0.
    pub check_interval: Duration,
    /// The limit in MiB or as a share of the memory available.
    pub limit: MemoryLimit,
    /// What the soft limit is below the hard one.
    pub spike: MemoryLimit,
}

/// A memory amount, absolute or relative to the memory available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// MiB.
    Mib(u64),
    /// Percent (1..=100) of the memory available to the agent.
    Percent(u32),
}

impl MemoryLimit {
    /// Bytes, given the memory available to the agent.
    pub fn bytes(self, available: u64) -> u64 {
        match self {
            MemoryLimit::Mib(m) => m.saturating_mul(1 << 20),
            MemoryLimit::Percent(p) => available / 100 * u64::from(p),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemoryLimiter {
    #[serde(default, deserialize_with = "some_duration")]
    check_interval: Option<Duration>,
    #[serde(default)]
    limit_mib: u64,
    #[serde(default)]
    spike_limit_mib: u64,
    #[serde(default)]
    limit_percentage: u32,
    #[serde(default)]
    spike_limit_percentage: u32,
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

impl TryFrom<RawMemoryLimiter> for MemoryLimiterConfig {
    type Error = String;

    fn try_from(r: RawMemoryLimiter) -> Result<Self, String> {
        let check_interval = match r.check_interval {
            Some(d) if !d.is_zero() => d,
            _ => {
                return Err("`check_interval` must be greater than zero, e.g. `1s`".to_owned());
            }
        };
        let (limit, spike) = if r.limit_mib > 0 {
            let spike = if r.spike_limit_mib == 0 {
                r.limit_mib / 5
            } else {
                r.spike_limit_mib
            };
            if spike >= r.limit_mib {
                return Err(format!(
                    "`spike_limit_mib` ({spike}) must be smaller than `limit_mib` ({})",
                    r.limit_mib
                ));
            }
            (MemoryLimit::Mib(r.limit_mib), MemoryLimit::Mib(spike))
        } else if r.limit_percentage > 0 {
            let spike = if r.spike_limit_percentage == 0 {
                r.limit_percentage / 5
            } else {
                r.spike_limit_percentage
            };
            if r.limit_percentage > 100 || spike >= r.limit_percentage {
                return Err(format!(
                    "`limit_percentage` ({}) must be at most 100 and `spike_limit_percentage` \
                     ({spike}) smaller than it",
                    r.limit_percentage
                ));
            }
            (
                MemoryLimit::Percent(r.limit_percentage),
                MemoryLimit::Percent(spike),
            )
        } else {
            return Err(
                "`limit_mib` or `limit_percentage` must be greater than zero, e.g. \
                 `limit_mib: 200`"
                    .to_owned(),
            );
        };
        Ok(MemoryLimiterConfig {
            check_interval,
            limit,
            spike,
        })
    }
}

// --------------------------------------------------- resource, attributes

/// `resource` processor: `attributes` actions on every point's Resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceProcessorConfig {
    /// Applied in order; at least one.
    #[serde(deserialize_with = "non_empty_actions")]
    pub attributes: Vec<AttributeAction>,
}

/// `attributes` processor: `actions` on every point's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesProcessorConfig {
    /// Applied in order; at least one.
    #[serde(deserialize_with = "non_empty_actions")]
    pub actions: Vec<AttributeAction>,
    /// Collector: refused (every point is processed; drop flows with
    /// flowscope's `filter` processor).
    #[serde(default, deserialize_with = "reject_match")]
    pub include: Unused,
    /// Collector: refused, as `include`.
    #[serde(default, deserialize_with = "reject_match")]
    pub exclude: Unused,
}

fn reject_match<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    de::IgnoredAny::deserialize(d)?;
    Err(de::Error::custom(
        "not supported: flowscope's `attributes` processor acts on every point; keep or drop \
         flows by address, port, transport, service or process with a `filter` processor in \
         the pipeline, or use a second pipeline",
    ))
}

fn non_empty_actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AttributeAction>, D::Error> {
    let actions = Vec::<AttributeAction>::deserialize(d)?;
    if actions.is_empty() {
        return Err(de::Error::custom(
            "at least one action is required, e.g. `- {key: deployment.environment.name, \
             value: prod, action: upsert}`",
        ));
    }
    Ok(actions)
}

/// One action of a `resource` or `attributes` processor, as the Collector
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAction")]
pub enum AttributeAction {
    /// `insert`: sets `key` when it is absent.
    Insert { key: String, from: ValueSource },
    /// `update`: sets `key` when it is present.
    Update { key: String, from: ValueSource },
    /// `upsert`: sets `key`.
    Upsert { key: String, from: ValueSource },
    /// `delete`: removes `key`, and every key matching `pattern`.
    Delete { keys: KeyMatch },
    /// `hash`: replaces the value of `key` (and of every key matching
    /// `pattern`) with the lowercase hex SHA-256 of its text.
    Hash { keys: KeyMatch },
    /// `extract`: matches the string value of `key` against `pattern`; each
    /// named group that matched becomes (or replaces) the attribute of that
    /// name.
    Extract { key: String, pattern: String },
    /// `convert`: the value of `key` as `int` or `string` (a value that
    /// cannot be converted is left alone).
    Convert { key: String, to: ConvertTo },
}

/// Where a set value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// `value`.
    Value(AttrValue),
    /// `from_attribute`: the value of another attribute of the same set
    /// (nothing is set when it is absent).
    Attribute(String),
}

/// Which keys a `delete` or `hash` touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMatch {
    /// `key`.
    pub key: Option<String>,
    /// `pattern`: a regular expression matched against every key.
    pub pattern: Option<String>,
}

/// `converted_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvertTo {
    /// A string of digits becomes an integer, `true`/`false` 1/0.
    Int,
    /// Any value becomes its text.
    String,
}

/// An attribute value written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AttrValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AttrValue, E> {
                Ok(AttrValue::Str(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AttrValue, E> {
                Ok(AttrValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AttrValue, E> {
                Ok(AttrValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AttrValue, E> {
                i64::try_from(v)
                    .map(AttrValue::Int)
                    .map_err(|_| E::custom(format_args!("{v} is beyond a 64-bit integer")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AttrValue, E> {
                Err(E::custom(format_args!(
                    "{v}: flowscope's attribute values are strings, integers and booleans; \
                     quote it (\"{v}\") for a string"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(default)]
    key: Option<String>,
    action: ActionName,
    #[serde(default)]
    value: Option<AttrValue>,
    #[serde(default)]
    from_attribute: Option<String>,
    #[serde(default)]
    from_context: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    converted_type: Option<ConvertTo>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ActionName {
    Insert,
    Update,
    Upsert,
    Delete,
    Hash,
    Extract,
    Convert,
}

impl TryFrom<RawAction> for AttributeAction {
    type Error = String;

    fn try_from(r: RawAction) -> Result<Self, String> {
        use ActionName as A;
        let name = format!("{:?}", r.action).to_lowercase();
        if r.from_context.is_some() {
            return Err(
                "`from_context` is not supported: flowscope's points carry no request \
                 context (client metadata, auth); use `value` or `from_attribute`"
                    .to_owned(),
            );
        }
        if let Some(p) = &r.pattern {
            regex::Regex::new(p).map_err(|e| format!("`pattern` is not a valid regex: {e}"))?;
        }
        let key = |r: &RawAction| -> Result<String, String> {
            match &r.key {
                Some(k) if !k.is_empty() => Ok(k.clone()),
                _ => Err(format!("action `{name}` needs a `key`")),
            }
        };
        let no = |what: &str, set: bool| -> Result<(), String> {
            if set {
                Err(format!("action `{name}` takes no `{what}`"))
            } else {
                Ok(())
            }
        };
        match r.action {
            A::Insert | A::Update | A::Upsert => {
                let k = key(&r)?;
                no("pattern", r.pattern.is_some())?;
                no("converted_type", r.converted_type.is_some())?;
                let from = match (r.value, r.from_attribute) {
                    (Some(v), None) => ValueSource::Value(v),
                    (None, Some(a)) => ValueSource::Attribute(a),
                    _ => {
                        return Err(format!(
                            "action `{name}` needs exactly one of `value` and `from_attribute`"
                        ));
                    }
                };
                Ok(match r.action {
                    A::Insert => AttributeAction::Insert { key: k, from },
                    A::Update => AttributeAction::Update { key: k, from },
                    _ => AttributeAction::Upsert { key: k, from },
                })
            }
            A::Delete | A::Hash => {
                no("value", r.value.is_some())?;
                no("from_attribute", r.from_attribute.is_some())?;
                no("converted_type", r.converted_type.is_some())?;
                if r.key.as_deref().is_none_or(str::is_empty) && r.pattern.is_none() {
                    return Err(format!("action `{name}` needs a `key` or a `pattern`"));
                }
                let keys = KeyMatch {
                    key: r.key.filter(|k| !k.is_empty()),
                    pattern: r.pattern,
                };
                Ok(if r.action == A::Delete {
                    AttributeAction::Delete { keys }
                } else {
                    AttributeAction::Hash { keys }
                })
            }
            A::Extract => {
                let k = key(&r)?;
                no("value", r.value.is_some())?;
                no("from_attribute", r.from_attribute.is_some())?;
                no("converted_type", r.converted_type.is_some())?;
                let Some(pattern) = r.pattern else {
                    return Err(
                        "action `extract` needs a `pattern` with named groups, e.g. \
                         `^(?P<http_protocol>.*):\\/\\/(?P<http_domain>.*)$`"
                            .to_owned(),
                    );
                };
                let re = regex::Regex::new(&pattern).map_err(|e| e.to_string())?;
                if re.capture_names().flatten().next().is_none() {
                    return Err("the `pattern` of action `extract` has no named group \
                         (`(?P<name>...)`); each named group is the attribute it sets"
                        .to_owned());
                }
                Ok(AttributeAction::Extract { key: k, pattern })
            }
            A::Convert => {
                let k = key(&r)?;
                no("value", r.value.is_some())?;
                no("from_attribute", r.from_attribute.is_some())?;
                no("pattern", r.pattern.is_some())?;
                let Some(to) = r.converted_type else {
                    return Err(
                        "action `convert` needs `converted_type: int` or `string`".to_owned()
                    );
                };
                Ok(AttributeAction::Convert { key: k, to })
            }
        }
    }
}

// -------------------------------------------------------- resourcedetection

/// `resourcedetection` processor: the Collector's detectors mapped onto
/// flowscope's own detection. `env` adds `OTEL_RESOURCE_ATTRIBUTES` to every
/// Resource; `system` adds nothing more (flow Resources always carry
/// `host.name`, `host.id` and `os.type`); `ec2`, `gcp` and `azure` run the
/// `cloud` processor's detection of those providers, in the listed order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceDetectionConfig {
    /// Which detectors run, in order (`env`, `system`, `ec2`, `gcp`,
    /// `azure`). Default none, as in the Collector.
    pub detectors: Vec<DetectorName>,
    /// Whether detected values replace values a Resource already has.
    /// Default true, as in the Collector.
    #[serde(rename = "override")]
    pub override_existing: bool,
    /// Time limit of each metadata request. Default `5s`, as in the
    /// Collector.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Collector: per-detector settings, accepted and ignored.
    pub system: Unused,
    /// Collector: accepted and ignored.
    pub ec2: Unused,
    /// Collector: accepted and ignored.
    pub gcp: Unused,
    /// Collector: accepted and ignored.
    pub azure: Unused,
    /// Collector: accepted and ignored.
    pub env: Unused,
}

impl Default for ResourceDetectionConfig {
    fn default() -> Self {
        ResourceDetectionConfig {
            detectors: Vec::new(),
            override_existing: true,
            timeout: Duration::from_secs(5),
            system: Unused::default(),
            ec2: Unused::default(),
            gcp: Unused::default(),
            azure: Unused::default(),
            env: Unused::default(),
        }
    }
}

impl ResourceDetectionConfig {
    pub fn unused(&self, prefix: &str, out: &mut Vec<String>) {
        for (u, key) in [
            (self.system, "system"),
            (self.ec2, "ec2"),
            (self.gcp, "gcp"),
            (self.azure, "azure"),
            (self.env, "env"),
        ] {
            if u.set {
                out.push(format!("{prefix}{key}"));
            }
        }
    }
}

/// A detector of the Collector's `resourcedetection` that flowscope runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorName {
    Env,
    System,
    Ec2,
    Gcp,
    Azure,
}

impl<'de> Deserialize<'de> for DetectorName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "env" => DetectorName::Env,
            "system" => DetectorName::System,
            "ec2" => DetectorName::Ec2,
            "gcp" => DetectorName::Gcp,
            "azure" => DetectorName::Azure,
            "k8snode" | "eks" | "aks" | "gke" | "openshift" => {
                return Err(de::Error::custom(format_args!(
                    "detector `{s}` is not supported: the `kubernetes` processor names the \
                     node and cluster (`cluster_name`), and `ec2`, `gcp` or `azure` the cloud"
                )));
            }
            other => {
                return Err(de::Error::custom(format_args!(
                    "unknown detector `{other}`; flowscope runs env, system, ec2, gcp, azure"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> Result<AttributeAction, String> {
        serde_saphyr::from_str::<AttributeAction>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn actions_parse_and_refuse_what_they_cannot_do() {
        assert_eq!(
            action("{key: deployment.environment.name, value: prod, action: upsert}").unwrap(),
            AttributeAction::Upsert {
                key: "deployment.environment.name".into(),
                from: ValueSource::Value(AttrValue::Str("prod".into()))
            }
        );
        assert_eq!(
            action("{key: n, value: 2245, action: insert}").unwrap(),
            AttributeAction::Insert {
                key: "n".into(),
                from: ValueSource::Value(AttrValue::Int(2245))
            }
        );
        assert_eq!(
            action("{pattern: ^network\\.peer\\., action: delete}").unwrap(),
            AttributeAction::Delete {
                keys: KeyMatch {
                    key: None,
                    pattern: Some("^network\\.peer\\.".into())
                }
            }
        );
        for (yaml, want) in [
            (
                "{key: a, action: upsert}",
                "exactly one of `value` and `from_attribute`",
            ),
            (
                "{key: a, value: 1.5, action: upsert}",
                "strings, integers and booleans",
            ),
            ("{action: delete}", "needs a `key` or a `pattern`"),
            ("{key: a, pattern: x, action: extract}", "no named group"),
            (
                "{key: a, pattern: \"(\", action: hash}",
                "not a valid regex",
            ),
            (
                "{key: a, from_context: auth.x, action: insert}",
                "from_context",
            ),
            ("{key: a, action: convert}", "converted_type"),
            ("{key: a, action: rename}", "unknown variant `rename`"),
        ] {
            let e = action(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
