//! Probing from another network namespace, and the capability check.
//!
//! A socket belongs to the network namespace of the thread that created
//! it. `setns(fd, CLONE_NEWNET)` moves only the calling thread, so each run
//! gets a dedicated thread that enters the target namespace first and then
//! opens its sockets; the agent's other threads stay where they are, and
//! the thread ends with the run (a namespace is never left behind on a
//! pooled thread).

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// Where a run probes from.
#[derive(Clone, Debug)]
pub enum Netns {
    /// The agent's own namespace.
    Own,
    /// A namespace file opened at each run (`/run/netns/NAME`,
    /// `/proc/PID/ns/net`).
    Path(PathBuf),
    /// A namespace file opened earlier (dynamic tests hold the client's
    /// namespace open so that a recycled pid cannot redirect them).
    Open(Arc<File>),
}

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a network namespace (setns: {source})")]
    Enter {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a probe thread")]
    Thread(#[source] std::io::Error),
    #[error("the probe thread panicked")]
    Panicked,
}

/// Opens a namespace file and returns it with its inode.
pub fn open_netns(path: &Path) -> Result<(File, u64), NetnsError> {
    let f = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
    Ok((f, ino))
}

/// Where `ip netns` and container runtimes bind network namespaces.
pub const BOUND_DIRS: &[&str] = &["/run/netns", "/var/run/docker/netns"];

/// Finds a bound namespace file whose inode is `ino`.
pub fn find_bound(ino: u64) -> Option<File> {
    BOUND_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == ino))
        .and_then(|e| File::open(e.path()).ok())
}

fn enter(file: &File, label: &str) -> Result<(), NetnsError> {
    // SAFETY: setns takes a valid open descriptor and a flag; it changes only
    // this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Enter {
            path: label.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside `netns` and returns its value (blocking
/// the caller until the thread ends).
pub fn run_in<T: Send + 'static>(
    netns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let netns = netns.clone();
    let handle = std::thread::Builder::new()
        .name("flowscope-path".into())
        .spawn(move || -> Result<T, NetnsError> {
            match &netns {
                Netns::Own => {}
                Netns::Path(p) => {
                    let (file, _) = open_netns(p)?;
                    enter(&file, &p.display().to_string())?;
                }
                Netns::Open(file) => enter(file, "the client's namespace")?,
            }
            Ok(f())
        })
        .map_err(NetnsError::Thread)?;
    handle.join().map_err(|_| NetnsError::Panicked)?
}

/// The addresses of the calling thread's network namespace's interfaces.
pub fn local_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; every node
    // and address pointer is checked before use.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// CAP_NET_RAW's bit in the capability sets.
const CAP_NET_RAW: u32 = 13;

/// Whether this process holds CAP_NET_RAW in its effective set (raw
/// sockets to send probes and read ICMP answers need it).
pub fn has_net_raw() -> bool {
    crate::capabilities::effective() & (1 << CAP_NET_RAW) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_named() {
        let e = run_in(&Netns::Path("/run/netns/flowscope-no-such".into()), || ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/run/netns/flowscope-no-such"), "{e}");
    }

    #[test]
    fn loopback_is_local() {
        let addrs = run_in(&Netns::Own, local_addrs).unwrap();
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])), "{addrs:?}");
    }
}
