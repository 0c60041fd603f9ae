//! Receiver settings (`receivers:` section).
//!
//! # Adding a receiver type
//! 1. Define `FooReceiverConfig` below with `#[derive(Debug, Clone, PartialEq,
//!    Deserialize)]`, `#[serde(deny_unknown_fields)]` and doc comments on every
//!    field (they are the reference docs; mirror them in docs/configuration.md).
//!    Give it `#[serde(default)]` + `impl Default` if every field has a default.
//!    Validate values in the serde pass (`deserialize_with`), so errors carry
//!    the line and key path.
//! 2. Add a variant `Foo(FooReceiverConfig)` to [`ReceiverConfig`], its type
//!    string to [`ReceiverConfig::KINDS`] and to the `match` in
//!    [`ReceiverConfig::kind`], and one arm to the `match` in
//!    [`ReceiverSeed::deserialize`]. Nothing outside this file changes.
//! 3. Add a test at the bottom that parses a minimal YAML for the new type.

use std::time::Duration;

use flowscope_model::net::{self, NetError, Spaces};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{bucket_bounds, component_body, duration, unknown_kind};
use crate::validate::{at_least_1s, check_at_least_one, int_in, positive_duration, positive_usize};

/// The settings of one receiver, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReceiverConfig {
    /// `ebpf`: TCP and UDP flows from the kernel.
    Ebpf(EbpfReceiverConfig),
    /// `dns`: every DNS lookup on the host, from captured packets.
    Dns(DnsReceiverConfig),
    /// `path`: Network Path, scheduled and dynamic traceroute tests.
    Path(PathReceiverConfig),
}

impl ReceiverConfig {
    /// Every receiver type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] = &["ebpf", "dns", "path"];

    /// The component type of these settings (`ebpf`).
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiverConfig::Ebpf(_) => "ebpf",
            ReceiverConfig::Dns(_) => "dns",
            ReceiverConfig::Path(_) => "path",
        }
    }
}

/// Reads a receiver's settings for the type named by its id.
pub(crate) struct ReceiverSeed<'a> {
    pub(crate) id: &'a ComponentId,
}

impl<'de> DeserializeSeed<'de> for ReceiverSeed<'_> {
    type Value = ReceiverConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.id.kind.as_str() {
            "ebpf" => component_body(deserializer)
                .and_then(|c: EbpfReceiverConfig| c.check().map_err(de::Error::custom))
                .map(ReceiverConfig::Ebpf),
            "dns" => component_body(deserializer).map(ReceiverConfig::Dns),
            "path" => component_body(deserializer).map(ReceiverConfig::Path),
            other => unknown_kind(deserializer, "receiver", other, ReceiverConfig::KINDS),
        }
    }
}

/// Which workload a flow's Resource describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceGranularity {
    /// One Resource per service (`service.name`, `container.id`, `host.*`):
    /// processes of one service share their series.
    #[default]
    Service,
    /// One Resource per process: adds `process.pid`,
    /// `process.executable.name` and `process.command` (argv\[0\]) to the
    /// Resource, and `process.command_line` with `include_command_line`.
    Process,
}

/// `ebpf` receiver: every TCP and UDP flow on the host, from kernel
/// tracepoints, reported as deltas every `collection_interval`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfReceiverConfig {
    /// How often flows are reported (Go-style duration: `10s`, `1m`).
    /// Default `10s`, at least `1s`.
    #[serde(deserialize_with = "collection_interval")]
    pub collection_interval: Duration,
    /// Most flows tracked in user space at once; flows beyond it are counted
    /// in `flowscope.flows.overflow` and dropped. Default 65536, at least 1.
    #[serde(deserialize_with = "max_tracked_flows")]
    pub max_tracked_flows: usize,
    /// Size of the kernel-to-user ring buffer in bytes. Default 4 MiB; must be
    /// a power of two and at least 4096 (one page), as the kernel requires.
    /// The TCP programs write their frequent records without waking the
    /// agent, which drains every 100 ms: the ring must hold 100 ms of the
    /// host's peak rate, 248 bytes per TCP connection (4 MiB: 160,000
    /// connections a second).
    #[serde(deserialize_with = "ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
    /// Record TCP flows. Default `true`.
    pub tcp: bool,
    /// Record UDP flows. Default `true`.
    pub udp: bool,
    /// `service` (default) or `process`; see [`ResourceGranularity`].
    pub resource_granularity: ResourceGranularity,
    /// With `resource_granularity: process`, also put the whole command line
    /// on the Resource as `process.command_line`. Default `false`: arguments
    /// can carry secrets (`--password=...`). Without process granularity it
    /// is an error (there is no process on a service's Resource).
    pub include_command_line: bool,
    /// Bucket bounds in seconds for `flowscope.tcp.rtt`; strictly increasing.
    /// Default [`flowscope_model::hist::RTT_BOUNDS`].
    #[serde(deserialize_with = "bucket_bounds")]
    pub rtt_buckets: Vec<f64>,
    /// Bucket bounds in seconds for `flowscope.tcp.connection.duration`;
    /// strictly increasing. Default [`flowscope_model::hist::DURATION_BOUNDS`].
    #[serde(deserialize_with = "bucket_bounds")]
    pub duration_buckets: Vec<f64>,
    /// NAT resolution through conntrack; see [`NatConfig`].
    pub nat: NatConfig,
    /// Kernel drop reasons per flow; see [`DropsConfig`].
    pub drops: DropsConfig,
    /// A directory on the BPF file system (`/sys/fs/bpf/flowscope`, say)
    /// where the receiver pins its kernel counters. They then outlive the
    /// process: an agent started after one that was killed (SIGKILL, OOM)
    /// counts the connection ends the killed one had not delivered as
    /// `flowscope.events.lost{flowscope.reason=agent_restart}`, and the
    /// kernel's counts it had not reported yet (docs/reliability.md).
    /// Default: none (nothing pinned; such a loss goes uncounted). One
    /// agent at a time per directory: a second one is refused.
    pub pin_directory: Option<std::path::PathBuf>,
}

/// `ebpf.drops`: count the packets the kernel drops (`skb:kfree_skb`)
/// into the flow they belong to, with the kernel's reason
/// (`flowscope.flow.drops`, `flowscope.host.drops`; docs/drops.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropsConfig {
    /// Attach the drop program. Default `true`; where the kernel does not
    /// load it (no BTF, no `tp_btf/kfree_skb`) the agent warns once and
    /// reports flows without drops.
    pub enabled: bool,
    /// Reasons not counted (names as `flowscope.drop.reason` spells them);
    /// the program leaves at once for them. Default `[NOT_SPECIFIED]`:
    /// packets freed through the plain `kfree_skb()` that was given no
    /// reason, common on a healthy host (error paths, but also ordinary
    /// frees of some protocols). `[]` counts everything; a busy host that
    /// closes sockets with unread data may add `QUEUE_PURGE`.
    pub ignore: Vec<String>,
    /// Entries of the kernel's drop map, one per (addresses, ports,
    /// protocol, reason) seen in the last minute. Default 16384, at least
    /// 1; a drop that finds the map full is counted in
    /// `flowscope.events.lost{flowscope.source=ebpf.drops, flowscope.reason=map_full}`.
    #[serde(deserialize_with = "drops_max_tracked")]
    pub max_tracked: u32,
}

impl Default for DropsConfig {
    fn default() -> Self {
        DropsConfig {
            enabled: true,
            ignore: vec!["NOT_SPECIFIED".to_string()],
            max_tracked: 16_384,
        }
    }
}

fn drops_max_tracked<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let value = u32::deserialize(d)?;
    if value == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(value)
}

/// `ebpf.nat`: resolve the real peer of connections NAT rewrote (a
/// Kubernetes Service IP DNATed to a pod) from conntrack, in every network
/// namespace.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatConfig {
    /// Follow conntrack. Default `true`; where conntrack cannot be read the
    /// agent warns once and reports peers as the sockets saw them.
    pub enabled: bool,
    /// Most translated conntrack entries kept (live and recently ended);
    /// the oldest make room. Default 65536, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_tracked: usize,
    /// How long an ended connection's entry still resolves, for flows
    /// reported after the connection closed. Default `30s`, at least the
    /// collection interval is advisable.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// How often new network namespaces are looked for. Default `2s`.
    #[serde(deserialize_with = "positive_duration")]
    pub namespace_rescan: Duration,
    /// Follow conntrack's NEW/DESTROY events (default `true`); `false`
    /// dumps every namespace each `namespace_rescan` instead.
    pub events: bool,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            enabled: true,
            max_tracked: 65_536,
            retention: Duration::from_secs(30),
            namespace_rescan: Duration::from_secs(2),
            events: true,
        }
    }
}

impl EbpfReceiverConfig {
    /// Default `collection_interval`.
    pub const DEFAULT_COLLECTION_INTERVAL: Duration = Duration::from_secs(10);
    /// Smallest accepted `collection_interval`.
    pub const MIN_COLLECTION_INTERVAL: Duration = Duration::from_secs(1);
    /// Default `max_tracked_flows`.
    pub const DEFAULT_MAX_TRACKED_FLOWS: usize = 65_536;
    /// Largest accepted `max_tracked_flows`: the kernel maps are sized by it,
    /// and a map's size is a `u32`.
    pub const MAX_TRACKED_FLOWS: usize = u32::MAX as usize;
    /// Default `ring_buffer_bytes` (4 MiB: 100 ms of 160,000 TCP
    /// connections a second, or the agent's drain 400 ms late at 40,000).
    pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;
    /// Smallest accepted `ring_buffer_bytes` (one page).
    pub const MIN_RING_BUFFER_BYTES: u32 = 4096;

    /// The checks that involve more than one field.
    fn check(self) -> Result<Self, String> {
        if self.include_command_line && self.resource_granularity != ResourceGranularity::Process {
            return Err(
                "include_command_line: true needs resource_granularity: process \
                        (the command line goes on a process's Resource); set both, \
                        or remove include_command_line"
                    .to_owned(),
            );
        }
        if let Some(dir) = &self.pin_directory
            && !dir.is_absolute()
        {
            return Err(format!(
                "pin_directory {} is not an absolute path (a directory on the BPF file \
                 system, such as /sys/fs/bpf/flowscope)",
                dir.display()
            ));
        }
        Ok(self)
    }
}

impl Default for EbpfReceiverConfig {
    fn default() -> Self {
        EbpfReceiverConfig {
            collection_interval: Self::DEFAULT_COLLECTION_INTERVAL,
            max_tracked_flows: Self::DEFAULT_MAX_TRACKED_FLOWS,
            ring_buffer_bytes: Self::DEFAULT_RING_BUFFER_BYTES,
            tcp: true,
            udp: true,
            resource_granularity: ResourceGranularity::Service,
            include_command_line: false,
            rtt_buckets: flowscope_model::hist::RTT_BOUNDS.to_vec(),
            duration_buckets: flowscope_model::hist::DURATION_BOUNDS.to_vec(),
            nat: NatConfig::default(),
            drops: DropsConfig::default(),
            pin_directory: None,
        }
    }
}

fn check_collection_interval(value: Duration) -> Result<(), String> {
    if value < EbpfReceiverConfig::MIN_COLLECTION_INTERVAL {
        return Err(format!(
            "collection_interval {value:?} is below the minimum of 1s"
        ));
    }
    Ok(())
}

fn collection_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    check_collection_interval(value).map_err(de::Error::custom)?;
    Ok(value)
}

fn max_tracked_flows<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if value == 0 || value > EbpfReceiverConfig::MAX_TRACKED_FLOWS {
        return Err(de::Error::custom(format_args!(
            "max_tracked_flows must be between 1 and {} (a kernel map's size)",
            EbpfReceiverConfig::MAX_TRACKED_FLOWS
        )));
    }
    Ok(value)
}

fn ring_buffer_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let value = u32::deserialize(d)?;
    if value < EbpfReceiverConfig::MIN_RING_BUFFER_BYTES || !value.is_power_of_two() {
        return Err(de::Error::custom(format_args!(
            "ring_buffer_bytes {value} must be a power of two and at least 4096 \
             (e.g. 65536, 1048576)"
        )));
    }
    Ok(value)
}

/// `dns` receiver: every DNS lookup on the host (UDP and TCP, IPv4 and
/// IPv6, in every network namespace), matched query to response, reported
/// as `dns.lookup.duration` (timeouts included, with `error.type=timeout`)
/// every `collection_interval`. See docs/dns.md.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsReceiverConfig {
    /// UDP and TCP ports whose packets are DNS. Default `[53]`; 1 to 16
    /// ports, none 0.
    #[serde(deserialize_with = "dns_ports")]
    pub ports: Vec<u16>,
    /// How long a query waits for its response before it is recorded as a
    /// timed-out lookup (`dns.lookup.duration` with `error.type=timeout`,
    /// lasting this long). Default `5s`; between `10ms` and `1m`.
    #[serde(deserialize_with = "query_timeout")]
    pub query_timeout: Duration,
    /// Most queries waiting for a response at once; queries beyond it are
    /// counted in `flowscope.events.lost{flowscope.source=dns, flowscope.reason=table_full}`.
    /// Default 65536, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_outstanding_queries: usize,
    /// Question names kept per client; past them names fold to their
    /// registrable domain, and past as many domains to `_other`.
    /// Default 100, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub top_k: usize,
    /// Entries of the IP -> name cache that sets `flowscope.peer.domain` on
    /// flows. Default 65536, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub name_cache_size: usize,
    /// How long a name stays in that cache after its record's TTL ran out,
    /// so flows reported at the end of an interval keep it. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub name_ttl_grace: Duration,
    /// Bucket bounds in seconds for `dns.lookup.duration`; strictly
    /// increasing. Default [`flowscope_model::hist::DNS_BOUNDS`].
    #[serde(deserialize_with = "bucket_bounds")]
    pub buckets: Vec<f64>,
    /// How often lookups are reported (Go-style duration). Default `10s`,
    /// at least `1s`.
    #[serde(deserialize_with = "collection_interval")]
    pub collection_interval: Duration,
}

impl DnsReceiverConfig {
    /// Default `ports`.
    pub const DEFAULT_PORTS: [u16; 1] = [53];
    /// Most `ports`.
    pub const MAX_PORTS: usize = 16;
    /// Default `query_timeout`.
    pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `max_outstanding_queries`.
    pub const DEFAULT_MAX_OUTSTANDING_QUERIES: usize = 65_536;
    /// Default `top_k`.
    pub const DEFAULT_TOP_K: usize = 100;
    /// Default `name_cache_size`.
    pub const DEFAULT_NAME_CACHE_SIZE: usize = 65_536;
    /// Default `name_ttl_grace`.
    pub const DEFAULT_NAME_TTL_GRACE: Duration = Duration::from_secs(30);
    /// Accepted `query_timeout` range.
    pub const QUERY_TIMEOUT_RANGE: (Duration, Duration) =
        (Duration::from_millis(10), Duration::from_secs(60));

    /// Checks every field against the same rules the config loader applies
    /// key by key (one definition: the loader calls the same functions), for
    /// settings built in code. The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let key = |k: &str, r: Result<(), String>| r.map_err(|m| format!("{k}: {m}"));
        key("ports", check_dns_ports(&self.ports))?;
        key("query_timeout", check_query_timeout(self.query_timeout))?;
        key(
            "max_outstanding_queries",
            check_at_least_one(self.max_outstanding_queries),
        )?;
        key("top_k", check_at_least_one(self.top_k))?;
        key("name_cache_size", check_at_least_one(self.name_cache_size))?;
        key("buckets", crate::de::check_bounds(&self.buckets))?;
        key(
            "collection_interval",
            check_collection_interval(self.collection_interval),
        )?;
        Ok(())
    }
}

impl Default for DnsReceiverConfig {
    fn default() -> Self {
        DnsReceiverConfig {
            ports: Self::DEFAULT_PORTS.to_vec(),
            query_timeout: Self::DEFAULT_QUERY_TIMEOUT,
            max_outstanding_queries: Self::DEFAULT_MAX_OUTSTANDING_QUERIES,
            top_k: Self::DEFAULT_TOP_K,
            name_cache_size: Self::DEFAULT_NAME_CACHE_SIZE,
            name_ttl_grace: Self::DEFAULT_NAME_TTL_GRACE,
            buckets: flowscope_model::hist::DNS_BOUNDS.to_vec(),
            collection_interval: EbpfReceiverConfig::DEFAULT_COLLECTION_INTERVAL,
        }
    }
}

fn check_dns_ports(ports: &[u16]) -> Result<(), String> {
    if ports.is_empty() || ports.len() > DnsReceiverConfig::MAX_PORTS {
        return Err(format!(
            "ports must list between 1 and {} ports, got {}",
            DnsReceiverConfig::MAX_PORTS,
            ports.len()
        ));
    }
    if ports.contains(&0) {
        return Err("ports: 0 is not a port".into());
    }
    Ok(())
}

fn dns_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let ports = Vec::<u16>::deserialize(d)?;
    check_dns_ports(&ports).map_err(de::Error::custom)?;
    Ok(ports)
}

fn check_query_timeout(value: Duration) -> Result<(), String> {
    let (lo, hi) = DnsReceiverConfig::QUERY_TIMEOUT_RANGE;
    if value < lo || value > hi {
        return Err(format!(
            "query_timeout {value:?} must be between 10ms and 1m"
        ));
    }
    Ok(())
}

fn query_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    check_query_timeout(value).map_err(de::Error::custom)?;
    Ok(value)
}

/// `path` receiver: Network Path. Scheduled traceroute tests to the
/// destinations listed in `tests`, and with `dynamic.enabled` tests the
/// agent creates itself for the servers the `ebpf` receiver sees clients
/// talk to. See docs/path.md.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathReceiverConfig {
    /// Scheduled tests, one per destination.
    pub tests: Vec<PathTestConfig>,
    /// Dynamic tests to destinations observed in flows.
    pub dynamic: PathDynamicConfig,
    /// Ask each hop address's reverse DNS name (PTR), in the test's own
    /// network namespace, into `flowscope.path.hop.name`. Default true.
    pub resolve_hops: bool,
    /// A MaxMind GeoLite2-ASN or DB-IP ASN `.mmdb` file: each hop's
    /// `flowscope.path.hop.as.number` and `.as.name`. Read again when the
    /// file changes. Default: none.
    pub asn_database: Option<std::path::PathBuf>,
}

impl Default for PathReceiverConfig {
    fn default() -> Self {
        PathReceiverConfig {
            tests: Vec::new(),
            dynamic: PathDynamicConfig::default(),
            resolve_hops: true,
            asn_database: None,
        }
    }
}

/// How probes travel: `tcp` (SYN), `udp` or `icmp` (echo request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathProtocol {
    #[default]
    Tcp,
    Udp,
    Icmp,
}

impl PathProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PathProtocol::Tcp => "tcp",
            PathProtocol::Udp => "udp",
            PathProtocol::Icmp => "icmp",
        }
    }
}

/// How each run of a test probes (the fields scheduled and dynamic tests
/// share; see their docs there).
#[derive(Debug, Clone, PartialEq)]
pub struct PathProbeConfig {
    pub max_ttl: u8,
    pub timeout: Duration,
    pub queries: u32,
    pub e2e_probes: u32,
}

impl PathProbeConfig {
    pub const DEFAULT_MAX_TTL: u8 = 30;
    pub const MAX_MAX_TTL: u64 = 64;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_QUERIES: u32 = 3;
    pub const MAX_QUERIES: u64 = 10;
    pub const DEFAULT_E2E_PROBES: u32 = 20;
    pub const MAX_E2E_PROBES: u64 = 1000;
}

impl Default for PathProbeConfig {
    fn default() -> Self {
        PathProbeConfig {
            max_ttl: Self::DEFAULT_MAX_TTL,
            timeout: Self::DEFAULT_TIMEOUT,
            queries: Self::DEFAULT_QUERIES,
            e2e_probes: Self::DEFAULT_E2E_PROBES,
        }
    }
}

/// One scheduled test.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathTestConfig {
    /// Destination: a host name (resolved at each run) or an IP address.
    #[serde(deserialize_with = "non_empty")]
    pub host: String,
    /// Destination port of TCP and UDP probes. Required for `tcp`; default
    /// 33434 for `udp` (a closed port answers with ICMP port unreachable);
    /// unused by `icmp`.
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u16>,
    /// `tcp` (default), `udp` or `icmp`.
    #[serde(default)]
    pub protocol: PathProtocol,
    /// Time between runs. Default `60s`, at least `1s`.
    #[serde(default = "default_test_interval", deserialize_with = "at_least_1s")]
    pub interval: Duration,
    /// Highest TTL probed. Default 30; between 1 and 64.
    #[serde(default = "default_max_ttl", deserialize_with = "max_ttl")]
    pub max_ttl: u8,
    /// How long a probe waits for its answer. Default `1s`; between `10ms`
    /// and `10s`.
    #[serde(default = "default_timeout", deserialize_with = "probe_timeout")]
    pub timeout: Duration,
    /// Probes per hop (traceroute rounds). Default 3; between 1 and 10.
    #[serde(default = "default_queries", deserialize_with = "queries")]
    pub queries: u32,
    /// End-to-end probes per run (sent with the full TTL, they measure RTT,
    /// loss and jitter to the destination). Default 20; 0 to 1000.
    #[serde(default = "default_e2e_probes", deserialize_with = "e2e_probes")]
    pub e2e_probes: u32,
    /// Attributes added to every point of this test.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Network namespace to probe from: a path such as `/run/netns/NAME`
    /// or `/proc/PID/ns/net`. Default: the agent's own.
    #[serde(default)]
    pub netns: Option<std::path::PathBuf>,
    /// After each run, a TLS handshake with the destination's port (TCP
    /// tests only): the server certificate's time left
    /// (`flowscope.tls.certificate.time_left`) and any handshake or
    /// verification failure (`flowscope.tls.check.failed`). Default false.
    #[serde(default)]
    pub tls: bool,
    /// The name the certificate must carry (SNI and verification). Default:
    /// `host`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM file of CA certificates to verify against instead of the
    /// system's trust store. Read when the configuration loads.
    #[serde(default, deserialize_with = "crate::exporters::pem_file_certs")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl PathTestConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    pub const DEFAULT_UDP_PORT: u16 = 33434;
}

fn default_test_interval() -> Duration {
    PathTestConfig::DEFAULT_INTERVAL
}
fn default_max_ttl() -> u8 {
    PathProbeConfig::DEFAULT_MAX_TTL
}
fn default_timeout() -> Duration {
    PathProbeConfig::DEFAULT_TIMEOUT
}
fn default_queries() -> u32 {
    PathProbeConfig::DEFAULT_QUERIES
}
fn default_e2e_probes() -> u32 {
    PathProbeConfig::DEFAULT_E2E_PROBES
}

impl PathTestConfig {
    /// The probing settings of this test.
    pub fn probe(&self) -> PathProbeConfig {
        PathProbeConfig {
            max_ttl: self.max_ttl,
            timeout: self.timeout,
            queries: self.queries,
            e2e_probes: self.e2e_probes,
        }
    }
}

impl PathDynamicConfig {
    /// The probing settings of dynamic tests.
    pub fn probe(&self) -> PathProbeConfig {
        PathProbeConfig {
            max_ttl: self.max_ttl,
            timeout: self.timeout,
            queries: self.queries,
            e2e_probes: self.e2e_probes,
        }
    }
}

/// Dynamic tests: destinations taken from observed client flows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathDynamicConfig {
    /// Switches dynamic tests on (needs an `ebpf` receiver). Default false.
    pub enabled: bool,
    /// Least time between two runs to one destination. Default `10m`, at
    /// least `1s`.
    #[serde(deserialize_with = "at_least_1s")]
    pub interval: Duration,
    /// A destination without traffic for this long is forgotten. Default
    /// `30m`, at least `1s`.
    #[serde(deserialize_with = "at_least_1s")]
    pub ttl: Duration,
    /// Most tests running at once. Default 4; 1 to 64.
    #[serde(deserialize_with = "workers")]
    pub workers: usize,
    /// Most new destinations taken per minute; more are counted and
    /// skipped until they are seen again. Default 150, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_new_per_minute: usize,
    /// Most destinations tracked at once. Default 1000, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_destinations: usize,
    /// When not empty, only destinations inside these networks are tested
    /// (CIDRs such as `10.0.0.0/8`, or single addresses). Default empty:
    /// every destination.
    #[serde(deserialize_with = "cidrs")]
    pub include_cidrs: Vec<String>,
    /// Destinations never tested (CIDRs or single addresses).
    #[serde(deserialize_with = "cidrs")]
    pub exclude_cidrs: Vec<String>,
    /// Destinations whose DNS name (`network.peer.domain`) ends with one of
    /// these are never tested (`example.com` also excludes
    /// `api.example.com`).
    pub exclude_domains: Vec<String>,
    /// Highest TTL probed. Default 30; between 1 and 64.
    #[serde(deserialize_with = "max_ttl")]
    pub max_ttl: u8,
    /// How long a probe waits for its answer. Default `1s`; between `10ms`
    /// and `10s`.
    #[serde(deserialize_with = "probe_timeout")]
    pub timeout: Duration,
    /// Probes per hop (traceroute rounds). Default 3; between 1 and 10.
    #[serde(deserialize_with = "queries")]
    pub queries: u32,
    /// End-to-end probes per run (sent with the full TTL, they measure RTT,
    /// loss and jitter to the destination). Default 20; 0 to 1000.
    #[serde(deserialize_with = "e2e_probes")]
    pub e2e_probes: u32,
}

impl PathDynamicConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
    pub const DEFAULT_TTL: Duration = Duration::from_secs(1800);
    pub const DEFAULT_WORKERS: usize = 4;
    pub const MAX_WORKERS: usize = 64;
    pub const DEFAULT_MAX_NEW_PER_MINUTE: usize = 150;
    pub const DEFAULT_MAX_DESTINATIONS: usize = 1000;
}

impl Default for PathDynamicConfig {
    fn default() -> Self {
        PathDynamicConfig {
            enabled: false,
            interval: Self::DEFAULT_INTERVAL,
            ttl: Self::DEFAULT_TTL,
            workers: Self::DEFAULT_WORKERS,
            max_new_per_minute: Self::DEFAULT_MAX_NEW_PER_MINUTE,
            max_destinations: Self::DEFAULT_MAX_DESTINATIONS,
            include_cidrs: Vec::new(),
            exclude_cidrs: Vec::new(),
            exclude_domains: Vec::new(),
            max_ttl: PathProbeConfig::DEFAULT_MAX_TTL,
            timeout: PathProbeConfig::DEFAULT_TIMEOUT,
            queries: PathProbeConfig::DEFAULT_QUERIES,
            e2e_probes: PathProbeConfig::DEFAULT_E2E_PROBES,
        }
    }
}

fn max_ttl<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    Ok(int_in(d, "max_ttl", 1, PathProbeConfig::MAX_MAX_TTL)? as u8)
}

fn probe_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value < Duration::from_millis(10) || value > Duration::from_secs(10) {
        return Err(de::Error::custom(format_args!(
            "timeout {value:?} must be between 10ms and 10s"
        )));
    }
    Ok(value)
}

fn queries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(int_in(d, "queries", 1, PathProbeConfig::MAX_QUERIES)? as u32)
}

fn e2e_probes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let value = u64::deserialize(d)?;
    if value > PathProbeConfig::MAX_E2E_PROBES {
        return Err(de::Error::custom(format_args!(
            "e2e_probes {value} must be at most {}",
            PathProbeConfig::MAX_E2E_PROBES
        )));
    }
    Ok(value as u32)
}

fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(int_in(d, "workers", 1, PathDynamicConfig::MAX_WORKERS as u64)? as usize)
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = String::deserialize(d)?;
    if value.trim().is_empty() {
        return Err(de::Error::custom("host must not be empty"));
    }
    Ok(value)
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Some(int_in(d, "port", 1, 65535)? as u16))
}

/// Checks `a.b.c.d/len` (or a bare address) syntax; the receiver parses
/// them again into networks.
fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let values = Vec::<String>::deserialize(d)?;
    for v in &values {
        net::parse(v, Spaces::Refuse).map_err(|e| match e {
            NetError::Address => de::Error::custom(format_args!("{v:?} is not an address or CIDR")),
            NetError::PrefixLength { max } | NetError::PrefixTooLong { max } => {
                de::Error::custom(format_args!("{v:?} has a prefix length outside 0..={max}"))
            }
        })?;
    }
    Ok(values)
}

#[cfg(test)]
mod dns_tests {
    use super::*;

    /// Loads a config whose only receiver is `kind` with settings `body`
    /// (YAML at indentation 0), returning that receiver or the message.
    fn parse_receiver(kind: &str, body: &str) -> Result<ReceiverConfig, String> {
        let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
        let text = format!(
            "receivers:\n  {kind}:\n{indented}exporters:\n  console:\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [{kind}]\n      exporters: [console]\n"
        );
        let loaded =
            crate::load_str_with_env(&text, "config.yaml", &|_| None).map_err(|e| e.to_string())?;
        loaded
            .config
            .receivers
            .values()
            .next()
            .cloned()
            .ok_or_else(|| "no receiver".to_string())
    }

    #[test]
    fn dns_defaults_and_fields() {
        let c = parse_receiver("dns", "{}").unwrap();
        assert_eq!(c, ReceiverConfig::Dns(DnsReceiverConfig::default()));
        let c = parse_receiver(
            "dns",
            "ports: [53, 5353]\nquery_timeout: 2s\nmax_outstanding_queries: 10\ntop_k: 5\n\
             name_cache_size: 7\nname_ttl_grace: 1m\nbuckets: [0.001, 0.1]\ncollection_interval: 30s",
        )
        .unwrap();
        let ReceiverConfig::Dns(d) = c else {
            panic!("not dns: {c:?}")
        };
        assert_eq!(d.ports, vec![53, 5353]);
        assert_eq!(d.query_timeout, Duration::from_secs(2));
        assert_eq!(
            (d.max_outstanding_queries, d.top_k, d.name_cache_size),
            (10, 5, 7)
        );
        assert_eq!(d.name_ttl_grace, Duration::from_secs(60));
        assert_eq!(d.buckets, vec![0.001, 0.1]);
        assert_eq!(d.collection_interval, Duration::from_secs(30));
    }

    #[test]
    fn ebpf_nat_block() {
        let c = parse_receiver(
            "ebpf",
            "nat:\n  max_tracked: 10\n  retention: 5s\n  namespace_rescan: 1s\n  events: false",
        )
        .unwrap();
        let ReceiverConfig::Ebpf(e) = c else {
            panic!("not ebpf: {c:?}")
        };
        assert_eq!(
            e.nat,
            NatConfig {
                enabled: true,
                max_tracked: 10,
                retention: Duration::from_secs(5),
                namespace_rescan: Duration::from_secs(1),
                events: false,
            }
        );
        for (body, want) in [
            ("nat: {max_tracked: 0}", "at least 1"),
            ("nat: {namespace_rescan: 0s}", "must be positive"),
            ("nat: {evnts: true}", "unknown field `evnts`"),
        ] {
            let e = parse_receiver("ebpf", body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.contains("receivers.ebpf.nat"), "{body}: {e}");
        }
    }

    #[test]
    fn dns_rejects_bad_values() {
        for (body, want) in [
            ("ports: []", "between 1 and 16 ports"),
            ("ports: [0]", "0 is not a port"),
            ("query_timeout: 1ms", "between 10ms and 1m"),
            ("top_k: 0", "at least 1"),
            ("bogus: 1", "unknown field `bogus`"),
        ] {
            let e = parse_receiver("dns", body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    fn parse(body: &str) -> Result<PathReceiverConfig, String> {
        let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
        let text = format!(
            "receivers:\n  path:\n{indented}exporters:\n  console:\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [path]\n      exporters: [console]\n"
        );
        let loaded =
            crate::load_str_with_env(&text, "config.yaml", &|_| None).map_err(|e| e.to_string())?;
        match loaded.config.receivers.values().next() {
            Some(ReceiverConfig::Path(p)) => Ok(p.clone()),
            other => Err(format!("not path: {other:?}")),
        }
    }

    #[test]
    fn path_defaults_and_fields() {
        assert_eq!(parse("{}").unwrap(), PathReceiverConfig::default());
        let c = parse(
            "tests:\n  - host: db.example\n    port: 5432\n  - host: 198.18.0.1\n    protocol: icmp\n    \
             interval: 5m\n    max_ttl: 64\n    timeout: 200ms\n    queries: 10\n    e2e_probes: 0\n    \
             tags: {team: core}\n    netns: /run/netns/blue\n\
             dynamic:\n  enabled: true\n  interval: 1m\n  workers: 2\n  max_new_per_minute: 5\n  \
             include_cidrs: [10.0.0.0/8, fd00::/8]\n  exclude_domains: [internal.example]",
        )
        .unwrap();
        let t = &c.tests[0];
        assert_eq!(
            (t.host.as_str(), t.port, t.protocol),
            ("db.example", Some(5432), PathProtocol::Tcp)
        );
        assert_eq!(t.interval, PathTestConfig::DEFAULT_INTERVAL);
        assert_eq!(t.probe(), PathProbeConfig::default());
        let t = &c.tests[1];
        assert_eq!((t.protocol, t.port), (PathProtocol::Icmp, None));
        assert_eq!(
            t.probe(),
            PathProbeConfig {
                max_ttl: 64,
                timeout: Duration::from_millis(200),
                queries: 10,
                e2e_probes: 0
            }
        );
        assert_eq!(t.tags.get("team").map(String::as_str), Some("core"));
        assert_eq!(
            t.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/blue"))
        );
        let d = &c.dynamic;
        assert!(d.enabled);
        assert_eq!(
            (d.interval, d.workers, d.max_new_per_minute),
            (Duration::from_secs(60), 2, 5)
        );
        assert_eq!(
            d.max_destinations,
            PathDynamicConfig::DEFAULT_MAX_DESTINATIONS
        );
        assert_eq!(d.ttl, PathDynamicConfig::DEFAULT_TTL);
        assert_eq!(d.include_cidrs, vec!["10.0.0.0/8", "fd00::/8"]);
    }

    #[test]
    fn path_rejects_bad_values_naming_the_key() {
        for (body, want) in [
            (
                "tests:\n  - host: a\n    max_ttl: 0",
                "max_ttl 0 must be between 1 and 64",
            ),
            (
                "tests:\n  - host: a\n    max_ttl: 300",
                "max_ttl 300 must be between 1 and 64",
            ),
            (
                "tests:\n  - host: a\n    queries: 0",
                "queries 0 must be between 1 and 10",
            ),
            (
                "tests:\n  - host: a\n    timeout: 1ms",
                "between 10ms and 10s",
            ),
            (
                "tests:\n  - host: a\n    port: 0",
                "port 0 must be between 1 and 65535",
            ),
            (
                "tests:\n  - host: a\n    protocol: sctp",
                "unknown variant `sctp`",
            ),
            ("tests:\n  - host: \"\"", "host must not be empty"),
            ("tests:\n  - port: 80", "missing field `host`"),
            (
                "dynamic:\n  workers: 0",
                "workers 0 must be between 1 and 64",
            ),
            (
                "dynamic:\n  exclude_cidrs: [10.0.0.0/40]",
                "prefix length outside 0..=32",
            ),
            (
                "dynamic:\n  include_cidrs: [nope]",
                "\"nope\" is not an address or CIDR",
            ),
            ("dynamic:\n  bogus: 1", "unknown field `bogus`"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        let e = parse("tests:\n  - host: a\n    max_ttl: 300").unwrap_err();
        assert!(e.contains("max_ttl"), "{e}");
    }
}
