//! Which local process owns a DNS socket.
//!
//! Two ways, the first preferred:
//!
//! - [`KernelOwners`]: the DNS object's owner programs (receiver-ebpf
//!   src/bin/dns.rs) write, when a DNS message leaves a socket and in the
//!   sending process's context, (namespace, address, port, protocol) ->
//!   (tgid, process start time) into `DNS_SOCKS`, and the first time they
//!   see a process they send its identity (comm, cgroup id, environment)
//!   on `DNS_EVENTS`. A lookup's client is thus known however soon it
//!   exits: this side reads the map when the query is captured and builds
//!   the Resource from the record, not from /proc.
//! - [`ProcOwners`]: a search of /proc (socket inode of the port in
//!   `/proc/<pid>/net/{udp,tcp}{,6}`, then the process holding it), which
//!   races short-lived processes. [`KernelOwners`] uses it only for a
//!   socket the kernel side never saw send (it cannot happen while the
//!   programs are attached, short of map eviction), and the receiver uses
//!   it alone when the owner programs cannot be loaded.
//!
//! A process's Resource is kept while its lookups can still be answered
//! or time out: [`KernelOwners`] drops one only after it went unused for
//! [`OwnerSettings::keep`] (at least twice the query timeout), and holds at
//! most [`OwnerSettings::max_processes`].

use std::collections::HashMap;
use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use flowscope_common::{
    DnsProcess, DnsSockKey, DnsSockOwner, IPPROTO_TCP, IPPROTO_UDP, dns_counter, dns_flags,
};
use flowscope_model::internal_events::{EventsLost, LossReason};
use flowscope_model::names::resource;
use flowscope_model::{Attrs, Telemetry, Transport};

use super::engine::{OwnerResolver, SOURCE};
use crate::process::{
    ProcessCache, comm_str, container_id_from_cgroup, pids, read_comm, service_from_environ,
    socket_inodes,
};

pub const OWNER_TTL: Duration = Duration::from_secs(5);
pub const SCAN_MIN_AGE: Duration = Duration::from_millis(2);
/// How long a socket whose owner was not found stays unattributed.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// `service.name` of lookups whose process is unknown.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

type ServiceKey = (Arc<str>, Option<Arc<str>>, Option<Arc<str>>);

/// Shared Resources by (service.name, container.id, k8s.pod.uid): one
/// `Arc` per workload, however many processes it has.
struct Resources {
    host: Attrs,
    by_key: HashMap<ServiceKey, Arc<Attrs>>,
    unknown: Arc<Attrs>,
}

impl Resources {
    fn new(host: Attrs) -> Self {
        let unknown = Arc::new(host.clone().with(resource::SERVICE_NAME, UNKNOWN_SERVICE));
        Self {
            host,
            by_key: HashMap::new(),
            unknown,
        }
    }

    fn get(
        &mut self,
        service: Arc<str>,
        container: Option<Arc<str>>,
        pod: Option<Arc<str>>,
    ) -> Arc<Attrs> {
        if self.by_key.len() > 4096 {
            self.by_key.clear();
        }
        let host = &self.host;
        self.by_key
            .entry((service.clone(), container.clone(), pod.clone()))
            .or_insert_with(|| {
                let mut a = host.clone().with(resource::SERVICE_NAME, service);
                if let Some(c) = container {
                    a.set(resource::CONTAINER_ID, c);
                }
                if let Some(uid) = pod {
                    a.set(resource::K8S_POD_UID, uid);
                }
                Arc::new(a)
            })
            .clone()
    }
}

/// The /proc search (see the module docs).
pub struct ProcOwners {
    procs: ProcessCache,
    owners: HashMap<(u32, Transport, u16), (Arc<Attrs>, Instant)>,
    /// Last /proc pass per namespace (rate limit).
    scanned: HashMap<u32, Instant>,
    resources: Resources,
}

impl ProcOwners {
    /// `host` are the host attributes put on every Resource.
    pub fn new(host: Attrs) -> Self {
        Self {
            procs: ProcessCache::new("/proc", Duration::from_secs(60), 4096),
            owners: HashMap::new(),
            scanned: HashMap::new(),
            resources: Resources::new(host),
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

    /// The Resource of live process `pid`, from /proc.
    fn resource_of(&mut self, pid: u32) -> Arc<Attrs> {
        let comm = read_comm(Path::new("/proc"), pid).unwrap_or([0; 16]);
        let info = self.procs.get(pid, &comm);
        self.resources.get(
            info.service_name.clone(),
            info.container_id.clone(),
            info.pod_uid.clone(),
        )
    }

    /// The owner of `local` in `netns` from /proc, cached for [`OWNER_TTL`]
    /// ([`NEGATIVE_TTL`] when not found).
    fn search(
        &mut self,
        netns: u32,
        transport: Transport,
        local: SocketAddr,
    ) -> Option<Arc<Attrs>> {
        let now = Instant::now();
        let key = (netns, transport, local.port());
        if let Some((r, at)) = self.owners.get(&key)
            && now.duration_since(*at) < OWNER_TTL
        {
            return (!Arc::ptr_eq(r, &self.resources.unknown)).then(|| r.clone());
        }
        // A socket not found is remembered too (for NEGATIVE_TTL), so a
        // busy socket whose owner cannot be seen (gone, or a thread of a
        // process that lives in another namespace) costs one search, not
        // one per packet.
        let found = self
            .pid_of(netns, transport, local.port())
            .map(|pid| self.resource_of(pid));
        let (r, at) = match &found {
            Some(r) => (r.clone(), now),
            None => (
                self.resources.unknown.clone(),
                now.checked_sub(OWNER_TTL - NEGATIVE_TTL).unwrap_or(now),
            ),
        };
        if self.owners.len() >= 65_536 {
            self.owners
                .retain(|_, (_, at)| now.duration_since(*at) < OWNER_TTL);
        }
        if self.owners.len() < 65_536 {
            self.owners.insert(key, (r, at));
        }
        found
    }
}

impl OwnerResolver for ProcOwners {
    fn resource(
        &mut self,
        netns: u32,
        transport: Transport,
        local: SocketAddr,
        _last: bool,
    ) -> Option<Arc<Attrs>> {
        // /proc is searched at once: later the process may be gone.
        self.search(netns, transport, local)
    }

    fn unknown(&self) -> Arc<Attrs> {
        self.resources.unknown.clone()
    }
}

/// Limits of [`KernelOwners`].
#[derive(Clone, Debug)]
pub struct OwnerSettings {
    /// How long a process's Resource is kept unused (past its exit): its
    /// lookups can be answered or time out until then.
    pub keep: Duration,
    /// Most processes whose Resources are kept.
    pub max_processes: usize,
}

impl OwnerSettings {
    /// For a receiver whose queries time out after `query_timeout`.
    pub fn for_timeout(query_timeout: Duration) -> Self {
        Self {
            keep: (query_timeout * 2).max(Duration::from_secs(10)),
            max_processes: 16_384,
        }
    }
}

struct Known {
    resource: Arc<Attrs>,
    used: Instant,
}

/// The DNS object's maps this side reads.
pub struct OwnerMaps {
    pub socks: BpfHashMap<MapData, DnsSockKey, DnsSockOwner>,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
}

/// Owners recorded by the kernel at send time (see the module docs).
pub struct KernelOwners {
    maps: OwnerMaps,
    settings: OwnerSettings,
    telemetry: Telemetry,
    /// (tgid, start time) -> Resource, from the `DNS_EVENTS` records.
    known: HashMap<(u32, u64), Known>,
    /// Kernel counters already reported.
    counted: [u64; dns_counter::COUNT as usize],
    cgroups: CgroupNames,
    proc: ProcOwners,
    last_tick: Instant,
}

impl KernelOwners {
    pub fn new(
        maps: OwnerMaps,
        host: Attrs,
        telemetry: Telemetry,
        settings: OwnerSettings,
    ) -> Self {
        Self {
            maps,
            settings,
            telemetry,
            known: HashMap::new(),
            counted: [0; dns_counter::COUNT as usize],
            cgroups: CgroupNames::new(),
            proc: ProcOwners::new(host),
            last_tick: Instant::now(),
        }
    }

    /// Reads every process record waiting in `DNS_EVENTS`.
    fn drain(&mut self) {
        let now = Instant::now();
        let mut records = Vec::new();
        while let Some(item) = self.maps.events.next() {
            match ProcessRecord::parse(&item) {
                Some(rec) => records.push((rec.head, rec.env.to_vec())),
                None => self
                    .telemetry
                    .emit(EventsLost::new(SOURCE, LossReason::ParseError, 1)),
            }
        }
        for (head, env) in records {
            let resource = self.resource_of(&ProcessRecord { head, env: &env });
            self.known.insert(
                (head.tgid, head.start_ns),
                Known {
                    resource,
                    used: now,
                },
            );
        }
        if self.known.len() > self.settings.max_processes {
            // The least recently used half goes.
            let mut used: Vec<Instant> = self.known.values().map(|k| k.used).collect();
            used.sort_unstable();
            let cut = used[used.len() / 2];
            self.known.retain(|_, k| k.used > cut);
        }
    }

    /// The Resource of a process record: its service name from the
    /// environment the kernel read (else /proc's, while the process runs),
    /// its container and pod from its cgroup.
    fn resource_of(&mut self, rec: &ProcessRecord<'_>) -> Arc<Attrs> {
        let pid = rec.head.tgid;
        let mut environ: Vec<u8> = rec.env.to_vec();
        let partial = rec.head.flags & dns_flags::ENV_UNREAD != 0
            || rec.head.env_total as usize > rec.env.len();
        if partial && let Ok(e) = std::fs::read(format!("/proc/{pid}/environ")) {
            // The process still runs (its /proc environ is the whole block).
            if !e.is_empty() {
                environ = e;
            }
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|n| n.trim_end_matches(" (deleted)").to_string())
            .filter(|n| !n.is_empty());
        let service: Arc<str> = service_from_environ(&environ)
            .or(exe)
            .unwrap_or_else(|| {
                let c = comm_str(&rec.head.comm);
                if c.is_empty() { "unknown".into() } else { c }
            })
            .into();
        let (container, pod) = self.cgroups.workload(rec.head.cgroup_id, pid);
        self.proc.resources.get(service, container, pod)
    }

    /// Reports kernel-side losses and forgets processes unused for
    /// [`OwnerSettings::keep`].
    fn tick(&mut self) {
        self.drain();
        let now = Instant::now();
        if now.duration_since(self.last_tick) < Duration::from_secs(1) {
            return;
        }
        self.last_tick = now;
        let keep = self.settings.keep;
        self.known.retain(|_, k| now.duration_since(k.used) < keep);
        self.cgroups.expire();
        let i = dns_counter::RINGBUF_FULL;
        let total: u64 = self
            .maps
            .counters
            .get(&i, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0);
        let d = total.saturating_sub(self.counted[i as usize]);
        self.counted[i as usize] = total;
        if d > 0 {
            // The process's lookups fall back to /proc.
            self.telemetry
                .emit(EventsLost::new(SOURCE, LossReason::RingbufFull, d));
        }
    }

    fn lookup(&self, netns: u32, transport: Transport, local: SocketAddr) -> Option<DnsSockOwner> {
        let proto = match transport {
            Transport::Udp => IPPROTO_UDP,
            Transport::Tcp => IPPROTO_TCP,
        } as u8;
        let mut key = DnsSockKey {
            addr: mapped(local.ip()),
            netns,
            port: local.port(),
            proto,
            _pad: 0,
        };
        if let Ok(o) = self.maps.socks.get(&key, 0) {
            return Some(o);
        }
        // A socket bound to the wildcard address.
        key.addr = [0; 16];
        self.maps.socks.get(&key, 0).ok()
    }
}

impl OwnerResolver for KernelOwners {
    fn resource(
        &mut self,
        netns: u32,
        transport: Transport,
        local: SocketAddr,
        last: bool,
    ) -> Option<Arc<Attrs>> {
        if let Some(owner) = self.lookup(netns, transport, local) {
            let id = (owner.tgid, owner.start_ns);
            if !self.known.contains_key(&id) {
                // Its record was written before the map entry: read it.
                self.drain();
            }
            if let Some(k) = self.known.get_mut(&id) {
                k.used = Instant::now();
                return Some(k.resource.clone());
            }
            // The record was lost (ring buffer full, counted): /proc, by pid.
            let r = self.proc.resource_of(owner.tgid);
            self.known.insert(
                id,
                Known {
                    resource: r.clone(),
                    used: Instant::now(),
                },
            );
            return Some(r);
        }
        // The send that records the socket ends after the packet was
        // captured: it may not have run yet. Ask again when the lookup ends.
        if !last {
            return None;
        }
        self.proc.search(netns, transport, local)
    }

    fn unknown(&self) -> Arc<Attrs> {
        self.proc.resources.unknown.clone()
    }

    fn tick(&mut self) {
        KernelOwners::tick(self);
    }
}

/// An address as the kernel side keys it: IPv4 as `::ffff:a.b.c.d`.
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A `DNS_EVENTS` record: the head and the environment bytes after it.
struct ProcessRecord<'a> {
    head: DnsProcess,
    env: &'a [u8],
}

impl<'a> ProcessRecord<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let n = std::mem::size_of::<DnsProcess>();
        if bytes.len() < n {
            return None;
        }
        // SAFETY: DnsProcess is plain old data (integers and a byte array)
        // and `bytes` holds at least its size; read unaligned.
        let head: DnsProcess = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let env = bytes.get(n..n + head.env_len as usize)?;
        Some(Self { head, env })
    }
}

/// Container id and pod uid of a process: from /proc/<pid>/cgroup while it
/// runs, else from its cgroup v2 id, resolved through the cgroup2 file
/// system (open_by_handle_at: a cgroup's id is its file handle), which
/// knows a cgroup as long as it exists, whatever happened to the process.
struct CgroupNames {
    root: Option<(PathBuf, OwnedFd)>,
    cache: HashMap<u64, Workload>,
}

/// Container id and pod uid.
type Workload = (Option<Arc<str>>, Option<Arc<str>>);

impl CgroupNames {
    fn new() -> Self {
        let root = crate::loader::cgroup2_root().ok().and_then(|p| {
            let c = CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
            // SAFETY: plain open(2) of a NUL-terminated path.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            // SAFETY: a fresh fd nobody else owns.
            (fd >= 0).then(|| (p, unsafe { OwnedFd::from_raw_fd(fd) }))
        });
        Self {
            root,
            cache: HashMap::new(),
        }
    }

    fn expire(&mut self) {
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
    }

    fn workload(&mut self, id: u64, pid: u32) -> Workload {
        let parse = |text: &str| -> Workload {
            (
                container_id_from_cgroup(text).map(Arc::from),
                flowscope_model::kubepods::parse_cgroup(text).map(|p| Arc::from(p.pod_uid)),
            )
        };
        // While the process runs, /proc has every hierarchy (hybrid hosts
        // name containers in the v1 ones too).
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            return parse(&text);
        }
        if let Some(w) = self.cache.get(&id) {
            return w.clone();
        }
        let Some(path) = self.path_of(id) else {
            return (None, None);
        };
        let w = parse(&format!("0::{path}\n"));
        self.cache.insert(id, w.clone());
        w
    }

    /// The path of cgroup `id` below the cgroup2 root (`/system.slice/...`).
    fn path_of(&self, id: u64) -> Option<String> {
        let (root, fd) = self.root.as_ref()?;
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: u64,
        }
        // FILEID_KERNFS: a kernfs node (a cgroup directory) by its id.
        let mut h = Handle {
            bytes: 8,
            kind: 0xfe,
            id,
        };
        // SAFETY: `h` is a valid struct file_handle with 8 bytes of handle.
        let dir = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                fd.as_raw_fd(),
                &mut h as *mut Handle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dir < 0 {
            return None;
        }
        // SAFETY: a fresh fd nobody else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(dir as i32) };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        let rel = path.strip_prefix(root).ok()?;
        Some(format!("/{}", rel.display()))
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
    let want = format!("net:[{netns}]");
    pids(Path::new("/proc"))
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.as_os_str() == want.as_str())
        })
        .collect()
}

/// Whether process `pid` has socket `inode` open.
fn holds_socket(pid: u32, inode: u64) -> bool {
    socket_inodes(Path::new("/proc"), pid).contains(&inode)
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

    #[test]
    fn parses_process_records_and_keys_addresses() {
        let head = DnsProcess {
            start_ns: 7,
            cgroup_id: 9,
            tgid: 42,
            env_len: 5,
            env_total: 5,
            flags: 0,
            comm: *b"dig\0\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        let mut bytes = vec![0u8; std::mem::size_of::<DnsProcess>()];
        // SAFETY: `bytes` is exactly one DnsProcess long.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), head) };
        bytes.extend_from_slice(b"A=1\0\0");
        let rec = ProcessRecord::parse(&bytes).unwrap();
        assert_eq!((rec.head.tgid, rec.env), (42, &b"A=1\0\0"[..]));
        // A record shorter than its env_len says is refused, not read past.
        assert!(ProcessRecord::parse(&bytes[..bytes.len() - 1]).is_none());
        assert_eq!(
            mapped("198.18.0.2".parse().unwrap())[10..],
            [0xff, 0xff, 198, 18, 0, 2]
        );
    }

    #[test]
    fn cgroup_ids_resolve_to_their_path() {
        // This process's own cgroup, found again from its id (its
        // directory's inode), as for a process that has exited.
        let names = CgroupNames::new();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line")
            .to_string();
        let (root, _) = names.root.as_ref().expect("cgroup v2 mounted");
        let id = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(root.join(path.trim_start_matches('/'))).unwrap(),
        );
        assert_eq!(names.path_of(id).as_deref(), Some(path.as_str()));
        assert_eq!(names.path_of(u64::MAX), None);
    }
}
