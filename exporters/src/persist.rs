//! The persistent queue's directory: one file per queued batch.
//!
//! A batch is written to `<seq>.tmp`, fsynced, renamed to `<seq>.rec` and
//! the directory fsynced, before [`crate::ExporterHandle::submit`] returns;
//! it is deleted once the backend accepted it (or rejected it for good). A
//! rename is atomic, so after a crash every `.rec` file is a whole record;
//! a `.tmp` file is a write the crash interrupted (never acknowledged) and
//! is removed. Each record carries its length and a CRC-32 of its payload,
//! so a file damaged on disk (or cut short by a filesystem that lied about
//! the fsync) is detected, reported with a warning and skipped, never a
//! crash; the other batches are still delivered.
//!
//! Record layout: magic `FSQ1`, payload length (u32 LE), CRC-32 of the
//! payload (u32 LE), payload.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"FSQ1";
const HEADER: usize = 12;

/// Why the queue directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the queue directory `{path}`")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("queue directory `{path}` is in use by another exporter or agent (locked)")]
    Locked { path: PathBuf },
    #[error("locking the queue directory `{path}`")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing the queue directory `{path}`")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A record that could not be read back.
#[derive(Debug)]
pub struct Damaged {
    pub path: PathBuf,
    pub reason: String,
}

/// A record read back: (sequence number, payload, size on disk).
pub(crate) type Record = (u64, Vec<u8>, u64);

/// The size on disk of a record holding `payload_len` bytes: what
/// [`Store::write`] returns for it.
pub(crate) fn record_size(payload_len: usize) -> u64 {
    (HEADER + payload_len) as u64
}

/// Where a persistent queue keeps its records: the directory
/// ([`DiskStore`]); tests wrap it to stall a write.
pub(crate) trait Store: Send + Sync + 'static {
    /// Writes record `seq` durably; returns its size on disk.
    fn write(&self, seq: u64, payload: &[u8]) -> io::Result<u64>;
    /// Deletes record `seq` (already gone is fine).
    fn remove(&self, seq: u64) -> io::Result<()>;
    /// Every intact record in sequence order, and the damaged ones.
    fn load(&self) -> Result<(Vec<Record>, Vec<Damaged>), StoreError>;
}

impl Store for DiskStore {
    fn write(&self, seq: u64, payload: &[u8]) -> io::Result<u64> {
        DiskStore::write(self, seq, payload)
    }
    fn remove(&self, seq: u64) -> io::Result<()> {
        DiskStore::remove(self, seq)
    }
    fn load(&self) -> Result<(Vec<Record>, Vec<Damaged>), StoreError> {
        DiskStore::load(self)
    }
}

pub(crate) struct DiskStore {
    dir: PathBuf,
    /// Held (locked) while the store is open: two exporters or two agents
    /// on one directory would send and delete each other's batches.
    _lock: File,
}

impl DiskStore {
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_err = |source| StoreError::Lock {
            path: dir.to_path_buf(),
            source,
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("queue.lock"))
            .map_err(lock_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn path(&self, seq: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{seq:020}.{ext}"))
    }

    /// Writes record `seq` durably; returns its size on disk.
    pub(crate) fn write(&self, seq: u64, payload: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "batch larger than 4 GiB"))?;
        let tmp = self.path(seq, "tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4..8].copy_from_slice(&len.to_le_bytes());
        header[8..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        f.write_all(&header)?;
        f.write_all(payload)?;
        f.sync_all()?;
        fs::rename(&tmp, self.path(seq, "rec"))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(record_size(payload.len()))
    }

    /// Deletes record `seq` (already gone is fine).
    pub(crate) fn remove(&self, seq: u64) -> io::Result<()> {
        match fs::remove_file(self.path(seq, "rec")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every intact record in sequence order with its size on disk, and the
    /// damaged ones (already removed from the directory, renamed `.bad`).
    /// Interrupted writes (`.tmp`) are deleted.
    pub(crate) fn load(&self) -> Result<(Vec<Record>, Vec<Damaged>), StoreError> {
        let list_err = |source| StoreError::List {
            path: self.dir.clone(),
            source,
        };
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let path = entry.path();
            let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
                continue;
            };
            let Some(seq) = stem.to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            match ext.to_str() {
                Some("rec") => seqs.push(seq),
                Some("tmp") => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
        seqs.sort_unstable();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for seq in seqs {
            let path = self.path(seq, "rec");
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| check(&b).map(<[u8]>::to_vec))
            {
                Ok(payload) => {
                    let size = (HEADER + payload.len()) as u64;
                    good.push((seq, payload, size));
                }
                Err(reason) => {
                    let _ = fs::rename(&path, self.path(seq, "bad"));
                    bad.push(Damaged { path, reason });
                }
            }
        }
        Ok((good, bad))
    }
}

/// The payload of a whole record, or what is wrong with it.
fn check(b: &[u8]) -> Result<&[u8], String> {
    if b.len() < HEADER {
        return Err(format!(
            "{} bytes, shorter than the {HEADER}-byte header (torn write)",
            b.len()
        ));
    }
    if &b[..4] != MAGIC {
        return Err("bad magic (not a flowscope queue record)".into());
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&b[4..8]);
    let len = u32::from_le_bytes(n) as usize;
    let payload = &b[HEADER..];
    if payload.len() != len {
        return Err(format!(
            "payload is {} bytes, header says {len} (torn write)",
            payload.len()
        ));
    }
    n.copy_from_slice(&b[8..12]);
    if crc32fast::hash(payload) != u32::from_le_bytes(n) {
        return Err("checksum mismatch (damaged on disk)".into());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStore::open(dir.path()).unwrap();
        assert_eq!(s.write(1, b"one").unwrap(), 15);
        s.write(2, b"two").unwrap();
        s.write(3, b"three").unwrap();
        s.write(4, b"four").unwrap();
        s.remove(4).unwrap();
        // A torn write left by a crash, a truncated record, a flipped byte.
        fs::write(dir.path().join(format!("{:020}.tmp", 9)), b"FSQ").unwrap();
        let p2 = dir.path().join(format!("{:020}.rec", 2));
        let full = fs::read(&p2).unwrap();
        fs::write(&p2, &full[..full.len() - 1]).unwrap();
        let p3 = dir.path().join(format!("{:020}.rec", 3));
        let mut b = fs::read(&p3).unwrap();
        b[HEADER] ^= 0xff;
        fs::write(&p3, b).unwrap();

        let (good, bad) = s.load().unwrap();
        assert_eq!(good, vec![(1, b"one".to_vec(), 15)]);
        assert_eq!(bad.len(), 2);
        assert!(bad[0].reason.contains("torn"), "{}", bad[0].reason);
        assert!(bad[1].reason.contains("checksum"), "{}", bad[1].reason);
        assert!(!dir.path().join(format!("{:020}.tmp", 9)).exists());
        // Damaged records are set aside, not read again.
        let (good, bad) = s.load().unwrap();
        assert_eq!((good.len(), bad.len()), (1, 0));
        // A second user of the directory is refused while the first lives.
        assert!(matches!(
            DiskStore::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
        drop(s);
        assert!(DiskStore::open(dir.path()).is_ok());
    }
}
