//! Every metric name, unit, description and attribute key of the telemetry
//! contract (`docs/telemetry.md`, v2, copied from the shared spec). Code
//! names these constants, never string literals, so a rename is one edit
//! here plus the docs and the tests that assert on the emitted names.
//!
//! The naming rule: a name the OpenTelemetry semantic conventions define is
//! used exactly as defined (and taken from the
//! `opentelemetry-semantic-conventions` crate where it has it, so a typo
//! cannot compile); everything else lives under `flowscope.`. The one
//! exception is `network.flow.io`, the name of the open network flow
//! metrics proposal (semantic-conventions PR 3828). The registry test
//! (`tests/semconv_registry.rs`) holds every key below against the vendored
//! registry (`model/semconv/`).

use opentelemetry_semantic_conventions::{attribute as sc, metric as scm};

/// Metric names with their units and one-line descriptions (OTLP
/// `Metric.description`, the Prometheus `# HELP` line).
pub mod metric {
    use super::scm;

    /// `(name, unit, description)`.
    pub type Def = (&'static str, &'static str, &'static str);

    pub const FLOW_IO: Def = (
        "network.flow.io",
        "By",
        "Bytes a flow carried, by direction.",
    );
    pub const FLOW_PACKETS: Def = (
        "flowscope.flow.packets",
        "{packet}",
        "Packets a flow carried, by direction.",
    );
    pub const TCP_RETRANSMITS: Def = (
        "flowscope.tcp.retransmits",
        "{segment}",
        "TCP segments retransmitted by the local side.",
    );
    pub const TCP_RTT: Def = (
        "flowscope.tcp.rtt",
        "s",
        "Smoothed TCP round-trip time, one sample per connection and interval.",
    );
    pub const TCP_RTT_VARIANCE: Def = (
        "flowscope.tcp.rtt.variance",
        "s",
        "Mean TCP round-trip time variance (jitter) over the interval.",
    );
    pub const TCP_OPENED: Def = (
        "flowscope.tcp.connection.opened",
        "{connection}",
        "TCP connections established.",
    );
    pub const TCP_CLOSED: Def = (
        "flowscope.tcp.connection.closed",
        "{connection}",
        "TCP connections closed.",
    );
    pub const TCP_FAILED: Def = (
        "flowscope.tcp.connection.failed",
        "{connection}",
        "TCP connection attempts that failed, by error type.",
    );
    pub const TCP_ACTIVE: Def = (
        "flowscope.tcp.connection.active",
        "{connection}",
        "TCP connections open now.",
    );
    pub const TCP_RESETS: Def = (
        "flowscope.tcp.resets",
        "{reset}",
        "TCP resets sent (transmit) or received (receive) by the local side.",
    );
    pub const TCP_DURATION: Def = (
        "flowscope.tcp.connection.duration",
        "s",
        "Lifetime of TCP connections, recorded when they close.",
    );
    pub const UDP_ACTIVE: Def = (
        "flowscope.udp.flow.active",
        "{flow}",
        "UDP flows active now.",
    );
    /// Contract v3: packets of a flow the kernel dropped, with its reason
    /// (`skb:kfree_skb`; receiver/src/drops).
    pub const FLOW_DROPS: Def = (
        "flowscope.flow.drops",
        "{packet}",
        "Packets of a flow the kernel dropped, by drop reason and direction.",
    );
    /// Contract v3: dropped packets of no monitored flow, on the host
    /// Resource.
    pub const HOST_DROPS: Def = (
        "flowscope.host.drops",
        "{packet}",
        "Packets the kernel dropped that belong to no monitored flow, by drop reason.",
    );
    pub const FLOW_COST: Def = (
        "flowscope.flow.cost",
        "{USD}",
        "Estimated transfer cost of a flow, with prices configured.",
    );
    pub const DNS_DURATION: Def = (
        scm::DNS_LOOKUP_DURATION,
        "s",
        "Time taken by DNS lookups, failures and timeouts included.",
    );

    pub const EVENTS_RECEIVED: Def = (
        "flowscope.events.received",
        "{event}",
        "Events a source handed to the agent.",
    );
    pub const EVENTS_LOST: Def = (
        "flowscope.events.lost",
        "{event}",
        "Events lost before they became flows, by source and reason.",
    );
    pub const FLOWS_TRACKED: Def = (
        "flowscope.flows.tracked",
        "{flow}",
        "Flows held in the agent's connection table now.",
    );
    pub const FLOWS_OVERFLOW: Def = (
        "flowscope.flows.overflow",
        "{data_point}",
        "Data points merged into an overflow series by a cardinality limit.",
    );
    pub const EXPORTER_SENT: Def = (
        "flowscope.exporter.sent",
        "{data_point}",
        "Data points an exporter delivered.",
    );
    pub const EXPORTER_FAILED: Def = (
        "flowscope.exporter.failed",
        "{data_point}",
        "Data points an exporter could not deliver, by error type.",
    );
    pub const EXPORTER_QUEUE_SIZE: Def = (
        "flowscope.exporter.queue.size",
        "{batch}",
        "Batches waiting in an exporter's queue now.",
    );
    pub const EXPORTER_QUEUE_CAPACITY: Def = (
        "flowscope.exporter.queue.capacity",
        "{batch}",
        "Batches an exporter's queue can hold.",
    );
    pub const SERVER_REFUSED: Def = (
        "flowscope.server.refused",
        "{request}",
        "Requests and connections one of the agent's HTTP servers refused, by reason.",
    );
    pub const EXPORTER_RETRIES: Def = (
        "flowscope.exporter.retries",
        "{request}",
        "Requests an exporter sent again after a retryable error, by error type.",
    );
}

/// Resource keys (the local endpoint).
pub mod resource {
    use super::sc;

    pub const SERVICE_NAME: &str = sc::SERVICE_NAME;
    /// When the process's environment sets it.
    pub const SERVICE_NAMESPACE: &str = sc::SERVICE_NAMESPACE;
    /// When the process's environment sets it.
    pub const SERVICE_VERSION: &str = sc::SERVICE_VERSION;
    pub const HOST_NAME: &str = sc::HOST_NAME;
    pub const HOST_ID: &str = sc::HOST_ID;
    pub const OS_TYPE: &str = sc::OS_TYPE;
    pub const PROCESS_PID: &str = sc::PROCESS_PID;
    pub const PROCESS_EXECUTABLE_NAME: &str = sc::PROCESS_EXECUTABLE_NAME;
    /// argv\[0\] (process granularity).
    pub const PROCESS_COMMAND: &str = sc::PROCESS_COMMAND;
    /// The whole command line (process granularity and opted in: it can
    /// carry secrets).
    pub const PROCESS_COMMAND_LINE: &str = sc::PROCESS_COMMAND_LINE;
    pub const CONTAINER_ID: &str = sc::CONTAINER_ID;
    pub const CONTAINER_NAME: &str = sc::CONTAINER_NAME;
    pub const K8S_NAMESPACE_NAME: &str = sc::K8S_NAMESPACE_NAME;
    pub const K8S_POD_NAME: &str = sc::K8S_POD_NAME;
    pub const K8S_POD_UID: &str = sc::K8S_POD_UID;
    pub const K8S_NODE_NAME: &str = sc::K8S_NODE_NAME;
    pub const CLOUD_PROVIDER: &str = sc::CLOUD_PROVIDER;
    pub const CLOUD_PLATFORM: &str = sc::CLOUD_PLATFORM;
    pub const CLOUD_REGION: &str = sc::CLOUD_REGION;
    pub const CLOUD_AVAILABILITY_ZONE: &str = sc::CLOUD_AVAILABILITY_ZONE;
    pub const CLOUD_ACCOUNT_ID: &str = sc::CLOUD_ACCOUNT_ID;
}

/// Data point attribute keys (the flow) and their fixed values.
pub mod attr {
    use super::sc;

    pub const NETWORK_TRANSPORT: &str = sc::NETWORK_TRANSPORT;
    pub const NETWORK_TYPE: &str = sc::NETWORK_TYPE;
    pub const FLOW_ROLE: &str = "flowscope.flow.role";
    pub const PEER_ADDRESS: &str = sc::NETWORK_PEER_ADDRESS;
    pub const PEER_PORT: &str = sc::NETWORK_PEER_PORT;
    pub const LOCAL_PORT: &str = sc::NETWORK_LOCAL_PORT;
    /// The local side's own address: lets a fleet view name the workload
    /// behind an address that another node reports as its peer.
    pub const LOCAL_ADDRESS: &str = sc::NETWORK_LOCAL_ADDRESS;
    pub const PEER_DOMAIN: &str = "flowscope.peer.domain";
    pub const PEER_SERVICE_NAME: &str = sc::SERVICE_PEER_NAME;
    pub const PEER_CLOUD_PROVIDER: &str = "flowscope.peer.cloud.provider";
    pub const PEER_CLOUD_REGION: &str = "flowscope.peer.cloud.region";
    pub const PEER_CLOUD_SERVICE: &str = "flowscope.peer.cloud.service";
    /// Prefix of user CIDR tags: `flowscope.peer.tag.<key>`.
    pub const PEER_TAG_PREFIX: &str = "flowscope.peer.tag.";
    pub const LOCALITY: &str = "flowscope.network.locality";
    pub const IO_DIRECTION: &str = sc::NETWORK_IO_DIRECTION;
    /// The kernel's `enum skb_drop_reason` name without its
    /// `SKB_DROP_REASON_` prefix, as the running kernel's BTF spells it.
    pub const DROP_REASON: &str = "flowscope.drop.reason";
    pub const ERROR_TYPE: &str = sc::ERROR_TYPE;
    /// `error.type` when no more specific value applies (the registry's
    /// fallback member).
    pub const ERROR_OTHER: &str = "_OTHER";
    /// Set on the point that merges series over a cardinality limit, as the
    /// OpenTelemetry metrics SDK specification names it (not a registry
    /// attribute; the registry test lists it as a known exception).
    pub const OVERFLOW: &str = "otel.metric.overflow";

    pub const DNS_QUESTION_NAME: &str = sc::DNS_QUESTION_NAME;
    pub const DNS_QUESTION_TYPE: &str = "flowscope.dns.question.type";
    pub const DNS_RESPONSE_CODE: &str = "flowscope.dns.response.code";
    pub const SERVER_ADDRESS: &str = sc::SERVER_ADDRESS;

    /// Self-telemetry attribute keys.
    pub const SOURCE: &str = "flowscope.source";
    pub const REASON: &str = "flowscope.reason";
    pub const METRIC: &str = "flowscope.metric";
    /// The component's config id (`otlp/backend`).
    pub const COMPONENT_NAME: &str = sc::OTEL_COMPONENT_NAME;
    /// The component's type: the registry's value where one applies
    /// (`otlp_grpc_metric_exporter`), else the Rust type's path.
    pub const COMPONENT_TYPE: &str = sc::OTEL_COMPONENT_TYPE;

    pub const TRANSMIT: &str = "transmit";
    pub const RECEIVE: &str = "receive";
}

/// Values of registry enums that flowscope sets, exactly as the registry
/// (v1.44.0) lists them; the registry test checks each is a current,
/// non-deprecated member.
pub mod value {
    pub const CLOUD_PROVIDER_AWS: &str = "aws";
    pub const CLOUD_PROVIDER_GCP: &str = "gcp";
    pub const CLOUD_PROVIDER_AZURE: &str = "azure";
    pub const CLOUD_PLATFORM_AWS_EC2: &str = "aws_ec2";
    pub const CLOUD_PLATFORM_GCP_COMPUTE_ENGINE: &str = "gcp_compute_engine";
    /// Renamed from `azure_vm` in the registry.
    pub const CLOUD_PLATFORM_AZURE_VM: &str = "azure.vm";
    /// `otel.component.type` of the exporters the registry has a type for:
    /// `otlp`/`otlp_grpc`, `otlphttp`/`otlp_http` (protobuf and JSON
    /// bodies) and `prometheus`.
    pub const COMPONENT_TYPE_OTLP_GRPC: &str = "otlp_grpc_metric_exporter";
    pub const COMPONENT_TYPE_OTLP_HTTP: &str = "otlp_http_metric_exporter";
    pub const COMPONENT_TYPE_OTLP_HTTP_JSON: &str = "otlp_http_json_metric_exporter";
    pub const COMPONENT_TYPE_PROMETHEUS: &str = "prometheus_http_text_metric_exporter";
    /// `otel.component.type` of the exporters the registry has no type for:
    /// the registry asks for the implementation's type name, so these are
    /// the sinks' Rust paths, spelt here as constants (a telemetry value
    /// must not depend on `std::any::type_name`, whose output the compiler
    /// does not promise to keep).
    pub const COMPONENT_TYPE_FILE: &str = "flowscope_exporters::file::FileSink";
    pub const COMPONENT_TYPE_CONSOLE: &str = "flowscope_exporters::console::ConsoleSink";
    pub const COMPONENT_TYPE_UI: &str = "flowscope_exporters::ui::UiSink";
    pub const COMPONENT_TYPE_REMOTE_WRITE: &str =
        "flowscope_exporters::remote_write::RemoteWriteSink";
}

/// `service.name` of the agent's own telemetry.
pub const SELF_SERVICE_NAME: &str = "flowscope";
/// Instrumentation scope name on every ScopeMetrics the agent emits.
pub const SCOPE_NAME: &str = "flowscope";

/// NAT resolution (conntrack): flow attributes and the self-telemetry
/// reason of a connection whose translation was not found (issue 9).
pub mod nat {
    /// What the local socket addressed when NAT rewrote the peer (a
    /// Kubernetes Service IP); `network.peer.address` is then the real peer.
    pub const PEER_NAT_ADDRESS: &str = "flowscope.peer.nat.address";
    /// Its port, only when the peer is the server (as `network.peer.port`).
    pub const PEER_NAT_PORT: &str = "flowscope.peer.nat.port";
    /// `flowscope.reason` of a connection to a translated address whose own
    /// conntrack entry was not found.
    pub const REASON_NAT_UNRESOLVED: &str = "nat_unresolved";
}

/// The `memory_limiter` processor (issue 25).
pub mod memory {
    /// `flowscope.reason` of a new flow not tracked while the heap was above
    /// the `memory_limiter`'s soft limit.
    pub const REASON_MEMORY_LIMIT: &str = "memory_limit";
}

/// DNS monitoring: the self-telemetry reason of a lookup reported without
/// its process (issue 22).
pub mod dns {
    /// `flowscope.reason` (with `flowscope.source=dns`) of a lookup whose
    /// local process was not found: the lookup is still reported, with
    /// `service.name=unknown_service`.
    pub const REASON_OWNER_UNKNOWN: &str = "owner_unknown";
}

/// Network Path (contract v2, "Network Path"): metric names with units,
/// attribute keys and fixed values of the `path` receiver.
pub mod path {
    use super::metric::Def;

    pub const REACHABLE: Def = (
        "flowscope.path.reachable",
        "1",
        "1 when the destination answered in the last run, else 0.",
    );
    pub const HOPS: Def = (
        "flowscope.path.hops",
        "{hop}",
        "Hops to the destination, or to the last hop that answered.",
    );
    pub const RTT: Def = (
        "flowscope.path.rtt",
        "s",
        "End-to-end round trips of a path run.",
    );
    pub const PROBES_SENT: Def = (
        "flowscope.path.probes.sent",
        "{probe}",
        "End-to-end probes sent.",
    );
    pub const PROBES_LOST: Def = (
        "flowscope.path.probes.lost",
        "{probe}",
        "End-to-end probes without an answer.",
    );
    pub const JITTER: Def = (
        "flowscope.path.jitter",
        "s",
        "Mean absolute difference of consecutive end-to-end RTTs.",
    );
    pub const HOP_RTT: Def = (
        "flowscope.path.hop.rtt",
        "s",
        "Round trips to one hop of a path.",
    );
    pub const HOP_PROBES_SENT: Def = (
        "flowscope.path.hop.probes.sent",
        "{probe}",
        "Probes sent to one hop of a path.",
    );
    pub const HOP_PROBES_LOST: Def = (
        "flowscope.path.hop.probes.lost",
        "{probe}",
        "Probes to one hop of a path without an answer.",
    );
    /// Contract v3: a run whose hop list differs from the previous run's
    /// of the same test (receiver/src/path/route.rs says when two differ).
    pub const ROUTE_CHANGES: Def = (
        "flowscope.path.route.changes",
        "{change}",
        "Runs whose hop list differs from the previous run's of the same test.",
    );

    /// The destination as configured or observed (a name or an IP).
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    /// `tcp`, `udp` or `icmp`.
    pub const PROTOCOL: &str = "flowscope.path.protocol";
    /// `scheduled` or `dynamic`.
    pub const TEST: &str = "flowscope.path.test";
    /// The hop's TTL (1 is the first router).
    pub const HOP_INDEX: &str = "flowscope.path.hop.index";
    /// The address that answered at this TTL, or [`NO_ANSWER`].
    pub const HOP_ADDRESS: &str = "flowscope.path.hop.address";
    /// The hop address's reverse DNS name (PTR), when it has one.
    pub const HOP_NAME: &str = "flowscope.path.hop.name";
    /// The autonomous system announcing the hop address (int), from the
    /// `asn_database`.
    pub const HOP_AS_NUMBER: &str = "flowscope.path.hop.as.number";
    /// That autonomous system's organisation name.
    pub const HOP_AS_NAME: &str = "flowscope.path.hop.as.name";

    pub const NO_ANSWER: &str = "*";
    pub const SCHEDULED: &str = "scheduled";
    pub const DYNAMIC: &str = "dynamic";

    /// Contract v3: a scheduled test with `tls: true` reports the leaf
    /// certificate it received (verified or not): seconds until its
    /// `notAfter`, negative once expired.
    pub const TLS_TIME_LEFT: Def = (
        "flowscope.tls.certificate.time_left",
        "s",
        "Seconds until the server certificate's notAfter (negative when expired).",
    );
    /// Contract v3: a TLS check that failed, by `error.type`.
    pub const TLS_CHECK_FAILED: Def = (
        "flowscope.tls.check.failed",
        "{check}",
        "TLS checks of a path test that failed (handshake or verification).",
    );
    pub const TLS_SUBJECT: &str = super::sc::TLS_SERVER_SUBJECT;
    pub const TLS_ISSUER: &str = super::sc::TLS_SERVER_ISSUER;
    pub const TLS_NOT_AFTER: &str = super::sc::TLS_SERVER_NOT_AFTER;
    /// `error.type` values of `flowscope.tls.check.failed`.
    pub const TLS_ERROR_HANDSHAKE: &str = "handshake";
    pub const TLS_ERROR_EXPIRED: &str = "certificate_expired";
    pub const TLS_ERROR_UNKNOWN_ISSUER: &str = "unknown_issuer";
    pub const TLS_ERROR_NAME_MISMATCH: &str = "name_mismatch";
    pub const TLS_ERROR_TIMEOUT: &str = "timeout";
    pub const TLS_ERROR_CONNECT: &str = "connect";
}

/// The Network Path names the `ui` exporter reads for its health findings.
pub mod ui {
    pub use super::path::{
        PROBES_LOST as PATH_PROBES_LOST, PROBES_SENT as PATH_PROBES_SENT,
        REACHABLE as PATH_REACHABLE,
    };
}

/// The `kubernetes` processor (issue 9): Resource keys of the local pod and
/// the flow attributes naming a peer pod or Service. The semconv keys come
/// from the semconv crate; the two peer keys are flowscope's (contract v2,
/// "Flow attributes").
pub mod k8s {
    use super::sc;

    pub const NAMESPACE_NAME: &str = sc::K8S_NAMESPACE_NAME;
    pub const POD_NAME: &str = sc::K8S_POD_NAME;
    pub const POD_UID: &str = sc::K8S_POD_UID;
    pub const NODE_NAME: &str = sc::K8S_NODE_NAME;
    pub const CONTAINER_NAME: &str = sc::K8S_CONTAINER_NAME;
    pub const DEPLOYMENT_NAME: &str = sc::K8S_DEPLOYMENT_NAME;
    pub const STATEFULSET_NAME: &str = sc::K8S_STATEFULSET_NAME;
    pub const DAEMONSET_NAME: &str = sc::K8S_DAEMONSET_NAME;
    pub const JOB_NAME: &str = sc::K8S_JOB_NAME;
    /// The cluster's name, as configured (`cluster_name`): the API has none.
    pub const CLUSTER_NAME: &str = sc::K8S_CLUSTER_NAME;
    /// The runtime's container name; for a pod's container flowscope sets
    /// the Kubernetes container name (the kubelet does not report the
    /// runtime's).
    pub const CONTAINER_RUNTIME_NAME: &str = sc::CONTAINER_NAME;

    /// `service.peer.namespace`: the peer pod's or Service's namespace.
    pub const PEER_SERVICE_NAMESPACE: &str = sc::SERVICE_PEER_NAMESPACE;
    /// The peer pod's name, when the peer address is a known pod's.
    pub const PEER_POD_NAME: &str = "flowscope.peer.k8s.pod.name";
    /// The peer pod's namespace.
    pub const PEER_NAMESPACE_NAME: &str = "flowscope.peer.k8s.namespace.name";
}
