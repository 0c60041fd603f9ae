//! Conntrack: who is really on the other end of a NATed connection.
//!
//! A helper of the `ebpf` receiver, not a receiver: it emits no flows. The
//! first `ebpf` receiver with `nat.enabled` starts the host's one
//! [`Conntrack`] ([`Conntrack::shared`], kept in the agent's
//! [`Context::services`]; a second such receiver joins it) and hands its
//! [`NatResolver`] to its flow collector, which asks it about every TCP
//! connection and UDP flow (see [`table`] for how an entry answers). The
//! service stops when the last receiver using it is dropped.
//!
//! NAT as one feature: [`table`] (the table and its lookups, sans-IO),
//! this module and [`netlink`] (reading conntrack), and the collector's
//! NAT settling (`crate::collector`: `with_nat`, `catch_up_nat`,
//! `settle_pending`) are all there is; the agent only passes the `ebpf`
//! receiver its config.
//!
//! - Every network namespace the agent watches ([`crate::netns`]) gets an
//!   event socket, opened from a thread inside it, and an initial dump
//!   ([`netlink`]). One thread then polls all event sockets; namespaces are
//!   rescanned every [`ConntrackSettings::rescan`], and a namespace that is
//!   gone has its entries kept for the retention like destroyed ones.
//! - Only entries NAT changed are kept, at most
//!   [`ConntrackSettings::max_tracked`] (the oldest destroyed, then the
//!   oldest live ones make room). A destroyed entry stays for
//!   [`ConntrackSettings::retention`], so a connection that ended before the
//!   collector reported it still resolves.
//! - Lost events (`ENOBUFS`) are counted in
//!   `flowscope.events.lost{source=conntrack, reason=socket_full}` and the
//!   namespace is dumped again. A namespace with events off
//!   (`net.netfilter.nf_conntrack_events=0`), or every namespace with
//!   `events: false`, is dumped every `rescan` instead.
//!
//! Why `netlink-packet-netfilter` and `netlink-sys`: they are the
//! rust-netlink project's crates (the ones behind `rtnetlink`), version
//! 0.4 types ctnetlink's NEW/GET/DELETE messages with their original and
//! reply tuples, which is all the resolution needs, and frames the dump
//! request; multicast groups and non-blocking reads come from
//! `netlink-sys`. What 0.4 does not type (`CTA_ID`, zones, counters,
//! timestamps) is passed through as raw attributes and not needed here.

pub mod netlink;
pub mod table;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowscope_model::internal_events::{EventsLost, EventsReceived, LossReason, Source};
use flowscope_model::{Context, Telemetry};
use thiserror::Error;

use crate::netns::{NetnsError, NetnsScanner, NsPoll, in_namespace};
use netlink::CtEvent;
use table::Refused;
pub use table::{CatchUp, CtEntry, NatResolver, NatTable, PROTO_TCP, PROTO_UDP, Resolution, Tuple};

/// While busy (at least [`GATHER_FROM`] events in the current or the last
/// [`RATE_WINDOW`]), the worker waits this long after each read before it
/// polls again, so that at thousands of
/// connections per second it reads them in batches (one wake-up per window
/// instead of one per event). The events stay queued in the socket
/// meanwhile (`rcvbuf`, 4 MiB by default, holds thousands of them).
///
/// Only when busy: the collector tells "translated, entry not read yet"
/// (it waits) from "not translated" (reported at once) by whether any entry
/// was translated from the peer's address, so the first connections to a
/// Service must be read at once; once that is known, an entry a few
/// milliseconds late only makes its connection wait for the end of the
/// interval, or the next (see `Collector::settle_pending`).
const GATHER: Duration = Duration::from_millis(5);
/// Events per [`RATE_WINDOW`] from which the worker waits [`GATHER`]
/// (1,000 events/s, about 500 NATed connections per second).
const GATHER_FROM: u64 = 100;
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// Longest wait for events, so the stop flag, resyncs and the sweep run.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// `flowscope.source` of the service's own counts.
const SOURCE: Source = Source::Conntrack;

#[derive(Debug, Error)]
pub enum ConntrackError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what} in network namespace {netns}")]
    Netlink {
        what: &'static str,
        netns: u32,
        #[source]
        source: io::Error,
    },
    #[error("starting the conntrack thread")]
    Spawn(#[source] io::Error),
    #[error("creating the eventfd that wakes the conntrack thread")]
    Wake(#[source] io::Error),
}

/// Settings of the service (the `nat` block of the `ebpf` receiver).
#[derive(Clone, Debug)]
pub struct ConntrackSettings {
    /// Most NAT entries kept, live and recently destroyed.
    pub max_tracked: usize,
    /// How long a destroyed entry still resolves.
    pub retention: Duration,
    /// How often namespaces are rescanned (and, without events, dumped).
    pub rescan: Duration,
    /// Follow the NEW/DESTROY event stream (else dump every `rescan`).
    pub events: bool,
    /// SO_RCVBUF of each event socket.
    pub rcvbuf: usize,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        Self {
            max_tracked: 65_536,
            retention: Duration::from_secs(30),
            rescan: Duration::from_secs(2),
            events: true,
            rcvbuf: 4 << 20,
        }
    }
}

/// The collector's requests to catch up ([`CatchUp`]): a ticket count
/// under a mutex, an eventfd that wakes the worker's poll, and a condvar
/// the worker signals once it has read every socket after a request.
struct Requests {
    /// (tickets requested, tickets served).
    tickets: Mutex<(u64, u64)>,
    served: Condvar,
    wake: OwnedFd,
}

/// The namespace number the worker's poll gives the wake-up eventfd (no
/// network namespace has inode 0).
const WAKE: u32 = 0;

impl Requests {
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            tickets: Mutex::new((0, 0)),
            served: Condvar::new(),
            wake,
        })
    }

    /// The newest ticket requested; the worker serves up to it.
    fn pending(&self) -> Option<u64> {
        let t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        (t.0 > t.1).then_some(t.0)
    }

    fn serve(&self, upto: u64) {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.1 = t.1.max(upto);
        self.served.notify_all();
    }

    /// Empties the eventfd's counter.
    fn clear_wake(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a u64 of ours; non-blocking.
        unsafe { libc::read(self.wake.as_raw_fd(), (&raw mut v).cast(), 8) };
    }
}

impl CatchUp for Requests {
    fn catch_up(&self, within: Duration) -> bool {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.0 += 1;
        let ticket = t.0;
        let one = 1u64;
        // SAFETY: writes 8 bytes from a u64 of ours to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
        let (t, _) = self
            .served
            .wait_timeout_while(t, within, |t| t.1 < ticket)
            .unwrap_or_else(|e| e.into_inner());
        t.1 >= ticket
    }
}

/// The running service; stops its thread when dropped.
pub struct Conntrack {
    resolver: NatResolver,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    watched: Arc<Mutex<Vec<u32>>>,
}

/// The agent's slot for its one conntrack service ([`Context::services`]):
/// a weak handle, so the service lives as long as a receiver holds it.
#[derive(Clone, Default)]
struct SharedConntrack(Arc<Mutex<Weak<Conntrack>>>);

impl Conntrack {
    /// The host's one conntrack service for this agent: the one running
    /// (started by another `ebpf` receiver, whose settings it keeps), else
    /// a new one with `settings`. Stops when the last handle is dropped.
    pub fn shared(settings: ConntrackSettings, ctx: &Context) -> Result<Arc<Self>, ConntrackError> {
        let slot = ctx.services.get::<SharedConntrack>();
        let mut held = slot.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = held.upgrade() {
            return Ok(running);
        }
        let started = Arc::new(Self::start(settings, ctx)?);
        *held = Arc::downgrade(&started);
        Ok(started)
    }

    /// Starts the thread, writing into a [`NatResolver`] of its own with
    /// the settings' bounds and counting on the context's telemetry.
    /// Namespaces where conntrack cannot be read are logged and retried;
    /// the agent runs on without their entries. The agent starts it
    /// through [`Conntrack::shared`]: one per host.
    pub fn start(settings: ConntrackSettings, ctx: &Context) -> Result<Self, ConntrackError> {
        let telemetry = ctx.telemetry.clone();
        let resolver = NatResolver::new(settings.max_tracked, settings.retention);
        let stop = Arc::new(AtomicBool::new(false));
        let watched = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Requests::new().map_err(ConntrackError::Wake)?);
        resolver.set_writer(Some(requests.clone()));
        let worker = Worker {
            requests,
            settings,
            telemetry,
            resolver: resolver.clone(),
            stop: stop.clone(),
            watched: watched.clone(),
            socks: HashMap::new(),
            failed: HashMap::new(),
            evicted_reported: 0,
            warned_host: false,
            scanner: NetnsScanner::default(),
        };
        let thread = std::thread::Builder::new()
            .name("flowscope-conntrack".into())
            .spawn(move || worker.run())
            .map_err(ConntrackError::Spawn)?;
        Ok(Self {
            resolver,
            stop,
            thread: Some(thread),
            watched,
        })
    }

    pub fn resolver(&self) -> NatResolver {
        self.resolver.clone()
    }

    /// Namespaces whose conntrack is followed now.
    pub fn watched(&self) -> Vec<u32> {
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Conntrack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.resolver.set_writer(None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct NsSock {
    path: PathBuf,
    /// None: this namespace is dumped every rescan instead.
    events: Option<OwnedFd>,
    resync: bool,
}

struct Worker {
    requests: Arc<Requests>,
    settings: ConntrackSettings,
    telemetry: Telemetry,
    resolver: NatResolver,
    stop: Arc<AtomicBool>,
    watched: Arc<Mutex<Vec<u32>>>,
    socks: HashMap<u32, NsSock>,
    failed: HashMap<u32, Instant>,
    evicted_reported: u64,
    warned_host: bool,
    scanner: NetnsScanner,
}

/// What opening a namespace yields: its event socket (if events are on
/// there) and its NAT entries now.
type Opened = (Option<OwnedFd>, Vec<CtEntry>, u64);

impl Worker {
    fn run(mut self) {
        let mut last_scan: Option<Instant> = None;
        let mut buf = vec![0u8; 256 * 1024];
        // Batching is decided here from the event rate, not by the poller's
        // wake-up spacing (as DNS capture does): a read delayed while
        // events are sparse can make the collector take a translated
        // connection for an untranslated one (see GATHER).
        let mut poll = NsPoll::default();
        // Events read since the window began, and whether the last whole
        // window was busy.
        let mut rate = (Instant::now(), 0u64);
        let mut busy = false;
        while !self.stop.load(Ordering::Relaxed) {
            if last_scan.is_none_or(|t| t.elapsed() >= self.settings.rescan) {
                let first = last_scan.is_none();
                last_scan = Some(Instant::now());
                self.rescan();
                if first {
                    tracing::info!(
                        namespaces = self.socks.len(),
                        nat_entries = self.resolver.tracked(),
                        "conntrack followed"
                    );
                }
                poll.set(
                    std::iter::once((WAKE, self.requests.wake.as_raw_fd())).chain(
                        self.socks
                            .iter()
                            .filter_map(|(ns, s)| Some((*ns, s.events.as_ref()?.as_raw_fd()))),
                    ),
                );
            }
            let mut woke = false;
            for (ns, fd) in poll.wait(POLL_TIMEOUT) {
                if ns == WAKE {
                    self.requests.clear_wake();
                    continue;
                }
                woke = true;
                rate.1 += self.read_all(fd, ns, &mut buf);
            }
            // The collector waits: read every socket, whatever the poll
            // said (an event queued after the poll returned counts too).
            if let Some(ticket) = self.requests.pending() {
                let fds: Vec<(u32, i32)> = self
                    .socks
                    .iter()
                    .filter_map(|(ns, s)| Some((*ns, s.events.as_ref()?.as_raw_fd())))
                    .collect();
                for (ns, fd) in fds {
                    rate.1 += self.read_all(fd, ns, &mut buf);
                }
                self.requests.serve(ticket);
            }
            if woke {
                let age = rate.0.elapsed();
                if age >= RATE_WINDOW {
                    // A window that ended long ago says nothing of now.
                    busy = rate.1 >= GATHER_FROM && age < 2 * RATE_WINDOW;
                    rate = (Instant::now(), 0);
                }
                if busy || rate.1 >= GATHER_FROM {
                    // Busy: let the next events gather instead of waking
                    // for each.
                    std::thread::sleep(GATHER);
                }
            }
            let resync: Vec<u32> = self
                .socks
                .iter()
                .filter(|(_, s)| s.resync)
                .map(|(ns, _)| *ns)
                .collect();
            for ns in resync {
                self.redump(ns);
            }
            let mut table = self.resolver.lock();
            table.sweep(Instant::now());
            let evicted = table.evicted_live;
            drop(table);
            self.telemetry.emit(EventsLost::new(
                SOURCE,
                LossReason::TableFull,
                evicted - self.evicted_reported,
            ));
            self.evicted_reported = evicted;
        }
    }

    fn rescan(&mut self) {
        let found = self.scanner.scan();
        let now = Instant::now();
        let gone: Vec<u32> = self
            .socks
            .keys()
            .filter(|ns| !found.contains_key(ns))
            .copied()
            .collect();
        for ns in gone {
            tracing::debug!(
                netns = ns,
                "network namespace gone; closing its conntrack socket"
            );
            self.socks.remove(&ns);
            // Its connections may still be reported: keep their entries for
            // the retention, as if destroyed now.
            self.resolver.lock().resync(ns, &[], now);
        }
        self.failed.retain(|ns, _| found.contains_key(ns));
        let dump_only: Vec<u32> = self
            .socks
            .iter()
            .filter(|(_, s)| s.events.is_none())
            .map(|(ns, _)| *ns)
            .collect();
        for ns in dump_only {
            self.redump(ns);
        }
        let own = crate::netns::current_netns();
        for (ns, (path, _)) in found {
            if self.socks.contains_key(&ns)
                || self
                    .failed
                    .get(&ns)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
            {
                continue;
            }
            match self.open(ns, path.clone()) {
                Ok((events, entries, bad)) => {
                    if events.is_none() && self.settings.events {
                        tracing::warn!(
                            netns = ns,
                            "conntrack events are off in this network namespace \
                             (net.netfilter.nf_conntrack_events=0): NAT is resolved \
                             from a dump every {:?}, so connections shorter than that may \
                             not be",
                            self.settings.rescan
                        );
                    }
                    self.apply_dump(ns, &entries, bad);
                    tracing::debug!(
                        netns = ns,
                        nat_entries = entries.len(),
                        "following conntrack"
                    );
                    self.socks.insert(
                        ns,
                        NsSock {
                            path,
                            events,
                            resync: false,
                        },
                    );
                }
                Err(e) => {
                    if Some(ns) == own && !self.warned_host {
                        self.warned_host = true;
                        tracing::warn!(
                            "cannot read conntrack ({e}); NAT (Kubernetes Service IPs) is not \
                             resolved in this namespace. Is nf_conntrack_netlink available?"
                        );
                    } else {
                        tracing::debug!(netns = ns, error = %e, "cannot read conntrack here");
                    }
                    self.failed.insert(ns, Instant::now());
                }
            }
        }
        let mut w: Vec<u32> = self.socks.keys().copied().collect();
        w.sort_unstable();
        *self.watched.lock().unwrap_or_else(|e| e.into_inner()) = w;
    }

    fn open(&self, ns: u32, path: PathBuf) -> Result<Opened, ConntrackError> {
        let (events, rcvbuf) = (self.settings.events, self.settings.rcvbuf);
        in_namespace(&path, ns, "flowscope-ct-ns", move || {
            let on = events
                && std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_events")
                    .map_or(true, |v| v.trim() != "0");
            let fd = if on {
                Some(
                    netlink::open_events(rcvbuf, netlink::EventFilter::NatOnly).map_err(
                        |source| ConntrackError::Netlink {
                            what: "opening the conntrack event socket",
                            netns: ns,
                            source,
                        },
                    )?,
                )
            } else {
                None
            };
            let (entries, bad) = dump_nat(ns)?;
            Ok((fd, entries, bad))
        })
    }

    fn redump(&mut self, ns: u32) {
        let Some(s) = self.socks.get_mut(&ns) else {
            return;
        };
        s.resync = false;
        let path = s.path.clone();
        match in_namespace(&path, ns, "flowscope-ct-ns", move || dump_nat(ns)) {
            Ok((entries, bad)) => self.apply_dump(ns, &entries, bad),
            Err(e) => tracing::debug!(netns = ns, error = %e, "conntrack dump failed"),
        }
    }

    fn apply_dump(&self, ns: u32, entries: &[CtEntry], bad: u64) {
        self.telemetry.emit(EventsReceived {
            source: SOURCE,
            count: entries.len() as u64 + bad,
        });
        self.telemetry
            .emit(EventsLost::new(SOURCE, LossReason::ParseError, bad));
        let full = self.resolver.lock().resync(ns, entries, Instant::now());
        self.telemetry
            .emit(EventsLost::new(SOURCE, LossReason::TableFull, full as u64));
    }

    /// Reads every queued event of one namespace's socket; returns how many
    /// messages it read.
    fn read_all(&mut self, fd: i32, ns: u32, buf: &mut [u8]) -> u64 {
        let (mut received, mut bad, mut full) = (0u64, 0u64, 0u64);
        // A bound on one socket's turn, so one busy namespace does not
        // starve the others or the sweep.
        for _ in 0..4096 {
            match netlink::recv(fd, buf, libc::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    let now = Instant::now();
                    let mut table = self.resolver.lock();
                    let r = netlink::parse_datagram(&buf[..n], |ev| {
                        received += 1;
                        match ev {
                            CtEvent::New(e) => {
                                if table.insert(ns, &e, now) == Err(Refused::Full) {
                                    full += 1;
                                }
                            }
                            CtEvent::Destroy(e) => table.destroy(ns, &e, now),
                            CtEvent::Ignored | CtEvent::Done => {}
                        }
                    });
                    match r {
                        Ok(b) => bad += b,
                        Err(_) => bad += 1,
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The kernel dropped events: count, and dump again.
                    self.telemetry
                        .emit(EventsLost::new(SOURCE, LossReason::SocketFull, 1));
                    if let Some(s) = self.socks.get_mut(&ns) {
                        s.resync = true;
                    }
                }
                Err(_) => break,
            }
        }
        self.telemetry.emit(EventsReceived {
            source: SOURCE,
            count: received + bad,
        });
        self.telemetry
            .emit(EventsLost::new(SOURCE, LossReason::ParseError, bad));
        self.telemetry
            .emit(EventsLost::new(SOURCE, LossReason::TableFull, full));
        received + bad
    }
}

/// Dumps this thread's namespace and keeps its NAT entries.
fn dump_nat(ns: u32) -> Result<(Vec<CtEntry>, u64), ConntrackError> {
    let mut entries = Vec::new();
    let bad = netlink::dump(|e| {
        if e.is_nat() {
            entries.push(e);
        }
    })
    .map_err(|source| ConntrackError::Netlink {
        what: "dumping conntrack",
        netns: ns,
        source,
    })?;
    Ok((entries, bad))
}
