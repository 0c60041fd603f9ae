//! The open connections of the BTF-typed programs, read through a BPF
//! iterator.
//!
//! Those programs keep a connection's record in its socket
//! (`BPF_MAP_TYPE_SK_STORAGE`, the map `CONN_STORE`): found through the
//! socket itself with no hash or lock, allocated with the first record and
//! freed with the socket. No `bpf(2)` command lists such a map (its keys
//! would be socket fds of this process), so an iterator program
//! (`conn_records`, receiver-ebpf/src/iter.rs) runs once per socket that
//! holds a record and writes it as a [`ConnRecord`]: the `struct sock`
//! address, the key the close events carry, and the `Conn`.
//!
//! aya 0.14 loads iterator programs ([`Iter`]) but creates their link
//! without naming a map, which a map iterator needs
//! (`bpf_iter_link_info.map.map_fd`): the link is created here with the
//! `bpf(2)` command itself. Each [`ConnIter::read`] opens a new iterator
//! from the link (`BPF_ITER_CREATE`), a file whose `read()` runs the
//! program over the map's sockets until it returns 0 bytes. The kernel
//! keeps each run's output whole in its buffer; a `read()` may still end
//! inside a record when the caller's buffer does, so records are taken
//! from what has been read so far, whole ones only.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use aya::maps::Map;
use aya::programs::{Iter, ProgramError};
use aya::{Btf, Ebpf};
use flowscope_common::{Conn, ConnRecord};
use thiserror::Error;

/// The iterator program and the map it walks (receiver-ebpf/src/main.rs).
pub const PROGRAM: &str = "conn_records";
pub const MAP: &str = "CONN_STORE";

/// bpf(2) commands and the iterator attach type (include/uapi/linux/bpf.h).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// One record as the program writes it.
const RECORD: usize = std::mem::size_of::<ConnRecord>();
/// What one `read()` asks for: 512 records.
const READ_BYTES: usize = 512 * RECORD;

#[derive(Debug, Error)]
pub enum ConnIterError {
    #[error("eBPF program `{PROGRAM}` is missing from the object (a build problem)")]
    MissingProgram,
    #[error("eBPF map `{MAP}` is missing from the object or is not socket storage")]
    MissingMap,
    #[error("loading the connection iterator program `{PROGRAM}`")]
    Load(#[source] ProgramError),
    #[error("creating the iterator link over `{MAP}` (bpf BPF_LINK_CREATE)")]
    Link(#[source] std::io::Error),
    #[error("opening an iterator over `{MAP}` (bpf BPF_ITER_CREATE)")]
    Open(#[source] std::io::Error),
    #[error("reading the iterator over `{MAP}`")]
    Read(#[source] std::io::Error),
    #[error("the iterator over `{MAP}` ended inside a record ({0} bytes of one)")]
    Truncated(usize),
}

/// `bpf_attr` for `BPF_LINK_CREATE` with an iterator's link info.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: u32,
}

/// `union bpf_iter_link_info`, its `map` member (the union is 16 bytes).
#[repr(C)]
struct IterLinkInfo {
    map_fd: u32,
    _rest: [u32; 3],
}

/// `bpf_attr` for `BPF_ITER_CREATE`.
#[repr(C)]
struct IterCreate {
    link_fd: u32,
    flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`: the new fd.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, initialized `bpf_attr` prefix of its
    // size, which the kernel reads (and zero-extends) and does not keep.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both commands return a new fd on success, owned by nobody
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// The iterator link over `CONN_STORE`, and the buffer reads go into.
pub struct ConnIter {
    link: OwnedFd,
    buf: Box<[u8]>,
}

impl ConnIter {
    /// Loads `conn_records` and links it to `CONN_STORE`.
    pub fn attach(ebpf: &mut Ebpf, btf: &Btf) -> Result<Self, ConnIterError> {
        let prog: &mut Iter = ebpf
            .program_mut(PROGRAM)
            .ok_or(ConnIterError::MissingProgram)?
            .try_into()
            .map_err(ConnIterError::Load)?;
        prog.load("bpf_sk_storage_map", btf)
            .map_err(ConnIterError::Load)?;
        let prog_fd = prog.fd().map_err(ConnIterError::Load)?.as_fd().as_raw_fd();
        let Some(Map::SkStorage(map)) = ebpf.map(MAP) else {
            return Err(ConnIterError::MissingMap);
        };
        let info = IterLinkInfo {
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            _rest: [0; 3],
        };
        let attr = LinkCreate {
            prog_fd: prog_fd as u32,
            target_fd: 0,
            attach_type: BPF_TRACE_ITER,
            flags: 0,
            iter_info: std::ptr::from_ref(&info) as u64,
            iter_info_len: std::mem::size_of::<IterLinkInfo>() as u32,
            _pad: 0,
        };
        let link = bpf(BPF_LINK_CREATE, &attr).map_err(ConnIterError::Link)?;
        Ok(Self {
            link,
            buf: vec![0; READ_BYTES].into_boxed_slice(),
        })
    }

    /// Calls `each` with every open connection's socket and record.
    pub fn read(&mut self, mut each: impl FnMut(u64, &Conn)) -> Result<(), ConnIterError> {
        let attr = IterCreate {
            link_fd: self.link.as_raw_fd() as u32,
            flags: 0,
        };
        let mut file = File::from(bpf(BPF_ITER_CREATE, &attr).map_err(ConnIterError::Open)?);
        let mut filled = 0;
        loop {
            let n = match file.read(&mut self.buf[filled..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnIterError::Read(e)),
            };
            filled += n;
            let whole = filled - filled % RECORD;
            for chunk in self.buf[..whole].chunks_exact(RECORD) {
                // SAFETY: the program writes whole `ConnRecord`s (repr(C),
                // integers only); `chunk` is one; read_unaligned copes with
                // alignment.
                let r: ConnRecord = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
                each(r.sk, &r.conn);
            }
            self.buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
        if filled != 0 {
            return Err(ConnIterError::Truncated(filled));
        }
        Ok(())
    }
}
