//! The cgroup_skb programs of the fallback set: on the root cgroup's
//! egress and ingress hooks, the kernel runs them for every packet a
//! socket of the host sends or receives, from the network header on,
//! after the socket's own processing (egress) or before it (ingress).
//! They count UDP datagrams per (socket cookie, peer) in `UDP_FLOWS`, the
//! classic tracepoints being unable to ask for a socket's cookie; every
//! other packet (TCP above all) leaves after one header byte read in
//! place. They always allow the packet: flowscope observes, never drops.

use aya_ebpf::{EbpfContext, macros::cgroup_skb, programs::SkBuffContext};
use flowscope_common::{AF_INET, AF_INET6, IPPROTO_UDP, UdpKey, counter};
use flowscope_ebpf::socket_cookie;

use crate::udp::account_udp;
use crate::{SETTINGS, bump, setting};

#[cgroup_skb(egress)]
pub fn udp_egress(ctx: SkBuffContext) -> i32 {
    let _ = count_udp(&ctx, true);
    1
}

#[cgroup_skb(ingress)]
pub fn udp_ingress(ctx: SkBuffContext) -> i32 {
    let _ = count_udp(&ctx, false);
    1
}

/// `__sk_buff.protocol` values (the ethertype, network byte order, as the
/// kernel stores it in the low 16 bits).
const ETH_P_IP_BE: u32 = 0x0800u16.to_be() as u32;
const ETH_P_IPV6_BE: u32 = 0x86DDu16.to_be() as u32;

/// The IP header's protocol (IPv4) or next header (IPv6) byte at `at`,
/// read in place when the header is in the skb's linear part (always, for
/// the packets of local sockets), else copied out.
#[inline(always)]
fn ip_proto_byte(ctx: &SkBuffContext, at: usize, header: usize) -> Result<u8, i32> {
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's `struct __sk_buff` context; the
    // verifier checks each field access.
    let data = unsafe { (*skb).data } as usize;
    // SAFETY: as above.
    let end = unsafe { (*skb).data_end } as usize;
    if data + header <= end {
        // Direct packet access: the bounds check above is what the verifier
        // needs; no helper call.
        // SAFETY: `data + at` is inside `data..end`, checked above.
        Ok(unsafe { *((data + at) as *const u8) })
    } else {
        ctx.load(at).map_err(|_| 0)
    }
}

/// Counts one UDP datagram (or GSO batch) of the socket the skb belongs to.
/// cgroup_skb sees the packet from its network header on, and always
/// returns "allow": flowscope observes, it never drops. Every other packet
/// of the host (TCP above all) passes here too, so the first test is the
/// IP header's protocol byte, read in place.
#[inline(always)]
fn count_udp(ctx: &SkBuffContext, egress: bool) -> Result<(), i32> {
    if !setting(&SETTINGS.udp) {
        return Ok(());
    }
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's `struct __sk_buff` context; the
    // verifier checks each field access.
    let proto = unsafe { (*skb).protocol };
    let v4 = if proto == ETH_P_IP_BE {
        if ip_proto_byte(ctx, 9, 20)? != IPPROTO_UDP as u8 {
            return Ok(());
        }
        true
    } else if proto == ETH_P_IPV6_BE {
        if ip_proto_byte(ctx, 6, 40)? != IPPROTO_UDP as u8 {
            return Ok(());
        }
        false
    } else {
        return Ok(());
    };
    count_datagram(ctx, egress, v4)
}

/// The UDP part of [`count_udp`]: addresses, ports and the map update.
#[inline(always)]
fn count_datagram(ctx: &SkBuffContext, egress: bool, v4: bool) -> Result<(), i32> {
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's `struct __sk_buff` context; the
    // verifier checks each field access.
    let len = unsafe { (*skb).len } as u64;
    let mut key = UdpKey::default();
    let mut laddr = [0u8; 16];
    let (l4, sport, dport);
    if v4 {
        let vihl: u8 = ctx.load(0).map_err(|_| 0)?;
        let frag: u16 = u16::from_be(ctx.load(6).map_err(|_| 0)?);
        if frag & 0x1fff != 0 {
            // A later fragment carries no UDP header.
            return Ok(());
        }
        l4 = u64::from(vihl & 0x0f) * 4;
        let src: [u8; 4] = ctx.load(12).map_err(|_| 0)?;
        let dst: [u8; 4] = ctx.load(16).map_err(|_| 0)?;
        let (l, r) = if egress { (src, dst) } else { (dst, src) };
        laddr[..4].copy_from_slice(&l);
        key.raddr[..4].copy_from_slice(&r);
        key.family = AF_INET;
    } else {
        l4 = 40;
        let src: [u8; 16] = ctx.load(8).map_err(|_| 0)?;
        let dst: [u8; 16] = ctx.load(24).map_err(|_| 0)?;
        let (l, r) = if egress { (src, dst) } else { (dst, src) };
        laddr = l;
        key.raddr = r;
        key.family = AF_INET6;
    }
    if l4 < 20 || len < l4 + 8 {
        return Ok(());
    }
    sport = u16::from_be(ctx.load(l4 as usize).map_err(|_| 0)?);
    dport = u16::from_be(ctx.load(l4 as usize + 2).map_err(|_| 0)?);
    let (lport, rport) = if egress {
        (sport, dport)
    } else {
        (dport, sport)
    };
    key.rport = rport;
    key.cookie = socket_cookie(ctx.as_ptr());
    let payload = len - l4 - 8;
    // SAFETY: as above.
    let segs = u64::from(unsafe { (*skb).gso_segs }).max(1);
    bump(counter::UDP_EVENTS);
    account_udp(&key, laddr, lport, egress, payload, segs);
    Ok(())
}
