//! A flow's identity: the table groups connections into flows by
//! (process, role, local server port or peer server port, peer address),
//! which is where the client's ephemeral port disappears, as the contract
//! wants.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flowscope_common::{AF_INET, Conn, role};
use flowscope_model::{Role, Transport};

use super::Collector;

/// A flow's identity within one interval.
///
/// Kept small on purpose: one is stored per flow and per connection closed
/// in the last two intervals, and hashed twice per connection. Its
/// addresses are [`Addr`]s (20 bytes) rather than `SocketAddr`s (32), which
/// with the NAT address took the closed-connection table from 112 to 144
/// bytes an entry and the collector 10-15 % of its speed in `flowscope
/// bench`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct FlowKey {
    pub(super) transport: Transport,
    pub(super) role: Role,
    pub(super) netns: u32,
    pub(super) pid: u32,
    pub(super) comm: [u8; 16],
    pub(super) local: Addr,
    pub(super) peer: Addr,
    /// The peer as the socket addressed it, when NAT rewrote it (the port
    /// follows the same rule as `peer`'s).
    pub(super) nat: Option<Addr>,
}

/// An address and port without the IPv6 flow label and scope id a
/// `SocketAddr` carries (the kernel records give neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Addr {
    pub(super) ip: IpAddr,
    pub(super) port: u16,
}

impl Addr {
    pub(super) fn new(ip: IpAddr, port: u16) -> Self {
        Self { ip, port }
    }

    pub(super) fn socket(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// A connection or UDP flow whose peer looked translated but whose
/// conntrack entry was not found yet: its stats wait until the end of the
/// interval for the entry, apart from the flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PendKey {
    pub(super) transport: Transport,
    pub(super) netns: u32,
    pub(super) local: SocketAddr,
    pub(super) peer: SocketAddr,
    /// The TCP socket, to remember the answer for its later intervals.
    pub(super) sk: Option<u64>,
}

/// A socket's resolved peer: (real, as the socket addressed it), full
/// addresses with ports.
pub(super) type NatPeer = (SocketAddr, SocketAddr);

/// Normalises an address from the kernel: IPv4-mapped IPv6 becomes IPv4.
pub fn ip_from(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let v6 = Ipv6Addr::from(*raw);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

impl Collector {
    pub(super) fn role_by_ports(&self, local_port: u16, peer_port: u16) -> Role {
        let (lo, hi) = self.settings.ephemeral;
        let eph = |p: u16| p >= lo && p <= hi;
        match (eph(local_port), eph(peer_port)) {
            (true, false) => Role::Client,
            (false, true) => Role::Server,
            // An unknown peer (UDP read without asking for the sender):
            // the socket with the fixed port is the one being talked to.
            _ if peer_port == 0 => Role::Server,
            _ if local_port < peer_port => Role::Server,
            _ => Role::Client,
        }
    }

    pub(super) fn tcp_key(&self, c: &Conn) -> FlowKey {
        let role = match c.role {
            role::CLIENT => Role::Client,
            role::SERVER => Role::Server,
            _ => self.role_by_ports(c.lport, c.rport),
        };
        self.key(
            Transport::Tcp,
            role,
            c.netns,
            c.tgid,
            c.comm,
            ip_from(c.family, &c.laddr),
            c.lport,
            ip_from(c.family, &c.raddr),
            c.rport,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn key(
        &self,
        transport: Transport,
        role: Role,
        netns: u32,
        pid: u32,
        comm: [u8; 16],
        lip: IpAddr,
        lport: u16,
        rip: IpAddr,
        rport: u16,
    ) -> FlowKey {
        // The client's ephemeral port is never part of a flow's identity.
        let (lport, rport) = match role {
            Role::Client => (0, rport),
            Role::Server => (lport, 0),
        };
        FlowKey {
            transport,
            role,
            netns,
            pid,
            comm,
            local: Addr::new(lip, lport),
            peer: Addr::new(rip, rport),
            nat: None,
        }
    }
}
