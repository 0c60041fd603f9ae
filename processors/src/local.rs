//! The table of this host's addresses and listeners lives in the model
//! ([`flowscope_model::local`]) because the agent shares one instance
//! through its [`Context`](flowscope_model::Context); re-exported here
//! for the processors that read it.

pub use flowscope_model::local::{BatchEndpoints, LEARNED_TTL, LocalServices, MAX_ENTRIES};
