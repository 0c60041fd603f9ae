//! The NAT table: the conntrack entries of every watched namespace whose
//! translation changed an address or port, and the lookups the flow
//! collector makes. Sans-IO: the conntrack service ([`super`]) feeds it
//! entries and times, and the tests here drive it without a kernel.
//!
//! The shared handle, [`NatResolver`], belongs to the host's one conntrack
//! service: the service writes into it, the flow collector of every `ebpf`
//! receiver with `nat.enabled` reads it. A resolver nobody writes stays
//! empty and every lookup answers [`Resolution::NotNat`].
//!
//! A conntrack entry has two tuples. The *original* one is the first
//! packet as it entered conntrack (the client's socket: client -> Service
//! IP); the *reply* one is what the answer looks like after NAT (pod ->
//! client, or pod -> the masquerade address when the source was rewritten
//! too). So for a socket whose outgoing tuple (local -> peer):
//! - is an entry's original tuple (the socket connected), the real peer is
//!   the reply tuple's source;
//! - is an entry's reply tuple (the socket accepted a NATed connection),
//!   the real peer is the original tuple's source.
//!
//! **Catching up.** The kernel queues a connection's conntrack NEW event
//! when its first packet passes, before the connection can close; but the
//! service reads its sockets on its own thread, so a connection of a
//! millisecond can reach the collector (its close event) before its entry
//! reaches the table, and would be taken for an untranslated one. The
//! collector therefore asks the writer to [`NatResolver::catch_up`] before
//! it settles a closed connection that did not resolve: the writer reads
//! every event queued at that moment, then answers.
//!
//! Entries NAT did not touch (reply = original reversed) say nothing a
//! socket does not know already, and are not kept: memory goes only to
//! translated connections. A source-only translation (SNAT, masquerade) of
//! the local side leaves the reply's source equal to the peer, so it never
//! turns the local side's translated address into the peer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::collections::HashMap;

/// The table's maps: foldhash instead of SipHash. Keys are tuples the
/// kernel reports, not attacker-chosen map keys of a server, and at tens
/// of thousands of events per second the hashing showed in profiles.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::{Arc, Mutex, MutexGuard};

/// IP protocol numbers conntrack reports.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// One direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A conntrack entry as netlink reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub proto: u8,
    pub orig: Tuple,
    pub reply: Tuple,
}

impl CtEntry {
    /// True when NAT rewrote anything (the reply is not the original
    /// reversed).
    pub fn is_nat(&self) -> bool {
        self.reply.src != self.orig.dst || self.reply.dst != self.orig.src
    }

    /// True when the destination was rewritten (DNAT: a Service IP).
    pub fn is_dnat(&self) -> bool {
        self.reply.src != self.orig.dst
    }
}

/// What the table says about a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No translation of the peer is known: report the socket's peer.
    NotNat,
    /// NAT rewrote the peer: `real` is who is on the other end, `nat` what
    /// the socket used.
    Nat { real: SocketAddr, nat: SocketAddr },
    /// The peer is the original destination of known DNAT entries (a
    /// Service address) but this socket's own entry was not found: it was
    /// probably translated, and that was missed.
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    tuple: Tuple,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    netns: u32,
    /// The other tuple of the entry (reply for the original index and the
    /// other way around).
    other: Tuple,
    destroyed: Option<Instant>,
    /// Insertion number, to recognise this slot in the insertion queue.
    generation: u64,
}

/// Which slot [`NatTable::remove`] may remove.
#[derive(Clone, Copy)]
enum Which {
    Any,
    DestroyedAt(Instant),
    Generation(u64),
}

impl Which {
    fn matches(self, s: &Slot) -> bool {
        match self {
            Which::Any => true,
            Which::DestroyedAt(t) => s.destroyed == Some(t),
            Which::Generation(g) => s.generation == g,
        }
    }
}

/// Why an entry was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// NAT did not touch it.
    NotNat,
    /// The table is full and nothing could be evicted (a bound of 0).
    Full,
}

/// The NAT entries of every watched namespace, bounded.
pub struct NatTable {
    max_tracked: usize,
    retention: Duration,
    by_orig: Map<Key, Vec<Slot>>,
    by_reply: Map<Key, Vec<Slot>>,
    /// (proto, original destination) of DNAT entries, counted: a socket
    /// whose peer is one of these was probably translated.
    dnat_dsts: Map<(u8, SocketAddr), u32>,
    /// Entries in destroy order: (when, netns, original key).
    destroyed: VecDeque<(Instant, u32, Key)>,
    /// Entries in insertion order: (generation, netns, original key); may
    /// hold stale items, compacted when it grows past twice the bound.
    inserted: VecDeque<(u64, u32, Key)>,
    generation: u64,
    len: usize,
    /// Live entries evicted to make room (the oldest first), ever.
    pub evicted_live: u64,
}

impl NatTable {
    pub fn new(max_tracked: usize, retention: Duration) -> Self {
        Self {
            max_tracked: max_tracked.max(1),
            retention,
            by_orig: Map::default(),
            by_reply: Map::default(),
            dnat_dsts: Map::default(),
            destroyed: VecDeque::new(),
            inserted: VecDeque::new(),
            generation: 0,
            len: 0,
            evicted_live: 0,
        }
    }

    /// Entries held, live and recently destroyed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A new (or dumped) entry of namespace `netns`. An entry with the same
    /// original tuple in that namespace is replaced (a reused port).
    pub fn insert(&mut self, netns: u32, e: &CtEntry, now: Instant) -> Result<(), Refused> {
        if !e.is_nat() {
            return Err(Refused::NotNat);
        }
        let key = Key {
            proto: e.proto,
            tuple: e.orig,
        };
        let replaced = self.remove(netns, &key, Which::Any);
        if !replaced && self.len >= self.max_tracked {
            self.sweep(now);
            // Room comes from the oldest destroyed entries first, then from
            // the oldest live ones: at thousands of connections per second
            // conntrack keeps each in TIME_WAIT for minutes, and the newest
            // connections are the ones whose flows are still to be reported
            // (the collector remembers the resolution of the ones it saw).
            while self.len >= self.max_tracked {
                if let Some((at, ns, k)) = self.destroyed.pop_front() {
                    self.remove(ns, &k, Which::DestroyedAt(at));
                } else if let Some((g, ns, k)) = self.inserted.pop_front() {
                    if self.remove(ns, &k, Which::Generation(g)) {
                        self.evicted_live += 1;
                    }
                } else {
                    return Err(Refused::Full);
                }
            }
        }
        self.generation += 1;
        let generation = self.generation;
        self.inserted.push_back((generation, netns, key));
        if self.inserted.len() > 2 * self.max_tracked + 1024 {
            self.compact();
        }
        let slot = |other| Slot {
            netns,
            other,
            destroyed: None,
            generation,
        };
        self.by_orig.entry(key).or_default().push(slot(e.reply));
        self.by_reply
            .entry(Key {
                proto: e.proto,
                tuple: e.reply,
            })
            .or_default()
            .push(slot(e.orig));
        if e.is_dnat() {
            *self.dnat_dsts.entry((e.proto, e.orig.dst)).or_default() += 1;
        }
        self.len += 1;
        Ok(())
    }

    /// The entry ended (DESTROY event): it stays resolvable for
    /// `retention`, for a connection that was over before its flow was
    /// reported.
    pub fn destroy(&mut self, netns: u32, e: &CtEntry, now: Instant) {
        if !e.is_nat() {
            return;
        }
        let key = Key {
            proto: e.proto,
            tuple: e.orig,
        };
        let mut found = false;
        for k in [
            key,
            Key {
                proto: e.proto,
                tuple: e.reply,
            },
        ] {
            let map = if k == key {
                &mut self.by_orig
            } else {
                &mut self.by_reply
            };
            if let Some(slots) = map.get_mut(&k) {
                for s in slots.iter_mut().filter(|s| s.netns == netns) {
                    if s.destroyed.is_none() {
                        s.destroyed = Some(now);
                        found = true;
                    }
                }
            }
        }
        if found {
            self.destroyed.push_back((now, netns, key));
        }
    }

    /// Forgets entries destroyed more than `retention` ago.
    pub fn sweep(&mut self, now: Instant) {
        while let Some(&(at, ns, k)) = self.destroyed.front() {
            if now.saturating_duration_since(at) < self.retention {
                break;
            }
            self.destroyed.pop_front();
            self.remove(ns, &k, Which::DestroyedAt(at));
        }
    }

    /// Marks as destroyed every live entry of `netns` not in `live` (a
    /// fresh dump after events were lost), then inserts `live`.
    pub fn resync(&mut self, netns: u32, live: &[CtEntry], now: Instant) -> usize {
        let keep: std::collections::HashSet<(u8, Tuple)> =
            live.iter().map(|e| (e.proto, e.orig)).collect();
        let mut gone = Vec::new();
        for (k, slots) in &self.by_orig {
            for s in slots {
                if s.netns == netns && s.destroyed.is_none() && !keep.contains(&(k.proto, k.tuple))
                {
                    gone.push(CtEntry {
                        proto: k.proto,
                        orig: k.tuple,
                        reply: s.other,
                    });
                }
            }
        }
        for e in &gone {
            self.destroy(netns, e, now);
        }
        let mut full = 0;
        for e in live {
            if self.insert(netns, e, now) == Err(Refused::Full) {
                full += 1;
            }
        }
        full
    }

    /// Drops every entry of a namespace that no longer exists.
    pub fn forget_netns(&mut self, netns: u32) {
        let keys: Vec<Key> = self
            .by_orig
            .iter()
            .filter(|(_, v)| v.iter().any(|s| s.netns == netns))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.remove(netns, &k, Which::Any);
        }
    }

    /// Drops the insertion queue's items whose entry is gone or replaced.
    fn compact(&mut self) {
        let by_orig = &self.by_orig;
        self.inserted.retain(|(g, ns, k)| {
            by_orig
                .get(k)
                .is_some_and(|v| v.iter().any(|s| s.netns == *ns && s.generation == *g))
        });
    }

    /// Removes the entry of `netns` with original key `key` if `which`
    /// matches it. True when one was.
    fn remove(&mut self, netns: u32, key: &Key, which: Which) -> bool {
        let Some(slots) = self.by_orig.get_mut(key) else {
            return false;
        };
        let Some(i) = slots
            .iter()
            .position(|s| s.netns == netns && which.matches(s))
        else {
            return false;
        };
        let reply = slots.swap_remove(i).other;
        if slots.is_empty() {
            self.by_orig.remove(key);
        }
        let rkey = Key {
            proto: key.proto,
            tuple: reply,
        };
        if let Some(slots) = self.by_reply.get_mut(&rkey) {
            if let Some(j) = slots.iter().position(|s| s.netns == netns) {
                slots.swap_remove(j);
            }
            if slots.is_empty() {
                self.by_reply.remove(&rkey);
            }
        }
        if reply.src != key.tuple.dst {
            let dk = (key.proto, key.tuple.dst);
            if let Some(n) = self.dnat_dsts.get_mut(&dk) {
                *n -= 1;
                if *n == 0 {
                    self.dnat_dsts.remove(&dk);
                }
            }
        }
        self.len -= 1;
        true
    }

    /// Who is on the other end of a socket of namespace `netns` sending
    /// `local -> peer`. An entry of the socket's own namespace wins over one
    /// of a namespace the traffic crossed later (a router, the node).
    pub fn resolve(
        &self,
        proto: u8,
        netns: u32,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Resolution {
        if self.len == 0 {
            // No NAT anywhere (or conntrack not followed): every socket of
            // the host asks, so skip the three lookups.
            return Resolution::NotNat;
        }
        let key = Key {
            proto,
            tuple: Tuple {
                src: local,
                dst: peer,
            },
        };
        // Connected: the real peer is the reply's source. Accepted: the
        // original's source.
        for map in [&self.by_orig, &self.by_reply] {
            if let Some(slots) = map.get(&key) {
                let pick = slots
                    .iter()
                    .filter(|s| s.other.src != peer)
                    .min_by_key(|s| (s.netns != netns, s.destroyed.is_some()));
                if let Some(s) = pick {
                    return Resolution::Nat {
                        real: s.other.src,
                        nat: peer,
                    };
                }
            }
        }
        // Seen after translation (cgroup_skb counts a UDP packet leaving
        // after the namespace's OUTPUT/POSTROUTING NAT): the socket's tuple
        // is the reply reversed, the peer is already the real one.
        let seen_after = Key {
            proto,
            tuple: Tuple {
                src: peer,
                dst: local,
            },
        };
        if let Some(slots) = self.by_reply.get(&seen_after) {
            let pick = slots
                .iter()
                .filter(|s| s.other.dst != peer)
                .min_by_key(|s| (s.netns != netns, s.destroyed.is_some()));
            if let Some(s) = pick {
                return Resolution::Nat {
                    real: peer,
                    nat: s.other.dst,
                };
            }
        }
        if self.dnat_dsts.contains_key(&(proto, peer)) {
            Resolution::Missing
        } else {
            Resolution::NotNat
        }
    }
}

/// The shared handle on one [`NatTable`]: what the conntrack service
/// writes and the flow collectors read. Cheap to clone; clones share the
/// table.
#[derive(Clone)]
pub struct NatResolver {
    table: Arc<Mutex<NatTable>>,
    writer: Arc<Mutex<Option<Arc<dyn CatchUp>>>>,
}

/// The table's writer, asked to read what is queued for it now.
pub trait CatchUp: Send + Sync {
    /// Returns once every event queued before the call is in the table, or
    /// after `within`; true when caught up.
    fn catch_up(&self, within: Duration) -> bool;
}

impl std::fmt::Debug for NatResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatResolver")
            .field("tracked", &self.tracked())
            .finish()
    }
}

/// Bounds of a resolver nobody configured (the `nat` block's defaults).
pub const DEFAULT_MAX_TRACKED: usize = 65_536;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30);

impl Default for NatResolver {
    /// An empty table with the default bounds.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TRACKED, DEFAULT_RETENTION)
    }
}

impl NatResolver {
    /// A resolver over an empty table of its own.
    pub fn new(max_tracked: usize, retention: Duration) -> Self {
        Self {
            table: Arc::new(Mutex::new(NatTable::new(max_tracked, retention))),
            writer: Arc::new(Mutex::new(None)),
        }
    }

    /// Registers the table's writer (the conntrack service), which
    /// [`NatResolver::catch_up`] then asks; `None` when it stops.
    pub fn set_writer(&self, writer: Option<Arc<dyn CatchUp>>) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = writer;
    }

    /// Asks the writer to put every event queued now into the table, and
    /// waits up to `within` for it. True when it did; false when it did
    /// not answer in time. Without a writer there is nothing to wait for:
    /// true.
    pub fn catch_up(&self, within: Duration) -> bool {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        writer.is_none_or(|w| w.catch_up(within))
    }

    /// Replaces the shared table with an empty one with these bounds (the
    /// conntrack service, when it starts with its configured bounds).
    pub fn reset(&self, max_tracked: usize, retention: Duration) {
        *self.lock() = NatTable::new(max_tracked, retention);
    }

    /// The table, for the writer's batched updates.
    pub fn lock(&self) -> MutexGuard<'_, NatTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`NatTable::resolve`]; `proto` is [`PROTO_TCP`] or [`PROTO_UDP`].
    pub fn resolve(
        &self,
        proto: u8,
        netns: u32,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Resolution {
        self.lock().resolve(proto, netns, local, peer)
    }

    /// Adds an entry as if an event had said so (tests, benchmarks).
    pub fn insert(&self, netns: u32, e: &CtEntry) {
        let _ = self.lock().insert(netns, e, Instant::now());
    }

    /// NAT entries held now.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn t(src: &str, dst: &str) -> Tuple {
        Tuple {
            src: sa(src),
            dst: sa(dst),
        }
    }

    /// client 198.18.0.1:40000 -> Service 198.18.9.9:80, DNATed to a pod.
    fn dnat(port: u16, pod: &str) -> CtEntry {
        let client = format!("198.18.0.1:{port}");
        CtEntry {
            proto: PROTO_TCP,
            orig: t(&client, "198.18.9.9:80"),
            reply: t(pod, &client),
        }
    }

    #[test]
    fn dnat_resolves_both_ends() {
        let now = Instant::now();
        let mut tab = NatTable::new(10, Duration::from_secs(5));
        tab.insert(7, &dnat(40000, "198.18.1.2:8080"), now).unwrap();
        // The client's socket.
        assert_eq!(
            tab.resolve(PROTO_TCP, 7, sa("198.18.0.1:40000"), sa("198.18.9.9:80")),
            Resolution::Nat {
                real: sa("198.18.1.2:8080"),
                nat: sa("198.18.9.9:80")
            }
        );
        // The pod's socket sees the client as it is: nothing to change.
        assert_eq!(
            tab.resolve(PROTO_TCP, 8, sa("198.18.1.2:8080"), sa("198.18.0.1:40000")),
            Resolution::NotNat
        );
        // Another connection to the Service whose entry is unknown.
        assert_eq!(
            tab.resolve(PROTO_TCP, 7, sa("198.18.0.1:40001"), sa("198.18.9.9:80")),
            Resolution::Missing
        );
        // A packet counted after the DNAT (its peer is the pod already).
        assert_eq!(
            tab.resolve(PROTO_TCP, 7, sa("198.18.0.1:40000"), sa("198.18.1.2:8080")),
            Resolution::Nat {
                real: sa("198.18.1.2:8080"),
                nat: sa("198.18.9.9:80")
            }
        );
        // UDP to the same address is another protocol.
        assert_eq!(
            tab.resolve(PROTO_UDP, 7, sa("198.18.0.1:40000"), sa("198.18.9.9:80")),
            Resolution::NotNat
        );
    }

    #[test]
    fn masquerade_of_the_local_side_is_not_a_peer() {
        let now = Instant::now();
        let mut tab = NatTable::new(10, Duration::from_secs(5));
        // A router masquerades 198.18.0.1 as 198.18.5.1 towards the server.
        let e = CtEntry {
            proto: PROTO_TCP,
            orig: t("198.18.0.1:40000", "198.18.6.2:443"),
            reply: t("198.18.6.2:443", "198.18.5.1:40000"),
        };
        tab.insert(3, &e, now).unwrap();
        assert_eq!(
            tab.resolve(PROTO_TCP, 1, sa("198.18.0.1:40000"), sa("198.18.6.2:443")),
            Resolution::NotNat
        );
        // The server sees the masquerade address; the real client is known.
        assert_eq!(
            tab.resolve(PROTO_TCP, 2, sa("198.18.6.2:443"), sa("198.18.5.1:40000")),
            Resolution::Nat {
                real: sa("198.18.0.1:40000"),
                nat: sa("198.18.5.1:40000")
            }
        );
        // Not a DNAT: a miss towards the server is not suspicious.
        assert_eq!(
            tab.resolve(PROTO_TCP, 1, sa("198.18.0.1:40001"), sa("198.18.6.2:443")),
            Resolution::NotNat
        );
    }

    #[test]
    fn untranslated_entries_are_not_kept() {
        let mut tab = NatTable::new(10, Duration::from_secs(5));
        let e = CtEntry {
            proto: PROTO_TCP,
            orig: t("198.18.0.1:40000", "198.18.0.2:80"),
            reply: t("198.18.0.2:80", "198.18.0.1:40000"),
        };
        assert_eq!(tab.insert(1, &e, Instant::now()), Err(Refused::NotNat));
        assert!(tab.is_empty());
    }

    #[test]
    fn destroyed_entries_resolve_until_retention_ends() {
        let t0 = Instant::now();
        let mut tab = NatTable::new(10, Duration::from_secs(5));
        let e = dnat(40000, "198.18.1.2:8080");
        tab.insert(7, &e, t0).unwrap();
        tab.destroy(7, &e, t0 + Duration::from_secs(1));
        tab.sweep(t0 + Duration::from_secs(5));
        assert!(matches!(
            tab.resolve(PROTO_TCP, 7, sa("198.18.0.1:40000"), sa("198.18.9.9:80")),
            Resolution::Nat { .. }
        ));
        tab.sweep(t0 + Duration::from_secs(6));
        assert!(tab.is_empty());
        assert_eq!(
            tab.resolve(PROTO_TCP, 7, sa("198.18.0.1:40000"), sa("198.18.9.9:80")),
            Resolution::NotNat
        );
    }

    #[test]
    fn bound_evicts_destroyed_first_then_oldest_live() {
        let t0 = Instant::now();
        let mut tab = NatTable::new(2, Duration::from_secs(60));
        let (a, b, c) = (
            dnat(40000, "198.18.1.2:8080"),
            dnat(40001, "198.18.1.3:8080"),
            dnat(40002, "198.18.1.2:8080"),
        );
        tab.insert(7, &a, t0).unwrap();
        tab.insert(7, &b, t0).unwrap();
        tab.destroy(7, &a, t0);
        tab.insert(7, &c, t0).unwrap();
        assert_eq!(tab.len(), 2);
        assert_eq!(
            tab.resolve(PROTO_TCP, 7, sa("198.18.0.1:40000"), sa("198.18.9.9:80")),
            Resolution::Missing,
            "the destroyed entry made room"
        );
        // No destroyed entry left: the oldest live one (b) makes room.
        tab.insert(7, &dnat(40003, "198.18.1.3:8080"), t0).unwrap();
        assert_eq!((tab.len(), tab.evicted_live), (2, 1));
        assert_eq!(
            tab.resolve(PROTO_TCP, 7, sa("198.18.0.1:40001"), sa("198.18.9.9:80")),
            Resolution::Missing
        );
        // Replacing an entry of the same tuple needs no room.
        tab.insert(7, &c, t0).unwrap();
        assert_eq!((tab.len(), tab.evicted_live), (2, 1));
        // Stale queue items are compacted away.
        for i in 0..3000 {
            tab.insert(7, &c, t0 + Duration::from_millis(i)).unwrap();
        }
        assert!(tab.inserted.len() <= 2 * 2 + 1024 + 1);
    }

    #[test]
    fn own_namespace_wins_and_resync_destroys_the_missing() {
        let t0 = Instant::now();
        let mut tab = NatTable::new(10, Duration::from_secs(60));
        tab.insert(1, &dnat(40000, "198.18.1.2:8080"), t0).unwrap();
        tab.insert(2, &dnat(40000, "198.18.1.3:8080"), t0).unwrap();
        let r = |ns| tab.resolve(PROTO_TCP, ns, sa("198.18.0.1:40000"), sa("198.18.9.9:80"));
        assert_eq!(
            r(2),
            Resolution::Nat {
                real: sa("198.18.1.3:8080"),
                nat: sa("198.18.9.9:80")
            }
        );
        let live = [dnat(40005, "198.18.1.3:8080")];
        assert_eq!(tab.resync(2, &live, t0), 0);
        // Namespace 2's old entry is now destroyed: once its retention is
        // over, namespace 1's live one answers.
        tab.sweep(t0 + Duration::from_secs(61));
        assert_eq!(tab.len(), 2);
        let r = |ns| tab.resolve(PROTO_TCP, ns, sa("198.18.0.1:40000"), sa("198.18.9.9:80"));
        assert_eq!(
            r(2),
            Resolution::Nat {
                real: sa("198.18.1.2:8080"),
                nat: sa("198.18.9.9:80")
            }
        );
        tab.forget_netns(1);
        tab.forget_netns(2);
        assert!(tab.is_empty());
    }
}
