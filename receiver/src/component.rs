//! Receivers as components, built the way exporters
//! (`flowscope_exporters::build`) and processors
//! (`flowscope_processors::Builder`) are: each receiver's configuration
//! type builds its receiver from the agent's [`Context`]
//! ([`BuildReceiver`]), and the started receiver sends batches until
//! shutdown ([`Receiver`]). The agent holds one loop over receivers and
//! names no receiver type; [`component`] is the one place that maps a
//! configured type to its builder.
//!
//! A builder also says, before anything starts:
//! - which Linux [`Feature`]s it needs ([`BuildReceiver::features`]): the
//!   agent checks their capabilities for all receivers at once;
//! - what it gives the agent's other receivers and what it needs from them
//!   ([`Supply`]): [`check_supplies`] refuses a configuration where a
//!   receiver needs what none supplies (dynamic path tests without a flow
//!   source), both in `flowscope validate` and at start.
//!
//! A receiver owns its helpers: the `ebpf` receiver starts the host's one
//! conntrack service (through [`Context::services`], so two `ebpf`
//! receivers share it), the `path` receiver maps its config onto its
//! settings ([`crate::path::settings`]).
//!
//! # Adding a receiver type
//! 1. Its config type and variant in `flowscope_otel_config::ReceiverConfig`
//!    (otel-config/src/receivers.rs: the enum, `KINDS`, the seed).
//! 2. Its receiver in this crate, implementing [`Receiver`], and its config
//!    implementing [`BuildReceiver`].
//! 3. One arm in [`component`].
//!
//! src/pipeline.rs and the rest of the agent do not change. The root
//! package's test `a_new_receiver_reaches_the_exporters` walks through it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flowscope_model::{Context, FlowBatch};
use flowscope_otel_config::ReceiverConfig;
use flowscope_otel_config::receivers::{DnsReceiverConfig, EbpfReceiverConfig, PathReceiverConfig};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::EbpfReceiver;
use crate::capabilities::Feature;
use crate::dns::DnsReceiver;
use crate::path::prober::TrippyProber;
use crate::path::{PathReceiver, PathSettings};

/// Any receiver's error, for the agent to report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Receiver::run`] returns: a task the agent spawns.
pub type RunFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// A started receiver.
pub trait Receiver: Send {
    /// Sends one [`FlowBatch`] per interval down `tx` until `shutdown`
    /// turns true, then its last, partial interval, and returns. An error
    /// ends the receiver; the agent logs it.
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<FlowBatch>,
        shutdown: watch::Receiver<bool>,
    ) -> RunFuture;
}

/// What one receiver gives the agent's other receivers (through a shared
/// service of the [`Context`]), or needs from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Supply {
    /// The servers of outgoing client flows, in `ctx.destinations`:
    /// written by the `ebpf` receiver, read by dynamic path tests.
    FlowDestinations,
}

impl Supply {
    /// What is missing, as the error says it (the text docs/path.md quotes).
    pub fn missing(self) -> &'static str {
        match self {
            Supply::FlowDestinations => {
                "dynamic tests need an ebpf receiver in the same agent to observe flows"
            }
        }
    }
}

/// A receiver's configuration: builds the receiver and says, before it
/// starts, what it needs.
pub trait BuildReceiver {
    /// The Linux features whose capabilities the receiver needs.
    fn features(&self) -> Vec<Feature>;

    /// What it gives the agent's other receivers.
    fn supplies(&self) -> Vec<Supply> {
        Vec::new()
    }

    /// What it needs another receiver of the agent to supply.
    fn needs(&self) -> Vec<Supply> {
        Vec::new()
    }

    /// Its collection interval, when it reports on one (the agent's own
    /// telemetry follows the shortest).
    fn interval(&self) -> Option<Duration> {
        None
    }

    /// Starts the receiver with what it shares from `ctx`. Fails when it
    /// cannot start (privileges, kernel, settings its config types could
    /// not check).
    fn build(&self, ctx: &Context) -> Result<Box<dyn Receiver>, BoxError>;
}

/// A configured receiver type this build cannot start.
#[derive(Debug, Error)]
#[error("type {kind} is not supported by this build")]
pub struct Unsupported {
    pub kind: &'static str,
}

/// The builder of a configured receiver: the one place a receiver type is
/// named.
pub fn component(config: &ReceiverConfig) -> Result<&dyn BuildReceiver, Unsupported> {
    match config {
        ReceiverConfig::Ebpf(c) => Ok(c),
        ReceiverConfig::Dns(c) => Ok(c),
        ReceiverConfig::Path(c) => Ok(c),
        other => Err(Unsupported { kind: other.kind() }),
    }
}

/// A receiver needs what no receiver of the agent supplies.
#[derive(Debug, Error)]
#[error("receiver {id}: {}", .missing.missing())]
pub struct MissingSupply {
    /// The receiver that needs it.
    pub id: String,
    pub missing: Supply,
}

/// Checks that every receiver's [`BuildReceiver::needs`] is supplied by
/// one of `receivers` (the ones the agent's pipelines list).
pub fn check_supplies<'a>(
    receivers: impl IntoIterator<Item = (String, &'a dyn BuildReceiver)>,
) -> Result<(), MissingSupply> {
    let receivers: Vec<_> = receivers.into_iter().collect();
    let supplied: Vec<Supply> = receivers.iter().flat_map(|(_, r)| r.supplies()).collect();
    for (id, r) in &receivers {
        if let Some(missing) = r.needs().into_iter().find(|n| !supplied.contains(n)) {
            return Err(MissingSupply {
                id: id.clone(),
                missing,
            });
        }
    }
    Ok(())
}

impl BuildReceiver for EbpfReceiverConfig {
    fn features(&self) -> Vec<Feature> {
        let mut f = vec![Feature::Flows];
        if self.nat.enabled {
            f.push(Feature::Nat);
        }
        f
    }

    fn supplies(&self) -> Vec<Supply> {
        vec![Supply::FlowDestinations]
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.collection_interval)
    }

    /// Starts the host's conntrack service first when `nat.enabled` (or
    /// joins the one another `ebpf` receiver started), then loads.
    fn build(&self, ctx: &Context) -> Result<Box<dyn Receiver>, BoxError> {
        Ok(Box::new(EbpfReceiver::start(self, ctx)?))
    }
}

impl Receiver for EbpfReceiver {
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<FlowBatch>,
        shutdown: watch::Receiver<bool>,
    ) -> RunFuture {
        Box::pin(async move { Ok((*self).run(tx, shutdown).await?) })
    }
}

impl BuildReceiver for DnsReceiverConfig {
    fn features(&self) -> Vec<Feature> {
        vec![Feature::Dns]
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.collection_interval)
    }

    fn build(&self, ctx: &Context) -> Result<Box<dyn Receiver>, BoxError> {
        Ok(Box::new(DnsReceiver::start(self, ctx)?))
    }
}

impl Receiver for DnsReceiver {
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<FlowBatch>,
        shutdown: watch::Receiver<bool>,
    ) -> RunFuture {
        Box::pin(async move { Ok((*self).run(tx, shutdown).await?) })
    }
}

impl BuildReceiver for PathReceiverConfig {
    fn features(&self) -> Vec<Feature> {
        vec![Feature::Path]
    }

    fn needs(&self) -> Vec<Supply> {
        if self.dynamic.enabled {
            vec![Supply::FlowDestinations]
        } else {
            Vec::new()
        }
    }

    fn build(&self, ctx: &Context) -> Result<Box<dyn Receiver>, BoxError> {
        let settings = PathSettings::new(self, &ctx.host)?;
        Ok(Box::new(PathReceiver::start(
            settings,
            ctx,
            Arc::new(TrippyProber),
        )?))
    }
}

impl Receiver for PathReceiver {
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<FlowBatch>,
        shutdown: watch::Receiver<bool>,
    ) -> RunFuture {
        Box::pin(async move {
            (*self).run(tx, shutdown).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(dynamic: bool) -> PathReceiverConfig {
        let mut c = PathReceiverConfig::default();
        c.dynamic.enabled = dynamic;
        c
    }

    #[test]
    fn dynamic_path_tests_need_a_flow_source() {
        let ebpf = EbpfReceiverConfig::default();
        let (scheduled, dynamic) = (path(false), path(true));
        let dns = DnsReceiverConfig::default();
        let list = |l: &[(&str, &dyn BuildReceiver)]| {
            check_supplies(l.iter().map(|(id, r)| (id.to_string(), *r)))
        };
        assert!(list(&[("path", &scheduled), ("dns", &dns)]).is_ok());
        assert!(list(&[("path/d", &dynamic), ("ebpf", &ebpf)]).is_ok());
        let e = list(&[("dns", &dns), ("path/d", &dynamic)]).expect_err("no flow source");
        assert_eq!(e.id, "path/d");
        assert_eq!(e.missing, Supply::FlowDestinations);
        assert_eq!(
            e.to_string(),
            "receiver path/d: dynamic tests need an ebpf receiver in the same agent to observe flows"
        );
    }

    #[test]
    fn each_config_declares_its_features() {
        let mut ebpf = EbpfReceiverConfig::default();
        ebpf.nat.enabled = false;
        assert_eq!(ebpf.features(), [Feature::Flows]);
        ebpf.nat.enabled = true;
        assert_eq!(ebpf.features(), [Feature::Flows, Feature::Nat]);
        assert_eq!(DnsReceiverConfig::default().features(), [Feature::Dns]);
        assert_eq!(path(true).features(), [Feature::Path]);
        assert_eq!(
            ebpf.interval(),
            Some(EbpfReceiverConfig::default().collection_interval)
        );
        assert_eq!(path(false).interval(), None);
        for c in [
            ReceiverConfig::Ebpf(ebpf.clone()),
            ReceiverConfig::Dns(DnsReceiverConfig::default()),
            ReceiverConfig::Path(path(false)),
        ] {
            assert!(component(&c).is_ok(), "{}", c.kind());
        }
    }
}
