//! The agent's memory pressure, as the `memory_limiter` processor last
//! measured it: a shared service of the [`crate::Context`]. The limiter
//! writes it every `check_interval`; the `ebpf` receiver reads it before it
//! tracks a new flow and refuses (and counts, as
//! `flowscope.events.lost{flowscope.reason=memory_limit}`) while the heap
//! is above the soft limit. Without a `memory_limiter` it stays
//! [`Pressure::Normal`] and costs one relaxed load per new flow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Where the heap is relative to the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Pressure {
    /// Below the soft limit: everything is accepted.
    Normal = 0,
    /// Above the soft limit: new flows are refused.
    Soft = 1,
    /// Above the hard limit: new flows are refused, and the agent returns
    /// freed memory to the system.
    Hard = 2,
}

/// Shared memory pressure. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct MemoryPressure(Arc<AtomicU8>);

impl MemoryPressure {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pressure last measured.
    pub fn get(&self) -> Pressure {
        match self.0.load(Ordering::Relaxed) {
            0 => Pressure::Normal,
            1 => Pressure::Soft,
            _ => Pressure::Hard,
        }
    }

    /// Whether new flows are refused now.
    pub fn refuses_new(&self) -> bool {
        self.0.load(Ordering::Relaxed) != Pressure::Normal as u8
    }

    /// Records a measurement; returns the previous pressure.
    pub fn set(&self, p: Pressure) -> Pressure {
        match self.0.swap(p as u8, Ordering::Relaxed) {
            0 => Pressure::Normal,
            1 => Pressure::Soft,
            _ => Pressure::Hard,
        }
    }
}
