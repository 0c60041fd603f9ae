//! Every metric name, unit and attribute key of the telemetry contract
//! (`docs/telemetry.md`, copied from the shared spec). Code names these
//! constants, never string literals, so a rename is one edit here plus the
//! docs and the tests that assert on the emitted names.

/// Metric names with their units.
pub mod metric {
    pub const FLOW_IO: (&str, &str) = ("network.flow.io", "By");
    pub const FLOW_PACKETS: (&str, &str) = ("network.flow.packets", "{packet}");
    pub const TCP_RETRANSMITS: (&str, &str) = ("network.tcp.retransmits", "{segment}");
    pub const TCP_RTT: (&str, &str) = ("network.tcp.rtt", "s");
    pub const TCP_RTT_VARIANCE: (&str, &str) = ("network.tcp.rtt.variance", "s");
    pub const TCP_OPENED: (&str, &str) = ("network.tcp.connections.opened", "{connection}");
    pub const TCP_CLOSED: (&str, &str) = ("network.tcp.connections.closed", "{connection}");
    pub const TCP_FAILED: (&str, &str) = ("network.tcp.connections.failed", "{connection}");
    pub const TCP_ACTIVE: (&str, &str) = ("network.tcp.connections.active", "{connection}");
    pub const TCP_RESETS: (&str, &str) = ("network.tcp.resets", "{reset}");
    pub const TCP_DURATION: (&str, &str) = ("network.tcp.connection.duration", "s");
    pub const UDP_ACTIVE: (&str, &str) = ("network.udp.flows.active", "{flow}");
    pub const FLOW_COST: (&str, &str) = ("network.flow.cost", "{USD}");
    pub const DNS_DURATION: (&str, &str) = ("dns.lookup.duration", "s");
    pub const DNS_TIMEOUTS: (&str, &str) = ("dns.lookup.timeouts", "{lookup}");
    pub const PATH_HOP_RTT: (&str, &str) = ("network.path.hop.rtt", "s");
    pub const PATH_REACHABLE: (&str, &str) = ("network.path.reachable", "1");
    pub const PATH_HOPS: (&str, &str) = ("network.path.hops", "{hop}");

    pub const EVENTS_RECEIVED: (&str, &str) = ("flowscope.events.received", "{event}");
    pub const EVENTS_LOST: (&str, &str) = ("flowscope.events.lost", "{event}");
    pub const FLOWS_TRACKED: (&str, &str) = ("flowscope.flows.tracked", "{flow}");
    pub const FLOWS_OVERFLOW: (&str, &str) = ("flowscope.flows.overflow", "{point}");
    pub const EXPORTER_SENT: (&str, &str) = ("flowscope.exporter.sent", "{point}");
    pub const EXPORTER_FAILED: (&str, &str) = ("flowscope.exporter.failed", "{point}");
    pub const EXPORTER_QUEUE_SIZE: (&str, &str) = ("flowscope.exporter.queue.size", "{batch}");
    pub const EXPORTER_QUEUE_CAPACITY: (&str, &str) =
        ("flowscope.exporter.queue.capacity", "{batch}");
}

/// Resource keys (the local endpoint).
pub mod resource {
    pub const SERVICE_NAME: &str = "service.name";
    pub const HOST_NAME: &str = "host.name";
    pub const HOST_ID: &str = "host.id";
    pub const OS_TYPE: &str = "os.type";
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
    pub const PROCESS_COMMAND: &str = "process.command";
    pub const CONTAINER_ID: &str = "container.id";
    pub const CONTAINER_NAME: &str = "container.name";
    pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
    pub const K8S_POD_NAME: &str = "k8s.pod.name";
    pub const K8S_POD_UID: &str = "k8s.pod.uid";
    pub const K8S_NODE_NAME: &str = "k8s.node.name";
    pub const CLOUD_PROVIDER: &str = "cloud.provider";
    pub const CLOUD_PLATFORM: &str = "cloud.platform";
    pub const CLOUD_REGION: &str = "cloud.region";
    pub const CLOUD_AVAILABILITY_ZONE: &str = "cloud.availability_zone";
    pub const CLOUD_ACCOUNT_ID: &str = "cloud.account.id";
}

/// Data point attribute keys (the flow) and their fixed values.
pub mod attr {
    pub const NETWORK_TRANSPORT: &str = "network.transport";
    pub const NETWORK_TYPE: &str = "network.type";
    pub const FLOW_ROLE: &str = "network.flow.role";
    pub const PEER_ADDRESS: &str = "network.peer.address";
    pub const PEER_PORT: &str = "network.peer.port";
    pub const LOCAL_PORT: &str = "network.local.port";
    pub const PEER_DOMAIN: &str = "network.peer.domain";
    pub const PEER_SERVICE_NAME: &str = "network.peer.service.name";
    pub const PEER_CLOUD_PROVIDER: &str = "network.peer.cloud.provider";
    pub const PEER_CLOUD_REGION: &str = "network.peer.cloud.region";
    pub const PEER_CLOUD_SERVICE: &str = "network.peer.cloud.service";
    /// Prefix of user CIDR tags: `network.peer.tag.<key>`.
    pub const PEER_TAG_PREFIX: &str = "network.peer.tag.";
    pub const LOCALITY: &str = "network.locality";
    pub const IO_DIRECTION: &str = "network.io.direction";
    pub const ERROR_TYPE: &str = "error.type";
    pub const OVERFLOW: &str = "otel.metric.overflow";

    pub const DNS_QUESTION_NAME: &str = "dns.question.name";
    pub const DNS_QUESTION_TYPE: &str = "dns.question.type";
    pub const DNS_RESPONSE_CODE: &str = "dns.response.code";
    pub const SERVER_ADDRESS: &str = "server.address";

    /// Self-telemetry attribute keys.
    pub const SOURCE: &str = "source";
    pub const REASON: &str = "reason";
    pub const METRIC: &str = "metric";
    pub const EXPORTER: &str = "exporter";

    pub const TRANSMIT: &str = "transmit";
    pub const RECEIVE: &str = "receive";
}

/// `service.name` of the agent's own telemetry.
pub const SELF_SERVICE_NAME: &str = "flowscope";
/// Instrumentation scope name on every ScopeMetrics the agent emits.
pub const SCOPE_NAME: &str = "flowscope";

/// Names the `ui` exporter reads that the blocks above do not have yet
/// (the Network Path receiver's probe counters). Kept apart so that the v2
/// rename and the path receiver's own constants merge without conflicts;
/// fold them into `metric` once those land.
pub mod ui {
    pub const PATH_PROBES_SENT: (&str, &str) = ("flowscope.path.probes.sent", "{probe}");
    pub const PATH_PROBES_LOST: (&str, &str) = ("flowscope.path.probes.lost", "{probe}");
}
