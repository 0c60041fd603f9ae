//! Host-side stub: the programs are the `flowscope-flows` binary, built for
//! the bpf target by receiver/build.rs. This lib lets receiver name the crate
//! as a build dependency so cargo rebuilds when it changes.
#![no_std]
