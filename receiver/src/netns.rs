//! Network namespaces the agent watches, shared by the services that open a
//! socket in each of them (DNS capture, conntrack).
//!
//! - Namespaces are found in `/proc/<pid>/ns/net` (every namespace with a
//!   process) and `/run/netns/*` (named ones, `ip netns add`, which may have
//!   none), deduplicated by inode: the inode is what the eBPF side reports
//!   as a socket's `netns`, so the two line up.
//! - A socket belongs to the namespace it was created in, whichever thread
//!   uses it later. [`in_namespace`] runs a closure on a short-lived thread
//!   that first enters the namespace with setns(2), so the calling thread
//!   (and the tokio runtime) never changes namespace.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entering network namespace {netns} (setns)")]
    Setns {
        netns: u32,
        #[source]
        source: io::Error,
    },
    #[error("spawning the thread that enters network namespace {netns}")]
    Spawn {
        netns: u32,
        #[source]
        source: io::Error,
    },
    #[error("the thread working in network namespace {0} panicked")]
    Thread(u32),
}

/// Every network namespace on the host, by inode: one path to it, and a
/// process in it if there is one.
pub fn scan_namespaces() -> HashMap<u32, (PathBuf, Option<u32>)> {
    NetnsScanner::default().scan()
}

/// [`scan_namespaces`] for callers that rescan periodically (the conntrack
/// service and DNS capture, every few seconds): it remembers each
/// process's namespace and stats `/proc/<pid>/ns/net` only for pids it has
/// not seen, since a process cannot change namespace without
/// `setns`/`unshare` and those that do are rare next to the cost of a path
/// walk per process per rescan (a profile put that at a fifth of the
/// agent's CPU). A pid that exits and is reused between two rescans by a
/// process in another namespace is taken for the old one until it exits;
/// its namespace is found through any other process in it.
#[derive(Debug, Default)]
pub struct NetnsScanner {
    /// pid -> its namespace's inode, as of the last scan.
    pids: HashMap<u32, u32>,
}

impl NetnsScanner {
    pub fn scan(&mut self) -> HashMap<u32, (PathBuf, Option<u32>)> {
        let mut out: HashMap<u32, (PathBuf, Option<u32>)> = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for e in dir.flatten() {
                let path = e.path();
                if !is_namespace_file(&path) {
                    continue;
                }
                if let Ok(m) = std::fs::metadata(&path) {
                    out.entry(m.ino() as u32).or_insert((path, None));
                }
            }
        }
        let mut pids = HashMap::with_capacity(self.pids.len());
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let path = e.path().join("ns/net");
                let ino = match self.pids.get(&pid) {
                    Some(ino) => *ino,
                    None => match std::fs::metadata(&path) {
                        Ok(m) => m.ino() as u32,
                        Err(_) => continue,
                    },
                };
                pids.insert(pid, ino);
                let entry = out.entry(ino).or_insert((path, None));
                entry.1.get_or_insert(pid);
            }
        }
        self.pids = pids;
        out
    }
}

/// Whether `path` is a namespace now. `ip netns add` creates
/// `/run/netns/NAME` as an empty file on the tmpfs and bind-mounts the new
/// namespace over it only afterwards, and `ip netns delete` unmounts it
/// before it unlinks the file: a scan in between finds a plain file, whose
/// inode is no namespace's, and setns(2) on it fails with EINVAL. Only a
/// path on nsfs is a namespace.
pub(crate) fn is_namespace_file(path: &Path) -> bool {
    crate::mount::is_on(path, crate::mount::NSFS_MAGIC)
}

/// The sockets of every watched namespace, polled together by one thread
/// (conntrack's event sockets, DNS capture's packet sockets), optionally
/// batching under load ([`NsPoll::batching`]): wake-ups, not reads, are
/// what costs at thousands of messages per second.
pub struct NsPoll {
    fds: Vec<libc::pollfd>,
    /// The namespace of each entry of `fds`.
    order: Vec<u32>,
    last_wake: Instant,
    /// (batch_after, batch_wait): see [`NsPoll::batching`].
    batch: Option<(Duration, Duration)>,
}

impl Default for NsPoll {
    /// A poller that reads as soon as data arrives.
    fn default() -> Self {
        NsPoll {
            fds: Vec::new(),
            order: Vec::new(),
            last_wake: Instant::now(),
            batch: None,
        }
    }
}

impl NsPoll {
    /// A poller for which a wake-up within `batch_after` of the previous
    /// one means load: it waits `batch_wait` before its sockets are read.
    /// With `batch_wait` under `batch_after`, a busy poller stays batched.
    pub fn batching(batch_after: Duration, batch_wait: Duration) -> Self {
        NsPoll {
            last_wake: Instant::now() - batch_after,
            batch: Some((batch_after, batch_wait)),
            ..NsPoll::default()
        }
    }

    /// The sockets to poll from now on: (namespace, socket) pairs.
    pub fn set(&mut self, socks: impl IntoIterator<Item = (u32, RawFd)>) {
        self.fds.clear();
        self.order.clear();
        for (ns, fd) in socks {
            self.fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            self.order.push(ns);
        }
    }

    /// Waits up to `timeout` for data, then yields each (namespace, socket)
    /// with data to read or an error pending (a read reports it).
    pub fn wait(&mut self, timeout: Duration) -> impl Iterator<Item = (u32, RawFd)> + '_ {
        for p in self.fds.iter_mut() {
            p.revents = 0;
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: fds is a valid array of its length.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if n > 0
            && let Some((after, wait)) = self.batch
        {
            let now = Instant::now();
            if now.duration_since(self.last_wake) < after {
                std::thread::sleep(wait);
            }
            self.last_wake = now;
        }
        self.fds
            .iter()
            .zip(&self.order)
            .filter(move |(p, _)| n > 0 && p.revents & (libc::POLLIN | libc::POLLERR) != 0)
            .map(|(p, ns)| (*ns, p.fd))
    }
}

/// The inode of this thread's network namespace.
pub fn current_netns() -> Option<u32> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino() as u32)
}

/// Runs `f` on a short-lived thread named `name` inside the namespace at
/// `path`, which must still be the namespace with inode `netns` (a pid's
/// `ns/net` path names another one once the pid is reused).
pub fn in_namespace<T, E>(
    path: &Path,
    netns: u32,
    name: &str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<NetnsError> + Send + 'static,
{
    let ns = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    match ns.metadata() {
        Ok(m) if m.ino() as u32 == netns => {}
        _ => {
            return Err(NetnsError::Open {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "namespace changed"),
            }
            .into());
        }
    }
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || -> Result<T, E> {
            // SAFETY: setns on this short-lived thread only; it ends with f.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Setns {
                    netns,
                    source: io::Error::last_os_error(),
                }
                .into());
            }
            f()
        })
        .map_err(|source| NetnsError::Spawn { netns, source })?;
    handle.join().map_err(|_| NetnsError::Thread(netns))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_namespace_and_runs_in_it() {
        let me = current_netns().unwrap();
        let all = scan_namespaces();
        let (path, _) = all.get(&me).expect("own namespace scanned").clone();
        let seen =
            in_namespace::<_, NetnsError>(&path, me, "fs-test-ns", || Ok(current_netns())).unwrap();
        assert_eq!(seen, Some(me));
        // A wrong inode is refused, not entered.
        assert!(in_namespace::<_, NetnsError>(&path, me ^ 1, "fs-test-ns", || Ok(())).is_err());
    }

    /// What `ip netns add` leaves for a moment before its mount: a plain
    /// file, which is no namespace; a process's `ns/net` is one.
    #[test]
    fn only_nsfs_paths_are_namespaces() {
        assert!(is_namespace_file(Path::new("/proc/self/ns/net")));
        let dir = std::env::temp_dir().join(format!("flowscope-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("placeholder");
        std::fs::write(&plain, b"").unwrap();
        assert!(!is_namespace_file(&plain));
        assert!(!is_namespace_file(&dir.join("absent")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
