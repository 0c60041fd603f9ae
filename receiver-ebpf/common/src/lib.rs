//! Plain-old-data shared by flowscope's eBPF programs and user space.
//!
//! Every struct here is `#[repr(C)]`, has explicit padding and only integer
//! fields, so both sides agree on its layout byte for byte. User space
//! implements `aya::Pod` for them (feature `user`).
#![no_std]

mod drops;
mod open_tcp;
pub use drops::{DropKey, DropOffsets, drop_counter};
pub use open_tcp::{OpenTcp, OpenTcpOffsets, open_tcp_flags};

/// Kernel struct member offsets and tracepoint field offsets.
///
/// There are no kprobes and no CO-RE relocations for Rust eBPF programs
/// here, so user space reads every offset it needs at start-up, struct
/// members from BTF (`/sys/kernel/btf/vmlinux`) and tracepoint record
/// fields from tracefs `format` files, and writes them into the programs'
/// read-only data before loading. The verifier then sees constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    // struct sock_common, through struct sock.
    pub sk_family: u32,
    pub sk_state: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `sk_common.skc_net.net`: the `struct net *` of the socket's netns.
    pub sk_net: u32,
    pub sk_cookie: u32,
    /// `struct sock.sk_err`.
    pub sk_err: u32,
    /// `struct sock.sk_protocol` (a u16 since Linux 5.6). The BTF-typed
    /// programs read the protocol here; the classic tracepoints from their
    /// records.
    pub sk_protocol: u32,
    /// `struct net.ns.inum`.
    pub net_ns_inum: u32,
    // struct tcp_sock.
    pub tcp_srtt_us: u32,
    pub tcp_mdev_us: u32,
    pub tcp_segs_in: u32,
    pub tcp_segs_out: u32,
    pub tcp_total_retrans: u32,
    /// `struct sock_common.skc_flags` (`sk_flags`, an `unsigned long` of
    /// `enum sock_flags` bits): bit `SOCK_DONE` says a FIN arrived.
    pub sk_flags: u32,
    /// `tcp_sock.bytes_acked` (u64): how far `snd_una` has advanced since
    /// the socket's send sequence began (the client's SYN included).
    pub tcp_bytes_acked: u32,
    /// `tcp_sock.bytes_received` (u64): how far `rcv_nxt` has advanced past
    /// the peer's SYN (a FIN that arrived included).
    pub tcp_bytes_received: u32,
    /// `tcp_sock.write_seq`, `snd_una`, `rcv_nxt`, `copied_seq` (u32
    /// sequence numbers): what is queued but not acknowledged, and what
    /// arrived but was not read, at the close.
    pub tcp_write_seq: u32,
    pub tcp_snd_una: u32,
    pub tcp_rcv_nxt: u32,
    pub tcp_copied_seq: u32,
    /// `inet_sock.inet_sport` (network order), read through the socket's
    /// `struct tcp_sock`: the local port at CLOSE, where `inet_num` may
    /// already be 0 (`tcp_set_state()` releases an unlocked port with
    /// `inet_put_port()` before the state change is traced).
    pub inet_sport: u32,
    // Tracepoint record fields.
    pub set_state_skaddr: u32,
    pub set_state_oldstate: u32,
    pub set_state_newstate: u32,
    pub set_state_protocol: u32,
    pub send_len_sk: u32,
    pub send_len_protocol: u32,
    pub send_len_ret: u32,
    pub send_len_flags: u32,
    pub recv_len_sk: u32,
    pub recv_len_protocol: u32,
    pub recv_len_ret: u32,
    pub recv_len_flags: u32,
    pub send_reset_skaddr: u32,
    pub recv_reset_skaddr: u32,
    /// `struct udp_sock.pending`: nonzero while a corked datagram (MSG_MORE,
    /// UDP_CORK) waits for more data.
    pub udp_pending: u32,
    /// `struct udp_sock.gso_size`: the UDP_SEGMENT socket option.
    pub udp_gso_size: u32,
    // struct task_struct and struct mm_struct (the DNS owner programs).
    /// `task_struct.group_leader`: the process's main thread.
    pub task_group_leader: u32,
    /// `task_struct.start_time`: when the task started (ns since boot).
    pub task_start_time: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.env_start` / `env_end`: the environment block in the
    /// process's memory (what /proc/PID/environ shows).
    pub mm_env_start: u32,
    pub mm_env_end: u32,
}

/// Configuration the programs read from their read-only data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// 1 to track TCP.
    pub tcp: u32,
    /// 1 to track UDP.
    pub udp: u32,
}

/// Role of the local side of a TCP connection, as the kernel saw it open.
pub mod role {
    /// The open was not seen (the connection predates the agent).
    pub const UNKNOWN: u8 = 0;
    /// connect(): SYN_SENT -> ESTABLISHED.
    pub const CLIENT: u8 = 1;
    /// accept(): SYN_RECV -> ESTABLISHED.
    pub const SERVER: u8 = 2;
}

/// TCP states from include/net/tcp_states.h.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const FIN_WAIT2: i32 = 5;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const LAST_ACK: i32 = 9;
    pub const LISTEN: i32 = 10;
    pub const CLOSING: i32 = 11;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// One TCP connection's figures as an [`Event`] carries them (and as the
/// collector takes them).
///
/// Bytes are what the applications wrote and read; segment, retransmit
/// and RTT fields are `struct tcp_sock`'s own, read when the connection
/// closes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// bpf_ktime_get_ns() when the open was seen (0 when it was not).
    pub opened_ns: u64,
    pub bytes_tx: u64,
    pub bytes_rx: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub total_retrans: u32,
    /// Smoothed RTT, microseconds (tcp_sock.srtt_us >> 3).
    pub srtt_us: u32,
    /// RTT mean deviation, microseconds (tcp_sock.mdev_us >> 2, as tcp_info).
    pub rttvar_us: u32,
    pub resets_tx: u32,
    pub resets_rx: u32,
    /// Thread group id of the process that connected or first read/wrote.
    pub tgid: u32,
    pub netns: u32,
    pub family: u16,
    /// Local and peer port, host byte order.
    pub lport: u16,
    pub rport: u16,
    pub role: u8,
    /// 1 once the connection reached ESTABLISHED while observed.
    pub established: u8,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub comm: [u8; 16],
    /// Unused (was the kernel side's snapshot tick); keeps the layout.
    pub snap_jiffies: u32,
}

/// What a ring buffer [`Event`] reports.
pub mod event_kind {
    /// The connection closed; `conn` holds its final counters. The kernel
    /// side sends a [`CloseRec`] (`CLOSE_MIN`) instead; user space's join
    /// makes this `Event` of it.
    pub const CLOSE: u32 = 1;
    /// A connect failed before ESTABLISHED; `errno` is sk_err.
    pub const FAILED: u32 = 2;
    /// Bytes moved on a socket already closed and forgotten (an application
    /// reading what was buffered after the peer's FIN); `conn` carries the
    /// tuple and the bytes, and `errno` the socket's `copied_seq` after the
    /// read (its u32 bits): a read that was under way when the socket moved
    /// to CLOSE (the change runs from the socket's backlog as the read
    /// releases its lock) was partly counted by the CLOSE record already.
    pub const LATE: u32 = 3;
    /// A process was seen owning a socket for the first time (recently):
    /// user space reads /proc for it while it still runs. `conn` carries
    /// only `tgid` and `comm`.
    pub const PROCESS: u32 = 4;
    /// A socket began listening (listen(), in the caller's context): `conn`
    /// has the process, the family, local address and port and the netns;
    /// it names the server of every connection accepted there.
    pub const LISTEN: u32 = 6;
    /// A reset sent (`resets_tx` 1) or received (`resets_rx` 1) on socket
    /// `sk`, with its tuple.
    pub const RESET: u32 = 7;
    /// A [`ConnectRec`]: connect() moved socket `sk` to SYN_SENT, in the
    /// caller's context (tgid set). The socket's CLOSE or FAILED comes
    /// later in the ring, naming the same `sk`.
    pub const CONNECT_MIN: u32 = 8;
    /// A [`CloseRec`]: socket `sk` (not a listener, not a failed connect)
    /// moved to CLOSE; TCP's own final counters.
    pub const CLOSE_MIN: u32 = 9;
    /// A [`ConnectRec`]: an accepted socket moved from SYN_RECV to
    /// ESTABLISHED (the handshake's last ACK, in softirq: `tgid` is 0).
    /// Its CLOSE comes later in the ring, naming the same `sk`.
    pub const ACCEPT: u32 = 10;
    /// A listening socket `sk` moved to CLOSE (close() or shutdown() of
    /// the listener): an [`Event`] with its tuple as far as it is left
    /// (the local port may be 0, see the flow programs' tcp.rs); `sk` is
    /// what ends the LISTEN it pairs with.
    pub const LISTEN_CLOSE: u32 = 11;
}

/// A connection's start as a record of its own size
/// (`event_kind::CONNECT_MIN`, `event_kind::ACCEPT`): every field is
/// written, so nothing is zeroed first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectRec {
    pub kind: u32,
    /// The connecting process; 0 for an ACCEPT.
    pub tgid: u32,
    pub sk: u64,
    /// jiffies at the state change.
    pub ts: u64,
}

/// A connection's end as a record of its own size
/// (`event_kind::CLOSE_MIN`): the tuple, the netns and TCP's own counters
/// at the change to CLOSE. Every field is written.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseRec {
    pub kind: u32,
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    pub _pad: u16,
    pub netns: u32,
    pub sk: u64,
    pub bytes_tx: u64,
    pub bytes_rx: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    pub rttvar_us: u32,
    /// `tcp_sock.copied_seq` at the close: how far the application had
    /// read. A `LATE` record's read ends at its own `copied_seq`; the part
    /// of it up to this one was counted here already.
    pub copied_seq: u32,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// jiffies at the close.
    pub ts: u64,
}

/// The two clocks read at one moment by the flow object's `clock_stamp`
/// program (value of its one-entry `CLOCK` array): user space turns the
/// records' ticks into `bpf_ktime_get_ns()` time with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockStamp {
    /// `bpf_jiffies64()`.
    pub jiffies: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
}

/// A ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    pub errno: i32,
    /// The `struct sock *`: what joins a socket's records.
    pub sk: u64,
    /// When it happened. The kernel side writes `jiffies` (a tick) into the
    /// records it sends (0 in PROCESS); the join's `Event`s carry
    /// `bpf_ktime_get_ns()` time, as the collector expects.
    pub ts_ns: u64,
    pub conn: Conn,
}

/// Key of the `UDP_FLOWS` map: one local socket and one peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UdpKey {
    /// Socket cookie (bpf_get_socket_cookie).
    pub cookie: u64,
    pub raddr: [u8; 16],
    pub rport: u16,
    pub family: u16,
    pub _pad: u32,
}

/// Value of the `UDP_FLOWS` map, counted by the cgroup_skb programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub bytes_tx: u64,
    pub bytes_rx: u64,
    pub packets_tx: u64,
    pub packets_rx: u64,
    pub laddr: [u8; 16],
    pub lport: u16,
    pub _pad: [u8; 6],
    /// bpf_ktime_get_ns() of the last packet.
    pub last_ns: u64,
}

/// Value of the `UDP_OWNERS` map (key: socket cookie): who owns a UDP
/// socket, recorded from the send/recv tracepoints in process context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub netns: u32,
    pub comm: [u8; 16],
}

/// Value of the `UDP_PEERS` map (key: thread id): the peer address that a
/// `cgroup/sendmsg*` or `cgroup/recvmsg*` program saw for an unconnected
/// UDP socket, kept for the send/recv length tracepoint that fires at the
/// end of the same syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpPeer {
    /// Socket cookie of the socket the address belongs to.
    pub cookie: u64,
    pub raddr: [u8; 16],
    /// Host byte order.
    pub rport: u16,
    pub family: u16,
    /// 1 for a send, 0 for a receive.
    pub transmit: u8,
    /// 1 until a length tracepoint has used it.
    pub valid: u8,
    pub _pad: [u8; 2],
}

/// Key of the DNS receiver's `DNS_SOCKS` map: one local socket that sent
/// a DNS message (to or from one of the DNS ports), per network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsSockKey {
    /// The socket's bound address as IPv6: an IPv4 address as
    /// `::ffff:a.b.c.d`, the wildcard (`0.0.0.0`, `::`) as all zeros.
    pub addr: [u8; 16],
    /// Inode of the socket's network namespace.
    pub netns: u32,
    /// Local port, host byte order.
    pub port: u16,
    /// IPPROTO_UDP or IPPROTO_TCP.
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `DNS_SOCKS`: the process that last sent on the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsSockOwner {
    /// Start time of the process (its main thread), ns since boot: with
    /// `tgid`, names one process even when pids are reused.
    pub start_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// Most bytes of a process's environment a [`DnsProcess`] record carries.
pub const DNS_ENV_MAX: usize = 16384;

/// Head of a `DNS_EVENTS` ring buffer record: a process that sent a DNS
/// message for the first time (since it was last announced). `env_len`
/// bytes of its environment follow the head.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsProcess {
    pub start_ns: u64,
    /// bpf_get_current_cgroup_id(): the cgroup v2 id (its directory's inode).
    pub cgroup_id: u64,
    pub tgid: u32,
    /// Bytes of environment that follow.
    pub env_len: u32,
    /// The whole environment's size (more than `env_len`: truncated).
    pub env_total: u32,
    /// [`dns_flags`].
    pub flags: u32,
    pub comm: [u8; 16],
}

/// [`DnsProcess::flags`].
pub mod dns_flags {
    /// The environment could not be read (a page not resident, no mm).
    pub const ENV_UNREAD: u32 = 1;
}

/// A whole `DNS_EVENTS` record as the program builds it (per-CPU scratch).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsProcessRecord {
    pub head: DnsProcess,
    pub env: [u8; DNS_ENV_MAX],
}

/// A set of ports (bit `port` of 65,536), in the DNS object's read-only
/// data: testing a port is one load, no map lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSet {
    pub bits: [u64; 1024],
}

impl PortSet {
    pub const EMPTY: PortSet = PortSet { bits: [0; 1024] };

    pub fn insert(&mut self, port: u16) {
        self.bits[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    #[inline(always)]
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }
}

/// Indexes of the DNS object's per-CPU `DNS_COUNTERS` array.
pub mod dns_counter {
    /// `DNS_EVENTS` had no room for a process record.
    pub const RINGBUF_FULL: u32 = 0;
    /// A process's environment could not be read in the kernel.
    pub const ENV_UNREAD: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// TCP tracepoint hits handled.
    pub const TCP_EVENTS: u32 = 0;
    /// UDP packets and socket calls handled.
    pub const UDP_EVENTS: u32 = 1;
    /// Ring buffer full: an Event was not written.
    pub const RINGBUF_FULL: u32 = 2;
    /// No longer written: the TCP programs keep no per-connection map
    /// (issue 24). The slot stays so that the pinned layout does not change.
    pub const TCP_MAP_FULL: u32 = 3;
    /// UDP_FLOWS full: a UDP flow was not tracked.
    pub const UDP_MAP_FULL: u32 = 4;
    /// A kernel read (bpf_probe_read_kernel) failed.
    pub const READ_ERROR: u32 = 5;
    /// UDP_OWNERS full.
    pub const OWNER_MAP_FULL: u32 = 6;
    /// UDP_PEERS refused an entry: an unconnected socket's datagram was
    /// counted without its peer (under the unspecified address).
    pub const PEER_MAP_FULL: u32 = 7;
    /// Connection ends (`CLOSE` and `FAILED` records) written to the ring
    /// buffer. With the map pinned, a restarted agent compares it with
    /// [`REPORTED`]`+CONNS_ENDED` to count what a killed one never
    /// delivered.
    pub const CONNS_ENDED: u32 = 8;
    /// The counters the kernel side writes.
    pub const COUNT: u32 = 9;
    /// Slots `REPORTED..REPORTED + COUNT`, written by user space only (in
    /// the first CPU's value): each counter as far as an agent has
    /// reported it, and for `CONNS_ENDED` the connection ends it has
    /// delivered in a batch.
    pub const REPORTED: u32 = COUNT;
    /// Written by user space only: the pid of the agent using the map (0:
    /// none).
    pub const OWNER: u32 = 2 * COUNT;
    /// The map's entries.
    pub const SLOTS: u32 = 2 * COUNT + 1;
    /// The layout above, in the name of the map's pin: an agent of another
    /// layout never takes over a pinned map.
    pub const LAYOUT: u32 = 1;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is repr(C), Copy, made of integers and byte arrays
    // with explicit padding, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Conn {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::ConnectRec {}
    unsafe impl aya::Pod for super::CloseRec {}
    unsafe impl aya::Pod for super::ClockStamp {}
    unsafe impl aya::Pod for super::UdpKey {}
    unsafe impl aya::Pod for super::UdpStats {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::UdpPeer {}
    unsafe impl aya::Pod for super::DnsSockKey {}
    unsafe impl aya::Pod for super::DnsSockOwner {}
    unsafe impl aya::Pod for super::DnsProcess {}
    unsafe impl aya::Pod for super::PortSet {}
}
