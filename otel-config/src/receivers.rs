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
}

impl ReceiverConfig {
    /// Every receiver type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] = &["ebpf"];

    /// The component type of these settings (`ebpf`).
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiverConfig::Ebpf(_) => "ebpf",
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
            "ebpf" => component_body(deserializer).map(ReceiverConfig::Ebpf),
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
    /// `process.executable.name` and `process.command` to the Resource.
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
    /// Bucket bounds in seconds for `network.tcp.rtt`; strictly increasing.
    /// Default [`flowscope_model::hist::RTT_BOUNDS`].
    #[serde(deserialize_with = "bucket_bounds")]
    pub rtt_buckets: Vec<f64>,
    /// Bucket bounds in seconds for `network.tcp.connection.duration`;
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
    /// Default `ring_buffer_bytes` (1 MiB).
    pub const DEFAULT_RING_BUFFER_BYTES: u32 = 1 << 20;
    /// Smallest accepted `ring_buffer_bytes` (one page).
    pub const MIN_RING_BUFFER_BYTES: u32 = 4096;
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
            rtt_buckets: flowscope_model::hist::RTT_BOUNDS.to_vec(),
            duration_buckets: flowscope_model::hist::DURATION_BOUNDS.to_vec(),
        }
    }
}

fn collection_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value < EbpfReceiverConfig::MIN_COLLECTION_INTERVAL {
        return Err(de::Error::custom(format_args!(
            "collection_interval {value:?} is below the minimum of 1s"
        )));
    }
    Ok(value)
}

fn max_tracked_flows<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    if value == 0 {
        return Err(de::Error::custom("max_tracked_flows must be at least 1"));
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
