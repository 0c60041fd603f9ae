//! What flowscope's eBPF programs share: the flow programs (`flowscope-flows`,
//! src/main.rs), DNS (`src/bin/dns.rs`), drops (`src/bin/drops.rs`) and
//! the floor (`src/bin/floor.rs`). receiver/build.rs builds them for the
//! bpf target; on the host this crate is an empty build dependency of
//! receiver, so cargo rebuilds the objects when it changes.
//!
//! Every helper here is `#[inline(always)]`: a BPF object calls no
//! function of another crate, so each lands in its caller's program.
//!
//! The few places where the programs step outside what the compiler can
//! check are here, each with the one note that says why it holds:
//! - [`map_value`], the value a map lookup points at;
//! - [`frozen`], a field of the read-only data user space fills before
//!   load;
//! - [`atomic_add`], a counter other CPUs add to at the same time;
//! - [`zero_words`], a record zeroed in place;
//! - [`btf_load`], a load through a BTF-typed kernel pointer;
//! - [`probe_read`], a copy of kernel memory the helper checks;
//! - [`now_ns`], [`jiffies`] and [`socket_cookie`], kernel helpers.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod bpf {
    use core::ffi::c_void;

    use aya_ebpf::helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_socket_cookie, bpf_jiffies64, bpf_ktime_get_ns},
    };

    /// The value behind a pointer a map lookup (`get_ptr_mut`) returned,
    /// for the rest of the program's run.
    ///
    /// The kernel hands out a pointer into the map's value (for a per-CPU
    /// map, this CPU's copy) and keeps the entry's memory alive until the
    /// program returns, even if another CPU deletes the entry meanwhile
    /// (programs run under RCU). Another CPU may write the same value at
    /// the same time: counters several CPUs add to use [`atomic_add`]; the
    /// other fields are last-writer-wins by design.
    #[inline(always)]
    pub fn map_value<'a, T>(ptr: *mut T) -> &'a mut T {
        // SAFETY: `ptr` is what a lookup returned when it found the key: a
        // non-null, aligned pointer to a live `T` (the map was declared
        // with this value type), valid until the program returns (see
        // above); the reference does not outlive the program's run.
        unsafe { &mut *ptr }
    }

    /// A field of the read-only data user space fills before load
    /// (`OFFSETS`, `SETTINGS`, `DNS_PORT_SET`, `DROP_OFFSETS`).
    ///
    /// Read volatile, so the compiler does not fold the zero placeholder
    /// it was compiled with; the verifier reads the value from the frozen
    /// read-only map, so to it an offset is a known constant.
    #[inline(always)]
    pub fn frozen<T: Copy>(field: &T) -> T {
        // SAFETY: `field` is a reference, so aligned, initialized and
        // readable; volatile only keeps the load.
        unsafe { core::ptr::read_volatile(field) }
    }

    /// A field of the read-only data as a byte offset.
    #[inline(always)]
    pub fn off(field: &u32) -> u64 {
        u64::from(frozen(field))
    }

    /// `*v += n` as one BPF atomic add: `v` is a counter in a map value
    /// that programs on other CPUs add to at the same time. core's
    /// `AtomicU64` has no `fetch_add` on the bpf target; the intrinsic
    /// lowers to the BPF atomic add instruction.
    #[inline(always)]
    pub fn atomic_add(v: &mut u64, n: u64) {
        // SAFETY: `v` is a reference (into a map value), aligned to 8
        // bytes as the instruction needs.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                v, n,
            );
        }
    }

    /// Writes zeroes over the `T` at `p`, one 8-byte store per word.
    /// `T::default()` or `mem::zeroed()` compile to calls of the object's
    /// `memset`, which stores a byte per loop iteration (about 200
    /// instructions for a 48-byte record); volatile keeps these stores
    /// from being merged back into such a call. `T` must be 8-aligned and
    /// a multiple of 8 bytes long (checked when the program is compiled).
    ///
    /// # Safety
    /// `p` points at memory of ours that holds a whole `T` (a stack slot or
    /// a reserved ring buffer record); all zeroes must be a valid `T`.
    #[inline(always)]
    pub unsafe fn zero_words<T>(p: *mut T) {
        const {
            assert!(
                core::mem::align_of::<T>() >= 8 && core::mem::size_of::<T>() % 8 == 0,
                "zero_words needs an 8-aligned record a whole number of words long"
            )
        };
        let w = p.cast::<u64>();
        for i in 0..core::mem::size_of::<T>() / 8 {
            // SAFETY: within the `T` at `p` (the caller's promise), and
            // aligned (checked above).
            unsafe { core::ptr::write_volatile(w.add(i), 0) };
        }
    }

    /// A `T` (1, 2, 4 or 8 bytes) at `base + offset`, where `base` is a
    /// BTF-typed kernel pointer (a `tp_btf` program's argument, or one
    /// read through it): one load instruction, which the verifier checks
    /// against the pointer type's BTF (the offset must fall inside the
    /// type) and the JIT guards with a fault handler (a faulting load
    /// reads 0 instead of oopsing).
    #[inline(always)]
    pub fn btf_load<T: Copy>(base: u64, offset: u64) -> T {
        // SAFETY: the verifier rejects the program unless `base` is a
        // BTF-typed pointer and the load stays inside its type; a fault
        // at run time reads 0 (see above).
        unsafe { core::ptr::read_volatile((base + offset) as *const T) }
    }

    /// 16 bytes (an IPv6 address) at `base + offset` of a BTF-typed
    /// pointer: two 8-byte loads, since the verifier accepts scalar loads
    /// anywhere inside an array member.
    #[inline(always)]
    pub fn btf_load16(base: u64, offset: u64) -> [u8; 16] {
        let a: u64 = btf_load(base, offset);
        let b: u64 = btf_load(base, offset + 8);
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&a.to_ne_bytes());
        v[8..].copy_from_slice(&b.to_ne_bytes());
        v
    }

    /// A copy of the `T` at kernel address `addr` (`bpf_probe_read_kernel`):
    /// for pointers the verifier sees as plain numbers (classic
    /// tracepoints' fields, packet data behind `skb->head`). A bad address
    /// is an error, not a fault.
    #[inline(always)]
    pub fn probe_read<T>(addr: u64) -> Result<T, i32> {
        // SAFETY: the helper checks the address and returns an error
        // instead of faulting; the copy lands in a value of ours.
        unsafe { bpf_probe_read_kernel(addr as *const T) }
    }

    /// Nanoseconds since boot (`CLOCK_MONOTONIC`), the clock of every time
    /// the programs record.
    #[inline(always)]
    pub fn now_ns() -> u64 {
        // SAFETY: a helper without arguments, allowed in every program
        // type flowscope uses.
        unsafe { bpf_ktime_get_ns() }
    }

    /// The kernel's tick counter (`jiffies`, HZ ticks a second): a clock
    /// far cheaper than [`now_ns`] for deciding whether a tick has passed.
    /// On a 64-bit JIT the verifier replaces the call with a load of the
    /// kernel's `jiffies` variable, so no helper runs.
    #[inline(always)]
    pub fn jiffies() -> u64 {
        // SAFETY: a helper without arguments, allowed in every program
        // type flowscope uses.
        unsafe { bpf_jiffies64() }
    }

    /// The socket's cookie (generated on first ask, then fixed for the
    /// socket's life): `ctx` is the program's context (sock_addr,
    /// cgroup_skb) or a `struct sock *` (BTF-typed raw tracepoints).
    #[inline(always)]
    pub fn socket_cookie(ctx: *mut c_void) -> u64 {
        // SAFETY: the verifier accepts the call only with a context or
        // socket pointer of a type the helper takes, and checks it.
        unsafe { bpf_get_socket_cookie(ctx) }
    }

    /// The programs have no path that panics (the verifier would reject
    /// the endless loop below); the handler only satisfies `no_std`.
    #[cfg(not(test))]
    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(target_arch = "bpf")]
pub use bpf::*;
