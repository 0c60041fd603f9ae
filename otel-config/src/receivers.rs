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

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer};

use crate::ComponentId;
use crate::de::{bucket_bounds, component_body, duration, unknown_kind};

/// The settings of one receiver, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReceiverConfig {
    /// `ebpf`: TCP and UDP flows from the kernel.
    Ebpf(EbpfReceiverConfig),
    /// `dns`: every DNS lookup on the host, from captured packets.
    Dns(DnsReceiverConfig),
}

impl ReceiverConfig {
    /// Every receiver type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] = &["ebpf", "dns"];

    /// The component type of these settings (`ebpf`).
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiverConfig::Ebpf(_) => "ebpf",
            ReceiverConfig::Dns(_) => "dns",
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
    /// Size of the kernel-to-user ring buffer in bytes. Default 1 MiB; must be
    /// a power of two and at least 4096 (one page), as the kernel requires.
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
    /// Default `ring_buffer_bytes` (1 MiB).
    pub const DEFAULT_RING_BUFFER_BYTES: u32 = 1 << 20;
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
    // The kernel's flow map is sized by it (a u32).
    if u32::try_from(value).is_err() {
        return Err(de::Error::custom(format_args!(
            "max_tracked_flows {value} does not fit a kernel map (at most {})",
            u32::MAX
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
    #[serde(deserialize_with = "at_least_one")]
    pub max_outstanding_queries: usize,
    /// Question names kept per client; past them names fold to their
    /// registrable domain, and past as many domains to `_other`.
    /// Default 100, at least 1.
    #[serde(deserialize_with = "at_least_one")]
    pub top_k: usize,
    /// Entries of the IP -> name cache that sets `flowscope.peer.domain` on
    /// flows. Default 65536, at least 1.
    #[serde(deserialize_with = "at_least_one")]
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

fn check_at_least_one(value: usize) -> Result<(), String> {
    if value == 0 {
        return Err("must be at least 1".into());
    }
    Ok(())
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    check_at_least_one(value).map_err(de::Error::custom)?;
    Ok(value)
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
