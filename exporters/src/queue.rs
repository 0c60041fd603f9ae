//! The bounded queue between the pipeline and one exporter task, in memory
//! or backed by a directory ([`crate::persist`]).
//!
//! [`Queue::push`] never waits on the exporter: when the queue holds
//! `capacity` batches (or, on disk, would pass its size cap) the oldest is
//! dropped and its points are counted as
//! `flowscope.exporter.failed{error.type="queue_full"}`, so a slow backend
//! never holds up the receiver and the newest data wins. With a directory,
//! `push` returns only once the batch is on disk, and the record is deleted
//! only when the task [`Queue::finish`]es it. The exporter task takes
//! batches with [`Queue::pop`]; the batch being exported is tracked as "in
//! flight" so that a shutdown that abandons it can count it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use flowscope_model::internal_events::{ExporterFailed, ExporterQueue, ExporterQueueCapacity};
use flowscope_model::telemetry::Component;
use flowscope_model::{MetricBatch, Telemetry};
use tokio::sync::Notify;

use crate::persist::DiskStore;

/// `error.type` of points dropped because the queue was full.
pub const QUEUE_FULL: &str = "queue_full";
/// `error.type` of points still queued (or in flight) when a shutdown gave up.
pub const SHUTDOWN: &str = "shutdown";

/// What the queue holds: something with a number of data points.
pub(crate) trait Item: Send + Sync + 'static {
    fn points(&self) -> u64;
}

impl Item for MetricBatch {
    fn points(&self) -> u64 {
        self.points.len() as u64
    }
}

/// How an item is written to and read from the queue directory.
pub(crate) trait Codec<T>: Send + Sync + 'static {
    fn encode(&self, item: &T) -> Vec<u8>;
    fn decode(&self, bytes: &[u8]) -> Result<T, String>;
}

/// The directory behind a persistent queue.
pub(crate) struct Persistence<T> {
    pub(crate) store: DiskStore,
    pub(crate) codec: Box<dyn Codec<T>>,
    /// Size cap of the directory, bytes.
    pub(crate) max_bytes: u64,
}

/// A queued item; `disk` is its record size when it is on disk.
pub(crate) struct Entry<T> {
    pub(crate) seq: u64,
    pub(crate) item: Arc<T>,
    disk: u64,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            seq: self.seq,
            item: self.item.clone(),
            disk: self.disk,
        }
    }
}

struct State<T> {
    items: VecDeque<Entry<T>>,
    /// Points and record size of the entry the task is working on.
    inflight: Option<(u64, u64)>,
    closed: bool,
    next_seq: u64,
    disk_bytes: u64,
}

pub(crate) struct Queue<T> {
    component: Component,
    capacity: usize,
    telemetry: Telemetry,
    state: Mutex<State<T>>,
    ready: Notify,
    persist: Option<Persistence<T>>,
}

impl<T: Item> Queue<T> {
    /// A queue; with `persist`, the batches a previous run left in the
    /// directory come first (damaged records are reported and skipped).
    pub(crate) fn new(
        component: Component,
        capacity: usize,
        telemetry: Telemetry,
        persist: Option<Persistence<T>>,
    ) -> Self {
        let capacity = capacity.max(1);
        telemetry.emit(ExporterQueueCapacity {
            exporter: &component,
            capacity,
        });
        let q = Self {
            component,
            capacity,
            telemetry,
            state: Mutex::new(State {
                items: VecDeque::new(),
                inflight: None,
                closed: false,
                next_seq: 1,
                disk_bytes: 0,
            }),
            ready: Notify::new(),
            persist,
        };
        q.load();
        q
    }

    fn load(&self) {
        let Some(p) = &self.persist else {
            self.set_size(0);
            return;
        };
        let (records, damaged) = match p.store.load() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(exporter = %self.component, "persistent queue not readable, starting empty: {e}");
                (Vec::new(), Vec::new())
            }
        };
        for d in damaged {
            tracing::warn!(
                exporter = %self.component,
                file = %d.path.display(),
                "skipping a damaged persistent-queue record: {}", d.reason
            );
        }
        let mut st = self.lock();
        for (seq, payload, disk) in records {
            st.next_seq = st.next_seq.max(seq + 1);
            match p.codec.decode(&payload) {
                Ok(item) => {
                    st.items.push_back(Entry {
                        seq,
                        item: Arc::new(item),
                        disk,
                    });
                    st.disk_bytes += disk;
                }
                Err(reason) => {
                    let _ = p.store.remove(seq);
                    tracing::warn!(exporter = %self.component, seq, "skipping an undecodable persistent-queue record: {reason}");
                }
            }
        }
        if !st.items.is_empty() {
            tracing::info!(exporter = %self.component, batches = st.items.len(), "resuming batches from the persistent queue");
        }
        while st.items.len() > self.capacity {
            self.drop_oldest(&mut st);
        }
        self.set_size(st.items.len());
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every update under this lock is a single push/pop/assignment, so a
        // panic elsewhere cannot leave it half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn component(&self) -> &Component {
        &self.component
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    fn set_size(&self, len: usize) {
        self.telemetry.emit(ExporterQueue {
            exporter: &self.component,
            size: len,
        });
    }

    fn drop_oldest(&self, st: &mut State<T>) {
        let Some(old) = st.items.pop_front() else {
            return;
        };
        self.forget(st, old.seq, old.disk);
        let n = old.item.points();
        self.telemetry.emit(ExporterFailed {
            exporter: &self.component,
            error_type: QUEUE_FULL,
            count: n,
        });
        tracing::warn!(exporter = %self.component, points = n, "exporter queue full; dropped the oldest batch");
    }

    fn forget(&self, st: &mut State<T>, seq: u64, disk: u64) {
        if disk == 0 {
            return;
        }
        st.disk_bytes = st.disk_bytes.saturating_sub(disk);
        if let Some(p) = &self.persist
            && let Err(e) = p.store.remove(seq)
        {
            tracing::warn!(exporter = %self.component, seq, "removing a persistent-queue record: {e}");
        }
    }

    /// Queues `item`, dropping (and counting) the oldest when full. With a
    /// directory the item is on disk when this returns (if the write fails
    /// it is kept in memory and a warning says so). After [`Queue::close`]
    /// the item itself is counted as failed.
    pub(crate) fn push(&self, item: Arc<T>) {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.telemetry.emit(ExporterFailed {
                exporter: &self.component,
                error_type: SHUTDOWN,
                count: item.points(),
            });
            return;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let mut disk = 0;
        if let Some(p) = &self.persist {
            let payload = p.codec.encode(&item);
            let size = payload.len() as u64 + 12;
            while st.items.len() >= self.capacity
                || (!st.items.is_empty() && st.disk_bytes + size > p.max_bytes)
            {
                self.drop_oldest(&mut st);
            }
            match p.store.write(seq, &payload) {
                Ok(n) => {
                    disk = n;
                    st.disk_bytes += n;
                }
                Err(e) => tracing::warn!(
                    exporter = %self.component,
                    "could not write a batch to the persistent queue, keeping it in memory only: {e}"
                ),
            }
        } else if st.items.len() >= self.capacity {
            self.drop_oldest(&mut st);
        }
        st.items.push_back(Entry { seq, item, disk });
        self.set_size(st.items.len());
        drop(st);
        self.ready.notify_one();
    }

    /// The next entry, marked in flight; `None` once closed and empty.
    pub(crate) async fn pop(&self) -> Option<Entry<T>> {
        loop {
            {
                let mut st = self.lock();
                if let Some(e) = st.items.pop_front() {
                    st.inflight = Some((e.item.points(), e.disk));
                    self.set_size(st.items.len());
                    return Some(e);
                }
                if st.closed {
                    return None;
                }
            }
            // notify_one keeps a permit when nobody waits, so a push between
            // the check above and this await is not missed.
            self.ready.notified().await;
        }
    }

    /// Ends the in-flight entry: runs `account` (which records its outcome)
    /// and deletes its record; all under one lock with no
    /// await between, so an abort can never count it twice or not at all.
    pub(crate) fn finish(&self, entry: &Entry<T>, account: impl FnOnce()) {
        let mut st = self.lock();
        account();
        self.forget(&mut st, entry.seq, entry.disk);
        st.inflight = None;
    }

    /// Batches waiting (not counting the one in flight).
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Stops accepting batches; the task drains what is queued.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The task was aborted: counts what is queued or in flight as failed,
    /// except batches on disk, which stay for the next start. Returns
    /// (points counted, batches kept on disk).
    pub(crate) fn abandon(&self) -> (u64, usize) {
        let mut st = self.lock();
        let mut n = 0;
        let mut kept = 0;
        if let Some((points, disk)) = st.inflight.take() {
            if disk > 0 {
                kept += 1;
            } else {
                n += points;
            }
        }
        for e in std::mem::take(&mut st.items) {
            if e.disk > 0 {
                kept += 1;
            } else {
                n += e.item.points();
            }
        }
        self.telemetry.emit(ExporterFailed {
            exporter: &self.component,
            error_type: SHUTDOWN,
            count: n,
        });
        self.set_size(0);
        (n, kept)
    }
}
