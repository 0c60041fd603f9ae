//! The tick's place on the monotonic clock.
//!
//! The frequent TCP records carry `bpf_jiffies64()` (on a 64-bit JIT the
//! verifier turns that helper into one load of the kernel's `jiffies`),
//! not `bpf_ktime_get_ns()`: a tick is cheaper to read, and 1/HZ (4 ms at
//! HZ 250) is fine for a connection's open time and duration. User space
//! needs one moment at which it knows both clocks to turn ticks into the
//! `bpf_ktime_get_ns()` time of everything else.
//!
//! [`clock_stamp`] is never attached: user space loads it and runs it once
//! with `BPF_PROG_TEST_RUN` (a raw tracepoint program runs there on the
//! calling CPU, with any arguments), then reads `CLOCK`. The two reads are a
//! few instructions apart in one program run, so the pair is exact to the
//! tick. This needs nothing the agent does not have already (no file of
//! /proc that a container masks, such as `/proc/timer_list`).

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use flowscope_common::ClockStamp;
use flowscope_ebpf::{jiffies, map_value, now_ns};

use crate::CLOCK;

/// Writes `jiffies` and the monotonic time, read back to back, into
/// `CLOCK`. The tracepoint name only matters for an attach, which user
/// space never does.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn clock_stamp(_ctx: RawTracePointContext) -> i32 {
    if let Some(v) = CLOCK.get_ptr_mut(0) {
        let v = map_value(v);
        let ticks = jiffies();
        let ns = now_ns();
        *v = ClockStamp {
            jiffies: ticks,
            ktime_ns: ns,
        };
    }
    0
}
