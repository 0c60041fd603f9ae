//! Processor settings (`processors:` section).
//!
//! # Adding a processor type
//! 1. Define `FooProcessorConfig` below with `#[derive(Debug, Clone, PartialEq,
//!    Deserialize)]`, `#[serde(deny_unknown_fields)]` and doc comments on every
//!    field (they are the reference docs; mirror them in docs/configuration.md).
//!    Give it `#[serde(default)]` + `impl Default` if every field has a default.
//!    Validate values in the serde pass (`deserialize_with`), so errors carry
//!    the line and key path.
//! 2. Add a variant `Foo(FooProcessorConfig)` to [`ProcessorConfig`], its type
//!    string to [`ProcessorConfig::KINDS`] and to the `match` in
//!    [`ProcessorConfig::kind`], and one arm to the `match` in
//!    [`ProcessorSeed::deserialize`]. Nothing outside this file changes.
//! 3. Add a test at the bottom that parses a minimal YAML for the new type.

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{component_body, unknown_kind};

/// The settings of one processor, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProcessorConfig {
    /// `aggregate`: see [`AggregateConfig`].
    Aggregate(AggregateConfig),
}

impl ProcessorConfig {
    /// Every processor type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] = &["aggregate"];

    /// The component type of these settings (`aggregate`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Aggregate(_) => "aggregate",
        }
    }
}

/// Reads a processor's settings for the type named by its id.
pub(crate) struct ProcessorSeed {
    pub(crate) id: ComponentId,
}

impl<'de> DeserializeSeed<'de> for ProcessorSeed {
    type Value = ProcessorConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.id.kind.as_str() {
            "aggregate" => component_body(deserializer).map(ProcessorConfig::Aggregate),
            other => unknown_kind(deserializer, "processor", other, ProcessorConfig::KINDS),
        }
    }
}

/// `aggregate` processor. Its fields are filled in by the processors work;
/// for now it accepts only an empty mapping (`aggregate: {}` or `aggregate:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {}
