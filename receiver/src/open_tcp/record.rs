//! The iterator's records, checked and decoded: [`OpenSocket`] from one
//! [`OpenTcp`], and [`parse`] for the bytes of one read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flowscope_common::{AF_INET, AF_INET6, OpenTcp, open_tcp_flags};
use thiserror::Error;

use super::bytes::{SeqCounters, TcpBytes};

/// What is wrong with the bytes an iterator returned.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error(
        "read {read} bytes, not a whole number of {size}-byte records ({} over)",
        read % size
    )]
    Torn { read: usize, size: usize },
    #[error("record {index}: address family {family} is neither AF_INET nor AF_INET6")]
    Family { index: usize, family: u16 },
    #[error("record {index}: TCP state {state} is not one an open socket is written in")]
    State { index: usize, state: u8 },
}

/// The TCP states of the sockets the iterator writes (every state of a
/// full socket but CLOSE; TIME_WAIT sockets are not full sockets).
/// Numbered as in include/net/tcp_states.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    Established,
    SynSent,
    /// A full socket in SYN_RECV: a Fast Open server's child, which
    /// exists before the handshake ends (an ordinary SYN_RECV is a
    /// request socket, which the iterator does not write).
    SynRecv,
    FinWait1,
    FinWait2,
    CloseWait,
    LastAck,
    Closing,
    /// A listener: no connection, no bytes; read for its address and
    /// inode ([`super::seed`]).
    Listen,
}

impl TcpState {
    /// The state numbered `n` by the kernel; `None` for CLOSE, TIME_WAIT,
    /// NEW_SYN_RECV and numbers outside the list.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        Some(match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            _ => return None,
        })
    }

    /// Whether a socket in this state has queued its FIN: the states
    /// `tcp_close_state()` moves to just before `tcp_send_fin()`, and those
    /// that follow them.
    pub fn fin_queued(self) -> bool {
        matches!(
            self,
            TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing | TcpState::LastAck
        )
    }
}

/// One open TCP socket, decoded and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSocket {
    /// The `struct sock *` (the tracepoints' `skaddr`).
    pub sk: u64,
    /// Inode of the socket's network namespace.
    pub netns: u32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub state: TcpState,
    /// The socket's owner (`sk_uid`).
    pub uid: u32,
    /// The inode of the socket's file, as `/proc/PID/fd` links name it
    /// (`socket:[INODE]`); 0 when no file holds the socket.
    pub ino: u32,
    /// The peer's FIN arrived (`SOCK_DONE`).
    pub fin_received: bool,
    /// Bytes so far ([`TcpBytes::derive`]).
    pub bytes: TcpBytes,
    /// The counters the bytes come from.
    pub counters: SeqCounters,
    pub segs_in: u32,
    pub segs_out: u32,
    pub total_retrans: u32,
    /// Smoothed RTT, microseconds (`srtt_us >> 3`, as `tcp_info` gives it).
    pub srtt_us: u32,
    /// RTT mean deviation, microseconds (`mdev_us >> 2`, as `tcp_info`).
    pub rttvar_us: u32,
}

impl OpenSocket {
    /// Decodes record number `index` of a read; an error names a family or
    /// state the program does not write.
    pub fn new(r: &OpenTcp, index: usize) -> Result<OpenSocket, RecordError> {
        let ip = |raw: &[u8; 16]| -> Result<IpAddr, RecordError> {
            match r.family {
                AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
                AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*raw))),
                family => Err(RecordError::Family { index, family }),
            }
        };
        let state = TcpState::from_kernel(r.state).ok_or(RecordError::State {
            index,
            state: r.state,
        })?;
        let fin_received = r.flags & open_tcp_flags::FIN_RECEIVED != 0;
        let counters = SeqCounters {
            bytes_acked: r.bytes_acked,
            bytes_received: r.bytes_received,
            write_seq: r.write_seq,
            snd_una: r.snd_una,
            rcv_nxt: r.rcv_nxt,
            copied_seq: r.copied_seq,
        };
        Ok(OpenSocket {
            sk: r.sk,
            netns: r.netns,
            local: SocketAddr::new(ip(&r.laddr)?, r.lport),
            peer: SocketAddr::new(ip(&r.raddr)?, r.rport),
            state,
            uid: r.uid,
            ino: r.ino,
            fin_received,
            bytes: TcpBytes::derive(&counters, state.fin_queued(), fin_received),
            counters,
            segs_in: r.segs_in,
            segs_out: r.segs_out,
            total_retrans: r.total_retrans,
            srtt_us: r.srtt_us >> 3,
            rttvar_us: r.mdev_us >> 2,
        })
    }
}

/// The records in `buf`, the whole output of one iterator: a length that
/// is not a multiple of [`OpenTcp::SIZE`] is an error naming it, as is a
/// record [`OpenSocket::new`] refuses.
pub fn parse(buf: &[u8]) -> Result<Vec<OpenSocket>, RecordError> {
    if !buf.len().is_multiple_of(OpenTcp::SIZE) {
        return Err(RecordError::Torn {
            read: buf.len(),
            size: OpenTcp::SIZE,
        });
    }
    buf.chunks_exact(OpenTcp::SIZE)
        .enumerate()
        .map(|(index, chunk)| {
            // SAFETY: `chunk` holds exactly size_of::<OpenTcp>() bytes
            // (checked at compile time in flowscope-common), read
            // unaligned; OpenTcp is integers and byte arrays, for which
            // every bit pattern is a value.
            let raw = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<OpenTcp>()) };
            OpenSocket::new(&raw, index)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OpenTcp {
        let mut r = OpenTcp {
            sk: 0xffff_8880_1234_5600,
            family: AF_INET,
            lport: 40_000,
            rport: 443,
            state: 1,
            netns: 4_026_531_840,
            bytes_acked: 1 + 12_345,
            bytes_received: 6_789,
            write_seq: 77,
            snd_una: 77,
            rcv_nxt: 9,
            copied_seq: 9,
            srtt_us: 800,
            mdev_us: 400,
            ..OpenTcp::default()
        };
        r.laddr[..4].copy_from_slice(&[198, 18, 1, 2]);
        r.raddr[..4].copy_from_slice(&[198, 18, 1, 1]);
        r
    }

    fn bytes_of(records: &[OpenTcp]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            // SAFETY: OpenTcp is plain data with no implicit padding
            // (its size is checked), so all its bytes are initialized.
            let b = unsafe {
                std::slice::from_raw_parts((r as *const OpenTcp).cast::<u8>(), OpenTcp::SIZE)
            };
            out.extend_from_slice(b);
        }
        out
    }

    #[test]
    fn decodes_a_record() {
        let s = parse(&bytes_of(&[record()])).unwrap();
        assert_eq!(s.len(), 1);
        let s = s[0];
        assert_eq!(s.local, "198.18.1.2:40000".parse().unwrap());
        assert_eq!(s.peer, "198.18.1.1:443".parse().unwrap());
        assert_eq!(s.state, TcpState::Established);
        assert_eq!(s.netns, 4_026_531_840);
        assert_eq!(s.bytes.data_sent(true), 12_345);
        assert_eq!(s.bytes.received, 6_789);
        assert_eq!((s.srtt_us, s.rttvar_us), (100, 100));
    }

    #[test]
    fn empty_read_is_no_socket() {
        assert_eq!(parse(&[]).unwrap(), vec![]);
    }

    #[test]
    fn torn_read_names_its_length() {
        let mut b = bytes_of(&[record(), record()]);
        b.truncate(OpenTcp::SIZE + 40);
        let e = parse(&b).unwrap_err();
        assert_eq!(
            e,
            RecordError::Torn {
                read: OpenTcp::SIZE + 40,
                size: OpenTcp::SIZE
            }
        );
        assert_eq!(
            e.to_string(),
            "read 152 bytes, not a whole number of 112-byte records (40 over)"
        );
    }

    #[test]
    fn refuses_unknown_family_and_state() {
        let mut bad = record();
        bad.family = 1;
        assert_eq!(
            parse(&bytes_of(&[record(), bad])).unwrap_err(),
            RecordError::Family {
                index: 1,
                family: 1
            }
        );
        let mut time_wait = record();
        time_wait.state = 6;
        assert_eq!(
            parse(&bytes_of(&[time_wait])).unwrap_err(),
            RecordError::State { index: 0, state: 6 }
        );
        let mut listen = record();
        listen.state = 10;
        listen.ino = 4242;
        let l = parse(&bytes_of(&[listen])).unwrap()[0];
        assert_eq!((l.state, l.ino), (TcpState::Listen, 4242));
    }

    #[test]
    fn ipv6_and_fin_flags() {
        let mut r = record();
        r.family = AF_INET6;
        r.laddr = "fd00:1::2".parse::<Ipv6Addr>().unwrap().octets();
        r.raddr = "fd00:1::1".parse::<Ipv6Addr>().unwrap().octets();
        r.state = 8; // CLOSE_WAIT
        r.flags = open_tcp_flags::FIN_RECEIVED;
        r.bytes_received = 6_789 + 1;
        let s = parse(&bytes_of(&[r])).unwrap()[0];
        assert_eq!(s.local, "[fd00:1::2]:40000".parse().unwrap());
        assert_eq!(s.state, TcpState::CloseWait);
        assert!(s.fin_received);
        assert_eq!(s.bytes.received, 6_789);
    }
}
