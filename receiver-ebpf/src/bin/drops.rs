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
//! `bpf_probe_read_kernel`: one read for the IP header and the ports behind
//! it (a second for the ports behind IPv4 options).
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

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use flowscope_common::{AF_INET, AF_INET6, DropKey, DropOffsets, drop_counter};
use flowscope_ebpf::{atomic_add, btf_load, frozen, map_value, off, probe_read, zero_words};

/// Filled by user space before load (read-only data).
// SAFETY: no other symbol is named DROP_OFFSETS; user space finds and fills
// it by this name.
#[unsafe(no_mangle)]
// SAFETY: `DropOffsets` is plain integers, for which all zeroes is a value.
static DROP_OFFSETS: DropOffsets = unsafe { core::mem::zeroed() };

/// Dropped packets by (addresses, ports, protocol, reason). Preallocated
/// (flags 0): the kernel reserves every entry at load, about 120 bytes
/// each (1.9 MiB at the default 16,384), so a new drop's entry takes no
/// allocation in the program. User space sizes it (`drops.max_tracked`)
/// and deletes entries idle for a while.
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
/// client ports outside the host's `ip_local_port_range`). One bit per
/// port, port `p` at bit `p % 64` of word `p / 64`: an array lookup, which
/// the verifier inlines into a bounds check and an address computation,
/// instead of a hash map's call, hashing and bucket walk (#24). User space
/// is the only writer.
#[map]
static LISTEN_PORTS: Array<u64> = Array::with_max_entries(LISTEN_WORDS, 0);
const LISTEN_WORDS: u32 = 65536 / 64;

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
    let mut slot = MaybeUninit::<DropKey>::uninit();
    // SAFETY: the slot holds a whole `DropKey`, plain integers and byte
    // arrays; after the call every byte is written (#24: not
    // `DropKey::default()`, which calls `memset`).
    let key = unsafe {
        zero_words(slot.as_mut_ptr());
        slot.assume_init_mut()
    };
    key.reason = reason;
    decode(skb, key);
    count(key);
    0
}

/// The first 44 bytes at the network header: a 20-byte IPv4 header and the
/// ports behind it, or a 40-byte IPv6 header and the ports behind it.
struct Headers([u8; 44]);

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
    match LISTEN_PORTS.get(u32::from(port >> 6)) {
        Some(word) => (*word >> (port & 63)) & 1 != 0,
        None => false,
    }
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
    // One read for the IP header and the ports behind it when the IPv4
    // header has no options or the IPv6 header is followed by TCP or UDP
    // (#24: one helper call fewer per run). The ports are the same bytes
    // a read of their own would copy.
    if let Ok(h) = probe_read::<Headers>(ip) {
        let h = &h.0;
        match h[0] >> 4 {
            4 => match ipv4(h, key) {
                Some(20) => ports(&[h[20], h[21], h[22], h[23]], key),
                Some(ihl) => read_ports(ip + ihl, key),
                None => {}
            },
            6 => {
                if ipv6(h, key) {
                    ports(&[h[40], h[41], h[42], h[43]], key);
                }
            }
            _ => {}
        }
        return;
    }
    // Fewer than 44 bytes could be read (the buffer ends there): the IP
    // header alone, then the ports on their own.
    let l4 = match probe_read::<[u8; 40]>(ip) {
        Ok(h) => match h[0] >> 4 {
            4 => ipv4(&h, key),
            6 => ipv6(&h, key).then_some(40),
            _ => None,
        },
        // A short IPv4 packet may end within 40 bytes of the buffer's
        // end: its header's 20 bytes alone.
        Err(_) => match probe_read::<[u8; 20]>(ip) {
            Ok(h) if h[0] >> 4 == 4 => ipv4(&h, key),
            Ok(_) => None,
            Err(_) => {
                bump(drop_counter::READ_ERROR);
                None
            }
        },
    };
    if let Some(offset) = l4 {
        read_ports(ip + offset, key);
    }
}

/// An IPv4 header's addresses and protocol into `key`; the offset of its
/// TCP or UDP header, if the packet carries one here (not a later
/// fragment).
#[inline(always)]
fn ipv4<const N: usize>(h: &[u8; N], key: &mut DropKey) -> Option<u64> {
    key.family = AF_INET;
    key.protocol = h[9];
    key.saddr[..4].copy_from_slice(&h[12..16]);
    key.daddr[..4].copy_from_slice(&h[16..20]);
    let frag = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    // A later fragment carries no transport header.
    let ihl = u64::from(h[0] & 0x0f) * 4;
    (frag == 0 && ihl >= 20 && transport(key)).then_some(ihl)
}

/// An IPv6 header's addresses and next header into `key`; whether the
/// ports follow it. Only a first next header of TCP or UDP has them
/// there: extension headers leave the ports 0.
#[inline(always)]
fn ipv6<const N: usize>(h: &[u8; N], key: &mut DropKey) -> bool {
    key.family = AF_INET6;
    key.protocol = h[6];
    key.saddr.copy_from_slice(&h[8..24]);
    key.daddr.copy_from_slice(&h[24..40]);
    transport(key)
}

#[inline(always)]
fn transport(key: &DropKey) -> bool {
    key.protocol == IPPROTO_TCP || key.protocol == IPPROTO_UDP
}

/// The ports at `l4` (they lead both TCP and UDP headers) into `key`.
#[inline(always)]
fn read_ports(l4: u64, key: &mut DropKey) {
    match probe_read::<[u8; 4]>(l4) {
        Ok(p) => ports(&p, key),
        Err(_) => bump(drop_counter::READ_ERROR),
    }
}

/// The ports (the first 4 bytes of a TCP or UDP header) into `key`, the
/// client's left 0.
#[inline(always)]
fn ports(p: &[u8; 4], key: &mut DropKey) {
    let (s, d) = (
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    );
    // The client's port is no flow's: leave it out of the key. The
    // client's is the one in the host's ephemeral range (see
    // DropOffsets::ephemeral_low); when that does not tell, the one that
    // is not a local listener's. Else both stay.
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
