//! Process attribution from /proc, with a cache.
//!
//! The kernel side records the thread group id and `comm` of the process
//! that owns a socket at the moment it connects or first reads or writes,
//! so even a process that exited before the interval ended is attributed
//! (by its `comm`). For live processes /proc adds the executable name, the
//! command (argv\[0\]) and the whole command line, the container id (from the cgroup path) and the service
//! name from the environment: `OTEL_SERVICE_NAME`, then `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`, then `DD_SERVICE`, else the executable name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowscope_model::resource_env;

/// What the receiver knows of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub executable_name: Arc<str>,
    /// argv\[0\] as the process was started (`process.command`).
    pub command: Option<Arc<str>>,
    /// Every argument joined by spaces (`process.command_line`; emitted
    /// only when opted in, since arguments can carry secrets).
    pub command_line: Option<Arc<str>>,
    pub service_name: Arc<str>,
    /// `service.namespace` from `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_namespace: Option<Arc<str>>,
    /// `service.version` from `OTEL_RESOURCE_ATTRIBUTES`, else `DD_VERSION`.
    pub service_version: Option<Arc<str>>,
    pub container_id: Option<Arc<str>>,
    /// The Kubernetes pod's UID when the cgroup path is a pod's
    /// (`k8s.pod.uid`, read from the same `/proc/<pid>/cgroup` text as the
    /// container id; the `kubernetes` processor names the pod from it).
    pub pod_uid: Option<Arc<str>>,
}

struct Read {
    info: ProcessInfo,
    alive: bool,
}

struct Entry {
    info: Arc<ProcessInfo>,
    comm: [u8; 16],
    fetched: Instant,
}

/// Cache of [`ProcessInfo`] by pid. An entry is refreshed when the kernel
/// reports another `comm` for the pid (exec, or pid reuse) or when it is
/// older than the TTL; it is forgotten when unused for a few TTLs.
pub struct ProcessCache {
    proc_root: PathBuf,
    ttl: Duration,
    entries: HashMap<u32, Entry>,
    max_entries: usize,
    /// Executable names longer than the kernel's 15-byte `comm`, by that
    /// `comm`, from processes read while they ran: a process that exits
    /// before /proc is read (a short-lived run of the same program) is
    /// named by the whole name, not by its cut `comm`. Only the name: the
    /// rest (command line, container, pod) may differ between runs.
    names: HashMap<[u8; 16], Arc<str>>,
}

/// `comm` as the kernel reported it (NUL-padded) to a string.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl ProcessCache {
    pub fn new(proc_root: impl Into<PathBuf>, ttl: Duration, max_entries: usize) -> Self {
        Self {
            proc_root: proc_root.into(),
            ttl,
            entries: HashMap::new(),
            max_entries,
            names: HashMap::new(),
        }
    }

    /// Info for `pid`, whose kernel-reported `comm` is `comm`.
    pub fn get(&mut self, pid: u32, comm: &[u8; 16]) -> Arc<ProcessInfo> {
        let now = Instant::now();
        if let Some(e) = self.entries.get(&pid)
            && e.comm == *comm
            && now.duration_since(e.fetched) < self.ttl
        {
            return e.info.clone();
        }
        let mut read = self.read(pid, comm);
        let kernel_comm = comm_str(comm);
        if read.alive {
            if read.info.executable_name.len() > kernel_comm.len()
                && read.info.executable_name.starts_with(kernel_comm.as_str())
            {
                if self.names.len() >= self.max_entries {
                    self.names.clear();
                }
                self.names.insert(*comm, read.info.executable_name.clone());
            }
        } else if let Some(full) = self.names.get(comm) {
            if read.info.service_name == read.info.executable_name {
                read.info.service_name = full.clone();
            }
            read.info.executable_name = full.clone();
        }
        // A process that exited since we last read it keeps what we read
        // while it ran (same pid, same comm: the same process).
        let info = match self.entries.get(&pid) {
            Some(e) if e.comm == *comm && !read.alive => e.info.clone(),
            _ => Arc::new(read.info),
        };
        if self.entries.len() >= self.max_entries {
            let ttl = self.ttl;
            self.entries
                .retain(|_, e| now.duration_since(e.fetched) < ttl);
            if self.entries.len() >= self.max_entries {
                self.entries.clear();
            }
        }
        self.entries.insert(
            pid,
            Entry {
                info: info.clone(),
                comm: *comm,
                fetched: now,
            },
        );
        info
    }

    /// Drops entries not refreshed for three TTLs.
    pub fn expire(&mut self) {
        let now = Instant::now();
        let keep = self.ttl * 3;
        self.entries
            .retain(|_, e| now.duration_since(e.fetched) < keep);
    }

    fn read(&self, pid: u32, comm: &[u8; 16]) -> Read {
        let dir = self.proc_root.join(pid.to_string());
        let kernel_comm = comm_str(comm);
        // The executable's file name; a process that exited, or a kernel
        // thread, leaves only the kernel's comm.
        let exe = std::fs::read_link(dir.join("exe")).ok();
        let alive = exe.is_some();
        let executable_name: Arc<str> = exe
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|n| n.trim_end_matches(" (deleted)").to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                if kernel_comm.is_empty() {
                    "unknown".into()
                } else {
                    kernel_comm
                }
            })
            .into();
        let args: Vec<String> = std::fs::read(dir.join("cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let command = args.first().map(|a| Arc::from(a.as_str()));
        let command_line = (!args.is_empty()).then(|| Arc::from(args.join(" ")));
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        let service_name = service_from_environ(&environ)
            .map(Arc::from)
            .unwrap_or_else(|| executable_name.clone());
        let service_namespace = resource_attribute(&environ, "service.namespace").map(Arc::from);
        let service_version = resource_attribute(&environ, "service.version")
            .or_else(|| env_var(&environ, "DD_VERSION"))
            .map(Arc::from);
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).ok();
        let container_id = cgroup
            .as_deref()
            .and_then(container_id_from_cgroup)
            .map(Arc::from);
        let pod_uid = cgroup
            .as_deref()
            .and_then(flowscope_model::kubepods::parse_cgroup)
            .map(|p| Arc::from(p.pod_uid));
        Read {
            info: ProcessInfo {
                pid,
                executable_name,
                command,
                command_line,
                service_name,
                service_namespace,
                service_version,
                container_id,
                pod_uid,
            },
            alive,
        }
    }
}

/// The kernel's name of process `pid` (`/proc/<pid>/comm`, what
/// `bpf_get_current_comm()` gives its threads, so what a PROCESS record
/// carries), NUL-padded to 16 bytes; `None` when it cannot be read (the
/// process is gone). A name longer than the kernel's 15 bytes cannot come
/// from the kernel; it is cut.
pub fn read_comm(proc_root: &Path, pid: u32) -> Option<[u8; 16]> {
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("comm")).ok()?;
    let name = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let mut comm = [0u8; 16];
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name[..n]);
    Some(comm)
}

/// The inodes of the sockets process `pid` holds open: each descriptor of
/// `/proc/<pid>/fd` whose link reads `socket:[INODE]`. A process gone, or
/// one whose descriptors the agent may not read, holds none as far as this
/// can tell; a link of another shape is not a socket.
pub fn socket_inodes(proc_root: &Path, pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| socket_inode(target.as_os_str().as_encoded_bytes()))
        .collect()
}

/// The inode of a descriptor's link text `socket:[INODE]`.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The pids under `proc_root`, in ascending order (entries that are not a
/// number, like `self` or `sys`, left out).
pub fn pids(proc_root: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    pids.sort_unstable();
    pids
}

/// One pass over every process's descriptors: socket inode -> the lowest
/// pid holding it. Socket inodes are one numbering for the whole host (one
/// sockfs), so the map serves every network namespace. A socket several
/// processes hold (a server that forked after listen() or accept()) goes
/// to the lowest pid, which for a server that forks its workers is the
/// parent that made the socket.
pub fn socket_holders(proc_root: &Path) -> HashMap<u64, u32> {
    let mut holders = HashMap::new();
    for pid in pids(proc_root) {
        for ino in socket_inodes(proc_root, pid) {
            holders.entry(ino).or_insert(pid);
        }
    }
    holders
}

/// The service name a process declares in its environment (NUL-separated
/// `KEY=VALUE` pairs, as /proc/<pid>/environ holds them).
pub fn service_from_environ(environ: &[u8]) -> Option<String> {
    let mut otel = None;
    let mut resource = None;
    let mut dd = None;
    for pair in environ.split(|b| *b == 0) {
        let pair = String::from_utf8_lossy(pair);
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k {
            "OTEL_SERVICE_NAME" if !v.is_empty() => otel = Some(v.to_string()),
            "OTEL_RESOURCE_ATTRIBUTES" => {
                resource = resource_env::value(v, "service.name");
            }
            "DD_SERVICE" if !v.is_empty() => dd = Some(v.to_string()),
            _ => {}
        }
    }
    otel.or(resource).or(dd)
}

/// The non-empty value of variable `name` in an environ block.
fn env_var(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|b| *b == 0).find_map(|pair| {
        let pair = String::from_utf8_lossy(pair);
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

/// The non-empty value of `key` in the `OTEL_RESOURCE_ATTRIBUTES` of an
/// environ block (`service.namespace`, `service.version`).
pub fn resource_attribute(environ: &[u8], key: &str) -> Option<String> {
    resource_env::value(&env_var(environ, "OTEL_RESOURCE_ATTRIBUTES")?, key)
}

/// A container id in a cgroup path: the 64-hex-digit id that Docker,
/// containerd and CRI-O put in the path (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `/docker/<id>`, `crio-<id>`...).
pub fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or(line);
        for segment in path.rsplit('/') {
            let seg = segment.trim_end_matches(".scope");
            let candidate = seg.rsplit(['-', ':']).next().unwrap_or(seg);
            if candidate.len() == 64 && candidate.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Some(candidate.to_ascii_lowercase());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_precedence() {
        let env =
            b"PATH=/bin\0DD_SERVICE=dd\0OTEL_RESOURCE_ATTRIBUTES=a=b,service.name=res%20svc\0";
        assert_eq!(service_from_environ(env).as_deref(), Some("res svc"));
        let env =
            b"DD_SERVICE=dd\0OTEL_SERVICE_NAME=checkout\0OTEL_RESOURCE_ATTRIBUTES=service.name=x\0";
        assert_eq!(service_from_environ(env).as_deref(), Some("checkout"));
        assert_eq!(
            service_from_environ(b"DD_SERVICE=dd\0").as_deref(),
            Some("dd")
        );
        assert_eq!(service_from_environ(b"HOME=/\0\xff\xfe\0").as_deref(), None);
        let env = b"OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop,service.version=1.2%2B3\0DD_VERSION=9\0";
        assert_eq!(
            resource_attribute(env, "service.namespace").as_deref(),
            Some("shop")
        );
        assert_eq!(
            resource_attribute(env, "service.version").as_deref(),
            Some("1.2+3")
        );
        assert_eq!(
            resource_attribute(b"DD_VERSION=9\0", "service.version"),
            None
        );
        assert_eq!(env_var(env, "DD_VERSION").as_deref(), Some("9"));
    }

    #[test]
    fn container_ids() {
        let id = "a".repeat(64);
        let v2 = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(container_id_from_cgroup(&v2).as_deref(), Some(id.as_str()));
        let v1 = format!("12:pids:/docker/{id}\n");
        assert_eq!(container_id_from_cgroup(&v1).as_deref(), Some(id.as_str()));
        let k8s = format!("0::/kubepods/burstable/pod1/cri-containerd-{id}.scope");
        assert_eq!(container_id_from_cgroup(&k8s).as_deref(), Some(id.as_str()));
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/session-1.scope"),
            None
        );
    }

    /// A made-up /proc: two processes share socket 500 (the lower pid gets
    /// it), one holds 600, and links of other shapes or garbage are not
    /// sockets; a pid directory without `fd` holds nothing.
    #[test]
    fn socket_holders_take_the_lowest_pid() {
        let root = tempfile::tempdir().unwrap();
        let fd = |pid: &str, n: &str, target: &str| {
            let dir = root.path().join(pid).join("fd");
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(target, dir.join(n)).unwrap();
        };
        fd("30", "3", "socket:[500]");
        fd("30", "4", "socket:[600]");
        fd("7", "5", "socket:[500]");
        fd("7", "6", "pipe:[700]");
        fd("7", "7", "socket:[x]");
        fd("7", "8", "socket:[800");
        std::fs::create_dir_all(root.path().join("9")).unwrap();
        std::fs::create_dir_all(root.path().join("self")).unwrap();
        std::fs::write(root.path().join("30").join("comm"), "nginx\n").unwrap();
        let holders = socket_holders(root.path());
        assert_eq!(holders.len(), 2, "{holders:?}");
        assert_eq!(holders.get(&500), Some(&7));
        assert_eq!(holders.get(&600), Some(&30));
        assert_eq!(pids(root.path()), vec![7, 9, 30]);
        assert_eq!(&read_comm(root.path(), 30).unwrap()[..6], b"nginx\0");
        assert_eq!(read_comm(root.path(), 7), None);
    }

    #[test]
    fn reads_this_process() {
        let mut cache = ProcessCache::new("/proc", Duration::from_secs(60), 16);
        let pid = std::process::id();
        let info = cache.get(pid, &[0; 16]);
        assert_eq!(info.pid, pid);
        assert!(!info.executable_name.is_empty());
        // argv[0] alone; the whole command line separately.
        let argv: Vec<String> = std::env::args().collect();
        assert_eq!(info.command.as_deref(), Some(argv[0].as_str()));
        assert_eq!(info.command_line.as_deref(), Some(argv.join(" ").as_str()));
        // A pid that does not exist falls back to the kernel's comm.
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"gone");
        let gone = cache.get(u32::MAX - 1, &comm);
        assert_eq!(&*gone.executable_name, "gone");
        assert_eq!(&*gone.service_name, "gone");
    }

    #[test]
    fn a_run_gone_before_it_was_read_gets_the_whole_name_of_its_comm() {
        // A fake /proc: pid 10 runs `flowscope-traffic` (17 bytes, so the
        // kernel's comm is its first 15); pid 11, the same program's next
        // run, exited before it was read.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("10");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink("/usr/bin/flowscope-traffic", dir.join("exe")).unwrap();
        let mut cache = ProcessCache::new(root.path(), Duration::from_secs(60), 16);
        let mut comm = [0u8; 16];
        comm[..15].copy_from_slice(b"flowscope-traff");
        assert_eq!(&*cache.get(10, &comm).service_name, "flowscope-traffic");
        let gone = cache.get(11, &comm);
        assert_eq!(&*gone.executable_name, "flowscope-traffic");
        assert_eq!(&*gone.service_name, "flowscope-traffic");
        assert_eq!(gone.container_id, None);
        // Another comm is not renamed.
        let mut other = [0u8; 16];
        other[..15].copy_from_slice(b"flowscope-trace");
        assert_eq!(&*cache.get(12, &other).service_name, "flowscope-trace");
    }
}
