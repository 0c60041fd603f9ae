//! The `cgroup/sendmsg4/6` and `cgroup/recvmsg4/6` programs, attached to
//! the root cgroup. The kernel runs them inside udp_sendmsg/udp_recvmsg
//! (and their IPv6 twins) only when the caller passes an address (sendto,
//! sendmsg with msg_name) or asks for the sender's (recvfrom, recvmsg
//! with msg_name): the unconnected sockets whose peer the socket does not
//! hold. They never see TCP. The address they see is kept in `UDP_PEERS`
//! for the length tracepoint that ends the same syscall ([`crate::udp`]).

use aya_ebpf::{EbpfContext, macros::cgroup_sock_addr, programs::SockAddrContext};
use flowscope_common::{AF_INET, AF_INET6, UdpPeer, counter};
use flowscope_ebpf::{map_value, socket_cookie};

use crate::udp::peer_key;
use crate::{SETTINGS, UDP_PEERS, bump, setting};

#[cgroup_sock_addr(sendmsg4)]
pub fn udp_sendmsg4(ctx: SockAddrContext) -> i32 {
    stash_peer(&ctx, true, false);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn udp_sendmsg6(ctx: SockAddrContext) -> i32 {
    stash_peer(&ctx, true, true);
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn udp_recvmsg4(ctx: SockAddrContext) -> i32 {
    stash_peer(&ctx, false, false);
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn udp_recvmsg6(ctx: SockAddrContext) -> i32 {
    stash_peer(&ctx, false, true);
    1
}

/// Keeps the address of an unconnected UDP send (its destination) or
/// receive (the datagram's sender) for the length tracepoint at the end of
/// the syscall. These programs run inside udp_sendmsg/udp_recvmsg (and
/// their IPv6 twins) only when the caller passed an address or asked for
/// one, and always allow the call (return 1).
#[inline(always)]
fn stash_peer(ctx: &SockAddrContext, transmit: bool, v6: bool) {
    if !setting(&SETTINGS.udp) {
        return;
    }
    let sa = ctx.sock_addr;
    let mut p = UdpPeer {
        cookie: socket_cookie(ctx.as_ptr()),
        transmit: u8::from(transmit),
        valid: 1,
        ..UdpPeer::default()
    };
    // user_port holds the port in network byte order in its low 16 bits.
    // SAFETY: `sa` is the program's `struct bpf_sock_addr` context; the
    // verifier checks each field access.
    p.rport = u16::from_be(unsafe { (*sa).user_port } as u16);
    if v6 {
        // SAFETY: as above.
        let ip = unsafe { (*sa).user_ip6 };
        p.raddr[..4].copy_from_slice(&ip[0].to_ne_bytes());
        p.raddr[4..8].copy_from_slice(&ip[1].to_ne_bytes());
        p.raddr[8..12].copy_from_slice(&ip[2].to_ne_bytes());
        p.raddr[12..].copy_from_slice(&ip[3].to_ne_bytes());
        p.family = AF_INET6;
    } else {
        // SAFETY: as above.
        p.raddr[..4].copy_from_slice(&unsafe { (*sa).user_ip4 }.to_ne_bytes());
        p.family = AF_INET;
    }
    let key = peer_key(transmit);
    match UDP_PEERS.get_ptr_mut(&key) {
        // The thread's entry from its last call: rewrite it in place.
        Some(e) => *map_value(e) = p,
        None => {
            if UDP_PEERS.insert(&key, &p, 0).is_err() {
                bump(counter::PEER_MAP_FULL);
            }
        }
    }
}
