//! Component and pipeline identifiers: `type[/name]`, as in the OpenTelemetry
//! Collector (`otlp`, `otlp/backup`, `metrics/coarse`).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer};

/// Why a component or pipeline id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The whole id was empty.
    #[error("empty id; expected `type` or `type/name`")]
    Empty,
    /// `/name` with nothing before the slash.
    #[error("`{0}` has an empty type before `/`; expected `type` or `type/name`")]
    EmptyType(String),
    /// `type/` with nothing after the slash.
    #[error("`{0}` has an empty name after `/`; expected `type` or `type/name`")]
    EmptyName(String),
    /// Whitespace or control characters anywhere in the id.
    #[error("`{0}` contains whitespace or a control character")]
    BadCharacter(String),
    /// A second `/` in the type part (the name may contain `/`, the type may not).
    #[error("`{0}`: the type part may only contain letters, digits, `_` and `-`")]
    BadType(String),
    /// A pipeline for a signal other than `metrics`.
    #[error("pipeline `{0}`: flowscope only produces metrics; use `metrics` or `metrics/<name>`")]
    NotMetrics(String),
}

/// The id of a receiver, processor or exporter: `type[/name]`.
///
/// `kind` selects the implementation (`file`), `name` tells several
/// instances of one type apart (`file/debug`). Parsing rejects empty parts,
/// whitespace and control characters; the name may contain further `/`, as in
/// the Collector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    /// The component type, e.g. `ebpf`, `file`.
    pub kind: String,
    /// The optional instance name after `/`.
    pub name: Option<String>,
}

impl ComponentId {
    /// An id of the given type with no name, e.g. `console`.
    ///
    /// # Errors
    /// As [`FromStr`]: the type must be non-empty and consist of letters,
    /// digits, `_` and `-`.
    pub fn new(kind: &str) -> Result<Self, IdError> {
        kind.parse()
    }
}

impl FromStr for ComponentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(IdError::BadCharacter(s.to_owned()));
        }
        let (kind, name) = match s.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (s, None),
        };
        if kind.is_empty() {
            return Err(IdError::EmptyType(s.to_owned()));
        }
        if !kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(IdError::BadType(s.to_owned()));
        }
        if name == Some("") {
            return Err(IdError::EmptyName(s.to_owned()));
        }
        Ok(ComponentId {
            kind: kind.to_owned(),
            name: name.map(str::to_owned),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.kind, name),
            None => f.write_str(&self.kind),
        }
    }
}

impl<'de> Deserialize<'de> for ComponentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl serde::Serialize for ComponentId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The id of a pipeline: `metrics` or `metrics/<name>` (flowscope only
/// produces metrics, so other signals are rejected).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    /// The optional name after `metrics/`.
    pub name: Option<String>,
}

impl PipelineId {
    /// The signal of every flowscope pipeline.
    pub const SIGNAL: &'static str = "metrics";
}

impl FromStr for PipelineId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id: ComponentId = s.parse()?;
        if id.kind != Self::SIGNAL {
            return Err(IdError::NotMetrics(s.to_owned()));
        }
        Ok(PipelineId { name: id.name })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", Self::SIGNAL, name),
            None => f.write_str(Self::SIGNAL),
        }
    }
}

impl<'de> Deserialize<'de> for PipelineId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl serde::Serialize for PipelineId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_type_and_name() {
        let id: ComponentId = "file/debug".parse().unwrap();
        assert_eq!(id.kind, "file");
        assert_eq!(id.name.as_deref(), Some("debug"));
        assert_eq!(id.to_string(), "file/debug");
        let id: ComponentId = "ebpf".parse().unwrap();
        assert_eq!(id.name, None);
        assert_eq!(id.to_string(), "ebpf");
        // The name may itself contain '/', as in the Collector.
        assert_eq!(
            "otlp/a/b".parse::<ComponentId>().unwrap().name.as_deref(),
            Some("a/b")
        );
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!("".parse::<ComponentId>(), Err(IdError::Empty));
        assert_eq!(
            "/x".parse::<ComponentId>(),
            Err(IdError::EmptyType("/x".into()))
        );
        assert_eq!(
            "x/".parse::<ComponentId>(),
            Err(IdError::EmptyName("x/".into()))
        );
        assert_eq!(
            "a b".parse::<ComponentId>(),
            Err(IdError::BadCharacter("a b".into()))
        );
        assert_eq!(
            "a.b".parse::<ComponentId>(),
            Err(IdError::BadType("a.b".into()))
        );
    }

    #[test]
    fn pipeline_ids_are_metrics_only() {
        assert_eq!(
            "metrics".parse::<PipelineId>().unwrap().to_string(),
            "metrics"
        );
        assert_eq!(
            "metrics/x".parse::<PipelineId>().unwrap().name.as_deref(),
            Some("x")
        );
        assert_eq!(
            "traces".parse::<PipelineId>(),
            Err(IdError::NotMetrics("traces".into()))
        );
    }
}
