//! IP networks as text: the one parser behind every CIDR the agent reads
//! (processor and receiver config, the path receiver's dynamic tests, the
//! UI's `cidr` parameter). The value is an [`ipnet::IpNet`], the network
//! type the processors' prefix trie is keyed by; each caller words its own
//! error from [`NetError`] and decides whether host bits may be set.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a text is not an IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    Address,
    /// The prefix length is not a number.
    PrefixLength { max: u8 },
    /// The prefix length is above `max` (32 for IPv4, 128 for IPv6).
    PrefixTooLong { max: u8 },
}

/// Whether spaces around the address and the prefix length are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spaces {
    Trim,
    Refuse,
}

/// Parses `a.b.c.d/len`, `x::/len` or a bare address (a host network).
/// Host bits past the prefix are kept as written (see [`has_host_bits`]).
pub fn parse(s: &str, spaces: Spaces) -> Result<IpNet, NetError> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = cut(addr, spaces).parse().map_err(|_| NetError::Address)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => cut(l, spaces)
            .parse::<u8>()
            .map_err(|_| NetError::PrefixLength { max })?,
    };
    IpNet::new(addr, len).map_err(|_| NetError::PrefixTooLong { max })
}

fn cut(t: &str, spaces: Spaces) -> &str {
    match spaces {
        Spaces::Trim => t.trim(),
        Spaces::Refuse => t,
    }
}

/// Whether `net` has address bits set past its prefix (`10.0.0.1/8`).
pub fn has_host_bits(net: &IpNet) -> bool {
    net.addr() != net.network()
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as IPv4.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_addresses_and_errors() {
        let n = parse(" 10.0.0.1 / 8 ", Spaces::Trim).unwrap();
        assert_eq!(n.to_string(), "10.0.0.1/8");
        assert!(has_host_bits(&n));
        assert_eq!(parse("fd00::", Spaces::Trim).unwrap().prefix_len(), 128);
        assert_eq!(parse(" 10.0.0.0/8", Spaces::Refuse), Err(NetError::Address));
        assert_eq!(
            parse("10.0.0.0/33", Spaces::Trim),
            Err(NetError::PrefixTooLong { max: 32 })
        );
        assert_eq!(
            parse("fd00::/x", Spaces::Trim),
            Err(NetError::PrefixLength { max: 128 })
        );
        assert_eq!(
            unmapped("::ffff:198.18.0.1".parse().unwrap()),
            "198.18.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
