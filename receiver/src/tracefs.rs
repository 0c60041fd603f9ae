//! Tracepoint record layouts, read from tracefs `format` files.
//!
//! A tracepoint's record layout is part of the kernel build, not of its
//! ABI: fields move between versions. Each event's
//! `/sys/kernel/tracing/events/<category>/<name>/format` lists its fields as
//! `field:<decl>;\toffset:<n>;\tsize:<n>;\tsigned:<0|1>;`, which is what the
//! receiver reads instead of hard-coding offsets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing (nor debugfs at /sys/kernel/debug/tracing); mount it: mount -t tracefs nodev /sys/kernel/tracing"
    )]
    NotMounted,
    #[error("tracepoint {category}:{name} does not exist on this kernel ({path})")]
    NoTracepoint {
        category: String,
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint}: {path} line {line}: cannot parse `{text}`")]
    Parse {
        tracepoint: String,
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("tracepoint {tracepoint} has no field `{field}`")]
    NoField { tracepoint: String, field: String },
    #[error(
        "tracepoint {tracepoint} field `{field}` is {size} bytes, flowscope expects {expected}"
    )]
    FieldSize {
        tracepoint: String,
        field: String,
        size: u32,
        expected: u32,
    },
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// A parsed `format` file.
#[derive(Debug)]
pub struct Format {
    tracepoint: String,
    fields: HashMap<String, Field>,
}

/// The tracefs mount point. When tracefs is not mounted anywhere, mounts it
/// at /sys/kernel/tracing (which needs root), as `mount -t tracefs` would.
pub fn root() -> Result<PathBuf, TracefsError> {
    let find = || {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .find(|p| Path::new(p).join("events").is_dir())
            .map(PathBuf::from)
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    // A failure shows below: still nothing found.
    let _ = crate::mount::mount_fs(c"tracefs", c"/sys/kernel/tracing");
    find().ok_or(TracefsError::NotMounted)
}

impl Format {
    /// Reads the format of `category:name` below tracefs `root`.
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let path = root.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::NoTracepoint {
            category: category.into(),
            name: name.into(),
            path: path.clone(),
            source,
        })?;
        Self::parse(&format!("{category}:{name}"), &path, &text)
    }

    pub fn parse(tracepoint: &str, path: &Path, text: &str) -> Result<Self, TracefsError> {
        let mut fields = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let err = || TracefsError::Parse {
                tracepoint: tracepoint.into(),
                path: path.to_path_buf(),
                line: i + 1,
                text: line.into(),
            };
            let mut parts = rest.split(';').map(str::trim);
            let decl = parts.next().ok_or_else(err)?;
            let mut offset = None;
            let mut size = None;
            for p in parts {
                if let Some(v) = p.strip_prefix("offset:") {
                    offset = v.parse::<u32>().ok();
                } else if let Some(v) = p.strip_prefix("size:") {
                    size = v.parse::<u32>().ok();
                }
            }
            // The name is the declaration's last word, less any `[N]`.
            let name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .map(|n| n.split('[').next().unwrap_or(n))
                .filter(|n| !n.is_empty())
                .ok_or_else(err)?;
            let (Some(offset), Some(size)) = (offset, size) else {
                return Err(err());
            };
            fields.insert(name.to_string(), Field { offset, size });
        }
        Ok(Self {
            tracepoint: tracepoint.into(),
            fields,
        })
    }

    /// Offset of `field`, checking it is `size` bytes wide.
    pub fn offset(&self, field: &str, size: u32) -> Result<u32, TracefsError> {
        let f = self
            .fields
            .get(field)
            .ok_or_else(|| TracefsError::NoField {
                tracepoint: self.tracepoint.clone(),
                field: field.into(),
            })?;
        if f.size != size {
            return Err(TracefsError::FieldSize {
                tracepoint: self.tracepoint.clone(),
                field: field.into(),
                size: f.size,
                expected: size,
            });
        }
        Ok(f.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "name: inet_sock_set_state
ID: 1447
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;

print fmt: \"family=%s\"
";

    #[test]
    fn parses_fields() {
        let f = Format::parse("sock:inet_sock_set_state", Path::new("x"), SAMPLE).unwrap();
        assert_eq!(f.offset("skaddr", 8).unwrap(), 8);
        assert_eq!(f.offset("oldstate", 4).unwrap(), 16);
        assert_eq!(f.offset("saddr_v6", 16).unwrap(), 40);
        let e = f.offset("oldstate", 2).unwrap_err().to_string();
        assert!(e.contains("4 bytes"), "{e}");
        let e = f.offset("nope", 4).unwrap_err().to_string();
        assert!(
            e.contains("sock:inet_sock_set_state") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn bad_line_names_where() {
        let e = Format::parse(
            "a:b",
            Path::new("/f"),
            "\tfield:int x;\toffset:zz;\tsize:4;\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
