//! What a receiver hands the processors each interval: its flows and the
//! points it made itself. Apart from flow.rs so that the dependency between
//! the flow and metric types goes one way (metrics.rs turns flows into
//! points; neither names this batch).

use crate::flow::Flow;
use crate::metrics::Point;

/// Everything a receiver observed in one interval.
#[derive(Clone, Debug, Default)]
pub struct FlowBatch {
    /// Start of the interval, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End of the interval, Unix nanoseconds.
    pub end_unix_nanos: u64,
    pub flows: Vec<Flow>,
    /// Points a receiver produced directly (DNS lookups, say). Processors
    /// pass them through aggregation and cardinality limits with the rest.
    pub points: Vec<Point>,
}

impl FlowBatch {
    /// A batch of ready-made points only (DNS lookups, self-telemetry).
    pub fn of_points(start_unix_nanos: u64, end_unix_nanos: u64, points: Vec<Point>) -> Self {
        Self {
            start_unix_nanos,
            end_unix_nanos,
            flows: Vec::new(),
            points,
        }
    }
}
