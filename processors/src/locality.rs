//! `locality`: `flowscope.network.locality`, how far the traffic of a flow travels.
//!
//! The local location is the Resource's `cloud.provider`, `cloud.region` and
//! `cloud.availability_zone` (from the `cloud` processor), completed by the
//! configured subnet that contains the local address. The peer's location
//! is the configured subnet that contains its address (zone known), else
//! the `peer` processor's `flowscope.peer.cloud.provider`/`region` (zone
//! unknown). Then, first match wins:
//!
//! | value | when |
//! |---|---|
//! | `same_host` | the peer is loopback, the local address, or another address of this host |
//! | `same_zone` / `cross_zone` / `cross_region` / `cross_cloud` | both zones known: equal zones, else different providers, else different regions, else different zones |
//! | `cross_cloud` / `cross_region` | peer in a cloud's published ranges, local provider known: different provider, else different region |
//! | `internet` | peer in a cloud's ranges while the local host is in no known cloud, or any other globally routable peer |
//! | `private` | a peer in a private range (RFC 1918, 100.64/10, 198.18/15, 169.254/16, fc00::/7, fe80::/10) with no zone known |
//! | `unknown` | anything else: a cloud peer in the local region (its zone cannot be known from the ranges), multicast, unspecified, a local zone missing |

use std::net::IpAddr;
use std::sync::Arc;

use flowscope_model::names::{attr, resource};
use flowscope_model::{Attrs, Flow};
use flowscope_otel_config::processors::LocalityProcessorConfig;

use crate::cidr::{CidrMap, to_net};
use crate::filter::canonical;
use crate::local::LocalServices;

/// The contract's values of `flowscope.network.locality`.
pub mod value {
    pub const SAME_HOST: &str = "same_host";
    pub const SAME_ZONE: &str = "same_zone";
    pub const CROSS_ZONE: &str = "cross_zone";
    pub const CROSS_REGION: &str = "cross_region";
    pub const CROSS_CLOUD: &str = "cross_cloud";
    pub const INTERNET: &str = "internet";
    pub const PRIVATE: &str = "private";
    pub const UNKNOWN: &str = "unknown";
}

struct Subnet {
    zone: Arc<str>,
    region: Option<Arc<str>>,
    provider: Option<Arc<str>>,
}

#[derive(Default, Debug)]
struct Location<'a> {
    provider: Option<&'a str>,
    region: Option<&'a str>,
    zone: Option<&'a str>,
}

/// The `locality` processor.
pub struct Locality {
    subnets: CidrMap<Subnet>,
    local: LocalServices,
}

impl Locality {
    pub fn from_config(c: &LocalityProcessorConfig, local: LocalServices) -> Self {
        let mut subnets = CidrMap::new();
        for s in &c.subnets {
            subnets.insert(
                to_net(&s.cidr),
                Subnet {
                    zone: Arc::from(s.zone.as_str()),
                    region: s.region.as_deref().map(Arc::from),
                    provider: s.provider.as_deref().map(Arc::from),
                },
            );
        }
        Locality { subnets, local }
    }

    pub(crate) fn begin_batch(&mut self, flows: &[Flow]) {
        self.local.learn(flows);
    }

    /// Sets `flowscope.network.locality` on one flow.
    pub fn enrich(&self, flow: &mut Flow) {
        let v = self.classify(flow);
        flow.attrs.set(attr::LOCALITY, v);
    }

    /// The locality of one flow.
    pub fn classify(&self, flow: &Flow) -> &'static str {
        use value::*;
        let peer = canonical(flow.peer.ip());
        let local_ip = canonical(flow.local.ip());
        if peer.is_loopback() || peer == local_ip || self.local.is_local(peer) {
            return SAME_HOST;
        }
        let res: &Attrs = &flow.resource;
        let mut here = Location {
            provider: res.get_str(resource::CLOUD_PROVIDER),
            region: res.get_str(resource::CLOUD_REGION),
            zone: res.get_str(resource::CLOUD_AVAILABILITY_ZONE),
        };
        if let Some(s) = self.subnets.longest(local_ip) {
            here.zone = here.zone.or(Some(&s.zone));
            here.region = here.region.or(s.region.as_deref());
            here.provider = here.provider.or(s.provider.as_deref());
        }

        if let Some(s) = self.subnets.longest(peer) {
            let there = Location {
                provider: s.provider.as_deref().or(here.provider),
                region: s.region.as_deref().or(here.region),
                zone: Some(&s.zone),
            };
            return match here.zone {
                None => {
                    if is_private(peer) {
                        PRIVATE
                    } else {
                        UNKNOWN
                    }
                }
                Some(z) if Some(z) == there.zone => SAME_ZONE,
                Some(_) => {
                    if differ(here.provider, there.provider) {
                        CROSS_CLOUD
                    } else if differ(here.region, there.region) {
                        CROSS_REGION
                    } else {
                        CROSS_ZONE
                    }
                }
            };
        }

        if let Some(provider) = flow.attrs.get_str(attr::PEER_CLOUD_PROVIDER) {
            let region = flow.attrs.get_str(attr::PEER_CLOUD_REGION);
            return match here.provider {
                None => INTERNET,
                Some(p) if p != provider => CROSS_CLOUD,
                Some(_) if differ(here.region, region) => CROSS_REGION,
                Some(_) => UNKNOWN,
            };
        }

        if is_private(peer) {
            PRIVATE
        } else if is_global(peer) {
            INTERNET
        } else {
            UNKNOWN
        }
    }
}

/// True when both are known and not equal.
fn differ(a: Option<&str>, b: Option<&str>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// Private and otherwise non-routed unicast ranges a host talks to directly.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// Globally routable unicast (roughly: not loopback, private, multicast,
/// unspecified, broadcast or documentation).
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || is_private(ip))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            // 2000::/3 global unicast, except documentation 2001:db8::/32.
            (s & 0xe000) == 0x2000 && !(s == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}
