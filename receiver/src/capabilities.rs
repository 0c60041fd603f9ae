//! Every Linux capability the agent uses, why, and what breaks without it:
//! the one list the start-up check, the Kubernetes DaemonSet, the systemd
//! unit and docs/security.md are checked against (the deploy tests parse
//! the manifests and compare).
//!
//! The agent runs as uid 0 in every shipped form (systemd unit, container,
//! DaemonSet) but with only these capabilities. Uid 0 without
//! CAP_DAC_OVERRIDE still passes the owner checks of root-owned files
//! (tracefs, /sys/kernel/btf, cgroupfs), which is why that one is not here.
//!
//! Not needed, on purpose:
//! - CAP_SYS_RESOURCE: since Linux 5.11 eBPF maps are charged to the memory
//!   cgroup instead of RLIMIT_MEMLOCK, and flowscope needs 6.3.
//! - CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_SETUID and the like: nothing is
//!   written outside the agent's own directories.

use thiserror::Error;

/// What a capability serves; the start-up check asks only for the
/// capabilities of the features a configuration enables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The `ebpf` receiver: TCP/UDP flows from tracepoints and cgroup programs,
    /// attributed to processes through /proc.
    Flows,
    /// The `dns` receiver: a packet socket in every network namespace and
    /// the /proc search for the socket's process.
    Dns,
    /// Network Path tests: raw ICMP sockets and TCP/UDP probes with a TTL.
    Path,
    /// NAT resolution: the conntrack table over netlink, in every network
    /// namespace (found through /proc, entered with setns).
    Nat,
}

/// One capability the agent uses.
#[derive(Clone, Copy, Debug)]
pub struct Capability {
    /// As the kernel and the manifests spell it (`CAP_BPF`).
    pub name: &'static str,
    /// Its bit in the capability sets (`/proc/<pid>/status` `CapEff`).
    pub bit: u32,
    /// The features that need it.
    pub features: &'static [Feature],
    /// What the agent does with it.
    pub why: &'static str,
    /// What fails without it.
    pub without: &'static str,
}

impl Capability {
    /// The name without `CAP_`, as Kubernetes' `securityContext` and
    /// podman's `--cap-add` write it (`BPF`).
    pub fn short(&self) -> &'static str {
        self.name.trim_start_matches("CAP_")
    }
}

use Feature::*;

/// Every capability the agent uses, in bit order.
pub const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "CAP_DAC_READ_SEARCH",
        bit: 2,
        features: &[Dns],
        why: "list /proc/<pid>/fd of processes of other users (mode 0500) to find which process owns a DNS socket",
        without: "DNS lookups of processes of other users are attributed to `unknown_service`",
    },
    Capability {
        name: "CAP_NET_ADMIN",
        bit: 12,
        features: &[Flows, Dns, Nat],
        why: "load and attach the cgroup programs (UDP flows), force the DNS socket's receive buffer past rmem_max, read conntrack over netlink",
        without: "the eBPF receiver does not start; DNS capture drops under bursts; NAT is not resolved",
    },
    Capability {
        name: "CAP_NET_RAW",
        bit: 13,
        features: &[Dns, Path],
        why: "open the AF_PACKET socket DNS capture reads, and the raw ICMP sockets of Network Path probes",
        without: "the dns receiver and ICMP path tests do not start",
    },
    Capability {
        name: "CAP_SYS_PTRACE",
        bit: 19,
        features: &[Flows, Dns, Nat],
        why: "read /proc/<pid>/environ, exe, ns/net and fd links of other users' processes (ptrace access mode checks) for service names, socket owners and network namespaces",
        without: "processes of other users keep only their kernel comm as service name; DNS capture and NAT resolution miss their network namespaces",
    },
    Capability {
        name: "CAP_SYS_ADMIN",
        bit: 21,
        features: &[Flows, Dns, Path, Nat],
        why: "setns(2) into each network namespace (containers, pods) to read its open TCP connections (iter/tcp sees only the namespace it was created in), to capture DNS, to read its conntrack table and to probe from there",
        without: "the eBPF receiver does not start (open connections in containers would be reported only when they close); DNS is captured and NAT resolved in the agent's own network namespace only",
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        features: &[Flows, Dns],
        why: "attach tracepoints and let the programs read kernel memory (bpf_probe_read_kernel, BTF pointers)",
        without: "the kernel rejects the programs: no flows, no DNS",
    },
    Capability {
        name: "CAP_BPF",
        bit: 39,
        features: &[Flows, Dns],
        why: "create maps and load eBPF programs (bpf(2))",
        without: "nothing can be loaded: the agent does not start",
    },
];

/// The capabilities the given features need, in bit order.
pub fn required(features: &[Feature]) -> Vec<&'static Capability> {
    CAPABILITIES
        .iter()
        .filter(|c| c.features.iter().any(|f| features.contains(f)))
        .collect()
}

/// Capabilities the features need that `effective` lacks.
#[derive(Debug, Error)]
#[error(
    "flowscope lacks {} (effective capabilities {effective:#x}): {}; run it as root or grant them (docs/security.md)",
    names(missing),
    details(missing)
)]
pub struct MissingCapabilities {
    pub missing: Vec<&'static Capability>,
    pub effective: u64,
}

fn names(m: &[&Capability]) -> String {
    m.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

fn details(m: &[&Capability]) -> String {
    m.iter()
        .map(|c| format!("{} to {}", c.name, c.why))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks `effective` against every capability the features need, naming
/// all missing ones at once.
pub fn check_set(effective: u64, features: &[Feature]) -> Result<(), MissingCapabilities> {
    let missing: Vec<_> = required(features)
        .into_iter()
        .filter(|c| effective & (1u64 << c.bit) == 0)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingCapabilities { missing, effective })
    }
}

/// This process's effective capability set, from /proc/self/status (0
/// when it cannot be read: then every capability is reported missing).
pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Checks this process against the features' capabilities.
pub fn check(features: &[Feature]) -> Result<(), MissingCapabilities> {
    check_set(effective(), features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_kernel_headers() {
        // linux/capability.h
        let want = [
            ("CAP_DAC_READ_SEARCH", 2),
            ("CAP_NET_ADMIN", 12),
            ("CAP_NET_RAW", 13),
            ("CAP_SYS_PTRACE", 19),
            ("CAP_SYS_ADMIN", 21),
            ("CAP_PERFMON", 38),
            ("CAP_BPF", 39),
        ];
        let got: Vec<_> = CAPABILITIES.iter().map(|c| (c.name, c.bit)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn names_every_missing_capability_at_once() {
        let bpf_only = 1u64 << 39;
        let e = check_set(bpf_only, &[Feature::Flows]).unwrap_err();
        let names: Vec<_> = e.missing.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "CAP_NET_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_SYS_ADMIN",
                "CAP_PERFMON"
            ]
        );
        let text = e.to_string();
        assert!(
            text.starts_with("flowscope lacks CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON (effective capabilities 0x8000000000)"),
            "{text}"
        );
        let all: u64 = CAPABILITIES.iter().map(|c| 1u64 << c.bit).sum();
        check_set(
            all,
            &[Feature::Flows, Feature::Dns, Feature::Path, Feature::Nat],
        )
        .unwrap();
        // NAT needs nothing beyond flows (setns too, since issue 24), and
        // the eBPF programs need more than NAT's netlink and /proc reads.
        let nat: u64 = required(&[Feature::Nat])
            .iter()
            .map(|c| 1u64 << c.bit)
            .sum();
        let e = check_set(nat, &[Feature::Flows, Feature::Nat]).unwrap_err();
        let names: Vec<_> = e.missing.iter().map(|c| c.name).collect();
        assert_eq!(names, ["CAP_PERFMON", "CAP_BPF"]);
        // DNS needs more than flows.
        let flows: u64 = required(&[Feature::Flows])
            .iter()
            .map(|c| 1u64 << c.bit)
            .sum();
        check_set(flows, &[Feature::Flows]).unwrap();
        let e = check_set(flows, &[Feature::Dns]).unwrap_err();
        let names: Vec<_> = e.missing.iter().map(|c| c.name).collect();
        assert_eq!(names, ["CAP_DAC_READ_SEARCH", "CAP_NET_RAW"]);
    }

    #[test]
    fn every_capability_serves_a_feature() {
        for c in CAPABILITIES {
            assert!(!c.features.is_empty(), "{}", c.name);
            assert!(c.name.starts_with("CAP_"));
        }
    }
}
