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
pub mod chain;
pub mod cidr;
pub mod cloud;
pub mod cost;
pub mod filter;
pub mod kubernetes;
pub mod limit;
pub mod local;
pub mod locality;
pub mod peer;
pub mod ranges;

use std::collections::HashMap;

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
    Metric(MetricFn),
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
/// agent's [`Context`] (the table of local listeners, the DNS name cache,
/// self-telemetry); the builder adds the processors' own per-agent state
/// (one cloud detection per settings, [`cloud::Detections`]; one
/// Kubernetes client per settings, [`kubernetes::Clients`]). Build every
/// processor of an agent with one builder.
pub struct Builder {
    ctx: Context,
    detections: cloud::Detections,
    kubernetes: kubernetes::Clients,
}

impl Builder {
    pub fn new(ctx: &Context) -> Self {
        Builder {
            ctx: ctx.clone(),
            detections: cloud::Detections::new(),
            kubernetes: kubernetes::Clients::new(),
        }
    }

    /// The cloud detections this builder's processors follow.
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
