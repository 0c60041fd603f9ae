//! IP, UDP and TCP headers of a captured packet.
//!
//! The capture sockets are `AF_PACKET`/`SOCK_DGRAM`, so a packet starts at
//! its IPv4 or IPv6 header whatever the link layer. Lengths come from the
//! IP header (Ethernet pads short frames), and every offset is checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flowscope_model::Transport;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("packet of {0} bytes is too short for its headers")]
    Short(usize),
    #[error("IP version {0} is neither 4 nor 6")]
    Version(u8),
    #[error("IPv4 fragment (flowscope does not reassemble IP fragments)")]
    Fragment,
    #[error("IP protocol {0} is neither TCP nor UDP")]
    Protocol(u8),
    #[error("header length field out of range")]
    HeaderLength,
}

/// TCP header fields the stream reassembly needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

/// A decoded TCP or UDP packet.
#[derive(Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub tcp: Option<TcpHeader>,
    pub payload: &'a [u8],
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn be16(b: &[u8], i: usize) -> Result<u16, PacketError> {
    match b.get(i..i + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(PacketError::Short(b.len())),
    }
}

/// Decodes the IP and transport headers of `pkt`.
pub fn decode(pkt: &[u8]) -> Result<Segment<'_>, PacketError> {
    let first = *pkt.first().ok_or(PacketError::Short(0))?;
    let (src, dst, proto, l4) = match first >> 4 {
        4 => {
            if pkt.len() < 20 {
                return Err(PacketError::Short(pkt.len()));
            }
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16(pkt, 2)?);
            if ihl < 20 || total < ihl || total > pkt.len() {
                return Err(PacketError::HeaderLength);
            }
            let frag = be16(pkt, 6)?;
            // More-fragments flag or a non-zero offset.
            if frag & 0x3fff != 0 {
                return Err(PacketError::Fragment);
            }
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), pkt[9], &pkt[ihl..total])
        }
        6 => {
            if pkt.len() < 40 {
                return Err(PacketError::Short(pkt.len()));
            }
            let plen = usize::from(be16(pkt, 4)?);
            if 40 + plen > pkt.len() {
                return Err(PacketError::HeaderLength);
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&pkt[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&pkt[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                pkt[6],
                &pkt[40..40 + plen],
            )
        }
        v => return Err(PacketError::Version(v)),
    };
    let sport = be16(l4, 0)?;
    let dport = be16(l4, 2)?;
    let (transport, tcp, payload) = match proto {
        IPPROTO_UDP => {
            let len = usize::from(be16(l4, 4)?);
            if len < 8 || len > l4.len() {
                return Err(PacketError::HeaderLength);
            }
            (Transport::Udp, None, &l4[8..len])
        }
        IPPROTO_TCP => {
            if l4.len() < 20 {
                return Err(PacketError::Short(l4.len()));
            }
            let off = usize::from(l4[12] >> 4) * 4;
            if off < 20 || off > l4.len() {
                return Err(PacketError::HeaderLength);
            }
            let flags = l4[13];
            let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            let h = TcpHeader {
                seq,
                fin: flags & 0x01 != 0,
                syn: flags & 0x02 != 0,
                rst: flags & 0x04 != 0,
            };
            (Transport::Tcp, Some(h), &l4[off..])
        }
        p => return Err(PacketError::Protocol(p)),
    };
    Ok(Segment {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        transport,
        tcp,
        payload,
    })
}

/// Test and benchmark helpers: build packets as the capture socket sees them.
pub mod build {
    use std::net::{IpAddr, SocketAddr};

    /// An IPv4 or IPv6 UDP packet (checksums zero: nothing here checks them).
    pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(8 + payload.len());
        l4.extend_from_slice(&src.port().to_be_bytes());
        l4.extend_from_slice(&dst.port().to_be_bytes());
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(payload);
        ip(src.ip(), dst.ip(), 17, &l4)
    }

    /// A TCP segment with sequence number `seq` and flags (`0x18` = PSH|ACK).
    pub fn tcp(src: SocketAddr, dst: SocketAddr, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(20 + payload.len());
        l4.extend_from_slice(&src.port().to_be_bytes());
        l4.extend_from_slice(&dst.port().to_be_bytes());
        l4.extend_from_slice(&seq.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 0, 5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        l4.extend_from_slice(payload);
        ip(src.ip(), dst.ip(), 6, &l4)
    }

    fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(40 + l4.len());
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            (s, d) => {
                let to6 = |a: IpAddr| match a {
                    IpAddr::V4(v) => v.to_ipv6_mapped(),
                    IpAddr::V6(v) => v,
                };
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                p.extend_from_slice(&[proto, 64]);
                p.extend_from_slice(&to6(s).octets());
                p.extend_from_slice(&to6(d).octets());
            }
        }
        p.extend_from_slice(l4);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_udp_and_tcp_both_families() {
        let a: SocketAddr = "198.18.0.1:40000".parse().unwrap();
        let b: SocketAddr = "198.18.0.2:53".parse().unwrap();
        let p = build::udp(a, b, b"hello");
        let s = decode(&p).unwrap();
        assert_eq!(
            (s.src, s.dst, s.transport, s.payload),
            (a, b, Transport::Udp, &b"hello"[..])
        );
        let a6: SocketAddr = "[fd00::1]:40000".parse().unwrap();
        let b6: SocketAddr = "[fd00::2]:53".parse().unwrap();
        let p = build::tcp(a6, b6, 7, 0x18, b"xy");
        let s = decode(&p).unwrap();
        assert_eq!(s.tcp.map(|t| t.seq), Some(7));
        assert_eq!((s.src, s.dst, s.payload), (a6, b6, &b"xy"[..]));
        // Ethernet padding after the IP datagram is ignored.
        let mut padded = build::udp(a, b, b"x");
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(decode(&padded).unwrap().payload, b"x");
    }

    #[test]
    fn rejects_short_and_fragments() {
        let a: SocketAddr = "198.18.0.1:40000".parse().unwrap();
        let b: SocketAddr = "198.18.0.2:53".parse().unwrap();
        let p = build::udp(a, b, b"hello");
        for n in 0..p.len() {
            assert!(decode(&p[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut f = p.clone();
        f[6] = 0x20; // more fragments
        assert_eq!(decode(&f), Err(PacketError::Fragment));
    }
}
