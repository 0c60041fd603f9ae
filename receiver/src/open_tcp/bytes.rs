//! Bytes an application sent and read on a TCP socket, from the counters
//! the kernel keeps in `struct tcp_sock` (net/ipv4/tcp*.c, Linux 6.18).
//! [`TcpBytes::derive`] is the one place user space turns those counters
//! into bytes; the open-socket iterator's records go through it, and so
//! can a record read at the change to CLOSE.
//!
//! ## Sent
//!
//! `bytes_acked + (write_seq - snd_una)`, less 1 once a FIN is queued.
//!
//! - `bytes_acked` (64 bits) grows by every advance of `snd_una`
//!   (`tcp_snd_una_update()`, called from `tcp_ack()`): everything the
//!   peer acknowledged since the socket's first `snd_una`.
//! - `write_seq - snd_una` (a 32-bit difference, wrap-safe) is what was
//!   queued and not acknowledged yet, whether sent or still in the write
//!   queue. `sendmsg` raises `write_seq` by each byte it copies
//!   (`tcp_sendmsg_locked()`), so the sum counts the bytes the
//!   application handed to the kernel, acknowledged or not. A reset that
//!   purges the write queue leaves both numbers as they were.
//! - The FIN takes one sequence number: `tcp_send_fin()` raises
//!   `write_seq` by 1 when `close()` or `shutdown(SHUT_WR)` moved the
//!   state on (`tcp_close_state()`: ESTABLISHED -> FIN_WAIT1, CLOSE_WAIT ->
//!   LAST_ACK), so a socket in FIN_WAIT1, FIN_WAIT2, CLOSING or LAST_ACK
//!   (and TIME_WAIT, for a record read at the close) has one to take off.
//!   (If `tcp_send_fin()` could not allocate its buffer no FIN was queued
//!   and the figure is 1 short; that path is not tested.)
//! - **The client's SYN is in the figure.** A socket that called
//!   `connect()` starts with `snd_una` at its initial sequence number
//!   (`tcp_connect_init()`), and the handshake's ACK moves it past the SYN
//!   through `tcp_ack()`, adding 1 to `bytes_acked`; while the SYN is not
//!   acknowledged it is in `write_seq - snd_una` instead. An accepted
//!   socket starts with `snd_una == write_seq` one past its SYN-ACK
//!   (`tcp_create_openreq_child()`), so its SYN-ACK is not counted.
//!   Nothing in `tcp_sock` tells the two apart after the handshake, so
//!   [`TcpBytes::sent`] keeps the SYN and [`TcpBytes::data_sent`] takes it
//!   off for a socket the caller knows connected (the flow programs see
//!   the connect).
//!
//! ## Received
//!
//! `bytes_received - (rcv_nxt - copied_seq)`, less 1 once the application
//! read the peer's FIN.
//!
//! - `bytes_received` (64 bits) grows by every in-order advance of
//!   `rcv_nxt` (`tcp_rcv_nxt_update()`): the data that arrived, and the
//!   FIN once it did. The peer's SYN is not in it: the handshake sets
//!   `rcv_nxt` directly (`tcp_rcv_synsent_state_process()`,
//!   `tcp_create_openreq_child()`).
//! - `rcv_nxt - copied_seq` is what arrived and the application has not
//!   read. Data received but never read is therefore never counted:
//!   the figure is what `recvmsg` returned, as the length tracepoints
//!   count it.
//! - A FIN arrived when `SOCK_DONE` is set (`tcp_fin()` sets it); as the
//!   last sequence number it has been read exactly when nothing is left
//!   unread, since `tcp_recvmsg_locked()` moves `copied_seq` over it when
//!   a read reaches it.
//!
//! ## Why not `write_seq` and `copied_seq` less their first values
//!
//! That would need the first values (a record per socket at ESTABLISHED:
//! at SYN_SENT the ISN is not chosen yet) and would wrap after 4 GiB; the
//! two 64-bit counters need neither. Only the in-flight corrections are
//! 32-bit differences, and they are bounded by the socket's buffers.
//!
//! Not looked at: TCP Fast Open (data in the SYN changes where the
//! client's `write_seq` and the server's `bytes_received` start), TCP
//! repair and MPTCP subflows.

/// The sequence counters of one `struct tcp_sock`, as read in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqCounters {
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub write_seq: u32,
    pub snd_una: u32,
    pub rcv_nxt: u32,
    pub copied_seq: u32,
}

/// Bytes an application sent and read on one socket, from its counters
/// (see the module's documentation for the kernel paths behind each term).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpBytes {
    /// Bytes queued by `sendmsg`, plus 1 for the SYN of a socket that
    /// connected (see [`TcpBytes::data_sent`]).
    pub sent: u64,
    /// Bytes the application read (`recvmsg`), without data still
    /// unread and without the FIN.
    pub received: u64,
}

impl TcpBytes {
    /// The bytes of socket counters `c`. `fin_queued`: the socket queued
    /// its FIN (its state is FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK or
    /// TIME_WAIT). `fin_received`: `SOCK_DONE` is set.
    ///
    /// Counters that contradict each other (less acknowledged than a FIN,
    /// more unread than received) give 0 for that figure, never a panic or
    /// a wrapped number.
    pub fn derive(c: &SeqCounters, fin_queued: bool, fin_received: bool) -> TcpBytes {
        let unacked = u64::from(c.write_seq.wrapping_sub(c.snd_una));
        let sent = c
            .bytes_acked
            .saturating_add(unacked)
            .saturating_sub(u64::from(fin_queued));
        let unread = c.rcv_nxt.wrapping_sub(c.copied_seq);
        let fin_read = fin_received && unread == 0;
        let received = c
            .bytes_received
            .saturating_sub(u64::from(unread))
            .saturating_sub(u64::from(fin_read));
        TcpBytes { sent, received }
    }

    /// The application's bytes sent: [`TcpBytes::sent`] less the SYN when
    /// the socket `connected` (its CONNECT was seen); an accepted socket's
    /// figure has no SYN in it.
    pub fn data_sent(&self, connected: bool) -> u64 {
        self.sent.saturating_sub(u64::from(connected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client after the handshake: SYN acknowledged (bytes_acked 1), 100
    /// bytes written of which 60 acknowledged, 50 received of which 20
    /// read.
    #[test]
    fn client_in_flight_and_unread() {
        let isn = 1_000u32;
        let c = SeqCounters {
            bytes_acked: 1 + 60,
            bytes_received: 50,
            write_seq: isn + 1 + 100,
            snd_una: isn + 1 + 60,
            rcv_nxt: 5_050,
            copied_seq: 5_020,
        };
        let b = TcpBytes::derive(&c, false, false);
        assert_eq!(
            b,
            TcpBytes {
                sent: 101,
                received: 20
            }
        );
        assert_eq!(b.data_sent(true), 100);
        assert_eq!(b.data_sent(false), 101);
    }

    /// Sequence numbers that wrap past 2^32 between snd_una and write_seq.
    #[test]
    fn wrapping_sequence_numbers() {
        let c = SeqCounters {
            bytes_acked: 10_000_000_000,
            bytes_received: 7,
            write_seq: 5,
            snd_una: u32::MAX - 4,
            rcv_nxt: 3,
            copied_seq: u32::MAX - 1,
        };
        let b = TcpBytes::derive(&c, false, false);
        assert_eq!(b.sent, 10_000_000_000 + 10);
        assert_eq!(b.received, 7 - 5);
    }

    /// A half-closed client (FIN queued and acknowledged, FIN_WAIT2) and a
    /// server that read everything including the FIN (CLOSE_WAIT).
    #[test]
    fn fin_queued_and_fin_read() {
        let client = SeqCounters {
            bytes_acked: 1 + 500 + 1,
            write_seq: 502,
            snd_una: 502,
            ..SeqCounters::default()
        };
        assert_eq!(TcpBytes::derive(&client, true, false).sent, 501);
        let server = SeqCounters {
            bytes_received: 500 + 1,
            rcv_nxt: 9,
            copied_seq: 9,
            ..SeqCounters::default()
        };
        assert_eq!(TcpBytes::derive(&server, false, true).received, 500);
        // The FIN arrived, 100 bytes before it not read: the FIN is not
        // read either, and only the unread data comes off.
        let unread = SeqCounters {
            rcv_nxt: 109,
            copied_seq: 8,
            ..server
        };
        assert_eq!(TcpBytes::derive(&unread, false, true).received, 400);
    }

    /// Counters that cannot be true give 0, not a panic.
    #[test]
    fn contradictory_counters_saturate() {
        let c = SeqCounters {
            bytes_acked: 0,
            bytes_received: 3,
            write_seq: 0,
            snd_una: 0,
            rcv_nxt: 100,
            copied_seq: 0,
        };
        assert_eq!(
            TcpBytes::derive(&c, true, true),
            TcpBytes {
                sent: 0,
                received: 0
            }
        );
    }
}
