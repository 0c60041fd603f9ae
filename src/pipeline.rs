//! Wires a loaded config into running components.
//!
//! ```text
//! receiver --(bounded)--> fan-out --(bounded)--> pipeline: Chain -> exporters
//! self-telemetry tick ----^
//! ```
//! The agent builds one [`Context`] (self-telemetry, the DNS name cache,
//! the table of local listeners, host facts) and hands it to every
//! receiver, processor and exporter it builds; that is the only state they
//! share. Receivers start in the order the configuration lists them: none
//! needs another.
//!
//! Every receiver runs in its own task and sends one `FlowBatch` per
//! interval. A fan-out task per receiver clones the batch to each pipeline
//! that lists it; a pipeline task runs its processor chain and submits the
//! result to its exporters, whose queues never block. Shutdown runs the same
//! way: receivers send their last partial interval and close their channels,
//! the pipelines drain, and the exporters flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use flowscope_exporters::ExporterHandle;
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::{Context, FlowBatch, MetricBatch, Telemetry};
use flowscope_otel_config::{ComponentId, Config, ReceiverConfig};
use flowscope_processors::Chain;
use flowscope_receiver::dns::DnsReceiver;
use flowscope_receiver::{EbpfReceiver, unix_nanos};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Checks, before anything starts, every capability the pipelines'
/// receivers need, so one error names all that are missing.
fn check_capabilities(config: &Config) -> anyhow::Result<()> {
    use flowscope_receiver::capabilities::{Feature, check};
    let mut features = Vec::new();
    for pipeline in config.service.pipelines.values() {
        for id in &pipeline.receivers {
            match config.receivers.get(id) {
                Some(ReceiverConfig::Ebpf(_)) => features.push(Feature::Flows),
                Some(ReceiverConfig::Dns(_)) => features.push(Feature::Dns),
                // A new receiver type adds its Feature here.
                Some(_) | None => {}
            }
        }
    }
    check(&features)?;
    Ok(())
}

/// Batches waiting between stages. Small: a batch is a whole interval.
const STAGE_QUEUE: usize = 4;

/// The running agent.
pub struct Agent {
    shutdown: watch::Sender<bool>,
    sources: Vec<JoinHandle<()>>,
    self_stop: watch::Sender<bool>,
    self_task: JoinHandle<()>,
    pipelines: Vec<JoinHandle<()>>,
    exporters: Vec<ExporterHandle>,
}

impl Agent {
    /// Starts every component the pipelines use, each built with `ctx`.
    /// Must run inside a tokio runtime. Fails, naming the component, when
    /// one cannot start.
    pub fn start(config: &Config, ctx: &Context) -> anyhow::Result<Agent> {
        check_capabilities(config)?;
        let telemetry = ctx.telemetry.clone();
        let (shutdown, shutdown_rx) = watch::channel(false);

        // Exporters: one instance per id, shared by the pipelines naming it.
        let mut exporters: HashMap<ComponentId, ExporterHandle> = HashMap::new();
        for pipeline in config.service.pipelines.values() {
            for id in &pipeline.exporters {
                if exporters.contains_key(id) {
                    continue;
                }
                let cfg = config
                    .exporters
                    .get(id)
                    .ok_or_else(|| anyhow!("exporter {id} is not defined"))?;
                let handle = flowscope_exporters::build(id, cfg, ctx)
                    .with_context(|| format!("starting exporter {id}"))?;
                exporters.insert(id.clone(), handle);
            }
        }

        // Pipelines: a chain each, fed by a bounded channel. One builder,
        // so processors of several pipelines share what they may (one cloud
        // detection per settings).
        let processors = flowscope_processors::Builder::new(ctx);
        let mut inputs: HashMap<ComponentId, Vec<mpsc::Sender<FlowBatch>>> = HashMap::new();
        let mut receiver_order: Vec<ComponentId> = Vec::new();
        let mut self_inputs = Vec::new();
        let mut pipelines = Vec::new();
        for (pid, pipeline) in &config.service.pipelines {
            let aggregates: Vec<String> = pipeline
                .processors
                .iter()
                .filter(|id| {
                    config
                        .processors
                        .get(*id)
                        .is_some_and(|c| c.kind() == "aggregate")
                })
                .map(ToString::to_string)
                .collect();
            if aggregates.len() > 1 {
                bail!(
                    "pipeline {pid} lists {} aggregate processors ({}); a pipeline groups its flows once, so use one",
                    aggregates.len(),
                    aggregates.join(", ")
                );
            }
            let procs = pipeline
                .processors
                .iter()
                .map(|id| {
                    let cfg = config
                        .processors
                        .get(id)
                        .ok_or_else(|| anyhow!("processor {id} is not defined"))?;
                    processors
                        .build(id, cfg)
                        .with_context(|| format!("starting processor {id} of pipeline {pid}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let chain = processors.chain(procs);
            let outs: Vec<ExporterHandle> = pipeline
                .exporters
                .iter()
                .filter_map(|id| exporters.get(id).cloned())
                .collect();
            let (tx, rx) = mpsc::channel(STAGE_QUEUE);
            for r in &pipeline.receivers {
                if !inputs.contains_key(r) {
                    receiver_order.push(r.clone());
                }
                inputs.entry(r.clone()).or_default().push(tx.clone());
            }
            self_inputs.push(tx);
            pipelines.push(tokio::spawn(run_pipeline(pid.to_string(), chain, rx, outs)));
        }

        // Receivers, in the order the pipelines name them.
        let mut sources = Vec::new();
        let mut interval = Duration::from_secs(10);
        for id in receiver_order {
            let outs = inputs.remove(&id).unwrap_or_default();
            let cfg = config
                .receivers
                .get(&id)
                .ok_or_else(|| anyhow!("receiver {id} is not defined"))?;
            let (tx, rx) = mpsc::channel(STAGE_QUEUE);
            let stop = shutdown_rx.clone();
            let name = id.to_string();
            match cfg {
                ReceiverConfig::Ebpf(c) => {
                    interval = interval.min(c.collection_interval);
                    let receiver = EbpfReceiver::start(c, ctx)
                        .with_context(|| format!("starting receiver {id}"))?;
                    sources.push(tokio::spawn(async move {
                        if let Err(e) = receiver.run(tx, stop).await {
                            tracing::error!(receiver = %name, "stopped: {e:#}");
                        }
                    }));
                }
                ReceiverConfig::Dns(c) => {
                    interval = interval.min(c.collection_interval);
                    let receiver = DnsReceiver::start(c, ctx)
                        .with_context(|| format!("starting receiver {id}"))?;
                    sources.push(tokio::spawn(async move {
                        if let Err(e) = receiver.run(tx, stop).await {
                            tracing::error!(receiver = %name, "stopped: {e:#}");
                        }
                    }));
                }
                other => bail!(
                    "receiver {id}: type {} is not supported by this build",
                    other.kind()
                ),
            }
            sources.push(tokio::spawn(fan_out(rx, outs, telemetry.clone())));
        }

        // The agent's own telemetry, once per (shortest) interval.
        let (self_stop, self_stop_rx) = watch::channel(false);
        let self_task = tokio::spawn(self_telemetry(
            telemetry,
            interval,
            self_inputs,
            self_stop_rx,
        ));

        Ok(Agent {
            shutdown,
            sources,
            self_stop,
            self_task,
            pipelines,
            exporters: exporters.into_values().collect(),
        })
    }

    /// The running exporters (for /healthz).
    pub fn exporters(&self) -> &[ExporterHandle] {
        &self.exporters
    }

    /// Stops the receivers (each sends its last partial interval), lets the
    /// pipelines drain and flushes the exporters.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for s in self.sources {
            let _ = s.await;
        }
        // Only now is every count of the last interval in: report them.
        let _ = self.self_stop.send(true);
        let _ = self.self_task.await;
        for p in self.pipelines {
            let _ = p.await;
        }
        for e in self.exporters {
            e.shutdown().await;
        }
    }
}

async fn fan_out(
    mut rx: mpsc::Receiver<FlowBatch>,
    outs: Vec<mpsc::Sender<FlowBatch>>,
    telemetry: Telemetry,
) {
    // A pipeline only closes its input when its task died; what would have
    // gone to it is counted, not silently dropped.
    let lost = |b: &FlowBatch| {
        telemetry.emit(EventsLost::new(
            Source::Pipeline,
            LossReason::PipelineClosed,
            (b.flows.len() + b.points.len()) as u64,
        ))
    };
    while let Some(batch) = rx.recv().await {
        if let Some((last, rest)) = outs.split_last() {
            for o in rest {
                if let Err(e) = o.send(batch.clone()).await {
                    lost(&e.0);
                }
            }
            if let Err(e) = last.send(batch).await {
                lost(&e.0);
            }
        }
    }
}

async fn run_pipeline(
    name: String,
    mut chain: Chain,
    mut rx: mpsc::Receiver<FlowBatch>,
    exporters: Vec<ExporterHandle>,
) {
    while let Some(batch) = rx.recv().await {
        let metrics: MetricBatch = chain.process(batch);
        tracing::debug!(pipeline = %name, points = metrics.points.len(), "interval processed");
        let metrics = Arc::new(metrics);
        for e in &exporters {
            e.submit(metrics.clone());
        }
    }
    info!(pipeline = %name, "pipeline drained");
}

async fn self_telemetry(
    telemetry: Telemetry,
    interval: Duration,
    outs: Vec<mpsc::Sender<FlowBatch>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut start = std::time::SystemTime::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let now = std::time::SystemTime::now();
        // The SDK's interval reader: counter deltas, gauge values, under
        // the agent's own Resource.
        let points = telemetry.collect_interval();
        let batch = FlowBatch::of_points(unix_nanos(start), unix_nanos(now), points);
        start = now;
        for o in &outs {
            if let Err(e) = o.send(batch.clone()).await {
                warn!("a pipeline stopped before the agent");
                telemetry.emit(EventsLost::new(
                    Source::Pipeline,
                    LossReason::PipelineClosed,
                    e.0.points.len() as u64,
                ));
            }
        }
        if last {
            return;
        }
    }
}
