//! What the open-socket iterator (`receiver-ebpf/src/bin/open_tcp.rs`, an
//! `iter/tcp` program) and user space (`receiver/src/open_tcp.rs`) share.
//!
//! The iterator writes one [`OpenTcp`] per open TCP socket into the
//! iterator's file with `bpf_seq_write`; user space reads the file to its
//! end and cuts it into records of `size_of::<OpenTcp>()` bytes. Nothing
//! else is in the stream (no header, no separator).

/// Kernel struct member offsets from the kernel's BTF, written into the
/// iterator's read-only data before loading (there are no CO-RE
/// relocations for Rust eBPF programs here, see `Offsets`). The iterator's
/// socket is a `struct sock_common *` and the helper's result a
/// `struct tcp_sock *`; both are BTF-typed, so each load at one of these
/// offsets is checked by the verifier against the type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenTcpOffsets {
    // struct sock_common.
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `skc_net.net`: the socket's `struct net *`.
    pub skc_net: u32,
    /// `skc_flags`: `enum sock_flags` bits (an `unsigned long`).
    pub skc_flags: u32,
    /// `struct net.ns.inum`: the namespace's inode number.
    pub net_ns_inum: u32,
    // The socket's inode: `tcp_sock` -> `sock.sk_socket` -> `socket.file`
    // -> `file.f_inode` -> `inode.i_ino`.
    /// `sk_socket` inside `struct tcp_sock` (its `struct sock` is at the
    /// start, `inet_conn.icsk_inet.sk`).
    pub sk_socket: u32,
    /// `struct socket.file`.
    pub socket_file: u32,
    /// `struct file.f_inode`.
    pub file_inode: u32,
    /// `struct inode.i_ino`.
    pub inode_ino: u32,
    // struct tcp_sock.
    pub bytes_acked: u32,
    pub bytes_received: u32,
    pub write_seq: u32,
    pub snd_una: u32,
    pub rcv_nxt: u32,
    pub copied_seq: u32,
    pub segs_in: u32,
    pub segs_out: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    pub mdev_us: u32,
    /// The bit number of `SOCK_DONE` in `enum sock_flags` (the peer's FIN
    /// arrived), as this kernel numbers it.
    pub sock_done_bit: u32,
}

/// [`OpenTcp::flags`].
pub mod open_tcp_flags {
    /// `SOCK_DONE` was set: the peer's FIN arrived (`tcp_fin()` sets it).
    pub const FIN_RECEIVED: u8 = 1;
}

/// One open TCP socket as the iterator saw it, with the socket lock held
/// (`bpf_iter_tcp_seq_show()` takes `lock_sock()` around the program for
/// every full socket, so the counters are one consistent snapshot: input
/// that arrives meanwhile waits in the socket's backlog).
///
/// Written for every full TCP socket of the iterator's network namespace
/// except those in CLOSE. A listener (LISTEN) is written too, though it
/// moves no bytes: at start-up its address and inode tell which process
/// listens there (`receiver/src/open_tcp/seed.rs`). TIME_WAIT
/// (`struct inet_timewait_sock`) and request sockets (`struct
/// request_sock`, state NEW_SYN_RECV) are not full sockets and are never
/// written: their connection's counters are gone, or it has none yet.
///
/// The counters are the kernel's own, unprocessed; user space derives the
/// bytes from them (`receiver/src/open_tcp.rs`, `OpenTcp::bytes` there).
/// 8-aligned, [`OpenTcp::SIZE`] bytes with no implicit padding.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenTcp {
    /// The socket's address (`struct sock *`), the same value the `sock:`
    /// and `tcp:` tracepoints pass (`skaddr`), so that a record joins the
    /// events of the same socket while it lives. (Two sockets never share
    /// it at once; after a socket is freed the address may be reused.)
    pub sk: u64,
    /// `tcp_sock.bytes_acked`: how far `snd_una` advanced (64 bits).
    pub bytes_acked: u64,
    /// `tcp_sock.bytes_received`: how far `rcv_nxt` advanced in order (64
    /// bits).
    pub bytes_received: u64,
    /// Local and peer address; an IPv4 address is in the first 4 bytes
    /// (network order), the rest zero.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// Inode of the socket's network namespace (`sk->sk_net->ns.inum`).
    pub netns: u32,
    /// `tcp_sock.write_seq`: the sequence number after the last byte the
    /// application queued (and after a FIN once queued).
    pub write_seq: u32,
    /// `tcp_sock.snd_una`: the first sequence number not acknowledged.
    pub snd_una: u32,
    /// `tcp_sock.rcv_nxt`: the next sequence number expected in order.
    pub rcv_nxt: u32,
    /// `tcp_sock.copied_seq`: the next sequence number the application
    /// will read.
    pub copied_seq: u32,
    pub segs_in: u32,
    pub segs_out: u32,
    pub total_retrans: u32,
    /// `tcp_sock.srtt_us` as the kernel keeps it: the smoothed RTT in
    /// microseconds, shifted left by 3.
    pub srtt_us: u32,
    /// `tcp_sock.mdev_us` as the kernel keeps it: the RTT's mean deviation
    /// in microseconds, shifted left by 2.
    pub mdev_us: u32,
    /// The socket's owner as the iterator gives it (`sk_uid`, in the
    /// reader's user namespace).
    pub uid: u32,
    /// `AF_INET` or `AF_INET6` (an IPv6 socket talking IPv4 is `AF_INET6`
    /// with IPv4-mapped addresses).
    pub family: u16,
    /// Local and peer port, host byte order.
    pub lport: u16,
    pub rport: u16,
    /// The TCP state (`include/net/tcp_states.h` numbering).
    pub state: u8,
    /// [`open_tcp_flags`].
    pub flags: u8,
    /// The inode of the socket's file (`sk->sk_socket->file->f_inode->i_ino`),
    /// the number `/proc/PID/fd` shows as `socket:[INODE]`; 0 for a socket
    /// no file holds (an accepted socket not yet accept()ed, or one whose
    /// process closed it while the kernel ends the connection). sockfs
    /// numbers its inodes with `get_next_ino()`, an `unsigned int`, so 32
    /// bits hold it.
    pub ino: u32,
}

impl OpenTcp {
    /// Bytes of one record in the iterator's stream.
    pub const SIZE: usize = 112;
}

const _: () = assert!(core::mem::size_of::<OpenTcp>() == OpenTcp::SIZE);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers and byte arrays with explicit
    // padding: any bit pattern is a valid value.
    unsafe impl aya::Pod for super::OpenTcpOffsets {}
    unsafe impl aya::Pod for super::OpenTcp {}
}
