//! The Collector's `memory_limiter`, as a limit on the agent's heap.
//!
//! A monitor thread measures the heap every `check_interval` and writes the
//! result into the context's [`MemoryPressure`]:
//! - below the soft limit (`limit - spike`): [`Pressure::Normal`];
//! - above it: [`Pressure::Soft`]; the `ebpf` receiver then tracks no new
//!   flow, counting each as `flowscope.events.lost{flowscope.reason=
//!   memory_limit}` (flows already tracked go on being reported, so the
//!   heap stops growing with new peers while nothing already measured is
//!   lost);
//! - above the hard limit: [`Pressure::Hard`]; new flows are refused as
//!   above, the allocator is asked to return freed memory to the system
//!   (`malloc_trim`, the counterpart of the Collector's forced garbage
//!   collection) and a warning is logged when the heap crosses it.
//!
//! **What is measured.** The heap in use as glibc's allocator reports it
//! (`mallinfo2`: bytes in allocated chunks of every arena, plus chunks
//! served by `mmap`), which is what the agent's own data structures take;
//! the eBPF maps and ring buffers live in the kernel and are bounded by
//! `max_tracked_flows` and `ring_buffer_bytes`. `mallinfo2` walks every
//! arena, a few microseconds, done once per `check_interval` on the
//! monitor's own thread.
//!
//! **Bursts.** The receiver meets new peers in bursts (it reads the
//! kernel's flow maps once per collection interval), far faster than any
//! `check_interval`. So each check also gives a *room*: how many new flows
//! fit below the soft limit at the heap [`FlowCost`] estimates one flow to
//! take. The receiver refuses (and counts) new flows once the room is used
//! up, until the next check. The estimate starts at
//! [`FlowCost::INITIAL`] and learns from the heap's growth after
//! admissions (see [`FlowCost`]), so one burst adds about the room left,
//! not the whole burst. Flows admitted since a pipeline last noted its
//! peak (below) are taken off the room: their series and export are still
//! to come, so checks 50 ms apart cannot each hand out a fresh room within
//! one collection interval.
//!
//! **Peaks.** An interval's batch, processed and encoded for every
//! exporter, is the heap's peak and is freed within milliseconds, between
//! two checks. So each pipeline notes the heap once per batch, right after
//! submitting it to its exporters ([`MemoryPressure::note_heap`], only
//! while a limiter watches), and a check takes the higher of the heap then
//! and the peak noted since the last one.
//!
//! **Percentages** are of the memory available to the agent: its cgroup's
//! `memory.max` (cgroup v2) when set, else the host's `MemTotal`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowscope_model::{MemoryPressure, Pressure};
use flowscope_otel_config::processors::MemoryLimiterConfig;

/// The limits in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub soft: u64,
    pub hard: u64,
}

impl Limits {
    /// The limits of `c` given `available` bytes.
    pub fn of(c: &MemoryLimiterConfig, available: u64) -> Limits {
        let hard = c.limit.bytes(available);
        let spike = c.spike.bytes(available);
        Limits {
            soft: hard.saturating_sub(spike),
            hard,
        }
    }

    /// The pressure at `heap` bytes.
    pub fn pressure(&self, heap: u64) -> Pressure {
        if heap >= self.hard {
            Pressure::Hard
        } else if heap >= self.soft {
            Pressure::Soft
        } else {
            Pressure::Normal
        }
    }
}

/// Memory available to the agent: the cgroup v2 limit when set, else the
/// host's total.
pub fn available_memory() -> u64 {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .and_then(|path| {
            std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.max", path.trim())).ok()
        })
        .and_then(|v| v.trim().parse::<u64>().ok());
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })
    });
    match (cgroup, total) {
        (Some(c), Some(t)) => c.min(t),
        (Some(c), None) => c,
        (None, Some(t)) => t,
        (None, None) => u64::MAX,
    }
}

/// The running monitor; stops when the last handle is dropped.
pub struct MemoryLimiter {
    stop: Arc<AtomicBool>,
    limits: Limits,
}

impl MemoryLimiter {
    /// Starts the monitor thread, which writes `pressure`.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(c: &MemoryLimiterConfig, pressure: MemoryPressure) -> std::io::Result<Self> {
        let limits = Limits::of(c, available_memory());
        let stop = Arc::new(AtomicBool::new(false));
        let every = c.check_interval;
        let stopping = stop.clone();
        tracing::info!(
            soft_bytes = limits.soft,
            hard_bytes = limits.hard,
            "memory_limiter: watching the heap every {every:?}"
        );
        std::thread::Builder::new()
            .name("flowscope-memlimit".into())
            .spawn(move || monitor(limits, every, &pressure, &stopping))?;
        Ok(MemoryLimiter { stop, limits })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The heap one new flow is estimated to take, learnt from the heap's
/// growth after flows were admitted.
///
/// A flow's memory is not all taken when it is admitted: its series, its
/// batch and its export come at the end of the collection interval, one or
/// more checks later. So growth is charged to the flows admitted
/// *recently* (a count that halves every check), and the estimate is the
/// highest recent charge (at most [`FlowCost::CEILING`]), decaying by 1/16
/// a check towards [`FlowCost::FLOOR`] so that one spike from elsewhere (a
/// UI query, an export retry) does not refuse flows for long.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowCost {
    per_flow: u64,
    recent: u64,
    last_heap: Option<u64>,
}

impl Default for FlowCost {
    fn default() -> Self {
        Self {
            per_flow: Self::INITIAL,
            recent: 0,
            last_heap: None,
        }
    }
}

impl FlowCost {
    /// The estimate before anything was learnt. In the end-to-end test
    /// (file exporter, 50,000 new peers) a tracked flow took about 10 KiB
    /// at the heap's peak: its table entries and series, and its share of
    /// the interval's batch and encodings.
    pub const INITIAL: u64 = 16 << 10;
    /// The lowest estimate: below it, a quiet spell would let one burst in
    /// whole (the estimate decays every check, and checks may be 50 ms
    /// apart).
    pub const FLOOR: u64 = 8 << 10;
    /// The highest: growth from elsewhere charged to a few recent flows
    /// (the previous interval's batch being encoded) must not shut new
    /// flows out for long.
    pub const CEILING: u64 = 64 << 10;

    /// Bytes one new flow is estimated to take now.
    pub fn per_flow(&self) -> u64 {
        self.per_flow
    }

    /// Learns from a check: the heap now, and the flows admitted since the
    /// previous check.
    pub fn learn(&mut self, heap: u64, admitted: u64) {
        self.recent = self.recent / 2 + admitted;
        let decayed = (self.per_flow - self.per_flow / 16).max(Self::FLOOR);
        let grown = self.last_heap.map_or(0, |last| heap.saturating_sub(last));
        self.last_heap = Some(heap);
        let charged = match self.recent {
            0 => 0,
            n => grown / n,
        };
        self.per_flow = decayed.max(charged.min(Self::CEILING));
    }

    /// New flows that fit between `heap` and `soft`.
    pub fn room(&self, heap: u64, soft: u64) -> u64 {
        soft.saturating_sub(heap) / self.per_flow
    }
}

fn monitor(limits: Limits, every: Duration, pressure: &MemoryPressure, stop: &AtomicBool) {
    let mut cost = FlowCost::default();
    let mut admitted = 0;
    // Flows admitted since a pipeline last noted its peak: most of their
    // memory (series, batch, encodings) comes with the interval's batch,
    // so until then they still take room the heap does not show.
    let mut unpaid: u64 = 0;
    pressure.watch();
    while !stop.load(Ordering::Relaxed) {
        // The heap now, or the peak a pipeline noted since the last check
        // if higher: an interval's batch, processed and encoded, is freed
        // again within milliseconds.
        let peak = pressure.take_peak();
        let heap = flowscope_model::memory::heap().in_use.max(peak);
        unpaid = if peak > 0 {
            admitted
        } else {
            unpaid + admitted
        };
        let now = limits.pressure(heap);
        cost.learn(heap, admitted);
        let room = match now {
            Pressure::Normal => cost.room(heap, limits.soft).saturating_sub(unpaid),
            _ => 0,
        };
        tracing::debug!(
            heap_bytes = heap,
            flow_bytes = cost.per_flow(),
            room,
            "memory_limiter: heap measured"
        );
        let (before, n) = pressure.set(now, room);
        admitted = n;
        if now == Pressure::Hard {
            flowscope_model::memory::release_free();
            if before != Pressure::Hard {
                tracing::warn!(
                    heap_bytes = heap,
                    hard_limit_bytes = limits.hard,
                    "memory_limiter: the heap is above the hard limit; new flows are refused \
                     and freed memory returned to the system"
                );
            }
        } else if now == Pressure::Soft && before == Pressure::Normal {
            tracing::warn!(
                heap_bytes = heap,
                soft_limit_bytes = limits.soft,
                "memory_limiter: the heap is above the soft limit; new flows are refused"
            );
        } else if now == Pressure::Normal && before != Pressure::Normal {
            tracing::info!(
                heap_bytes = heap,
                "memory_limiter: the heap is below the soft limit again; new flows are tracked"
            );
        }
        std::thread::sleep(every);
    }
    pressure.reset();
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_otel_config::processors::MemoryLimit;

    #[test]
    fn limits_follow_the_collector() {
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit: MemoryLimit::Mib(200),
            spike: MemoryLimit::Mib(40),
        };
        let l = Limits::of(&c, 0);
        assert_eq!(l.hard, 200 << 20);
        assert_eq!(l.soft, 160 << 20);
        assert_eq!(l.pressure((160 << 20) - 1), Pressure::Normal);
        assert_eq!(l.pressure(160 << 20), Pressure::Soft);
        assert_eq!(l.pressure(200 << 20), Pressure::Hard);
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit: MemoryLimit::Percent(80),
            spike: MemoryLimit::Percent(25),
        };
        assert_eq!(
            Limits::of(&c, 1000),
            Limits {
                soft: 550,
                hard: 800
            }
        );
    }

    #[test]
    fn the_flow_cost_learns_from_growth_after_admissions_and_decays() {
        let mut c = FlowCost::default();
        assert_eq!(c.per_flow(), FlowCost::INITIAL);
        assert_eq!(c.room(100 << 20, 101 << 20), (1 << 20) / FlowCost::INITIAL);
        assert_eq!(c.room(102 << 20, 101 << 20), 0);
        c.learn(100 << 20, 0);
        // 1000 flows admitted; their memory shows one check later.
        c.learn(100 << 20, 1000);
        let decayed = FlowCost::INITIAL - FlowCost::INITIAL / 16;
        assert_eq!(c.per_flow(), decayed - decayed / 16);
        c.learn((100 << 20) + 500 * 32 * 1024, 0);
        // 500 recent flows (1000 halved) charged 16 MB: 32 KiB each.
        assert_eq!(c.per_flow(), 32 << 10);
        // 20 MB charged to the 250 left: capped at the ceiling.
        c.learn((120 << 20) + 500 * 32 * 1024, 0);
        assert_eq!(c.per_flow(), FlowCost::CEILING);
        // Nothing admitted, nothing grown: back towards the floor.
        for _ in 0..200 {
            c.learn((120 << 20) + 500 * 32 * 1024, 0);
        }
        assert_eq!(c.per_flow(), FlowCost::FLOOR);
    }

    #[test]
    fn the_heap_measure_sees_an_allocation() {
        // Other tests of this binary allocate at the same time: margins.
        let before = flowscope_model::memory::heap().in_use;
        let big = std::hint::black_box(vec![1_u8; 64 << 20]);
        let during = flowscope_model::memory::heap().in_use;
        assert!(during >= before + (48 << 20), "{before} -> {during}");
        drop(big);
        let after = flowscope_model::memory::heap().in_use;
        assert!(after + (48 << 20) <= during, "{during} -> {after}");
        assert!(available_memory() > 0);
    }

    #[test]
    fn the_monitor_sets_the_pressure_and_resets_it_when_stopped() {
        let p = MemoryPressure::new();
        // Whatever else the test process holds, the heap is above 1 MiB.
        let ballast = vec![1_u8; 4 << 20];
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_millis(10),
            limit: MemoryLimit::Mib(1),
            spike: MemoryLimit::Mib(0),
        };
        let m = MemoryLimiter::start(&c, p.clone()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while p.get() != Pressure::Hard {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!p.admit());
        drop(m);
        drop(ballast);
        while p.get() != Pressure::Normal {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
