//! ctnetlink over `NETLINK_NETFILTER`: the initial dump of a namespace's
//! conntrack table and its NEW/DESTROY event stream.
//!
//! - Both sockets must be opened from a thread inside the namespace (see
//!   [`crate::netns::in_namespace`]): a netlink socket talks to the
//!   namespace it was created in.
//! - The event socket joins `NFNLGRP_CONNTRACK_NEW` and
//!   `NFNLGRP_CONNTRACK_DESTROY` *before* the dump is requested on a second
//!   socket, so no connection falls in a gap between the two; an entry in
//!   both is simply inserted twice.
//! - The kernel sends a NEW event when an entry is confirmed, at the end of
//!   the first packet's trip through the hooks, after every NAT binding of
//!   that packet is made: its reply tuple already says where the
//!   connection really goes.
//! - With `net.netfilter.nf_conntrack_events=2` (the default since Linux
//!   6.0) events are generated only while someone listens, which the
//!   event socket does; with `0` there are none, and the service falls
//!   back to periodic dumps.
//! - When the socket's queue overflows the kernel drops events and the next
//!   read fails with `ENOBUFS`; the caller counts it and re-dumps.
//! - A dump's answers have type `IPCTNL_MSG_CT_GET` (the request's), events
//!   `IPCTNL_MSG_CT_NEW` and `IPCTNL_MSG_CT_DELETE`.
//! - Every connection of a namespace where conntrack runs makes two events,
//!   NAT or not, and on a Kubernetes node most do not need resolving (pod
//!   to pod, node to pod). The event socket therefore carries a classic BPF
//!   socket filter ([`NAT_ONLY`]) that lets through only messages whose
//!   `CTA_STATUS` has `IPS_SRC_NAT` or `IPS_DST_NAT` set: the kernel drops
//!   the others before they are queued, so they cost the agent neither a
//!   wake-up nor a parse. Both NEW and DESTROY events carry the status.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple as NlTuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_NETFILTER};

use super::table::{CtEntry, PROTO_TCP, PROTO_UDP, Tuple};

const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// What one netlink message said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtEvent {
    /// A new entry (event) or one of a dump.
    New(CtEntry),
    Destroy(CtEntry),
    /// A conntrack message of another protocol, or without the tuples we
    /// need (ICMP, an update): nothing to do.
    Ignored,
    /// The end of a dump.
    Done,
}

/// Which events an event socket lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFilter {
    /// Only entries NAT translated ([`NAT_ONLY`]): what the agent uses.
    NatOnly,
    /// Every entry (tests compare with it).
    All,
}

/// `SKF_AD_OFF + SKF_AD_NLATTR`: the classic-BPF load that finds the
/// netlink attribute of type X at or after offset A and leaves its offset
/// in A (0 when there is none).
const SKF_AD_NLATTR: u32 = (-0x1000i32 + 12) as u32;
/// Offset of a ctnetlink message's first attribute: `nlmsghdr` (16 bytes)
/// and `nfgenmsg` (4).
const CT_ATTRS_AT: u32 = 20;
const CTA_STATUS: u32 = 3;
/// `IPS_SRC_NAT | IPS_DST_NAT` of `enum ip_conntrack_status`.
const IPS_NAT_MASK: u32 = (1 << 4) | (1 << 5);

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The event socket's filter: accept a message whose `CTA_STATUS` says NAT
/// changed the entry, or that has no status (left for user space to judge),
/// drop the rest. Classic BPF loads are big-endian, as netlink attribute
/// values of ctnetlink are.
pub const NAT_ONLY: [libc::sock_filter; 9] = [
    // A = offset of the first attribute; X = the type looked for.
    insn(0x00, 0, 0, CT_ATTRS_AT),   // ld #20
    insn(0x01, 0, 0, CTA_STATUS),    // ldx #CTA_STATUS
    insn(0x20, 0, 0, SKF_AD_NLATTR), // ld #nla: A = offset of CTA_STATUS or 0
    insn(0x15, 3, 0, 0),             // jeq #0 -> accept
    insn(0x07, 0, 0, 0),             // tax
    insn(0x40, 0, 0, 4),             // ld [x + 4]: the status value
    insn(0x45, 0, 1, IPS_NAT_MASK),  // jset #NAT -> accept, else drop
    insn(0x06, 0, 0, u32::MAX),      // accept: the whole message
    insn(0x06, 0, 0, 0),             // drop
];

/// Opens the event socket of this thread's namespace: non-blocking, with a
/// receive queue of `rcvbuf` bytes, joined to the NEW and DESTROY groups,
/// with the kernel-side filter `filter`.
pub fn open_events(rcvbuf: usize, filter: EventFilter) -> io::Result<OwnedFd> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind(&NlAddr::new(0, 0))?;
    if filter == EventFilter::NatOnly {
        let prog = libc::sock_fprog {
            len: NAT_ONLY.len() as u16,
            filter: NAT_ONLY.as_ptr().cast_mut(),
        };
        // SAFETY: prog points at NAT_ONLY, which lives for the program; the
        // kernel copies the instructions.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let size = rcvbuf.min(i32::MAX as usize) as libc::c_int;
    // FORCE ignores rmem_max (needs CAP_NET_ADMIN, which the agent has);
    // fall back to the capped option.
    // SAFETY: size is a live c_int of the size passed.
    let forced = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        let _ = s.set_rx_buf_sz(rcvbuf);
    }
    s.add_membership(NFNLGRP_CONNTRACK_NEW)?;
    s.add_membership(NFNLGRP_CONNTRACK_DESTROY)?;
    s.set_non_blocking(true)?;
    // SAFETY: the fd is taken over from the Socket, which no longer closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) })
}

/// Dumps this thread's namespace's conntrack table (IPv4 and IPv6),
/// calling `f` for every entry. Returns the number of messages that could
/// not be parsed.
pub fn dump(mut f: impl FnMut(CtEntry)) -> io::Result<u64> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.connect(&NlAddr::new(0, 0))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut req = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            ConntrackMessage::Get(vec![]),
        )),
    );
    req.finalize();
    let mut out = vec![0u8; req.buffer_len()];
    req.serialize(&mut out);
    s.send(&out, 0)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut bad = 0;
    loop {
        let n = recv(s.as_raw_fd(), &mut buf, 0)?;
        let mut done = false;
        bad += parse_datagram(&buf[..n], |ev| match ev {
            CtEvent::New(e) => f(e),
            CtEvent::Done => done = true,
            _ => {}
        })?;
        if done || n == 0 {
            return Ok(bad);
        }
    }
}

/// One recv(2) into `buf`; `flags` such as `MSG_DONTWAIT`.
pub fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Parses every netlink message of one datagram. Returns the number that
/// could not be parsed; a netlink error answer (a refused dump) is an
/// error.
pub fn parse_datagram(mut data: &[u8], mut f: impl FnMut(CtEvent)) -> io::Result<u64> {
    let mut bad = 0;
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            return Ok(bad + 1);
        }
        let one = &data[..len];
        // Messages are 4-byte aligned within a datagram.
        data = &data[len.next_multiple_of(4).min(data.len())..];
        // netlink-packet-core 0.9 panics on an attribute whose length is
        // below its 4-byte header (`NlaBuffer::value_length` subtracts;
        // found by scripts/fuzz.sh): such a message is counted as bad
        // instead of ending the conntrack thread.
        let parsed =
            std::panic::catch_unwind(|| NetlinkMessage::<NetfilterMessage>::deserialize(one));
        let Ok(parsed) = parsed else {
            bad += 1;
            continue;
        };
        match parsed {
            Ok(m) => match m.payload {
                NetlinkPayload::Done(_) => f(CtEvent::Done),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        // A negative errno; saturating, as i32::MIN has no
                        // negation (found by scripts/fuzz.sh).
                        return Err(io::Error::from_raw_os_error(code.get().saturating_neg()));
                    }
                }
                NetlinkPayload::InnerMessage(m) => f(event_of(m)),
                _ => {}
            },
            Err(_) => bad += 1,
        }
    }
    Ok(bad)
}

fn event_of(m: NetfilterMessage) -> CtEvent {
    let NetfilterMessageInner::Conntrack(ct) = m.inner else {
        return CtEvent::Ignored;
    };
    match ct {
        ConntrackMessage::New(a) | ConntrackMessage::Get(a) => {
            entry_of(&a).map_or(CtEvent::Ignored, CtEvent::New)
        }
        ConntrackMessage::Delete(a) => entry_of(&a).map_or(CtEvent::Ignored, CtEvent::Destroy),
        _ => CtEvent::Ignored,
    }
}

/// The TCP or UDP entry the attributes describe.
pub fn entry_of(attrs: &[ConntrackAttribute]) -> Option<CtEntry> {
    let mut orig = None;
    let mut reply = None;
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple_of(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_of(t),
            _ => {}
        }
    }
    let (p1, orig) = orig?;
    let (p2, reply) = reply?;
    (p1 == p2 && (p1 == PROTO_TCP || p1 == PROTO_UDP)).then_some(CtEntry {
        proto: p1,
        orig,
        reply,
    })
}

fn tuple_of(parts: &[NlTuple]) -> Option<(u8, Tuple)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for p in parts {
        match p {
            NlTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            NlTuple::Proto(ps) => {
                for x in ps {
                    match x {
                        ProtoTuple::Protocol(pr) => proto = Some(u8::from(*pr)),
                        ProtoTuple::SourcePort(v) => sport = Some(*v),
                        ProtoTuple::DestinationPort(v) => dport = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        proto?,
        Tuple {
            src: SocketAddr::new(src?, sport?),
            dst: SocketAddr::new(dst?, dport?),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_netfilter::conntrack::Protocol;

    fn nl_tuple(src: &str, dst: &str) -> Vec<NlTuple> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        vec![
            NlTuple::Ip(vec![
                IPTuple::SourceAddress(s.ip()),
                IPTuple::DestinationAddress(d.ip()),
            ]),
            NlTuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::SourcePort(s.port()),
                ProtoTuple::DestinationPort(d.port()),
            ]),
        ]
    }

    /// Serializes a message the way the kernel frames an event, and parses
    /// it back through the same path the event socket uses.
    #[test]
    fn event_round_trip() {
        let attrs = vec![
            ConntrackAttribute::CtaTupleOrig(nl_tuple("198.18.0.1:40000", "198.18.9.9:80")),
            ConntrackAttribute::CtaTupleReply(nl_tuple("198.18.1.2:8080", "198.18.0.1:40000")),
        ];
        let mut msgs = Vec::new();
        for m in [
            ConntrackMessage::New(attrs.clone()),
            ConntrackMessage::Delete(attrs),
        ] {
            let mut nl = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::from(NetfilterMessage::new(
                    NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
                    m,
                )),
            );
            nl.finalize();
            let mut b = vec![0u8; nl.buffer_len()];
            nl.serialize(&mut b);
            msgs.extend_from_slice(&b);
        }
        let mut got = Vec::new();
        assert_eq!(parse_datagram(&msgs, |e| got.push(e)).unwrap(), 0);
        let want = CtEntry {
            proto: PROTO_TCP,
            orig: Tuple {
                src: "198.18.0.1:40000".parse().unwrap(),
                dst: "198.18.9.9:80".parse().unwrap(),
            },
            reply: Tuple {
                src: "198.18.1.2:8080".parse().unwrap(),
                dst: "198.18.0.1:40000".parse().unwrap(),
            },
        };
        assert_eq!(got, vec![CtEvent::New(want), CtEvent::Destroy(want)]);
        // A truncated datagram is one bad message, not a panic.
        assert_eq!(parse_datagram(&msgs[..20], |_| {}).unwrap(), 1);
    }

    /// The input scripts/fuzz.sh found (conntrack_netlink): an attribute
    /// whose length is below its own header made the netlink crate panic.
    #[test]
    fn an_attribute_shorter_than_its_header_is_a_bad_message() {
        let datagram: &[u8] = &[
            0x28, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x04, 0x1e, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x0b, 0x00, 0x10, 0x00, 0x08, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0x02,
            0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x19, 0x00, 0x08, 0x00, 0x0a, 0x00, 0xff,
            0x41, 0x00, 0x00, 0x0a, 0x04, 0x1e, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x0b, 0x00, 0x10, 0x00, 0x08, 0x00, 0x0c, 0x00, 0xff, 0x00, 0x00, 0x01, 0x00, 0x7e,
            0x00,
        ];
        let mut events = 0;
        let bad = parse_datagram(datagram, |_| events += 1).unwrap();
        assert_eq!((events, bad), (0, 2));
    }

    /// The second input scripts/fuzz.sh found: a netlink error answer
    /// whose code is i32::MIN, which has no negation.
    #[test]
    fn an_error_code_without_a_negation_is_an_error_not_a_panic() {
        let datagram: &[u8] = &[
            0x14, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x2e, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x80, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert!(parse_datagram(datagram, |_| {}).is_err());
    }
}
