//! The shared IP -> name cache: which DNS name a local client resolved to
//! reach an address.
//!
//! The `dns` receiver writes it (every A/AAAA answer a client received, see
//! `receiver/src/dns/names.rs`); the `peer` processor reads it to set
//! `flowscope.peer.domain` ([`crate::names::attr::PEER_DOMAIN`]) on flows.
//! Neither knows the other: the agent puts one cache into its
//! [`Context`](crate::Context) and both take it from there. Without a `dns`
//! receiver the cache stays empty and no flow is named.
//!
//! Entries are keyed by (network namespace inode, address), because two
//! namespaces may resolve one address to different names. Each entry carries
//! the moment it expires (the record's TTL plus the writer's grace period);
//! an expired entry is never returned. The writer bounds the cache: it
//! passes its capacity with every insert, and when full, expired entries go
//! first, then the eighth of the entries closest to expiry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// A clock in nanoseconds that only moves forward.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

struct Entry {
    name: Arc<str>,
    expires_ns: u64,
}

struct Inner {
    map: HashMap<(u32, IpAddr), Entry>,
    clock: Clock,
}

/// Shared handle on the cache. Cheap to clone; every clone sees the same
/// entries.
#[derive(Clone)]
pub struct PeerNames(Arc<Mutex<Inner>>);

impl Default for PeerNames {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PeerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNames")
            .field("len", &self.len())
            .finish()
    }
}

impl PeerNames {
    /// An empty cache on a monotonic clock.
    pub fn new() -> Self {
        let base = Instant::now();
        Self::with_clock(Arc::new(move || base.elapsed().as_nanos() as u64))
    }

    /// An empty cache reading time from `clock` (tests move it by hand).
    pub fn with_clock(clock: Clock) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            map: HashMap::new(),
            clock,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a single insert or retain: a poisoned lock holds a
        // consistent map.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Now, on the cache's clock (writers compute expiries from it).
    pub fn now_ns(&self) -> u64 {
        (self.lock().clock)()
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names `ip` in namespace `netns` as `name` until `expires_ns`, keeping
    /// at most `capacity` entries.
    pub fn insert(&self, netns: u32, ip: IpAddr, name: Arc<str>, expires_ns: u64, capacity: usize) {
        let mut inner = self.lock();
        let key = (netns, ip);
        if !inner.map.contains_key(&key) && inner.map.len() >= capacity.max(1) {
            let now = (inner.clock)();
            make_room(&mut inner.map, now, capacity.max(1));
        }
        inner.map.insert(key, Entry { name, expires_ns });
    }

    /// The name a client in `netns` resolved to reach `ip`, while it lives.
    pub fn name_of(&self, netns: u32, ip: IpAddr) -> Option<Arc<str>> {
        let inner = self.lock();
        let now = (inner.clock)();
        inner
            .map
            .get(&(netns, ip))
            .filter(|e| e.expires_ns > now)
            .map(|e| e.name.clone())
    }
}

/// Frees at least one slot: expired entries, else the eighth of the entries
/// closest to expiry.
fn make_room(map: &mut HashMap<(u32, IpAddr), Entry>, now: u64, capacity: usize) {
    map.retain(|_, e| e.expires_ns > now);
    if map.len() < capacity {
        return;
    }
    let mut expiries: Vec<u64> = map.values().map(|e| e.expires_ns).collect();
    let cut = (expiries.len() / 8).max(1);
    let (_, nth, _) = expiries.select_nth_unstable(cut - 1);
    let limit = *nth;
    map.retain(|_, e| e.expires_ns > limit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn expiry_namespaces_and_bound() {
        let now = Arc::new(AtomicU64::new(100));
        let clock = now.clone();
        let names = PeerNames::with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        names.insert(7, ip, Arc::from("db.lab.test"), 200, 4);
        assert_eq!(names.name_of(7, ip).as_deref(), Some("db.lab.test"));
        assert_eq!(names.name_of(8, ip), None, "another namespace");
        now.store(200, Ordering::SeqCst);
        assert_eq!(names.name_of(7, ip), None, "expired");
        // Full at 4 live entries: the one closest to expiry makes room.
        for i in 0..4u32 {
            let ip = IpAddr::from([198, 18, 1, i as u8]);
            names.insert(1, ip, Arc::from("a.test"), 1_000 + u64::from(i), 4);
        }
        names.insert(
            1,
            "198.18.2.0".parse().unwrap(),
            Arc::from("b.test"),
            5_000,
            4,
        );
        assert_eq!(names.len(), 4);
        assert_eq!(names.name_of(1, IpAddr::from([198, 18, 1, 0])), None);
        assert!(names.name_of(1, "198.18.2.0".parse().unwrap()).is_some());
    }
}
