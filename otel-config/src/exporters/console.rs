//! `console` exporter: a live table in the terminal.

use serde::Deserialize;

use crate::validate::positive_usize;

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
