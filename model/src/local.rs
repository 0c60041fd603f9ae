//! Which addresses belong to this host, and which local process listens on
//! which of them: what the `peer` processor needs to name a peer that runs on
//! the same host, and `locality` to call a flow `same_host`.
//!
//! It lives here, in the model, because it is shared state: the agent builds
//! one table into its [`Context`](crate::Context) and every component that
//! reads or fills it gets it from there (never from a global).
//!
//! A [`LocalServices`] learns by itself from the flows that pass through a
//! chain: every flow's local address is an address of this host (in the
//! flow's network namespace), and a flow whose local side is the server
//! tells which `service.name` listens on that address and port. The
//! receiver can add what it knows beyond the flows (listening sockets with no
//! traffic yet, wildcard binds) through [`LocalServices::insert`]. Learned
//! listeners are forgotten after [`LEARNED_TTL`] without traffic; inserted
//! ones stay until removed.
//!
//! Addresses are matched together with the transport and, for loopback
//! addresses (which every network namespace has), the namespace inode.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::flow::{Flow, Role, Transport};
use crate::names::resource;

/// IPv4-mapped IPv6 addresses (`::ffff:198.18.0.1`) as the IPv4 address they
/// carry; every other address unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// How long a listener learned from flows is remembered without traffic.
pub const LEARNED_TTL: Duration = Duration::from_secs(600);
/// Most listeners and addresses remembered; beyond that new ones are not
/// learned until old ones expire (inserted listeners are always kept).
pub const MAX_ENTRIES: usize = 65_536;

/// Namespace "any": entries the receiver inserts without one, and the key
/// of every non-loopback address (those are unique on a host).
const ANY_NS: u32 = 0;

type Key = (Transport, SocketAddr, u32);

struct Listener {
    service: Arc<str>,
    /// `None` for inserted entries, which never expire.
    learned: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    listeners: HashMap<Key, Listener>,
    /// Addresses of this host -> the namespace they were seen in.
    addrs: HashMap<IpAddr, (u32, Instant)>,
    last_expiry: Option<Instant>,
}

/// Shared table of this host's addresses and listening services. Cheap to
/// clone; every clone sees the same table.
#[derive(Clone, Default)]
pub struct LocalServices(Arc<RwLock<Inner>>);

impl std::fmt::Debug for LocalServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.read();
        f.debug_struct("LocalServices")
            .field("listeners", &inner.listeners.len())
            .field("addresses", &inner.addrs.len())
            .finish()
    }
}

impl LocalServices {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every update is a single insert or remove, so a poisoned lock
        // still holds a consistent table.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `service` listens on `listen` (`0.0.0.0:port` or
    /// `[::]:port` for every address) in network namespace `netns` (0 when
    /// unknown).
    pub fn insert(
        &self,
        transport: Transport,
        listen: SocketAddr,
        netns: u32,
        service: impl Into<Arc<str>>,
    ) {
        let listen = SocketAddr::new(canonical(listen.ip()), listen.port());
        let ns = key_ns(listen.ip(), netns);
        self.write().listeners.insert(
            (transport, listen, ns),
            Listener {
                service: service.into(),
                learned: None,
            },
        );
        if !listen.ip().is_unspecified() {
            self.add_address(listen.ip(), netns);
        }
    }

    /// Forgets a listener inserted or learned for `listen`.
    pub fn remove(&self, transport: Transport, listen: SocketAddr, netns: u32) {
        let listen = SocketAddr::new(canonical(listen.ip()), listen.port());
        let ns = key_ns(listen.ip(), netns);
        self.write().listeners.remove(&(transport, listen, ns));
    }

    /// Records that `ip` is an address of this host, in namespace `netns`.
    pub fn add_address(&self, ip: IpAddr, netns: u32) {
        let mut inner = self.write();
        if inner.addrs.len() < MAX_ENTRIES || inner.addrs.contains_key(&canonical(ip)) {
            inner.addrs.insert(canonical(ip), (netns, Instant::now()));
        }
    }

    /// True when `ip` is loopback or an address of this host.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_loopback() || self.read().addrs.contains_key(&ip)
    }

    /// The service listening on `peer` for a client in namespace
    /// `client_netns`, if it runs on this host.
    pub fn lookup(
        &self,
        transport: Transport,
        peer: SocketAddr,
        client_netns: u32,
    ) -> Option<Arc<str>> {
        let ip = canonical(peer.ip());
        let inner = self.read();
        let ns_of_ip = if ip.is_loopback() {
            client_netns
        } else {
            inner.addrs.get(&ip).map_or(ANY_NS, |(ns, _)| *ns)
        };
        let wild: &[IpAddr] = if ip.is_ipv4() {
            &[
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            &[IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
        };
        let exact_ns = key_ns(ip, ns_of_ip);
        let exact = [
            (SocketAddr::new(ip, peer.port()), exact_ns),
            (SocketAddr::new(ip, peer.port()), ANY_NS),
        ];
        let wildcard = wild.iter().flat_map(|w| {
            [
                (SocketAddr::new(*w, peer.port()), ns_of_ip),
                (SocketAddr::new(*w, peer.port()), ANY_NS),
            ]
        });
        let any_local = ip.is_loopback() || inner.addrs.contains_key(&ip);
        exact
            .into_iter()
            .chain(wildcard.filter(|_| any_local))
            .find_map(|(addr, ns)| inner.listeners.get(&(transport, addr, ns)))
            .map(|l| l.service.clone())
    }

    /// Learns addresses and server-side listeners from one batch of flows,
    /// and forgets learned entries idle for longer than [`LEARNED_TTL`].
    pub fn learn(&self, flows: &[Flow]) {
        let now = Instant::now();
        let mut inner = self.write();
        for f in flows {
            let ip = canonical(f.local.ip());
            if inner.addrs.len() < MAX_ENTRIES || inner.addrs.contains_key(&ip) {
                inner.addrs.insert(ip, (f.netns, now));
            }
            if f.role == Role::Server
                && let Some(service) = f.resource.get_str(resource::SERVICE_NAME)
            {
                let key = (
                    f.transport,
                    SocketAddr::new(ip, f.local.port()),
                    key_ns(ip, f.netns),
                );
                let full = inner.listeners.len() >= MAX_ENTRIES;
                match inner.listeners.get_mut(&key) {
                    // An inserted entry is the receiver's word; keep it.
                    Some(l) if l.learned.is_none() => {}
                    Some(l) => {
                        if l.service.as_ref() != service {
                            l.service = Arc::from(service);
                        }
                        l.learned = Some(now);
                    }
                    None if !full => {
                        inner.listeners.insert(
                            key,
                            Listener {
                                service: Arc::from(service),
                                learned: Some(now),
                            },
                        );
                    }
                    None => {}
                }
            }
        }
        if inner
            .last_expiry
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            inner.last_expiry = Some(now);
            inner.listeners.retain(|_, l| {
                l.learned
                    .is_none_or(|t| now.duration_since(t) < LEARNED_TTL)
            });
            inner
                .addrs
                .retain(|_, (_, t)| now.duration_since(*t) < LEARNED_TTL);
        }
    }
}

/// Loopback addresses exist once per namespace; others once per host.
fn key_ns(ip: IpAddr, netns: u32) -> u32 {
    if ip.is_loopback() { netns } else { ANY_NS }
}

/// The local endpoints of one batch's flows (client sides included), so that
/// a server flow can name a client on the same host by its exact address
/// and port. Built per batch; ephemeral ports are never remembered.
#[derive(Default)]
pub struct BatchEndpoints {
    map: HashMap<Key, Arc<str>>,
}

impl BatchEndpoints {
    pub fn build(flows: &[Flow]) -> Self {
        let mut map = HashMap::new();
        for f in flows {
            if let Some(s) = f.resource.get_str(resource::SERVICE_NAME) {
                let ip = canonical(f.local.ip());
                map.entry((
                    f.transport,
                    SocketAddr::new(ip, f.local.port()),
                    key_ns(ip, f.netns),
                ))
                .or_insert_with(|| Arc::from(s));
            }
        }
        BatchEndpoints { map }
    }

    pub fn get(&self, transport: Transport, peer: SocketAddr, netns: u32) -> Option<&Arc<str>> {
        let ip = canonical(peer.ip());
        self.map.get(&(
            transport,
            SocketAddr::new(ip, peer.port()),
            key_ns(ip, netns),
        ))
    }
}
