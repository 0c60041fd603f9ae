//! Memory per tracked series: heap bytes the chain keeps between intervals
//! per series holding a cardinality slot, measured with a counting global
//! allocator. Prints one JSON line. `cargo bench -p flowscope-processors
//! --bench series_memory`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::*;
use flowscope_model::{Role, Transport};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    const SERIES: u32 = 100_000;
    let mut chain = chain_from_yaml("  aggregate:\n    max_series: 1000000", &["aggregate"]);
    let res = resource("svc");
    // Everything allocated from here on and still live after the interval
    // (the flows are consumed by it) is what the chain keeps.
    let before = LIVE.load(Ordering::Relaxed);
    let flows = (0..SERIES)
        .map(|i| {
            let peer = format!("198.18.{}.{}:443", i / 256 % 256, i % 256);
            let local = format!("198.18.255.{}:40000", i / 65536 + 1);
            let mut f = flow(&res, Transport::Tcp, Role::Client, &local, &peer);
            f.attrs.set(
                "network.peer.address",
                format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            );
            with_bytes(f, 1, 0)
        })
        .collect();
    let out = chain.process(batch(flows));
    let points = out.points.len();
    drop(out);
    let after = LIVE.load(Ordering::Relaxed);
    let held = chain.series_held("network.flow.io");
    assert_eq!(held, SERIES as usize);
    let per = (after - before) as f64 / held as f64;
    println!(
        "{{\"bench\":\"series_memory\",\"series\":{held},\"points\":{points},\"retained_bytes\":{},\"bytes_per_series\":{per:.1}}}",
        after - before
    );
}
