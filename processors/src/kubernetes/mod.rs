//! The `kubernetes` processor's building blocks (issue 9, in progress).
//!
//! Done, sans-IO and tested: [`cgroup`] (which pod and container a process
//! runs in, from its cgroup path) and [`pods`] (a `v1.PodList` from the
//! kubelet's `/pods` or the API server, reduced to names, IPs, containers
//! and the owning workload). To come: the HTTPS clients (kubelet with the
//! service-account token and CA, API server list+watch) and the processor
//! that applies them to flows.

pub mod cgroup;
pub mod pods;
