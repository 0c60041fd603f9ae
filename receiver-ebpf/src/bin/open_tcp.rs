//! flowscope's open-socket iterator: one record per open TCP socket, for
//! the interval figures of connections that are still open.
//!
//! An `iter/tcp` program (`BPF_PROG_TYPE_TRACING`, attach type
//! `BPF_TRACE_ITER`). The kernel runs it once per socket when user space
//! reads an iterator file made from its link (`BPF_ITER_CREATE`), from
//! `bpf_iter_tcp_seq_show()` in net/ipv4/tcp_ipv4.c. What the kernel does
//! around it:
//!
//! - It walks the listening hash, then the established hash, a bucket at a
//!   time: it takes a reference on every socket of the bucket that belongs
//!   to the iterator's network namespace (`seq_sk_match()`), drops the
//!   bucket lock, then calls the program for each. The namespace is the
//!   one of the task that created the iterator file (`bpf_iter_init_seq_net`
//!   at `BPF_ITER_CREATE`): one iterator sees one namespace, so user space
//!   creates one inside each namespace it watches.
//! - The hashes hold three kinds of objects, all starting with `struct
//!   sock_common`, which is what the program gets: full sockets, TIME_WAIT
//!   sockets (`struct inet_timewait_sock`) and request sockets (`struct
//!   request_sock`, state NEW_SYN_RECV, a SYN answered but not yet
//!   accepted). `bpf_skc_to_tcp_sock()` returns the `struct tcp_sock` of a
//!   full TCP socket and NULL for the other two, which have no connection
//!   counters (a TIME_WAIT socket's connection is over and was reported at
//!   its CLOSE; a request socket has moved no data yet).
//! - Around the program, a full socket is locked with `lock_sock()`, and
//!   a socket unhashed meanwhile is skipped; so the counters read here are
//!   one consistent snapshot (segments that arrive meanwhile wait in the
//!   backlog until the lock is released).
//! - After the last socket the program is called once more with a NULL
//!   socket (`bpf_iter_tcp_seq_stop()`): it writes nothing then.
//!
//! The record is [`OpenTcp`], written with `bpf_seq_write` into the
//! iterator's buffer; a socket in CLOSE (not in the hashes in practice) is
//! left out. Listeners are written (user space learns at start-up who
//! listens where from them, and leaves them out of the counts). The program reads raw
//! counters only; user space derives the bytes (receiver/src/open_tcp.rs).
//! Offsets come from the kernel's BTF ([`OpenTcpOffsets`]), so every load
//! below is one instruction the verifier checks against the BTF type of
//! the pointer it goes through.
//!
//! aya-ebpf has no macro for iterators; the function sits in section
//! `iter/tcp`, which aya's loader recognises as an iterator program.
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::mem::MaybeUninit;

use aya_ebpf::bindings::seq_file;
use aya_ebpf::helpers::generated::{bpf_seq_write, bpf_skc_to_tcp_sock};
use flowscope_common::{AF_INET, OpenTcp, OpenTcpOffsets, open_tcp_flags};
use flowscope_ebpf::{btf_load, btf_load16, frozen, off, zero_words};

/// Filled by user space before load (read-only data).
// SAFETY: no other symbol is named OPEN_TCP_OFFSETS; user space finds and
// fills it by this name.
#[unsafe(no_mangle)]
// SAFETY: `OpenTcpOffsets` is plain integers, for which all zeroes is a
// value.
static OPEN_TCP_OFFSETS: OpenTcpOffsets = unsafe { core::mem::zeroed() };

/// The TCP state the record leaves out (include/net/tcp_states.h).
const TCP_CLOSE: u8 = 7;

/// The program's context, `struct bpf_iter__tcp`: three 8-byte slots.
/// Slot 0 is `struct bpf_iter_meta *meta`, slot 1 `struct sock_common
/// *sk_common` (NULL in the final call), slot 2 `uid_t uid`.
const CTX_META: usize = 0;
const CTX_SK: usize = 1;
/// `uid` is a 4-byte load at byte 16 (the verifier checks a context load
/// against the argument's type: 4 bytes for `uid_t`).
const CTX_UID_BYTE: usize = 16;

#[inline(always)]
fn offsets() -> &'static OpenTcpOffsets {
    &OPEN_TCP_OFFSETS
}

/// Runs once per socket of the iterator's namespace, called by the kernel
/// with its `struct bpf_iter__tcp`. Returns 0, go on: the only other value
/// the verifier allows an iterator, 1, asks for the same socket again
/// (`bpf_iter_run_prog()` turns it into EAGAIN from `read()`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn open_tcp(ctx: *mut c_void) -> i32 {
    let slots = ctx.cast::<u64>();
    // SAFETY: the context is the kernel's `struct bpf_iter__tcp`; slot 1
    // is inside it, and the verifier checks the load against its type.
    let sk = unsafe { core::ptr::read_volatile(slots.add(CTX_SK)) };
    if sk == 0 {
        return 0;
    }
    // SAFETY: the helper takes any `struct sock_common *` and returns NULL
    // unless it is a full TCP socket (not TIME_WAIT, not a request).
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as u64;
    if tp == 0 {
        return 0;
    }
    let o = offsets();
    let state: u8 = btf_load(sk, off(&o.skc_state));
    if state == TCP_CLOSE {
        return 0;
    }
    let mut slot = MaybeUninit::<OpenTcp>::uninit();
    // SAFETY: the stack slot holds a whole `OpenTcp` (8-aligned, a whole
    // number of words), for which all zeroes is a value.
    unsafe { zero_words(slot.as_mut_ptr()) };
    // SAFETY: zeroed just above, so initialized.
    let r = unsafe { slot.assume_init_mut() };
    r.sk = sk;
    r.state = state;
    // SAFETY: byte 16 of the context is `uid` (see CTX_UID_BYTE).
    r.uid = unsafe { core::ptr::read_volatile(ctx.cast::<u8>().add(CTX_UID_BYTE).cast::<u32>()) };
    r.family = btf_load(sk, off(&o.skc_family));
    r.lport = btf_load(sk, off(&o.skc_num));
    r.rport = u16::from_be(btf_load(sk, off(&o.skc_dport)));
    if r.family == AF_INET {
        let l: u32 = btf_load(sk, off(&o.skc_rcv_saddr));
        let p: u32 = btf_load(sk, off(&o.skc_daddr));
        r.laddr[..4].copy_from_slice(&l.to_ne_bytes());
        r.raddr[..4].copy_from_slice(&p.to_ne_bytes());
    } else {
        r.laddr = btf_load16(sk, off(&o.skc_v6_rcv_saddr));
        r.raddr = btf_load16(sk, off(&o.skc_v6_daddr));
    }
    let net: u64 = btf_load(sk, off(&o.skc_net));
    if net != 0 {
        r.netns = btf_load(net, off(&o.net_ns_inum));
    }
    let sk_flags: u64 = btf_load(sk, off(&o.skc_flags));
    if (sk_flags >> (frozen(&o.sock_done_bit) & 63)) & 1 != 0 {
        r.flags |= open_tcp_flags::FIN_RECEIVED;
    }
    r.bytes_acked = btf_load(tp, off(&o.bytes_acked));
    r.bytes_received = btf_load(tp, off(&o.bytes_received));
    r.write_seq = btf_load(tp, off(&o.write_seq));
    r.snd_una = btf_load(tp, off(&o.snd_una));
    r.rcv_nxt = btf_load(tp, off(&o.rcv_nxt));
    r.copied_seq = btf_load(tp, off(&o.copied_seq));
    r.segs_in = btf_load(tp, off(&o.segs_in));
    r.segs_out = btf_load(tp, off(&o.segs_out));
    r.total_retrans = btf_load(tp, off(&o.total_retrans));
    r.srtt_us = btf_load(tp, off(&o.srtt_us));
    r.mdev_us = btf_load(tp, off(&o.mdev_us));
    // The socket's inode, through three pointers any of which may be NULL
    // (no `struct socket` yet for a socket waiting in the accept queue, no
    // file once the process closed it): each is BTF-typed, and a load
    // through NULL reads 0 (see `btf_load`), so the chain needs no checks
    // for safety, only to stop early.
    let socket: u64 = btf_load(tp, off(&o.sk_socket));
    if socket != 0 {
        let file: u64 = btf_load(socket, off(&o.socket_file));
        if file != 0 {
            let inode: u64 = btf_load(file, off(&o.file_inode));
            if inode != 0 {
                let ino: u64 = btf_load(inode, off(&o.inode_ino));
                // sockfs inode numbers are 32-bit (see `OpenTcp::ino`).
                r.ino = ino as u32;
            }
        }
    }
    // SAFETY: slot 0 of the context is the `struct bpf_iter_meta *`.
    let meta = unsafe { core::ptr::read_volatile(slots.add(CTX_META)) };
    // `meta->seq`, the iterator's `struct seq_file *`, its first member.
    let seq: u64 = btf_load(meta, 0);
    // SAFETY: `seq` is the iterator's seq_file (the verifier checks its
    // type); the record is ours, on the stack, `OpenTcp::SIZE` bytes. A
    // full buffer makes the kernel retry this socket in the next read,
    // so the result needs no handling.
    unsafe {
        bpf_seq_write(
            seq as *mut seq_file,
            (r as *const OpenTcp).cast(),
            OpenTcp::SIZE as u32,
        )
    };
    0
}
