//! The `kubernetes` processor's building blocks (issue 9, in progress).
//!
//! Done: [`cgroup`], which pod and container a process runs in, from its
//! cgroup path. To come: the kubelet `/pods` client naming local pods, the
//! API server list+watch naming peers, and the processor itself.

pub mod cgroup;
