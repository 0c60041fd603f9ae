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
//!
//! The queue's lock is held only for updates of its state, never across
//! encoding or disk I/O: a push encodes first, then takes a sequence number
//! and a place at the back (dropping the oldest if full, reserving the
//! record's size against the cap), then writes and fsyncs with no lock
//! held, and marks the entry written. A slow disk therefore never holds up
//! the exporter task's [`Queue::pop`] of an earlier batch, or another push.
//! Order is kept: `pop` hands out the front only once it is written, so
//! batches leave in sequence order even when a later write finishes first.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use flowscope_model::internal_events::{ExporterFailed, ExporterQueue, ExporterQueueCapacity};
use flowscope_model::telemetry::Component;
use flowscope_model::{MetricBatch, Telemetry};
use tokio::sync::Notify;

use crate::persist::{Store, record_size};

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
    pub(crate) store: Box<dyn Store>,
    pub(crate) codec: Box<dyn Codec<T>>,
    /// Size cap of the directory, bytes.
    pub(crate) max_bytes: u64,
}

/// A queued item; `disk` is its record size when it is on disk (or, while
/// it is being written, the size reserved for it).
pub(crate) struct Entry<T> {
    pub(crate) seq: u64,
    pub(crate) item: Arc<T>,
    disk: u64,
    /// False while its record is being written: not handed out yet.
    written: bool,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            seq: self.seq,
            item: self.item.clone(),
            disk: self.disk,
            written: self.written,
        }
    }
}

struct State<T> {
    items: VecDeque<Entry<T>>,
    /// Points and record size of the entry the task is working on.
    inflight: Option<(u64, u64)>,
    closed: bool,
    next_seq: u64,
    /// Bytes of the records on disk and of those being written.
    disk_bytes: u64,
    /// Entries dropped (and counted) while their record was being written:
    /// the writer deletes the record when its write ends.
    dropped_writing: HashSet<u64>,
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
                dropped_writing: HashSet::new(),
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
                        written: true,
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
        let mut gone = Vec::new();
        while st.items.len() > self.capacity {
            self.drop_oldest(&mut st, &mut gone);
        }
        self.set_size(st.items.len());
        drop(st);
        self.remove_records(&gone);
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

    /// Drops the oldest entry and counts its points; its record, if any,
    /// is added to `gone`, for [`Queue::remove_records`] once the lock is
    /// released (or, while still being written, left to its writer).
    fn drop_oldest(&self, st: &mut State<T>, gone: &mut Vec<u64>) {
        let Some(old) = st.items.pop_front() else {
            return;
        };
        if old.written {
            Self::forget(st, old.seq, old.disk, gone);
        } else {
            st.disk_bytes = st.disk_bytes.saturating_sub(old.disk);
            st.dropped_writing.insert(old.seq);
        }
        let n = old.item.points();
        self.telemetry.emit(ExporterFailed {
            exporter: &self.component,
            error_type: QUEUE_FULL,
            count: n,
        });
        tracing::warn!(exporter = %self.component, points = n, "exporter queue full; dropped the oldest batch");
    }

    /// Takes a written record off the books; `gone` collects it for
    /// deletion outside the lock.
    fn forget(st: &mut State<T>, seq: u64, disk: u64, gone: &mut Vec<u64>) {
        if disk == 0 {
            return;
        }
        st.disk_bytes = st.disk_bytes.saturating_sub(disk);
        gone.push(seq);
    }

    /// Deletes the records of entries already taken off the books. Called
    /// without the lock: an unlink can wait on the disk too, and no other
    /// entry refers to these sequence numbers any more.
    fn remove_records(&self, seqs: &[u64]) {
        let Some(p) = &self.persist else {
            return;
        };
        for &seq in seqs {
            if let Err(e) = p.store.remove(seq) {
                tracing::warn!(exporter = %self.component, seq, "removing a persistent-queue record: {e}");
            }
        }
    }

    /// Queues `item`, dropping (and counting) the oldest when full. With a
    /// directory the item is on disk when this returns (if the write fails
    /// it is kept in memory and a warning says so). After [`Queue::close`]
    /// the item itself is counted as failed.
    ///
    /// The lock is held only to take a sequence number and a place (and
    /// to mark the entry written after), never across the encoding or the
    /// write and its fsyncs; see the module documentation.
    pub(crate) fn push(&self, item: Arc<T>) {
        let Some(p) = &self.persist else {
            self.push_in_memory(item);
            return;
        };
        if self.lock().closed {
            self.refuse(&item);
            return;
        }
        let payload = p.codec.encode(&item);
        let size = record_size(payload.len());
        let mut gone = Vec::new();
        let seq = {
            let mut st = self.lock();
            // Closed while this push encoded.
            if st.closed {
                drop(st);
                self.refuse(&item);
                return;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            while st.items.len() >= self.capacity
                || (!st.items.is_empty() && st.disk_bytes + size > p.max_bytes)
            {
                self.drop_oldest(&mut st, &mut gone);
            }
            // Reserved now, so that pushes writing at the same time stay
            // within the cap together.
            st.disk_bytes += size;
            st.items.push_back(Entry {
                seq,
                item,
                disk: size,
                written: false,
            });
            self.set_size(st.items.len());
            seq
        };
        self.remove_records(&gone);
        let wrote = p.store.write(seq, &payload);
        let mut st = self.lock();
        if st.dropped_writing.remove(&seq) {
            // Dropped and counted while it was being written: the record
            // must not outlive its entry (a restart would send it again).
            drop(st);
            if wrote.is_ok() {
                self.remove_records(&[seq]);
            }
            return;
        }
        // Entries are in sequence order; not found means a shutdown
        // abandoned it while it was written, and its record stays for the
        // next start, as abandon() counted it.
        let Ok(at) = st.items.binary_search_by_key(&seq, |e| e.seq) else {
            return;
        };
        let disk = match wrote {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    exporter = %self.component,
                    "could not write a batch to the persistent queue, keeping it in memory only: {e}"
                );
                0
            }
        };
        st.disk_bytes = st.disk_bytes.saturating_sub(size) + disk;
        let e = &mut st.items[at];
        e.disk = disk;
        e.written = true;
        drop(st);
        self.ready.notify_one();
    }

    /// [`Queue::push`] without a directory: one update under the lock.
    fn push_in_memory(&self, item: Arc<T>) {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.refuse(&item);
            return;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        if st.items.len() >= self.capacity {
            // In memory: nothing on disk to remove.
            self.drop_oldest(&mut st, &mut Vec::new());
        }
        st.items.push_back(Entry {
            seq,
            item,
            disk: 0,
            written: true,
        });
        self.set_size(st.items.len());
        drop(st);
        self.ready.notify_one();
    }

    /// Counts an item pushed after [`Queue::close`].
    fn refuse(&self, item: &T) {
        self.telemetry.emit(ExporterFailed {
            exporter: &self.component,
            error_type: SHUTDOWN,
            count: item.points(),
        });
    }

    /// The next entry, marked in flight; `None` once closed and empty. An
    /// entry whose record is still being written is waited for: later ones
    /// never overtake it.
    pub(crate) async fn pop(&self) -> Option<Entry<T>> {
        loop {
            {
                let mut st = self.lock();
                match st.items.front() {
                    Some(e) if e.written => {
                        let e = st.items.pop_front().expect("front exists");
                        st.inflight = Some((e.item.points(), e.disk));
                        self.set_size(st.items.len());
                        return Some(e);
                    }
                    // Its writer notifies when done.
                    Some(_) => {}
                    None if st.closed => return None,
                    None => {}
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
    /// The record itself is deleted after the lock is released.
    pub(crate) fn finish(&self, entry: &Entry<T>, account: impl FnOnce()) {
        let mut gone = Vec::new();
        let mut st = self.lock();
        account();
        Self::forget(&mut st, entry.seq, entry.disk, &mut gone);
        st.inflight = None;
        drop(st);
        self.remove_records(&gone);
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
    /// except batches on disk, which stay for the next start (a batch still
    /// being written counts as on disk: its writer leaves the record). Returns
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::{Damaged, DiskStore, Record, StoreError};
    use flowscope_model::Attrs;
    use flowscope_model::names::attr;
    use flowscope_model::telemetry::EXPORTER_FAILED;
    use std::sync::Barrier;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    /// A queued number; one point each.
    struct Num(u64);

    impl Item for Num {
        fn points(&self) -> u64 {
            1
        }
    }

    struct NumCodec;

    impl Codec<Num> for NumCodec {
        fn encode(&self, item: &Num) -> Vec<u8> {
            item.0.to_le_bytes().to_vec()
        }
        fn decode(&self, bytes: &[u8]) -> Result<Num, String> {
            let b = <[u8; 8]>::try_from(bytes).map_err(|_| "not 8 bytes".to_string())?;
            Ok(Num(u64::from_le_bytes(b)))
        }
    }

    /// The real directory, whose write of record `stall` meets `barrier`
    /// twice: once on entering (the test knows the write has begun) and
    /// once before writing (the test lets it go on).
    struct Stalling {
        disk: DiskStore,
        stall: u64,
        barrier: Arc<Barrier>,
    }

    impl Store for Stalling {
        fn write(&self, seq: u64, payload: &[u8]) -> std::io::Result<u64> {
            if seq == self.stall {
                self.barrier.wait();
                self.barrier.wait();
            }
            self.disk.write(seq, payload)
        }
        fn remove(&self, seq: u64) -> std::io::Result<()> {
            self.disk.remove(seq)
        }
        fn load(&self) -> Result<(Vec<Record>, Vec<Damaged>), StoreError> {
            self.disk.load()
        }
    }

    fn queue(
        dir: &std::path::Path,
        capacity: usize,
        stall: u64,
    ) -> (Arc<Queue<Num>>, Arc<Barrier>, Telemetry) {
        let barrier = Arc::new(Barrier::new(2));
        let t = Telemetry::new();
        let store = Stalling {
            disk: DiskStore::open(dir).unwrap(),
            stall,
            barrier: barrier.clone(),
        };
        let q = Queue::new(
            Component::new("flowscope_exporters::queue::tests", "test"),
            capacity,
            t.clone(),
            Some(Persistence {
                store: Box::new(store),
                codec: Box::new(NumCodec),
                max_bytes: 1 << 20,
            }),
        );
        (Arc::new(q), barrier, t)
    }

    fn pop_now(q: &Queue<Num>) -> Option<Entry<Num>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // Polled once: Some only if an entry can be handed out at once.
        rt.block_on(async { tokio::time::timeout(Duration::ZERO, q.pop()).await })
            .ok()
            .flatten()
    }

    fn records(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "rec")
            })
            .count()
    }

    #[test]
    fn a_stalled_write_blocks_neither_pop_nor_other_pushes() {
        let dir = tempfile::tempdir().unwrap();
        let (q, barrier, _) = queue(dir.path(), 10, 2);
        q.push(Arc::new(Num(1)));
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || q.push(Arc::new(Num(2))))
        };
        // Record 2 is being written (and stays so until the second wait).
        barrier.wait();
        let (tx, rx) = channel();
        let other = {
            let q = q.clone();
            std::thread::spawn(move || {
                let first = pop_now(&q);
                q.push(Arc::new(Num(3)));
                // The front is record 2, still being written: nothing yet.
                let overtaken = pop_now(&q).map(|e| e.seq);
                let _ = tx.send((first, overtaken));
            })
        };
        // A bound, not a sleep: with the lock held across the write this
        // never arrives.
        let got = rx.recv_timeout(Duration::from_secs(10));
        barrier.wait();
        writer.join().unwrap();
        other.join().unwrap();
        let (first, overtaken) = got.expect("pop and push waited for another push's write");
        let first = first.expect("record 1 was ready");
        assert_eq!(((first.seq, first.item.0), overtaken), ((1, 1), None));
        // Every record on disk is accounted for, the one in flight too.
        assert_eq!(
            (q.lock().disk_bytes, records(dir.path())),
            (3 * record_size(8), 3)
        );
        q.finish(&first, || {});
        // Sequence order kept.
        let e = pop_now(&q).unwrap();
        assert_eq!((e.seq, e.item.0), (2, 2));
        q.finish(&e, || {});
        let e = pop_now(&q).unwrap();
        assert_eq!((e.seq, e.item.0), (3, 3));
        q.finish(&e, || {});
        assert_eq!((q.lock().disk_bytes, records(dir.path())), (0, 0));
    }

    #[test]
    fn dropped_while_written_is_counted_once_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let (q, barrier, t) = queue(dir.path(), 1, 1);
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || q.push(Arc::new(Num(1))))
        };
        barrier.wait();
        // Capacity 1: record 1, still being written, is the oldest.
        q.push(Arc::new(Num(2)));
        barrier.wait();
        writer.join().unwrap();
        let full = Attrs::new().with(attr::ERROR_TYPE, QUEUE_FULL);
        assert_eq!(t.total_matching(EXPORTER_FAILED, &full), 1);
        assert_eq!(
            (q.len(), q.lock().disk_bytes, records(dir.path())),
            (1, record_size(8), 1)
        );
        let e = pop_now(&q).unwrap();
        assert_eq!((e.seq, e.item.0), (2, 2));
    }
}
