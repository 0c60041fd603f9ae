//! flowscope's processors: what happens between a receiver's flows and an
//! exporter's points.
//!
//! [`build`] turns one configured processor into a [`Processor`]; a
//! pipeline's processors go into a [`Chain`], which owns the state that
//! lives across intervals and turns each [`FlowBatch`] into a
//! [`MetricBatch`]. See [`chain`] for the order of the stages.
//!
//! [`FlowBatch`]: flowscope_model::FlowBatch
//! [`MetricBatch`]: flowscope_model::MetricBatch

pub mod aggregate;
pub mod attributes;
pub mod chain;
pub mod cidr;
pub mod cloud;
pub mod cost;
pub mod filter;
pub mod kubernetes;
pub mod limit;
pub mod local;
pub mod locality;
pub mod memory_limiter;
pub mod peer;
pub mod ranges;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flowscope_model::{Context, Flow, MetricBatch};
use flowscope_otel_config::ComponentId;
use flowscope_otel_config::processors::ProcessorConfig;

pub use aggregate::{GroupBy, KeySet};
pub use chain::Chain;
pub use local::LocalServices;

/// Why a processor could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A value the config types accept but the processor cannot use.
    #[error("processor `{id}`: {key}: {message}")]
    Invalid {
        id: String,
        key: String,
        message: String,
    },
    /// A `resource` or `attributes` action list cannot be compiled.
    #[error("processor `{id}`: cannot compile its actions")]
    Actions {
        id: String,
        #[source]
        source: attributes::ActionsError,
    },
    /// The `memory_limiter`'s monitor thread could not start.
    #[error("processor `{id}`: cannot start its monitor thread")]
    Thread {
        id: String,
        #[source]
        source: std::io::Error,
    },
    /// A cloud range file named in the configuration cannot be loaded.
    #[error("processor `{id}`: cannot load its cloud range files")]
    Ranges {
        id: String,
        #[source]
        source: peer::PeerError,
    },
}

/// One built processor, ready to be put into a [`Chain`].
pub struct Processor {
    id: ComponentId,
    stage: Stage,
}

pub(crate) enum Stage {
    Flow(FlowStage),
    Aggregate(AggregateSpec),
    /// `resource`, `attributes`: on points, before the cardinality limits.
    Point(attributes::PointStage),
    Metric(MetricFn),
    /// Nothing to do per batch (`batch`); or a component that works on its
    /// own (`memory_limiter`'s monitor), held for as long as the chain.
    Pass(Option<Arc<memory_limiter::MemoryLimiter>>),
}

/// A processor over finished metric batches (after cardinality limits).
pub type MetricFn = Box<dyn FnMut(&mut MetricBatch) + Send>;

pub(crate) struct AggregateSpec {
    group_by: GroupBy,
    max_series: usize,
    max_series_per_metric: HashMap<String, usize>,
}

/// What a flow stage decided about a flow.
pub(crate) enum Verdict {
    Keep,
    Drop,
}

/// The flow processors.
pub(crate) enum FlowStage {
    Filter(filter::Filter),
    Cloud(Box<cloud::Cloud>),
    Peer(Box<peer::Peer>),
    Locality(Box<locality::Locality>),
    Cost(cost::Cost),
    Kubernetes(Box<kubernetes::Kubernetes>),
}

impl FlowStage {
    /// Called once per batch before any flow goes through `apply`.
    fn begin_batch(&mut self, flows: &[Flow]) {
        match self {
            FlowStage::Filter(_) | FlowStage::Cost(_) => {}
            FlowStage::Cloud(c) => c.begin_batch(),
            FlowStage::Peer(p) => p.begin_batch(flows),
            FlowStage::Locality(l) => l.begin_batch(flows),
            FlowStage::Kubernetes(k) => k.begin_batch(),
        }
    }

    /// Filters or enriches one flow; `cost_usd` accumulates its price.
    fn apply(&mut self, flow: &mut Flow, cost_usd: &mut f64) -> Verdict {
        match self {
            FlowStage::Filter(f) => {
                if !f.keeps(flow) {
                    return Verdict::Drop;
                }
            }
            FlowStage::Cloud(c) => c.enrich(flow),
            FlowStage::Peer(p) => p.enrich(flow),
            FlowStage::Locality(l) => l.enrich(flow),
            FlowStage::Cost(c) => *cost_usd += c.of(flow),
            FlowStage::Kubernetes(k) => k.enrich(flow),
        }
        Verdict::Keep
    }
}

impl Processor {
    /// The id it was configured under.
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    /// An aggregation processor: flows grouped by `group_by`, at most
    /// `max_series` series per metric unless `max_series_per_metric` names
    /// the metric.
    pub fn aggregate(
        id: ComponentId,
        group_by: GroupBy,
        max_series: usize,
        max_series_per_metric: HashMap<String, usize>,
    ) -> Processor {
        Processor {
            id,
            stage: Stage::Aggregate(AggregateSpec {
                group_by,
                max_series,
                max_series_per_metric,
            }),
        }
    }

    /// A processor over finished batches, run after cardinality limits (for
    /// components outside this crate).
    pub fn metric(id: ComponentId, f: MetricFn) -> Processor {
        Processor {
            id,
            stage: Stage::Metric(f),
        }
    }
}

/// Builds processors for one agent. Everything shared comes from the
/// agent's [`Context`]: the table of local listeners, the DNS name cache,
/// self-telemetry, and what processors of several pipelines share among
/// themselves, kept in [`Context::services`] by type (one cloud detection
/// per settings, [`cloud::Detections`]; one Kubernetes client per settings,
/// [`kubernetes::Clients`]). The builder adds only the agent's one
/// `memory_limiter` monitor, which lives as long as the chains that list it.
/// Build every processor of an agent with one builder.
pub struct Builder {
    ctx: Context,
    detections: cloud::Detections,
    kubernetes: Arc<kubernetes::Clients>,
    /// The agent's one `memory_limiter` monitor, shared by the pipelines
    /// that list it.
    memory: Mutex<Option<Arc<memory_limiter::MemoryLimiter>>>,
}

impl Builder {
    pub fn new(ctx: &Context) -> Self {
        Builder {
            ctx: ctx.clone(),
            detections: ctx.services.get::<cloud::Detections>(),
            kubernetes: ctx.services.get::<Arc<kubernetes::Clients>>(),
            memory: Mutex::new(None),
        }
    }

    /// The cloud detections this builder's processors follow (the agent's,
    /// from its context).
    pub fn detections(&self) -> &cloud::Detections {
        &self.detections
    }

    /// Builds the processor configured as `id`.
    ///
    /// # Errors
    /// A [`BuildError`] naming the processor and what cannot be used.
    pub fn build(
        &self,
        id: &ComponentId,
        config: &ProcessorConfig,
    ) -> Result<Processor, BuildError> {
        if let ProcessorConfig::MemoryLimiter(c) = config {
            let mut held = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            let limiter = match &*held {
                Some(m) => m.clone(),
                None => {
                    let m = memory_limiter::MemoryLimiter::start(c, self.ctx.memory.clone())
                        .map_err(|source| BuildError::Thread {
                            id: id.to_string(),
                            source,
                        })?;
                    let m = Arc::new(m);
                    *held = Some(m.clone());
                    m
                }
            };
            return Ok(Processor {
                id: id.clone(),
                stage: Stage::Pass(Some(limiter)),
            });
        }
        build_stage(id, config, &self.ctx, &self.detections, &self.kubernetes)
    }

    /// A chain of `processors` counting on this agent's self-telemetry.
    pub fn chain(&self, processors: Vec<Processor>) -> Chain {
        Chain::new(processors, self.ctx.telemetry.clone())
    }
}

/// Builds the processor configured as `id` with its own builder (tests,
/// one-off tools); the agent uses one [`Builder`] for all.
///
/// # Errors
/// A [`BuildError`] naming the processor and what cannot be used.
pub fn build(
    id: &ComponentId,
    config: &ProcessorConfig,
    ctx: &Context,
) -> Result<Processor, BuildError> {
    Builder::new(ctx).build(id, config)
}

fn build_stage(
    id: &ComponentId,
    config: &ProcessorConfig,
    ctx: &Context,
    detections: &cloud::Detections,
    kubernetes: &kubernetes::Clients,
) -> Result<Processor, BuildError> {
    // Telemetry is counted by the chain (cardinality overflow); the
    // processors themselves drop nothing that needs counting.
    let stage = match config {
        ProcessorConfig::Aggregate(c) => {
            let keys =
                |k: &Option<Vec<String>>| k.as_ref().map_or(KeySet::All, |k| KeySet::only(k));
            Stage::Aggregate(AggregateSpec {
                group_by: GroupBy {
                    resource: keys(&c.group_by.resource),
                    attributes: keys(&c.group_by.attributes),
                },
                max_series: c.max_series,
                max_series_per_metric: c
                    .max_series_per_metric
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            })
        }
        ProcessorConfig::Filter(c) => {
            Stage::Flow(FlowStage::Filter(filter::Filter::from_config(c)))
        }
        ProcessorConfig::Cloud(c) => Stage::Flow(FlowStage::Cloud(Box::new(
            cloud::Cloud::from_config(c, detections),
        ))),
        ProcessorConfig::Peer(c) => {
            let p = peer::Peer::from_config(c, ctx).map_err(|source| BuildError::Ranges {
                id: id.to_string(),
                source,
            })?;
            Stage::Flow(FlowStage::Peer(Box::new(p)))
        }
        ProcessorConfig::Locality(c) => Stage::Flow(FlowStage::Locality(Box::new(
            locality::Locality::from_config(c, ctx.local_services.clone()),
        ))),
        ProcessorConfig::Cost(c) => Stage::Flow(FlowStage::Cost(cost::Cost::from_config(c))),
        ProcessorConfig::Kubernetes(c) => {
            let k = kubernetes::Kubernetes::from_config(
                c,
                kubernetes,
                &ctx.telemetry,
                &flowscope_model::env::process,
            )
            .map_err(|e| BuildError::Invalid {
                id: id.to_string(),
                key: "kubernetes".to_owned(),
                message: format!("cannot start its client thread: {e}"),
            })?;
            Stage::Flow(FlowStage::Kubernetes(Box::new(k)))
        }
        ProcessorConfig::Batch(_) => Stage::Pass(None),
        ProcessorConfig::Resource(c) => {
            point_stage(id, attributes::Target::Resource, &c.attributes)?
        }
        ProcessorConfig::Attributes(c) => {
            point_stage(id, attributes::Target::Attributes, &c.actions)?
        }
        ProcessorConfig::ResourceDetection(c) => Stage::Flow(FlowStage::Cloud(Box::new(
            resource_detection(c, detections),
        ))),
        other => {
            return Err(BuildError::Invalid {
                id: id.to_string(),
                key: "type".to_owned(),
                message: format!(
                    "processor type `{}` is not supported by this build",
                    other.kind()
                ),
            });
        }
    };
    Ok(Processor {
        id: id.clone(),
        stage,
    })
}

fn point_stage(
    id: &ComponentId,
    target: attributes::Target,
    actions: &[flowscope_otel_config::processors::AttributeAction],
) -> Result<Stage, BuildError> {
    let actions = attributes::Actions::new(actions).map_err(|source| BuildError::Actions {
        id: id.to_string(),
        source,
    })?;
    Ok(Stage::Point(attributes::PointStage::new(target, actions)))
}

/// Resource keys of `OTEL_RESOURCE_ATTRIBUTES` the `env` detector leaves
/// alone: they name the agent itself, while a flow's `service.*` names the
/// workload that sent it.
const AGENT_IDENTITY: [&str; 4] = [
    flowscope_model::names::resource::SERVICE_NAME,
    "service.namespace",
    "service.instance.id",
    "service.version",
];

/// `resourcedetection` as a `cloud` processor: `ec2`, `gcp`, `azure` are
/// its providers in the listed order, `env` adds `OTEL_RESOURCE_ATTRIBUTES`
/// (but the agent's own `service.*`), `system` adds nothing (every flow
/// Resource has the host's keys), `override: false` keeps existing values.
fn resource_detection(
    c: &flowscope_otel_config::processors::ResourceDetectionConfig,
    detections: &cloud::Detections,
) -> cloud::Cloud {
    use flowscope_otel_config::processors::{
        CloudProcessorConfig, CloudProviderName, DetectorName,
    };
    let mut providers = Vec::new();
    let mut env = false;
    for d in &c.detectors {
        match d {
            DetectorName::Ec2 => providers.push(CloudProviderName::Aws),
            DetectorName::Gcp => providers.push(CloudProviderName::Gcp),
            DetectorName::Azure => providers.push(CloudProviderName::Azure),
            DetectorName::Env => env = true,
            DetectorName::System => {}
        }
    }
    providers.dedup();
    let cloud = CloudProcessorConfig {
        detectors: providers,
        timeout: c.timeout,
        ..CloudProcessorConfig::default()
    };
    let pairs = if env {
        flowscope_model::env::process("OTEL_RESOURCE_ATTRIBUTES")
            .map(|s| flowscope_model::context::parse_resource_attributes(&s))
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !AGENT_IDENTITY.contains(&k.as_str()))
            .map(|(k, v)| (Arc::from(k), Arc::from(v)))
            .collect()
    } else {
        Vec::new()
    };
    cloud::Cloud::from_config(&cloud, detections).with(pairs, !c.override_existing)
}

#[cfg(test)]
mod tests {
    /// The agent moves each pipeline's chain into its own task.
    #[test]
    fn chains_and_processors_can_move_between_threads() {
        fn send<T: Send + 'static>() {}
        send::<crate::Chain>();
        send::<crate::Processor>();
        send::<crate::LocalServices>();
    }
}
