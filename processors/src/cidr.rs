//! A map from IP networks to values with longest-prefix lookups, over
//! `prefix-trie`'s joint (IPv4 + IPv6) map.
//!
//! Why `prefix-trie`: it is maintained, has no unsafe-heavy dependencies,
//! stores both families behind one type, and answers both questions the
//! processors ask in O(prefix length): the longest match (cloud ranges,
//! subnets, named services) and every covering network in order of length
//! (CIDR tags, where a more specific network overrides a key).

use std::net::IpAddr;

use flowscope_otel_config::processors::Cidr;
use ipnet::IpNet;
use prefix_trie::joint::map::JointPrefixMap;

/// The network of a validated config CIDR (host bits are zero).
pub fn to_net(c: &Cidr) -> IpNet {
    c.net()
}

/// A single address as a host network (/32 or /128).
pub fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// IP networks to values.
pub struct CidrMap<T> {
    map: JointPrefixMap<IpNet, T>,
}

impl<T> Default for CidrMap<T> {
    fn default() -> Self {
        CidrMap {
            map: JointPrefixMap::new(),
        }
    }
}

impl<T> CidrMap<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Inserts or replaces the value of exactly `net`.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        self.map.insert(net.trunc(), value)
    }

    /// The value of exactly `net`, to merge entries of one network.
    pub fn get_mut(&mut self, net: &IpNet) -> Option<&mut T> {
        self.map.get_mut(&net.trunc())
    }

    /// The value of the longest network containing `ip`.
    pub fn longest(&self, ip: IpAddr) -> Option<&T> {
        self.map.get_lpm(&host(ip)).map(|(_, v)| v)
    }

    /// Every network containing `ip` with its value, shortest first.
    pub fn covering(&self, ip: IpAddr) -> impl Iterator<Item = (IpNet, &T)> {
        self.map.cover(&host(ip))
    }
}
