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
pub mod filter;
pub mod limit;
pub mod ranges;

use std::collections::HashMap;

use flowscope_model::{Flow, MetricBatch, Telemetry};
use flowscope_otel_config::ComponentId;
use flowscope_otel_config::processors::ProcessorConfig;

pub use aggregate::{GroupBy, KeySet};
pub use chain::Chain;

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
}

impl FlowStage {
    /// Called once per batch before any flow goes through `apply`.
    fn begin_batch(&mut self, _flows: &[Flow]) {
        match self {
            FlowStage::Filter(_) => {}
        }
    }

    /// Filters or enriches one flow; `cost_usd` accumulates its price.
    fn apply(&mut self, flow: &mut Flow, _cost_usd: &mut f64) -> Verdict {
        match self {
            FlowStage::Filter(f) => {
                if f.keeps(flow) {
                    Verdict::Keep
                } else {
                    Verdict::Drop
                }
            }
        }
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

/// Builds the processor configured as `id`.
///
/// # Errors
/// A [`BuildError`] naming the processor and the key whose value cannot be
/// used.
pub fn build(
    id: &ComponentId,
    config: &ProcessorConfig,
    telemetry: Telemetry,
) -> Result<Processor, BuildError> {
    let _ = &telemetry;
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
        other => {
            return Err(BuildError::Invalid {
                id: id.to_string(),
                key: "type".to_owned(),
                message: format!("processor type `{}` is not implemented yet", other.kind()),
            });
        }
    };
    Ok(Processor {
        id: id.clone(),
        stage,
    })
}
