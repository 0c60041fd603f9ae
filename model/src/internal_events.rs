//! Typed internal events: every thing the agent counts about itself is one
//! struct here, built by the component where it happens and handed to
//! [`Telemetry::emit`]. The event logs (at the level its meaning deserves)
//! and records on its SDK instrument, with the metric and attribute names
//! of the contract (`crate::names`). Components never write a metric name,
//! an attribute key or a reason string themselves: the enums below are the
//! complete lists, so a typo is a compile error and a new reason is one
//! variant.
//!
//! Zero counts record nothing (so an idle interval exports no zero points).

use opentelemetry::KeyValue;

use crate::names::{self, attr};
use crate::telemetry::{Component, Telemetry};

/// One event the agent counts about itself.
pub trait InternalEvent {
    /// Logs and counts the event on `telemetry`'s instruments.
    fn emit(self, telemetry: &Telemetry);
}

/// Where events come from (`source` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The eBPF receiver's kernel side as a whole.
    Ebpf,
    /// TCP tracepoints, the connection table's TCP side.
    EbpfTcp,
    /// The cgroup_skb UDP programs, the connection table's UDP side.
    EbpfUdp,
    /// The drop program on `skb:kfree_skb` (its map, its header reads).
    EbpfDrops,
    /// The DNS receiver (captured packets).
    Dns,
    /// The agent's own pipeline (fan-out, self-telemetry).
    Pipeline,
    /// The conntrack service behind NAT resolution (netlink events, dumps).
    Conntrack,
    /// The Network Path receiver's dynamic tests (their limits).
    PathDynamic,
    /// The `kubernetes` processor's kubelet client (`/pods` refreshes).
    KubernetesKubelet,
    /// The `kubernetes` processor's API server client (list and watch).
    KubernetesApi,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Ebpf => "ebpf",
            Source::EbpfTcp => "ebpf.tcp",
            Source::EbpfUdp => "ebpf.udp",
            Source::EbpfDrops => "ebpf.drops",
            Source::Dns => "dns",
            Source::Pipeline => "pipeline",
            Source::Conntrack => "conntrack",
            Source::PathDynamic => "path.dynamic",
            Source::KubernetesKubelet => "kubernetes.kubelet",
            Source::KubernetesApi => "kubernetes.api",
        }
    }
}

/// Why events were lost (`reason` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// The kernel's ring buffer had no room for a record.
    RingbufFull,
    /// A kernel map was full.
    MapFull,
    /// Reading an entry of a kernel map failed.
    MapReadError,
    /// The kernel side failed to read socket or task memory, or user
    /// space failed to read the kernel's open sockets (a namespace's
    /// `iter/tcp` read).
    ReadError,
    /// A record or packet could not be parsed.
    ParseError,
    /// A user-space table reached its configured bound.
    TableFull,
    /// A DNS-over-TCP stream skipped bytes (a segment was never seen).
    TcpGap,
    /// A DNS response that matched no outstanding query.
    UnmatchedResponse,
    /// The kernel dropped packets because a capture socket's buffer was full.
    SocketFull,
    /// The next stage had stopped (shutting down, or its task died).
    PipelineClosed,
    /// A connection to a NAT-translated address (a Service IP) whose own
    /// conntrack entry was not found: reported with the address it used.
    NatUnresolved,
    /// A per-minute budget (new dynamic path tests) was spent.
    RateLimited,
    /// Every worker (path test runner) was busy.
    WorkersBusy,
    /// A bounded hand-over queue (flow receiver -> path receiver) was full.
    QueueFull,
    /// The network namespace to work in no longer exists.
    NetnsGone,
    /// A server could not be reached (connect or TLS failed): the answer
    /// it would have given is lost.
    Unreachable,
    /// A server did not answer within the configured timeout.
    Timeout,
    /// A server answered with an HTTP error status.
    HttpError,
    /// The heap was above the `memory_limiter`'s soft limit: a new flow
    /// was not tracked.
    MemoryLimit,
    /// A DNS lookup whose local process could not be found: reported with
    /// `service.name=unknown_service`.
    OwnerUnknown,
    /// The previous agent stopped (killed) before it delivered these
    /// events; counted by the agent started after it, from the kernel
    /// counters pinned in the `ebpf` receiver's `pin_directory`.
    AgentRestart,
}

impl LossReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            LossReason::RingbufFull => "ringbuf_full",
            LossReason::MapFull => "map_full",
            LossReason::MapReadError => "map_read_error",
            LossReason::ReadError => "read_error",
            LossReason::ParseError => "parse_error",
            LossReason::TableFull => "table_full",
            LossReason::TcpGap => "tcp_gap",
            LossReason::UnmatchedResponse => "unmatched_response",
            LossReason::SocketFull => "socket_full",
            LossReason::PipelineClosed => "pipeline_closed",
            LossReason::NatUnresolved => names::nat::REASON_NAT_UNRESOLVED,
            LossReason::RateLimited => "rate_limited",
            LossReason::WorkersBusy => "workers_busy",
            LossReason::QueueFull => "queue_full",
            LossReason::NetnsGone => "netns_gone",
            LossReason::Unreachable => "unreachable",
            LossReason::Timeout => "timeout",
            LossReason::OwnerUnknown => names::dns::REASON_OWNER_UNKNOWN,
            LossReason::HttpError => "http_error",
            LossReason::MemoryLimit => names::memory::REASON_MEMORY_LIMIT,
            LossReason::AgentRestart => "agent_restart",
        }
    }
}

/// `count` events were received from `source` (`flowscope.events.received`).
#[derive(Clone, Copy, Debug)]
pub struct EventsReceived {
    pub source: Source,
    pub count: u64,
}

impl InternalEvent for EventsReceived {
    fn emit(self, t: &Telemetry) {
        if self.count == 0 {
            return;
        }
        tracing::trace!(
            source = self.source.as_str(),
            count = self.count,
            "events received"
        );
        t.instruments().events_received.add(
            self.count,
            &[KeyValue::new(attr::SOURCE, self.source.as_str())],
        );
    }
}

/// `count` events from `source` were lost for `reason`
/// (`flowscope.events.lost`).
#[derive(Clone, Copy, Debug)]
pub struct EventsLost {
    pub source: Source,
    pub reason: LossReason,
    pub count: u64,
}

impl EventsLost {
    pub const fn new(source: Source, reason: LossReason, count: u64) -> Self {
        Self {
            source,
            reason,
            count,
        }
    }
}

impl InternalEvent for EventsLost {
    fn emit(self, t: &Telemetry) {
        if self.count == 0 {
            return;
        }
        match self.reason {
            // A stage died or stopped early: rare, and worth a line.
            LossReason::PipelineClosed => tracing::warn!(
                source = self.source.as_str(),
                reason = self.reason.as_str(),
                count = self.count,
                "events lost"
            ),
            // Everything else can happen per record under load: the count
            // is the signal, the log is for debugging.
            _ => tracing::debug!(
                source = self.source.as_str(),
                reason = self.reason.as_str(),
                count = self.count,
                "events lost"
            ),
        }
        t.instruments().events_lost.add(
            self.count,
            &[
                KeyValue::new(attr::SOURCE, self.source.as_str()),
                KeyValue::new(attr::REASON, self.reason.as_str()),
            ],
        );
    }
}

/// The connection table tracks `count` flows now (`flowscope.flows.tracked`).
#[derive(Clone, Copy, Debug)]
pub struct FlowsTracked {
    pub count: usize,
}

impl InternalEvent for FlowsTracked {
    fn emit(self, t: &Telemetry) {
        t.instruments().flows_tracked.set("", self.count, &[]);
    }
}

/// A cardinality limit merged `count` points of `metric` into its overflow
/// series (`flowscope.flows.overflow`).
#[derive(Clone, Copy, Debug)]
pub struct FlowsOverflow {
    pub metric: &'static str,
    pub count: u64,
}

impl InternalEvent for FlowsOverflow {
    fn emit(self, t: &Telemetry) {
        if self.count == 0 {
            return;
        }
        tracing::debug!(
            metric = self.metric,
            points = self.count,
            "cardinality limit reached; merged into overflow point"
        );
        t.instruments()
            .flows_overflow
            .add(self.count, &[KeyValue::new(attr::METRIC, self.metric)]);
    }
}

/// Exporter `exporter` delivered `count` points (`flowscope.exporter.sent`).
#[derive(Clone, Copy, Debug)]
pub struct ExporterSent<'a> {
    pub exporter: &'a Component,
    pub count: u64,
}

impl InternalEvent for ExporterSent<'_> {
    fn emit(self, t: &Telemetry) {
        if self.count == 0 {
            return;
        }
        tracing::trace!(
            exporter = self.exporter.id(),
            points = self.count,
            "exported"
        );
        t.instruments()
            .exporter_sent
            .add(self.count, self.exporter.key_values());
    }
}

/// Exporter `exporter` failed to deliver `count` points with `error_type`
/// (`flowscope.exporter.failed`). The error types are the exporter's own
/// (a gRPC code, an HTTP status class, `queue_full`, `shutdown`, ...); the
/// exporter logs the failure itself with its details.
#[derive(Clone, Copy, Debug)]
pub struct ExporterFailed<'a> {
    pub exporter: &'a Component,
    pub error_type: &'a str,
    pub count: u64,
}

impl InternalEvent for ExporterFailed<'_> {
    fn emit(self, t: &Telemetry) {
        if self.count == 0 {
            return;
        }
        tracing::debug!(
            exporter = self.exporter.id(),
            error_type = self.error_type,
            points = self.count,
            "export failed"
        );
        let kvs = self.exporter.key_values();
        t.instruments().exporter_failed.add(
            self.count,
            &[
                kvs[0].clone(),
                kvs[1].clone(),
                KeyValue::new(attr::ERROR_TYPE, self.error_type.to_owned()),
            ],
        );
    }
}

/// Exporter `exporter` sent `count` requests again after a retryable
/// error of type `error_type` (`flowscope.exporter.retries`).
#[derive(Clone, Copy, Debug)]
pub struct ExporterRetried<'a> {
    pub exporter: &'a Component,
    pub error_type: &'a str,
    pub count: u64,
}

impl InternalEvent for ExporterRetried<'_> {
    fn emit(self, t: &Telemetry) {
        if self.count == 0 {
            return;
        }
        let kvs = self.exporter.key_values();
        t.instruments().exporter_retries.add(
            self.count,
            &[
                kvs[0].clone(),
                kvs[1].clone(),
                KeyValue::new(attr::ERROR_TYPE, self.error_type.to_owned()),
            ],
        );
    }
}

/// Exporter `exporter`'s queue holds `size` batches
/// (`flowscope.exporter.queue.size`).
#[derive(Clone, Copy, Debug)]
pub struct ExporterQueue<'a> {
    pub exporter: &'a Component,
    pub size: usize,
}

impl InternalEvent for ExporterQueue<'_> {
    fn emit(self, t: &Telemetry) {
        t.instruments().exporter_queue_size.set(
            self.exporter.id(),
            self.size,
            self.exporter.key_values(),
        );
    }
}

/// Exporter `exporter`'s queue holds at most `capacity` batches
/// (`flowscope.exporter.queue.capacity`).
#[derive(Clone, Copy, Debug)]
pub struct ExporterQueueCapacity<'a> {
    pub exporter: &'a Component,
    pub capacity: usize,
}

impl InternalEvent for ExporterQueueCapacity<'_> {
    fn emit(self, t: &Telemetry) {
        t.instruments().exporter_queue_capacity.set(
            self.exporter.id(),
            self.capacity,
            self.exporter.key_values(),
        );
    }
}

/// Which of the agent's HTTP servers refused (`flowscope.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// The `ui` exporter's pages and API (or `flowscope ui`).
    Ui,
    /// A `prometheus` exporter's `/metrics`.
    Prometheus,
    /// `--healthz`.
    Healthz,
}

impl ServerKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ServerKind::Ui => "ui",
            ServerKind::Prometheus => "prometheus",
            ServerKind::Healthz => "healthz",
        }
    }
}

/// Why a server refused (`flowscope.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// The `Host` header named no address of this server (DNS rebinding).
    Host,
    /// The `Origin` header named another site.
    Origin,
    /// No or a wrong token.
    Token,
    /// The connection cap was reached (answered 503).
    Connections,
    /// A client took too long to send a request's head, or sat idle.
    Timeout,
    /// The query concurrency cap was reached (answered 503).
    Busy,
    /// A query would have read more than the configured budget (413).
    TooLarge,
    /// A TLS handshake failed (a plain-HTTP request to an HTTPS port, an
    /// untrusted client, a protocol error).
    Tls,
}

impl RefuseReason {
    /// Every reason.
    pub const ALL: [RefuseReason; 8] = [
        RefuseReason::Host,
        RefuseReason::Origin,
        RefuseReason::Token,
        RefuseReason::Connections,
        RefuseReason::Timeout,
        RefuseReason::Busy,
        RefuseReason::TooLarge,
        RefuseReason::Tls,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Host => "forbidden_host",
            RefuseReason::Origin => "forbidden_origin",
            RefuseReason::Token => "unauthorized",
            RefuseReason::Connections => "connection_limit",
            RefuseReason::Timeout => "timeout",
            RefuseReason::Busy => "busy",
            RefuseReason::TooLarge => "too_large",
            RefuseReason::Tls => "tls_handshake",
        }
    }
}

/// `server` refused `count` requests or connections for `reason`
/// (`flowscope.server.refused`).
#[derive(Clone, Copy, Debug)]
pub struct ServerRefused {
    pub server: ServerKind,
    pub reason: RefuseReason,
    pub count: u64,
}

impl InternalEvent for ServerRefused {
    fn emit(self, t: &Telemetry) {
        if self.count == 0 {
            return;
        }
        tracing::debug!(
            server = self.server.as_str(),
            reason = self.reason.as_str(),
            "request refused"
        );
        t.instruments().server_refused.add(
            self.count,
            &[
                KeyValue::new(attr::SOURCE, self.server.as_str()),
                KeyValue::new(attr::REASON, self.reason.as_str()),
            ],
        );
    }
}
