//! A map with a limit on its entries that forgets the oldest first.
//!
//! Every table of the join is one of these: what a lost record leaves
//! behind (a CONNECT whose CLOSE never came, a listener that closed
//! without a record) must not grow the agent's memory without end, and
//! the oldest entry is the one most likely to be such a leftover.

use std::collections::VecDeque;
use std::hash::Hash;

use hashbrown::HashMap;

/// Entries in insertion order, at most `limit` of them.
///
/// `order` holds (key, serial) for every insertion; an entry removed or
/// replaced since leaves a pair whose serial no longer matches, which is
/// skipped when it reaches the front and swept out when such pairs
/// outnumber the live ones (so `order` stays within twice the limit).
pub(super) struct Fifo<K, V> {
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(K, u64)>,
    serial: u64,
    limit: usize,
}

impl<K: Copy + Eq + Hash, V> Fifo<K, V> {
    /// `limit` is at least 1 (the join's [`super::Limits`] checks it).
    pub(super) fn new(limit: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            serial: 0,
            limit: limit.max(1),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    pub(super) fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(v, _)| v)
    }

    /// Inserts `v` as the newest entry. Returns the value `k` had (if any)
    /// and how many other entries were forgotten to stay within the limit.
    pub(super) fn insert(&mut self, k: K, v: V) -> (Option<V>, u64) {
        let old = self.remove(&k);
        let mut evicted = 0;
        while self.map.len() >= self.limit {
            if self.pop_oldest().is_none() {
                break;
            }
            evicted += 1;
        }
        self.serial += 1;
        self.map.insert(k, (v, self.serial));
        self.order.push_back((k, self.serial));
        self.compact();
        (old, evicted)
    }

    /// The value of `k`, which becomes the newest entry if it is in the
    /// older half of the table (by insertion order): a key in use is never
    /// the next to go, and the common case (a key refreshed recently) is
    /// one lookup, not a remove and an insert.
    pub(super) fn touch(&mut self, k: &K) -> Option<&V> {
        // Stale slots go first: the entry's borrow below lasts to the
        // return (the next insert or touch trims what this one adds).
        self.compact();
        let half = (self.limit / 2) as u64;
        let (v, s) = self.map.get_mut(k)?;
        if *s + half <= self.serial {
            self.serial += 1;
            *s = self.serial;
            self.order.push_back((*k, self.serial));
        }
        Some(v)
    }

    /// Drops the order's stale slots once they outnumber the live ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(_, live)| live == s));
        }
    }

    /// Removes and returns the oldest entry if `go` says it must go;
    /// `None` when the oldest is to stay, or when the table is empty.
    pub(super) fn pop_oldest_if(&mut self, mut go: impl FnMut(&V) -> bool) -> Option<(K, V)> {
        while let Some(&(k, s)) = self.order.front() {
            match self.map.get(&k) {
                Some((v, live)) if *live == s => {
                    if !go(v) {
                        return None;
                    }
                    self.order.pop_front();
                    return self.map.remove(&k).map(|(v, _)| (k, v));
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    fn pop_oldest(&mut self) -> Option<(K, V)> {
        self.pop_oldest_if(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::Fifo;

    #[test]
    fn oldest_goes_first_and_replacing_does_not_evict() {
        let mut t = Fifo::new(2);
        assert_eq!(t.insert(1, "a"), (None, 0));
        assert_eq!(t.insert(2, "b"), (None, 0));
        // Same key: replaced, nothing else goes.
        assert_eq!(t.insert(1, "c"), (Some("a"), 0));
        // 2 is now the oldest.
        assert_eq!(t.insert(3, "d"), (None, 1));
        assert_eq!(t.get(&2), None);
        assert_eq!(t.get(&1), Some(&"c"));
        assert_eq!(t.get(&3), Some(&"d"));
    }

    #[test]
    fn order_stays_bounded_under_churn() {
        let mut t = Fifo::new(4);
        t.insert(0u64, 0u64);
        for i in 1..10_000 {
            t.insert(i, i);
            t.remove(&i);
        }
        assert_eq!(t.len(), 1);
        assert!(t.order.len() <= 2 * t.len() + 17);
    }

    #[test]
    fn touch_keeps_a_key_in_use_from_going_first() {
        let mut t = Fifo::new(4);
        for i in 0..4u64 {
            t.insert(i, i);
        }
        // 0 is in the older half: touched, it becomes the newest.
        assert_eq!(t.touch(&0), Some(&0));
        // 3 is in the newer half: left where it is.
        assert_eq!(t.touch(&3), Some(&3));
        assert_eq!(t.touch(&9), None);
        // Two more keys push out 1 and 2, not 0.
        assert_eq!(t.insert(4, 4), (None, 1));
        assert_eq!(t.insert(5, 5), (None, 1));
        assert_eq!((t.get(&0), t.get(&1), t.get(&2)), (Some(&0), None, None));
        assert!(t.order.len() <= 2 * t.len() + 17);
    }

    #[test]
    fn pop_oldest_if_stops_at_the_first_kept() {
        let mut t = Fifo::new(8);
        for i in 0..4u64 {
            t.insert(i, i * 10);
        }
        t.remove(&0);
        assert_eq!(t.pop_oldest_if(|v| *v < 20), Some((1, 10)));
        assert_eq!(t.pop_oldest_if(|v| *v < 20), None);
        assert_eq!(t.len(), 2);
    }
}
