//! Loads the flow programs into the kernel and attaches them.
//!
//! Everything that can be missing is checked up front and reported once,
//! naming what is missing: capabilities (every one missing, see
//! [`crate::capabilities`]), tracefs, BTF, a tracepoint, the cgroup v2 mount.
//!
//! Each tracepoint has two programs in the object (see
//! `receiver-ebpf/src/main.rs`): a BTF-typed raw tracepoint (`tp_btf`),
//! which reads the socket with plain verifier-checked loads, and a classic
//! tracepoint, which reads it with one helper call per field. The BTF-typed
//! set is loaded when the kernel accepts all of it (Linux 5.5+ with BTF,
//! and a verifier that knows these tracepoints' arguments); otherwise the
//! classic set is, with a warning. `FLOWSCOPE_EBPF_HOOKS=tracepoint` in the
//! agent's environment forces the classic set (to compare, or to work
//! around a kernel that loads the BTF-typed programs but misbehaves).
//!
//! UDP follows the tracepoint set: with the BTF-typed programs it is counted
//! at the socket (the length tracepoints, plus four `cgroup/sendmsg4/6`,
//! `cgroup/recvmsg4/6` programs on the root cgroup for unconnected sockets'
//! peers); with the classic ones, which cannot ask for a socket cookie, by
//! the two cgroup_skb programs, which see every packet of the host.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Program,
    ProgramError, TracePoint,
};
use aya::{Btf, BtfError, Ebpf, EbpfError, EbpfLoader};
use flowscope_common::{Offsets, Owner, Settings, UdpKey, UdpStats};
use flowscope_model::errors::error_chain;
use thiserror::Error;

use crate::offsets::{self, OffsetsError};

/// The flow programs, built by build.rs for the bpf target.
pub static FLOWS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowscope-flows"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] crate::capabilities::MissingCapabilities),
    #[error(transparent)]
    Resume(#[from] crate::resume::ResumeError),
    #[error("cannot relate the kernel's tick to the monotonic clock")]
    Clock(#[from] crate::clock::ClockError),
    #[error("cannot read the kernel layout flowscope relies on")]
    Offsets(#[from] OffsetsError),
    #[error("the kernel rejected flowscope's eBPF object")]
    Load(#[source] EbpfError),
    #[error("eBPF program `{0}` is missing from the object (a build problem)")]
    MissingProgram(&'static str),
    #[error("eBPF map `{0}` is missing from the object (a build problem)")]
    MissingMap(&'static str),
    #[error("eBPF map `{name}` has an unexpected type")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("loading eBPF program `{program}`")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching BTF-typed raw tracepoint program `{program}` to {name}")]
    AttachBtf {
        program: &'static str,
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching to tracepoint {category}:{name}")]
    Attach {
        category: &'static str,
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo); UDP needs one: mount -t cgroup2 none /sys/fs/cgroup/unified"
    )]
    NoCgroup2,
    #[error("opening cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the open-socket iterator (iter/tcp), which reads open TCP connections")]
    OpenTcp(#[source] crate::open_tcp::OpenTcpError),
    #[error("attaching cgroup program `{program}` to {path}")]
    AttachCgroup {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: ProgramError,
    },
}

/// What the receiver needs to know to load the programs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub tcp: bool,
    pub udp: bool,
    /// Entries of the kernel's UDP flow and owner maps.
    pub max_flows: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Where `COUNTERS` is pinned (bpffs), if anywhere: see [`crate::resume`].
    pub pin_directory: Option<PathBuf>,
}

/// The loaded programs and the maps user space reads.
pub struct Loaded {
    /// Keeps programs and links alive.
    pub ebpf: Ebpf,
    pub udp_flows: HashMap<MapData, UdpKey, UdpStats>,
    pub udp_owners: HashMap<MapData, u64, Owner>,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Which tracepoint programs are attached.
    pub hooks: Hooks,
    /// The records' ticks on the monotonic clock ([`crate::clock`]).
    pub clock: crate::tcp_join::TickClock,
    /// With a `pin_directory`: what the previous agent left in the pinned
    /// counters, read before this agent's programs were attached.
    pub handover: Option<crate::resume::Handover>,
    /// With `tcp`: the iterator that reads open TCP connections once an
    /// interval ([`crate::open_tcp`]), loaded after the flow programs
    /// attached.
    pub open_tcp: Option<crate::open_tcp::OpenTcpReader>,
}

/// The kind of tracepoint programs attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hooks {
    /// BTF-typed raw tracepoints (`tp_btf`): direct socket reads.
    BtfTracepoints,
    /// Classic tracepoints: one `bpf_probe_read_kernel` per field.
    Tracepoints,
}

/// The environment variable that forces the classic tracepoints.
pub const HOOKS_ENV: &str = "FLOWSCOPE_EBPF_HOOKS";

/// (classic program, BTF-typed program, category, tracepoint).
const TRACEPOINTS: [(&str, &str, &str, &str); 5] = [
    (
        "inet_sock_set_state",
        "btf_set_state",
        "sock",
        "inet_sock_set_state",
    ),
    (
        "sock_send_length",
        "btf_send_length",
        "sock",
        "sock_send_length",
    ),
    (
        "sock_recv_length",
        "btf_recv_length",
        "sock",
        "sock_recv_length",
    ),
    ("tcp_send_reset", "btf_send_reset", "tcp", "tcp_send_reset"),
    (
        "tcp_receive_reset",
        "btf_recv_reset",
        "tcp",
        "tcp_receive_reset",
    ),
];

/// Checks the capabilities the flow programs need
/// ([`crate::capabilities`]), naming every missing one.
pub fn check_privileges() -> Result<(), LoadError> {
    crate::capabilities::check(&[crate::capabilities::Feature::Flows])?;
    Ok(())
}

/// Finds the cgroup v2 mount: /sys/fs/cgroup on unified hosts,
/// /sys/fs/cgroup/unified on hybrid ones.
pub fn cgroup2_root() -> Result<PathBuf, LoadError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        // ... mount-point ... - fstype source options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mount) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mount));
        }
    }
    Err(LoadError::NoCgroup2)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Loads and attaches the flow programs.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    check_privileges()?;
    let offsets: Offsets = offsets::discover()?;
    let settings = Settings {
        tcp: u32::from(opts.tcp),
        udp: u32::from(opts.udp),
    };
    // The loader parses the kernel's BTF for itself (12 - 14 MB of heap);
    // it is dropped once the object is loaded, before the programs are
    // given a copy of their own (`load_btf_tracepoints`) and the iterator
    // and the drop program parse theirs. Kept alive to the end of this
    // function, as it was, it put up to four copies in memory at once and
    // made the agent's peak memory at start 2.5 times its steady size
    // (docs/benchmarks.md, "Peak memory at start").
    let mut ebpf = {
        let mut loader = EbpfLoader::new();
        loader
            .override_global("OFFSETS", &offsets, true)
            .override_global("SETTINGS", &settings, true)
            .map_max_entries("UDP_FLOWS", opts.max_flows)
            .map_max_entries("UDP_OWNERS", opts.max_flows)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes);
        if let Some(dir) = &opts.pin_directory {
            crate::resume::prepare(dir)?;
            // Opened when pinned already, else created and pinned.
            loader.map_pin_path("COUNTERS", crate::resume::pin_path(dir));
        }
        loader.load(FLOWS_OBJECT).map_err(LoadError::Load)?
    };
    let clock = crate::clock::measure(&mut ebpf)?;
    // Before any program is attached: no connection end is counted while
    // the previous agent's leftovers are read.
    let handover = match &opts.pin_directory {
        Some(dir) => {
            let map = ebpf
                .map_mut("COUNTERS")
                .ok_or(LoadError::MissingMap("COUNTERS"))?;
            let mut counters =
                PerCpuArray::<_, u64>::try_from(map).map_err(|source| LoadError::Map {
                    name: "COUNTERS",
                    source,
                })?;
            Some(crate::resume::take_over(&mut counters, dir)?)
        }
        None => None,
    };

    let forced = std::env::var(HOOKS_ENV).is_ok_and(|v| v == "tracepoint");
    let hooks = if forced {
        tracing::info!("{HOOKS_ENV}=tracepoint: using the classic tracepoints");
        attach_tracepoints(&mut ebpf)?;
        Hooks::Tracepoints
    } else {
        match load_btf_tracepoints(&mut ebpf, opts.udp) {
            Ok(()) => {
                attach_btf_tracepoints(&mut ebpf)?;
                Hooks::BtfTracepoints
            }
            Err(e) => {
                tracing::warn!(
                    "BTF-typed raw tracepoints do not load here ({}); using the classic tracepoints, which read sockets more slowly",
                    error_chain(&e)
                );
                attach_tracepoints(&mut ebpf)?;
                Hooks::Tracepoints
            }
        }
    };

    tracing::info!(?hooks, "TCP tracepoint programs attached");
    // Open connections are read from the kernel's socket tables, nothing
    // the tracepoints keep: a program of its own (see crate::open_tcp).
    let open_tcp = if opts.tcp {
        Some(crate::open_tcp::OpenTcpReader::load().map_err(LoadError::OpenTcp)?)
    } else {
        None
    };

    if opts.udp {
        let root = cgroup2_root()?;
        let cgroup = File::open(&root).map_err(|source| LoadError::Cgroup {
            path: root.clone(),
            source,
        })?;
        match hooks {
            Hooks::BtfTracepoints => attach_sock_addr(&mut ebpf, &cgroup, &root)?,
            Hooks::Tracepoints => attach_cgroup_skb(&mut ebpf, &cgroup, &root)?,
        }
        tracing::info!(?hooks, "UDP programs attached");
    }

    Ok(Loaded {
        udp_flows: take(&mut ebpf, "UDP_FLOWS")?,
        udp_owners: take(&mut ebpf, "UDP_OWNERS")?,
        events: take(&mut ebpf, "EVENTS")?,
        counters: take(&mut ebpf, "COUNTERS")?,
        hooks,
        clock,
        handover,
        open_tcp,
        ebpf,
    })
}

/// The UDP peer programs of the BTF-typed set (see the module docs).
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "udp_sendmsg4",
    "udp_sendmsg6",
    "udp_recvmsg4",
    "udp_recvmsg6",
];

/// Program `program` of `ebpf` as its type (a tracepoint, a cgroup
/// program, ...).
pub(crate) fn typed<'a, T>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?
        .try_into()
        .map_err(|source| LoadError::Program { program, source })
}

/// Attaches the UDP peer programs, which [`load_btf_tracepoints`] loaded.
fn attach_sock_addr(ebpf: &mut Ebpf, cgroup: &File, root: &Path) -> Result<(), LoadError> {
    for program in SOCK_ADDR_PROGRAMS {
        let prog: &mut CgroupSockAddr = typed(ebpf, program)?;
        // As for cgroup_skb below: a bpf_link coexists with other programs.
        prog.attach(cgroup, CgroupAttachMode::Single)
            .map_err(|source| LoadError::AttachCgroup {
                program,
                path: root.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

fn attach_cgroup_skb(ebpf: &mut Ebpf, cgroup: &File, root: &Path) -> Result<(), LoadError> {
    for (program, kind) in [
        ("udp_egress", CgroupSkbAttachType::Egress),
        ("udp_ingress", CgroupSkbAttachType::Ingress),
    ] {
        let prog: &mut CgroupSkb = typed(ebpf, program)?;
        prog.load()
            .map_err(|source| LoadError::Program { program, source })?;
        // Through a bpf_link (kernel >= 5.7) the program always coexists
        // with others on the cgroup (systemd's, say); the link API
        // rejects the legacy ALLOW_MULTI flag, so the mode is Single.
        prog.attach(cgroup, kind, CgroupAttachMode::Single)
            .map_err(|source| LoadError::AttachCgroup {
                program,
                path: root.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// Why the BTF-typed set did not load (the fallback's reason).
#[derive(Debug, Error)]
enum BtfLoadError {
    #[error("reading the kernel's BTF")]
    Btf(#[source] BtfError),
    #[error("program `{program}`")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("program `{0}` is missing from the object")]
    Missing(&'static str),
}

/// Loads every BTF-typed program, and with `udp` the UDP peer programs
/// that go with them (none attached yet); on the first failure unloads the
/// ones loaded, so that the classic set can take over.
fn load_btf_tracepoints(ebpf: &mut Ebpf, udp: bool) -> Result<(), BtfLoadError> {
    let btf = Btf::from_sys_fs().map_err(BtfLoadError::Btf)?;
    let mut loaded = Vec::new();
    let mut result = Ok(());
    if udp {
        for program in SOCK_ADDR_PROGRAMS {
            let prog: Result<&mut CgroupSockAddr, BtfLoadError> = ebpf
                .program_mut(program)
                .ok_or(BtfLoadError::Missing(program))
                .and_then(|p| {
                    p.try_into()
                        .map_err(|source| BtfLoadError::Program { program, source })
                });
            if let Err(e) = prog.and_then(|p| {
                p.load()
                    .map_err(|source| BtfLoadError::Program { program, source })
            }) {
                result = Err(e);
                break;
            }
        }
    }
    for (_, program, _, name) in TRACEPOINTS {
        if result.is_err() {
            break;
        }
        let prog: Result<&mut BtfTracePoint, BtfLoadError> = ebpf
            .program_mut(program)
            .ok_or(BtfLoadError::Missing(program))
            .and_then(|p| {
                p.try_into()
                    .map_err(|source| BtfLoadError::Program { program, source })
            });
        match prog.and_then(|p| {
            p.load(name, &btf)
                .map_err(|source| BtfLoadError::Program { program, source })
        }) {
            Ok(()) => loaded.push(program),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        for program in loaded {
            if let Some(p) = ebpf.program_mut(program)
                && let Ok(p) = <&mut BtfTracePoint>::try_from(p)
            {
                let _ = p.unload();
            }
        }
        for program in SOCK_ADDR_PROGRAMS {
            if let Some(p) = ebpf.program_mut(program)
                && let Ok(p) = <&mut CgroupSockAddr>::try_from(p)
            {
                let _ = p.unload();
            }
        }
    }
    result
}

fn attach_btf_tracepoints(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for (_, program, _, name) in TRACEPOINTS {
        attach_btf(ebpf, program, name)?;
    }
    Ok(())
}

/// Attaches the loaded BTF-typed program `program` to the kernel's
/// tracepoint `name` (the agent's, and the floor's in `crate::floor`).
pub(crate) fn attach_btf(
    ebpf: &mut Ebpf,
    program: &'static str,
    name: &'static str,
) -> Result<(), LoadError> {
    let tp: &mut BtfTracePoint = typed(ebpf, program)?;
    tp.attach().map_err(|source| LoadError::AttachBtf {
        program,
        name,
        source,
    })?;
    Ok(())
}

fn attach_tracepoints(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for (program, _, category, name) in TRACEPOINTS {
        let tp: &mut TracePoint = typed(ebpf, program)?;
        tp.load()
            .map_err(|source| LoadError::Program { program, source })?;
        tp.attach(category, name)
            .map_err(|source| LoadError::Attach {
                category,
                name,
                source,
            })?;
    }
    Ok(())
}
