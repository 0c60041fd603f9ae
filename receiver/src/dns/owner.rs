//! Which local process owns a DNS socket, from /proc.
//!
//! A captured packet names a local address and port, not a process. The
//! processes of the packet's namespace are those whose `/proc/<pid>/ns/net`
//! names it; the socket tables any of them shows (`/proc/<pid>/net/udp`,
//! `udp6`, `tcp`, `tcp6`) give the socket inode for the port, and the
//! `/proc/<pid>/fd` links give the process holding that inode. The
//! process becomes a Resource as the flow receiver builds them
//! ([`ProcessCache`]: service.name, container.id, host.*).
//!
//! Every step is cached and rate-limited so that a flood of lookups from
//! fresh sockets costs a bounded amount of /proc reading: a port's owner is
//! cached for [`OWNER_TTL`] (a port whose owner was not found for
//! [`NEGATIVE_TTL`]), and /proc is searched at most every
//! [`SCAN_MIN_AGE`] per namespace. The search runs when the query is
//! captured, while the asking process still waits for its answer; a
//! process that is gone by then (the capture thread was behind) cannot be
//! found. A socket that cannot be attributed (closed already,
//! or the budget spent) gets `service.name=unknown_service`, as OpenTelemetry
//! SDKs name an unknown service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowscope_model::names::resource;
use flowscope_model::{Attrs, Transport};

use super::engine::OwnerResolver;
use crate::process::ProcessCache;

pub const OWNER_TTL: Duration = Duration::from_secs(5);
pub const SCAN_MIN_AGE: Duration = Duration::from_millis(2);
/// How long a socket whose owner was not found stays unattributed.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// `service.name` of lookups whose process is unknown.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

type ServiceKey = (Arc<str>, Option<Arc<str>>);

pub struct ProcOwners {
    host: Attrs,
    procs: ProcessCache,
    owners: HashMap<(u32, Transport, u16), (Arc<Attrs>, Instant)>,
    /// Last /proc pass per namespace (rate limit).
    scanned: HashMap<u32, Instant>,
    /// Shared Resources by (service.name, container.id).
    resources: HashMap<ServiceKey, Arc<Attrs>>,
    unknown: Arc<Attrs>,
}

impl ProcOwners {
    /// `host` are the host attributes put on every Resource.
    pub fn new(host: Attrs) -> Self {
        let unknown = Arc::new(host.clone().with(resource::SERVICE_NAME, UNKNOWN_SERVICE));
        Self {
            host,
            procs: ProcessCache::new("/proc", Duration::from_secs(60), 4096),
            owners: HashMap::new(),
            scanned: HashMap::new(),
            resources: HashMap::new(),
            unknown,
        }
    }

    /// The pid holding the `transport` socket on local `port` in `netns`.
    fn pid_of(&mut self, netns: u32, transport: Transport, port: u16) -> Option<u32> {
        let now = Instant::now();
        if self
            .scanned
            .get(&netns)
            .is_some_and(|t| now.duration_since(*t) < SCAN_MIN_AGE)
        {
            return None;
        }
        if self.scanned.len() > 4096 {
            self.scanned
                .retain(|_, t| now.duration_since(*t) < SCAN_MIN_AGE);
        }
        self.scanned.insert(netns, now);
        let pids = pids_in(netns);
        // Any process of the namespace shows its socket tables.
        let first = *pids.first()?;
        let mut table = HashMap::new();
        let files: &[&str] = match transport {
            Transport::Udp => &["udp", "udp6"],
            Transport::Tcp => &["tcp", "tcp6"],
        };
        for file in files {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{first}/net/{file}")) {
                parse_table(&text, transport, &mut table);
            }
        }
        let inode = *table.get(&(transport, port))?;
        pids.into_iter().find(|pid| holds_socket(*pid, inode))
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
                if let Some(uid) = &info.pod_uid {
                    a.set(resource::K8S_POD_UID, uid.clone());
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
        // A socket not found is remembered too (for NEGATIVE_TTL), so a
        // busy socket whose owner cannot be seen (gone, or a thread of a
        // process that lives in another namespace) costs one search, not
        // one per packet.
        let r = match self.pid_of(netns, transport, local.port()) {
            Some(pid) => self.resource_of(pid),
            None => self.unknown.clone(),
        };
        let at = if Arc::ptr_eq(&r, &self.unknown) {
            now.checked_sub(OWNER_TTL - NEGATIVE_TTL).unwrap_or(now)
        } else {
            now
        };
        if self.owners.len() >= 65_536 {
            self.owners
                .retain(|_, (_, at)| now.duration_since(*at) < OWNER_TTL);
        }
        if self.owners.len() < 65_536 {
            self.owners.insert(key, (r.clone(), at));
        }
        if self.resources.len() > 4096 {
            self.resources.clear();
        }
        r
    }
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

/// The pids of the processes in network namespace `netns`.
fn pids_in(netns: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = format!("net:[{netns}]");
    let mut pids = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("ns/net"))
            .is_ok_and(|l| l.as_os_str() == want.as_str())
        {
            pids.push(pid);
        }
    }
    pids
}

/// Whether process `pid` has socket `inode` open.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
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
