//! Feeds arbitrary bytes to the Kubernetes API parsers: a list answer or
//! one watch line of pods, services or ReplicaSets, or the kubelet's pod
//! list. The first byte picks which. Any panic is a bug; bad input must be
//! an error.
#![no_main]

use flowscope_processors::kubernetes::api::{ReplicaSet, Service, parse_list, parse_watch_line};
use flowscope_processors::kubernetes::pods::{Pod, parse_pod_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 7 {
        0 => drop(parse_list::<Pod>(body)),
        1 => drop(parse_list::<Service>(body)),
        2 => drop(parse_list::<ReplicaSet>(body)),
        3 => drop(parse_watch_line::<Pod>(body)),
        4 => drop(parse_watch_line::<Service>(body)),
        5 => drop(parse_watch_line::<ReplicaSet>(body)),
        _ => drop(parse_pod_list(body)),
    }
});
