//! Which local process owns a DNS socket, from /proc.
//!
//! A captured packet names a local address and port, not a process. The
//! kernel's socket tables of the packet's namespace (`/proc/net/udp`,
//! `udp6`, `tcp`, `tcp6`, read after entering the namespace with setns, so
//! namespaces without any process, like `ip netns add` ones, work too) give
//! the socket inode for the port; the `/proc/<pid>/fd` links of the
//! processes in that namespace give the process holding that inode. The
//! process becomes a Resource as the flow receiver builds them
//! ([`ProcessCache`]: service.name, container.id, host.*).
//!
//! Every step is cached and rate-limited so that a flood of lookups from
//! fresh sockets costs a bounded amount of /proc reading: a port's owner is
//! cached for [`OWNER_TTL`]; a namespace's socket table is read at most
//! every [`TABLE_MIN_AGE`] and its processes' fds scanned at most every
//! [`SCAN_MIN_AGE`]. A socket that cannot be attributed (closed already,
//! or the budget spent) gets `service.name=unknown_service`, as OpenTelemetry
//! SDKs name an unknown service.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowscope_model::names::resource;
use flowscope_model::{Attrs, Transport};

use super::engine::OwnerResolver;
use crate::process::ProcessCache;

pub const OWNER_TTL: Duration = Duration::from_secs(5);
pub const TABLE_MIN_AGE: Duration = Duration::from_millis(5);
pub const SCAN_MIN_AGE: Duration = Duration::from_millis(20);
/// `service.name` of lookups whose process is unknown.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Where each known network namespace can be entered: netns inode -> a
/// path to its ns file (`/proc/<pid>/ns/net` or `/run/netns/<name>`).
/// Filled by the capture's namespace scan.
pub type NsPaths = Arc<Mutex<HashMap<u32, PathBuf>>>;

struct NsState {
    /// (transport, ipv6, port) -> socket inode, from the last table read.
    table: HashMap<(Transport, u16), u64>,
    table_read: Option<Instant>,
    scanned: Option<Instant>,
}

pub struct ProcOwners {
    ns_paths: NsPaths,
    home: Option<File>,
    host: Attrs,
    procs: ProcessCache,
    owners: HashMap<(u32, Transport, u16), (Arc<Attrs>, Instant)>,
    ns: HashMap<u32, NsState>,
    inode_pid: HashMap<u64, u32>,
    resources: HashMap<(Arc<str>, Option<Arc<str>>), Arc<Attrs>>,
    unknown: Arc<Attrs>,
}

impl ProcOwners {
    /// `host` are the host attributes put on every Resource.
    pub fn new(ns_paths: NsPaths, host: Attrs) -> Self {
        let unknown = Arc::new(host.clone().with(resource::SERVICE_NAME, UNKNOWN_SERVICE));
        Self {
            ns_paths,
            // The namespace to return to after reading another one's tables.
            home: File::open("/proc/thread-self/ns/net").ok(),
            host,
            procs: ProcessCache::new("/proc", Duration::from_secs(60), 4096),
            owners: HashMap::new(),
            ns: HashMap::new(),
            inode_pid: HashMap::new(),
            resources: HashMap::new(),
            unknown,
        }
    }

    fn inode_of(&mut self, netns: u32, transport: Transport, port: u16) -> Option<u64> {
        let now = Instant::now();
        let st = self.ns.entry(netns).or_insert(NsState {
            table: HashMap::new(),
            table_read: None,
            scanned: None,
        });
        if let Some(i) = st.table.get(&(transport, port)) {
            return Some(*i);
        }
        if st
            .table_read
            .is_some_and(|t| now.duration_since(t) < TABLE_MIN_AGE)
        {
            return None;
        }
        st.table_read = Some(now);
        let path = self
            .ns_paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&netns)
            .cloned()?;
        let tables = read_tables_in(&path, netns, self.home.as_ref())?;
        let st = self.ns.get_mut(&netns)?;
        st.table = tables;
        st.table.get(&(transport, port)).copied()
    }

    fn pid_of(&mut self, netns: u32, inode: u64) -> Option<u32> {
        if let Some(pid) = self.inode_pid.get(&inode) {
            return Some(*pid);
        }
        let now = Instant::now();
        let st = self.ns.get_mut(&netns)?;
        if st
            .scanned
            .is_some_and(|t| now.duration_since(t) < SCAN_MIN_AGE)
        {
            return None;
        }
        st.scanned = Some(now);
        // Rebuild the map for this namespace's processes.
        self.inode_pid.retain(|_, _| false);
        scan_fds(netns, &mut self.inode_pid);
        self.inode_pid.get(&inode).copied()
    }

    fn resource_of(&mut self, pid: u32) -> Arc<Attrs> {
        let mut comm = [0u8; 16];
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/comm")) {
            let c = c.strip_suffix(b"\n").unwrap_or(&c);
            let n = c.len().min(16);
            comm[..n].copy_from_slice(&c[..n]);
        }
        let info = self.procs.get(pid, &comm);
        let key = (info.service_name.clone(), info.container_id.clone());
        let host = &self.host;
        self.resources
            .entry(key)
            .or_insert_with(|| {
                let mut a = host
                    .clone()
                    .with(resource::SERVICE_NAME, info.service_name.clone());
                if let Some(c) = &info.container_id {
                    a.set(resource::CONTAINER_ID, c.clone());
                }
                Arc::new(a)
            })
            .clone()
    }
}

impl OwnerResolver for ProcOwners {
    fn resource(&mut self, netns: u32, transport: Transport, local: SocketAddr) -> Arc<Attrs> {
        let now = Instant::now();
        let key = (netns, transport, local.port());
        if let Some((r, at)) = self.owners.get(&key)
            && now.duration_since(*at) < OWNER_TTL
        {
            return r.clone();
        }
        let found = self
            .inode_of(netns, transport, local.port())
            .and_then(|inode| self.pid_of(netns, inode))
            .map(|pid| self.resource_of(pid));
        let Some(r) = found else {
            return self.unknown.clone();
        };
        if self.owners.len() >= 65_536 {
            self.owners
                .retain(|_, (_, at)| now.duration_since(*at) < OWNER_TTL);
        }
        if self.owners.len() < 65_536 {
            self.owners.insert(key, (r.clone(), now));
        }
        if self.resources.len() > 4096 {
            self.resources.clear();
        }
        r
    }
}

/// Enters the namespace at `path` (checking it is `netns`), reads its TCP
/// and UDP socket tables, and returns to `home`.
fn read_tables_in(
    path: &PathBuf,
    netns: u32,
    home: Option<&File>,
) -> Option<HashMap<(Transport, u16), u64>> {
    let ns = File::open(path).ok()?;
    if ns.metadata().ok()?.ino() != u64::from(netns) {
        return None;
    }
    let home = home?;
    // SAFETY: setns on this thread only, with valid namespace fds; the
    // thread goes back to `home` before returning.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return None;
    }
    let mut table = HashMap::new();
    for (file, transport) in [
        ("udp", Transport::Udp),
        ("udp6", Transport::Udp),
        ("tcp", Transport::Tcp),
        ("tcp6", Transport::Tcp),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            parse_table(&text, transport, &mut table);
        }
    }
    // SAFETY: as above.
    let back = unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
    if back != 0 {
        tracing::error!("cannot return the DNS capture thread to its network namespace");
    }
    Some(table)
}

/// Adds `port -> inode` for each socket of a /proc/net/{tcp,udp}{,6} table.
/// A port held by several sockets keeps the first listed with an inode.
pub fn parse_table(text: &str, transport: Transport, out: &mut HashMap<(Transport, u16), u64>) {
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let local = f.nth(1);
        let inode = f.nth(7);
        let (Some(local), Some(inode)) = (local, inode) else {
            continue;
        };
        let Some(port) = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        if inode != 0 {
            out.entry((transport, port)).or_insert(inode);
        }
    }
}

/// Maps socket inodes to pids for every process in namespace `netns`.
fn scan_fds(netns: u32, out: &mut HashMap<u64, u32>) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let want = format!("net:[{netns}]");
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        match std::fs::read_link(base.join("ns/net")) {
            Ok(l) if l.as_os_str() == want.as_str() => {}
            _ => continue,
        }
        let Ok(fds) = std::fs::read_dir(base.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            out.entry(inode).or_insert(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tables() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
  2: 0100007F:9C40 0200007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0\n";
        let mut t = HashMap::new();
        parse_table(text, Transport::Udp, &mut t);
        assert_eq!(t.get(&(Transport::Udp, 53)), Some(&4242));
        assert_eq!(t.get(&(Transport::Udp, 0x9c40)), None);
    }
}
