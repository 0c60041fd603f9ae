//! The one error type of this crate.

use std::fmt;

/// Where in the configuration something happened: `file:line:column`.
/// Line and column are 1-based and refer to the file as written (before
/// `${env:...}` substitution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name (or the `origin` given to [`crate::load_str`]).
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
}

impl Location {
    pub(crate) fn new(origin: &str, line: Option<u32>, column: Option<u32>) -> Self {
        Location {
            origin: origin.to_owned(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded. Every variant's message starts
/// with `file:line:column:` (as much of it as is known) and, where a key is
/// involved, its path, e.g.
/// `config.yaml:12:7: exporters.file/out.rotation.max_megabytes: invalid type: string "x", expected u64`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read the configuration file")]
    Read {
        /// The path as given.
        origin: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `${env:NAME}` names a variable that is not set, and gives no default.
    #[error(
        "{at}: environment variable `{var}` is not set (referenced as ${{env:{var}}}; \
         set it or give a default: ${{env:{var}:-value}})"
    )]
    UnsetVariable {
        /// Where the reference is.
        at: Location,
        /// The variable's name.
        var: String,
    },
    /// A `${...}` reference that is not `${env:NAME}` or `${env:NAME:-default}`,
    /// or a variable whose value cannot be substituted.
    #[error("{at}: {message}")]
    Substitution {
        /// Where the reference is.
        at: Location,
        /// What is wrong with it.
        message: String,
    },
    /// The YAML is malformed, or a value has the wrong type, an unknown key,
    /// an unknown component type or an out-of-range value.
    #[error("{at}: {}", with_path(.path, .message))]
    Parse {
        /// Where the YAML parser was when the error was found.
        at: Location,
        /// The key path, e.g. `exporters.file/out.rotation` (empty at the root).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The YAML is well-formed but inconsistent: a pipeline references a
    /// component that is not defined, has no receiver, etc.
    #[error("{at}: {}", with_path(.path, .message))]
    Invalid {
        /// Where the offending entry is.
        at: Location,
        /// The key path, e.g. `service.pipelines.metrics.exporters[1]`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// Where the error is, when it is inside the file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::UnsetVariable { at, .. }
            | ConfigError::Substitution { at, .. }
            | ConfigError::Parse { at, .. }
            | ConfigError::Invalid { at, .. } => Some(at),
        }
    }
}

fn with_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}
