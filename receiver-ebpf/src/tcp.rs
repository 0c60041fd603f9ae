//! The TCP programs, each twice: a BTF-typed raw tracepoint (`btf_*`,
//! the default) and a classic tracepoint (the fallback), one body.
//!
//! **Nothing is kept per connection in the kernel** (issue 24): a hash map
//! insert at the open, a delete at the close and a lookup in every send and
//! receive cost more than twice what empty programs on these hooks do.
//! TCP's own counters in `struct tcp_sock` are read once, when the socket
//! closes, and user space joins the records below by socket address
//! (receiver/src/tcp_join).
//!
//! - `sock:inet_sock_set_state` fires on every TCP state change, in the
//!   context that made it. It acts on these:
//!   - CLOSE->SYN_SENT runs inside connect(): a 24-byte `CONNECT_MIN`
//!     record (socket, tgid, tick). The tuple is not complete yet (the
//!     local port is picked just after this change), so the CLOSE record
//!     carries it. The process's name goes in a `PROCESS` record, once per
//!     process ([`crate::events`]);
//!   - SYN_RECV->ESTABLISHED is an accepted socket's handshake ending
//!     (`tcp_rcv_state_process()` on the final ACK, in softirq, so no
//!     process): an `ACCEPT` record, the same 24 bytes (socket, tick; tgid
//!     0), which gives a server's open and its duration. A client's
//!     SYN_SENT->ESTABLISHED leaves after the old state's comparison;
//!   - ->LISTEN runs inside listen(): a `LISTEN` record with the process
//!     and the local address and port, which names the server of every
//!     connection accepted there;
//!   - SYN_SENT->CLOSE is a failed connect (`sk_err` holds why): `FAILED`;
//!   - LISTEN->CLOSE is a listener's end (`__tcp_close()` or
//!     `tcp_disconnect()` stop it): a `LISTEN_CLOSE` record naming the
//!     socket, so user space ends that listener's entry exactly;
//!   - any other ->CLOSE is a connection's end: a 104-byte `CLOSE_MIN`
//!     record with the tuple, the netns, the final counters, bytes included
//!     (see [`close_bytes`]), and the tick.
//!
//!   The frequent records (CONNECT_MIN, ACCEPT, CLOSE_MIN) are submitted
//!   without a wake-up: user space drains the ring on its own timer. The
//!   socket's address (`sk`) joins them: a socket is freed only after its
//!   CLOSE record was reserved, so in the ring's order the first CLOSE or
//!   FAILED naming the address after a CONNECT or ACCEPT is that socket's
//!   end. (The address is free: the tracepoint passes it; the
//!   cookie would be a helper call in the BTF-typed set, and is 0 on a
//!   socket nobody asked it of.)
//! - `sock:sock_send_length`/`sock_recv_length`: a TCP send leaves after
//!   the protocol check; a TCP receive does one more load (the socket's
//!   state): a read from a socket already in CLOSE sends a `LATE` record
//!   with the bytes. UDP goes to [`crate::udp`].
//! - `tcp:tcp_send_reset`/`tcp_receive_reset`: a `RESET` record (resets are
//!   rare). `tcp:tcp_retransmit_skb` is not attached: `total_retrans` is
//!   read at the close.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use flowscope_common::{
    AF_INET, AF_INET6, CloseRec, Conn, ConnectRec, IPPROTO_TCP, IPPROTO_UDP, counter, event_kind,
    role, tcp_state,
};
use flowscope_ebpf::{jiffies, off};

use crate::events::{emit_in_place, emit_rec, process_id, set_process_id};
use crate::sock::{Direct, Mem, Probe, fill_tuple, netns_of};
use crate::udp::{udp_length, udp_owner};
use crate::{MSG_PEEK, SETTINGS, bump, o, setting};

/// `enum sock_flags` bit `SOCK_DONE`: set by `tcp_fin()` when the peer's FIN
/// arrives (in order), and cleared only by `tcp_disconnect()` and
/// `tcp_connect_init()`, after or before a connection's CLOSE.
const SOCK_DONE: u64 = 1 << 1;

/// The states from which a socket that moves to CLOSE has queued its FIN:
/// `tcp_close_state()` moves ESTABLISHED to FIN_WAIT1 and CLOSE_WAIT to
/// LAST_ACK just before `tcp_send_fin()`; FIN_WAIT2, CLOSING and TIME_WAIT
/// come after those. A socket closed from any other state (a reset, an
/// abortive close, data left unread) sent no FIN.
const FIN_QUEUED_STATES: u32 = (1 << tcp_state::FIN_WAIT1)
    | (1 << tcp_state::FIN_WAIT2)
    | (1 << tcp_state::TIME_WAIT)
    | (1 << tcp_state::LAST_ACK)
    | (1 << tcp_state::CLOSING);

/// Whether a change into state `new` may be one flowscope acts on: into
/// SYN_SENT (connect), ESTABLISHED (an accept, when the old state is
/// SYN_RECV), LISTEN (listen) or CLOSE (an end).
#[inline(always)]
fn state_matters(new: i32) -> bool {
    new == tcp_state::SYN_SENT
        || new == tcp_state::CLOSE
        || new == tcp_state::LISTEN
        || new == tcp_state::ESTABLISHED
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
    let old: i32 = ctx.arg(1);
    if new == tcp_state::ESTABLISHED && old != tcp_state::SYN_RECV {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let Ok(protocol) = Direct::read::<u16>(sk, off(&o().sk_protocol)) else {
        return 0;
    };
    if protocol != IPPROTO_TCP {
        return 0;
    }
    set_state::<Direct>(sk, old, new);
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
    let old: i32 = tp_read(ctx, &offs.set_state_oldstate)?;
    if new == tcp_state::ESTABLISHED && old != tcp_state::SYN_RECV {
        return Ok(());
    }
    let protocol: u16 = tp_read(ctx, &offs.set_state_protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = tp_read(ctx, &offs.set_state_skaddr)?;
    set_state::<Probe>(sk, old, new);
    Ok(())
}

/// A TCP state change flowscope acts on (see [`state_matters`]; a change
/// into ESTABLISHED reaches here only from SYN_RECV).
#[inline(always)]
fn set_state<M: Mem>(sk: u64, old: i32, new: i32) {
    bump(counter::TCP_EVENTS);
    if new == tcp_state::SYN_SENT {
        // connect(), in the caller's context. The addresses and the peer's
        // port are set; the local port is picked right after this change
        // (inet_hash_connect()), so the CLOSE record carries it.
        let _ = emit_rec::<ConnectRec>(false, |r| {
            r.kind = event_kind::CONNECT_MIN;
            r.tgid = process_id();
            r.sk = sk;
            r.ts = jiffies();
            true
        });
    } else if new == tcp_state::ESTABLISHED {
        // An accepted socket's handshake completed, in softirq (the task
        // running is not the socket's owner): the open, for the server's
        // open count and duration. The process comes from the listener.
        let _ = emit_rec::<ConnectRec>(false, |r| {
            r.kind = event_kind::ACCEPT;
            r.tgid = 0;
            r.sk = sk;
            r.ts = jiffies();
            true
        });
    } else if new == tcp_state::LISTEN {
        // listen(), in the caller's context: bind() set the local address
        // and port (a listen() without bind() picks the port just after
        // this change: user space counts such a record and skips it).
        let _ = emit_in_place(event_kind::LISTEN, sk, |ev| {
            let c = &mut ev.conn;
            c.role = role::SERVER;
            set_process_id(c);
            fill_tuple::<M>(sk, c).is_ok()
        });
    } else if old == tcp_state::SYN_SENT {
        // A failed connect: tcp_done_with_error() stores sk_err before
        // tcp_done() moves the socket to CLOSE. Nothing was sent or read.
        let err: i32 = M::read(sk, off(&o().sk_err)).unwrap_or(0);
        let _ = emit_in_place(event_kind::FAILED, sk, |ev| {
            ev.errno = err;
            fill_tuple::<M>(sk, &mut ev.conn).is_ok()
        });
    } else if old == tcp_state::LISTEN {
        // The listener's end. `sk` is what user space needs; the tuple is
        // for the reader of a dump (a port bound without the lock reads 0
        // here, see `fill_tuple_closed`), so a failed read still sends it.
        let _ = emit_in_place(event_kind::LISTEN_CLOSE, sk, |ev| {
            let c = &mut ev.conn;
            c.role = role::SERVER;
            let tp = M::tcp_sock(sk);
            if tp != 0 {
                let _ = fill_tuple_closed::<M>(sk, tp, c);
            }
            true
        });
    } else {
        // The end: the final counters, read once, into a record every
        // field of which is written.
        let _ = emit_rec::<CloseRec>(true, |r| close_rec::<M>(sk, old, r));
    }
}

/// Fills a [`CloseRec`] (every byte: the record is not zeroed)
/// from the socket and its `struct tcp_sock`; returns whether every read
/// succeeded.
#[inline(always)]
fn close_rec<M: Mem>(sk: u64, old: i32, r: &mut CloseRec) -> bool {
    let tp = M::tcp_sock(sk);
    if tp == 0 {
        return false;
    }
    let offs = o();
    let Ok(family) = M::read::<u16>(sk, off(&offs.sk_family)) else {
        return false;
    };
    let (Ok(lport), Ok(rport)) = (
        M::read::<u16>(tp, off(&offs.inet_sport)),
        M::read::<u16>(sk, off(&offs.sk_dport)),
    ) else {
        return false;
    };
    r.kind = event_kind::CLOSE_MIN;
    r.family = family;
    r.lport = u16::from_be(lport);
    r.rport = u16::from_be(rport);
    r._pad = 0;
    r.netns = netns_of::<M>(sk);
    r.sk = sk;
    if family == AF_INET {
        let (Ok(l), Ok(p)) = (
            M::read::<u32>(sk, off(&offs.sk_rcv_saddr)),
            M::read::<u32>(sk, off(&offs.sk_daddr)),
        ) else {
            return false;
        };
        // SAFETY: 16-byte arrays at 8-aligned offsets of the record.
        unsafe {
            let la = r.laddr.as_mut_ptr().cast::<u64>();
            let ra = r.raddr.as_mut_ptr().cast::<u64>();
            core::ptr::write(la, u64::from(l));
            core::ptr::write(la.add(1), 0);
            core::ptr::write(ra, u64::from(p));
            core::ptr::write(ra.add(1), 0);
        }
    } else {
        let (Ok(l), Ok(p)) = (
            M::read16(sk, off(&offs.sk_v6_rcv_saddr)),
            M::read16(sk, off(&offs.sk_v6_daddr)),
        ) else {
            return false;
        };
        r.laddr = l;
        r.raddr = p;
    }
    let Ok(b) = close_bytes::<M>(sk, tp, old) else {
        return false;
    };
    r.bytes_tx = b.sent;
    r.bytes_rx = b.received;
    r.segs_in = M::read(tp, off(&offs.tcp_segs_in)).unwrap_or(0);
    r.segs_out = M::read(tp, off(&offs.tcp_segs_out)).unwrap_or(0);
    r.total_retrans = M::read(tp, off(&offs.tcp_total_retrans)).unwrap_or(0);
    r.srtt_us = M::read::<u32>(tp, off(&offs.tcp_srtt_us)).unwrap_or(0) >> 3;
    r.rttvar_us = M::read::<u32>(tp, off(&offs.tcp_mdev_us)).unwrap_or(0) >> 2;
    r.copied_seq = b.copied_seq;
    // The tick, for the connection's duration (an inlined load).
    r.ts = jiffies();
    true
}

/// The tuple of socket `sk` (whose `struct tcp_sock` is `tp`) in CLOSE:
/// `inet_num` is 0 there unless the port was bound explicitly (and an
/// accepted socket never inherits that lock): `tcp_set_state()` calls
/// `inet_put_port()` before the tracepoint. `inet_sport` stays.
#[inline(always)]
fn fill_tuple_closed<M: Mem>(sk: u64, tp: u64, c: &mut Conn) -> Result<(), i32> {
    fill_tuple::<M>(sk, c)?;
    c.lport = u16::from_be(M::read::<u16>(tp, off(&o().inet_sport))?);
    Ok(())
}

/// A closing connection's bytes, from TCP's own counters.
struct CloseBytes {
    /// What the application's sendmsg calls handed to TCP, plus 1 for a
    /// client (its SYN, which user space takes off for the sockets it saw
    /// connect: the kernel cannot tell a client from an accepted socket
    /// here without a per-connection record).
    sent: u64,
    /// What the application's recvmsg calls read.
    received: u64,
    /// `copied_seq`: where those reads ended (see `CloseRec::copied_seq`).
    copied_seq: u32,
}

/// The bytes of a connection that is moving to CLOSE, read at that
/// tracepoint (before `tcp_disconnect()` clears the counters after it).
///
/// Sent: `bytes_acked` counts every advance of `snd_una` (64 bits, so no
/// wrap), and `write_seq - snd_una` is what was queued and never
/// acknowledged (sent or not; `tcp_write_queue_purge()` on a reset frees
/// the queue but moves neither). Their sum is every sequence number the
/// socket queued after `snd_una`'s first value: the data each sendmsg
/// copied (`write_seq += copy`), the FIN if one was queued (state, see
/// [`FIN_QUEUED_STATES`]) and, for a client, its SYN (`tcp_connect_init()`
/// sets `snd_una` to the ISN, the SYN-ACK acknowledges ISN+1); an accepted
/// socket starts with `snd_una = write_seq = ISN + 1`
/// (`tcp_create_openreq_child()`).
///
/// Received: `bytes_received` counts every advance of `rcv_nxt` past the
/// peer's SYN (64 bits): the data that arrived in order and the FIN if it
/// came. `rcv_nxt - copied_seq` is what arrived and was not read. Their
/// difference is what the reads consumed: the data recvmsg copied and the
/// FIN if the application read up to it (recvmsg returning 0 advances
/// `copied_seq` over it). A FIN arrived iff `SOCK_DONE` is set, and it is
/// the last sequence number, so it was read iff `copied_seq == rcv_nxt`.
/// Data left unread at close (`__tcp_close()` frees it) never reached
/// `copied_seq`, so it is not counted, as the length tracepoints did not.
#[inline(always)]
fn close_bytes<M: Mem>(sk: u64, tp: u64, old: i32) -> Result<CloseBytes, i32> {
    let offs = o();
    let acked: u64 = M::read(tp, off(&offs.tcp_bytes_acked))?;
    let arrived: u64 = M::read(tp, off(&offs.tcp_bytes_received))?;
    let write_seq: u32 = M::read(tp, off(&offs.tcp_write_seq))?;
    let snd_una: u32 = M::read(tp, off(&offs.tcp_snd_una))?;
    let rcv_nxt: u32 = M::read(tp, off(&offs.tcp_rcv_nxt))?;
    let copied_seq: u32 = M::read(tp, off(&offs.tcp_copied_seq))?;
    let flags: u64 = M::read(sk, off(&offs.sk_flags))?;

    let fin_queued = old >= 0 && old < 32 && FIN_QUEUED_STATES & (1 << old) != 0;
    let fin_received = flags & SOCK_DONE != 0;
    let fin_read = fin_received && copied_seq == rcv_nxt;
    let queued = acked + u64::from(write_seq.wrapping_sub(snd_una));
    let consumed = arrived.saturating_sub(u64::from(rcv_nxt.wrapping_sub(copied_seq)));
    Ok(CloseBytes {
        sent: queued.saturating_sub(u64::from(fin_queued)),
        received: consumed.saturating_sub(u64::from(fin_read)),
        copied_seq,
    })
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
    // TCP: the close reads what the calls moved from tcp_sock; only a read
    // after it is left (see `late_read`).
    if !transmit && ret > 0 && protocol == IPPROTO_TCP {
        late_read::<Direct>(sk, ret, || ctx.arg(2));
    }
}

/// A TCP recvmsg that moved `ret` > 0 bytes: if the socket is already in
/// CLOSE, its CLOSE record may not have counted them (an application
/// reading what arrived before the peer's FIN after the socket moved to
/// CLOSE: FIN_WAIT2 goes to CLOSE when the FIN arrives, LAST_ACK when its
/// FIN is acknowledged, whether or not the application has read
/// everything), so they go in a `LATE` record with the socket's
/// `copied_seq`. A reset that arrived during the read waits in the
/// socket's backlog and moves it to CLOSE when the read releases the lock,
/// before this tracepoint: that CLOSE record counted the read already,
/// and the join takes off what lies before the CLOSE's `copied_seq`.
/// Sends on a closed socket fail. The state is one more load per receive;
/// nothing else runs unless it is CLOSE.
#[inline(always)]
fn late_read<M: Mem>(sk: u64, ret: i32, flags: impl FnOnce() -> i32) {
    let state = i32::from(M::read::<u8>(sk, off(&o().sk_state)).unwrap_or(0));
    if state != tcp_state::CLOSE || !setting(&SETTINGS.tcp) || flags() & MSG_PEEK != 0 {
        return;
    }
    let bytes = ret as u64;
    let _ = emit_in_place(event_kind::LATE, sk, |ev| {
        let tp = M::tcp_sock(sk);
        if tp == 0 {
            return false;
        }
        // Where this read ended: the join counts only what lies past the
        // CLOSE record's `copied_seq`.
        let Ok(copied) = M::read::<u32>(tp, off(&o().tcp_copied_seq)) else {
            return false;
        };
        ev.errno = copied as i32;
        let c = &mut ev.conn;
        c.bytes_rx = bytes;
        fill_tuple_closed::<M>(sk, tp, c).is_ok()
    });
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
    if protocol == IPPROTO_TCP {
        // The close reads what the calls moved from tcp_sock; only a read
        // after it is left.
        if !transmit {
            let sk: u64 = tp_read(ctx, sk_field)?;
            late_read::<Probe>(sk, ret, || tp_read::<i32>(ctx, flags_field).unwrap_or(0));
        }
        return Ok(());
    }
    if protocol != IPPROTO_UDP {
        return Ok(());
    }
    let sk: u64 = tp_read(ctx, sk_field)?;
    udp_length_owner::<Probe>(sk)
}

/// One UDP sendmsg/recvmsg that moved bytes, in the classic set: the
/// cgroup_skb programs count the datagram; this records its owner.
#[inline(always)]
fn udp_length_owner<M: Mem>(sk: u64) -> Result<(), i32> {
    if !M::SOCKET_UDP && setting(&SETTINGS.udp) {
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
        on_reset::<Probe>(sk, true);
    }
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if let Ok(sk) = tp_read::<u64>(&ctx, &o().recv_reset_skaddr) {
        on_reset::<Probe>(sk, false);
    }
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn btf_send_reset(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(const struct sock *sk, const struct sk_buff *skb, reason)
    on_reset::<Direct>(ctx.arg(0), true);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn btf_recv_reset(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct sock *sk)
    on_reset::<Direct>(ctx.arg(0), false);
    0
}

/// A reset sent or received on socket `sk`: a `RESET` record for user
/// space to add to the connection it joins by `sk` (before or after its
/// CLOSE record: an abortive close moves the socket to CLOSE before the
/// reset goes out).
#[inline(always)]
fn on_reset<M: Mem>(sk: u64, transmit: bool) {
    if !setting(&SETTINGS.tcp) || sk == 0 {
        // sk 0: a reset answering a segment no socket owns (a closed port).
        return;
    }
    bump(counter::TCP_EVENTS);
    let _ = emit_in_place(event_kind::RESET, sk, |ev| {
        if transmit {
            ev.conn.resets_tx = 1;
        } else {
            ev.conn.resets_rx = 1;
        }
        fill_tuple::<M>(sk, &mut ev.conn).is_ok()
    });
}
