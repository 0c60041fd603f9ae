//! Destinations observed in flows, handed from the flow receiver to the
//! Network Path receiver's dynamic tests.
//!
//! [`Destinations`] is a shared service of the [`crate::Context`]: the
//! `ebpf` receiver writes to it, the `path` receiver reads from it, and
//! neither knows the other. The queue exists only once a reader has
//! [`Destinations::subscribe`]d, so an agent without dynamic path tests
//! builds no destination at all. The sink never blocks the flow receiver:
//! it is a bounded queue, and an offer that finds it full is dropped and
//! counted ([`DestinationSink::dropped`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use crate::attr::Attrs;
use crate::flow::Transport;

/// One outgoing client flow's server side, as the flow receiver saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedDestination {
    /// The server's address and port.
    pub server: SocketAddr,
    /// The local address the client used (its namespace's own address).
    pub local: SocketAddr,
    pub transport: Transport,
    /// Inode of the network namespace the client socket lives in.
    pub netns: u32,
    /// The client process (thread group id), 0 when unknown; its
    /// `/proc/<pid>/ns/net` is the way into the namespace.
    pub pid: u32,
    /// The client workload's Resource (`service.name`, container, host).
    pub resource: Arc<Attrs>,
    /// The server's DNS name (`network.peer.domain`), when known.
    pub domain: Option<Arc<str>>,
}

/// The flow receiver's end: offers never block.
#[derive(Clone, Debug)]
pub struct DestinationSink {
    tx: SyncSender<ObservedDestination>,
    dropped: Arc<AtomicU64>,
}

impl DestinationSink {
    /// Offers one destination; returns false (and counts it) when the queue
    /// is full or the consumer is gone.
    pub fn offer(&self, d: ObservedDestination) -> bool {
        match self.tx.try_send(d) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Offers that found the queue full since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The path receiver's end.
#[derive(Debug)]
pub struct DestinationSource {
    rx: Mutex<Receiver<ObservedDestination>>,
    dropped: Arc<AtomicU64>,
}

impl DestinationSource {
    /// Takes every destination waiting now, without blocking.
    pub fn drain(&self) -> Vec<ObservedDestination> {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        rx.try_iter().collect()
    }

    /// Offers the sink dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A sink/source pair holding at most `capacity` waiting destinations.
pub fn destinations(capacity: usize) -> (DestinationSink, DestinationSource) {
    let (tx, rx) = sync_channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        DestinationSink {
            tx,
            dropped: dropped.clone(),
        },
        DestinationSource {
            rx: Mutex::new(rx),
            dropped,
        },
    )
}

/// The shared service: one queue from the flow receiver to the path
/// receivers, opened by the first reader. Clones share it; the default is
/// empty (no reader, so writers offer nothing).
#[derive(Clone, Debug, Default)]
pub struct Destinations {
    queue: Arc<OnceLock<(DestinationSink, Arc<DestinationSource>)>>,
}

impl Destinations {
    pub fn new() -> Self {
        Self::default()
    }

    /// The reader's end. The first call opens the queue with room for
    /// `capacity` waiting destinations; later calls (a second `path`
    /// receiver) share that queue and its capacity.
    pub fn subscribe(&self, capacity: usize) -> Arc<DestinationSource> {
        self.queue
            .get_or_init(|| {
                let (sink, source) = destinations(capacity);
                (sink, Arc::new(source))
            })
            .1
            .clone()
    }

    /// The writer's end, once some reader has subscribed; `None` before
    /// (the writer then skips building destinations).
    pub fn sink(&self) -> Option<&DestinationSink> {
        self.queue.get().map(|(sink, _)| sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(port: u16) -> ObservedDestination {
        ObservedDestination {
            server: SocketAddr::from(([198, 18, 0, 1], port)),
            local: SocketAddr::from(([198, 18, 0, 2], 40000)),
            transport: Transport::Tcp,
            netns: 1,
            pid: 1,
            resource: Arc::new(Attrs::new()),
            domain: None,
        }
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (sink, source) = destinations(2);
        assert!(sink.offer(dest(1)));
        assert!(sink.offer(dest(2)));
        assert!(!sink.offer(dest(3)));
        assert_eq!(sink.dropped(), 1);
        assert_eq!(source.dropped(), 1);
        let got: Vec<u16> = source.drain().iter().map(|d| d.server.port()).collect();
        assert_eq!(got, vec![1, 2]);
        assert!(sink.offer(dest(4)));
        assert_eq!(source.drain().len(), 1);
    }

    #[test]
    fn service_opens_on_first_subscribe_and_is_shared_by_clones() {
        let d = Destinations::new();
        let writer = d.clone();
        assert!(writer.sink().is_none(), "no reader yet");
        let source = d.subscribe(1);
        let again = d.subscribe(100);
        let sink = writer.sink().expect("reader subscribed");
        assert!(sink.offer(dest(7)));
        assert!(!sink.offer(dest(8)), "capacity of the first subscribe");
        assert_eq!(again.dropped(), 1);
        assert_eq!(source.drain().len(), 1);
    }
}
