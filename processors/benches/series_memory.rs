//! Memory per tracked series: heap bytes the chain keeps between intervals
//! per series holding a cardinality slot, measured with a counting global
//! allocator. Prints one JSON line. `cargo bench -p flowscope-processors
//! --bench series_memory`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use flowscope_model::counting_alloc::{CountingAlloc, live_bytes};
use flowscope_model::{Role, Transport};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

fn main() {
    const SERIES: u32 = 100_000;
    let mut chain = chain_from_yaml("  aggregate:\n    max_series: 1000000", &["aggregate"]);
    let res = resource("svc");
    // Everything allocated from here on and still live after the interval
    // (the flows are consumed by it) is what the chain keeps.
    let before = live_bytes();
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
    let after = live_bytes();
    let held = chain.series_held("network.flow.io");
    assert_eq!(held, SERIES as usize);
    let per = (after - before) as f64 / held as f64;
    println!(
        "{{\"bench\":\"series_memory\",\"series\":{held},\"points\":{points},\"retained_bytes\":{},\"bytes_per_series\":{per:.1}}}",
        after - before
    );
}
