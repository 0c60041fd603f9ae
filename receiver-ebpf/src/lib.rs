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
//! - [`now_ns`] and [`socket_cookie`], kernel helpers.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod bpf {
    use core::ffi::c_void;

    use aya_ebpf::helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_ns};

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

    /// Nanoseconds since boot (`CLOCK_MONOTONIC`), the clock of every time
    /// the programs record.
    #[inline(always)]
    pub fn now_ns() -> u64 {
        // SAFETY: a helper without arguments, allowed in every program
        // type flowscope uses.
        unsafe { bpf_ktime_get_ns() }
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
