//! The peer behind NAT: with NAT resolution on, every socket's peer is
//! looked up in conntrack (see [`crate::conntrack`]), and a flow is
//! reported under the real peer with the address the socket used beside
//! it. A peer that looks translated but whose conntrack entry has not
//! arrived yet waits in a pending slot until the end of the interval (or
//! the next one).

use std::net::SocketAddr;
use std::time::Duration;

use flowscope_common::Conn;
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::{Role, Transport};

use super::Collector;
use super::key::{Addr, FlowKey, NatPeer, PendKey, ip_from};
use crate::clock::monotonic_ns;
use crate::conntrack::{PROTO_TCP, PROTO_UDP, Resolution};

/// How long a close event waits for the conntrack service to catch up
/// before it is settled as it resolves then.
const CATCH_UP_WAIT: Duration = Duration::from_millis(20);

impl Collector {
    /// What conntrack says about a socket sending `local -> peer`.
    pub(super) fn resolve(
        &self,
        transport: Transport,
        netns: u32,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Resolution {
        let Some(nat) = &self.nat else {
            return Resolution::NotNat;
        };
        let proto = match transport {
            Transport::Tcp => PROTO_TCP,
            Transport::Udp => PROTO_UDP,
        };
        nat.resolve(proto, netns, local, peer)
    }

    /// Rewrites a key's peer to the real one, keeping the translated one.
    pub(super) fn apply_nat(key: &mut FlowKey, (real, nat): NatPeer) {
        let port = |a: SocketAddr| match key.role {
            Role::Client => a.port(),
            Role::Server => 0,
        };
        key.peer = Addr::new(real.ip(), port(real));
        key.nat = Some(Addr::new(nat.ip(), port(nat)));
    }

    /// A TCP socket's flow key with its peer resolved (`cached` is what an
    /// earlier interval found), the resolution to remember, and the pending
    /// slot when unresolved.
    #[inline]
    /// `event_ns` is the time of the close or failure event asking, if
    /// one does: unresolved, it waits for the conntrack service to read
    /// what is queued (see [`Collector::catch_up_nat`]) and tries again.
    pub(super) fn tcp_key_resolved(
        &self,
        sk: u64,
        c: &Conn,
        cached: Option<NatPeer>,
        event_ns: Option<u64>,
    ) -> (FlowKey, Option<NatPeer>, Option<PendKey>) {
        let mut key = self.tcp_key(c);
        if self.nat.is_none() {
            return (key, None, None);
        }
        let local = SocketAddr::new(ip_from(c.family, &c.laddr), c.lport);
        let peer = SocketAddr::new(ip_from(c.family, &c.raddr), c.rport);
        let mut res = match cached {
            Some((real, nat)) => Resolution::Nat { real, nat },
            None => self.resolve(Transport::Tcp, c.netns, local, peer),
        };
        if !matches!(res, Resolution::Nat { .. })
            && event_ns.is_some_and(|t| t > self.caught_up_ns.get())
        {
            self.catch_up_nat();
            res = self.resolve(Transport::Tcp, c.netns, local, peer);
        }
        match res {
            Resolution::Nat { real, nat } => {
                Self::apply_nat(&mut key, (real, nat));
                (key, Some((real, nat)), None)
            }
            Resolution::NotNat => (key, None, None),
            Resolution::Missing => {
                let p = PendKey {
                    transport: Transport::Tcp,
                    netns: c.netns,
                    local,
                    peer,
                    sk: Some(sk),
                };
                (key, None, Some(p))
            }
        }
    }

    /// Has the conntrack service read every event queued now, waiting up to
    /// [`CATCH_UP_WAIT`]: a connection of a millisecond closes long before
    /// the service's thread may have read its NEW event. One catch-up
    /// serves every event stamped before it. A service that does not answer
    /// in time is not asked again for those events (debug log): the
    /// collection thread must not stall on it.
    pub fn catch_up_nat(&self) {
        let Some(nat) = &self.nat else { return };
        let now = monotonic_ns();
        if !nat.catch_up(CATCH_UP_WAIT) {
            tracing::debug!("conntrack did not catch up within {CATCH_UP_WAIT:?}");
        }
        self.caught_up_ns.set(now);
    }

    /// Gives the connections whose peer looked translated another chance
    /// to find their conntrack entry, then adds them to their flows:
    /// resolved, or as they were, counted in
    /// `flowscope.events.lost{reason=nat_unresolved}` (one per connection
    /// or UDP flow and interval). The conntrack service reads its events in
    /// short batches, so a connection closed just before the interval ended
    /// may be settled before its entry arrived: with `carry`, a slot still
    /// unresolved on its first settling waits for the next interval (its
    /// counts are then reported one interval late, under the real peer);
    /// the agent's last interval carries nothing.
    pub(super) fn settle_pending(&mut self, carry: bool) {
        let carried = std::mem::take(&mut self.carried);
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let (mut tcp_lost, mut udp_lost) = (0, 0);
        for (p, (mut key, stats)) in pending {
            let res = self.resolve(p.transport, p.netns, p.local, p.peer);
            if carry && !matches!(res, Resolution::Nat { .. }) && !carried.contains(&p) {
                self.carried.insert(p);
                self.pending.insert(p, (key, stats));
                continue;
            }
            match res {
                Resolution::Nat { real, nat } => {
                    Self::apply_nat(&mut key, (real, nat));
                    if let Some(sk) = p.sk {
                        if let Some(t) = self.tcp.get_mut(&sk) {
                            t.nat = Some(Box::new((real, nat)));
                        }
                        if let Some((k, ..)) = self.closed.get_mut(&sk) {
                            *k = key.clone();
                        }
                    }
                }
                _ => match p.transport {
                    Transport::Tcp => tcp_lost += 1,
                    Transport::Udp => udp_lost += 1,
                },
            }
            self.acc.entry(key).or_default().merge(&stats);
        }
        let pending = &self.pending;
        self.closed_pending.retain(|_, p| pending.contains_key(p));
        self.telemetry.emit(EventsLost::new(
            Source::EbpfTcp,
            LossReason::NatUnresolved,
            tcp_lost,
        ));
        self.telemetry.emit(EventsLost::new(
            Source::EbpfUdp,
            LossReason::NatUnresolved,
            udp_lost,
        ));
    }
}
