//! From captured packets to lookups and points: decoding, TCP reassembly,
//! query/response matching, timeouts, top-K folding and aggregation.
//!
//! The engine has no I/O of its own: the capture thread feeds it packets
//! ([`Engine::on_packet`]) and the clock ([`Engine::expire`]); the receiver
//! takes each interval's points ([`Engine::finish`]). Benchmarks and the
//! fuzz target drive it the same way.
//!
//! Matching: a query waits in the outstanding table under (netns,
//! transport, client ip:port, server ip:port, transaction id, question)
//! until the response with the same key arrives (answered: latency and
//! RCODE) or the timeout passes. Every lookup is one `dns.lookup.duration`
//! sample, as the semantic conventions define it: an answered one with its
//! latency, `flowscope.dns.response.code` (NOERROR included) and, when the
//! RCODE is an error, `error.type` set to its name (`NXDOMAIN`, `SERVFAIL`,
//! `REFUSED`, ...; `_OTHER` for codes without a name); a timed-out one
//! once, with the timeout as its duration and `error.type=timeout`.
//! A repeated query with the same key keeps the first one's time. The table
//! is bounded; a query that finds it full is counted as
//! `flowscope.events.lost{flowscope.source=dns, flowscope.reason=table_full}`.
//!
//! Only lookups local to the namespace count: the client's address (client
//! side) or the server's (server side) must be one of the namespace's own
//! ([`Engine::set_local_addrs`]); a host that routes its containers'
//! queries sees them pass, but they are reported in the containers'
//! namespaces, once.
//!
//! Sides: a query leaving the namespace (`PACKET_OUTGOING`) was asked by a
//! local client (`flowscope.flow.role=client`, Resource = the asking
//! process); a query arriving was asked of a local server (`server`,
//! Resource = the server process). On loopback the capture keeps one copy
//! of each packet, and the lookup counts once, as the client's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use flowscope_model::internal_events::{EventsLost, EventsReceived, LossReason, Source};
use flowscope_model::metrics::DNS_DURATION;
use flowscope_model::names::attr;
use flowscope_model::{Attrs, Histogram, Point, PointValue, Role, Telemetry, Transport};

use super::message::{self, Message, Question};
use super::names::DnsNames;
use super::packet;
use super::tcp::{StreamKey, Streams};
use super::topk::TopK;

/// `flowscope.source` of the DNS receiver's self-telemetry.
pub const SOURCE: Source = Source::Dns;

/// `error.type` of a lookup that got no answer within the timeout.
pub const TIMEOUT: &str = "timeout";

/// Which way a captured packet went, from the capture socket's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent by this namespace (`PACKET_OUTGOING`).
    Outgoing,
    /// Received by this namespace.
    Incoming,
}

/// One captured packet, starting at its IP header.
#[derive(Clone, Copy, Debug)]
pub struct Captured<'a> {
    pub netns: u32,
    /// Kernel receive time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub direction: Direction,
    /// Seen on a loopback device (only one copy of each packet is fed).
    pub loopback: bool,
    pub data: &'a [u8],
}

/// Attributes a lookup to the local process that made or served it.
///
/// The engine asks when it captures the query (`last` false) and, if the
/// answer was `None` then, once more when the lookup ends, answered or
/// timed out (`last` true). A lookup still without an owner is reported
/// under [`OwnerResolver::unknown`] and counted as
/// `flowscope.events.lost{flowscope.source=dns, flowscope.reason=owner_unknown}`.
pub trait OwnerResolver: Send {
    /// The Resource of the process owning the local `transport` socket
    /// `local` in `netns`, if known.
    fn resource(
        &mut self,
        netns: u32,
        transport: Transport,
        local: SocketAddr,
        last: bool,
    ) -> Option<Arc<Attrs>>;

    /// The Resource of lookups whose process is unknown
    /// (`service.name=unknown_service`).
    fn unknown(&self) -> Arc<Attrs>;

    /// Called on every pass of the capture loop (at least every 100 ms).
    fn tick(&mut self) {}
}

/// Resolves every socket to one fixed Resource (tests, benchmarks).
pub struct FixedOwner(pub Arc<Attrs>);

impl OwnerResolver for FixedOwner {
    fn resource(&mut self, _: u32, _: Transport, _: SocketAddr, _: bool) -> Option<Arc<Attrs>> {
        Some(self.0.clone())
    }

    fn unknown(&self) -> Arc<Attrs> {
        self.0.clone()
    }
}

/// Limits and defaults of the engine.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub timeout: Duration,
    pub max_outstanding: usize,
    pub top_k: usize,
    pub buckets: Arc<[f64]>,
    /// Most TCP stream directions followed at once.
    pub max_tcp_streams: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PendingKey {
    netns: u32,
    transport: Transport,
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
    question: Question,
}

struct Pending {
    ts_ns: u64,
    role: Role,
    /// None until the owner is known (see [`OwnerResolver`]).
    resource: Option<Arc<Attrs>>,
}

/// One series of the interval; its attributes are built when reported.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    resource: Arc<Attrs>,
    role: Role,
    transport: Transport,
    server: IpAddr,
    /// The question name after top-K folding.
    name: Arc<str>,
    qtype: u16,
    /// None for timeouts.
    rcode: Option<u8>,
}

pub struct Engine {
    settings: EngineSettings,
    telemetry: Telemetry,
    names: Arc<DnsNames>,
    owners: Box<dyn OwnerResolver>,
    streams: Streams,
    pending: HashMap<PendingKey, Pending>,
    /// Queries in arrival order with their deadlines (one timeout for all,
    /// so this is deadline order too).
    deadlines: VecDeque<(u64, PendingKey)>,
    topk: TopK<Arc<Attrs>>,
    acc: HashMap<SeriesKey, Histogram>,
    /// Addresses of each namespace, to tell local lookups from routed ones.
    local_addrs: HashMap<u32, HashSet<IpAddr>>,
    /// Packets fed since the last [`Engine::expire`] (counted in
    /// self-telemetry there, once per batch rather than per packet).
    received: u64,
    /// Lookups answered and timed out since start (for tests and benches).
    pub answered: u64,
    pub timed_out: u64,
    /// Lookups reported without their owner (`unknown_service`).
    pub owner_unknown: u64,
}

impl Engine {
    pub fn new(
        settings: EngineSettings,
        telemetry: Telemetry,
        names: Arc<DnsNames>,
        owners: Box<dyn OwnerResolver>,
    ) -> Self {
        Self {
            streams: Streams::new(settings.max_tcp_streams),
            topk: TopK::new(settings.top_k),
            settings,
            telemetry,
            names,
            owners,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            acc: HashMap::new(),
            local_addrs: HashMap::new(),
            received: 0,
            answered: 0,
            timed_out: 0,
            owner_unknown: 0,
        }
    }

    /// Queries waiting for their response.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Sets the addresses of namespace `netns` (from its routing table).
    /// Until they are known, every address counts as local there.
    pub fn set_local_addrs(&mut self, netns: u32, addrs: HashSet<IpAddr>) {
        self.local_addrs.insert(netns, addrs);
    }

    /// Forgets the addresses of namespaces for which `keep` is false.
    pub fn retain_local_addrs(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.local_addrs.retain(|ns, _| keep(*ns));
    }

    /// Whether the addresses of `netns` are known yet.
    pub fn knows_addrs_of(&self, netns: u32) -> bool {
        self.local_addrs.contains_key(&netns)
    }

    fn is_local(&self, netns: u32, ip: IpAddr) -> bool {
        ip.is_loopback()
            || self
                .local_addrs
                .get(&netns)
                .is_none_or(|set| set.contains(&ip))
    }

    /// Feeds one captured packet. Never panics on its contents.
    pub fn on_packet(&mut self, p: &Captured<'_>) {
        self.received += 1;
        let seg = match packet::decode(p.data) {
            Ok(s) => s,
            Err(_) => {
                self.telemetry
                    .emit(EventsLost::new(SOURCE, LossReason::ParseError, 1));
                return;
            }
        };
        match seg.tcp {
            None => self.on_message(p, seg.transport, seg.src, seg.dst, seg.payload),
            Some(h) => {
                let key = StreamKey {
                    netns: p.netns,
                    src: seg.src,
                    dst: seg.dst,
                };
                let mut messages: Vec<Vec<u8>> = Vec::new();
                let fed = self
                    .streams
                    .feed(key, h, seg.payload, p.ts_ns, |m| messages.push(m.to_vec()));
                if fed.table_full {
                    self.telemetry
                        .emit(EventsLost::new(SOURCE, LossReason::TableFull, 1));
                }
                if fed.gap {
                    self.telemetry
                        .emit(EventsLost::new(SOURCE, LossReason::TcpGap, 1));
                }
                for m in messages {
                    self.on_message(p, Transport::Tcp, seg.src, seg.dst, &m);
                }
            }
        }
    }

    fn on_message(
        &mut self,
        p: &Captured<'_>,
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
    ) {
        let msg = match message::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.telemetry
                    .emit(EventsLost::new(SOURCE, LossReason::ParseError, 1));
                return;
            }
        };
        if msg.response {
            self.on_response(p, transport, src, dst, msg);
        } else {
            self.on_query(p, transport, src, dst, msg);
        }
    }

    fn on_query(
        &mut self,
        p: &Captured<'_>,
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
        msg: Message,
    ) {
        let key = PendingKey {
            netns: p.netns,
            transport,
            client: src,
            server: dst,
            id: msg.id,
            question: msg.question,
        };
        if self.pending.contains_key(&key) {
            return;
        }
        let role = if p.loopback || p.direction == Direction::Outgoing {
            Role::Client
        } else {
            Role::Server
        };
        // Traffic routed through this namespace (a host forwarding its
        // containers' queries) is neither asked nor served here; the
        // namespace where it is local reports it.
        let local = match role {
            Role::Client => src,
            Role::Server => dst,
        };
        if !self.is_local(p.netns, local.ip()) {
            return;
        }
        if self.pending.len() >= self.settings.max_outstanding {
            self.telemetry
                .emit(EventsLost::new(SOURCE, LossReason::TableFull, 1));
            return;
        }
        let resource = self.owners.resource(p.netns, transport, local, false);
        let deadline = p
            .ts_ns
            .saturating_add(self.settings.timeout.as_nanos() as u64);
        self.deadlines.push_back((deadline, key.clone()));
        self.pending.insert(
            key,
            Pending {
                ts_ns: p.ts_ns,
                role,
                resource,
            },
        );
    }

    fn on_response(
        &mut self,
        p: &Captured<'_>,
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
        msg: Message,
    ) {
        if !self.is_local(p.netns, src.ip()) && !self.is_local(p.netns, dst.ip()) {
            // Routed through this namespace (see on_query).
            return;
        }
        // Responses reaching a local client name the addresses it will use.
        let to_local_client =
            (p.loopback || p.direction == Direction::Incoming) && self.is_local(p.netns, dst.ip());
        if to_local_client && msg.rcode == 0 && !msg.answers.is_empty() {
            self.names.learn(p.netns, &msg.question.name, &msg.answers);
        }
        let key = PendingKey {
            netns: p.netns,
            transport,
            client: dst,
            server: src,
            id: msg.id,
            question: msg.question,
        };
        let Some(q) = self.pending.remove(&key) else {
            // The query was before the agent started, timed out already, or
            // was not kept (table full): no latency to report.
            self.telemetry
                .emit(EventsLost::new(SOURCE, LossReason::UnmatchedResponse, 1));
            return;
        };
        let secs = p.ts_ns.saturating_sub(q.ts_ns) as f64 / 1e9;
        let series = self.series(&q, &key, Some(msg.rcode));
        self.record(series, secs);
        self.answered += 1;
    }

    fn record(&mut self, series: SeriesKey, secs: f64) {
        let buckets = &self.settings.buckets;
        self.acc
            .entry(series)
            .or_insert_with(|| Histogram::new(buckets.clone()))
            .record(secs);
    }

    /// The Resource of a lookup that ends: the one found when its query
    /// was captured, else the owner asked once more, else unknown (counted).
    fn owner(&mut self, q: &Pending, key: &PendingKey) -> Arc<Attrs> {
        if let Some(r) = &q.resource {
            return r.clone();
        }
        let local = match q.role {
            Role::Client => key.client,
            Role::Server => key.server,
        };
        match self.owners.resource(key.netns, key.transport, local, true) {
            Some(r) => r,
            None => {
                self.owner_unknown += 1;
                self.telemetry
                    .emit(EventsLost::new(SOURCE, LossReason::OwnerUnknown, 1));
                self.owners.unknown()
            }
        }
    }

    fn series(&mut self, q: &Pending, key: &PendingKey, rcode: Option<u8>) -> SeriesKey {
        let resource = self.owner(q, key);
        SeriesKey {
            resource: resource.clone(),
            role: q.role,
            transport: key.transport,
            server: key.server.ip(),
            name: self.topk.fold(&resource, &key.question.name),
            qtype: key.question.qtype,
            rcode,
        }
    }

    /// Records the queries whose deadline passed by `now_ns` (Unix epoch
    /// nanoseconds) as timed-out lookups, once each, lasting the timeout.
    /// Also forgets idle TCP streams.
    pub fn expire(&mut self, now_ns: u64) {
        self.owners.tick();
        self.telemetry.emit(EventsReceived {
            source: SOURCE,
            count: std::mem::take(&mut self.received),
        });
        while let Some((deadline, _)) = self.deadlines.front() {
            if *deadline > now_ns {
                break;
            }
            let Some((deadline, key)) = self.deadlines.pop_front() else {
                break;
            };
            // Answered already, or re-queued under the same key later.
            let Some(q) = self.pending.get(&key) else {
                continue;
            };
            if q.ts_ns
                .saturating_add(self.settings.timeout.as_nanos() as u64)
                != deadline
            {
                continue;
            }
            let Some(q) = self.pending.remove(&key) else {
                continue;
            };
            let series = self.series(&q, &key, None);
            self.record(series, self.settings.timeout.as_secs_f64());
            self.timed_out += 1;
        }
        // A stream idle for twice the timeout has nothing left to answer.
        let idle = 2 * self.settings.timeout.as_nanos() as u64;
        self.streams.expire(now_ns.saturating_sub(idle));
    }

    /// The interval's points; starts the next interval.
    pub fn finish(&mut self) -> Vec<Point> {
        self.telemetry.emit(EventsReceived {
            source: SOURCE,
            count: std::mem::take(&mut self.received),
        });
        let mut out = Vec::with_capacity(self.acc.len());
        for (k, hist) in self.acc.drain() {
            let mut attrs = Attrs::new()
                .with(attr::NETWORK_TRANSPORT, k.transport.as_str())
                .with(
                    attr::NETWORK_TYPE,
                    if k.server.is_ipv4() { "ipv4" } else { "ipv6" },
                )
                .with(attr::FLOW_ROLE, k.role.as_str())
                .with(attr::SERVER_ADDRESS, k.server.to_string())
                .with(attr::DNS_QUESTION_NAME, k.name)
                .with(
                    attr::DNS_QUESTION_TYPE,
                    message::qtype_name(k.qtype).into_owned(),
                );
            match k.rcode {
                Some(rcode) => {
                    attrs.set(attr::DNS_RESPONSE_CODE, message::rcode_name(rcode));
                    if let Some(error) = message::rcode_error(rcode) {
                        attrs.set(attr::ERROR_TYPE, error);
                    }
                }
                None => attrs.set(attr::ERROR_TYPE, TIMEOUT),
            }
            out.push(Point {
                resource: k.resource,
                metric: DNS_DURATION,
                attrs,
                value: PointValue::Histogram(hist),
            });
        }
        self.topk.end_interval();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::tests::query;
    use crate::dns::packet::build;
    use flowscope_model::telemetry::EVENTS_LOST;

    /// A response to `q` with RCODE `rcode` and one A record.
    fn response(q: &[u8], rcode: u8, addr: [u8; 4]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = 0x80 | rcode;
        r[7] = 1; // ANCOUNT
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&addr);
        r
    }

    fn engine(max: usize) -> (Engine, Telemetry, Arc<DnsNames>) {
        let t = Telemetry::new();
        let names = Arc::new(DnsNames::new(16, Duration::from_secs(1)));
        let res = Arc::new(Attrs::new().with("service.name", "app"));
        let settings = EngineSettings {
            timeout: Duration::from_secs(5),
            max_outstanding: max,
            top_k: 100,
            buckets: Arc::from(flowscope_model::hist::DNS_BOUNDS),
            max_tcp_streams: 8,
        };
        (
            Engine::new(
                settings,
                t.clone(),
                names.clone(),
                Box::new(FixedOwner(res)),
            ),
            t,
            names,
        )
    }

    fn feed(e: &mut Engine, ts_ns: u64, direction: Direction, data: &[u8]) {
        e.on_packet(&Captured {
            netns: 1,
            ts_ns,
            direction,
            loopback: false,
            data,
        });
    }

    const C: &str = "198.18.0.2:40000";
    const S: &str = "198.18.0.1:53";

    #[test]
    fn matches_times_out_once_and_bounds_the_table() {
        let (mut e, t, names) = engine(2);
        let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
        let q1 = query(1, "known.test", 1);
        feed(
            &mut e,
            1_000_000,
            Direction::Outgoing,
            &build::udp(c, s, &q1),
        );
        // A retransmission with the same key keeps the first time.
        feed(
            &mut e,
            2_000_000,
            Direction::Outgoing,
            &build::udp(c, s, &q1),
        );
        feed(
            &mut e,
            3_500_000,
            Direction::Incoming,
            &build::udp(s, c, &response(&q1, 0, [198, 18, 0, 9])),
        );
        let q2 = query(2, "slow.test", 1);
        feed(
            &mut e,
            10_000_000,
            Direction::Outgoing,
            &build::udp(c, s, &q2),
        );
        let q3 = query(3, "a.test", 28);
        feed(
            &mut e,
            10_000_000,
            Direction::Outgoing,
            &build::udp(c, s, &q3),
        );
        // Table of 2 is full: the third outstanding query is counted lost.
        let q4 = query(4, "b.test", 1);
        feed(
            &mut e,
            10_000_000,
            Direction::Outgoing,
            &build::udp(c, s, &q4),
        );
        let lost = |reason: &str| {
            t.total(
                EVENTS_LOST,
                &Attrs::new()
                    .with(attr::SOURCE, "dns")
                    .with(attr::REASON, reason.to_string()),
            )
        };
        assert_eq!(lost("table_full"), 1);
        e.expire(10_000_000 + 4_999_999_999);
        assert_eq!(e.timed_out, 0);
        e.expire(10_000_000 + 5_000_000_000);
        e.expire(20_000_000_000);
        assert_eq!((e.answered, e.timed_out), (1, 2));
        // A late response to a timed-out query is not an answer.
        feed(
            &mut e,
            20_000_000_000,
            Direction::Incoming,
            &build::udp(s, c, &response(&q2, 0, [1, 1, 1, 1])),
        );
        assert_eq!(e.answered, 1);
        assert_eq!(lost("unmatched_response"), 1);
        assert_eq!(
            names.name_of(1, "198.18.0.9".parse().unwrap()).as_deref(),
            Some("known.test")
        );

        let points = e.finish();
        assert!(points.iter().all(|p| p.metric == DNS_DURATION));
        let (dur, timeouts): (Vec<_>, Vec<_>) = points
            .iter()
            .partition(|p| p.attrs.get(attr::ERROR_TYPE).is_none());
        assert_eq!(dur.len(), 1);
        let PointValue::Histogram(h) = &dur[0].value else {
            panic!("not a histogram")
        };
        assert_eq!(h.count, 1);
        assert!((h.sum - 0.0025).abs() < 1e-12, "latency {}", h.sum);
        let a = &dur[0].attrs;
        assert_eq!(a.get_str(attr::DNS_QUESTION_NAME), Some("known.test"));
        assert_eq!(a.get_str(attr::DNS_QUESTION_TYPE), Some("A"));
        assert_eq!(a.get_str(attr::DNS_RESPONSE_CODE), Some("NOERROR"));
        assert_eq!(a.get_str(attr::SERVER_ADDRESS), Some("198.18.0.1"));
        assert_eq!(a.get_str(attr::FLOW_ROLE), Some("client"));
        // Each timed-out lookup is one sample lasting the timeout, with
        // error.type=timeout and no response code.
        let mut names = Vec::new();
        for p in &timeouts {
            assert_eq!(p.attrs.get_str(attr::ERROR_TYPE), Some("timeout"));
            assert_eq!(p.attrs.get(attr::DNS_RESPONSE_CODE), None);
            let PointValue::Histogram(h) = &p.value else {
                panic!("not a histogram")
            };
            assert_eq!((h.count, h.sum), (1, 5.0));
            names.push(p.attrs.get_str(attr::DNS_QUESTION_NAME).unwrap());
        }
        names.sort();
        assert_eq!(names, ["a.test", "slow.test"]);
        assert!(e.finish().is_empty());
    }

    #[test]
    fn server_side_and_tcp_split_messages() {
        let (mut e, _t, _) = engine(16);
        let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
        let q = query(9, "known.test", 1);
        let r = response(&q, 3, [0, 0, 0, 0]);
        let mut qs = (q.len() as u16).to_be_bytes().to_vec();
        qs.extend_from_slice(&q);
        let mut rs = (r.len() as u16).to_be_bytes().to_vec();
        rs.extend_from_slice(&r);
        // The query arrives at the local server in two segments.
        feed(
            &mut e,
            1_000,
            Direction::Incoming,
            &build::tcp(c, s, 100, 0x02, &[]),
        );
        feed(
            &mut e,
            2_000,
            Direction::Incoming,
            &build::tcp(c, s, 101, 0x18, &qs[..3]),
        );
        feed(
            &mut e,
            3_000,
            Direction::Incoming,
            &build::tcp(c, s, 104, 0x18, &qs[3..]),
        );
        feed(
            &mut e,
            9_000,
            Direction::Outgoing,
            &build::tcp(s, c, 500, 0x18, &rs),
        );
        assert_eq!(e.answered, 1);
        let points = e.finish();
        let a = &points[0].attrs;
        assert_eq!(a.get_str(attr::FLOW_ROLE), Some("server"));
        assert_eq!(a.get_str(attr::NETWORK_TRANSPORT), Some("tcp"));
        assert_eq!(a.get_str(attr::DNS_RESPONSE_CODE), Some("NXDOMAIN"));
        assert_eq!(a.get_str(attr::ERROR_TYPE), Some("NXDOMAIN"));
        let PointValue::Histogram(h) = &points[0].value else {
            panic!("not a histogram")
        };
        assert!((h.sum - 6e-6).abs() < 1e-12);
    }

    #[test]
    fn routed_lookups_are_not_this_namespaces() {
        let (mut e, t, names) = engine(16);
        let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
        // This namespace is a router at 198.18.0.254: neither end is local.
        e.set_local_addrs(1, ["198.18.0.254".parse().unwrap()].into_iter().collect());
        let q = query(5, "known.test", 1);
        feed(&mut e, 1_000, Direction::Incoming, &build::udp(c, s, &q));
        feed(&mut e, 2_000, Direction::Outgoing, &build::udp(c, s, &q));
        feed(
            &mut e,
            3_000,
            Direction::Incoming,
            &build::udp(s, c, &response(&q, 0, [198, 18, 0, 9])),
        );
        feed(
            &mut e,
            4_000,
            Direction::Outgoing,
            &build::udp(s, c, &response(&q, 0, [198, 18, 0, 9])),
        );
        assert_eq!((e.answered, e.outstanding()), (0, 0));
        assert_eq!(t.total_matching(EVENTS_LOST, &Attrs::new()), 0);
        assert_eq!(names.name_of(1, "198.18.0.9".parse().unwrap()), None);
        // Once the client address is this namespace's, it is a lookup here.
        e.set_local_addrs(1, [c.ip()].into_iter().collect());
        feed(&mut e, 5_000, Direction::Outgoing, &build::udp(c, s, &q));
        feed(
            &mut e,
            6_000,
            Direction::Incoming,
            &build::udp(s, c, &response(&q, 0, [198, 18, 0, 9])),
        );
        assert_eq!(e.answered, 1);
        assert!(names.name_of(1, "198.18.0.9".parse().unwrap()).is_some());
    }

    /// Knows a socket only from its `n`-th question on (the kernel's record
    /// comes after the query was captured); counts the questions.
    struct LateOwner {
        after: u32,
        asked: u32,
        /// Questions asked with `last` (the lookup ended), read by the test.
        last_asks: Arc<std::sync::atomic::AtomicU32>,
    }

    impl OwnerResolver for LateOwner {
        fn resource(
            &mut self,
            _: u32,
            _: Transport,
            _: SocketAddr,
            last: bool,
        ) -> Option<Arc<Attrs>> {
            self.asked += 1;
            // The first question (at capture) is never the last one.
            assert!(self.asked > 1 || !last, "the first question said last");
            self.last_asks
                .fetch_add(u32::from(last), std::sync::atomic::Ordering::Relaxed);
            (self.asked > self.after).then(|| Arc::new(Attrs::new().with("service.name", "late")))
        }

        fn unknown(&self) -> Arc<Attrs> {
            Arc::new(Attrs::new().with("service.name", "unknown_service"))
        }
    }

    #[test]
    fn owners_are_asked_again_when_the_lookup_ends_and_misses_are_counted() {
        for (after, want, lost) in [(1, "late", 0), (5, "unknown_service", 1)] {
            let (mut e, t, _) = engine(16);
            let last_asks = Arc::new(std::sync::atomic::AtomicU32::new(0));
            e.owners = Box::new(LateOwner {
                after,
                asked: 0,
                last_asks: last_asks.clone(),
            });
            let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
            let q = query(7, "known.test", 1);
            feed(&mut e, 1_000, Direction::Outgoing, &build::udp(c, s, &q));
            feed(
                &mut e,
                2_000,
                Direction::Incoming,
                &build::udp(s, c, &response(&q, 0, [198, 18, 0, 9])),
            );
            let points = e.finish();
            assert_eq!(points.len(), 1);
            assert_eq!(points[0].resource.get_str("service.name"), Some(want));
            // Asked once more, as the last time, when the answer came.
            assert_eq!(last_asks.load(std::sync::atomic::Ordering::Relaxed), 1);
            assert_eq!(e.owner_unknown, lost);
            assert_eq!(
                t.total(
                    EVENTS_LOST,
                    &Attrs::new()
                        .with(attr::SOURCE, "dns")
                        .with(attr::REASON, "owner_unknown"),
                ),
                lost
            );
        }
    }
}
