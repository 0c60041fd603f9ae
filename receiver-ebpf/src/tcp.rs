//! The TCP programs, each twice: a BTF-typed raw tracepoint (`btf_*`,
//! the default) and a classic tracepoint (the fallback), one body.
//!
//! - `sock:inet_sock_set_state` fires on every TCP state change, in the
//!   context that made it: CLOSE->SYN_SENT runs inside connect() (the
//!   calling process owns the socket), SYN_RECV->ESTABLISHED in the
//!   softirq that completed the handshake of a connection accept() will
//!   return (no process yet), SYN_SENT->CLOSE when a connect fails
//!   (`sk_err` holds why) and any ->CLOSE at the end. A connection lives
//!   in `CONNS` from its open to its CLOSE, which sends its final counters
//!   to user space.
//! - `sock:sock_send_length`/`sock_recv_length` fire after each sendmsg
//!   and recvmsg with the bytes it moved, in the calling process. For TCP
//!   they add to the connection (and adopt a connection opened before the
//!   agent started) and refresh its segment/RTT snapshot, at most once per
//!   jiffy; a UDP socket goes to [`crate::udp`].
//! - `tcp:tcp_send_reset`/`tcp_receive_reset` count resets;
//!   `tcp:tcp_retransmit_skb` refreshes the segment/retransmit/RTT
//!   snapshot.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use flowscope_common::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, counter, event_kind, role, tcp_state,
};
use flowscope_ebpf::{atomic_add, map_value, now_ns, off};

use crate::events::{emit, set_process, zero_conn};
use crate::sock::{
    Direct, Mem, Probe, fill_tuple, local_port, sk_state, snapshot, snapshot_per_tick,
};
use crate::udp::{udp_length, udp_owner};
use crate::{CONNS, MSG_PEEK, SETTINGS, bump, o, setting};

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
    // SAFETY: `read_at` copies with `bpf_probe_read_kernel`, which checks
    // the address; the offset is the field's in the event record.
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
        // connect(): runs in the caller's context. The addresses and the
        // peer's port are set; the local port may not be yet (connect()
        // picks it in inet_hash_connect(), after this state change, so it
        // is read again at ESTABLISHED).
        let mut slot = MaybeUninit::uninit();
        let c = zero_conn(&mut slot);
        c.role = role::CLIENT;
        c.opened_ns = now_ns();
        set_process(c);
        fill_tuple::<M>(sk, c)?;
        if CONNS.insert(&sk, c, 0).is_err() {
            bump(counter::TCP_MAP_FULL);
        }
    } else if new == tcp_state::ESTABLISHED {
        if old == tcp_state::SYN_SENT {
            if let Some(c) = CONNS.get_ptr_mut(&sk) {
                let c = map_value(c);
                c.established = 1;
                // Only the local port can have changed since SYN_SENT.
                c.lport = local_port::<M>(sk)?;
                snapshot::<M>(sk, c);
            }
        } else if old == tcp_state::SYN_RECV {
            // The child socket of an accept()ed connection, in softirq: the
            // owning process is recorded on its first read or write.
            let mut slot = MaybeUninit::uninit();
            let c = zero_conn(&mut slot);
            c.role = role::SERVER;
            c.established = 1;
            c.opened_ns = now_ns();
            fill_tuple::<M>(sk, c)?;
            snapshot::<M>(sk, c);
            if CONNS.insert(&sk, c, 0).is_err() {
                bump(counter::TCP_MAP_FULL);
            }
        }
    } else if new == tcp_state::CLOSE
        && let Some(c) = CONNS.get_ptr_mut(&sk)
    {
        let c = map_value(c);
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
            let c = map_value(c);
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
            snapshot_per_tick::<M>(sk, c);
            return Ok(());
        }
        let mut slot = MaybeUninit::uninit();
        let c = zero_conn(&mut slot);
        fill_tuple::<M>(sk, c)?;
        if c.family != AF_INET && c.family != AF_INET6 {
            return Ok(());
        }
        set_process(c);
        if transmit {
            c.bytes_tx = bytes;
        } else {
            c.bytes_rx = bytes;
        }
        if sk_state::<M>(sk) == tcp_state::CLOSE {
            // Closed and already reported: an application still reading
            // what arrived before the FIN. User space adds these bytes to
            // the closed connection's record.
            emit(event_kind::LATE, sk, c, |_| {});
        } else {
            // A connection that predates the agent (its open was not seen).
            c.established = 1;
            snapshot::<M>(sk, c);
            if CONNS.insert(&sk, c, BPF_NOEXIST as u64).is_err() {
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
        let c = map_value(c);
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
        let mut slot = MaybeUninit::uninit();
        let c = zero_conn(&mut slot);
        fill_tuple::<M>(sk, c)?;
        if transmit {
            c.resets_tx = 1;
        } else {
            c.resets_rx = 1;
        }
        emit(event_kind::LATE, sk, c, |_| {});
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
        snapshot::<M>(sk, map_value(c));
    }
}
