//! Loads the flow programs into the kernel and attaches them.
//!
//! Everything that can be missing is checked up front and reported once,
//! naming what is missing: capabilities (every one missing, see
//! [`crate::capabilities`]), tracefs, BTF, a tracepoint, the cgroup v2 mount.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};
use flowscope_common::{Conn, Offsets, Owner, Settings, UdpKey, UdpStats};
use thiserror::Error;

use crate::offsets::{self, OffsetsError};

/// The flow programs, built by build.rs for the bpf target.
static FLOWS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowscope-flows"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] crate::capabilities::MissingCapabilities),
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
    #[error("attaching cgroup_skb program `{program}` to {path}")]
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
    /// Entries of the kernel's connection and UDP flow maps.
    pub max_flows: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
}

/// The loaded programs and the maps user space reads.
pub struct Loaded {
    /// Keeps programs and links alive.
    pub ebpf: Ebpf,
    pub conns: HashMap<MapData, u64, Conn>,
    pub udp_flows: HashMap<MapData, UdpKey, UdpStats>,
    pub udp_owners: HashMap<MapData, u64, Owner>,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
}

const TRACEPOINTS: [(&str, &str, &str); 6] = [
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("sock_send_length", "sock", "sock_send_length"),
    ("sock_recv_length", "sock", "sock_recv_length"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
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
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .override_global("SETTINGS", &settings, true)
        .map_max_entries("CONNS", opts.max_flows)
        .map_max_entries("UDP_FLOWS", opts.max_flows)
        .map_max_entries("UDP_OWNERS", opts.max_flows)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .load(FLOWS_OBJECT)
        .map_err(LoadError::Load)?;

    for (program, category, name) in TRACEPOINTS {
        let tp: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(LoadError::MissingProgram(program))?
            .try_into()
            .map_err(|source| LoadError::Program { program, source })?;
        tp.load()
            .map_err(|source| LoadError::Program { program, source })?;
        tp.attach(category, name)
            .map_err(|source| LoadError::Attach {
                category,
                name,
                source,
            })?;
    }

    if opts.udp {
        let root = cgroup2_root()?;
        let cgroup = File::open(&root).map_err(|source| LoadError::Cgroup {
            path: root.clone(),
            source,
        })?;
        for (program, kind) in [
            ("udp_egress", CgroupSkbAttachType::Egress),
            ("udp_ingress", CgroupSkbAttachType::Ingress),
        ] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(program)
                .ok_or(LoadError::MissingProgram(program))?
                .try_into()
                .map_err(|source| LoadError::Program { program, source })?;
            prog.load()
                .map_err(|source| LoadError::Program { program, source })?;
            // Through a bpf_link (kernel >= 5.7) the program always coexists
            // with others on the cgroup (systemd's, say); the link API
            // rejects the legacy ALLOW_MULTI flag, so the mode is Single.
            prog.attach(&cgroup, kind, CgroupAttachMode::Single)
                .map_err(|source| LoadError::AttachCgroup {
                    program,
                    path: Path::new(&root).to_path_buf(),
                    source,
                })?;
        }
    }

    Ok(Loaded {
        conns: take(&mut ebpf, "CONNS")?,
        udp_flows: take(&mut ebpf, "UDP_FLOWS")?,
        udp_owners: take(&mut ebpf, "UDP_OWNERS")?,
        events: take(&mut ebpf, "EVENTS")?,
        counters: take(&mut ebpf, "COUNTERS")?,
        ebpf,
    })
}
