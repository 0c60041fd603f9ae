//! What the drop program (`receiver-ebpf/src/bin/drops.rs`) and user space
//! share.

/// `struct sk_buff` member offsets from the kernel's BTF, and the one
/// reason the program leaves alone, written into the program's read-only
/// data before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropOffsets {
    /// `sk_buff.head`: the start of the packet buffer.
    pub skb_head: u32,
    /// `sk_buff.network_header`: the IP header's offset from `head`
    /// (`0xffff` when not set).
    pub skb_network_header: u32,
    /// The drop reason value not counted: `NOT_SPECIFIED`'s, unless user
    /// space asks for it (then `u32::MAX`, which no reason has).
    pub skip_reason: u32,
    pub _pad: u32,
}

/// Key of the `DROPS` map: a dropped packet's addresses, ports, protocol
/// and the kernel's reason. Family 0 when the packet had no IP header to
/// read (its reason alone is known); ports 0 when it was not TCP or UDP.
#[repr(C)]
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
    /// `DROPS` was full: a dropped packet was not counted.
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
