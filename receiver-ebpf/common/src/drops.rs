//! What the drop program (`receiver-ebpf/src/bin/drops.rs`) and user space
//! share.

/// `struct sk_buff` member offsets from the kernel's BTF, the reasons the
/// program leaves alone and the host's ephemeral port range, written into
/// the program's read-only data before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropOffsets {
    /// `sk_buff.head`: the start of the packet buffer.
    pub skb_head: u32,
    /// `sk_buff.network_header`: the IP header's offset from `head`
    /// (`0xffff` when not set).
    pub skb_network_header: u32,
    /// Reasons below 256 not counted, one bit each (`ignore[r / 32]` bit
    /// `r % 32`): `NOT_SPECIFIED` by default (`ebpf.drops.ignore`).
    pub ignore: [u32; 8],
    /// `net.ipv4.ip_local_port_range`: a packet's port in this range
    /// while the other end's is not is a client's ephemeral port, which
    /// no flow keeps (the contract merges them), so the key leaves it 0
    /// and a burst of short connections makes one entry, not thousands.
    pub ephemeral_low: u16,
    pub ephemeral_high: u16,
}

/// Key of the `DROPS` map: a dropped packet's addresses, ports, protocol
/// and the kernel's reason. Family 0 when the packet had no IP header to
/// read (its reason alone is known); ports 0 when it was not TCP or UDP.
/// 8-aligned (48 bytes either way, the fields where they were) so that the
/// program can zero it a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// Source address (IPv4 in the first 4 bytes), as in the packet.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// `enum skb_drop_reason` value, as the running kernel numbers it.
    pub reason: u32,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    /// `AF_INET`, `AF_INET6` or 0.
    pub family: u16,
    /// IP protocol (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    pub _pad: [u8; 5],
}

/// Indexes of the per-CPU `DROP_COUNTERS` array.
pub mod drop_counter {
    /// `DROPS` was full: a dropped packet was counted by its reason alone
    /// (`DROPS_BY_REASON`), without its flow.
    pub const MAP_FULL: u32 = 0;
    /// A packet header could not be read (counted under its reason alone).
    pub const READ_ERROR: u32 = 1;
    pub const COUNT: u32 = 2;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers and byte arrays with explicit
    // padding: any bit pattern is a valid value.
    unsafe impl aya::Pod for super::DropOffsets {}
    unsafe impl aya::Pod for super::DropKey {}
}
