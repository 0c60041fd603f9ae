//! IP -> name cache, from the A and AAAA answers local clients received.
//!
//! For every answered lookup seen on the client side, each address in the
//! answer (following CNAME chains from the question: `www.shop.example`
//! CNAME `edge.cdn.example` A `198.18.0.9`) maps to the name the client
//! asked for, in that client's network namespace. That is the name the
//! client resolved to reach the address, which the flow receiver puts in
//! `flowscope.peer.domain` ([`PeerNames`]).
//!
//! An entry lives for the record's TTL plus a grace period: the flow
//! receiver asks at the end of each interval, so a connection made just
//! before the TTL ran out is still named. The cache holds at most
//! `capacity` entries; when full, expired entries go first, then the ones
//! closest to expiry.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::collector::PeerNames;

use super::message::{Answer, AnswerData};

/// Longest CNAME chain followed.
const MAX_CHAIN: usize = 16;

struct Entry {
    name: Arc<str>,
    expires_ns: u64,
}

struct Inner {
    map: HashMap<(u32, IpAddr), Entry>,
}

/// The shared cache. `Send + Sync`; hand an `Arc<DnsNames>` to the flow
/// receiver as its `PeerNames`.
pub struct DnsNames {
    inner: Mutex<Inner>,
    capacity: usize,
    grace_ns: u64,
    clock: fn() -> u64,
}

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl DnsNames {
    pub fn new(capacity: usize, grace: Duration) -> Self {
        Self::with_clock(capacity, grace, monotonic_ns)
    }

    /// A cache reading time from `clock` (nanoseconds, monotonic); for tests.
    pub fn with_clock(capacity: usize, grace: Duration, clock: fn() -> u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
            }),
            capacity: capacity.max(1),
            grace_ns: grace.as_nanos() as u64,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a single insert or removal: a poisoned lock holds
        // a consistent map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the addresses a response for `question` carried in `netns`.
    pub fn learn(&self, netns: u32, question: &Arc<str>, answers: &[Answer]) {
        let mut chain: HashSet<&str> = HashSet::new();
        chain.insert(question);
        // Follow CNAMEs in any order, at most MAX_CHAIN hops.
        for _ in 0..MAX_CHAIN {
            let before = chain.len();
            for a in answers {
                if let AnswerData::Cname(target) = &a.data
                    && chain.contains(a.name.as_str())
                {
                    chain.insert(target.as_str());
                }
            }
            if chain.len() == before {
                break;
            }
        }
        let now = (self.clock)();
        let mut inner = self.lock();
        for a in answers {
            let AnswerData::Addr(ip) = a.data else {
                continue;
            };
            if !chain.contains(a.name.as_str()) {
                continue;
            }
            let expires_ns = now + u64::from(a.ttl) * 1_000_000_000 + self.grace_ns;
            let key = (netns, ip);
            if !inner.map.contains_key(&key) && inner.map.len() >= self.capacity {
                self.make_room(&mut inner, now);
            }
            inner.map.insert(
                key,
                Entry {
                    name: question.clone(),
                    expires_ns,
                },
            );
        }
    }

    /// Frees at least one slot: expired entries, else the eighth of the
    /// entries closest to expiry.
    fn make_room(&self, inner: &mut Inner, now: u64) {
        inner.map.retain(|_, e| e.expires_ns > now);
        if inner.map.len() < self.capacity {
            return;
        }
        let mut expiries: Vec<u64> = inner.map.values().map(|e| e.expires_ns).collect();
        let cut = (expiries.len() / 8).max(1);
        let (_, nth, _) = expiries.select_nth_unstable(cut - 1);
        let limit = *nth;
        inner.map.retain(|_, e| e.expires_ns > limit);
    }
}

impl PeerNames for DnsNames {
    fn name_of(&self, netns: u32, ip: IpAddr) -> Option<Arc<str>> {
        let now = (self.clock)();
        let inner = self.lock();
        inner
            .map
            .get(&(netns, ip))
            .filter(|e| e.expires_ns > now)
            .map(|e| e.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NOW: AtomicU64 = AtomicU64::new(0);
    fn clock() -> u64 {
        NOW.load(Ordering::SeqCst)
    }

    fn addr(name: &str, ttl: u32, ip: &str) -> Answer {
        Answer {
            name: name.into(),
            ttl,
            data: AnswerData::Addr(ip.parse().unwrap()),
        }
    }
    fn cname(name: &str, target: &str) -> Answer {
        Answer {
            name: name.into(),
            ttl: 300,
            data: AnswerData::Cname(target.into()),
        }
    }

    #[test]
    fn follows_cnames_and_honours_ttl() {
        let names = DnsNames::with_clock(16, Duration::from_secs(5), clock);
        NOW.store(1_000_000_000, Ordering::SeqCst);
        let q: Arc<str> = Arc::from("www.shop.example");
        // Chain given out of order, plus an unrelated record.
        let answers = [
            addr("edge.cdn.example", 60, "198.18.0.9"),
            cname("cdn.shop.example", "edge.cdn.example"),
            cname("www.shop.example", "cdn.shop.example"),
            addr("unrelated.example", 60, "198.18.0.10"),
            addr("edge.cdn.example", 60, "fd00::9"),
        ];
        names.learn(7, &q, &answers);
        let ip = "198.18.0.9".parse().unwrap();
        assert_eq!(names.name_of(7, ip).as_deref(), Some("www.shop.example"));
        assert_eq!(
            names.name_of(7, "fd00::9".parse().unwrap()).as_deref(),
            Some("www.shop.example")
        );
        assert_eq!(names.name_of(7, "198.18.0.10".parse().unwrap()), None);
        // Another netns does not see it.
        assert_eq!(names.name_of(8, ip), None);
        // TTL 60 s + 5 s grace.
        NOW.store(1_000_000_000 + 64_000_000_000, Ordering::SeqCst);
        assert!(names.name_of(7, ip).is_some());
        NOW.store(1_000_000_000 + 65_000_000_000, Ordering::SeqCst);
        assert_eq!(names.name_of(7, ip), None);
    }

    #[test]
    fn bounded() {
        let names = DnsNames::with_clock(8, Duration::ZERO, || 0);
        let q: Arc<str> = Arc::from("a.example");
        for i in 0..100u32 {
            let ip = std::net::Ipv4Addr::from(0xc612_0000 + i).to_string();
            names.learn(1, &q, &[addr("a.example", 10 + i, &ip)]);
            assert!(names.len() <= 8);
        }
        // The newest (longest-lived) entry is kept.
        assert!(names.name_of(1, "198.18.0.99".parse().unwrap()).is_some());
    }
}
