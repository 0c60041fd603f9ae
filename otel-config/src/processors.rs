//! Processor settings (`processors:` section).
//!
//! # Adding a processor type
//! 1. Define `FooProcessorConfig` below with `#[derive(Debug, Clone, PartialEq,
//!    Deserialize)]`, `#[serde(deny_unknown_fields)]` and doc comments on every
//!    field (they are the reference docs; mirror them in docs/configuration.md).
//!    Give it `#[serde(default)]` + `impl Default` if every field has a default.
//!    Validate values in the serde pass (`deserialize_with`), so errors carry
//!    the line and key path.
//! 2. Add a variant `Foo(FooProcessorConfig)` to [`ProcessorConfig`], its type
//!    string to [`ProcessorConfig::KINDS`] and to the `match` in
//!    [`ProcessorConfig::kind`], and one arm to the `match` in
//!    [`ProcessorSeed::deserialize`]. Nothing outside this file changes.
//! 3. Add a test at the bottom that parses a minimal YAML for the new type.
//!
//! The processors themselves live in the `flowscope-processors` crate;
//! docs/processors.md explains what each one does with these settings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use flowscope_model::net::{self, NetError, Spaces};
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use crate::ComponentId;
use crate::de::{component_body, duration, refuse_kind, unknown_kind};
use crate::validate::{at_least_a_second, positive_usize};

mod collector;
pub use collector::*;

/// The settings of one processor, selected by the component type of its id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProcessorConfig {
    /// `aggregate`: see [`AggregateConfig`].
    Aggregate(AggregateConfig),
    /// `filter`: see [`FilterProcessorConfig`].
    Filter(FilterProcessorConfig),
    /// `cloud`: see [`CloudProcessorConfig`].
    Cloud(CloudProcessorConfig),
    /// `peer`: see [`PeerProcessorConfig`].
    Peer(PeerProcessorConfig),
    /// `locality`: see [`LocalityProcessorConfig`].
    Locality(LocalityProcessorConfig),
    /// `cost`: see [`CostProcessorConfig`].
    Cost(CostProcessorConfig),
    /// `kubernetes`: see [`KubernetesProcessorConfig`].
    Kubernetes(KubernetesProcessorConfig),
    /// `batch`: see [`BatchProcessorConfig`].
    Batch(BatchProcessorConfig),
    /// `memory_limiter`: see [`MemoryLimiterConfig`].
    MemoryLimiter(MemoryLimiterConfig),
    /// `resource`: see [`ResourceProcessorConfig`].
    Resource(ResourceProcessorConfig),
    /// `attributes`: see [`AttributesProcessorConfig`].
    Attributes(AttributesProcessorConfig),
    /// `resourcedetection`: see [`ResourceDetectionConfig`].
    ResourceDetection(ResourceDetectionConfig),
}

impl ProcessorConfig {
    /// Every processor type this build knows, as written in the config.
    pub const KINDS: &'static [&'static str] = &[
        "aggregate",
        "filter",
        "cloud",
        "peer",
        "locality",
        "cost",
        "kubernetes",
        "batch",
        "memory_limiter",
        "resource",
        "attributes",
        "resourcedetection",
    ];

    /// The component type of these settings (`aggregate`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Aggregate(_) => "aggregate",
            ProcessorConfig::Filter(_) => "filter",
            ProcessorConfig::Cloud(_) => "cloud",
            ProcessorConfig::Peer(_) => "peer",
            ProcessorConfig::Locality(_) => "locality",
            ProcessorConfig::Cost(_) => "cost",
            ProcessorConfig::Kubernetes(_) => "kubernetes",
            ProcessorConfig::Batch(_) => "batch",
            ProcessorConfig::MemoryLimiter(_) => "memory_limiter",
            ProcessorConfig::Resource(_) => "resource",
            ProcessorConfig::Attributes(_) => "attributes",
            ProcessorConfig::ResourceDetection(_) => "resourcedetection",
        }
    }
}

/// Reads a processor's settings for the type named by its id.
pub(crate) struct ProcessorSeed<'a> {
    pub(crate) id: &'a ComponentId,
}

impl<'de> DeserializeSeed<'de> for ProcessorSeed<'_> {
    type Value = ProcessorConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.id.kind.as_str() {
            "aggregate" => component_body(deserializer).map(ProcessorConfig::Aggregate),
            "filter" => component_body(deserializer).map(ProcessorConfig::Filter),
            "cloud" => component_body(deserializer).map(ProcessorConfig::Cloud),
            "peer" => component_body(deserializer).map(ProcessorConfig::Peer),
            "locality" => component_body(deserializer).map(ProcessorConfig::Locality),
            "cost" => component_body(deserializer).map(ProcessorConfig::Cost),
            "kubernetes" => component_body(deserializer).map(ProcessorConfig::Kubernetes),
            "batch" => component_body(deserializer).map(ProcessorConfig::Batch),
            "memory_limiter" => component_body(deserializer).map(ProcessorConfig::MemoryLimiter),
            "resource" => component_body(deserializer).map(ProcessorConfig::Resource),
            "attributes" => component_body(deserializer).map(ProcessorConfig::Attributes),
            "resourcedetection" => {
                component_body(deserializer).map(ProcessorConfig::ResourceDetection)
            }
            "k8sattributes" => refuse_kind(deserializer, K8SATTRIBUTES_MESSAGE),
            other => unknown_kind(deserializer, "processor", other, ProcessorConfig::KINDS),
        }
    }
}

// ---------------------------------------------------------------- aggregate

/// `aggregate` processor: groups flows by the Resource keys and flow
/// attributes listed in `group_by` (everything else is dropped; sums add,
/// histograms merge, gauges add or pool), then caps the series per metric.
/// The grouping belongs to the pipeline, so two pipelines can ship a fine and
/// a coarse view of the same flows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateConfig {
    /// Which keys survive grouping; see [`GroupBy`].
    pub group_by: GroupBy,
    /// Most series per metric; series past it merge into one point with
    /// `otel.metric.overflow=true`. Default 2000, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_series: usize,
    /// Per-metric exceptions to `max_series`, by metric name
    /// (`network.flow.io: 500`). Each at least 1.
    #[serde(deserialize_with = "positive_map")]
    pub max_series_per_metric: BTreeMap<String, usize>,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            group_by: GroupBy::default(),
            max_series: 2000,
            max_series_per_metric: BTreeMap::new(),
        }
    }
}

/// The keys an `aggregate` processor keeps. A list omitted keeps every key
/// of that kind; an empty list keeps none. A key ending in `*` keeps every
/// key starting with the part before it (`flowscope.peer.tag.*`). Attributes
/// that belong to a metric itself (`network.io.direction`, `error.type`)
/// are always kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupBy {
    /// Resource keys to keep, e.g. `[service.name, host.name]`.
    #[serde(deserialize_with = "some_keys")]
    pub resource: Option<Vec<String>>,
    /// Flow attributes to keep, e.g. `[network.transport,
    /// service.peer.name, flowscope.network.locality]`.
    #[serde(deserialize_with = "some_keys")]
    pub attributes: Option<Vec<String>>,
}

// ------------------------------------------------------------------- filter

/// `filter` processor: keeps or drops flows. A flow is kept when loopback is
/// allowed or its peer is not a loopback address, when `include` is empty or
/// one of its rules matches, and when no `exclude` rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterProcessorConfig {
    /// Rules a flow must match one of (none: every flow passes this step).
    pub include: Vec<FlowMatch>,
    /// Rules that drop a flow when one matches.
    pub exclude: Vec<FlowMatch>,
    /// Keep flows whose peer is a loopback address (`127.0.0.0/8`, `::1`).
    /// Default true.
    pub loopback: bool,
}

impl Default for FilterProcessorConfig {
    fn default() -> Self {
        FilterProcessorConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            loopback: true,
        }
    }
}

/// One filter rule. It matches when every field it sets matches; a field
/// matches when any of its values does. A rule that sets nothing matches
/// every flow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowMatch {
    /// Peer address in one of these networks (`10.0.0.0/8`, `fd00::/8`; a
    /// bare address is a /32 or /128).
    pub cidrs: Vec<Cidr>,
    /// Service port (the peer's when the local side is the client, the local
    /// one when it is the server): `443` or a range `"8000-8100"`.
    pub ports: Vec<PortRange>,
    /// `tcp` or `udp`.
    pub transports: Vec<TransportName>,
    /// `service.name` of the local workload.
    pub services: Vec<String>,
    /// `process.executable.name` of the local workload.
    pub processes: Vec<String>,
}

/// A transport protocol name in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

// -------------------------------------------------------------------- cloud

/// `cloud` processor: adds `cloud.provider`, `cloud.platform`,
/// `cloud.region`, `cloud.availability_zone`, `cloud.account.id` and
/// `host.id` to every local Resource, from the instance metadata services of
/// AWS (IMDSv2), GCP and Azure, or from `set`. Detection runs in the
/// background once per process (the pipeline never waits for it); until it
/// answers, and on a host where none answers, only the `set` values are added
/// and the location is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudProcessorConfig {
    /// Providers to ask, in order (`aws`, `gcp`, `azure`); the first that
    /// answers wins. Default all three; `[]` turns detection off.
    pub detectors: Vec<CloudProviderName>,
    /// Time limit of each metadata request, connect included. Default `1s`.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Base URLs of the metadata services (for tests and proxies).
    pub endpoints: CloudEndpoints,
    /// Values that replace (or, with detection off, provide) the detected
    /// ones.
    pub set: CloudAttributes,
}

impl Default for CloudProcessorConfig {
    fn default() -> Self {
        CloudProcessorConfig {
            detectors: vec![
                CloudProviderName::Aws,
                CloudProviderName::Gcp,
                CloudProviderName::Azure,
            ],
            timeout: Duration::from_secs(1),
            endpoints: CloudEndpoints::default(),
            set: CloudAttributes::default(),
        }
    }
}

/// A cloud provider the `cloud` processor can ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudProviderName {
    /// Amazon Web Services (IMDSv2).
    Aws,
    /// Google Cloud (`Metadata-Flavor: Google`).
    Gcp,
    /// Microsoft Azure (Instance Metadata Service).
    Azure,
}

/// Base URLs (`http://host[:port]`) of the metadata services.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudEndpoints {
    /// Default `http://169.254.169.254`.
    #[serde(deserialize_with = "http_base_url")]
    pub aws: String,
    /// Default `http://169.254.169.254` (the address of
    /// `metadata.google.internal`, without a DNS lookup).
    #[serde(deserialize_with = "http_base_url")]
    pub gcp: String,
    /// Default `http://169.254.169.254`.
    #[serde(deserialize_with = "http_base_url")]
    pub azure: String,
}

impl Default for CloudEndpoints {
    fn default() -> Self {
        let link_local = "http://169.254.169.254".to_owned();
        CloudEndpoints {
            aws: link_local.clone(),
            gcp: link_local.clone(),
            azure: link_local,
        }
    }
}

/// Cloud Resource values set by configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudAttributes {
    /// `cloud.provider` (`aws`, `gcp`, `azure`, ...).
    pub provider: Option<String>,
    /// `cloud.platform` (`aws_ec2`, `gcp_compute_engine`, `azure.vm`, ...).
    pub platform: Option<String>,
    /// `cloud.region`.
    pub region: Option<String>,
    /// `cloud.availability_zone`.
    pub availability_zone: Option<String>,
    /// `cloud.account.id`.
    pub account_id: Option<String>,
    /// `host.id` (the instance id).
    pub host_id: Option<String>,
}

// --------------------------------------------------------------------- peer

/// A file the processor reads at start: it must exist and be readable now,
/// so `flowscope validate` reports it with its line (its content is checked
/// by `flowscope validate` too, after loading).
fn readable_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if let Err(e) = std::fs::File::open(&path) {
        return Err(de::Error::custom(format_args!(
            "cannot read `{}`: {e}",
            path.display()
        )));
    }
    if path.is_dir() {
        return Err(de::Error::custom(format_args!(
            "`{}` is a directory; give the file",
            path.display()
        )));
    }
    Ok(Some(path))
}

/// `peer` processor: names the remote side of each flow. Adds
/// `flowscope.peer.cloud.provider`/`region`/`service` from published cloud IP
/// ranges (longest prefix wins), `flowscope.peer.tag.<key>` from `tags`, and
/// `service.peer.name` from a local process listening on the peer
/// address, else from `services`, else from a specific cloud service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerProcessorConfig {
    /// Use the AWS `ip-ranges.json` and GCP `cloud.json` built into the
    /// binary for a provider whose file is not named below. Default true.
    pub builtin_ranges: bool,
    /// An AWS `ip-ranges.json` replacing the built-in one.
    #[serde(deserialize_with = "readable_file")]
    pub aws_ip_ranges: Option<PathBuf>,
    /// A GCP `cloud.json` replacing the built-in one.
    #[serde(deserialize_with = "readable_file")]
    pub gcp_cloud_ranges: Option<PathBuf>,
    /// An Azure service tags file (`ServiceTags_Public_*.json`); Azure ranges
    /// are only known with it.
    #[serde(deserialize_with = "readable_file")]
    pub azure_service_tags: Option<PathBuf>,
    /// How often the named files are checked for changes (size or
    /// modification time) and reloaded. Default `60s`.
    #[serde(deserialize_with = "duration")]
    pub reload_interval: Duration,
    /// Tags for peers in given networks; see [`CidrTag`].
    pub tags: Vec<CidrTag>,
    /// Peers with a known name; see [`NamedService`].
    pub services: Vec<NamedService>,
    /// Name a peer that is a process on this host after that process's
    /// `service.name`. Default true.
    pub local_services: bool,
}

impl Default for PeerProcessorConfig {
    fn default() -> Self {
        PeerProcessorConfig {
            builtin_ranges: true,
            aws_ip_ranges: None,
            gcp_cloud_ranges: None,
            azure_service_tags: None,
            reload_interval: Duration::from_secs(60),
            tags: Vec::new(),
            services: Vec::new(),
            local_services: true,
        }
    }
}

/// `flowscope.peer.tag.<key>: <value>` for every peer in `cidrs`. When several
/// entries set the same key for a peer, the most specific network wins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrTag {
    /// Networks the tags apply to (at least one).
    #[serde(deserialize_with = "non_empty_cidrs")]
    pub cidrs: Vec<Cidr>,
    /// Tag keys (letters, digits, `_`, `-`, `.`) and values.
    #[serde(deserialize_with = "tag_map")]
    pub tags: BTreeMap<String, String>,
}

/// `service.peer.name: <name>` for peers in `cidrs` (and on `ports`
/// when given). The most specific network wins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedService {
    /// The service name.
    pub name: String,
    /// Networks of the service (at least one).
    #[serde(deserialize_with = "non_empty_cidrs")]
    pub cidrs: Vec<Cidr>,
    /// Peer ports of the service (`5432`, `"8000-8100"`); none: any port.
    #[serde(default)]
    pub ports: Vec<PortRange>,
}

// ----------------------------------------------------------------- locality

/// `locality` processor: sets `flowscope.network.locality` from where the local side
/// is (its Resource's `cloud.*`, else `subnets`) and where the peer is (the
/// `peer` processor's `flowscope.peer.cloud.*`, else `subnets`). Put it after
/// `cloud` and `peer` in the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalityProcessorConfig {
    /// Networks whose zone (and region, provider) is known; see [`Subnet`].
    pub subnets: Vec<Subnet>,
}

/// A network in a known zone. The most specific network wins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// The network (`10.1.0.0/20`).
    pub cidr: Cidr,
    /// Its availability zone (`eu-west-1a`).
    pub zone: String,
    /// Its region; when omitted, the region of the local host is assumed.
    pub region: Option<String>,
    /// Its cloud provider; when omitted, the local host's is assumed.
    pub provider: Option<String>,
}

// --------------------------------------------------------------------- cost

/// `cost` processor: prices each flow's bytes by its `flowscope.network.locality` and
/// adds them up in `flowscope.flow.cost` (USD). Put it after `locality`.
/// docs/costs.md explains the numbers and where prices come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostProcessorConfig {
    /// USD per GiB (2^30 bytes) for each locality; see [`Prices`].
    pub prices: Prices,
    /// Which bytes are charged: `transmit` (egress, the default) and/or
    /// `receive`.
    pub directions: Vec<DirectionName>,
}

impl Default for CostProcessorConfig {
    fn default() -> Self {
        CostProcessorConfig {
            prices: Prices::default(),
            directions: vec![DirectionName::Transmit],
        }
    }
}

/// USD per GiB for each `flowscope.network.locality` that is billed. Every price is a
/// finite number >= 0; default 0 (not billed).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prices {
    /// Between availability zones of one region.
    #[serde(deserialize_with = "price")]
    pub cross_zone: f64,
    /// Between regions of one provider.
    #[serde(deserialize_with = "price")]
    pub cross_region: f64,
    /// To another cloud provider.
    #[serde(deserialize_with = "price")]
    pub cross_cloud: f64,
    /// To the internet.
    #[serde(deserialize_with = "price")]
    pub internet: f64,
}

/// A byte direction, as `network.io.direction` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionName {
    /// Bytes the local side sent.
    Transmit,
    /// Bytes the local side received.
    Receive,
}

// --------------------------------------------------------------- kubernetes

/// `kubernetes` processor: names the local pod of each flow (`k8s.*` and
/// `container.name` on its Resource, from the process's cgroup and the
/// node's kubelet) and peers that are pods or Services of the cluster
/// (`service.peer.name`, `service.peer.namespace`,
/// `flowscope.peer.k8s.*`, from the API server). Every request runs in the
/// background; flows are named from the last good answer and never wait.
/// docs/kubernetes.md explains what is resolved and the RBAC it needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesProcessorConfig {
    /// The node's kubelet (local pods); see [`KubeletConfig`].
    pub kubelet: KubeletConfig,
    /// The API server (peer pods and Services); see [`KubeApiConfig`].
    pub api: KubeApiConfig,
    /// The service-account token sent as `Authorization: Bearer` to both,
    /// re-read before each request (projected tokens rotate). Default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub token_path: PathBuf,
    /// The CA bundle (PEM) that signed the API server's certificate, and
    /// the kubelet's unless `kubelet.ca_file` says otherwise. Default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`.
    pub ca_file: PathBuf,
    /// Time limit of one request (a list, a kubelet `/pods`), connect
    /// included; a watch's limit is between two lines. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// `k8s.cluster.name` on every flow Resource of this node (Kubernetes
    /// has no API for a cluster's name). Default: not set.
    #[serde(deserialize_with = "some_name")]
    pub cluster_name: Option<String>,
}

impl Default for KubernetesProcessorConfig {
    fn default() -> Self {
        KubernetesProcessorConfig {
            kubelet: KubeletConfig::default(),
            api: KubeApiConfig::default(),
            token_path: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            ca_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
            timeout: Duration::from_secs(5),
            cluster_name: None,
        }
    }
}

fn some_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(Some(s.trim().to_owned()))
}

/// Where and how often the kubelet's `/pods` is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeletConfig {
    /// Base URL of the kubelet (`https://10.0.0.5:10250`). Default
    /// `https://$NODE_IP:10250`, else `https://$K8S_NODE_NAME:10250`, else
    /// `https://localhost:10250` (the agent's environment at start).
    #[serde(deserialize_with = "some_https_url")]
    pub endpoint: Option<String>,
    /// How often `/pods` is read. Default `30s`, at least `1s`.
    #[serde(deserialize_with = "at_least_a_second")]
    pub refresh_interval: Duration,
    /// A flow from a pod the last answer did not list asks for a new read
    /// at once, but at most once per this time. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub min_refresh_interval: Duration,
    /// A CA bundle (PEM) for the kubelet's serving certificate when the
    /// cluster CA did not sign it. Default: `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// Accept any kubelet certificate (kubelets with self-signed serving
    /// certificates). Default false.
    pub insecure_skip_verify: bool,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            endpoint: None,
            refresh_interval: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(5),
            ca_file: None,
            insecure_skip_verify: false,
        }
    }
}

/// The API server's list and watch of pods, Services and ReplicaSets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeApiConfig {
    /// Ask the API server at all. Without it peers are not named and a
    /// ReplicaSet's Deployment comes from the pod-template-hash rule.
    /// Default true.
    pub enabled: bool,
    /// Base URL of the API server. Default
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` (the
    /// in-cluster variables every pod has).
    #[serde(deserialize_with = "some_https_url")]
    pub endpoint: Option<String>,
    /// Most pods, Services and ReplicaSets held together; past it new
    /// ones are not held and counted
    /// (`flowscope.events.lost{flowscope.source=kubernetes.api,
    /// flowscope.reason=table_full}`). Default 100000, at least 1.
    #[serde(deserialize_with = "positive_usize")]
    pub max_objects: usize,
    /// First wait before reconnecting after a failed list or watch; it
    /// doubles up to `max_backoff`. Default `1s`.
    #[serde(deserialize_with = "duration")]
    pub backoff: Duration,
    /// Longest wait between reconnects. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
}

impl Default for KubeApiConfig {
    fn default() -> Self {
        KubeApiConfig {
            enabled: true,
            endpoint: None,
            max_objects: 100_000,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

fn some_https_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let rest = s.strip_prefix("https://").ok_or_else(|| {
        de::Error::custom(format_args!(
            "`{s}` is not an https:// URL (the kubelet and the API server speak TLS)"
        ))
    })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(de::Error::custom(format_args!("`{s}` has no host")));
    }
    Ok(Some(s.trim_end_matches('/').to_owned()))
}

// ------------------------------------------------------------ value types

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
/// Host bits past the prefix must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    /// The network.
    pub fn net(&self) -> IpNet {
        self.0
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("`{s}` is not a CIDR ({why}); write e.g. `10.0.0.0/8` or `fd00::/8`")
        };
        let net = net::parse(s, Spaces::Trim).map_err(|e| match e {
            NetError::Address => bad("bad address"),
            NetError::PrefixLength { .. } => bad("bad prefix length"),
            NetError::PrefixTooLong { .. } => bad("prefix length too long"),
        })?;
        if net::has_host_bits(&net) {
            return Err(bad("host bits set past the prefix"));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// An inclusive port range; a single port `443` or `"8000-8100"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (443) or a port range (\"8000-8100\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                let p = u16::try_from(v)
                    .map_err(|_| E::custom(format_args!("port {v} is above 65535")))?;
                Ok(PortRange { first: p, last: p })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format_args!("port {v} is negative")))?;
                self.visit_u64(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                let bad = || {
                    E::custom(format_args!(
                        "`{v}` is not a port or a range `first-last` of ports 0-65535"
                    ))
                };
                let (a, b) = v.split_once('-').unwrap_or((v, v));
                let first: u16 = a.trim().parse().map_err(|_| bad())?;
                let last: u16 = b.trim().parse().map_err(|_| bad())?;
                if last < first {
                    return Err(E::custom(format_args!(
                        "port range `{v}` ends before it starts"
                    )));
                }
                Ok(PortRange { first, last })
            }
        }
        d.deserialize_any(V)
    }
}

fn positive_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, usize>, D::Error> {
    let map = BTreeMap::<String, usize>::deserialize(d)?;
    if let Some((k, _)) = map.iter().find(|(_, v)| **v == 0) {
        return Err(de::Error::custom(format_args!("`{k}`: must be at least 1")));
    }
    Ok(map)
}

fn some_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let keys = Vec::<String>::deserialize(d)?;
    if keys.iter().any(|k| k.trim().is_empty()) {
        return Err(de::Error::custom("keys must not be empty"));
    }
    Ok(Some(keys))
}

fn non_empty_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    let v = Vec::<Cidr>::deserialize(d)?;
    if v.is_empty() {
        return Err(de::Error::custom("at least one CIDR is required"));
    }
    Ok(v)
}

fn tag_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    if map.is_empty() {
        return Err(de::Error::custom("at least one tag is required"));
    }
    for k in map.keys() {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(de::Error::custom(format_args!(
                "tag key `{k}` may only contain letters, digits, `_`, `-` and `.`"
            )));
        }
    }
    Ok(map)
}

fn http_base_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let rest = s.strip_prefix("http://").ok_or_else(|| {
        de::Error::custom(format_args!(
            "`{s}`: metadata endpoints are plain `http://host[:port]` URLs"
        ))
    })?;
    if rest.trim_end_matches('/').is_empty() || rest.trim_end_matches('/').contains('/') {
        return Err(de::Error::custom(format_args!(
            "`{s}`: give only the scheme and host (`http://169.254.169.254`), no path"
        )));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn price<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v < 0.0 {
        return Err(de::Error::custom(format_args!(
            "price {v} must be a finite number >= 0 (USD per GiB)"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str_with_env;

    /// Loads `processors:` YAML (indented by 2) inside a minimal valid config.
    fn load(processors: &str, used: &str) -> Result<crate::Config, crate::ConfigError> {
        let text = format!(
            "receivers:\n  ebpf:\nprocessors:\n{processors}\nexporters:\n  console:\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      \
             processors: [{used}]\n      exporters: [console]\n"
        );
        load_str_with_env(&text, "test.yaml", &|_| None).map(|l| l.config)
    }

    fn one(processors: &str, id: &str) -> ProcessorConfig {
        let config = load(processors, id).unwrap_or_else(|e| panic!("{e}"));
        let id: ComponentId = id.parse().unwrap();
        config.processors[&id].clone()
    }

    #[test]
    fn aggregate_defaults_and_group_by() {
        assert_eq!(
            one("  aggregate:", "aggregate"),
            ProcessorConfig::Aggregate(AggregateConfig::default())
        );
        let c = one(
            "  aggregate/coarse:\n    group_by:\n      resource: [service.name]\n      attributes: [flowscope.peer.tag.*]\n    max_series: 100\n    max_series_per_metric: {network.flow.io: 5}",
            "aggregate/coarse",
        );
        let ProcessorConfig::Aggregate(a) = c else {
            panic!("{c:?}")
        };
        assert_eq!(a.group_by.resource, Some(vec!["service.name".to_owned()]));
        assert_eq!(
            a.group_by.attributes,
            Some(vec!["flowscope.peer.tag.*".to_owned()])
        );
        assert_eq!(a.max_series, 100);
        assert_eq!(a.max_series_per_metric["network.flow.io"], 5);
        let e = load("  aggregate:\n    max_series: 0", "aggregate")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_series") && e.contains("at least 1"), "{e}");
    }

    #[test]
    fn filter_rules_parse_cidrs_ports_and_transports() {
        let c = one(
            "  filter:\n    loopback: false\n    exclude:\n      - cidrs: [10.0.0.0/8, \"fd00::/8\", 198.18.0.1]\n        ports: [443, \"8000-8100\"]\n        transports: [udp]",
            "filter",
        );
        let ProcessorConfig::Filter(f) = c else {
            panic!("{c:?}")
        };
        assert!(!f.loopback);
        let r = &f.exclude[0];
        assert_eq!(r.cidrs[2], Cidr("198.18.0.1/32".parse().unwrap()));
        assert_eq!(r.cidrs[1].net().prefix_len(), 8);
        assert_eq!(
            r.ports,
            vec![
                PortRange {
                    first: 443,
                    last: 443
                },
                PortRange {
                    first: 8000,
                    last: 8100
                }
            ]
        );
        assert_eq!(r.transports, vec![TransportName::Udp]);
        for (bad, want) in [
            ("cidrs: [10.0.0.1/8]", "host bits"),
            ("cidrs: [10.0.0.0/33]", "too long"),
            ("ports: [70000]", "above 65535"),
            ("ports: [\"9-3\"]", "ends before"),
            ("transports: [sctp]", "sctp"),
        ] {
            let e = load(&format!("  filter:\n    include:\n      - {bad}"), "filter")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("test.yaml:6"), "{bad}: {e}");
        }
    }

    #[test]
    fn cloud_peer_locality_cost_parse() {
        let c = one(
            "  cloud:\n    detectors: [aws]\n    timeout: 200ms\n    endpoints: {aws: \"http://127.0.0.1:9\"}\n    set: {region: eu-west-1}",
            "cloud",
        );
        let ProcessorConfig::Cloud(c) = c else {
            panic!("{c:?}")
        };
        assert_eq!(c.detectors, vec![CloudProviderName::Aws]);
        assert_eq!(c.timeout, Duration::from_millis(200));
        assert_eq!(c.endpoints.aws, "http://127.0.0.1:9");
        assert_eq!(c.endpoints.gcp, "http://169.254.169.254");
        assert_eq!(c.set.region.as_deref(), Some("eu-west-1"));
        let e = load("  cloud:\n    endpoints: {azure: \"https://x\"}", "cloud")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://"), "{e}");

        let p = one(
            "  peer:\n    tags:\n      - cidrs: [198.18.0.0/15]\n        tags: {env: lab}\n    services:\n      - name: db\n        cidrs: [198.18.5.5]\n        ports: [5432]",
            "peer",
        );
        let ProcessorConfig::Peer(p) = p else {
            panic!("{p:?}")
        };
        assert!(p.builtin_ranges && p.local_services);
        assert_eq!(p.tags[0].tags["env"], "lab");
        assert_eq!(p.services[0].name, "db");
        let e = load(
            "  peer:\n    tags:\n      - cidrs: [198.18.0.0/15]\n        tags: {\"a b\": x}",
            "peer",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tag key"), "{e}");

        let l = one(
            "  locality:\n    subnets:\n      - {cidr: 198.18.0.0/24, zone: z1}",
            "locality",
        );
        let ProcessorConfig::Locality(l) = l else {
            panic!("{l:?}")
        };
        assert_eq!(l.subnets[0].zone, "z1");

        let c = one(
            "  cost:\n    prices: {cross_zone: 0.01, internet: 0.09}",
            "cost",
        );
        let ProcessorConfig::Cost(c) = c else {
            panic!("{c:?}")
        };
        assert_eq!(c.prices.cross_zone, 0.01);
        assert_eq!(c.prices.cross_region, 0.0);
        assert_eq!(c.directions, vec![DirectionName::Transmit]);
        let e = load("  cost:\n    prices: {internet: -1}", "cost")
            .unwrap_err()
            .to_string();
        assert!(e.contains("finite number >= 0"), "{e}");
    }

    #[test]
    fn kubernetes_defaults_and_errors_with_lines() {
        let k = one("  kubernetes:", "kubernetes");
        let ProcessorConfig::Kubernetes(k) = k else {
            panic!("{k:?}")
        };
        assert_eq!(k, KubernetesProcessorConfig::default());
        assert!(k.api.enabled);
        assert_eq!(k.kubelet.refresh_interval, Duration::from_secs(30));
        let k = one(
            "  kubernetes:\n    kubelet: {endpoint: \"https://198.18.0.1:10250/\", refresh_interval: 1h, insecure_skip_verify: true}\n    api: {enabled: false, max_objects: 10}\n    timeout: 300ms\n    cluster_name: prod-eu",
            "kubernetes",
        );
        let ProcessorConfig::Kubernetes(k) = k else {
            panic!("{k:?}")
        };
        assert_eq!(
            k.kubelet.endpoint.as_deref(),
            Some("https://198.18.0.1:10250")
        );
        assert_eq!(k.kubelet.refresh_interval, Duration::from_secs(3600));
        assert!(k.kubelet.insecure_skip_verify && !k.api.enabled);
        assert_eq!(
            (k.api.max_objects, k.timeout),
            (10, Duration::from_millis(300))
        );
        assert_eq!(k.cluster_name.as_deref(), Some("prod-eu"));
        for (yaml, want) in [
            (
                "    kubelet: {endpoint: \"http://x:10250\"}",
                "not an https:// URL",
            ),
            ("    kubelet: {refresh_interval: 10ms}", "at least 1s"),
            ("    api: {max_objects: 0}", "at least 1"),
            ("    apiserver: {}", "unknown field"),
            ("    cluster_name: \"\"", "must not be empty"),
        ] {
            let e = load(&format!("  kubernetes:\n{yaml}"), "kubernetes")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("test.yaml:5"), "{yaml}: {e}");
        }
    }
}
