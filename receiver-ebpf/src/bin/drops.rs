//! flowscope's drop program: why the kernel freed a packet it did not
//! deliver.
//!
//! `skb:kfree_skb` fires when the kernel drops a packet, with the reason
//! (`enum skb_drop_reason`, `TP_PROTO(struct sk_buff *skb, void *location,
//! enum skb_drop_reason reason, struct sock *rx_sk)` on Linux 6.12+; the
//! reason argument exists since 5.17). A packet that was used up normally
//! (`consume_skb()`, `kfree_skb_reason(skb, SKB_CONSUMED)`) goes to the
//! separate `skb:consume_skb` tracepoint on these kernels, so this program
//! runs only for packets that were dropped, plus the ones freed through the
//! plain `kfree_skb()` that has not been given a reason yet
//! (`NOT_SPECIFIED`): those are common on a healthy host (error paths of
//! every kind, but also some ordinary frees), so user space asks for them
//! only when configured (`ebpf.drops.ignore`, a bit set in the read-only
//! data) and the program leaves after one load and a shift. On a host that
//! drops nothing the program does not run at all.
//!
//! The program is a BTF-typed raw tracepoint (`tp_btf/kfree_skb`): the
//! `struct sk_buff *` is a typed pointer, read with plain loads at offsets
//! user space found in the kernel's BTF ([`DropOffsets`]). The packet
//! itself (`skb->head + skb->network_header`) is read with
//! `bpf_probe_read_kernel`: one read for the IP header, one for the ports.
//! The key is the packet's own addresses, ports and protocol with the
//! reason; user space finds the flow the packet belongs to (the sender's,
//! transmit; the receiver's, receive) from those, which is also how a
//! packet dropped in another network namespace (a firewall in the peer's
//! namespace) finds the local socket's flow. A local socket's own packets
//! carry its addresses, so `skb->sk` adds nothing the addresses do not
//! say. A packet whose headers are not there (not IP, network header not
//! set yet) is counted under its reason alone (family 0).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use flowscope_common::{AF_INET, AF_INET6, DropKey, DropOffsets, drop_counter};
use flowscope_ebpf::{atomic_add, btf_load, frozen, map_value, off, probe_read};

/// Filled by user space before load (read-only data).
// SAFETY: no other symbol is named DROP_OFFSETS; user space finds and fills
// it by this name.
#[unsafe(no_mangle)]
// SAFETY: `DropOffsets` is plain integers, for which all zeroes is a value.
static DROP_OFFSETS: DropOffsets = unsafe { core::mem::zeroed() };

/// Dropped packets by (addresses, ports, protocol, reason). Not
/// preallocated: a host that drops nothing holds no entry. User space
/// sizes it (`drops.max_tracked`) and deletes entries idle for a while.
#[map]
static DROPS: HashMap<DropKey, u64> = HashMap::with_max_entries(16384, 0);
#[map]
static DROP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_counter::COUNT, 0);
/// Drops by reason alone (index 256: a reason above 255), for the packets
/// `DROPS` had no room for: still counted, on the host, without their
/// flow.
#[map]
static DROPS_BY_REASON: PerCpuArray<u64> = PerCpuArray::with_max_entries(257, 0);
/// Ports a local server listens on (any namespace), as user space learns
/// them from the connection table: they tell which end of a packet is the
/// server where the ephemeral range cannot (a namespace may hand out
/// client ports outside the host's `ip_local_port_range`). The value is
/// unused.
#[map]
static LISTEN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(4096, 0);

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `skb->network_header` when no network header was set (`(u16)~0U`).
const NO_HEADER: u16 = 0xffff;

#[inline(always)]
fn bump(index: u32) {
    if let Some(v) = DROP_COUNTERS.get_ptr_mut(index) {
        *map_value(v) += 1;
    }
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct sk_buff *skb, void *location,
    //          enum skb_drop_reason reason, struct sock *rx_sk)
    let reason: u32 = ctx.arg(2);
    if ignored(reason) {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let mut key = DropKey {
        reason,
        ..DropKey::default()
    };
    decode(skb, &mut key);
    count(&key);
    0
}

/// Whether user space asked to leave `reason` alone (one load and a shift).
#[inline(always)]
fn ignored(reason: u32) -> bool {
    if reason >= 256 {
        return false;
    }
    let word = (reason >> 5) as usize & 7;
    let bits = frozen(&DROP_OFFSETS.ignore[word]);
    (bits >> (reason & 31)) & 1 != 0
}

/// Whether `port` is in the host's ephemeral range.
#[inline(always)]
fn ephemeral(port: u16) -> bool {
    let lo = frozen(&DROP_OFFSETS.ephemeral_low);
    let hi = frozen(&DROP_OFFSETS.ephemeral_high);
    port >= lo && port <= hi
}

/// Whether a local server listens on `port` ([`LISTEN_PORTS`]).
#[inline(always)]
fn listening(port: u16) -> bool {
    LISTEN_PORTS.get_ptr(&port).is_some()
}

/// The packet's addresses, ports and protocol into `key`; leaves family 0
/// when the packet has no IP header to read.
#[inline(always)]
fn decode(skb: u64, key: &mut DropKey) {
    let o = &DROP_OFFSETS;
    // Plain loads from the typed `struct sk_buff *`: the verifier checks
    // them against the kernel's BTF.
    let head: u64 = btf_load(skb, off(&o.skb_head));
    let nh: u16 = btf_load(skb, off(&o.skb_network_header));
    if head == 0 || nh == NO_HEADER {
        return;
    }
    let ip = head + u64::from(nh);
    let Ok(hdr) = probe_read::<[u8; 40]>(ip) else {
        // The header may end within 40 bytes of the buffer's end (a short
        // IPv4 packet): read the IPv4 header's 20 bytes alone.
        let Ok(h4) = probe_read::<[u8; 20]>(ip) else {
            bump(drop_counter::READ_ERROR);
            return;
        };
        if h4[0] >> 4 == 4 {
            ipv4(ip, &h4, key);
        }
        return;
    };
    match hdr[0] >> 4 {
        4 => {
            let mut h4 = [0u8; 20];
            h4.copy_from_slice(&hdr[..20]);
            ipv4(ip, &h4, key);
        }
        6 => {
            key.family = AF_INET6;
            key.protocol = hdr[6];
            key.saddr.copy_from_slice(&hdr[8..24]);
            key.daddr.copy_from_slice(&hdr[24..40]);
            // Only a first next-header of TCP or UDP has its ports here;
            // extension headers leave the ports 0.
            ports(ip + 40, key);
        }
        _ => {}
    }
}

#[inline(always)]
fn ipv4(ip: u64, h: &[u8; 20], key: &mut DropKey) {
    key.family = AF_INET;
    key.protocol = h[9];
    key.saddr[..4].copy_from_slice(&h[12..16]);
    key.daddr[..4].copy_from_slice(&h[16..20]);
    let frag = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    if frag != 0 {
        // A later fragment carries no transport header.
        return;
    }
    let ihl = u64::from(h[0] & 0x0f) * 4;
    if ihl >= 20 {
        ports(ip + ihl, key);
    }
}

#[inline(always)]
fn ports(l4: u64, key: &mut DropKey) {
    if key.protocol != IPPROTO_TCP && key.protocol != IPPROTO_UDP {
        return;
    }
    // Source and destination port lead both TCP and UDP headers.
    match probe_read::<[u8; 4]>(l4) {
        Ok(p) => {
            let (s, d) = (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            );
            // The client's port is no flow's: leave it out of the key. The
            // client's is the one in the host's ephemeral range (see
            // DropOffsets::ephemeral_low); when that does not tell, the one
            // that is not a local listener's. Else both stay.
            let (es, ed) = (ephemeral(s), ephemeral(d));
            let (client_s, client_d) = if es != ed {
                (es, ed)
            } else {
                let (ls, ld) = (listening(s), listening(d));
                (ld && !ls, ls && !ld)
            };
            key.sport = if client_s { 0 } else { s };
            key.dport = if client_d { 0 } else { d };
        }
        Err(_) => bump(drop_counter::READ_ERROR),
    }
}

#[inline(always)]
fn count(key: &DropKey) {
    if let Some(v) = DROPS.get_ptr_mut(key) {
        atomic_add(map_value(v), 1);
        return;
    }
    // NOEXIST: another CPU may have created the entry meanwhile.
    if DROPS.insert(key, &1, BPF_NOEXIST as u64).is_err() {
        match DROPS.get_ptr_mut(key) {
            Some(v) => atomic_add(map_value(v), 1),
            None => {
                bump(drop_counter::MAP_FULL);
                let i = if key.reason < 256 { key.reason } else { 256 };
                if let Some(v) = DROPS_BY_REASON.get_ptr_mut(i) {
                    *map_value(v) += 1;
                }
            }
        }
    }
}
