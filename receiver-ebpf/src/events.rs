//! What the flow programs tell user space through the `EVENTS` ring
//! buffer: TCP connections' starts and ends (records of their own size,
//! [`emit_rec`]), and the rare records as whole `Event`s ([`emit_in_place`]):
//! failed connects, listeners, late bytes, resets, and processes seen for
//! the first time.
//!
//! The kernel's ring buffer is shared by all CPUs: a program reserves a
//! record, fills it in place and submits it, and user space reads the
//! records in the order they were reserved. Submitting may wake user
//! space (an irq_work per wake-up): the frequent records never do, the
//! rare ones see [`wakeup`].

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use flowscope_common::{Conn, Event, counter, event_kind};
use flowscope_ebpf::{jiffies, map_value, zero_words};

use crate::{EVENTS, LAST_SEEN_PID, SEEN_PIDS, bump};

/// bpf_ringbuf_query/submit flags (include/uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake user space each time another this much is waiting; in between,
/// user space drains on its own timer (every 100 ms). Waking for every
/// close event cost most of the agent's CPU at 10,000 connections per
/// second.
const WAKE_BYTES: u64 = 64 * 1024;
/// What one `Event` takes in the ring buffer: an 8-byte header, rounded up
/// to 8 bytes.
const EVENT_RECORD_BYTES: u64 = (core::mem::size_of::<Event>() as u64 + 8 + 7) & !7;

// Records are zeroed word by word in place (#24): `Event::default()` or a
// struct assignment compiles to calls of the object's `memset`/`memmove`
// subprograms, which move one byte per instruction. `Event` is 8-aligned
// and a multiple of 8 bytes long.

/// Tells user space about a process the first time it owns a socket, so
/// /proc is read while the process still runs: short-lived clients keep
/// their executable name and service name.
#[inline(always)]
pub(crate) fn announce(tgid: u32, comm: &[u8; 16]) {
    announce_with(tgid, || *comm);
}

/// The calling process's id into `c`, its name only into the `PROCESS`
/// record that announces it (user space names the connection from that):
/// `bpf_get_current_comm` runs once per process instead of once per
/// connection.
#[inline(always)]
pub(crate) fn set_process_id(c: &mut Conn) {
    c.tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    announce_with(c.tgid, || bpf_get_current_comm().unwrap_or([0; 16]));
}

/// The calling process's tgid, announced as [`set_process_id`] does.
#[inline(always)]
pub(crate) fn process_id() -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    announce_with(tgid, || bpf_get_current_comm().unwrap_or([0; 16]));
    tgid
}

/// [`announce`], asking for the name only when the process is announced.
#[inline(always)]
fn announce_with(tgid: u32, comm: impl FnOnce() -> [u8; 16]) {
    if tgid == 0 {
        return;
    }
    let last = LAST_SEEN_PID.get_ptr_mut(0);
    if let Some(last) = last {
        let last = map_value(last);
        if *last == tgid {
            return;
        }
        *last = tgid;
    }
    if SEEN_PIDS.get_ptr(&tgid).is_some() {
        return;
    }
    let _ = SEEN_PIDS.insert(&tgid, &1, 0);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: `ev` is the reserved record, a whole `Event`, ours
            // until submitted.
            unsafe {
                zero_words(ev);
                (*ev).kind = event_kind::PROCESS;
                (*ev).conn.tgid = tgid;
                (*ev).conn.comm = comm();
            }
            // Forced: records submitted without a wakeup may be pending, and
            // the adaptive default would then not wake user space at all.
            entry.submit(BPF_RB_FORCE_WAKEUP);
        }
        None => bump(counter::RINGBUF_FULL),
    }
}

/// The submit flag for a record just reserved: a wake-up only when this
/// record took the waiting data across a multiple of [`WAKE_BYTES`].
///
/// Waking for every record while more than `WAKE_BYTES` wait (as before)
/// queues an irq_work per record whenever user space is slow to run, and on
/// a virtual machine each one is an APIC write that exits to the
/// hypervisor: it was most of `inet_sock_set_state`'s cost under load. Two
/// CPUs reserving at once may both miss the crossing; the timer drains
/// what they wrote.
#[inline(always)]
fn wakeup() -> u64 {
    // Producer minus consumer position, this record included.
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    if avail / WAKE_BYTES != avail.saturating_sub(EVENT_RECORD_BYTES) / WAKE_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends a record of type `T`, its own size, built in place by `fill`,
/// which must write every byte (nothing is zeroed first); `fill` returning
/// false discards it. `ends` counts it as a connection's end
/// (`CONNS_ENDED`). No wake-up (see the body).
#[inline(always)]
pub(crate) fn emit_rec<T: 'static>(ends: bool, fill: impl FnOnce(&mut T) -> bool) -> bool {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            // SAFETY: the reserved record, a whole `T`, ours until submitted
            // or discarded; `fill` writes all of it before it is read.
            let r = unsafe { &mut *entry.as_mut_ptr() };
            if !fill(r) {
                entry.discard(0);
                return false;
            }
            // No wake-up and no bpf_ringbuf_query: user space drains on its
            // 100 ms timer, and the ring holds 100 ms of the peak rate (4 MiB
            // by default: 160,000 connections a second at 248 bytes each).
            entry.submit(BPF_RB_NO_WAKEUP);
            if ends {
                bump(counter::CONNS_ENDED);
            }
            true
        }
        None => {
            bump(counter::RINGBUF_FULL);
            false
        }
    }
}

/// Sends a ring buffer event for `sk` built in place: the record is
/// zeroed, given its kind, socket and time, and `fill` writes the rest
/// into it (no copy through the stack). `fill` returning false (a kernel
/// read failed) discards the record. A full ring buffer is counted.
#[inline(always)]
pub(crate) fn emit_in_place(kind: u32, sk: u64, fill: impl FnOnce(&mut Event) -> bool) -> bool {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: `ev` is the reserved record, a whole `Event`, ours
            // until submitted or discarded; all zeroes is an `Event`.
            let ev = unsafe {
                zero_words(ev);
                &mut *ev
            };
            ev.kind = kind;
            ev.sk = sk;
            // The tick, not bpf_ktime_get_ns: on a 64-bit JIT the verifier
            // inlines bpf_jiffies64 as one load; user space turns ticks into
            // time (crate::clock).
            ev.ts_ns = jiffies();
            if !fill(ev) {
                entry.discard(0);
                return false;
            }
            entry.submit(wakeup());
            if kind == event_kind::FAILED {
                bump(counter::CONNS_ENDED);
            }
            true
        }
        None => {
            bump(counter::RINGBUF_FULL);
            false
        }
    }
}
