//! flowscope's flow programs.
//!
//! TCP is followed on stable tracepoints only (this kernel has no kprobes):
//! - `sock:inet_sock_set_state` sees every TCP state change: CLOSE->SYN_SENT
//!   is a connect() (process context, so the owner is known), SYN_RECV ->
//!   ESTABLISHED an accepted connection (softirq: owner learnt later),
//!   SYN_SENT->CLOSE a failed connect (sk_err says why), any ->CLOSE the end.
//!   The other transitions (FIN_WAIT1, CLOSE_WAIT, LAST_ACK, ...) carry
//!   nothing flowscope reports and leave after one comparison.
//! - `sock:sock_send_length`/`sock_recv_length` fire after every sendmsg and
//!   recvmsg with the byte count the call moved; for TCP only a read from a
//!   socket already in CLOSE matters (TCP's own counters, read at the
//!   close, cover everything else).
//! - `tcp:tcp_send_reset`/`tcp_receive_reset` report resets.
//!
//! Nothing is kept per TCP connection in the kernel (issue 24: a hash map
//! insert, delete and lookups per connection cost more than the programs'
//! whole budget); [`tcp`] says which ring-buffer records replace it, and
//! user space joins them (receiver/src/tcp_join).
//!
//! Every tracepoint has two programs with one body:
//! - a BTF-typed raw tracepoint (`tp_btf/...`, the `btf_*` programs), which
//!   gets the tracepoint's C arguments (the `struct sock *` itself) and reads
//!   the socket with plain loads the verifier checks against the kernel's
//!   BTF (a faulting load reads 0 instead of oopsing). User space loads
//!   these when the kernel accepts them;
//! - a classic tracepoint, which gets the event record and reads the socket
//!   with one `bpf_probe_read_kernel` call per field: the fallback.
//!
//! UDP is counted per (socket cookie, peer) in `UDP_FLOWS`, two ways:
//! - with the BTF-typed programs, at the socket: the send/recv length
//!   tracepoints fire once per datagram an application sends or receives
//!   (sendmsg, sendmmsg's every message, recvmsg...) with its byte count.
//!   A connected socket's peer is in the socket; an unconnected socket's
//!   peer is only in the syscall's address, which four `cgroup/sendmsg4/6`
//!   and `cgroup/recvmsg4/6` programs (run inside udp_sendmsg/udp_recvmsg
//!   when an address is passed or asked for) keep in `UDP_PEERS` for the
//!   tracepoint that ends the same syscall. No program sees a TCP packet;
//!   the sock_addr hooks run only for UDP. This is the default.
//! - with the classic tracepoints (the fallback), which cannot ask for a
//!   socket cookie: two cgroup_skb programs on the root cgroup count every
//!   UDP datagram that crosses the socket's cgroup hooks. They see every
//!   packet of the host, so a packet that is not UDP leaves after reading
//!   one header byte in place (direct packet access, no helper call).
//!
//! Either way the send/recv tracepoints record which process owns each UDP
//! socket cookie (`UDP_OWNERS`).
//!
//! Struct offsets come from user space (BTF and tracefs), see
//! [`flowscope_common::Offsets`].
//!
//! ## Where each part lives
//!
//! - [`tcp`]: the TCP programs (state changes, send/recv lengths, resets),
//!   in both sets;
//! - [`udp`]: UDP counting at the socket (BTF-typed set) and the flow
//!   and owner maps both UDP paths update;
//! - [`sock_addr`]: the `cgroup/sendmsg4/6`, `cgroup/recvmsg4/6` programs
//!   that keep an unconnected UDP socket's peer for [`udp`];
//! - [`skb`]: the cgroup_skb programs that count UDP in the fallback set;
//! - [`sock`]: how the programs read `struct sock` (plain loads or probe
//!   reads);
//! - [`events`]: the ring buffer records and process announcements;
//! - [`clock`]: the program user space runs once to relate the records'
//!   ticks to the monotonic clock.
//!
//! Maps and the read-only data user space fills are here, loaded by these
//! names (receiver/src/loader.rs). Helpers several eBPF objects share
//! (map value pointers, atomic adds, read-only data) are in the crate's
//! library, src/lib.rs.
#![no_std]
#![no_main]

mod clock;
mod events;
mod skb;
mod sock;
mod sock_addr;
mod tcp;
mod udp;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use flowscope_common::{ClockStamp, Offsets, Owner, Settings, UdpKey, UdpPeer, UdpStats, counter};
use flowscope_ebpf::{frozen, map_value};

/// Filled by user space before load (read-only data).
// SAFETY: no other symbol is named OFFSETS; user space finds and fills
// it by this name.
#[unsafe(no_mangle)]
// SAFETY: `Offsets` is plain integers, for which all zeroes is a value.
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };
// SAFETY: no other symbol is named SETTINGS; user space finds and fills
// it by this name.
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings { tcp: 1, udp: 1 };

// Sizes are defaults; user space sizes EVENTS from `ring_buffer_bytes` and
// UDP_FLOWS and UDP_OWNERS from the configured flow limit. UDP_FLOWS is not
// preallocated: an entry's memory is taken when a flow appears and given
// back when it goes, so an idle host does not pay for the configured
// maximum.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::SLOTS, 0);
#[map]
static UDP_FLOWS: HashMap<UdpKey, UdpStats> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);
/// Processes already announced to user space (tgid -> 1). LRU: a process
/// evicted is announced again, which only refreshes a cache.
#[map]
static SEEN_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);
/// The process this CPU last found in (or put into) `SEEN_PIDS`: a busy
/// client or server opens connection after connection, and this per-CPU
/// slot (an inlined array access) spares the hash lookup for each (#24).
#[map]
static LAST_SEEN_PID: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// Owner of a UDP socket by cookie. An LRU map: it is a cache that user
/// space backs with /proc, not data, so eviction loses nothing counted.
/// (The kernel preallocates every LRU map.)
#[map]
static UDP_OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(65536, 0);
/// The peer address of the UDP syscall a thread is in, by (thread id << 1
/// | 1 for a send): written by the cgroup/sendmsg and recvmsg programs, read
/// by the length tracepoint at the end of the same syscall. One entry per
/// thread that used an unconnected UDP socket lately, rewritten in place;
/// LRU, so threads that are gone make room. An entry is needed only while
/// its thread is inside one syscall (or between the parts of a corked
/// datagram), so 4,096 entries (about 400 KiB, preallocated) leave room
/// for that many threads sending or receiving at the same moment.
#[map]
static UDP_PEERS: LruHashMap<u64, UdpPeer> = LruHashMap::with_max_entries(4096, 0);
/// What [`clock::clock_stamp`] read, for user space.
#[map]
static CLOCK: Array<ClockStamp> = Array::with_max_entries(1, 0);

/// recvmsg(MSG_PEEK) looks at data and leaves it to the next read.
const MSG_PEEK: i32 = 2;

/// Whether a switch of `SETTINGS` is on.
#[inline(always)]
fn setting(field: &u32) -> bool {
    frozen(field) != 0
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(v) = COUNTERS.get_ptr_mut(index) {
        *map_value(v) += 1;
    }
}

#[inline(always)]
fn o() -> &'static Offsets {
    &OFFSETS
}
