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
//!   recvmsg with the byte count the call moved: the application's bytes,
//!   exactly, and the calling process.
//! - `tcp:tcp_send_reset`/`tcp_receive_reset` count resets,
//!   `tcp:tcp_retransmit_skb` refreshes the retransmit snapshot.
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
//! The state of a connection lives in `CONNS` keyed by its `struct sock *`;
//! user space iterates it every interval for deltas and gets the final
//! counters of closed connections through the `EVENTS` ring buffer.
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
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_socket_cookie, bpf_skc_to_tcp_sock},
    },
    macros::{btf_tracepoint, cgroup_skb, cgroup_sock_addr, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, SkBuffContext, SockAddrContext, TracePointContext},
};
use flowscope_common::{
    AF_INET, AF_INET6, Conn, Event, IPPROTO_TCP, IPPROTO_UDP, Offsets, Owner, Settings, UdpKey,
    UdpPeer, UdpStats, counter, event_kind, role, tcp_state,
};

/// Filled by user space before load (read-only data).
#[unsafe(no_mangle)]
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings { tcp: 1, udp: 1 };

// Sizes are defaults; user space sizes CONNS, UDP_FLOWS and UDP_OWNERS from
// the configured flow limit. The two hash maps are not preallocated: an
// entry's memory is taken when a connection or flow appears and given back
// when it goes, so an idle host does not pay for the configured maximum.
#[map]
static CONNS: HashMap<u64, Conn> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
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

const MSG_PEEK: i32 = 2;
/// recvmsg(MSG_ERRQUEUE) reads the socket's error queue (ICMP errors,
/// timestamps), not a datagram.
const MSG_ERRQUEUE: i32 = 0x2000;
/// A UDP socket's `sk_state` after connect() (TCP_ESTABLISHED).
const UDP_CONNECTED: u8 = 1;

#[inline(always)]
fn off(field: &u32) -> u64 {
    // Volatile, so the compiler does not fold the zero placeholder. The
    // verifier reads the value from the frozen read-only map, so the
    // offset is a known constant to it.
    u64::from(unsafe { core::ptr::read_volatile(field) })
}

#[inline(always)]
fn setting(field: &u32) -> bool {
    unsafe { core::ptr::read_volatile(field) != 0 }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(v) = COUNTERS.get_ptr_mut(index) {
        unsafe { *v += 1 };
    }
}

// Records built and copied word by word (#24). `Conn::default()` and a
// struct assignment compile to calls of the object's `memset`/`memmove`
// subprograms, which move one byte per instruction (120 and 144 bytes
// here): `perf record` put them at about a tenth of the flow programs'
// samples. Volatile 8-byte stores are not turned back into those calls.
// `Conn` and `Event` are 8-aligned and multiples of 8 bytes long.

/// Writes `words` zero words at `p`.
#[inline(always)]
fn zero_words(p: *mut u64, words: usize) {
    for i in 0..words {
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

/// A zeroed `Conn` in `slot` (what `Conn::default()` is, without the call).
#[inline(always)]
fn zero_conn(slot: &mut MaybeUninit<Conn>) -> &mut Conn {
    zero_words(slot.as_mut_ptr().cast(), core::mem::size_of::<Conn>() / 8);
    unsafe { slot.assume_init_mut() }
}

/// `*dst = *src`, word by word.
#[inline(always)]
fn copy_conn(dst: *mut Conn, src: *const Conn) {
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..core::mem::size_of::<Conn>() / 8 {
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}

#[inline(always)]
fn o() -> &'static Offsets {
    &OFFSETS
}

/// How a program reads kernel memory (`struct sock`, `struct tcp_sock`,
/// `struct net`).
trait Mem {
    /// Whether UDP datagrams are counted by the length tracepoints (the
    /// BTF-typed set, which can ask for a socket's cookie) rather than by
    /// the cgroup_skb programs.
    const SOCKET_UDP: bool;
    /// Reads a `T` (1, 2, 4 or 8 bytes) at `base + offset`.
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32>;
    /// Reads 16 bytes (an IPv6 address) at `base + offset`.
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32>;
    /// The `struct tcp_sock` of TCP socket `sk`, or 0.
    fn tcp_sock(sk: u64) -> u64;
}

/// Classic tracepoints: the socket pointer is a number to the verifier,
/// every field costs a `bpf_probe_read_kernel` call.
struct Probe;

impl Mem for Probe {
    const SOCKET_UDP: bool = false;

    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32> {
        let r = unsafe { bpf_probe_read_kernel((base + offset) as *const T) };
        if r.is_err() {
            bump(counter::READ_ERROR);
        }
        r
    }

    #[inline(always)]
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32> {
        Self::read(base, offset)
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        // struct tcp_sock begins with its struct sock; the protocol was
        // checked by the caller.
        sk
    }
}

/// BTF-typed raw tracepoints: the socket is a typed kernel pointer, and a
/// load from it at a constant offset is checked against `struct sock`'s
/// BTF by the verifier and runs as one instruction (with a fault handler).
struct Direct;

impl Mem for Direct {
    const SOCKET_UDP: bool = true;

    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32> {
        Ok(unsafe { core::ptr::read_volatile((base + offset) as *const T) })
    }

    #[inline(always)]
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32> {
        // Two 8-byte loads: the verifier accepts scalar loads anywhere
        // inside an array member.
        let a: u64 = Self::read(base, offset)?;
        let b: u64 = Self::read(base, offset + 8)?;
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&a.to_ne_bytes());
        v[8..].copy_from_slice(&b.to_ne_bytes());
        Ok(v)
    }

    #[inline(always)]
    fn tcp_sock(sk: u64) -> u64 {
        // The verifier allows loads only within the pointer's BTF type, and
        // the tracepoints pass a `struct sock *`: this helper turns it into
        // a `struct tcp_sock *` (or NULL when the socket is not TCP).
        unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) as u64 }
    }
}

/// Network namespace inode of socket `sk`.
#[inline(always)]
fn netns_of<M: Mem>(sk: u64) -> u32 {
    let net: u64 = M::read(sk, off(&o().sk_net)).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    M::read(net, off(&o().net_ns_inum)).unwrap_or(0)
}

/// Family, ports, addresses and netns of socket `sk` into `c`.
#[inline(always)]
fn fill_tuple<M: Mem>(sk: u64, c: &mut Conn) -> Result<(), i32> {
    let offs = o();
    let family: u16 = M::read(sk, off(&offs.sk_family))?;
    c.family = family;
    c.lport = M::read(sk, off(&offs.sk_num))?;
    c.rport = u16::from_be(M::read(sk, off(&offs.sk_dport))?);
    if family == AF_INET {
        let l: u32 = M::read(sk, off(&offs.sk_rcv_saddr))?;
        let r: u32 = M::read(sk, off(&offs.sk_daddr))?;
        c.laddr[..4].copy_from_slice(&l.to_ne_bytes());
        c.raddr[..4].copy_from_slice(&r.to_ne_bytes());
    } else {
        c.laddr = M::read16(sk, off(&offs.sk_v6_rcv_saddr))?;
        c.raddr = M::read16(sk, off(&offs.sk_v6_daddr))?;
    }
    c.netns = netns_of::<M>(sk);
    Ok(())
}

/// Segment, retransmit and RTT counters of `struct tcp_sock` into `c`.
#[inline(always)]
fn snapshot<M: Mem>(sk: u64, c: &mut Conn) {
    let tp = M::tcp_sock(sk);
    if tp == 0 {
        return;
    }
    let offs = o();
    if let Ok(v) = M::read::<u32>(tp, off(&offs.tcp_segs_in)) {
        c.segs_in = v;
    }
    if let Ok(v) = M::read::<u32>(tp, off(&offs.tcp_segs_out)) {
        c.segs_out = v;
    }
    if let Ok(v) = M::read::<u32>(tp, off(&offs.tcp_total_retrans)) {
        c.total_retrans = v;
    }
    if let Ok(v) = M::read::<u32>(tp, off(&offs.tcp_srtt_us)) {
        c.srtt_us = v >> 3;
    }
    if let Ok(v) = M::read::<u32>(tp, off(&offs.tcp_mdev_us)) {
        c.rttvar_us = v >> 2;
    }
}

#[inline(always)]
fn set_process(c: &mut Conn) {
    c.tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    c.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    announce(c.tgid, &c.comm);
}

/// Tells user space about a process the first time it owns a socket, so
/// /proc is read while the process still runs: short-lived clients keep
/// their executable name and service name.
#[inline(always)]
fn announce(tgid: u32, comm: &[u8; 16]) {
    if tgid == 0 {
        return;
    }
    let last = LAST_SEEN_PID.get_ptr_mut(0);
    if let Some(last) = last {
        if unsafe { *last } == tgid {
            return;
        }
        unsafe { *last = tgid };
    }
    if SEEN_PIDS.get_ptr(&tgid).is_some() {
        return;
    }
    let _ = SEEN_PIDS.insert(&tgid, &1, 0);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            unsafe {
                zero_words(ev.cast(), core::mem::size_of::<Event>() / 8);
                (*ev).kind = event_kind::PROCESS;
                (*ev).conn.tgid = tgid;
                (*ev).conn.comm = *comm;
            }
            // Forced: records submitted without a wakeup may be pending, and
            // the adaptive default would then not wake user space at all.
            entry.submit(BPF_RB_FORCE_WAKEUP);
        }
        None => bump(counter::RINGBUF_FULL),
    }
}

#[inline(always)]
fn sk_state<M: Mem>(sk: u64) -> i32 {
    i32::from(M::read::<u8>(sk, off(&o().sk_state)).unwrap_or(0))
}

/// bpf_ringbuf_query/submit flags (include/uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake user space each time another this much is waiting; in between,
/// user space drains on its own timer (every 100 ms). Waking for every
/// close event cost most of the agent's CPU at 10,000 connections per
/// second.
const WAKE_BYTES: u64 = 64 * 1024;
/// What one `Event` takes in the ring buffer: an 8-byte header, rounded up
/// to 8 bytes.
const EVENT_RECORD_BYTES: u64 = (core::mem::size_of::<Event>() as u64 + 8 + 7) & !7;

/// The submit flag for a record just reserved: a wake-up only when this
/// record took the waiting data across a multiple of [`WAKE_BYTES`].
///
/// Waking for every record while more than `WAKE_BYTES` wait (as before)
/// queues an irq_work per record whenever user space is slow to run, and on
/// a virtual machine each one is an APIC write that exits to the
/// hypervisor: it was most of `inet_sock_set_state`'s cost under load. Two
/// CPUs reserving at once may both miss the crossing; the timer drains
/// what they wrote.
#[inline(always)]
fn wakeup() -> u64 {
    // Producer minus consumer position, this record included.
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    if avail / WAKE_BYTES != avail.saturating_sub(EVENT_RECORD_BYTES) / WAKE_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends a ring buffer event for `sk`, copying `conn` and letting `fill`
/// adjust it. A full ring buffer is counted, never silent.
#[inline(always)]
fn emit(kind: u32, sk: u64, conn: *const Conn, fill: impl FnOnce(&mut Event)) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            unsafe {
                (*ev).kind = kind;
                (*ev).errno = 0;
                (*ev).sk = sk;
                (*ev).ts_ns = bpf_ktime_get_ns();
                copy_conn(&mut (*ev).conn, conn);
                fill(&mut *ev);
            }
            entry.submit(wakeup());
        }
        None => bump(counter::RINGBUF_FULL),
    }
}

/// Whether a state change is one flowscope acts on: into SYN_SENT
/// (connect), ESTABLISHED (open) or CLOSE (end or failure).
#[inline(always)]
fn state_matters(new: i32) -> bool {
    new == tcp_state::SYN_SENT || new == tcp_state::ESTABLISHED || new == tcp_state::CLOSE
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = tp_set_state(&ctx);
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_set_state(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let new: i32 = ctx.arg(2);
    if !state_matters(new) || !setting(&SETTINGS.tcp) {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let Ok(protocol) = Direct::read::<u16>(sk, off(&o().sk_protocol)) else {
        return 0;
    };
    if protocol != IPPROTO_TCP {
        return 0;
    }
    let _ = set_state::<Direct>(sk, ctx.arg(1), new);
    0
}

#[inline(always)]
fn tp_read<T>(ctx: &TracePointContext, field: &u32) -> Result<T, i32> {
    unsafe { ctx.read_at::<T>(off(field) as usize) }
}

#[inline(always)]
fn tp_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let offs = o();
    let new: i32 = tp_read(ctx, &offs.set_state_newstate)?;
    if !state_matters(new) || !setting(&SETTINGS.tcp) {
        return Ok(());
    }
    let protocol: u16 = tp_read(ctx, &offs.set_state_protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = tp_read(ctx, &offs.set_state_skaddr)?;
    let old: i32 = tp_read(ctx, &offs.set_state_oldstate)?;
    set_state::<Probe>(sk, old, new)
}

/// A TCP state change flowscope acts on (see [`state_matters`]).
#[inline(always)]
fn set_state<M: Mem>(sk: u64, old: i32, new: i32) -> Result<(), i32> {
    bump(counter::TCP_EVENTS);
    if new == tcp_state::SYN_SENT {
        // connect(): runs in the caller's context. The local address is
        // chosen; the port may not be yet (it is re-read at ESTABLISHED).
        let mut slot = MaybeUninit::uninit();
        let c = zero_conn(&mut slot);
        c.role = role::CLIENT;
        c.opened_ns = unsafe { bpf_ktime_get_ns() };
        set_process(c);
        fill_tuple::<M>(sk, c)?;
        if CONNS.insert(&sk, c, 0).is_err() {
            bump(counter::TCP_MAP_FULL);
        }
    } else if new == tcp_state::ESTABLISHED {
        if old == tcp_state::SYN_SENT {
            if let Some(c) = CONNS.get_ptr_mut(&sk) {
                let c = unsafe { &mut *c };
                c.established = 1;
                fill_tuple::<M>(sk, c)?;
                snapshot::<M>(sk, c);
            }
        } else if old == tcp_state::SYN_RECV {
            // The child socket of an accept()ed connection, in softirq: the
            // owning process is recorded on its first read or write.
            let mut slot = MaybeUninit::uninit();
            let c = zero_conn(&mut slot);
            c.role = role::SERVER;
            c.established = 1;
            c.opened_ns = unsafe { bpf_ktime_get_ns() };
            fill_tuple::<M>(sk, c)?;
            snapshot::<M>(sk, c);
            if CONNS.insert(&sk, c, 0).is_err() {
                bump(counter::TCP_MAP_FULL);
            }
        }
    } else if new == tcp_state::CLOSE
        && let Some(c) = CONNS.get_ptr_mut(&sk)
    {
        let c = unsafe { &mut *c };
        snapshot::<M>(sk, c);
        if old == tcp_state::SYN_SENT && c.established == 0 {
            // tcp_done_with_error() stores sk_err before tcp_done()
            // moves the socket to CLOSE, so it is readable here.
            let err: i32 = M::read(sk, off(&o().sk_err)).unwrap_or(0);
            emit(event_kind::FAILED, sk, c, |ev| ev.errno = err);
        } else {
            emit(event_kind::CLOSE, sk, c, |_| {});
        }
        let _ = CONNS.remove(&sk);
    }
    Ok(())
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = tp_length(&ctx, true);
    0
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = tp_length(&ctx, false);
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn btf_send_length(ctx: BtfTracePointContext) -> u32 {
    btf_length(&ctx, true);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn btf_recv_length(ctx: BtfTracePointContext) -> u32 {
    btf_length(&ctx, false);
    0
}

#[inline(always)]
fn btf_length(ctx: &BtfTracePointContext, transmit: bool) {
    // TP_PROTO(struct sock *sk, int ret, int flags)
    let ret: i32 = ctx.arg(1);
    let sk: u64 = ctx.arg(0);
    let Ok(protocol) = Direct::read::<u16>(sk, off(&o().sk_protocol)) else {
        return;
    };
    if protocol == IPPROTO_UDP {
        // Failed calls too: they must consume the peer their sock_addr
        // program left (ret 0 is a datagram of no bytes).
        if setting(&SETTINGS.udp) {
            let _ = udp_length(sk, ret, transmit, ctx.arg(2));
        }
        return;
    }
    if ret <= 0 {
        return;
    }
    let _ = on_length::<Direct>(sk, ret, protocol, transmit, || ctx.arg(2));
}

#[inline(always)]
fn tp_length(ctx: &TracePointContext, transmit: bool) -> Result<(), i32> {
    let offs = o();
    let (sk_field, proto_field, ret_field, flags_field) = if transmit {
        (
            &offs.send_len_sk,
            &offs.send_len_protocol,
            &offs.send_len_ret,
            &offs.send_len_flags,
        )
    } else {
        (
            &offs.recv_len_sk,
            &offs.recv_len_protocol,
            &offs.recv_len_ret,
            &offs.recv_len_flags,
        )
    };
    let ret: i32 = tp_read(ctx, ret_field)?;
    if ret <= 0 {
        return Ok(());
    }
    let protocol: u16 = tp_read(ctx, proto_field)?;
    let sk: u64 = tp_read(ctx, sk_field)?;
    on_length::<Probe>(sk, ret, protocol, transmit, || {
        tp_read::<i32>(ctx, flags_field).unwrap_or(0)
    })
}

/// One sendmsg/recvmsg that moved `ret` > 0 bytes; `flags` is read only
/// for TCP receives.
#[inline(always)]
fn on_length<M: Mem>(
    sk: u64,
    ret: i32,
    protocol: u16,
    transmit: bool,
    flags: impl FnOnce() -> i32,
) -> Result<(), i32> {
    if protocol == IPPROTO_TCP && setting(&SETTINGS.tcp) {
        if !transmit && flags() & MSG_PEEK != 0 {
            return Ok(());
        }
        bump(counter::TCP_EVENTS);
        let bytes = ret as u64;
        if let Some(c) = CONNS.get_ptr_mut(&sk) {
            let c = unsafe { &mut *c };
            // Two threads may write one socket at once: add atomically.
            let counter = if transmit {
                &mut c.bytes_tx
            } else {
                &mut c.bytes_rx
            };
            atomic_add(counter, bytes);
            if c.tgid == 0 {
                set_process(c);
            }
            snapshot::<M>(sk, c);
            return Ok(());
        }
        let mut c = Conn::default();
        fill_tuple::<M>(sk, &mut c)?;
        if c.family != AF_INET && c.family != AF_INET6 {
            return Ok(());
        }
        set_process(&mut c);
        if transmit {
            c.bytes_tx = bytes;
        } else {
            c.bytes_rx = bytes;
        }
        if sk_state::<M>(sk) == tcp_state::CLOSE {
            // Closed and already reported: an application still reading
            // what arrived before the FIN. User space adds these bytes to
            // the closed connection's record.
            emit(event_kind::LATE, sk, &c, |_| {});
        } else {
            // A connection that predates the agent (its open was not seen).
            c.established = 1;
            snapshot::<M>(sk, &mut c);
            if CONNS.insert(&sk, &c, BPF_NOEXIST as u64).is_err() {
                bump(counter::TCP_MAP_FULL);
            }
        }
    } else if protocol == IPPROTO_UDP && !M::SOCKET_UDP && setting(&SETTINGS.udp) {
        bump(counter::UDP_EVENTS);
        // The cgroup_skb program asked for this socket's cookie when the
        // datagram passed (before this tracepoint fires), so it is set.
        let cookie: u64 = M::read(sk, off(&o().sk_cookie))?;
        if cookie == 0 {
            return Ok(());
        }
        let family: u16 = M::read(sk, off(&o().sk_family))?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(());
        }
        udp_owner::<M>(sk, cookie);
    }
    Ok(())
}

/// Records who owns UDP socket `cookie` (the calling process), once.
#[inline(always)]
fn udp_owner<M: Mem>(sk: u64, cookie: u64) {
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
fn peer_key(transmit: bool) -> u64 {
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
fn udp_length(sk: u64, ret: i32, transmit: bool, flags: i32) -> Result<(), i32> {
    let offs = o();
    let corked = transmit
        && ret >= 0
        && unsafe { bpf_probe_read_kernel((sk + off(&offs.udp_pending)) as *const i32) }
            .unwrap_or(0)
            != 0;
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    let mut key = UdpKey {
        cookie,
        ..UdpKey::default()
    };
    let mut stashed = false;
    if let Some(p) = UDP_PEERS.get_ptr_mut(&peer_key(transmit)) {
        let p = unsafe { &mut *p };
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
        let gso = unsafe { bpf_probe_read_kernel((sk + off(&offs.udp_gso_size)) as *const u16) }
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
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        transmit: u8::from(transmit),
        valid: 1,
        ..UdpPeer::default()
    };
    // user_port holds the port in network byte order in its low 16 bits.
    p.rport = u16::from_be(unsafe { (*sa).user_port } as u16);
    if v6 {
        let ip = unsafe { (*sa).user_ip6 };
        p.raddr[..4].copy_from_slice(&ip[0].to_ne_bytes());
        p.raddr[4..8].copy_from_slice(&ip[1].to_ne_bytes());
        p.raddr[8..12].copy_from_slice(&ip[2].to_ne_bytes());
        p.raddr[12..].copy_from_slice(&ip[3].to_ne_bytes());
        p.family = AF_INET6;
    } else {
        p.raddr[..4].copy_from_slice(&unsafe { (*sa).user_ip4 }.to_ne_bytes());
        p.family = AF_INET;
    }
    let key = peer_key(transmit);
    match UDP_PEERS.get_ptr_mut(&key) {
        // The thread's entry from its last call: rewrite it in place.
        Some(e) => unsafe { *e = p },
        None => {
            if UDP_PEERS.insert(&key, &p, 0).is_err() {
                bump(counter::PEER_MAP_FULL);
            }
        }
    }
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    if let Ok(sk) = tp_read::<u64>(&ctx, &o().send_reset_skaddr) {
        let _ = on_reset::<Probe>(sk, true);
    }
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if let Ok(sk) = tp_read::<u64>(&ctx, &o().recv_reset_skaddr) {
        let _ = on_reset::<Probe>(sk, false);
    }
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn btf_send_reset(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(const struct sock *sk, const struct sk_buff *skb, reason)
    let _ = on_reset::<Direct>(ctx.arg(0), true);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn btf_recv_reset(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct sock *sk)
    let _ = on_reset::<Direct>(ctx.arg(0), false);
    0
}

#[inline(always)]
fn on_reset<M: Mem>(sk: u64, transmit: bool) -> Result<(), i32> {
    if !setting(&SETTINGS.tcp) {
        return Ok(());
    }
    if sk == 0 {
        // A reset answering a segment no socket owns (a closed port).
        return Ok(());
    }
    bump(counter::TCP_EVENTS);
    if let Some(c) = CONNS.get_ptr_mut(&sk) {
        let c = unsafe { &mut *c };
        if transmit {
            c.resets_tx += 1;
        } else {
            c.resets_rx += 1;
        }
        return Ok(());
    }
    // An abortive close (SO_LINGER 0) moves the socket to CLOSE before the
    // reset goes out, so its record is gone: report the reset late.
    if sk_state::<M>(sk) == tcp_state::CLOSE {
        let mut c = Conn::default();
        fill_tuple::<M>(sk, &mut c)?;
        if transmit {
            c.resets_tx = 1;
        } else {
            c.resets_rx = 1;
        }
        emit(event_kind::LATE, sk, &c, |_| {});
    }
    Ok(())
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    if let Ok(sk) = tp_read::<u64>(&ctx, &o().retransmit_skaddr) {
        on_retransmit::<Probe>(sk);
    }
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn btf_retransmit(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(const struct sock *sk, const struct sk_buff *skb)
    on_retransmit::<Direct>(ctx.arg(0));
    0
}

#[inline(always)]
fn on_retransmit<M: Mem>(sk: u64) {
    if let Some(c) = CONNS.get_ptr_mut(&sk) {
        bump(counter::TCP_EVENTS);
        snapshot::<M>(sk, unsafe { &mut *c });
    }
}

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
    let data = unsafe { (*skb).data } as usize;
    let end = unsafe { (*skb).data_end } as usize;
    if data + header <= end {
        // Direct packet access: the bounds check above is what the verifier
        // needs; no helper call.
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
    key.cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let payload = len - l4 - 8;
    let segs = u64::from(unsafe { (*skb).gso_segs }).max(1);
    bump(counter::UDP_EVENTS);
    account_udp(&key, laddr, lport, egress, payload, segs);
    Ok(())
}

/// Adds `payload` bytes and `segs` packets to flow `key`, creating it.
#[inline(always)]
fn account_udp(key: &UdpKey, laddr: [u8; 16], lport: u16, egress: bool, payload: u64, segs: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
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
    let s = unsafe { &mut *s };
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

#[inline(always)]
fn atomic_add(v: &mut u64, n: u64) {
    // SAFETY: `v` points into a map value, aligned to 8 bytes. core's
    // AtomicU64 has no fetch_add on the bpf target; the intrinsic lowers
    // to the BPF atomic add instruction.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            v, n,
        );
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
