//! The one context every component is built with.
//!
//! The agent builds a single [`Context`] at start and passes it (by
//! reference; components clone the handles they keep) to every receiver,
//! processor and exporter builder. It is the only way components share
//! state: nothing reaches a global, and no component holds a handle on
//! another. A receiver that learns something others need (the DNS receiver's
//! names) writes into a shared service here; whoever needs it reads the same
//! service, whether or not the writer is configured.
//!
//! # Adding a shared service
//! 1. Define its type in the model (so every crate can name it), cheap to
//!    clone (an `Arc` inside) and with a `Default` that is an empty, working
//!    instance.
//! 2. Add one field to [`Context`] and one line to [`Context::new`].
//!
//! Its writer and readers then take it from the context; no other component
//! changes, and a component that does not use it never sees it.
//!
//! State that only one crate's components share (the host's conntrack
//! service among `ebpf` receivers, cloud detections and Kubernetes clients
//! among processors) has its type in that crate and lives in
//! [`Context::services`], keyed by type ([`crate::services`]): the context
//! still holds it, and the model names no component type.

use std::sync::Arc;

use crate::attr::Attrs;
use crate::destinations::Destinations;
use crate::local::LocalServices;
use crate::memory::MemoryPressure;
use crate::names::{SELF_SERVICE_NAME, resource};
use crate::peer_names::PeerNames;
use crate::services::Services;
use crate::telemetry::Telemetry;

/// Shared state of one running agent. Cheap to clone (handles only).
#[derive(Clone, Debug)]
pub struct Context {
    /// The agent's own metrics: components emit typed events on it.
    pub telemetry: Telemetry,
    /// IP -> name cache: written by the `dns` receiver, read by the `peer`
    /// processor (`flowscope.peer.domain`).
    pub peer_names: PeerNames,
    /// This host's addresses and listening services: filled from the flows
    /// (and by receivers that know more), read by `peer` and `locality`.
    pub local_services: LocalServices,
    /// What is known about the host at start.
    pub host: Arc<HostFacts>,
    /// Servers of outgoing client flows: written by the `ebpf` receiver,
    /// read by the `path` receiver's dynamic tests.
    pub destinations: Destinations,
    /// The heap's pressure: written by the `memory_limiter` processor's
    /// monitor, read by the `ebpf` receiver before it tracks a new flow.
    pub memory: MemoryPressure,
    /// Shared state of one crate's components, by type: the host's one
    /// conntrack service (`ebpf` receivers with `nat.enabled`), the cloud
    /// detections and Kubernetes clients (processors of every pipeline).
    pub services: Services,
}

impl Context {
    /// A context for `host`, with self-telemetry under its
    /// [`HostFacts::self_resource`] and empty shared services.
    pub fn new(host: HostFacts) -> Self {
        Self::with_self_readers(host, 0)
    }

    /// As [`Context::new`], with `readers` extra readers of the agent's own
    /// metrics ([`Telemetry::with_readers`]).
    pub fn with_self_readers(host: HostFacts, readers: usize) -> Self {
        Self::with_self_telemetry(Telemetry::with_readers(&host.self_resource, readers), host)
    }

    /// As [`Context::new`], recording into `telemetry` (built by the agent
    /// under [`HostFacts::self_resource`], with its SDK readers).
    pub fn with_self_telemetry(telemetry: Telemetry, host: HostFacts) -> Self {
        Context {
            telemetry,
            peer_names: PeerNames::new(),
            local_services: LocalServices::new(),
            host: Arc::new(host),
            destinations: Destinations::new(),
            memory: MemoryPressure::new(),
            services: Services::default(),
        }
    }
}

impl Context {
    /// A default context ([`Context::default`]) that records into an
    /// existing `telemetry` handle (tests that read its totals).
    pub fn with_telemetry(telemetry: Telemetry) -> Self {
        Context {
            telemetry,
            ..Context::default()
        }
    }
}

impl Default for Context {
    /// A context with fixed host facts ([`HostFacts::default`]): tests and
    /// benchmarks that must not depend on the machine.
    fn default() -> Self {
        Context::new(HostFacts::default())
    }
}

/// What the agent learns about its host once, at start.
#[derive(Clone, Debug, PartialEq)]
pub struct HostFacts {
    /// Attributes on every flow Resource: `host.name`, `host.id`,
    /// `os.type`, and `k8s.node.name` when the environment names it.
    pub attrs: Attrs,
    /// The ephemeral port range (`net.ipv4.ip_local_port_range`), to tell a
    /// client from a server when a connection's open was not seen.
    pub ephemeral_ports: (u16, u16),
    /// The Resource of the agent's own telemetry: [`HostFacts::attrs`],
    /// every pair of `OTEL_RESOURCE_ATTRIBUTES`, and `service.name`
    /// (`OTEL_SERVICE_NAME`, else `service.name` from the attributes, else
    /// `flowscope`).
    pub self_resource: Attrs,
}

/// Linux's default `ip_local_port_range`.
pub const DEFAULT_EPHEMERAL_PORTS: (u16, u16) = (32768, 60999);

/// Resource keys of `OTEL_RESOURCE_ATTRIBUTES` that describe the host and
/// so also go on the flows' Resources (the Kubernetes downward-API
/// pattern: `k8s.node.name=$(NODE_NAME)`).
pub const HOST_KEYS_FROM_ENV: [&str; 2] = [resource::HOST_NAME, resource::K8S_NODE_NAME];

impl Default for HostFacts {
    fn default() -> Self {
        HostFacts::from_sources(Some("localhost"), None, None, &|_| None)
    }
}

impl HostFacts {
    /// Reads the host's facts: `/proc/sys/kernel/hostname`, `/etc/machine-id`,
    /// `/proc/sys/net/ipv4/ip_local_port_range` and the agent's own
    /// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`.
    pub fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        HostFacts::from_sources(
            read("/proc/sys/kernel/hostname").as_deref(),
            read("/etc/machine-id").as_deref(),
            read("/proc/sys/net/ipv4/ip_local_port_range").as_deref(),
            &crate::env::process,
        )
    }

    /// The facts from what [`HostFacts::detect`] reads, given as text
    /// (`None` when unreadable), and `env` for the environment.
    pub fn from_sources(
        hostname: Option<&str>,
        machine_id: Option<&str>,
        port_range: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let hostname = hostname.map(str::trim).filter(|h| !h.is_empty());
        let mut attrs = Attrs::new()
            .with(resource::HOST_NAME, hostname.unwrap_or("unknown"))
            .with(resource::OS_TYPE, "linux");
        if let Some(id) = machine_id.map(str::trim).filter(|i| !i.is_empty()) {
            attrs.set(resource::HOST_ID, id);
        }
        let from_env = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|s| parse_resource_attributes(&s))
            .unwrap_or_default();
        for (k, v) in &from_env {
            if HOST_KEYS_FROM_ENV.contains(&k.as_str()) {
                attrs.set(k.as_str(), v.as_str());
            }
        }
        let mut self_resource = attrs.clone();
        for (k, v) in &from_env {
            self_resource.set(k.as_str(), v.as_str());
        }
        let service = env("OTEL_SERVICE_NAME")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                self_resource
                    .get_str(resource::SERVICE_NAME)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| SELF_SERVICE_NAME.to_owned());
        self_resource.set(resource::SERVICE_NAME, service);
        let ephemeral_ports = port_range
            .and_then(|s| {
                let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
                Some((it.next()??, it.next()??))
            })
            .unwrap_or(DEFAULT_EPHEMERAL_PORTS);
        HostFacts {
            attrs,
            ephemeral_ports,
            self_resource,
        }
    }
}

/// The pairs of an `OTEL_RESOURCE_ATTRIBUTES` value (see
/// [`crate::resource_env::parse`]).
pub use crate::resource_env::parse as parse_resource_attributes;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::env::fixed as env;

    #[test]
    fn resource_attributes_parse() {
        assert_eq!(
            parse_resource_attributes(" a=1, b = x%20y ,bad, =v,a=2,c=%zz"),
            vec![
                ("b".into(), "x y".into()),
                ("a".into(), "2".into()),
                ("c".into(), "%zz".into()),
            ]
        );
    }

    #[test]
    fn host_facts_from_files_and_environment() {
        let h = HostFacts::from_sources(
            Some("node-a\n"),
            Some("0123abcd\n"),
            Some("20000\t30000\n"),
            &env(&[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.node.name=worker-3,k8s.cluster.name=prod,host.name=node-a.example",
            )]),
        );
        assert_eq!(h.ephemeral_ports, (20000, 30000));
        assert_eq!(
            h.attrs,
            Attrs::new()
                .with(resource::HOST_NAME, "node-a.example")
                .with(resource::HOST_ID, "0123abcd")
                .with(resource::OS_TYPE, "linux")
                .with(resource::K8S_NODE_NAME, "worker-3")
        );
        assert_eq!(h.self_resource.get_str("k8s.cluster.name"), Some("prod"));
        assert_eq!(
            h.self_resource.get_str(resource::SERVICE_NAME),
            Some("flowscope")
        );
        assert_eq!(h.attrs.get_str("k8s.cluster.name"), None, "not a host key");
    }

    #[test]
    fn service_name_precedence() {
        let name = |vars| {
            HostFacts::from_sources(None, None, None, &env(vars))
                .self_resource
                .get_str(resource::SERVICE_NAME)
                .map(str::to_owned)
        };
        assert_eq!(name(&[]).as_deref(), Some("flowscope"));
        assert_eq!(
            name(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=netmon")]).as_deref(),
            Some("netmon")
        );
        assert_eq!(
            name(&[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=netmon"),
                ("OTEL_SERVICE_NAME", "agent-eu")
            ])
            .as_deref(),
            Some("agent-eu")
        );
        let h = HostFacts::from_sources(None, None, Some("junk"), &|_| None);
        assert_eq!(h.ephemeral_ports, DEFAULT_EPHEMERAL_PORTS);
        assert_eq!(h.attrs.get_str(resource::HOST_NAME), Some("unknown"));
    }

    #[test]
    fn context_services_are_shared_by_clones() {
        let ctx = Context::default();
        let other = ctx.clone();
        let ip = "198.18.0.1".parse().unwrap();
        let expires = ctx.peer_names.now_ns() + 1_000_000_000;
        ctx.peer_names
            .insert(1, ip, Arc::from("a.test"), expires, 8);
        assert_eq!(other.peer_names.name_of(1, ip).as_deref(), Some("a.test"));
        ctx.local_services.add_address(ip, 1);
        assert!(other.local_services.is_local(ip));
        other
            .telemetry
            .emit(crate::internal_events::EventsReceived {
                source: crate::internal_events::Source::Dns,
                count: 2,
            });
        assert_eq!(
            ctx.telemetry
                .total_matching(crate::telemetry::EVENTS_RECEIVED, &Attrs::new()),
            2
        );
        assert_eq!(
            ctx.telemetry.resource().get_str(resource::SERVICE_NAME),
            Some("flowscope")
        );
    }
}
