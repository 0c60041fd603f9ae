//! UDP counting at the socket (the BTF-typed set's default), and the
//! flow and owner maps both UDP paths update.
//!
//! The send/recv length tracepoints ([`crate::tcp`] receives them) fire
//! once per datagram an application sends or receives (sendmsg, each
//! message of sendmmsg, recvmsg...), in the calling process, with its byte
//! count. A flow is (socket cookie, peer) in `UDP_FLOWS`. A connected
//! socket's peer is in the socket; an unconnected one's is only in the
//! syscall's address, which the [`crate::sock_addr`] programs keep in
//! `UDP_PEERS` earlier in the same syscall. In the fallback set, the
//! [`crate::skb`] programs count the datagrams and the length tracepoints
//! only record owners (`UDP_OWNERS`).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
};
use flowscope_common::{AF_INET, AF_INET6, Owner, UdpKey, UdpStats, counter};
use flowscope_ebpf::{atomic_add, map_value, now_ns, off, probe_read, socket_cookie};

use crate::events::announce;
use crate::sock::{Direct, Mem, netns_of};
use crate::{MSG_PEEK, UDP_FLOWS, UDP_OWNERS, UDP_PEERS, bump, o};

/// recvmsg(MSG_ERRQUEUE) reads the socket's error queue (ICMP errors,
/// timestamps), not a datagram.
const MSG_ERRQUEUE: i32 = 0x2000;
/// A UDP socket's `sk_state` after connect() (TCP_ESTABLISHED).
const UDP_CONNECTED: u8 = 1;

/// Records who owns UDP socket `cookie` (the calling process), once.
#[inline(always)]
pub(crate) fn udp_owner<M: Mem>(sk: u64, cookie: u64) {
    if UDP_OWNERS.get_ptr(&cookie).is_some() {
        return;
    }
    let owner = Owner {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        netns: netns_of::<M>(sk),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    announce(owner.tgid, &owner.comm);
    if UDP_OWNERS.insert(&cookie, &owner, 0).is_err() {
        bump(counter::OWNER_MAP_FULL);
    }
}

/// The `UDP_PEERS` key of the calling thread's send or receive.
#[inline(always)]
pub(crate) fn peer_key(transmit: bool) -> u64 {
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    (tid << 1) | u64::from(transmit)
}

/// Turns an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what an IPv6
/// socket sees of IPv4 traffic) into the IPv4 address, as the packet
/// carried it; returns whether it did.
#[inline(always)]
fn unmap(addr: &mut [u8; 16]) -> bool {
    let head = u64::from_ne_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let mid = u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]);
    if head != 0 || mid != u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        return false;
    }
    let v4 = [addr[12], addr[13], addr[14], addr[15]];
    *addr = [0; 16];
    addr[..4].copy_from_slice(&v4);
    true
}

/// One UDP sendmsg/recvmsg (BTF-typed programs only): `ret` bytes moved
/// (0 is a datagram of no bytes), or the call failed (`ret` < 0).
///
/// The peer is the address the cgroup/sendmsg or recvmsg program saw in
/// this syscall (unconnected sockets), else the connected socket's, else
/// unknown (an unconnected socket read without asking for the sender:
/// counted under the unspecified address and port 0).
///
/// A send counts one packet, except: data appended to a corked datagram
/// (MSG_MORE, UDP_CORK: `pending` is still set after the call) counts its
/// bytes and no packet until the call that sends it, and a socket with the
/// UDP_SEGMENT option counts the segments GSO will cut the datagram into.
#[inline(always)]
pub(crate) fn udp_length(sk: u64, ret: i32, transmit: bool, flags: i32) -> Result<(), i32> {
    let offs = o();
    let corked =
        transmit && ret >= 0 && probe_read::<i32>(sk + off(&offs.udp_pending)).unwrap_or(0) != 0;
    let cookie = socket_cookie(sk as *mut c_void);
    let mut key = UdpKey {
        cookie,
        ..UdpKey::default()
    };
    let mut stashed = false;
    if let Some(p) = UDP_PEERS.get_ptr_mut(&peer_key(transmit)) {
        let p = map_value(p);
        if p.valid != 0 && p.cookie == cookie {
            key.raddr = p.raddr;
            key.rport = p.rport;
            key.family = p.family;
            stashed = true;
            // A corked datagram's later parts run no sock_addr program:
            // they go where the first part said.
            if !corked {
                p.valid = 0;
            }
        }
    }
    if ret < 0 || (!transmit && flags & (MSG_PEEK | MSG_ERRQUEUE) != 0) {
        return Ok(());
    }
    bump(counter::UDP_EVENTS);
    let family: u16 = Direct::read(sk, off(&offs.sk_family))?;
    let mut laddr = [0u8; 16];
    if family == AF_INET {
        let l: u32 = Direct::read(sk, off(&offs.sk_rcv_saddr))?;
        laddr[..4].copy_from_slice(&l.to_ne_bytes());
    } else if family == AF_INET6 {
        laddr = Direct::read16(sk, off(&offs.sk_v6_rcv_saddr))?;
    } else {
        return Ok(());
    }
    if !stashed {
        key.family = family;
        if Direct::read::<u8>(sk, off(&offs.sk_state))? == UDP_CONNECTED {
            key.rport = u16::from_be(Direct::read(sk, off(&offs.sk_dport))?);
            if family == AF_INET {
                let r: u32 = Direct::read(sk, off(&offs.sk_daddr))?;
                key.raddr[..4].copy_from_slice(&r.to_ne_bytes());
            } else {
                key.raddr = Direct::read16(sk, off(&offs.sk_v6_daddr))?;
            }
        }
    }
    if key.family == AF_INET6 && unmap(&mut key.raddr) {
        key.family = AF_INET;
    }
    if family == AF_INET6 && key.family == AF_INET && !unmap(&mut laddr) {
        // An IPv6 socket bound to `::` sending to or receiving from IPv4.
        laddr = [0; 16];
    }
    let bytes = ret as u64;
    let segs = if corked {
        0
    } else if transmit {
        let gso = probe_read::<u16>(sk + off(&offs.udp_gso_size))
            .map(u64::from)
            .unwrap_or(0);
        if gso != 0 && bytes > gso {
            bytes.div_ceil(gso)
        } else {
            1
        }
    } else {
        1
    };
    let lport: u16 = Direct::read(sk, off(&offs.sk_num))?;
    account_udp(&key, laddr, lport, transmit, bytes, segs);
    udp_owner::<Direct>(sk, cookie);
    Ok(())
}

/// Adds `payload` bytes and `segs` packets to flow `key`, creating it.
#[inline(always)]
pub(crate) fn account_udp(
    key: &UdpKey,
    laddr: [u8; 16],
    lport: u16,
    egress: bool,
    payload: u64,
    segs: u64,
) {
    let now = now_ns();
    if add_udp(key, egress, payload, segs, now) {
        return;
    }
    let mut s = UdpStats {
        laddr,
        lport,
        last_ns: now,
        ..UdpStats::default()
    };
    if egress {
        s.bytes_tx = payload;
        s.packets_tx = segs;
    } else {
        s.bytes_rx = payload;
        s.packets_rx = segs;
    }
    // NOEXIST: another CPU may have created the entry meanwhile; then add
    // to it instead of overwriting its counts.
    if UDP_FLOWS.insert(key, &s, BPF_NOEXIST as u64).is_err()
        && !add_udp(key, egress, payload, segs, now)
    {
        bump(counter::UDP_MAP_FULL);
    }
}

#[inline(always)]
fn add_udp(key: &UdpKey, egress: bool, payload: u64, segs: u64, now: u64) -> bool {
    let Some(s) = UDP_FLOWS.get_ptr_mut(key) else {
        return false;
    };
    let s = map_value(s);
    if egress {
        atomic_add(&mut s.bytes_tx, payload);
        atomic_add(&mut s.packets_tx, segs);
    } else {
        atomic_add(&mut s.bytes_rx, payload);
        atomic_add(&mut s.packets_rx, segs);
    }
    s.last_ns = now;
    true
}
