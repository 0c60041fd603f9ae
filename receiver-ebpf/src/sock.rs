//! How the flow programs read kernel memory (`struct sock`, `struct
//! tcp_sock`, `struct net`), in the two program sets: BTF-typed raw
//! tracepoints load fields directly, classic tracepoints copy each with
//! `bpf_probe_read_kernel`. Field offsets come from user space
//! ([`flowscope_common::Offsets`], read from the kernel's BTF and tracefs).

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_skc_to_tcp_sock;
use flowscope_common::{AF_INET, Conn, counter};
use flowscope_ebpf::{off, probe_read};

use crate::{bump, o};

/// How a program reads kernel memory (`struct sock`, `struct tcp_sock`,
/// `struct net`).
pub(crate) trait Mem {
    /// Whether UDP datagrams are counted by the length tracepoints (the
    /// BTF-typed set, which can ask for a socket's cookie) rather than by
    /// the cgroup_skb programs.
    const SOCKET_UDP: bool;
    /// Reads a `T` (1, 2, 4 or 8 bytes) at `base + offset`.
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32>;
    /// Reads 16 bytes (an IPv6 address) at `base + offset`.
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32>;
    /// The `struct tcp_sock` of TCP socket `sk`, or 0.
    fn tcp_sock(sk: u64) -> u64;
}

/// Classic tracepoints: the socket pointer is a number to the verifier,
/// every field costs a `bpf_probe_read_kernel` call.
pub(crate) struct Probe;

impl Mem for Probe {
    const SOCKET_UDP: bool = false;

    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32> {
        let r = probe_read::<T>(base + offset);
        if r.is_err() {
            bump(counter::READ_ERROR);
        }
        r
    }

    #[inline(always)]
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32> {
        Self::read(base, offset)
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        // struct tcp_sock begins with its struct sock; the protocol was
        // checked by the caller.
        sk
    }
}

/// BTF-typed raw tracepoints: the socket is a typed kernel pointer, and a
/// load from it at a constant offset is checked against `struct sock`'s
/// BTF by the verifier and runs as one instruction (with a fault handler).
pub(crate) struct Direct;

impl Mem for Direct {
    const SOCKET_UDP: bool = true;

    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32> {
        // SAFETY: `base` is the typed kernel pointer the tracepoint
        // passed (or one derived from it); the verifier checks the load
        // against the type's BTF and the JIT adds a fault handler (a
        // faulting load reads 0). (Not `btf_load`: through it, LLVM lays
        // out the length programs differently.)
        Ok(unsafe { core::ptr::read_volatile((base + offset) as *const T) })
    }

    #[inline(always)]
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32> {
        // Two 8-byte loads: the verifier accepts scalar loads anywhere
        // inside an array member.
        let a: u64 = Self::read(base, offset)?;
        let b: u64 = Self::read(base, offset + 8)?;
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&a.to_ne_bytes());
        v[8..].copy_from_slice(&b.to_ne_bytes());
        Ok(v)
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        // The verifier allows loads only within the pointer's BTF type, and
        // the tracepoints pass a `struct sock *`: this helper turns it into
        // a `struct tcp_sock *` (or NULL when the socket is not TCP).
        // SAFETY: the verifier accepts only a socket pointer here; the
        // helper returns NULL for a socket that is not TCP.
        unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) as u64 }
    }
}

/// Network namespace inode of socket `sk`.
#[inline(always)]
pub(crate) fn netns_of<M: Mem>(sk: u64) -> u32 {
    let net: u64 = M::read(sk, off(&o().sk_net)).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    M::read(net, off(&o().net_ns_inum)).unwrap_or(0)
}

/// Family, ports, addresses and netns of socket `sk` into `c`.
#[inline(always)]
pub(crate) fn fill_tuple<M: Mem>(sk: u64, c: &mut Conn) -> Result<(), i32> {
    let offs = o();
    let family: u16 = M::read(sk, off(&offs.sk_family))?;
    c.family = family;
    c.lport = local_port::<M>(sk)?;
    c.rport = u16::from_be(M::read(sk, off(&offs.sk_dport))?);
    if family == AF_INET {
        let l: u32 = M::read(sk, off(&offs.sk_rcv_saddr))?;
        let r: u32 = M::read(sk, off(&offs.sk_daddr))?;
        c.laddr[..4].copy_from_slice(&l.to_ne_bytes());
        c.raddr[..4].copy_from_slice(&r.to_ne_bytes());
    } else {
        c.laddr = M::read16(sk, off(&offs.sk_v6_rcv_saddr))?;
        c.raddr = M::read16(sk, off(&offs.sk_v6_daddr))?;
    }
    c.netns = netns_of::<M>(sk);
    Ok(())
}

/// The local port of socket `sk`, host byte order (`inet_num`).
#[inline(always)]
pub(crate) fn local_port<M: Mem>(sk: u64) -> Result<u16, i32> {
    M::read(sk, off(&o().sk_num))
}
