//! Counting what a killed agent had not delivered (`pin_directory`).
//!
//! **The kernel behaviour this relies on.** A map lives as long as
//! something holds it: a file descriptor, a program using it, or a pin in
//! the BPF file system (bpffs). The flow programs' links belong to the
//! agent's descriptors, so when the agent dies, even by SIGKILL, the
//! kernel detaches the programs and frees every map that is not pinned:
//! the ring buffer's unread records and the connection table go with it.
//! A pinned map stays, with its values, until the pin is removed.
//!
//! **What is pinned.** Only `COUNTERS` ([`flowscope_common::counter`]):
//! the kernel side's counts (ring buffer full, maps full, ...) and
//! `CONNS_ENDED`, one per connection end (`CLOSE`, `FAILED`) written to the
//! ring buffer. User space writes into slots of the same map that the
//! kernel side never touches: each counter as far as it has reported it,
//! `CONNS_ENDED` as far as the connection ends reached a batch handed to
//! the pipeline, and its own pid while it runs.
//!
//! **Taking over.** A starting agent opens the pin (creating it the first
//! time) before it attaches its programs, so no connection end is counted
//! while it reads: the kernel's `CONNS_ENDED` minus the delivered
//! checkpoint is what the previous agent never delivered, be it still in
//! the ring buffer or in the interval it was building. That is reported as
//! `flowscope.events.lost{flowscope.source=ebpf.tcp,
//! flowscope.reason=agent_restart}`, and the other counters' reports go on
//! from where the previous agent's stopped, so a ring buffer that
//! overflowed in its last seconds is still counted.
//!
//! **Not counted.** Connections that begin and end while no agent runs
//! (no program is attached: the kernel sees nothing), and the bytes of
//! connections still open at the kill since their last report: the agent
//! reads open connections from the kernel's own socket tables
//! (`crate::open_tcp`), which hold each socket's whole history, so a
//! starting agent takes every open socket's counters as its baseline
//! right after its programs attach (`open_tcp::walk`) and counts only
//! what follows. A connection that lives across a restart is therefore
//! never counted twice; what it did between the killed agent's last
//! report and the new agent's baseline is not counted at all.

use std::path::{Path, PathBuf};

use std::borrow::{Borrow, BorrowMut};

use aya::maps::{MapData, MapError, PerCpuArray, PerCpuValues};
use flowscope_common::counter;
use thiserror::Error;

/// Why the pinned counters could not be used.
#[derive(Debug, Error)]
pub enum ResumeError {
    #[error("creating pin_directory {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pin_directory {} is not on the BPF file system (mount it: `mount -t bpf bpf /sys/fs/bpf`, \
         or in a container mount the host's /sys/fs/bpf)",
        path.display()
    )]
    NotBpffs { path: PathBuf },
    #[error(
        "pin_directory {}: its counters are in use by another flowscope (pid {pid}); \
         give each agent a directory of its own",
        path.display()
    )]
    InUse { path: PathBuf, pid: u32 },
    #[error("reading or writing the pinned counters in {}", path.display())]
    Map {
        path: PathBuf,
        #[source]
        source: MapError,
    },
}

/// Where the counters of `dir` are pinned: the layout's version in the name,
/// so that an agent of another layout starts afresh beside it. (No dot:
/// bpffs refuses names with one, EPERM, keeping them for itself.)
pub fn pin_path(dir: &Path) -> PathBuf {
    dir.join(format!("counters_v{}", counter::LAYOUT))
}

/// Where bpffs is mounted by convention (as libbpf and iproute2 expect).
const BPFFS: &str = "/sys/fs/bpf";

/// Whether `path` is on the BPF file system.
fn on_bpffs(path: &Path) -> bool {
    crate::mount::is_on(path, crate::mount::BPF_FS_MAGIC)
}

/// Creates `dir` (mode 0700) if needed and checks that it is on bpffs,
/// where a pin outlives the process. A `dir` below /sys/fs/bpf on a host
/// where nothing is mounted there gets bpffs mounted first (as
/// `mount -t bpf bpf /sys/fs/bpf` would; root only), as the tracefs
/// lookup does for tracefs.
pub fn prepare(dir: &Path) -> Result<(), ResumeError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.starts_with(BPFFS) && !on_bpffs(Path::new(BPFFS)) {
        // A failure shows below: the directory is not on bpffs.
        let _ = crate::mount::mount_fs(c"bpf", c"/sys/fs/bpf");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ResumeError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    if !on_bpffs(dir) {
        return Err(ResumeError::NotBpffs {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// What a starting agent takes over from the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    /// Connection ends the kernel wrote that no agent delivered.
    pub lost: u64,
    /// The previous agent's pid, if it had not released the counters (it
    /// was killed).
    pub previous: Option<u32>,
    /// Each kernel counter as far as an agent reported it: the reports go
    /// on from here.
    pub reported: [u64; counter::COUNT as usize],
    /// The kernel's `CONNS_ENDED` now: this agent's connection ends are
    /// counted from here.
    pub base: u64,
}

type Counters<T> = PerCpuArray<T, u64>;

fn sum<T: Borrow<MapData>>(counters: &Counters<T>, i: u32) -> Result<u64, MapError> {
    Ok(counters
        .get(&i, 0)?
        .iter()
        .fold(0u64, |a, v| a.wrapping_add(*v)))
}

/// Writes `value` into user-space slot `i`: the first CPU's value, the
/// others zero, so that the sum over CPUs is `value`.
fn write<T: BorrowMut<MapData>>(
    counters: &mut Counters<T>,
    i: u32,
    value: u64,
) -> Result<(), MapError> {
    // The per-CPU values are laid out over the possible CPUs.
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapError::IoError(e))?;
    let mut v = vec![0u64; cpus];
    v[0] = value;
    let values = PerCpuValues::try_from(v).map_err(MapError::IoError)?;
    counters.set(i, values, 0)
}

/// Whether `pid` is a live flowscope process other than this one.
fn alive_agent(pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end().starts_with("flowscope"))
}

/// Takes the pinned counters of `dir` over, before any program of this
/// agent is attached: what the previous agent left, and this agent's pid
/// as the owner. Refused while another live agent owns them.
pub fn take_over<T: BorrowMut<MapData>>(
    counters: &mut Counters<T>,
    dir: &Path,
) -> Result<Handover, ResumeError> {
    let path = pin_path(dir);
    let err = |source| ResumeError::Map {
        path: path.clone(),
        source,
    };
    let owner = sum(counters, counter::OWNER).map_err(err)?;
    let owner = u32::try_from(owner).unwrap_or(0);
    if alive_agent(owner) {
        return Err(ResumeError::InUse { path, pid: owner });
    }
    let mut reported = [0u64; counter::COUNT as usize];
    for (i, r) in reported.iter_mut().enumerate() {
        *r = sum(counters, counter::REPORTED + i as u32).map_err(err)?;
    }
    let base = sum(counters, counter::CONNS_ENDED).map_err(err)?;
    let lost = base.saturating_sub(reported[counter::CONNS_ENDED as usize]);
    write(counters, counter::OWNER, u64::from(std::process::id())).map_err(err)?;
    Ok(Handover {
        lost,
        previous: (owner != 0 && owner != std::process::id()).then_some(owner),
        reported,
        base,
    })
}

/// The running agent's side: after each batch handed to the pipeline, the
/// counters as far as reported and the connection ends delivered.
pub struct Checkpoint {
    path: PathBuf,
    /// The kernel's `CONNS_ENDED` when this agent took over.
    base: u64,
}

impl Checkpoint {
    pub fn new(dir: &Path, handover: &Handover) -> Self {
        Checkpoint {
            path: pin_path(dir),
            base: handover.base,
        }
    }

    /// Records that every counter up to `reported` was reported, and that
    /// `ended` connection ends (counted by this agent from the ring buffer)
    /// reached a batch the pipeline took.
    pub fn save<T: BorrowMut<MapData>>(
        &self,
        counters: &mut Counters<T>,
        reported: &[u64; counter::COUNT as usize],
        ended: u64,
    ) -> Result<(), ResumeError> {
        let err = |source| ResumeError::Map {
            path: self.path.clone(),
            source,
        };
        for (i, r) in reported.iter().enumerate() {
            let value = if i == counter::CONNS_ENDED as usize {
                self.base.wrapping_add(ended)
            } else {
                *r
            };
            write(counters, counter::REPORTED + i as u32, value).map_err(err)?;
        }
        Ok(())
    }

    /// The agent stops: it no longer owns the counters.
    pub fn release<T: BorrowMut<MapData>>(
        &self,
        counters: &mut Counters<T>,
    ) -> Result<(), ResumeError> {
        write(counters, counter::OWNER, 0).map_err(|source| ResumeError::Map {
            path: self.path.clone(),
            source,
        })
    }
}
