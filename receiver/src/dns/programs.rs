//! Loads and attaches the DNS object's owner programs (see
//! receiver-ebpf/src/bin/dns.rs, "Owners"): the send tracepoint, BTF-typed
//! (`dns_send`) where the kernel accepts it, else the classic one
//! (`dns_send_tp`; forced with `FLOWSCOPE_EBPF_HOOKS=tracepoint`, as for
//! the flow programs, or [`super::DnsSettings::classic_tracepoint`]), and the two `cgroup/sendmsg4/6` programs on the
//! cgroup v2 root, which name the unconnected UDP sockets that send to a
//! DNS port.

use std::fs::File;

use aya::Ebpf;
use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, ProgramError, TracePoint};
use thiserror::Error;

use super::owner::OwnerMaps;
use crate::loader::{Hooks, LoadError, cgroup2_root};
use aya::{Btf, BtfError};

#[derive(Debug, Error)]
pub enum ProgramsError {
    #[error("the kernel's struct layout is unknown (no BTF or tracefs)")]
    NoOffsets,
    #[error("reading the kernel's BTF")]
    Btf(#[source] BtfError),
    #[error("program `{0}` is missing from the DNS object (a build problem)")]
    Missing(&'static str),
    #[error("map `{0}` is missing from the DNS object (a build problem)")]
    MissingMap(&'static str),
    #[error("program `{program}`")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the cgroup v2 root")]
    Cgroup(#[source] LoadError),
    #[error("opening the cgroup v2 root")]
    CgroupOpen(#[source] std::io::Error),
}

const SEND_BTF: &str = "dns_send";
const SEND_CLASSIC: &str = "dns_send_tp";
const SOCK_ADDR: [&str; 2] = ["dns_sendmsg4", "dns_sendmsg6"];

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProgramsError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramsError::Missing(name))?
        .try_into()
        .map_err(|source| ProgramsError::Program {
            program: name,
            source,
        })
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProgramsError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProgramsError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ProgramsError::Map { name, source })
}

fn btf_send(ebpf: &mut Ebpf) -> Result<(), ProgramsError> {
    let btf = Btf::from_sys_fs().map_err(ProgramsError::Btf)?;
    let p: &mut BtfTracePoint = program(ebpf, SEND_BTF)?;
    let wrap = |source| ProgramsError::Program {
        program: SEND_BTF,
        source,
    };
    p.load("sock_send_length", &btf).map_err(wrap)?;
    p.attach().map_err(wrap)?;
    Ok(())
}

fn classic_send(ebpf: &mut Ebpf) -> Result<(), ProgramsError> {
    let p: &mut TracePoint = program(ebpf, SEND_CLASSIC)?;
    let wrap = |source| ProgramsError::Program {
        program: SEND_CLASSIC,
        source,
    };
    p.load().map_err(wrap)?;
    p.attach("sock", "sock_send_length").map_err(wrap)?;
    Ok(())
}

/// Attaches the owner programs and hands over the maps user space reads,
/// with the kind of tracepoint attached (the classic one when `classic`).
/// The object must have been loaded with its `OFFSETS` filled.
pub fn attach(ebpf: &mut Ebpf, classic: bool) -> Result<(OwnerMaps, Hooks), ProgramsError> {
    let hooks = if classic {
        classic_send(ebpf)?;
        Hooks::Tracepoints
    } else {
        match btf_send(ebpf) {
            Ok(()) => Hooks::BtfTracepoints,
            Err(e) => {
                tracing::warn!(
                    error = %error_chain(&e),
                    "the BTF-typed DNS owner program does not load here; using the classic tracepoint"
                );
                if let Ok(p) = program::<BtfTracePoint>(ebpf, SEND_BTF) {
                    let _ = p.unload();
                }
                classic_send(ebpf)?;
                Hooks::Tracepoints
            }
        }
    };
    let root = cgroup2_root().map_err(ProgramsError::Cgroup)?;
    let cgroup = File::open(&root).map_err(ProgramsError::CgroupOpen)?;
    for name in SOCK_ADDR {
        let p: &mut CgroupSockAddr = program(ebpf, name)?;
        let wrap = |source| ProgramsError::Program {
            program: name,
            source,
        };
        p.load().map_err(wrap)?;
        // A bpf_link coexists with other programs on the cgroup.
        p.attach(&cgroup, CgroupAttachMode::Single).map_err(wrap)?;
    }
    tracing::info!(?hooks, "DNS owner programs attached");
    Ok((
        OwnerMaps {
            socks: take(ebpf, "DNS_SOCKS")?,
            events: take(ebpf, "DNS_EVENTS")?,
            counters: take(ebpf, "DNS_COUNTERS")?,
        },
        hooks,
    ))
}

pub use flowscope_model::errors::error_chain;
