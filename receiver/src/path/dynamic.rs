//! Dynamic tests' destination table (sans-IO: time comes in as `now`).
//!
//! Destinations arrive from observed client flows. Each is keyed by (origin
//! network namespace, server address, server port, protocol), so the same
//! server seen from two containers is traced along both routes. The table
//! enforces the limits that protect the network and the agent: at most
//! `max_destinations` tracked, at most `max_new_per_minute` admitted per
//! minute, each tested at most every `interval`, forgotten after `ttl`
//! without traffic. Every refusal is returned so the caller counts it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowscope_model::Attrs;
use flowscope_model::destinations::ObservedDestination;
use flowscope_model::flow::Transport;
use flowscope_model::net::{self, Spaces};
use ipnet::IpNet;

use super::netns::Netns;
use super::prober::Protocol;

/// An IP network (`10.0.0.0/8`); host bits may be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Parses `a.b.c.d/len`, `x::/len` or a bare address.
    pub fn parse(s: &str) -> Option<Cidr> {
        net::parse(s, Spaces::Trim).ok().map(Cidr)
    }

    /// Whether `ip` is in the network; an IPv4-mapped IPv6 address counts
    /// as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&net::unmapped(ip))
    }
}

/// The dynamic tests' limits and exclusions.
#[derive(Clone, Debug)]
pub struct TableSettings {
    pub interval: Duration,
    pub ttl: Duration,
    pub max_new_per_minute: usize,
    pub max_destinations: usize,
    /// When not empty, only destinations inside these are tested.
    pub include_cidrs: Vec<Cidr>,
    pub exclude_cidrs: Vec<Cidr>,
    pub exclude_domains: Vec<String>,
}

/// A destination's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub netns: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

/// A tracked destination.
#[derive(Clone, Debug)]
pub struct Entry {
    pub resource: Arc<Attrs>,
    pub netns: Netns,
    /// The previous run's route, compared with the next run's (forgotten
    /// with the destination).
    pub route: Arc<std::sync::Mutex<super::route::RouteTracker>>,
    last_seen: Instant,
    next_run: Instant,
    running: bool,
    /// Counted once as `workers_busy` until it runs.
    postponed: bool,
    /// Found to be one of the origin namespace's own addresses.
    local: bool,
}

/// What became of one observed destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Newly tracked.
    New,
    /// Already tracked; its TTL restarts.
    Refreshed,
    /// Never tested (loopback, the origin's own address, unspecified,
    /// excluded CIDR or domain).
    Excluded,
    /// Over `max_new_per_minute`: not tracked this time.
    RateLimited,
    /// Over `max_destinations`: not tracked this time.
    TableFull,
}

/// The protocol a flow's destination is traced with: TCP flows with TCP
/// SYN to the server's port; UDP flows with ICMP echo, because a UDP probe
/// to a live UDP server would reach the application as a datagram.
pub fn protocol_for(t: Transport) -> Protocol {
    match t {
        Transport::Tcp => Protocol::Tcp,
        Transport::Udp => Protocol::Icmp,
    }
}

pub fn key_for(d: &ObservedDestination) -> Key {
    let protocol = protocol_for(d.transport);
    let ip = match d.server.ip() {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(d.server.ip(), IpAddr::V4),
        v4 => v4,
    };
    Key {
        netns: d.netns,
        addr: ip,
        port: if protocol == Protocol::Icmp {
            0
        } else {
            d.server.port()
        },
        protocol,
    }
}

#[derive(Debug)]
pub struct Table {
    settings: TableSettings,
    entries: HashMap<Key, Entry>,
    window_start: Option<Instant>,
    admitted_in_window: usize,
}

impl Table {
    pub fn new(settings: TableSettings) -> Self {
        Table {
            settings,
            entries: HashMap::new(),
            window_start: None,
            admitted_in_window: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Whether `d` is never to be tested, whatever the limits.
    pub fn excluded(&self, d: &ObservedDestination) -> bool {
        let ip = key_for(d).addr;
        let local = match d.local.ip() {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(d.local.ip(), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip == local {
            return true;
        }
        if !self.settings.include_cidrs.is_empty()
            && !self.settings.include_cidrs.iter().any(|c| c.contains(ip))
        {
            return true;
        }
        if self.settings.exclude_cidrs.iter().any(|c| c.contains(ip)) {
            return true;
        }
        if let Some(domain) = &d.domain {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            return self.settings.exclude_domains.iter().any(|x| {
                let x = x.trim_end_matches('.').to_ascii_lowercase();
                domain == x || domain.ends_with(&format!(".{x}"))
            });
        }
        false
    }

    /// Takes one observation. `netns` is called only for a destination that
    /// passes every check, to open the way into its namespace; `None`
    /// means the namespace is gone (the caller counts it) and the
    /// destination is not tracked.
    pub fn observe(
        &mut self,
        d: &ObservedDestination,
        now: Instant,
        netns: impl FnOnce() -> Option<Netns>,
    ) -> Result<Observed, NetnsGone> {
        if self.excluded(d) {
            return Ok(Observed::Excluded);
        }
        let key = key_for(d);
        if let Some(e) = self.entries.get_mut(&key) {
            e.last_seen = now;
            return Ok(if e.local {
                Observed::Excluded
            } else {
                Observed::Refreshed
            });
        }
        if self.entries.len() >= self.settings.max_destinations {
            return Ok(Observed::TableFull);
        }
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(60) => {}
            _ => {
                self.window_start = Some(now);
                self.admitted_in_window = 0;
            }
        }
        if self.admitted_in_window >= self.settings.max_new_per_minute {
            return Ok(Observed::RateLimited);
        }
        let netns = netns().ok_or(NetnsGone)?;
        self.admitted_in_window += 1;
        self.entries.insert(
            key,
            Entry {
                resource: d.resource.clone(),
                netns,
                route: Arc::default(),
                last_seen: now,
                next_run: now,
                running: false,
                postponed: false,
                local: false,
            },
        );
        Ok(Observed::New)
    }

    /// Forgets destinations without traffic for `ttl` (not while a run is
    /// in flight); returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ttl = self.settings.ttl;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.running || now.duration_since(e.last_seen) < ttl);
        before - self.entries.len()
    }

    /// Destinations whose next run is due, oldest due first.
    pub fn due(&self, now: Instant) -> Vec<Key> {
        let mut due: Vec<(Instant, &Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.running && !e.local && e.next_run <= now)
            .map(|(k, e)| (e.next_run, k))
            .collect();
        due.sort();
        due.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Marks a due destination postponed for want of a worker; true the
    /// first time (so each postponement is counted once).
    pub fn postpone(&mut self, key: &Key) -> bool {
        match self.entries.get_mut(key) {
            Some(e) if !e.postponed => {
                e.postponed = true;
                true
            }
            _ => false,
        }
    }

    /// A run starts: the next is due one `interval` later.
    pub fn start(&mut self, key: &Key, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.running = true;
            e.postponed = false;
            e.next_run = now + self.settings.interval;
        }
    }

    /// A run ended; `local` when the destination turned out to be one of
    /// its origin namespace's own addresses (never tested again).
    pub fn finish(&mut self, key: &Key, local: bool) {
        if let Some(e) = self.entries.get_mut(key) {
            e.running = false;
            e.local |= local;
        }
    }
}

/// The origin namespace could not be opened (the client exited and its
/// namespace is gone, or the pid was reused for another namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsGone;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn settings() -> TableSettings {
        TableSettings {
            interval: Duration::from_secs(600),
            ttl: Duration::from_secs(1800),
            max_new_per_minute: 150,
            max_destinations: 1000,
            include_cidrs: vec![
                Cidr::parse("198.18.0.0/15").unwrap(),
                Cidr::parse("127.0.0.0/8").unwrap(),
            ],
            exclude_cidrs: vec![Cidr::parse("198.19.128.0/17").unwrap()],
            exclude_domains: vec!["internal.example".into()],
        }
    }

    fn dest(ip: [u8; 4], port: u16) -> ObservedDestination {
        ObservedDestination {
            server: SocketAddr::from((ip, port)),
            local: SocketAddr::from(([198, 18, 0, 2], 40000)),
            transport: Transport::Tcp,
            netns: 7,
            pid: 1,
            resource: Arc::new(Attrs::new()),
            domain: None,
        }
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("198.18.0.0/15").unwrap();
        assert!(c.contains("198.19.255.255".parse().unwrap()));
        assert!(!c.contains("198.20.0.0".parse().unwrap()));
        assert!(c.contains("::ffff:198.18.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("198.18.0.1".parse().unwrap())
        );
        assert_eq!(Cidr::parse("198.18.0.0/33"), None);
    }

    #[test]
    fn exclusions() {
        let mut t = Table::new(settings());
        let now = Instant::now();
        let own = || Some(Netns::Own);
        for d in [
            dest([127, 0, 0, 1], 80),
            dest([198, 18, 0, 2], 80), // the client's own address
            dest([198, 19, 200, 1], 80),
            dest([0, 0, 0, 0], 80),
            dest([10, 0, 0, 1], 80), // outside include_cidrs
        ] {
            assert_eq!(t.observe(&d, now, own), Ok(Observed::Excluded), "{d:?}");
        }
        let mut d = dest([198, 18, 9, 9], 80);
        d.domain = Some(Arc::from("db.internal.example."));
        assert_eq!(t.observe(&d, now, own), Ok(Observed::Excluded));
        assert!(t.is_empty());
    }

    #[test]
    fn dedup_interval_and_ttl() {
        let mut t = Table::new(settings());
        let t0 = Instant::now();
        let own = || Some(Netns::Own);
        let d = dest([198, 18, 1, 1], 443);
        assert_eq!(t.observe(&d, t0, own), Ok(Observed::New));
        assert_eq!(t.observe(&d, t0, own), Ok(Observed::Refreshed));
        let k = key_for(&d);
        assert_eq!(t.due(t0), vec![k.clone()]);
        t.start(&k, t0);
        assert!(t.due(t0).is_empty());
        t.finish(&k, false);
        assert!(t.due(t0 + Duration::from_secs(599)).is_empty());
        assert_eq!(t.due(t0 + Duration::from_secs(600)), vec![k.clone()]);
        assert_eq!(t.expire(t0 + Duration::from_secs(1799)), 0);
        assert_eq!(t.expire(t0 + Duration::from_secs(1800)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn limits_count_refusals() {
        let mut s = settings();
        s.max_new_per_minute = 3;
        s.max_destinations = 4;
        let mut t = Table::new(s);
        let t0 = Instant::now();
        let own = || Some(Netns::Own);
        let got: Vec<Observed> = (1..=5)
            .map(|i| t.observe(&dest([198, 18, 2, i], 80), t0, own).unwrap())
            .collect();
        use Observed::*;
        assert_eq!(got, vec![New, New, New, RateLimited, RateLimited]);
        let t1 = t0 + Duration::from_secs(60);
        let got: Vec<Observed> = (4..=6)
            .map(|i| t.observe(&dest([198, 18, 2, i], 80), t1, own).unwrap())
            .collect();
        assert_eq!(got, vec![New, TableFull, TableFull]);
        assert_eq!(
            t.observe(&dest([198, 18, 3, 1], 80), t1, || None),
            Ok(TableFull)
        );
    }

    #[test]
    fn gone_namespace_is_not_tracked() {
        let mut t = Table::new(settings());
        let d = dest([198, 18, 1, 1], 443);
        assert_eq!(t.observe(&d, Instant::now(), || None), Err(NetnsGone));
        assert!(t.is_empty());
    }
}
