//! The processing chain of one pipeline: flows in, metric points out.
//!
//! Order, whatever the order of the pipeline's `processors` list says about
//! the stages among themselves:
//! 1. flow processors (`filter`, `cloud`, `peer`, `locality`, `cost`) in the
//!    order the pipeline lists them; a filter can drop a flow, the others
//!    add attributes (and `cost` a price);
//! 2. aggregation: the pipeline's `aggregate` processor, or without one
//!    every key kept (each flow becomes its contract points, equal series
//!    merged);
//! 3. the batch's ready-made points (DNS, ...) join, equal series merged;
//! 4. point processors (`resource`, `attributes`) in the order the
//!    pipeline lists them, on every point; series they make equal merge
//!    (sums add, histograms merge), so they take one cardinality slot;
//! 5. cardinality limits (default 2,000 series per metric, always on;
//!    configured on `aggregate`);
//! 6. metric processors, in pipeline order.
//!
//! `batch` does nothing here (each interval is one batch already), nor
//! does `memory_limiter` (its monitor refuses new flows in the receiver);
//! the chain only holds the latter's monitor for as long as it lives.
//!
//! Every pipeline owns its chain, so two pipelines fed by one receiver can
//! group differently; the flow batch is cloned per pipeline by the caller.

use std::sync::Arc;

use flowscope_model::{FlowBatch, MetricBatch, Point, Telemetry};

use crate::aggregate::{GroupBy, Grouper};
use crate::attributes::PointStage;
use crate::limit::{DEFAULT_MAX_SERIES, Limiter};
use crate::memory_limiter::MemoryLimiter;
use crate::{FlowStage, MetricFn, Processor, Stage, Verdict};

/// One pipeline's processors, with the state that lives across intervals
/// (cardinality slots, caches).
pub struct Chain {
    flow_stages: Vec<FlowStage>,
    group_by: GroupBy,
    limiter: Limiter,
    point_stages: Vec<PointStage>,
    metric_stages: Vec<MetricFn>,
    /// Held, not called: the `memory_limiter` monitor runs while a chain
    /// that lists it does.
    _held: Vec<Arc<MemoryLimiter>>,
}

impl Chain {
    /// A chain from the pipeline's processors, in the order the pipeline
    /// lists them. When several `aggregate` processors are listed only the
    /// first is used (config validation rejects that case; a warning is
    /// logged here).
    pub fn new(processors: Vec<Processor>, telemetry: Telemetry) -> Chain {
        let mut flow_stages = Vec::new();
        let mut metric_stages = Vec::new();
        let mut point_stages = Vec::new();
        let mut held = Vec::new();
        let mut aggregate = None;
        for p in processors {
            match p.stage {
                Stage::Flow(s) => flow_stages.push(s),
                Stage::Metric(m) => metric_stages.push(m),
                Stage::Point(s) => point_stages.push(s),
                Stage::Pass(h) => held.extend(h),
                Stage::Aggregate(a) => {
                    if aggregate.is_some() {
                        tracing::warn!(processor = %p.id, "a pipeline uses one aggregate processor; ignoring this one");
                    } else {
                        aggregate = Some(a);
                    }
                }
            }
        }
        warn_on_order(&flow_stages);
        let (group_by, limiter) = match aggregate {
            Some(a) => (
                a.group_by,
                Limiter::new(a.max_series, a.max_series_per_metric, telemetry),
            ),
            None => (
                GroupBy::all(),
                Limiter::new(DEFAULT_MAX_SERIES, Default::default(), telemetry),
            ),
        };
        Chain {
            flow_stages,
            group_by,
            limiter,
            point_stages,
            metric_stages,
            _held: held,
        }
    }

    /// Turns one interval's flows (and ready-made points) into metric points.
    pub fn process(&mut self, batch: FlowBatch) -> MetricBatch {
        let FlowBatch {
            start_unix_nanos,
            end_unix_nanos,
            flows,
            points: ready,
        } = batch;
        for s in &mut self.flow_stages {
            s.begin_batch(&flows);
        }
        let mut grouper = Grouper::new(&self.group_by, flows.len());
        'flows: for mut flow in flows {
            let mut cost = 0.0;
            for s in &mut self.flow_stages {
                if let Verdict::Drop = s.apply(&mut flow, &mut cost) {
                    continue 'flows;
                }
            }
            grouper.add(flow, cost);
        }
        let mut points: Vec<Point> = Vec::new();
        grouper.finish(&mut points);
        if !ready.is_empty() {
            let mut r = MetricBatch {
                points: ready,
                ..Default::default()
            };
            r.coalesce();
            points.append(&mut r.points);
        }
        if !self.point_stages.is_empty() {
            for s in &self.point_stages {
                s.apply(&mut points);
            }
            let mut merged = MetricBatch {
                points,
                ..Default::default()
            };
            merged.coalesce();
            points = merged.points;
        }
        let mut out = MetricBatch {
            start_unix_nanos,
            time_unix_nanos: end_unix_nanos,
            points: self.limiter.apply(points),
        };
        for m in &mut self.metric_stages {
            m(&mut out);
        }
        out
    }

    /// Series holding a cardinality slot for `metric` (for tests and
    /// diagnostics).
    pub fn series_held(&self, metric: &str) -> usize {
        self.limiter.held(metric)
    }
}

/// Each enrichment reads what the earlier ones wrote; say so when the
/// configured order makes one of them see nothing.
fn warn_on_order(stages: &[FlowStage]) {
    let pos = |f: fn(&FlowStage) -> bool| stages.iter().position(f);
    let cloud = pos(|s| matches!(s, FlowStage::Cloud(_)));
    let peer = pos(|s| matches!(s, FlowStage::Peer(_)));
    let locality = pos(|s| matches!(s, FlowStage::Locality(_)));
    let cost = pos(|s| matches!(s, FlowStage::Cost(_)));
    let before = |a: Option<usize>, b: Option<usize>| matches!((a, b), (Some(a), Some(b)) if a > b);
    if before(cloud, locality) || before(peer, locality) {
        tracing::warn!(
            "`locality` runs before `cloud` or `peer` in this pipeline and will not see their attributes; list it after them"
        );
    }
    if before(locality, cost) {
        tracing::warn!(
            "`cost` runs before `locality` in this pipeline and prices nothing; list it after `locality`"
        );
    }
    if cost.is_some() && locality.is_none() {
        tracing::warn!("`cost` without `locality` in this pipeline prices nothing");
    }
}
