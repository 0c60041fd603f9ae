//! Bounds the `dns.question.name` values of each client.
//!
//! Per client the first `k` distinct names seen are kept as they are; a
//! name past those is folded to its registrable domain (eTLD+1, from the
//! public suffix list embedded by the `psl` crate: `a.b.example.co.uk` ->
//! `example.co.uk`); past `k` distinct registrable domains, and for names
//! that have none (a bare public suffix, a single label), the value is
//! [`OTHER`]. So one client contributes at most `2k + 1` values.
//!
//! A kept name or domain that is not seen for [`IDLE_INTERVALS`] intervals
//! frees its slot, so the set follows what a client asks now.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// The value names fold to past both limits.
pub const OTHER: &str = "_other";
/// A slot last used in interval `n` is freed when interval `n + IDLE_INTERVALS` starts.
pub const IDLE_INTERVALS: u64 = 6;

#[derive(Default)]
struct Slots {
    names: HashMap<Arc<str>, u64>,
    /// Registrable domain -> (the same, shared; last round used).
    domains: HashMap<Arc<str>, (Arc<str>, u64)>,
}

/// Top-K folding for clients identified by `C`.
pub struct TopK<C> {
    k: usize,
    round: u64,
    clients: HashMap<C, Slots>,
    other: Arc<str>,
}

/// The registrable domain (eTLD+1) of `name`, if it has one.
pub fn registrable_domain(name: &str) -> Option<&str> {
    psl::domain_str(name)
}

impl<C: Eq + Hash + Clone> TopK<C> {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            round: 0,
            clients: HashMap::new(),
            other: Arc::from(OTHER),
        }
    }

    /// The value to export for `name` asked by `client`.
    pub fn fold(&mut self, client: &C, name: &Arc<str>) -> Arc<str> {
        let round = self.round;
        let k = self.k;
        let slots = match self.clients.get_mut(client) {
            Some(s) => s,
            None => self.clients.entry(client.clone()).or_default(),
        };
        if let Some(seen) = slots.names.get_mut(name) {
            *seen = round;
            return name.clone();
        }
        if slots.names.len() < k {
            slots.names.insert(name.clone(), round);
            return name.clone();
        }
        let Some(domain) = registrable_domain(name) else {
            return self.other.clone();
        };
        if let Some((d, seen)) = slots.domains.get_mut(domain) {
            *seen = round;
            return d.clone();
        }
        if slots.domains.len() < k {
            let d: Arc<str> = Arc::from(domain);
            slots.domains.insert(d.clone(), (d.clone(), round));
            return d;
        }
        self.other.clone()
    }

    /// Ends an interval: frees slots idle for [`IDLE_INTERVALS`] intervals
    /// and forgets clients with no slot left.
    pub fn end_interval(&mut self) {
        self.round += 1;
        let Some(cutoff) = self.round.checked_sub(IDLE_INTERVALS) else {
            return;
        };
        self.clients.retain(|_, s| {
            s.names.retain(|_, r| *r > cutoff);
            s.domains.retain(|_, (_, r)| *r > cutoff);
            !(s.names.is_empty() && s.domains.is_empty())
        });
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(t: &mut TopK<u32>, client: u32, name: &str) -> String {
        t.fold(&client, &Arc::from(name)).to_string()
    }

    #[test]
    fn folds_past_k_to_domain_then_other() {
        let mut t = TopK::new(2);
        assert_eq!(fold(&mut t, 1, "a.example.com"), "a.example.com");
        assert_eq!(fold(&mut t, 1, "b.example.com"), "b.example.com");
        // Kept names stay kept.
        assert_eq!(fold(&mut t, 1, "a.example.com"), "a.example.com");
        // Past k names: the registrable domain, with the PSL's multi-label
        // suffixes honoured.
        assert_eq!(fold(&mut t, 1, "c.example.com"), "example.com");
        assert_eq!(fold(&mut t, 1, "x.y.shop.example.co.uk"), "example.co.uk");
        // Past k domains.
        assert_eq!(fold(&mut t, 1, "www.other.org"), OTHER);
        // A domain already kept is still used.
        assert_eq!(fold(&mut t, 1, "d.example.com"), "example.com");
        // A bare public suffix has no registrable domain.
        assert_eq!(fold(&mut t, 1, "co.uk"), OTHER);
        // Another client has its own slots.
        assert_eq!(fold(&mut t, 2, "www.other.org"), "www.other.org");
    }

    #[test]
    fn idle_slots_are_freed() {
        let mut t = TopK::new(1);
        assert_eq!(fold(&mut t, 1, "a.example.com"), "a.example.com");
        assert_eq!(fold(&mut t, 1, "b.example.com"), "example.com");
        for _ in 0..IDLE_INTERVALS {
            t.end_interval();
        }
        assert_eq!(t.clients(), 0);
        assert_eq!(fold(&mut t, 1, "b.example.com"), "b.example.com");
    }
}
