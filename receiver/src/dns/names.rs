//! Fills the agent's shared IP -> name cache
//! ([`flowscope_model::PeerNames`], in the [`Context`]) from the A and AAAA
//! answers local clients received.
//!
//! For every answered lookup seen on the client side, each address in the
//! answer (following CNAME chains from the question: `www.shop.example`
//! CNAME `edge.cdn.example` A `198.18.0.9`) maps to the name the client
//! asked for, in that client's network namespace. That is the name the
//! client resolved to reach the address, which the `peer` processor puts in
//! `flowscope.peer.domain`; this receiver does not know who reads it.
//!
//! An entry lives for the record's TTL plus a grace period: flows are named
//! at the end of each interval, so a connection made just before the TTL ran
//! out is still named. The cache holds at most `capacity` entries (the
//! receiver's `name_cache_size`).
//!
//! [`Context`]: flowscope_model::Context

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use flowscope_model::PeerNames;

use super::message::{Answer, AnswerData};

/// Longest CNAME chain followed.
const MAX_CHAIN: usize = 16;

/// The DNS receiver's writer on the shared cache.
pub struct DnsNames {
    cache: PeerNames,
    capacity: usize,
    grace_ns: u64,
}

impl DnsNames {
    /// A writer on a cache of its own (tests, benchmarks).
    pub fn new(capacity: usize, grace: Duration) -> Self {
        Self::on(PeerNames::new(), capacity, grace)
    }

    /// A writer on `cache` (the agent's, from its context) keeping at most
    /// `capacity` entries, each `grace` past its record's TTL.
    pub fn on(cache: PeerNames, capacity: usize, grace: Duration) -> Self {
        Self {
            cache,
            capacity: capacity.max(1),
            grace_ns: grace.as_nanos() as u64,
        }
    }

    /// A writer on a cache of its own reading time from `clock`
    /// (nanoseconds, monotonic); for tests.
    pub fn with_clock(capacity: usize, grace: Duration, clock: fn() -> u64) -> Self {
        Self::on(PeerNames::with_clock(Arc::new(clock)), capacity, grace)
    }

    /// The cache written to.
    pub fn cache(&self) -> &PeerNames {
        &self.cache
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The name cached for `ip` in `netns` (what readers of the cache see).
    pub fn name_of(&self, netns: u32, ip: IpAddr) -> Option<Arc<str>> {
        self.cache.name_of(netns, ip)
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
        let now = self.cache.now_ns();
        for a in answers {
            let AnswerData::Addr(ip) = a.data else {
                continue;
            };
            if !chain.contains(a.name.as_str()) {
                continue;
            }
            let expires_ns = now + u64::from(a.ttl) * 1_000_000_000 + self.grace_ns;
            self.cache
                .insert(netns, ip, question.clone(), expires_ns, self.capacity);
        }
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
