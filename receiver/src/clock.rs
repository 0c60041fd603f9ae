//! The kernel tick's rate and its place on the monotonic clock, measured
//! once at start-up for [`crate::tcp_join::TickClock`].
//!
//! The TCP records carry `jiffies` (see receiver-ebpf/src/clock.rs for why),
//! and the collector wants `bpf_ktime_get_ns()` time (CLOCK_MONOTONIC), so
//! user space needs two facts:
//!
//! - **HZ.** `clock_getres(CLOCK_MONOTONIC_COARSE)` returns the kernel's
//!   `TICK_NSEC` (`LOW_RES_NSEC`), which is `(1e9 + HZ/2) / HZ`: 4,000,000
//!   at HZ 250, 3,333,333 at HZ 300. The coarse clock is the time as of the
//!   last tick, so its resolution is one tick. `sysconf(_SC_CLK_TCK)` would
//!   be wrong: that is USER_HZ (100), the unit of /proc's times.
//! - **An anchor**, one tick value and the monotonic time at the same
//!   moment. The flow object's `clock_stamp` program reads both back to
//!   back; user space runs it once with `BPF_PROG_TEST_RUN` and reads them
//!   from its `CLOCK` map. `/proc/timer_list` prints both clocks too, but
//!   it is root's alone and container runtimes mask it (an empty file
//!   under podman, runc and Kubernetes' default `procMount`), so the agent
//!   does not use it.
//!
//! jiffies follow the monotonic clock (the tick advances them from it), so
//! one anchor serves the agent's whole life, and a tick is read at most one
//! tick late.

use aya::Ebpf;
use aya::maps::{Array, MapData};
use aya::programs::RawTracePointRunOptions;
use aya::programs::{ProgramError, RawTracePoint, TestRun};
use flowscope_common::ClockStamp;
use thiserror::Error;

use crate::tcp_join::{JoinError, TickClock};

/// Why the tick clock could not be measured.
#[derive(Debug, Error)]
pub enum ClockError {
    #[error("clock_getres(CLOCK_MONOTONIC_COARSE), which gives the kernel's tick length")]
    Resolution(#[source] std::io::Error),
    #[error(
        "CLOCK_MONOTONIC_COARSE has a resolution of {ns} ns, which is not a kernel tick (HZ 24 to 10,000)"
    )]
    NotATick { ns: u64 },
    #[error("eBPF program `clock_stamp` is missing from the flow object (a build problem)")]
    MissingProgram,
    #[error("eBPF map `CLOCK` is missing from the flow object (a build problem)")]
    MissingMap,
    #[error("loading eBPF program `clock_stamp`")]
    Load(#[source] ProgramError),
    #[error("running eBPF program `clock_stamp` once (BPF_PROG_TEST_RUN)")]
    Run(#[source] ProgramError),
    #[error("reading eBPF map `CLOCK` after `clock_stamp` ran")]
    Read(#[source] aya::maps::MapError),
    #[error("`clock_stamp` ran but left `CLOCK` empty (jiffies {jiffies}, ktime {ktime_ns} ns)")]
    Empty { jiffies: u64, ktime_ns: u64 },
    #[error("the measured tick rate")]
    Clock(#[source] JoinError),
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec of ours.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// HZ from the length of a tick in ns (`TICK_NSEC`, rounded to the
/// nearest ns by the kernel): the rate whose tick length rounds to it.
pub fn hz_from_tick_ns(ns: u64) -> Result<u32, ClockError> {
    // 41.7 ms is HZ 24, below any kernel's (100 is the least); 100 us is
    // HZ 10,000, above any (1,000 is the most).
    if !(100_000..=41_666_667).contains(&ns) {
        return Err(ClockError::NotATick { ns });
    }
    let hz = (1_000_000_000 + ns / 2) / ns;
    // The kernel's TICK_NSEC for that HZ must give `ns` back.
    if (1_000_000_000 + hz / 2) / hz != ns {
        return Err(ClockError::NotATick { ns });
    }
    Ok(hz as u32)
}

/// The kernel's HZ, from the coarse clock's resolution.
pub fn kernel_hz() -> Result<u32, ClockError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return Err(ClockError::Resolution(std::io::Error::last_os_error()));
    }
    let ns = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    hz_from_tick_ns(ns)
}

/// Runs the flow object's `clock_stamp` once and reads what it stamped:
/// a tick and the monotonic time at one moment. The program is unloaded
/// again (it is never attached).
pub fn stamp(ebpf: &mut Ebpf) -> Result<ClockStamp, ClockError> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut("clock_stamp")
        .ok_or(ClockError::MissingProgram)?
        .try_into()
        .map_err(ClockError::Load)?;
    prog.load().map_err(ClockError::Load)?;
    let run = prog.test_run(RawTracePointRunOptions::new());
    let _ = prog.unload();
    run.map_err(ClockError::Run)?;
    let map = ebpf.map("CLOCK").ok_or(ClockError::MissingMap)?;
    let clock: Array<&MapData, ClockStamp> = Array::try_from(map).map_err(ClockError::Read)?;
    let s = clock.get(&0, 0).map_err(ClockError::Read)?;
    if s.jiffies == 0 || s.ktime_ns == 0 {
        return Err(ClockError::Empty {
            jiffies: s.jiffies,
            ktime_ns: s.ktime_ns,
        });
    }
    Ok(s)
}

/// The tick clock of this kernel: [`kernel_hz`] and one [`stamp`].
pub fn measure(ebpf: &mut Ebpf) -> Result<TickClock, ClockError> {
    let hz = kernel_hz()?;
    let s = stamp(ebpf)?;
    TickClock::new(hz, s.jiffies, s.ktime_ns).map_err(ClockError::Clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_from_the_kernels_tick_lengths() {
        // TICK_NSEC for each HZ the kernel offers (kernel/Kconfig.hz).
        for (ns, hz) in [
            (10_000_000, 100),
            (4_000_000, 250),
            (3_333_333, 300),
            (1_000_000, 1000),
        ] {
            assert_eq!(hz_from_tick_ns(ns).unwrap(), hz, "{ns} ns");
        }
    }

    #[test]
    fn a_resolution_that_is_no_tick_is_an_error() {
        for ns in [0, 1, 99_999, 3_333_000, 50_000_000] {
            let e = hz_from_tick_ns(ns).unwrap_err();
            assert!(
                matches!(e, ClockError::NotATick { ns: n } if n == ns),
                "{ns}"
            );
            assert!(e.to_string().contains(&format!("{ns} ns")), "{e}");
        }
    }

    #[test]
    fn this_kernels_hz_is_a_kernel_choice() {
        // On any Linux the coarse clock's resolution is a tick.
        let hz = kernel_hz().unwrap();
        assert!([100, 250, 300, 1000].contains(&hz), "HZ {hz}");
    }
}
