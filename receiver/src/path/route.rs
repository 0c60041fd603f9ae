//! Route changes: each run's hop list compared with the previous run's of
//! the same test.
//!
//! A route is the address that answered at each TTL. Two runs' routes
//! differ when, at some TTL where both got an answer, the addresses differ,
//! or when both reached the destination at different hop counts. A silent
//! hop (`*`) is not compared: routers rate-limit the ICMP they send, so a
//! hop that answered in one run and not in the next is a busy router, not a
//! new route. A run that could not probe at all (unknown host, no route)
//! neither counts nor replaces the route it is compared with, and a hop
//! silent in one run keeps the address it last answered with.

use std::net::IpAddr;

use super::prober::TraceResult;

/// One run's hop list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// `(ttl, address)` in TTL order; `None` for a silent hop.
    pub hops: Vec<(u8, Option<IpAddr>)>,
    /// Whether the destination answered.
    pub reached: bool,
}

impl Route {
    pub fn of(r: &TraceResult) -> Route {
        Route {
            hops: r.hops.iter().map(|h| (h.ttl, h.address)).collect(),
            reached: r.reachable,
        }
    }

    fn at(&self, ttl: u8) -> Option<IpAddr> {
        self.hops
            .iter()
            .find(|(t, _)| *t == ttl)
            .and_then(|(_, a)| *a)
    }

    fn reached_at(&self) -> Option<u8> {
        if !self.reached {
            return None;
        }
        self.hops
            .iter()
            .rev()
            .find(|(_, a)| a.is_some())
            .map(|(t, _)| *t)
    }

    /// Whether `self` (the newer run) took another route than `prev`.
    pub fn differs_from(&self, prev: &Route) -> bool {
        let moved = self.hops.iter().any(|(ttl, a)| match (a, prev.at(*ttl)) {
            (Some(a), Some(b)) => *a != b,
            _ => false,
        });
        let longer = match (self.reached_at(), prev.reached_at()) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        moved || longer
    }
}

/// The previous route of one test.
#[derive(Debug, Default)]
pub struct RouteTracker {
    last: Option<Route>,
}

impl RouteTracker {
    /// Records a run; returns how many route changes it makes (0 or 1; the
    /// first run of a test is not a change).
    pub fn observe(&mut self, r: Option<&TraceResult>) -> u64 {
        let Some(r) = r else { return 0 };
        let mut route = Route::of(r);
        let changed = self
            .last
            .as_ref()
            .is_some_and(|prev| route.differs_from(prev));
        // A hop silent in this run keeps the address it last answered
        // with, so that the next run is compared with what is known.
        if let Some(prev) = &self.last
            && !changed
        {
            for (ttl, a) in &mut route.hops {
                if a.is_none() {
                    *a = prev.at(*ttl);
                }
            }
        }
        self.last = Some(route);
        u64::from(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::prober::HopResult;

    fn run(hops: &[Option<&str>], reachable: bool) -> TraceResult {
        TraceResult {
            hops: hops
                .iter()
                .enumerate()
                .map(|(i, a)| HopResult {
                    ttl: i as u8 + 1,
                    address: a.map(|a| a.parse().unwrap()),
                    ..HopResult::default()
                })
                .collect(),
            reachable,
            ..TraceResult::default()
        }
    }

    #[test]
    fn changes_are_counted_once_and_silent_hops_are_not_changes() {
        let a = run(
            &[Some("198.18.1.1"), Some("198.18.2.2"), Some("198.18.3.2")],
            true,
        );
        let b = run(
            &[Some("198.18.1.1"), Some("198.18.4.2"), Some("198.18.3.2")],
            true,
        );
        let silent = run(&[Some("198.18.1.1"), None, Some("198.18.3.2")], true);
        let longer = run(
            &[
                Some("198.18.1.1"),
                Some("198.18.2.2"),
                Some("198.18.5.1"),
                Some("198.18.3.2"),
            ],
            true,
        );
        let dark = run(&[Some("198.18.1.1"), Some("198.18.2.2"), None], false);
        let mut t = RouteTracker::default();
        assert_eq!(t.observe(Some(&a)), 0, "the first run is no change");
        assert_eq!(t.observe(Some(&a)), 0);
        assert_eq!(t.observe(Some(&silent)), 0, "a silent hop is no change");
        assert_eq!(t.observe(None), 0, "a failed run is no change");
        assert_eq!(t.observe(Some(&b)), 1);
        assert_eq!(t.observe(Some(&b)), 0);
        assert_eq!(t.observe(Some(&a)), 1);
        assert_eq!(t.observe(Some(&dark)), 0, "a path going dark is no change");
        assert_eq!(t.observe(Some(&a)), 0);
        // The destination answered at TTL 3 (198.18.3.2 at 3 vs 198.18.5.1).
        assert_eq!(t.observe(Some(&longer)), 1);
        assert_eq!(t.observe(Some(&a)), 1);
        // Only the hop count differs: no hop answered from another address
        // (TTL 3 is silent now), but the destination answers one hop later.
        let deeper = run(
            &[
                Some("198.18.1.1"),
                Some("198.18.2.2"),
                None,
                Some("198.18.3.2"),
            ],
            true,
        );
        assert_eq!(t.observe(Some(&deeper)), 1);
    }
}
