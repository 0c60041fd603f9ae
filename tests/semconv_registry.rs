//! The registry test: every name flowscope emits, held against the
//! OpenTelemetry semantic conventions registry itself (the YAML of
//! semantic-conventions v1.44.0, vendored in `model/semconv/v1.44.0/`).
//!
//! What it checks (docs/telemetry.md, "The naming rule"):
//! - every attribute key outside `flowscope.` is defined in the registry,
//!   not deprecated, with the type flowscope emits it with; no value is a
//!   deprecated enum member, and the values of the enums flowscope fills
//!   from the registry (`cloud.platform`, `network.transport`, ...) are
//!   current members;
//! - every metric outside `flowscope.` (bar `network.flow.io`, the open
//!   network flow proposal the contract keeps) is a registry metric with the
//!   registry's instrument and unit, and every point carries its required
//!   attributes;
//! - nothing lives in an OpenTelemetry namespace without being defined
//!   there: the first two rules admit only registry names outside
//!   `flowscope.`.
//!
//! The names come from two places: the constants of `model/src/names.rs`,
//! and real output: the connection table fed kernel records, the DNS engine
//! fed packets, the processors, the agent's own telemetry, all encoded by
//! the OTLP encoder and read back from its JSON mapping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flowscope_common::{AF_INET, Conn, Event, Owner, UdpKey, UdpStats, event_kind, role};
use flowscope_model::names::{attr, k8s, metric, resource, value};
use flowscope_model::{MetricBatch, Telemetry};
use flowscope_receiver::collector::{Collector, CollectorSettings, Granularity};
use flowscope_receiver::dns::engine::{Captured, Direction, FixedOwner};
use flowscope_receiver::dns::packet::build;
use flowscope_receiver::dns::{DnsNames, Engine, EngineSettings};
use flowscope_receiver::drops::attribute::{DropDelta, Packet};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value as J;

// ---------------------------------------------------------------------------
// The registry

/// A registry file: `groups` (definition/1), or top-level `attributes`
/// keyed by `key` (definition/2, e.g. `server/registry.yaml`).
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(default)]
    attributes: Vec<AttrDef>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    attributes: Vec<AttrDef>,
    metric_name: Option<String>,
    instrument: Option<String>,
    unit: Option<String>,
    deprecated: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct AttrDef {
    #[serde(alias = "key")]
    id: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(rename = "type")]
    ty: Option<TypeDef>,
    requirement_level: Option<Requirement>,
    deprecated: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TypeDef {
    Name(String),
    Enum { members: Vec<Member> },
}

#[derive(Deserialize)]
struct Member {
    value: MemberValue,
    deprecated: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MemberValue {
    Str(String),
    Int(i64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Requirement {
    Level(String),
    Other(IgnoredAny),
}

/// An attribute of the registry.
#[derive(Debug, Clone)]
struct Attribute {
    /// `string`, `int`, `boolean`, `double`, `string[]`, ... or
    /// `template[string]` (then the id is a prefix: `k8s.pod.label.<key>`).
    ty: String,
    deprecated: bool,
    /// Current and deprecated enum member values (empty if not an enum).
    members: Vec<String>,
    deprecated_members: Vec<String>,
}

#[derive(Debug, Clone)]
struct MetricDef {
    instrument: String,
    unit: String,
    required: Vec<String>,
    deprecated: bool,
}

struct Registry {
    attributes: BTreeMap<String, Attribute>,
    metrics: BTreeMap<String, MetricDef>,
}

/// Keys the contract uses that no registry group defines, with why.
const KEY_EXCEPTIONS: &[(&str, &str)] = &[(
    "otel.metric.overflow",
    "the OpenTelemetry metrics SDK specification's cardinality-limit overflow attribute",
)];
/// Enum attributes whose values flowscope takes from the registry's
/// members. (Registry enums are open: `otel.component.type` lists SDK
/// component types and asks for the implementation's own type name
/// otherwise; flowscope's exporters with a registry type are checked
/// against its members below, the others carry their Rust type path.) A
/// deprecated member is rejected for every enum.
const CLOSED_ENUMS: &[&str] = &[
    "cloud.provider",
    "cloud.platform",
    "network.transport",
    "network.type",
    "network.io.direction",
    "os.type",
];

/// Metrics outside `flowscope.` that the registry does not define.
const METRIC_EXCEPTIONS: &[(&str, &str)] = &[(
    "network.flow.io",
    "the open network flow metrics proposal (semantic-conventions PR 3828)",
)];

fn registry_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("model/semconv/v1.44.0")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

impl Registry {
    fn load(dir: &Path) -> Registry {
        let mut files = Vec::new();
        yaml_files(dir, &mut files);
        files.sort();
        assert!(
            !files.is_empty(),
            "no registry YAML under {}",
            dir.display()
        );
        let mut attributes = BTreeMap::new();
        let mut metric_groups = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).expect("read registry file");
            let file: File =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let top = Group {
                kind: "attribute_group".to_owned(),
                attributes: file.attributes,
                metric_name: None,
                instrument: None,
                unit: None,
                deprecated: None,
            };
            for g in file.groups.into_iter().chain([top]) {
                for a in &g.attributes {
                    let (Some(id), Some(ty)) = (&a.id, &a.ty) else {
                        continue;
                    };
                    let (ty, members, deprecated_members) = match ty {
                        TypeDef::Name(n) => (n.clone(), Vec::new(), Vec::new()),
                        TypeDef::Enum { members } => {
                            let mut cur = Vec::new();
                            let mut old = Vec::new();
                            let mut ty = "string";
                            for m in members {
                                let v = match &m.value {
                                    MemberValue::Str(s) => s.clone(),
                                    MemberValue::Int(i) => {
                                        ty = "int";
                                        i.to_string()
                                    }
                                };
                                if m.deprecated.is_some() {
                                    old.push(v);
                                } else {
                                    cur.push(v);
                                }
                            }
                            (ty.to_owned(), cur, old)
                        }
                    };
                    attributes.insert(
                        id.clone(),
                        Attribute {
                            ty,
                            deprecated: a.deprecated.is_some(),
                            members,
                            deprecated_members,
                        },
                    );
                }
                if g.kind == "metric" {
                    metric_groups.push(g);
                }
            }
        }
        let mut metrics = BTreeMap::new();
        for g in metric_groups {
            let Some(name) = g.metric_name else { continue };
            let required = g
                .attributes
                .iter()
                .filter(|a| matches!(&a.requirement_level, Some(Requirement::Level(l)) if l == "required"))
                .filter_map(|a| a.reference.clone().or_else(|| a.id.clone()))
                .collect();
            metrics.insert(
                name,
                MetricDef {
                    instrument: g.instrument.unwrap_or_default(),
                    unit: g.unit.unwrap_or_default(),
                    required,
                    deprecated: g.deprecated.is_some(),
                },
            );
        }
        Registry {
            attributes,
            metrics,
        }
    }

    /// The registry's definition of `key`: its own, or the template it
    /// falls under.
    fn attribute(&self, key: &str) -> Option<&Attribute> {
        if let Some(a) = self.attributes.get(key) {
            return Some(a);
        }
        self.attributes.iter().find_map(|(id, a)| {
            (a.ty.starts_with("template[") && key.starts_with(&format!("{id}."))).then_some(a)
        })
    }

    /// Checks one key as emitted with a value of type `ty` (`string`,
    /// `int`, `boolean`, `double`; None when only the name is known).
    fn check_key(&self, key: &str, ty: Option<&str>, value: Option<&str>) -> Result<(), String> {
        if key.starts_with("flowscope.") || KEY_EXCEPTIONS.iter().any(|(k, _)| *k == key) {
            return Ok(());
        }
        let Some(a) = self.attribute(key) else {
            return Err(format!(
                "`{key}` is not defined by the semantic conventions registry; \
                 a name they do not define belongs under `flowscope.`"
            ));
        };
        if a.deprecated {
            return Err(format!("`{key}` is deprecated in the registry"));
        }
        let want =
            a.ty.strip_prefix("template[")
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(&a.ty);
        if let Some(ty) = ty
            && ty != want
        {
            return Err(format!(
                "`{key}` is emitted as {ty}, the registry says {want}"
            ));
        }
        if let Some(v) = value
            && !a.members.iter().any(|m| m == v)
        {
            let why = if a.deprecated_members.iter().any(|m| m == v) {
                Some("a deprecated member")
            } else if CLOSED_ENUMS.contains(&key) {
                Some("not a member")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(format!(
                    "`{key}={v}` is {why} of the registry's enum (members: {})",
                    a.members.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Checks one metric as emitted: its instrument, unit, and for each
    /// point the keys it carries.
    fn check_metric(
        &self,
        name: &str,
        instrument: &str,
        unit: &str,
        points: &[BTreeSet<String>],
    ) -> Result<(), String> {
        if name.starts_with("flowscope.") {
            return Ok(());
        }
        if METRIC_EXCEPTIONS.iter().any(|(n, _)| *n == name) {
            return Ok(());
        }
        let Some(m) = self.metrics.get(name) else {
            return Err(format!(
                "metric `{name}` is not defined by the semantic conventions registry; \
                 a name they do not define belongs under `flowscope.`"
            ));
        };
        if m.deprecated {
            return Err(format!("metric `{name}` is deprecated in the registry"));
        }
        if m.instrument != instrument {
            return Err(format!(
                "metric `{name}` is emitted as {instrument}, the registry says {}",
                m.instrument
            ));
        }
        if m.unit != unit {
            return Err(format!(
                "metric `{name}` has unit `{unit}`, the registry says `{}`",
                m.unit
            ));
        }
        for keys in points {
            for r in &m.required {
                if !keys.contains(r) {
                    return Err(format!(
                        "a `{name}` point lacks the required attribute `{r}`: {keys:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// What flowscope emits

/// One metric as emitted.
struct Seen {
    /// `counter`, `updowncounter`, `gauge` or `histogram`, as the registry
    /// names instruments.
    instrument: String,
    unit: String,
    description: String,
    /// The attribute keys of each point.
    points: Vec<BTreeSet<String>>,
}

/// Every key and metric of an OTLP JSON request.
#[derive(Default)]
struct Emitted {
    /// (key, type, value as text)
    keys: BTreeSet<(String, String, String)>,
    /// By metric name.
    metrics: BTreeMap<String, Seen>,
}

fn attributes(list: &J, out: &mut Emitted) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for kv in list.as_array().into_iter().flatten() {
        let key = kv["key"].as_str().expect("key").to_owned();
        let v = &kv["value"];
        let (ty, text) = if let Some(s) = v.get("stringValue") {
            ("string", s.as_str().unwrap_or_default().to_owned())
        } else if let Some(i) = v.get("intValue") {
            ("int", i.to_string())
        } else if let Some(b) = v.get("boolValue") {
            ("boolean", b.to_string())
        } else if let Some(d) = v.get("doubleValue") {
            ("double", d.to_string())
        } else {
            ("other", v.to_string())
        };
        out.keys.insert((key.clone(), ty.to_owned(), text));
        keys.insert(key);
    }
    keys
}

impl Emitted {
    fn add(&mut self, batch: &MetricBatch) {
        let enc = flowscope_exporters::encode(batch);
        assert_eq!(enc.skipped, 0);
        let line = flowscope_exporters::json::request_to_json(&enc.request).expect("json");
        let v: J = serde_json::from_str(&line).expect("parse");
        for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
            attributes(&rm["resource"]["attributes"], self);
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    let (instrument, data) = if let Some(s) = m.get("sum") {
                        if s["isMonotonic"] == J::Bool(true) {
                            ("counter", s)
                        } else {
                            ("updowncounter", s)
                        }
                    } else if let Some(g) = m.get("gauge") {
                        ("gauge", g)
                    } else if let Some(h) = m.get("histogram") {
                        ("histogram", h)
                    } else {
                        panic!("unexpected metric data: {m}")
                    };
                    let name = m["name"].as_str().expect("name").to_owned();
                    let unit = m["unit"].as_str().unwrap_or_default().to_owned();
                    let description = m["description"].as_str().unwrap_or_default().to_owned();
                    let mut points = Vec::new();
                    for dp in data["dataPoints"].as_array().into_iter().flatten() {
                        points.push(attributes(&dp["attributes"], self));
                    }
                    let e = self.metrics.entry(name).or_insert_with(|| Seen {
                        instrument: instrument.to_owned(),
                        unit,
                        description,
                        points: Vec::new(),
                    });
                    e.points.extend(points);
                }
            }
        }
    }
}

fn conn(lport: u16, rport: u16, peer: [u8; 4], r: u8) -> Conn {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"test");
    let mut c = Conn {
        opened_ns: 1_000,
        bytes_tx: 1_000,
        bytes_rx: 2_000,
        segs_out: 10,
        segs_in: 12,
        total_retrans: 1,
        srtt_us: 200,
        rttvar_us: 50,
        resets_tx: 1,
        resets_rx: 1,
        tgid: std::process::id(),
        netns: 1,
        family: AF_INET,
        lport,
        rport,
        role: r,
        established: 1,
        comm,
        ..Conn::default()
    };
    c.laddr[..4].copy_from_slice(&[198, 18, 0, 1]);
    c.raddr[..4].copy_from_slice(&peer);
    c
}

/// Flows from the connection table, fed the records the kernel side sends,
/// at process granularity with the command line opted in, through the
/// enriching processors.
fn flow_output(telemetry: &Telemetry) -> MetricBatch {
    let settings = CollectorSettings {
        max_tracked: 1024,
        granularity: Granularity::Process,
        include_command_line: true,
        rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
        duration_bounds: Arc::from(flowscope_model::hist::DURATION_BOUNDS),
        ephemeral: (32768, 60999),
        host: flowscope_model::HostFacts::detect().attrs,
    };
    let mut col = Collector::new(settings, telemetry.clone());
    // A live client connection, one closed with resets, a server side, and
    // failed connects (refused, and one with an errno without a value).
    col.on_conn(64, &conn(40000, 5432, [198, 18, 7, 7], role::CLIENT));
    col.on_conn(128, &conn(40001, 443, [3, 5, 140, 7], role::CLIENT));
    col.on_event(&Event {
        kind: event_kind::CLOSE,
        errno: 0,
        sk: 128,
        ts_ns: 5_000_000,
        conn: conn(40001, 443, [3, 5, 140, 7], role::CLIENT),
    });
    col.on_conn(192, &conn(8080, 40002, [198, 18, 2, 2], role::SERVER));
    for (sk, errno) in [(256, 111), (320, 5)] {
        let mut c = conn(40003, 9999, [9, 9, 9, 9], role::CLIENT);
        c.established = 0;
        col.on_event(&Event {
            kind: event_kind::FAILED,
            errno,
            sk,
            ts_ns: 0,
            conn: c,
        });
    }
    let mut st = UdpStats {
        bytes_tx: 60,
        bytes_rx: 120,
        packets_tx: 1,
        packets_rx: 1,
        lport: 40010,
        ..UdpStats::default()
    };
    st.laddr[..4].copy_from_slice(&[198, 18, 0, 1]);
    let mut raddr = [0u8; 16];
    raddr[..4].copy_from_slice(&[198, 18, 0, 53]);
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"test");
    col.on_udp(
        &UdpKey {
            cookie: 1,
            raddr,
            rport: 53,
            family: AF_INET,
            _pad: 0,
        },
        &st,
        Some(&Owner {
            tgid: std::process::id(),
            netns: 1,
            comm,
        }),
    );
    // Kernel drops: one of the live client connection's packets (its
    // flow's), one of no flow (the host's).
    let drop = |packet, reason: &str| DropDelta {
        packet,
        reason: Arc::from(reason),
        packets: 3,
    };
    col.on_drops(vec![
        drop(
            Some(Packet {
                transport: flowscope_model::Transport::Tcp,
                src: "198.18.0.1:40000".parse().unwrap(),
                dst: "198.18.7.7:5432".parse().unwrap(),
            }),
            "NETFILTER_DROP",
        ),
        drop(None, "OTHERHOST"),
    ]);
    let batch = col.finish(0, 10_000_000_000);
    assert!(!batch.flows.is_empty());

    let yaml = "receivers:\n  ebpf:\nprocessors:
  cloud:
    detectors: []
    set: {provider: aws, region: eu-west-1, availability_zone: eu-west-1a}
  peer:
    tags:
      - cidrs: [198.18.0.0/15]
        tags: {env: lab}
    services:
      - name: postgres
        cidrs: [198.18.7.0/24]
  locality:
  cost:
    prices: {cross_zone: 0.25, cross_region: 0.5, cross_cloud: 1.0, internet: 2.0}
exporters:\n  console:
service:\n  pipelines:\n    metrics:
      receivers: [ebpf]
      processors: [cloud, peer, locality, cost]
      exporters: [console]\n";
    let loaded = flowscope_otel_config::load_str_with_env(yaml, "test.yaml", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = flowscope_model::Context::with_telemetry(telemetry.clone());
    let builder = flowscope_processors::Builder::new(&ctx);
    let procs = ["cloud", "peer", "locality", "cost"]
        .iter()
        .map(|p| {
            let id: flowscope_otel_config::ComponentId = p.parse().expect("id");
            builder
                .build(&id, &loaded.config.processors[&id])
                .unwrap_or_else(|e| panic!("{p}: {e}"))
        })
        .collect();
    builder.chain(procs).process(batch)
}

/// A DNS query for `name` (type A) with id `id`, in wire format.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    b[0..2].copy_from_slice(&id.to_be_bytes());
    b[2] = 0x01;
    b[5] = 1;
    for label in name.split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.extend_from_slice(&[0, 0, 1, 0, 1]);
    b
}

/// The response to `q` with `rcode`, no records.
fn response(q: &[u8], rcode: u8) -> Vec<u8> {
    let mut r = q.to_vec();
    r[2] |= 0x80;
    r[3] = 0x80 | rcode;
    r
}

/// Lookups from the DNS engine: answered, NXDOMAIN, SERVFAIL, timed out.
fn dns_output(telemetry: &Telemetry) -> MetricBatch {
    let mut e = Engine::new(
        EngineSettings {
            timeout: Duration::from_secs(5),
            max_outstanding: 16,
            top_k: 10,
            buckets: Arc::from(flowscope_model::hist::DNS_BOUNDS),
            max_tcp_streams: 4,
        },
        telemetry.clone(),
        Arc::new(DnsNames::new(16, Duration::from_secs(1))),
        Box::new(FixedOwner(Arc::new(
            flowscope_model::HostFacts::detect()
                .attrs
                .with(resource::SERVICE_NAME, "app"),
        ))),
    );
    let c: SocketAddr = "198.18.0.2:40000".parse().unwrap();
    let s: SocketAddr = "198.18.0.1:53".parse().unwrap();
    let mut feed = |ts_ns: u64, direction: Direction, data: Vec<u8>| {
        e.on_packet(&Captured {
            netns: 1,
            ts_ns,
            direction,
            loopback: false,
            data: &data,
        });
    };
    for (id, rcode) in [(1u16, Some(0u8)), (2, Some(3)), (3, Some(2)), (4, None)] {
        let q = query(id, &format!("n{id}.example.com"));
        feed(1_000, Direction::Outgoing, build::udp(c, s, &q));
        if let Some(rcode) = rcode {
            feed(
                2_000_000,
                Direction::Incoming,
                build::udp(s, c, &response(&q, rcode)),
            );
        }
    }
    e.expire(10_000_000_000);
    let mut batch = MetricBatch::new(0, 10_000_000_000);
    batch.points = e.finish();
    assert_eq!(batch.points.len(), 4);
    batch
}

/// Every kind of self-telemetry, drained as the agent drains it.
fn self_output(telemetry: &Telemetry) -> MetricBatch {
    use flowscope_model::internal_events::*;
    let otlp =
        flowscope_model::telemetry::Component::new(value::COMPONENT_TYPE_OTLP_GRPC, "otlp/backend");
    telemetry.emit(EventsReceived {
        source: Source::EbpfTcp,
        count: 3,
    });
    telemetry.emit(EventsLost {
        source: Source::EbpfTcp,
        reason: LossReason::RingbufFull,
        count: 1,
    });
    telemetry.emit(FlowsOverflow {
        metric: metric::FLOW_IO.0,
        count: 2,
    });
    telemetry.emit(ExporterSent {
        exporter: &otlp,
        count: 5,
    });
    telemetry.emit(ExporterFailed {
        exporter: &otlp,
        error_type: "queue_full",
        count: 1,
    });
    telemetry.emit(ExporterRetried {
        exporter: &otlp,
        error_type: "unavailable",
        count: 2,
    });
    telemetry.emit(FlowsTracked { count: 7 });
    telemetry.emit(ExporterQueue {
        exporter: &otlp,
        size: 1,
    });
    telemetry.emit(ExporterQueueCapacity {
        exporter: &otlp,
        capacity: 100,
    });
    let mut batch = MetricBatch::new(0, 10_000_000_000);
    batch.points = telemetry.collect_interval();
    batch
}

/// Every key constant of names.rs (values only: their types show in the
/// emitted output).
const NAME_KEYS: &[&str] = &[
    resource::SERVICE_NAME,
    resource::SERVICE_NAMESPACE,
    resource::SERVICE_VERSION,
    resource::HOST_NAME,
    resource::HOST_ID,
    resource::OS_TYPE,
    resource::PROCESS_PID,
    resource::PROCESS_EXECUTABLE_NAME,
    resource::PROCESS_COMMAND,
    resource::PROCESS_COMMAND_LINE,
    resource::CONTAINER_ID,
    resource::CONTAINER_NAME,
    resource::K8S_NAMESPACE_NAME,
    resource::K8S_POD_NAME,
    resource::K8S_POD_UID,
    resource::K8S_NODE_NAME,
    k8s::NAMESPACE_NAME,
    k8s::POD_NAME,
    k8s::POD_UID,
    k8s::NODE_NAME,
    k8s::CONTAINER_NAME,
    k8s::DEPLOYMENT_NAME,
    k8s::STATEFULSET_NAME,
    k8s::DAEMONSET_NAME,
    k8s::JOB_NAME,
    k8s::CLUSTER_NAME,
    k8s::CONTAINER_RUNTIME_NAME,
    k8s::PEER_SERVICE_NAMESPACE,
    k8s::PEER_POD_NAME,
    k8s::PEER_NAMESPACE_NAME,
    resource::CLOUD_PROVIDER,
    resource::CLOUD_PLATFORM,
    resource::CLOUD_REGION,
    resource::CLOUD_AVAILABILITY_ZONE,
    resource::CLOUD_ACCOUNT_ID,
    attr::NETWORK_TRANSPORT,
    attr::NETWORK_TYPE,
    attr::FLOW_ROLE,
    attr::PEER_ADDRESS,
    attr::PEER_PORT,
    attr::LOCAL_PORT,
    attr::LOCAL_ADDRESS,
    attr::PEER_DOMAIN,
    attr::PEER_SERVICE_NAME,
    attr::PEER_CLOUD_PROVIDER,
    attr::PEER_CLOUD_REGION,
    attr::PEER_CLOUD_SERVICE,
    attr::PEER_TAG_PREFIX,
    attr::LOCALITY,
    attr::IO_DIRECTION,
    attr::DROP_REASON,
    attr::ERROR_TYPE,
    attr::OVERFLOW,
    attr::DNS_QUESTION_NAME,
    attr::DNS_QUESTION_TYPE,
    attr::DNS_RESPONSE_CODE,
    attr::SERVER_ADDRESS,
    attr::SOURCE,
    attr::REASON,
    attr::METRIC,
    attr::COMPONENT_NAME,
    attr::COMPONENT_TYPE,
];

/// Every metric definition of names.rs.
const NAME_METRICS: &[metric::Def] = &[
    metric::FLOW_IO,
    metric::FLOW_PACKETS,
    metric::TCP_RETRANSMITS,
    metric::TCP_RTT,
    metric::TCP_RTT_VARIANCE,
    metric::TCP_OPENED,
    metric::TCP_CLOSED,
    metric::TCP_FAILED,
    metric::TCP_ACTIVE,
    metric::TCP_RESETS,
    metric::TCP_DURATION,
    metric::UDP_ACTIVE,
    metric::FLOW_COST,
    metric::FLOW_DROPS,
    metric::HOST_DROPS,
    metric::DNS_DURATION,
    metric::EVENTS_RECEIVED,
    metric::EVENTS_LOST,
    metric::FLOWS_TRACKED,
    metric::FLOWS_OVERFLOW,
    metric::EXPORTER_SENT,
    metric::EXPORTER_FAILED,
    metric::EXPORTER_QUEUE_SIZE,
    metric::EXPORTER_QUEUE_CAPACITY,
    metric::EXPORTER_RETRIES,
];

fn registry() -> Registry {
    Registry::load(&registry_dir())
}

#[test]
fn names_rs_follows_the_registry() {
    let reg = registry();
    let mut errors = Vec::new();
    for key in NAME_KEYS {
        // The tag prefix stands for `flowscope.peer.tag.<key>`.
        let key = key.trim_end_matches('.');
        if let Err(e) = reg.check_key(key, None, None) {
            errors.push(e);
        }
    }
    for (name, unit, description) in NAME_METRICS {
        if description.is_empty() {
            errors.push(format!("`{name}` has no description"));
        }
        if !name.starts_with("flowscope.")
            && !METRIC_EXCEPTIONS.iter().any(|(n, _)| n == name)
            && !reg.metrics.contains_key(*name)
        {
            errors.push(format!("metric `{name}` ({unit}) is not in the registry"));
        }
    }
    for (key, v) in [
        (resource::CLOUD_PROVIDER, value::CLOUD_PROVIDER_AWS),
        (resource::CLOUD_PROVIDER, value::CLOUD_PROVIDER_GCP),
        (resource::CLOUD_PROVIDER, value::CLOUD_PROVIDER_AZURE),
        (resource::CLOUD_PLATFORM, value::CLOUD_PLATFORM_AWS_EC2),
        (
            resource::CLOUD_PLATFORM,
            value::CLOUD_PLATFORM_GCP_COMPUTE_ENGINE,
        ),
        (resource::CLOUD_PLATFORM, value::CLOUD_PLATFORM_AZURE_VM),
        (attr::NETWORK_TRANSPORT, "tcp"),
        (attr::NETWORK_TRANSPORT, "udp"),
        (attr::NETWORK_TYPE, "ipv4"),
        (attr::NETWORK_TYPE, "ipv6"),
        (attr::IO_DIRECTION, attr::TRANSMIT),
        (attr::IO_DIRECTION, attr::RECEIVE),
        (resource::OS_TYPE, "linux"),
    ] {
        if let Err(e) = reg.check_key(key, Some("string"), Some(v)) {
            errors.push(e);
        }
    }
    // The exporters' types the registry has are its members, exactly.
    let component_type = reg
        .attribute(attr::COMPONENT_TYPE)
        .expect("otel.component.type");
    for v in [
        value::COMPONENT_TYPE_OTLP_GRPC,
        value::COMPONENT_TYPE_OTLP_HTTP,
        value::COMPONENT_TYPE_OTLP_HTTP_JSON,
        value::COMPONENT_TYPE_PROMETHEUS,
    ] {
        if !component_type.members.iter().any(|m| m == v) {
            errors.push(format!(
                "`{}={v}` is not a member of the registry's enum",
                attr::COMPONENT_TYPE
            ));
        }
    }
    // error.type's fallback is the registry's own member.
    let error_type = reg.attribute(attr::ERROR_TYPE).expect("error.type");
    if !error_type.members.iter().any(|m| m == attr::ERROR_OTHER) {
        errors.push(format!(
            "`{}` is not error.type's fallback",
            attr::ERROR_OTHER
        ));
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn emitted_output_follows_the_registry() {
    let reg = registry();
    let telemetry = Telemetry::new();
    let mut emitted = Emitted::default();
    emitted.add(&flow_output(&telemetry));
    emitted.add(&dns_output(&telemetry));
    emitted.add(&self_output(&telemetry));

    let mut errors = Vec::new();
    for (key, ty, v) in &emitted.keys {
        if let Err(e) = reg.check_key(key, Some(ty), Some(v)) {
            errors.push(e);
        }
    }
    for (name, m) in &emitted.metrics {
        let Seen {
            instrument,
            unit,
            description,
            points,
        } = m;
        if description.is_empty() {
            errors.push(format!("`{name}` is emitted without a description"));
        }
        if let Err(e) = reg.check_metric(name, instrument, unit, points) {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");

    // The run covered what it claims to: every flow metric but the cost of
    // an unpriced locality, the DNS histogram, every self-telemetry metric,
    // and the keys that matter most to this test.
    let names: BTreeSet<&str> = emitted.metrics.keys().map(String::as_str).collect();
    for (name, _, _) in NAME_METRICS {
        assert!(
            names.contains(name),
            "{name} not emitted; emitted: {names:?}"
        );
    }
    let keys: BTreeSet<&str> = emitted.keys.iter().map(|(k, _, _)| k.as_str()).collect();
    for key in [
        resource::PROCESS_COMMAND,
        resource::PROCESS_COMMAND_LINE,
        resource::PROCESS_PID,
        resource::CLOUD_PROVIDER,
        attr::PEER_SERVICE_NAME,
        attr::PEER_CLOUD_PROVIDER,
        attr::LOCALITY,
        attr::ERROR_TYPE,
        attr::DROP_REASON,
        attr::DNS_QUESTION_NAME,
        attr::DNS_RESPONSE_CODE,
        attr::SERVER_ADDRESS,
        attr::COMPONENT_NAME,
        attr::COMPONENT_TYPE,
        attr::SOURCE,
        attr::REASON,
        attr::METRIC,
        "flowscope.peer.tag.env",
    ] {
        assert!(keys.contains(key), "{key} not emitted; emitted: {keys:?}");
    }
    // Instruments as the contract has them.
    let kind = |n: &str| emitted.metrics[n].instrument.as_str();
    assert_eq!(kind(metric::TCP_ACTIVE.0), "updowncounter");
    assert_eq!(kind(metric::UDP_ACTIVE.0), "updowncounter");
    assert_eq!(kind(metric::FLOWS_TRACKED.0), "updowncounter");
    assert_eq!(kind(metric::EXPORTER_QUEUE_SIZE.0), "updowncounter");
    assert_eq!(kind(metric::EXPORTER_QUEUE_CAPACITY.0), "updowncounter");
    assert_eq!(kind(metric::FLOW_IO.0), "counter");
    assert_eq!(kind(metric::DNS_DURATION.0), "histogram");
    // error.type values of the failed connects: the contract's, with the
    // registry's fallback.
    let errors: BTreeSet<&str> = emitted
        .keys
        .iter()
        .filter(|(k, _, _)| k == attr::ERROR_TYPE)
        .map(|(_, _, v)| v.as_str())
        .collect();
    for v in [
        "refused",
        "_OTHER",
        "NXDOMAIN",
        "SERVFAIL",
        "timeout",
        "queue_full",
    ] {
        assert!(errors.contains(v), "error.type={v} missing: {errors:?}");
    }
}

#[test]
fn the_checker_rejects_what_the_registry_does_not_define() {
    let reg = registry();
    // Sound names pass.
    reg.check_key("service.peer.name", Some("string"), Some("db"))
        .unwrap();
    reg.check_key("network.peer.port", Some("int"), Some("443"))
        .unwrap();
    reg.check_key("k8s.pod.label.app", Some("string"), Some("web"))
        .unwrap();
    // A misspelt official key.
    let e = reg
        .check_key("network.peer.adress", Some("string"), Some("198.18.0.1"))
        .unwrap_err();
    assert!(e.contains("network.peer.adress"), "{e}");
    // A custom name inside an OpenTelemetry namespace.
    assert!(reg.check_key("network.locality", None, None).is_err());
    // The wrong type.
    let e = reg
        .check_key("network.peer.port", Some("string"), Some("443"))
        .unwrap_err();
    assert!(e.contains("int"), "{e}");
    // A deprecated key, and a deprecated enum member.
    assert!(reg.check_key("peer.service", Some("string"), None).is_err());
    let e = reg
        .check_key("cloud.platform", Some("string"), Some("azure_vm"))
        .unwrap_err();
    assert!(e.contains("deprecated member"), "{e}");
    assert!(
        reg.check_key("cloud.platform", Some("string"), Some("aws.ec2"))
            .is_err()
    );
    assert!(
        reg.check_key("network.transport", Some("string"), Some("sctp"))
            .is_err()
    );
    // The definition/2 format (server/registry.yaml) is read too.
    reg.check_key("server.address", Some("string"), Some("198.18.0.1"))
        .unwrap();
    // Metrics: unknown, wrong instrument, wrong unit, missing required key.
    let full: Vec<BTreeSet<String>> = vec![["dns.question.name".to_owned()].into()];
    reg.check_metric("dns.lookup.duration", "histogram", "s", &full)
        .unwrap();
    assert!(
        reg.check_metric("dns.lookup.timeouts", "counter", "{lookup}", &full)
            .is_err()
    );
    assert!(
        reg.check_metric("dns.lookup.duration", "counter", "s", &full)
            .is_err()
    );
    assert!(
        reg.check_metric("dns.lookup.duration", "histogram", "ms", &full)
            .is_err()
    );
    let e = reg
        .check_metric("dns.lookup.duration", "histogram", "s", &[BTreeSet::new()])
        .unwrap_err();
    assert!(e.contains("dns.question.name"), "{e}");
}
