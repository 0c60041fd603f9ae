//! `filter`: keep or drop flows by peer CIDR, service port, transport,
//! process or service name, and loopback.
//!
//! A rule matches a flow when every field it sets matches (fields are
//! ANDed, the values of one field ORed). A flow is kept when loopback is
//! allowed or the flow is not loopback, when there are no `include` rules or
//! one of them matches, and when no `exclude` rule matches. Flows a filter
//! drops are the user's choice, not a loss, so they are not counted as lost.

use std::ops::RangeInclusive;

use flowscope_model::names::resource;
use flowscope_model::{Flow, Role, Transport};
use ipnet::IpNet;

/// One include or exclude rule.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    /// The peer address is in one of these networks.
    pub peer_cidrs: Vec<IpNet>,
    /// The service port (the peer's when the local side is the client, the
    /// local one when it is the server) is in one of these ranges.
    pub ports: Vec<RangeInclusive<u16>>,
    pub transports: Vec<Transport>,
    /// `service.name` of the local workload is one of these.
    pub services: Vec<String>,
    /// `process.executable.name` of the local workload is one of these.
    pub processes: Vec<String>,
}

impl Rule {
    fn matches(&self, flow: &Flow) -> bool {
        let peer = canonical(flow.peer.ip());
        (self.peer_cidrs.is_empty() || self.peer_cidrs.iter().any(|n| n.contains(&peer)))
            && (self.ports.is_empty() || {
                let port = service_port(flow);
                self.ports.iter().any(|r| r.contains(&port))
            })
            && (self.transports.is_empty() || self.transports.contains(&flow.transport))
            && (self.services.is_empty() || {
                let s = flow.resource.get_str(resource::SERVICE_NAME);
                self.services.iter().any(|x| Some(x.as_str()) == s)
            })
            && (self.processes.is_empty() || {
                let s = flow.resource.get_str(resource::PROCESS_EXECUTABLE_NAME);
                self.processes.iter().any(|x| Some(x.as_str()) == s)
            })
    }
}

/// The port of the flow's server side.
pub fn service_port(flow: &Flow) -> u16 {
    match flow.role {
        Role::Client => flow.peer.port(),
        Role::Server => flow.local.port(),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so v4 CIDRs match them.
pub use flowscope_model::local::canonical;

/// The `filter` processor.
#[derive(Clone, Debug)]
pub struct Filter {
    pub include: Vec<Rule>,
    pub exclude: Vec<Rule>,
    /// Keep flows whose peer is a loopback address.
    pub loopback: bool,
}

impl Filter {
    pub fn keeps(&self, flow: &Flow) -> bool {
        (self.loopback || !canonical(flow.peer.ip()).is_loopback())
            && (self.include.is_empty() || self.include.iter().any(|r| r.matches(flow)))
            && !self.exclude.iter().any(|r| r.matches(flow))
    }
}

impl Filter {
    /// The filter the configuration describes.
    pub fn from_config(c: &flowscope_otel_config::processors::FilterProcessorConfig) -> Self {
        use flowscope_otel_config::processors::{FlowMatch, TransportName};
        let rule = |m: &FlowMatch| Rule {
            peer_cidrs: m.cidrs.iter().map(crate::cidr::to_net).collect(),
            ports: m.ports.iter().map(|p| p.first..=p.last).collect(),
            transports: m
                .transports
                .iter()
                .map(|t| match t {
                    TransportName::Tcp => Transport::Tcp,
                    TransportName::Udp => Transport::Udp,
                })
                .collect(),
            services: m.services.clone(),
            processes: m.processes.clone(),
        };
        Filter {
            include: c.include.iter().map(rule).collect(),
            exclude: c.exclude.iter().map(rule).collect(),
            loopback: c.loopback,
        }
    }
}
