//! The agent's memory pressure, as the `memory_limiter` processor last
//! measured it: a shared service of the [`crate::Context`]. The limiter
//! writes it every `check_interval`; the `ebpf` receiver asks it before it
//! tracks a new flow ([`MemoryPressure::admit`]) and refuses (and counts,
//! as `flowscope.events.lost{flowscope.reason=memory_limit}`) while the
//! heap is above the soft limit, or while the flows admitted since the
//! last check have used up the room left below it. Without a
//! `memory_limiter` it stays [`Pressure::Normal`] with an unlimited room,
//! and costs two relaxed atomic operations per new flow.
//!
//! **Why a room, and not only the pressure.** The receiver reads the
//! kernel's flow maps once per collection interval, so new peers arrive in
//! bursts: tens of thousands within a few milliseconds, far inside one
//! `check_interval`. A pressure measured before the burst would admit all
//! of it; the room bounds what one burst can add to what the limiter
//! estimates one flow costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};

/// Where the heap is relative to the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Pressure {
    /// Below the soft limit: new flows are accepted while there is room.
    Normal = 0,
    /// Above the soft limit: new flows are refused.
    Soft = 1,
    /// Above the hard limit: new flows are refused, and the agent returns
    /// freed memory to the system.
    Hard = 2,
}

impl Pressure {
    fn of(v: u8) -> Pressure {
        match v {
            0 => Pressure::Normal,
            1 => Pressure::Soft,
            _ => Pressure::Hard,
        }
    }
}

#[derive(Debug)]
struct Shared {
    pressure: AtomicU8,
    /// New flows that may still be admitted before the next check; may go
    /// below zero by the refusals counted against it.
    room: AtomicI64,
    /// The room the last measurement gave.
    given: AtomicI64,
    /// Whether a limiter measures (pipelines then note their peaks).
    watched: AtomicBool,
    /// The highest heap a pipeline noted since the last measurement.
    peak: AtomicU64,
}

/// Shared memory pressure. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MemoryPressure(Arc<Shared>);

impl Default for MemoryPressure {
    fn default() -> Self {
        Self(Arc::new(Shared {
            pressure: AtomicU8::new(Pressure::Normal as u8),
            room: AtomicI64::new(i64::MAX),
            given: AtomicI64::new(i64::MAX),
            watched: AtomicBool::new(false),
            peak: AtomicU64::new(0),
        }))
    }
}

impl MemoryPressure {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pressure last measured.
    pub fn get(&self) -> Pressure {
        Pressure::of(self.0.pressure.load(Ordering::Relaxed))
    }

    /// Whether one new flow may be tracked now: the heap was below the
    /// soft limit at the last check and the room left then is not used up.
    /// Each call that returns `true` takes one flow's room.
    pub fn admit(&self) -> bool {
        if self.0.pressure.load(Ordering::Relaxed) != Pressure::Normal as u8 {
            return false;
        }
        self.0.room.fetch_sub(1, Ordering::Relaxed) > 0
    }

    /// Records a measurement and the room for new flows until the next one;
    /// returns the previous pressure and how many flows were admitted since
    /// the previous measurement.
    pub fn set(&self, p: Pressure, room: u64) -> (Pressure, u64) {
        let before = Pressure::of(self.0.pressure.swap(p as u8, Ordering::Relaxed));
        let room = i64::try_from(room).unwrap_or(i64::MAX);
        // Only the limiter's thread writes: `given` and `room` change
        // together as far as `admit` needs (a flow admitted between the two
        // swaps counts for the new room).
        let given = self.0.given.swap(room, Ordering::Relaxed);
        let left = self.0.room.swap(room, Ordering::Relaxed);
        let admitted = given.saturating_sub(left.max(0));
        (before, u64::try_from(admitted).unwrap_or(0))
    }

    /// Back to no limit (the limiter stopped).
    pub fn reset(&self) {
        self.set(Pressure::Normal, u64::MAX);
        self.0.watched.store(false, Ordering::Relaxed);
    }

    /// A limiter measures from now on.
    pub fn watch(&self) {
        self.0.watched.store(true, Ordering::Relaxed);
    }

    /// Whether a limiter measures: only then is a heap worth noting.
    pub fn watched(&self) -> bool {
        self.0.watched.load(Ordering::Relaxed)
    }

    /// A pipeline's heap at its busiest moment (an interval's batch
    /// processed and encoded for every exporter): a peak the limiter's
    /// periodic measurement would miss, since it is freed within
    /// milliseconds.
    pub fn note_heap(&self, bytes: u64) {
        self.0.peak.fetch_max(bytes, Ordering::Relaxed);
    }

    /// The highest heap noted since the last call (0: none).
    pub fn take_peak(&self) -> u64 {
        self.0.peak.swap(0, Ordering::Relaxed)
    }
}

/// The heap as glibc's allocator reports it (`mallinfo2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heap {
    /// Bytes in allocated chunks of every arena plus chunks served by
    /// `mmap`: what the agent's own data structures take.
    pub in_use: u64,
    /// Bytes the allocator holds from the system: every arena's size plus
    /// the `mmap`ed chunks. `held - in_use` is freed memory the allocator
    /// keeps (fragmentation, or room it reuses); a resident size that
    /// grows while `in_use` stays flat is that, not a structure that
    /// keeps entries.
    pub held: u64,
}

/// The most malloc arenas the agent uses (glibc's default is 8 per core).
/// Each arena keeps what its threads freed, so each grows to the peak of
/// the threads that use it; with few arenas the peaks share their free
/// memory. The agent's threads are mostly idle (a few workers, the
/// collection threads, the blocking pool), so lock contention between
/// them is rare.
pub const ARENAS: i32 = 2;

/// Caps the allocator's arenas at [`ARENAS`], unless the environment
/// already chose (`MALLOC_ARENA_MAX`, or `GLIBC_TUNABLES` naming
/// `arena_max`). Call first in `main`, before any thread starts.
pub fn limit_arenas() {
    let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    if !chosen {
        // SAFETY: mallopt only sets an allocator parameter; with no other
        // thread running yet, nothing allocates meanwhile.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// Returns the free memory the allocator holds to the system
/// (`malloc_trim(0)`: the free pages inside every arena, not only at their
/// tops). glibc keeps what a thread freed in that thread's arena, and the
/// agent's peaks (an interval's batch encoded for every exporter, a UI
/// query over the whole store) run on whichever blocking thread is free:
/// without this, each arena keeps its own peak, and the resident size grows
/// to several times the heap in use (docs/reliability.md). Blocking: it
/// walks every arena under its lock, milliseconds with hundreds of MiB
/// free; run it off the async workers.
pub fn release_free() {
    // SAFETY: malloc_trim only releases free memory the allocator holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Measures the heap. `mallinfo2` walks every arena under its lock: a few
/// microseconds, so it is for once-per-check or once-per-request use, not
/// per flow.
pub fn heap() -> Heap {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's
    // statistics (under its own locks).
    let m = unsafe { libc::mallinfo2() };
    Heap {
        in_use: (m.uordblks + m.hblkhd) as u64,
        held: (m.arena + m.hblkhd) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_counts_a_large_allocation_while_it_lives() {
        let before = heap();
        let block = vec![1u8; 64 << 20];
        let during = heap();
        // Other tests' threads allocate and free meanwhile: a margin of
        // 16 MiB, far above what any of them holds.
        assert!(
            during.in_use >= before.in_use + (48 << 20),
            "{before:?} -> {during:?}"
        );
        assert!(during.held >= during.in_use, "{during:?}");
        drop(block);
        let after = heap();
        assert!(
            after.in_use + (48 << 20) <= during.in_use,
            "{during:?} -> {after:?}"
        );
    }

    #[test]
    fn admits_while_normal_and_within_the_room_and_counts_what_it_admitted() {
        let m = MemoryPressure::new();
        assert!((0..1000).all(|_| m.admit()), "no limiter: no limit");
        let (before, _) = m.set(Pressure::Normal, 3);
        assert_eq!(before, Pressure::Normal);
        let admitted: Vec<bool> = (0..5).map(|_| m.admit()).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        assert_eq!(m.set(Pressure::Soft, 10), (Pressure::Normal, 3));
        assert!(!m.admit(), "above the soft limit nothing is admitted");
        assert_eq!(m.set(Pressure::Normal, 10), (Pressure::Soft, 0));
        assert!(m.admit());
        assert_eq!(m.set(Pressure::Hard, 0), (Pressure::Normal, 1));
        m.note_heap(5);
        m.note_heap(9);
        m.note_heap(7);
        assert_eq!((m.take_peak(), m.take_peak()), (9, 0));
        m.watch();
        assert!(m.watched());
        m.reset();
        assert!(!m.watched());
        assert_eq!(m.get(), Pressure::Normal);
        assert!((0..1000).all(|_| m.admit()));
    }
}
