//! The floor programs (`receiver-ebpf/src/bin/floor.rs`): programs that
//! return at once, attached to exactly the hooks the flow programs and the
//! drop program use, so that a benchmark can measure what calling any
//! program there costs in the same run as the agent's own programs (`scripts/bench-load.sh
//! --floor`, through the `flowscope-floor` binary). Nothing here is part of
//! the agent.

use std::fs::File;

use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, TracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::loader::{Hooks, LoadError, cgroup2_root, typed};

static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowscope-floor"));

/// (BTF-typed program, classic program, category, tracepoint): the hooks
/// of [`crate::loader`]'s table, in the same order.
const TRACEPOINTS: [(&str, &str, &str, &str); 5] = [
    (
        "floor_set_state",
        "floor_tp_state",
        "sock",
        "inet_sock_set_state",
    ),
    (
        "floor_send_len",
        "floor_tp_send",
        "sock",
        "sock_send_length",
    ),
    (
        "floor_recv_len",
        "floor_tp_recv",
        "sock",
        "sock_recv_length",
    ),
    ("floor_send_rst", "floor_tp_sndrst", "tcp", "tcp_send_reset"),
    (
        "floor_recv_rst",
        "floor_tp_rcvrst",
        "tcp",
        "tcp_receive_reset",
    ),
];

/// The UDP programs of the BTF-typed set, as the agent attaches them.
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "floor_sendmsg4",
    "floor_sendmsg6",
    "floor_recvmsg4",
    "floor_recvmsg6",
];

/// The drop program's floor and its tracepoint: a BTF-typed raw
/// tracepoint in both sets, as the agent's drop program
/// (`crate::drops`) is.
const DROPS_PROGRAM: (&str, &str) = ("floor_kfree_skb", "kfree_skb");

/// Loads the floor programs of set `hooks` and attaches them where the
/// agent attaches its own (with `udp`, the cgroup programs on the root
/// cgroup v2 too; with `drops`, the drop program's hook). They stay
/// attached while the returned object lives.
pub fn load(hooks: Hooks, udp: bool, drops: bool) -> Result<Ebpf, LoadError> {
    crate::loader::check_privileges()?;
    let mut ebpf = EbpfLoader::new()
        .load(FLOOR_OBJECT)
        .map_err(LoadError::Load)?;
    // The BTF-typed programs: the drop hook's in both sets, the flow
    // tracepoints' in the default one. The kernel's BTF is read once, and
    // only when one of them is attached.
    let mut btf_programs: Vec<(&'static str, &'static str)> = Vec::new();
    if drops {
        btf_programs.push(DROPS_PROGRAM);
    }
    if hooks == Hooks::BtfTracepoints {
        btf_programs.extend(
            TRACEPOINTS
                .iter()
                .map(|&(program, _, _, name)| (program, name)),
        );
    }
    if !btf_programs.is_empty() {
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::Load(e.into()))?;
        for (program, name) in btf_programs {
            attach_btf(&mut ebpf, &btf, program, name)?;
        }
    }
    if hooks == Hooks::Tracepoints {
        for (_, program, category, name) in TRACEPOINTS {
            let tp: &mut TracePoint = typed(&mut ebpf, program)?;
            tp.load()
                .map_err(|source| LoadError::Program { program, source })?;
            tp.attach(category, name)
                .map_err(|source| LoadError::Attach {
                    category,
                    name,
                    source,
                })?;
        }
    }
    if !udp {
        return Ok(ebpf);
    }
    let root = cgroup2_root()?;
    let cgroup = File::open(&root).map_err(|source| LoadError::Cgroup {
        path: root.clone(),
        source,
    })?;
    let cgroup_error = |program| {
        let path = root.clone();
        move |source| LoadError::AttachCgroup {
            program,
            path,
            source,
        }
    };
    match hooks {
        Hooks::BtfTracepoints => {
            for program in SOCK_ADDR_PROGRAMS {
                let prog: &mut CgroupSockAddr = typed(&mut ebpf, program)?;
                prog.load()
                    .map_err(|source| LoadError::Program { program, source })?;
                prog.attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(cgroup_error(program))?;
            }
        }
        Hooks::Tracepoints => {
            for (program, kind) in [
                ("floor_egress", CgroupSkbAttachType::Egress),
                ("floor_ingress", CgroupSkbAttachType::Ingress),
            ] {
                let prog: &mut CgroupSkb = typed(&mut ebpf, program)?;
                prog.load()
                    .map_err(|source| LoadError::Program { program, source })?;
                prog.attach(&cgroup, kind, CgroupAttachMode::Single)
                    .map_err(cgroup_error(program))?;
            }
        }
    }
    Ok(ebpf)
}

/// Loads the floor's BTF-typed program `program` for the kernel's
/// tracepoint `name` and attaches it.
fn attach_btf(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &'static str,
    name: &'static str,
) -> Result<(), LoadError> {
    let tp: &mut BtfTracePoint = typed(ebpf, program)?;
    tp.load(name, btf)
        .map_err(|source| LoadError::Program { program, source })?;
    crate::loader::attach_btf(ebpf, program, name)
}
