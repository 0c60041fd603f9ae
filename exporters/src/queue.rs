//! The bounded in-memory queue between the pipeline and one exporter task.
//!
//! [`Queue::push`] never waits: when the queue holds `capacity` batches the
//! oldest is dropped and its points are counted as
//! `flowscope.exporter.failed{error.type="queue_full"}`, so a slow backend
//! never holds up the receiver and the newest data wins. The exporter task
//! takes batches with [`Queue::pop`]. The batch being exported is tracked as
//! "in flight" so that a shutdown that has to abandon it can count it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use flowscope_model::names::attr;
use flowscope_model::telemetry::{EXPORTER_QUEUE_CAPACITY, EXPORTER_QUEUE_SIZE};
use flowscope_model::{Attrs, MetricBatch, Telemetry};
use tokio::sync::Notify;

/// `error.type` of points dropped because the queue was full.
pub const QUEUE_FULL: &str = "queue_full";
/// `error.type` of points still queued (or in flight) when a shutdown gave up.
pub const SHUTDOWN: &str = "shutdown";

struct State {
    items: VecDeque<Arc<MetricBatch>>,
    /// Points of the batch the exporter task is working on.
    inflight: u64,
    closed: bool,
}

pub(crate) struct Queue {
    name: String,
    capacity: usize,
    telemetry: Telemetry,
    state: Mutex<State>,
    ready: Notify,
    closing: Notify,
}

impl Queue {
    pub(crate) fn new(name: String, capacity: usize, telemetry: Telemetry) -> Self {
        let capacity = capacity.max(1);
        let attrs = Attrs::new().with(attr::EXPORTER, name.as_str());
        telemetry.set_gauge(EXPORTER_QUEUE_CAPACITY, attrs.clone(), capacity as i64);
        telemetry.set_gauge(EXPORTER_QUEUE_SIZE, attrs, 0);
        Self {
            name,
            capacity,
            telemetry,
            state: Mutex::new(State {
                items: VecDeque::new(),
                inflight: 0,
                closed: false,
            }),
            ready: Notify::new(),
            closing: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a single push/pop/assignment, so a
        // panic elsewhere cannot leave it half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    fn set_size(&self, len: usize) {
        self.telemetry.set_gauge(
            EXPORTER_QUEUE_SIZE,
            Attrs::new().with(attr::EXPORTER, self.name.as_str()),
            len as i64,
        );
    }

    /// Queues `batch`, dropping (and counting) the oldest when full. After
    /// [`Queue::close`] the batch itself is counted as failed.
    pub(crate) fn push(&self, batch: Arc<MetricBatch>) {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.telemetry
                .exporter_failed(&self.name, SHUTDOWN, batch.points.len() as u64);
            return;
        }
        if st.items.len() >= self.capacity
            && let Some(old) = st.items.pop_front()
        {
            self.telemetry
                .exporter_failed(&self.name, QUEUE_FULL, old.points.len() as u64);
            tracing::warn!(
                exporter = %self.name,
                points = old.points.len(),
                "exporter queue full; dropped the oldest batch"
            );
        }
        st.items.push_back(batch);
        self.set_size(st.items.len());
        drop(st);
        self.ready.notify_one();
    }

    /// The next batch, marked in flight; `None` once closed and empty.
    pub(crate) async fn pop(&self) -> Option<Arc<MetricBatch>> {
        loop {
            {
                let mut st = self.lock();
                if let Some(b) = st.items.pop_front() {
                    st.inflight = b.points.len() as u64;
                    self.set_size(st.items.len());
                    return Some(b);
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

    /// Runs `account` (which records the in-flight batch's outcome) and
    /// clears the in-flight mark under one lock, with no await between, so
    /// an abort can never count the batch twice or not at all.
    pub(crate) fn finish(&self, account: impl FnOnce()) {
        let mut st = self.lock();
        account();
        st.inflight = 0;
    }

    /// Stops accepting batches; the task drains what is queued.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.closing.notify_waiters();
    }

    #[allow(dead_code)] // for the network sinks' retry waits
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Resolves once [`Queue::close`] was called (for sinks that wait between
    /// retries and should give up early on shutdown).
    #[allow(dead_code)] // for the network sinks' retry waits
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Counts everything queued or in flight as failed (the task was
    /// aborted); returns the number of points.
    pub(crate) fn abandon(&self) -> u64 {
        let mut st = self.lock();
        let mut n = st.inflight;
        st.inflight = 0;
        for b in st.items.drain(..) {
            n += b.points.len() as u64;
        }
        self.telemetry.exporter_failed(&self.name, SHUTDOWN, n);
        self.set_size(0);
        n
    }
}
