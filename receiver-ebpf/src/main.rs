//! flowscope's flow programs.
//!
//! TCP is followed on stable tracepoints only (this kernel has no kprobes):
//! - `sock:inet_sock_set_state` sees every TCP state change: CLOSE->SYN_SENT
//!   is a connect() (process context, so the owner is known), SYN_RECV ->
//!   ESTABLISHED an accepted connection (softirq: owner learnt later),
//!   SYN_SENT->CLOSE a failed connect (sk_err says why), any ->CLOSE the end.
//! - `sock:sock_send_length`/`sock_recv_length` fire after every sendmsg and
//!   recvmsg with the byte count the call moved: the application's bytes,
//!   exactly, and the calling process.
//! - `tcp:tcp_send_reset`/`tcp_receive_reset` count resets,
//!   `tcp:tcp_retransmit_skb` refreshes the retransmit snapshot.
//!
//! The state of a connection lives in `CONNS` keyed by its `struct sock *`;
//! user space iterates it every interval for deltas and gets the final
//! counters of closed connections through the `EVENTS` ring buffer.
//!
//! UDP has no connection state to trace, and an unconnected socket's peer is
//! only in the packet, so two cgroup_skb programs on the root cgroup count
//! UDP datagrams per (socket cookie, peer); the send/recv tracepoints record
//! which process owns each UDP socket cookie.
//!
//! Struct offsets come from user space (BTF and tracefs), see
//! [`flowscope_common::Offsets`].
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::bpf_get_socket_cookie,
    },
    macros::{cgroup_skb, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{SkBuffContext, TracePointContext},
};
use flowscope_common::{
    AF_INET, AF_INET6, Conn, Event, IPPROTO_TCP, IPPROTO_UDP, Offsets, Owner, Settings, UdpKey,
    UdpStats, counter, event_kind, role, tcp_state,
};

/// Filled by user space before load (read-only data).
#[unsafe(no_mangle)]
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings { tcp: 1, udp: 1 };

// Sizes are defaults; user space resizes CONNS and UDP_FLOWS from config.
#[map]
static CONNS: HashMap<u64, Conn> = HashMap::with_max_entries(65536, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static UDP_FLOWS: HashMap<UdpKey, UdpStats> = HashMap::with_max_entries(65536, 0);
/// Owner of a UDP socket by cookie. An LRU map: it is a cache that user
/// space backs with /proc, not data, so eviction loses nothing counted.
/// Processes already announced to user space (tgid -> 1). LRU: a process
/// evicted is announced again, which only refreshes a cache.
#[map]
static SEEN_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);
#[map]
static UDP_OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(65536, 0);

const MSG_PEEK: i32 = 2;

#[inline(always)]
fn off(field: &u32) -> u64 {
    // Volatile, so the compiler does not fold the zero placeholder.
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

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn kread<T>(base: u64, offset: u64) -> Result<T, i32> {
    let r = unsafe { bpf_probe_read_kernel((base + offset) as *const T) };
    if r.is_err() {
        bump(counter::READ_ERROR);
    }
    r
}

#[inline(always)]
fn tp_read<T>(ctx: &TracePointContext, field: &u32) -> Result<T, i32> {
    unsafe { ctx.read_at::<T>(off(field) as usize) }
}

#[inline(always)]
fn o() -> &'static Offsets {
    &OFFSETS
}

/// Network namespace inode of socket `sk`.
#[inline(always)]
fn netns_of(sk: u64) -> u32 {
    let net: u64 = kread(sk, off(&o().sk_net)).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    kread(net, off(&o().net_ns_inum)).unwrap_or(0)
}

/// Family, ports, addresses and netns of socket `sk` into `c`.
#[inline(always)]
fn fill_tuple(sk: u64, c: &mut Conn) -> Result<(), i32> {
    let offs = o();
    let family: u16 = kread(sk, off(&offs.sk_family))?;
    c.family = family;
    c.lport = kread(sk, off(&offs.sk_num))?;
    c.rport = u16::from_be(kread(sk, off(&offs.sk_dport))?);
    if family == AF_INET {
        let l: [u8; 4] = kread(sk, off(&offs.sk_rcv_saddr))?;
        let r: [u8; 4] = kread(sk, off(&offs.sk_daddr))?;
        c.laddr[..4].copy_from_slice(&l);
        c.raddr[..4].copy_from_slice(&r);
    } else {
        c.laddr = kread(sk, off(&offs.sk_v6_rcv_saddr))?;
        c.raddr = kread(sk, off(&offs.sk_v6_daddr))?;
    }
    c.netns = netns_of(sk);
    Ok(())
}

/// Segment, retransmit and RTT counters of `struct tcp_sock` into `c`.
#[inline(always)]
fn snapshot(sk: u64, c: &mut Conn) {
    let offs = o();
    if let Ok(v) = kread::<u32>(sk, off(&offs.tcp_segs_in)) {
        c.segs_in = v;
    }
    if let Ok(v) = kread::<u32>(sk, off(&offs.tcp_segs_out)) {
        c.segs_out = v;
    }
    if let Ok(v) = kread::<u32>(sk, off(&offs.tcp_total_retrans)) {
        c.total_retrans = v;
    }
    if let Ok(v) = kread::<u32>(sk, off(&offs.tcp_srtt_us)) {
        c.srtt_us = v >> 3;
    }
    if let Ok(v) = kread::<u32>(sk, off(&offs.tcp_mdev_us)) {
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
    if tgid == 0 || SEEN_PIDS.get_ptr(&tgid).is_some() {
        return;
    }
    let _ = SEEN_PIDS.insert(&tgid, &1, 0);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            unsafe {
                (*ev) = Event::default();
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
fn sk_state(sk: u64) -> i32 {
    i32::from(kread::<u8>(sk, off(&o().sk_state)).unwrap_or(0))
}

/// Sends a ring buffer event for `sk`, copying `conn` and letting `fill`
/// adjust it. A full ring buffer is counted, never silent.
/// bpf_ringbuf_query/submit flags (include/uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake user space once this much is waiting; below it, user space drains
/// on its own timer (every 100 ms). Waking for every close event cost most
/// of the agent's CPU at 10,000 connections per second.
const WAKE_BYTES: u64 = 64 * 1024;

#[inline(always)]
fn wakeup() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKE_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

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
                (*ev).conn = *conn;
                fill(&mut *ev);
            }
            entry.submit(wakeup());
        }
        None => bump(counter::RINGBUF_FULL),
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

#[inline(always)]
fn try_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let offs = o();
    let protocol: u16 = tp_read(ctx, &offs.set_state_protocol)?;
    if u16::from(protocol) != IPPROTO_TCP || !setting(&SETTINGS.tcp) {
        return Ok(());
    }
    let sk: u64 = tp_read(ctx, &offs.set_state_skaddr)?;
    let old: i32 = tp_read(ctx, &offs.set_state_oldstate)?;
    let new: i32 = tp_read(ctx, &offs.set_state_newstate)?;
    bump(counter::TCP_EVENTS);

    if new == tcp_state::SYN_SENT {
        // connect(): runs in the caller's context, the port is assigned.
        let mut c = Conn {
            role: role::CLIENT,
            opened_ns: unsafe { bpf_ktime_get_ns() },
            ..Conn::default()
        };
        set_process(&mut c);
        fill_tuple(sk, &mut c)?;
        if CONNS.insert(&sk, &c, 0).is_err() {
            bump(counter::TCP_MAP_FULL);
        }
    } else if new == tcp_state::ESTABLISHED && old == tcp_state::SYN_SENT {
        if let Some(c) = CONNS.get_ptr_mut(&sk) {
            let c = unsafe { &mut *c };
            c.established = 1;
            // The local address is final now (bind at connect time).
            fill_tuple(sk, c)?;
            snapshot(sk, c);
        }
    } else if new == tcp_state::ESTABLISHED && old == tcp_state::SYN_RECV {
        // The child socket of an accept()ed connection, in softirq: the
        // owning process is recorded on its first read or write.
        let mut c = Conn {
            role: role::SERVER,
            established: 1,
            opened_ns: unsafe { bpf_ktime_get_ns() },
            ..Conn::default()
        };
        fill_tuple(sk, &mut c)?;
        snapshot(sk, &mut c);
        if CONNS.insert(&sk, &c, 0).is_err() {
            bump(counter::TCP_MAP_FULL);
        }
    } else if new == tcp_state::CLOSE {
        if let Some(c) = CONNS.get_ptr_mut(&sk) {
            let c = unsafe { &mut *c };
            snapshot(sk, c);
            if old == tcp_state::SYN_SENT && c.established == 0 {
                // tcp_done_with_error() stores sk_err before tcp_done()
                // moves the socket to CLOSE, so it is readable here.
                let err: i32 = kread(sk, off(&offs.sk_err)).unwrap_or(0);
                emit(event_kind::FAILED, sk, c, |ev| ev.errno = err);
            } else {
                emit(event_kind::CLOSE, sk, c, |_| {});
            }
            let _ = CONNS.remove(&sk);
        }
    }
    Ok(())
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = on_length(&ctx, true);
    0
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = on_length(&ctx, false);
    0
}

#[inline(always)]
fn on_length(ctx: &TracePointContext, transmit: bool) -> Result<(), i32> {
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
    if protocol == IPPROTO_TCP && setting(&SETTINGS.tcp) {
        if !transmit {
            let flags: i32 = tp_read(ctx, flags_field)?;
            if flags & MSG_PEEK != 0 {
                return Ok(());
            }
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
            snapshot(sk, c);
            return Ok(());
        }
        let mut c = Conn::default();
        fill_tuple(sk, &mut c)?;
        if c.family != AF_INET && c.family != AF_INET6 {
            return Ok(());
        }
        set_process(&mut c);
        if transmit {
            c.bytes_tx = bytes;
        } else {
            c.bytes_rx = bytes;
        }
        if sk_state(sk) == tcp_state::CLOSE {
            // Closed and already reported: an application still reading
            // what arrived before the FIN. User space adds these bytes to
            // the closed connection's record.
            emit(event_kind::LATE, sk, &c, |_| {});
        } else {
            // A connection that predates the agent (its open was not seen).
            c.established = 1;
            snapshot(sk, &mut c);
            if CONNS.insert(&sk, &c, BPF_NOEXIST as u64).is_err() {
                bump(counter::TCP_MAP_FULL);
            }
        }
    } else if protocol == IPPROTO_UDP && setting(&SETTINGS.udp) {
        bump(counter::UDP_EVENTS);
        // The cgroup_skb program asked for this socket's cookie when the
        // datagram passed (before this tracepoint fires), so it is set.
        let cookie: u64 = kread(sk, off(&o().sk_cookie))?;
        if cookie == 0 || UDP_OWNERS.get_ptr(&cookie).is_some() {
            return Ok(());
        }
        let family: u16 = kread(sk, off(&o().sk_family))?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(());
        }
        let owner = Owner {
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            netns: netns_of(sk),
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        };
        announce(owner.tgid, &owner.comm);
        if UDP_OWNERS.insert(&cookie, &owner, 0).is_err() {
            bump(counter::OWNER_MAP_FULL);
        }
    }
    Ok(())
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = on_reset(&ctx, &o().send_reset_skaddr, true);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = on_reset(&ctx, &o().recv_reset_skaddr, false);
    0
}

#[inline(always)]
fn on_reset(ctx: &TracePointContext, sk_field: &u32, transmit: bool) -> Result<(), i32> {
    if !setting(&SETTINGS.tcp) {
        return Ok(());
    }
    let sk: u64 = tp_read(ctx, sk_field)?;
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
    if sk_state(sk) == tcp_state::CLOSE {
        let mut c = Conn::default();
        fill_tuple(sk, &mut c)?;
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
        if let Some(c) = CONNS.get_ptr_mut(&sk) {
            bump(counter::TCP_EVENTS);
            snapshot(sk, unsafe { &mut *c });
        }
    }
    0
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

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// Counts one UDP datagram (or GSO batch) of the socket the skb belongs to.
/// cgroup_skb sees the packet from its network header on, and always
/// returns "allow": flowscope observes, it never drops.
#[inline(always)]
fn count_udp(ctx: &SkBuffContext, egress: bool) -> Result<(), i32> {
    if !setting(&SETTINGS.udp) {
        return Ok(());
    }
    let skb = ctx.skb.skb;
    let proto = u16::from_be(unsafe { (*skb).protocol } as u16);
    let len = unsafe { (*skb).len } as u64;
    let mut key = UdpKey::default();
    let mut laddr = [0u8; 16];
    let (l4, sport, dport);
    if proto == ETH_P_IP {
        let vihl: u8 = ctx.load(0).map_err(|_| 0)?;
        let next: u8 = ctx.load(9).map_err(|_| 0)?;
        if next != IPPROTO_UDP as u8 {
            return Ok(());
        }
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
    } else if proto == ETH_P_IPV6 {
        let next: u8 = ctx.load(6).map_err(|_| 0)?;
        if next != IPPROTO_UDP as u8 {
            return Ok(());
        }
        l4 = 40;
        let src: [u8; 16] = ctx.load(8).map_err(|_| 0)?;
        let dst: [u8; 16] = ctx.load(24).map_err(|_| 0)?;
        let (l, r) = if egress { (src, dst) } else { (dst, src) };
        laddr = l;
        key.raddr = r;
        key.family = AF_INET6;
    } else {
        return Ok(());
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
    let now = unsafe { bpf_ktime_get_ns() };
    if add_udp(&key, egress, payload, segs, now) {
        return Ok(());
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
    if UDP_FLOWS.insert(&key, &s, BPF_NOEXIST as u64).is_err()
        && !add_udp(&key, egress, payload, segs, now)
    {
        bump(counter::UDP_MAP_FULL);
    }
    Ok(())
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
