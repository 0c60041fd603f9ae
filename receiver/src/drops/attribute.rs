//! Which flow a dropped packet belongs to.
//!
//! The drop program keys each dropped packet by its own addresses, ports
//! and protocol (see `receiver-ebpf/src/bin/drops.rs`). At the end of an
//! interval the connection table offers every flow it saw in the interval
//! (live connections, connections that ended, UDP flows): a flow owns the
//! drops of the packets it sent (`transmit`: source = its local end,
//! destination = its peer) and of the packets on their way to it
//! (`receive`). The match is at the flow's own granularity: a client
//! flow's local port is not part of its identity (the contract merges
//! ephemeral ports), so a client flow matches on its local address and
//! its server's address and port, a server flow on its own address and
//! port and its client's address. A socket bound to the wildcard address
//! whose source was not found matches any local address.
//!
//! The packets of a connection between two monitored sockets on this host
//! (two namespaces) belong to both: the sender's flow counts a dropped
//! packet as transmit, the receiver's as receive. Each direction is
//! claimed once. What no flow claims in the interval is the host's
//! (`flowscope.host.drops`), by reason, as are drops without addresses
//! (not IP, or no TCP/UDP ports).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hashbrown::HashMap;

use flowscope_model::{FlowStats, Role, Transport};

/// One dropped-packet key's count since the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct DropDelta {
    /// `None` for a packet without TCP/UDP ports (or without an IP header).
    pub packet: Option<Packet>,
    pub reason: Arc<str>,
    pub packets: u64,
}

/// A dropped packet's transport and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

struct Record {
    packet: Packet,
    reason: Arc<str>,
    packets: u64,
    claimed_tx: bool,
    claimed_rx: bool,
}

/// One interval's drops, waiting for their flows.
#[derive(Default)]
pub struct Unclaimed {
    records: Vec<Record>,
    /// Records by (transport, one end's address and port): each record is
    /// under both its ends, since either may be the server.
    by_end: HashMap<(Transport, SocketAddr), Vec<usize>>,
    host: BTreeMap<Arc<str>, u64>,
}

impl Unclaimed {
    /// True when no drop waits for a flow: the connection table then skips
    /// the matching altogether.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn add(&mut self, d: DropDelta) {
        if d.packets == 0 {
            return;
        }
        let Some(p) = d.packet else {
            *self.host.entry(d.reason).or_default() += d.packets;
            return;
        };
        let i = self.records.len();
        self.records.push(Record {
            packet: p,
            reason: d.reason,
            packets: d.packets,
            claimed_tx: false,
            claimed_rx: false,
        });
        self.by_end.entry((p.transport, p.src)).or_default().push(i);
        if p.dst != p.src {
            self.by_end.entry((p.transport, p.dst)).or_default().push(i);
        }
    }

    /// Adds to `stats` the drops of the flow `local` <-> `peer` with the
    /// local side's `role` (the port of the client's end is ignored, as in
    /// the flow's identity).
    pub fn claim(
        &mut self,
        transport: Transport,
        role: Role,
        local: SocketAddr,
        peer: SocketAddr,
        stats: &mut FlowStats,
    ) {
        let (server, client_ip, local_is_server) = match role {
            Role::Client => (peer, local.ip(), false),
            Role::Server => (local, peer.ip(), true),
        };
        let Some(ids) = self.by_end.get(&(transport, server)) else {
            return;
        };
        let ip_matches = |want: IpAddr, got: IpAddr| want.is_unspecified() || want == got;
        for &i in ids {
            let r = &mut self.records[i];
            let p = r.packet;
            // Which end of the packet is the server decides its direction
            // for this flow.
            let transmit = if p.dst == server && ip_matches(client_ip, p.src.ip()) {
                // client -> server
                !local_is_server
            } else if p.src == server && ip_matches(client_ip, p.dst.ip()) {
                // server -> client
                local_is_server
            } else {
                continue;
            };
            let claimed = if transmit {
                &mut r.claimed_tx
            } else {
                &mut r.claimed_rx
            };
            if *claimed {
                continue;
            }
            *claimed = true;
            stats.add_drops(&r.reason, transmit, r.packets);
        }
    }

    /// Ends the interval: the host's drops by reason (unclaimed packets and
    /// packets without addresses); nothing waits afterwards.
    pub fn finish(&mut self) -> BTreeMap<Arc<str>, u64> {
        let mut host = std::mem::take(&mut self.host);
        for r in self.records.drain(..) {
            if !r.claimed_tx && !r.claimed_rx {
                *host.entry(r.reason).or_default() += r.packets;
            }
        }
        self.by_end.clear();
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn drop(src: &str, dst: &str, reason: &str, n: u64) -> DropDelta {
        DropDelta {
            packet: Some(Packet {
                transport: Transport::Udp,
                src: sa(src),
                dst: sa(dst),
            }),
            reason: Arc::from(reason),
            packets: n,
        }
    }

    fn drops(s: &FlowStats) -> Vec<(String, bool, u64)> {
        s.drops
            .iter()
            .map(|d| (d.reason.to_string(), d.transmit, d.packets))
            .collect()
    }

    #[test]
    fn sender_and_receiver_each_claim_their_direction_once() {
        let mut u = Unclaimed::default();
        u.add(drop("10.0.0.1:40000", "10.0.0.2:53", "NETFILTER_DROP", 7));
        u.add(drop("10.0.0.2:53", "10.0.0.1:40000", "NO_SOCKET", 2));
        u.add(DropDelta {
            packet: None,
            reason: Arc::from("OTHERHOST"),
            packets: 3,
        });
        // The client's flow: its local port is not part of it.
        let mut client = FlowStats::default();
        u.claim(
            Transport::Udp,
            Role::Client,
            sa("10.0.0.1:0"),
            sa("10.0.0.2:53"),
            &mut client,
        );
        assert_eq!(
            drops(&client),
            [
                ("NETFILTER_DROP".into(), true, 7),
                ("NO_SOCKET".into(), false, 2)
            ]
        );
        // A second client flow of the same socket's addresses claims nothing.
        let mut again = FlowStats::default();
        u.claim(
            Transport::Udp,
            Role::Client,
            sa("0.0.0.0:0"),
            sa("10.0.0.2:53"),
            &mut again,
        );
        assert!(again.drops.is_empty());
        // The server's flow sees the same packets the other way round.
        let mut server = FlowStats::default();
        u.claim(
            Transport::Udp,
            Role::Server,
            sa("10.0.0.2:53"),
            sa("10.0.0.1:0"),
            &mut server,
        );
        assert_eq!(
            drops(&server),
            [
                ("NETFILTER_DROP".into(), false, 7),
                ("NO_SOCKET".into(), true, 2)
            ]
        );
        // TCP is another flow.
        let mut tcp = FlowStats::default();
        u.claim(
            Transport::Tcp,
            Role::Client,
            sa("10.0.0.1:0"),
            sa("10.0.0.2:53"),
            &mut tcp,
        );
        assert!(tcp.drops.is_empty());
        let host = u.finish();
        assert_eq!(host.len(), 1);
        assert_eq!(host[&Arc::<str>::from("OTHERHOST")], 3);
        assert!(u.is_empty());
    }

    #[test]
    fn unclaimed_drops_are_the_hosts() {
        let mut u = Unclaimed::default();
        u.add(drop("10.0.0.1:40000", "10.0.0.2:53", "NETFILTER_DROP", 7));
        u.add(drop("10.0.0.9:40000", "10.0.0.2:53", "NETFILTER_DROP", 1));
        let mut other = FlowStats::default();
        // Another client address: not this flow's packets.
        u.claim(
            Transport::Udp,
            Role::Client,
            sa("10.0.0.3:0"),
            sa("10.0.0.2:53"),
            &mut other,
        );
        assert!(other.drops.is_empty());
        let mut client = FlowStats::default();
        u.claim(
            Transport::Udp,
            Role::Client,
            sa("10.0.0.1:0"),
            sa("10.0.0.2:53"),
            &mut client,
        );
        assert_eq!(drops(&client), [("NETFILTER_DROP".into(), true, 7)]);
        let host = u.finish();
        assert_eq!(host[&Arc::<str>::from("NETFILTER_DROP")], 1);
    }
}
