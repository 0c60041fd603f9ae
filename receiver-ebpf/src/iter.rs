//! How user space reads the open connections of the BTF-typed set: their
//! records live in the sockets (`CONN_STORE`), which no syscall can list,
//! so a BPF iterator over the map does.
//!
//! An `iter/bpf_sk_storage_map` program runs once per socket that holds a
//! record in the map the iterator link names (under RCU, bucket by bucket
//! of the map's own list of its storages), and what it writes with
//! `bpf_seq_write` is what a `read()` of the iterator's file returns. It
//! writes each connection as its socket address (the key of the close
//! event and of user space's table, as in `CONNS`) followed by the `Conn`:
//! [`flowscope_common::ConnRecord`]. The kernel keeps the output of one
//! run whole: a run that does not fit in what is left of the read's buffer
//! is run again for the next read.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_seq_write;
use flowscope_common::Conn;

/// One record of the iterator (`struct bpf_iter__bpf_sk_storage_map`, the
/// context the kernel passes): four pointers.
#[repr(C)]
struct IterContext {
    /// `struct bpf_iter_meta *`, whose first field is the `seq_file *`.
    meta: *const *mut c_void,
    /// `struct bpf_map *`.
    _map: *const c_void,
    /// `struct sock *`, null at the end of the walk.
    sk: u64,
    /// The record in the socket's storage (`Conn`), null at the end.
    value: *const Conn,
}

// SAFETY: no other symbol is named conn_records; user space loads the
// program by this name.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_sk_storage_map")]
pub fn conn_records(ctx: *mut c_void) -> i32 {
    let ctx = ctx.cast::<IterContext>();
    // SAFETY: `ctx` is the iterator context above; the verifier checks
    // each load against the iterator's BTF (8-byte loads at the members'
    // offsets).
    let (meta, sk, value) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx).meta),
            core::ptr::read_volatile(&raw const (*ctx).sk),
            core::ptr::read_volatile(&raw const (*ctx).value),
        )
    };
    if sk == 0 || value.is_null() {
        return 0;
    }
    // SAFETY: `meta` is the kernel's `struct bpf_iter_meta`, non-null in
    // every run; its first member is the seq_file.
    let seq = unsafe { core::ptr::read_volatile(meta) };
    let key = sk;
    // SAFETY: the helper copies `len` bytes from each source into the
    // seq_file's buffer: the key on our stack, then the record (the
    // verifier checks it against the map's value size).
    unsafe {
        if bpf_seq_write(seq.cast(), (&raw const key).cast(), 8) == 0 {
            bpf_seq_write(
                seq.cast(),
                value.cast(),
                core::mem::size_of::<Conn>() as u32,
            );
        }
    }
    0
}
