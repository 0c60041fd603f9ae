//! flowscope's DNS capture filter.
//!
//! A socket filter attached (SO_ATTACH_BPF) to one `AF_PACKET`/`SOCK_DGRAM`
//! socket per network namespace. On such a socket the kernel runs the filter
//! with `skb->data` at the network header, so offset 0 is the IPv4 or IPv6
//! header. The filter keeps UDP and TCP packets whose source or destination
//! port is one of the configured DNS ports (`DNS_PORTS`, filled by user space
//! before the socket is bound) and drops everything else before it is copied
//! to user space. It keeps IPv4 first fragments and unfragmented packets
//! only (later fragments carry no ports), and for IPv6 only packets whose
//! first next-header is TCP or UDP.
//!
//! The return value is how many bytes to copy: the whole packet, or 0 to
//! drop it.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, socket_filter},
    maps::HashMap,
    programs::SkBuffContext,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// DNS ports to keep (key: port in host byte order; value unused).
#[map]
static DNS_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(16, 0);

#[socket_filter]
pub fn dns_filter(ctx: SkBuffContext) -> i64 {
    if keep(&ctx) { ctx.len() as i64 } else { 0 }
}

#[inline(always)]
fn keep(ctx: &SkBuffContext) -> bool {
    let Ok(first) = ctx.load::<u8>(0) else {
        return false;
    };
    let (proto, l4) = match first >> 4 {
        4 => {
            let ihl = ((first & 0x0f) as usize) * 4;
            if ihl < 20 {
                return false;
            }
            // Fragment offset (13 bits): later fragments carry no L4 header.
            let Ok(frag) = ctx.load::<[u8; 2]>(6) else {
                return false;
            };
            if (u16::from_be_bytes(frag) & 0x1fff) != 0 {
                return false;
            }
            let Ok(p) = ctx.load::<u8>(9) else {
                return false;
            };
            (p, ihl)
        }
        6 => {
            let Ok(p) = ctx.load::<u8>(6) else {
                return false;
            };
            (p, 40)
        }
        _ => return false,
    };
    if proto != IPPROTO_UDP && proto != IPPROTO_TCP {
        return false;
    }
    let Ok(ports) = ctx.load::<[u8; 4]>(l4) else {
        return false;
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    is_dns_port(sport) || is_dns_port(dport)
}

#[inline(always)]
fn is_dns_port(port: u16) -> bool {
    // SAFETY: a plain lookup; the value is not kept.
    unsafe { DNS_PORTS.get(&port) }.is_some()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
