//! The counters of TCP connections that are still open, read once an
//! interval by an `iter/tcp` program (`receiver-ebpf/src/bin/open_tcp.rs`)
//! in every watched network namespace.
//!
//! The flow programs can report a connection's final counters at its
//! change to CLOSE without keeping anything per connection; what they do
//! not see is how far an open connection has got. This module reads that
//! from the kernel's own socket tables instead of a map the programs fill:
//! [`OpenTcpReader::read_all`] returns one [`OpenSocket`] per open TCP
//! socket of every namespace, with the bytes derived by
//! [`TcpBytes::derive`] ([`bytes`] explains the kernel side).
//!
//! ## How an iterator is read
//!
//! The program is loaded once and attached once: `BPF_LINK_CREATE` with
//! attach type `BPF_TRACE_ITER` gives a link, which stays for the reader's
//! life. Each read makes a new iterator from it (`BPF_ITER_CREATE`, an
//! anonymous file) and reads the file to its end: the kernel walks its
//! TCP hash tables while the file is read, calling the program for each
//! socket, and the program appends one fixed-size record per open socket
//! ([`flowscope_common::OpenTcp`]). The kernel fills a buffer of its own
//! (eight pages) per `read()`, and a record that does not fit is written
//! again at the start of the next one, so the records arrive whole and in
//! order; the output is cut into records only once read to its end, and
//! a total that is not a whole number of records is an error naming it.
//!
//! ## One namespace per iterator
//!
//! The TCP iterator yields only the sockets of one network namespace: the
//! one of the task that created the iterator file. `bpf_iter_tcp`'s
//! `init_seq_private` (`bpf_iter_init_seq_net()`) takes a reference to
//! `current->nsproxy->net_ns` at `BPF_ITER_CREATE`, and the batching walk
//! keeps a socket only when `seq_sk_match()` finds `sock_net(sk)` equal to
//! that namespace; the attach and the read do not matter. So the reader
//! creates each namespace's iterator on a short-lived thread that entered
//! it ([`crate::netns::in_namespace`]), one namespace after another, and
//! checks that every record it gets names that namespace. The hash tables
//! are shared by all namespaces (unless `net.ipv4.tcp_child_ehash_entries`
//! gave one its own), so each namespace's walk passes over every bucket of
//! the host's table: a host with many namespaces pays for the table once
//! per namespace (docs/benchmarks.md has the measured cost).
//!
//! ## Cost
//!
//! A read is blocking work (thread creation and `setns` per namespace, the
//! kernel's walk under each socket's lock): [`OpenTcpReader::read_all`] is
//! synchronous, for the receiver's collection thread (`flowscope-ebpf`),
//! which does only blocking work; it never runs on an async worker.
//!
//! ## From sockets to connections
//!
//! [`walk`] turns the records into the [`flowscope_common::Conn`]s the
//! collector takes, with the owner the TCP record join knows, and holds
//! the rules for sockets older than the agent.

pub mod bytes;
pub mod record;
pub mod seed;
pub mod walk;

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use aya::programs::{Iter, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};
use flowscope_common::{OpenTcp, OpenTcpOffsets};
use flowscope_model::internal_events::LossReason;
use thiserror::Error;

use crate::btf::{Btf, BtfError};
use crate::netns::{self, NetnsError, NetnsScanner};
pub use bytes::{SeqCounters, TcpBytes};
pub use record::{OpenSocket, RecordError, TcpState};

/// The iterator program, built by build.rs for the bpf target.
static OPEN_TCP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowscope-open-tcp"));

/// The program's name in the object.
const PROGRAM: &str = "open_tcp";
/// The iterator target: the kernel's `bpf_iter_tcp`.
const TARGET: &str = "tcp";
/// The read-only data the offsets go into.
const OFFSETS: &str = "OPEN_TCP_OFFSETS";

/// `bpf(2)` commands and the attach type, from include/uapi/linux/bpf.h.
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

#[derive(Debug, Error)]
pub enum OpenTcpError {
    #[error("reading the kernel's BTF for struct sock_common, net and tcp_sock")]
    Btf(#[from] BtfError),
    #[error("kernel struct member {path} is {size} bytes, flowscope expects {expected}")]
    Size {
        path: String,
        size: u32,
        expected: u32,
    },
    #[error("enum sock_flags in the kernel's BTF has no SOCK_DONE below 64")]
    SockDone,
    #[error("reading the kernel's BTF to load the iter/tcp program")]
    AyaBtf(#[source] aya::BtfError),
    #[error("the kernel rejected flowscope's open-socket iterator object")]
    Load(#[source] EbpfError),
    #[error("eBPF program `{0}` is missing from the iterator object (a build problem)")]
    Missing(&'static str),
    #[error("loading the iter/tcp program")]
    Program(#[source] ProgramError),
    #[error("attaching the iter/tcp program (BPF_LINK_CREATE)")]
    Attach(#[source] io::Error),
    #[error("creating the TCP iterator in network namespace {netns} (BPF_ITER_CREATE)")]
    Create {
        netns: u32,
        #[source]
        source: io::Error,
    },
    #[error("reading the TCP iterator of network namespace {netns} after {read} bytes")]
    Read {
        netns: u32,
        read: usize,
        #[source]
        source: io::Error,
    },
    #[error("the TCP iterator of network namespace {netns} returned a bad record")]
    Record {
        netns: u32,
        #[source]
        source: RecordError,
    },
    #[error(
        "the TCP iterator created in network namespace {netns} returned socket {sk:#x} of namespace {found}"
    )]
    ForeignSocket { netns: u32, found: u32, sk: u64 },
    #[error("entering network namespace {netns} to read its TCP sockets")]
    Netns {
        netns: u32,
        #[source]
        source: NetnsError,
    },
}

impl OpenTcpError {
    /// The namespace went away between the scan and the read (its last
    /// process exited, or its pid now names another namespace): nothing
    /// to report, not a failure.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            OpenTcpError::Netns {
                source: NetnsError::Open { source, .. },
                ..
            } if source.kind() == io::ErrorKind::NotFound
        )
    }

    /// The namespace whose read failed, when the error is about one.
    pub fn netns(&self) -> Option<u32> {
        match self {
            OpenTcpError::Create { netns, .. }
            | OpenTcpError::Read { netns, .. }
            | OpenTcpError::Record { netns, .. }
            | OpenTcpError::ForeignSocket { netns, .. }
            | OpenTcpError::Netns { netns, .. } => Some(*netns).filter(|n| *n != 0),
            _ => None,
        }
    }

    /// How a namespace's failed read is counted in
    /// `flowscope.events.lost`: records the reader refuses are
    /// `parse_error`, a read the kernel or a thread failed is
    /// `read_error`.
    pub fn loss_reason(&self) -> LossReason {
        match self {
            OpenTcpError::Record { .. } | OpenTcpError::ForeignSocket { .. } => {
                LossReason::ParseError
            }
            _ => LossReason::ReadError,
        }
    }
}

/// For [`netns::in_namespace`], which knows the namespace only once it
/// entered it; [`read_namespace`] fills in the inode where it is 0.
impl From<NetnsError> for OpenTcpError {
    fn from(source: NetnsError) -> Self {
        let netns = match &source {
            NetnsError::Setns { netns, .. }
            | NetnsError::Spawn { netns, .. }
            | NetnsError::Thread(netns) => *netns,
            NetnsError::Open { .. } => 0,
        };
        OpenTcpError::Netns { netns, source }
    }
}

/// What one [`OpenTcpReader::read_all`] found.
#[derive(Debug, Default)]
pub struct OpenTcpSnapshot {
    /// Every open connection of the namespaces read (every socket but the
    /// listeners).
    pub sockets: Vec<OpenSocket>,
    /// The listeners of the namespaces read ([`TcpState::Listen`]).
    pub listeners: Vec<OpenSocket>,
    /// The namespaces read (inodes).
    pub namespaces: Vec<u32>,
    /// Namespaces gone between the scan and their read, and `/run/netns`
    /// entries that were not a namespace when read (see
    /// [`netns::is_namespace_file`]).
    pub gone: usize,
    /// Namespaces that could not be read, and why.
    pub failed: Vec<OpenTcpError>,
}

/// The loaded and attached iterator, and the namespaces it reads.
pub struct OpenTcpReader {
    /// Keeps the loaded program (the link holds a reference too).
    _ebpf: Ebpf,
    /// The iterator link; each read makes an iterator from it.
    link: Arc<OwnedFd>,
    scanner: NetnsScanner,
    /// The reader's own namespace, read without a thread.
    own: Option<u32>,
}

impl std::fmt::Debug for OpenTcpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTcpReader")
            .field("link", &self.link)
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

fn member(btf: &Btf, strukt: &str, path: &str, size: u32) -> Result<u32, OpenTcpError> {
    let m = btf.member(strukt, path)?;
    if m.size != size {
        return Err(OpenTcpError::Size {
            path: format!("{strukt}.{path}"),
            size: m.size,
            expected: size,
        });
    }
    Ok(m.offset)
}

/// Every offset the iterator reads, from the kernel's BTF; an error names
/// the member this kernel lacks or has at another size.
pub fn discover_offsets(btf: &Btf) -> Result<OpenTcpOffsets, OpenTcpError> {
    let sc = |path, size| member(btf, "sock_common", path, size);
    let tcp = |path, size| member(btf, "tcp_sock", path, size);
    let sock_done_bit = btf
        .enumerators("sock_flags")?
        .into_iter()
        .find(|(name, _)| name == "SOCK_DONE")
        .and_then(|(_, v)| u32::try_from(v).ok())
        .filter(|v| *v < 64)
        .ok_or(OpenTcpError::SockDone)?;
    Ok(OpenTcpOffsets {
        skc_family: sc("skc_family", 2)?,
        skc_state: sc("skc_state", 1)?,
        skc_daddr: sc("skc_daddr", 4)?,
        skc_rcv_saddr: sc("skc_rcv_saddr", 4)?,
        skc_dport: sc("skc_dport", 2)?,
        skc_num: sc("skc_num", 2)?,
        skc_v6_daddr: sc("skc_v6_daddr", 16)?,
        skc_v6_rcv_saddr: sc("skc_v6_rcv_saddr", 16)?,
        skc_net: sc("skc_net.net", 8)?,
        skc_flags: sc("skc_flags", 8)?,
        net_ns_inum: member(btf, "net", "ns.inum", 4)?,
        sk_socket: tcp("inet_conn.icsk_inet.sk.sk_socket", 8)?,
        socket_file: member(btf, "socket", "file", 8)?,
        file_inode: member(btf, "file", "f_inode", 8)?,
        inode_ino: member(btf, "inode", "i_ino", 8)?,
        bytes_acked: tcp("bytes_acked", 8)?,
        bytes_received: tcp("bytes_received", 8)?,
        write_seq: tcp("write_seq", 4)?,
        snd_una: tcp("snd_una", 4)?,
        rcv_nxt: tcp("rcv_nxt", 4)?,
        copied_seq: tcp("copied_seq", 4)?,
        segs_in: tcp("segs_in", 4)?,
        segs_out: tcp("segs_out", 4)?,
        total_retrans: tcp("total_retrans", 4)?,
        srtt_us: tcp("srtt_us", 4)?,
        mdev_us: tcp("mdev_us", 4)?,
        sock_done_bit,
    })
}

/// `bpf(cmd, attr, size_of(attr))`, returning the new descriptor.
///
/// # Safety
/// `A` is the `union bpf_attr` member `cmd` reads (a prefix of it is
/// enough: the kernel zero-fills the rest).
unsafe fn bpf_fd<A>(cmd: libc::c_long, attr: &A) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live value of the size passed; the kernel only
    // reads it. A non-negative return is a new descriptor we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *const A).cast::<libc::c_void>(),
            std::mem::size_of::<A>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd =
        i32::try_from(r).map_err(|_| io::Error::other("bpf returned a descriptor over i32"))?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The `link_create` member of `union bpf_attr`, up to its flags.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// The `iter_create` member of `union bpf_attr`.
#[repr(C)]
struct IterCreate {
    link_fd: u32,
    flags: u32,
}

/// Attaches the loaded iterator program: a link of its own (aya's
/// `Iter::attach` keeps the link's descriptor private, and an iterator is
/// made from the descriptor once per namespace per read).
fn attach(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: 0,
        attach_type: BPF_TRACE_ITER,
        flags: 0,
    };
    // SAFETY: `LinkCreate` is the start of `link_create`; no target
    // parameters (`iter_info`) follow for the TCP iterator.
    unsafe { bpf_fd(BPF_LINK_CREATE, &attr) }
}

/// A new iterator file from `link`, walking the calling thread's network
/// namespace.
fn iterator(link: BorrowedFd<'_>) -> io::Result<File> {
    let attr = IterCreate {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    // SAFETY: `IterCreate` is `iter_create` whole.
    unsafe { bpf_fd(BPF_ITER_CREATE, &attr) }.map(File::from)
}

/// Every open socket of the calling thread's namespace, `netns`: an
/// iterator made and read to its end here.
fn read_here(link: BorrowedFd<'_>, netns: u32) -> Result<Vec<OpenSocket>, OpenTcpError> {
    let mut file = iterator(link).map_err(|source| OpenTcpError::Create { netns, source })?;
    let mut buf = Vec::with_capacity(64 * OpenTcp::SIZE);
    file.read_to_end(&mut buf)
        .map_err(|source| OpenTcpError::Read {
            netns,
            read: buf.len(),
            source,
        })?;
    let sockets = record::parse(&buf).map_err(|source| OpenTcpError::Record { netns, source })?;
    if let Some(s) = sockets.iter().find(|s| s.netns != netns) {
        return Err(OpenTcpError::ForeignSocket {
            netns,
            found: s.netns,
            sk: s.sk,
        });
    }
    Ok(sockets)
}

impl OpenTcpReader {
    /// Loads the iterator program with this kernel's offsets and attaches
    /// it (root, or CAP_BPF with CAP_PERFMON and CAP_SYS_ADMIN for
    /// `setns`).
    pub fn load() -> Result<Self, OpenTcpError> {
        // Each parsed copy of the kernel's BTF is freed before the next one
        // is made (see crate::loader::load): flowscope's, here; the
        // loader's own, at the end of the statement that loads the object;
        // then the one the iterator is attached with.
        let offsets = discover_offsets(&Btf::from_sys_fs()?)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS, &offsets, true)
            .load(OPEN_TCP_OBJECT)
            .map_err(OpenTcpError::Load)?;
        let kernel_btf = aya::Btf::from_sys_fs().map_err(OpenTcpError::AyaBtf)?;
        let prog: &mut Iter = ebpf
            .program_mut(PROGRAM)
            .ok_or(OpenTcpError::Missing(PROGRAM))?
            .try_into()
            .map_err(OpenTcpError::Program)?;
        prog.load(TARGET, &kernel_btf)
            .map_err(OpenTcpError::Program)?;
        let prog_fd = prog.fd().map_err(OpenTcpError::Program)?;
        let link = attach(prog_fd.as_fd()).map_err(OpenTcpError::Attach)?;
        Ok(OpenTcpReader {
            _ebpf: ebpf,
            link: Arc::new(link),
            scanner: NetnsScanner::default(),
            own: netns::current_netns(),
        })
    }

    /// Every open socket of namespace `netns` (reached at `path`, a
    /// `/proc/PID/ns/net` or `/run/netns` file), listeners included:
    /// blocking.
    pub fn read_namespace(&self, path: &Path, netns: u32) -> Result<Vec<OpenSocket>, OpenTcpError> {
        read_namespace(&self.link, self.own, path, netns)
    }

    /// Every open socket of every namespace on the host, one namespace at
    /// a time, blocking. The namespaces are scanned again at each read
    /// ([`NetnsScanner`], shared with DNS capture and conntrack), so the
    /// reader follows namespaces as they come and go.
    pub fn read_all(&mut self) -> OpenTcpSnapshot {
        read_all(&self.link, self.own, &mut self.scanner)
    }
}

fn read_namespace(
    link: &Arc<OwnedFd>,
    own: Option<u32>,
    path: &Path,
    netns: u32,
) -> Result<Vec<OpenSocket>, OpenTcpError> {
    if own == Some(netns) {
        return read_here(link.as_fd(), netns);
    }
    let link = Arc::clone(link);
    netns::in_namespace(path, netns, "fs-open-tcp", move || {
        read_here(link.as_fd(), netns)
    })
    .map_err(|e| match e {
        OpenTcpError::Netns { netns: 0, source } => OpenTcpError::Netns { netns, source },
        e => e,
    })
}

fn read_all(link: &Arc<OwnedFd>, own: Option<u32>, scanner: &mut NetnsScanner) -> OpenTcpSnapshot {
    let mut out = OpenTcpSnapshot::default();
    let mut namespaces: Vec<_> = scanner.scan().into_iter().collect();
    namespaces.sort_unstable_by_key(|(ino, _)| *ino);
    for (netns, (path, _)) in namespaces {
        // The scan checked it too; checked again because reading the
        // namespaces before this one gives `ip netns del` time to unmount it.
        if !netns::is_namespace_file(&path) {
            out.gone += 1;
            continue;
        }
        match read_namespace(link, own, &path, netns) {
            Ok(sockets) => {
                for s in sockets {
                    match s.state {
                        TcpState::Listen => out.listeners.push(s),
                        _ => out.sockets.push(s),
                    }
                }
                out.namespaces.push(netns);
            }
            Err(e) if e.is_gone() => out.gone += 1,
            Err(e) => out.failed.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_error(kind: io::ErrorKind) -> OpenTcpError {
        OpenTcpError::from(NetnsError::Open {
            path: "/proc/1234/ns/net".into(),
            source: io::Error::from(kind),
        })
    }

    /// Only a namespace whose file is gone counts as gone; a namespace the
    /// reader may not open is a failure to report.
    #[test]
    fn gone_is_only_a_missing_namespace() {
        assert!(open_error(io::ErrorKind::NotFound).is_gone());
        assert!(!open_error(io::ErrorKind::PermissionDenied).is_gone());
        let setns = OpenTcpError::from(NetnsError::Setns {
            netns: 7,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
        assert!(!setns.is_gone());
        assert!(matches!(setns, OpenTcpError::Netns { netns: 7, .. }));
    }
}
