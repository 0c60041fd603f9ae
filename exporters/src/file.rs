//! `file` exporter: one OTLP `ExportMetricsServiceRequest` per line in the
//! protobuf JSON mapping, as the OpenTelemetry Collector's file exporter
//! writes it, rotated by size.
//!
//! Rotation: before a line would take the file past `max_megabytes`, the
//! file is renamed `name.1` (an older `name.1` becomes `name.2`, and so on up
//! to `max_backups`; the oldest beyond that is deleted) and a new file is
//! started. A single line larger than the limit is still written whole, to
//! a fresh file. Every batch is flushed, so a reader sees whole lines.
//!
//! Writes are plain blocking `std::fs` calls on the exporter's own task: one
//! line per interval is small, and it keeps the file in one place.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flowscope_model::MetricBatch;

use crate::encode::encode;
use crate::json::request_to_json;
use crate::{Outcome, Sink};

/// Why the file exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("opening `{path}` for appending")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the size of `{path}`")]
    Metadata {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Appends lines to a file, rotating it by size.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_backups: u32,
    file: BufWriter<File>,
    written: u64,
}

impl RotatingFile {
    /// Opens (creating or appending to) `path`. `max_bytes` 0 never rotates.
    pub fn open(path: &Path, max_bytes: u64, max_backups: u32) -> Result<Self, FileError> {
        let file = open_append(path)?;
        let written = file
            .metadata()
            .map_err(|source| FileError::Metadata {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            max_backups,
            file: BufWriter::new(file),
            written,
        })
    }

    /// Writes `line` and a newline, then flushes.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.max_bytes > 0 && self.written > 0 && self.written + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.file.flush()?;
        self.written += len;
        Ok(())
    }

    fn backup(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_backups == 0 {
            remove_if_present(&self.path)?;
        } else {
            remove_if_present(&self.backup(self.max_backups))?;
            for n in (1..self.max_backups).rev() {
                let from = self.backup(n);
                if from.exists() {
                    std::fs::rename(&from, self.backup(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.backup(1))?;
        }
        let file = open_append(&self.path).map_err(|e| match e {
            FileError::Open { source, .. } | FileError::Metadata { source, .. } => source,
        })?;
        self.file = BufWriter::new(file);
        self.written = 0;
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn open_append(path: &Path) -> Result<File, FileError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| FileError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// The `file` exporter's sink: encode, one JSON line, flush. The write and
/// its flush run on the blocking pool: a slow or stuck disk holds that
/// thread, never one of the agent's async workers (every other exporter and
/// the pipelines run on those).
pub(crate) struct FileSink {
    /// `None` only while a write is in flight, or after a write panicked.
    file: Option<RotatingFile>,
    /// For messages, also when the file was lost.
    path: std::path::PathBuf,
}

impl FileSink {
    pub(crate) fn new(file: RotatingFile) -> Self {
        Self {
            path: file.path.clone(),
            file: Some(file),
        }
    }
}

impl Sink for FileSink {
    type Item = MetricBatch;

    async fn export(&mut self, batch: &MetricBatch) -> Outcome {
        let enc = encode(batch);
        let mut out = Outcome::default();
        out.fail(
            enc.skipped,
            "encode",
            "point value does not match its instrument".into(),
        );
        if enc.points == 0 {
            return out;
        }
        let line = match request_to_json(&enc.request) {
            Ok(line) => line,
            Err(e) => {
                out.fail(enc.points, "encode", format!("encoding OTLP JSON: {e}"));
                return out;
            }
        };
        let written = crate::with_writer_blocking(&mut self.file, move |f| f.write_line(&line))
            .await
            .and_then(|r| r.map_err(|e| e.to_string()));
        match written {
            Ok(()) => out.sent += enc.points,
            Err(e) => out.fail(
                enc.points,
                "io",
                format!("writing to `{}`: {e}", self.path.display()),
            ),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn rotates_by_size_and_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // 10-byte lines (9 + newline), 25-byte limit: two lines per file.
        let mut f = RotatingFile::open(&path, 25, 2).unwrap();
        for i in 0..7 {
            f.write_line(&format!("line-{i:04}")).unwrap();
        }
        assert_eq!(lines(&path), ["line-0006"]);
        assert_eq!(
            lines(&dir.path().join("out.jsonl.1")),
            ["line-0004", "line-0005"]
        );
        assert_eq!(
            lines(&dir.path().join("out.jsonl.2")),
            ["line-0002", "line-0003"]
        );
        // line-0000/0001 were in the third-oldest file: deleted.
        assert!(!dir.path().join("out.jsonl.3").exists());
    }

    #[test]
    fn reopening_appends_and_counts_existing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        RotatingFile::open(&path, 25, 1)
            .unwrap()
            .write_line("line-0000")
            .unwrap();
        let mut f = RotatingFile::open(&path, 25, 1).unwrap();
        f.write_line("line-0001").unwrap();
        f.write_line("line-0002").unwrap();
        assert_eq!(lines(&path), ["line-0002"]);
        assert_eq!(
            lines(&dir.path().join("out.jsonl.1")),
            ["line-0000", "line-0001"]
        );
    }

    #[test]
    fn zero_backups_truncates_and_oversized_line_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o");
        let mut f = RotatingFile::open(&path, 10, 0).unwrap();
        f.write_line("abc").unwrap();
        let long = "x".repeat(30);
        f.write_line(&long).unwrap();
        assert_eq!(lines(&path), [long.as_str()]);
        assert!(!dir.path().join("o.1").exists());
        f.write_line("def").unwrap();
        assert_eq!(lines(&path), ["def"]);
    }
}
