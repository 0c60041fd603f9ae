//! The typed seams of the flowscope pipeline.
//!
//! Data flows one way: a receiver produces [`FlowBatch`]es, processors
//! enrich and aggregate them into [`MetricBatch`]es, exporters encode those.
//! This crate holds those types, the contract's names ([`names`]) and the
//! shared self-telemetry handle ([`Telemetry`]); it has no I/O.

pub mod attr;
pub mod destinations;
pub mod flow;
pub mod hist;
pub mod metrics;
pub mod names;
pub mod telemetry;

pub use attr::{Attrs, Value};
pub use flow::{FailReason, Flow, FlowBatch, FlowStats, Role, Transport};
pub use hist::Histogram;
pub use metrics::{Kind, MetricBatch, MetricId, Point, PointValue};
pub use telemetry::Telemetry;
