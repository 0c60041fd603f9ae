//! The local address of UDP flows whose socket is bound to the wildcard
//! address (`0.0.0.0`, `::`) and not connected.
//!
//! UDP is counted at the socket (see `receiver-ebpf/src/main.rs`), and such a
//! socket holds no local address: the kernel picks the source of each
//! datagram by a route lookup toward its destination. The eBPF side reports
//! the wildcard; this module asks the kernel the same question from user
//! space, once per (network namespace, peer) and then every
//! [`REFRESH`]: a UDP socket created in the flow's namespace and connected
//! to the peer (which sends nothing) gets the source address the kernel
//! would send from (`getsockname`). That is the address every datagram the
//! application sent to that peer left from, unless the application chose
//! one per datagram (`IP_PKTINFO`) or the socket is bound to a device or
//! carries a mark that policy routing uses; for datagrams received it is the
//! address a reply goes from, which is the address they arrived at unless
//! the host has several on one route (or they went to a broadcast or
//! multicast address).
//!
//! Without it the flow's local address would be the wildcard: NAT
//! resolution (which matches conntrack entries by address), the same-host
//! check of the `locality` processor and the learning of this host's
//! addresses would all miss these flows.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use flowscope_common::{AF_INET, AF_INET6, Owner, UdpKey, UdpStats};

use crate::netns::{self, NetnsError, NetnsScanner};

/// How long an answer is reused before it is asked again (routes change).
pub const REFRESH: Duration = Duration::from_secs(60);
/// Most (namespace, peer) answers kept; past it the oldest half goes.
pub const MAX_ENTRIES: usize = 65_536;

/// Cached route source addresses by (network namespace inode, peer).
pub struct SourceAddrs {
    cache: HashMap<(u32, IpAddr), (Option<IpAddr>, Instant)>,
    /// The agent's own namespace: asked in place, with no scan and no
    /// thread.
    own: Option<u32>,
    /// Finds the other namespaces, stat-ing only processes it has not seen
    /// before.
    scanner: NetnsScanner,
}

impl Default for SourceAddrs {
    fn default() -> Self {
        Self {
            cache: HashMap::new(),
            own: netns::current_netns(),
            scanner: NetnsScanner::default(),
        }
    }
}

/// The peer of a UDP flow key, or None for the unspecified peer (a datagram
/// read without asking for its sender) or an unknown family.
fn peer_ip(key: &UdpKey) -> Option<IpAddr> {
    let ip = match key.family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(
            key.raddr[0],
            key.raddr[1],
            key.raddr[2],
            key.raddr[3],
        )),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(key.raddr)),
        _ => return None,
    };
    (!ip.is_unspecified()).then_some(ip)
}

/// The source address this namespace's routes give for `peer`: a UDP
/// socket connected to it (nothing is sent), asked for its local address.
pub fn route_source(peer: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match peer {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind).ok()?;
    // Port 9 (discard): any nonzero port does; connect() sends nothing.
    s.connect((peer, 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

impl SourceAddrs {
    /// Fills the local address of every flow in `flows` that has none (the
    /// wildcard), a known peer and a known owner (whose namespace says
    /// where to ask). Flows it cannot fill keep the wildcard.
    pub fn fill(&mut self, flows: &mut [(UdpKey, UdpStats, Option<Owner>)]) {
        let now = Instant::now();
        let mut missing: HashMap<u32, Vec<IpAddr>> = HashMap::new();
        for (key, stats, owner) in flows.iter() {
            if stats.laddr != [0; 16] {
                continue;
            }
            let (Some(peer), Some(owner)) = (peer_ip(key), owner) else {
                continue;
            };
            let fresh = self
                .cache
                .get(&(owner.netns, peer))
                .is_some_and(|(_, at)| now.duration_since(*at) < REFRESH);
            if !fresh {
                let peers = missing.entry(owner.netns).or_default();
                if !peers.contains(&peer) {
                    peers.push(peer);
                }
            }
        }
        if !missing.is_empty() {
            self.ask(missing, now);
        }
        for (key, stats, owner) in flows.iter_mut() {
            if stats.laddr != [0; 16] {
                continue;
            }
            let (Some(peer), Some(owner)) = (peer_ip(key), owner.as_ref()) else {
                continue;
            };
            match self.cache.get(&(owner.netns, peer)) {
                Some((Some(IpAddr::V4(a)), _)) if key.family == AF_INET => {
                    stats.laddr[..4].copy_from_slice(&a.octets());
                }
                Some((Some(IpAddr::V6(a)), _)) if key.family == AF_INET6 => {
                    stats.laddr = a.octets();
                }
                _ => {}
            }
        }
    }

    /// Asks each namespace for the source address of its peers: the
    /// agent's own in place, the others on one short-lived thread each.
    fn ask(&mut self, missing: HashMap<u32, Vec<IpAddr>>, now: Instant) {
        if self.cache.len() + missing.values().map(Vec::len).sum::<usize>() > MAX_ENTRIES {
            let mut ages: Vec<Instant> = self.cache.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            if let Some(cut) = ages.get(ages.len() / 2).copied() {
                self.cache.retain(|_, (_, at)| *at > cut);
            }
        }
        let mut namespaces = None;
        for (ns, peers) in missing {
            if Some(ns) == self.own {
                for peer in peers {
                    self.cache.insert((ns, peer), (route_source(peer), now));
                }
                continue;
            }
            let namespaces = namespaces.get_or_insert_with(|| self.scanner.scan());
            let answers = match namespaces.get(&ns) {
                Some((path, _)) => {
                    let asked = peers.clone();
                    netns::in_namespace::<_, NetnsError>(path, ns, "fs-udp-source", move || {
                        Ok(asked.into_iter().map(route_source).collect::<Vec<_>>())
                    })
                    .unwrap_or_else(|_| vec![None; peers.len()])
                }
                // The namespace is gone: nothing to ask, and nothing to ask
                // again before REFRESH.
                None => vec![None; peers.len()],
            };
            for (peer, source) in peers.into_iter().zip(answers) {
                self.cache.insert((ns, peer), (source, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peer_gets_loopback_source_in_own_namespace() {
        // This process's own namespace, asked in place.
        let netns = netns::current_netns().expect("own namespace");
        let mut key = UdpKey {
            family: AF_INET,
            rport: 53,
            ..UdpKey::default()
        };
        key.raddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let owner = Owner {
            tgid: std::process::id(),
            netns,
            comm: [0; 16],
        };
        let unspecified = UdpKey {
            family: AF_INET,
            ..UdpKey::default()
        };
        let mut flows = vec![
            (key, UdpStats::default(), Some(owner)),
            // No owner: no namespace to ask in.
            (key, UdpStats::default(), None),
            // Unspecified peer: nothing to ask.
            (unspecified, UdpStats::default(), Some(owner)),
        ];
        let mut s = SourceAddrs::default();
        s.fill(&mut flows);
        assert_eq!(&flows[0].1.laddr[..4], &[127, 0, 0, 1]);
        assert_eq!(flows[1].1.laddr, [0; 16]);
        assert_eq!(flows[2].1.laddr, [0; 16]);
        // A bound address is never replaced.
        let mut bound = UdpStats::default();
        bound.laddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let mut flows = vec![(key, bound, Some(owner))];
        s.fill(&mut flows);
        assert_eq!(&flows[0].1.laddr[..4], &[127, 0, 0, 2]);
    }
}
