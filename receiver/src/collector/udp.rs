//! UDP flows: the kernel counts each (socket cookie, peer) in `UDP_FLOWS`
//! with running totals; the table reports `now - last` each interval and
//! forgets a flow idle for three intervals (the caller then deletes it
//! from the kernel map).

use std::net::SocketAddr;

use flowscope_common::{Owner, UdpKey, UdpStats};
use flowscope_model::Transport;
use flowscope_model::internal_events::{EventsLost, LossReason, Source};

use super::Collector;
use super::key::{PendKey, ip_from};
use crate::conntrack::Resolution;

pub(super) struct UdpTrack {
    pub(super) last: UdpStats,
    pub(super) seen_round: u64,
}

impl Collector {
    /// A UDP flow from the `UDP_FLOWS` map, with its owner when known.
    /// Returns true when the flow has been idle long enough that the caller
    /// should delete it from the kernel map.
    pub fn on_udp(&mut self, key: &UdpKey, now: &UdpStats, owner: Option<&Owner>) -> bool {
        let round = self.round;
        let tracked_len = self.tcp.len() + self.udp.len();
        let last = match self.udp.get_mut(key) {
            Some(t) => {
                let last = t.last;
                t.last = *now;
                if last.packets_tx != now.packets_tx || last.packets_rx != now.packets_rx {
                    t.seen_round = round;
                }
                last
            }
            None => {
                if tracked_len >= self.settings.max_tracked {
                    self.telemetry
                        .emit(EventsLost::new(Source::EbpfUdp, LossReason::TableFull, 1));
                    return false;
                }
                if !self.memory.admit() {
                    // Deleted from the kernel map too: its memory is freed,
                    // and the flow is counted once, not again every
                    // interval it stays there.
                    self.telemetry.emit(EventsLost::new(
                        Source::EbpfUdp,
                        LossReason::MemoryLimit,
                        1,
                    ));
                    return true;
                }
                self.udp.insert(
                    *key,
                    UdpTrack {
                        last: *now,
                        seen_round: round,
                    },
                );
                UdpStats::default()
            }
        };
        let (pid, comm, netns) = owner.map_or((0, [0; 16], 0), |o| (o.tgid, o.comm, o.netns));
        let lip = ip_from(key.family, &now.laddr);
        let rip = ip_from(key.family, &key.raddr);
        let role = self.role_by_ports(now.lport, key.rport);
        let mut fk = self.key(
            Transport::Udp,
            role,
            netns,
            pid,
            comm,
            lip,
            now.lport,
            rip,
            key.rport,
        );
        let (local, peer) = (
            SocketAddr::new(lip, now.lport),
            SocketAddr::new(rip, key.rport),
        );
        let pend = match self.resolve(Transport::Udp, netns, local, peer) {
            Resolution::Nat { real, nat } => {
                Self::apply_nat(&mut fk, (real, nat));
                None
            }
            Resolution::NotNat => None,
            Resolution::Missing => Some(PendKey {
                transport: Transport::Udp,
                netns,
                local,
                peer,
                sk: None,
            }),
        };
        let s = self.target(fk, pend);
        let moved = now.packets_tx != last.packets_tx || now.packets_rx != last.packets_rx;
        s.bytes_tx += now.bytes_tx.saturating_sub(last.bytes_tx);
        s.bytes_rx += now.bytes_rx.saturating_sub(last.bytes_rx);
        s.packets_tx += now.packets_tx.saturating_sub(last.packets_tx);
        s.packets_rx += now.packets_rx.saturating_sub(last.packets_rx);
        if moved {
            s.active += 1;
        }
        // Idle for three rounds: all its counts are reported, forget it.
        let idle = self
            .udp
            .get(key)
            .is_some_and(|t| round.saturating_sub(t.seen_round) >= 3);
        if idle {
            self.udp.remove(key);
        }
        idle
    }
}
