//! The typed seams of the flowscope pipeline.
//!
//! Data flows one way: a receiver produces [`FlowBatch`]es, processors
//! enrich and aggregate them into [`MetricBatch`]es, exporters encode those.
//! This crate holds those types, the contract's names ([`names`]), and the
//! one [`Context`] the agent hands every component: self-telemetry
//! ([`Telemetry`], typed [`internal_events`]), the shared IP -> name cache
//! ([`PeerNames`]), the table of local listeners ([`LocalServices`]) and the
//! host's facts ([`HostFacts`]). Its only I/O is [`HostFacts::detect`].

pub mod attr;
pub mod batch;
pub mod context;
pub mod counting_alloc;
pub mod destinations;
pub mod env;
pub mod errors;
pub mod flow;
pub mod hist;
pub mod intern;
pub mod internal_events;
pub mod kubepods;
pub mod local;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod net;
pub mod peer_names;
pub mod percent;
pub mod resource_env;
pub mod services;
pub mod spelled;
pub mod telemetry;

pub use attr::{Attrs, Value};
pub use batch::FlowBatch;
pub use context::{Context, HostFacts};
pub use flow::{DropCount, FailReason, Flow, FlowStats, Role, Transport};
pub use hist::Histogram;
pub use local::LocalServices;
pub use memory::{MemoryPressure, Pressure};
pub use metrics::{Kind, MetricBatch, MetricId, Point, PointValue};
pub use peer_names::PeerNames;
pub use services::Services;
pub use telemetry::Telemetry;
