//! Wires a loaded config into running components.
//!
//! ```text
//! receiver --(bounded)--> fan-out --(bounded)--> pipeline: Chain -> exporters
//! self-telemetry tick ----^
//! ```
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
use flowscope_model::destinations::destinations;
use flowscope_model::{FlowBatch, MetricBatch, Telemetry};
use flowscope_otel_config::receivers::ResourceGranularity;
use flowscope_otel_config::{ComponentId, Config, ReceiverConfig};
use flowscope_processors::Chain;
use flowscope_receiver::dns::{DnsReceiver, DnsSettings};
use flowscope_receiver::path::PathReceiver;
use flowscope_receiver::path::prober::TrippyProber;
use flowscope_receiver::{
    CollectorSettings, EbpfReceiver, Granularity, LoadOptions, PeerNames, ReceiverSettings,
    ephemeral_ports, host_attrs, self_resource, unix_nanos,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

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

fn dns_settings(c: &flowscope_otel_config::receivers::DnsReceiverConfig) -> DnsSettings {
    DnsSettings {
        ports: c.ports.clone(),
        query_timeout: c.query_timeout,
        max_outstanding_queries: c.max_outstanding_queries,
        top_k: c.top_k,
        name_cache_size: c.name_cache_size,
        name_ttl_grace: c.name_ttl_grace,
        buckets: c.buckets.clone(),
        collection_interval: c.collection_interval,
        ..DnsSettings::default()
    }
}

fn ebpf_settings(
    cfg: &flowscope_otel_config::receivers::EbpfReceiverConfig,
) -> anyhow::Result<ReceiverSettings> {
    let max_flows = u32::try_from(cfg.max_tracked_flows).map_err(|_| {
        anyhow!(
            "max_tracked_flows {} does not fit a kernel map",
            cfg.max_tracked_flows
        )
    })?;
    Ok(ReceiverSettings {
        interval: cfg.collection_interval,
        load: LoadOptions {
            tcp: cfg.tcp,
            udp: cfg.udp,
            max_flows,
            ring_buffer_bytes: cfg.ring_buffer_bytes,
        },
        collector: CollectorSettings {
            max_tracked: cfg.max_tracked_flows,
            granularity: match cfg.resource_granularity {
                ResourceGranularity::Service => Granularity::Service,
                ResourceGranularity::Process => Granularity::Process,
            },
            include_command_line: cfg.include_command_line,
            rtt_bounds: Arc::from(cfg.rtt_buckets.as_slice()),
            duration_bounds: Arc::from(cfg.duration_buckets.as_slice()),
            ephemeral: ephemeral_ports(),
            host: host_attrs(),
        },
    })
}

impl Agent {
    /// Starts every component the pipelines use. Must run inside a tokio
    /// runtime. Fails, naming the component, when one cannot start.
    pub fn start(config: &Config, telemetry: Telemetry) -> anyhow::Result<Agent> {
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
                let handle = flowscope_exporters::build(id, cfg, telemetry.clone())
                    .with_context(|| format!("starting exporter {id}"))?;
                exporters.insert(id.clone(), handle);
            }
        }

        // Pipelines: a chain each, fed by a bounded channel.
        let mut inputs: HashMap<ComponentId, Vec<mpsc::Sender<FlowBatch>>> = HashMap::new();
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
                    flowscope_processors::build(id, cfg, telemetry.clone())
                        .with_context(|| format!("starting processor {id} of pipeline {pid}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let chain = Chain::new(procs, telemetry.clone());
            let outs: Vec<ExporterHandle> = pipeline
                .exporters
                .iter()
                .filter_map(|id| exporters.get(id).cloned())
                .collect();
            let (tx, rx) = mpsc::channel(STAGE_QUEUE);
            for r in &pipeline.receivers {
                inputs.entry(r.clone()).or_default().push(tx.clone());
            }
            self_inputs.push(tx);
            pipelines.push(tokio::spawn(run_pipeline(pid.to_string(), chain, rx, outs)));
        }

        // Receivers. DNS first: its IP -> name cache feeds the flow
        // receiver, which sets flowscope.peer.domain from it.
        let mut sources = Vec::new();
        let mut interval = Duration::from_secs(10);
        let mut inputs: Vec<(ComponentId, Vec<mpsc::Sender<FlowBatch>>)> =
            inputs.into_iter().collect();
        inputs.sort_by_key(|(id, _)| (id.kind != "dns", id.to_string()));
        let mut names: Option<Arc<dyn PeerNames>> = None;
        // Dynamic path tests learn destinations from the flow receiver
        // through this pair (neither component knows the other).
        let dynamic_paths = inputs.iter().any(|(id, _)| {
            matches!(config.receivers.get(id), Some(ReceiverConfig::Path(c)) if c.dynamic.enabled)
        });
        let (dest_sink, dest_source) = if dynamic_paths {
            let max = inputs
                .iter()
                .filter_map(|(id, _)| match config.receivers.get(id) {
                    Some(ReceiverConfig::Path(c)) => Some(c.dynamic.max_destinations),
                    _ => None,
                })
                .max()
                .unwrap_or(1000);
            let (sink, source) = destinations((max * 4).clamp(1024, 65_536));
            (Some(sink), Some(Arc::new(source)))
        } else {
            (None, None)
        };
        let has_flow_source = inputs
            .iter()
            .any(|(id, _)| matches!(config.receivers.get(id), Some(ReceiverConfig::Ebpf(_))));
        for (id, outs) in inputs {
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
                    let settings = ebpf_settings(c)?;
                    let mut receiver =
                        EbpfReceiver::start(settings, telemetry.clone(), names.clone())
                            .with_context(|| format!("starting receiver {id}"))?;
                    if let Some(sink) = &dest_sink {
                        receiver = receiver.with_destinations(sink.clone());
                    }
                    sources.push(tokio::spawn(async move {
                        if let Err(e) = receiver.run(tx, stop).await {
                            tracing::error!(receiver = %name, "stopped: {e:#}");
                        }
                    }));
                }
                ReceiverConfig::Dns(c) => {
                    interval = interval.min(c.collection_interval);
                    let (receiver, cache) = DnsReceiver::start(dns_settings(c), telemetry.clone())
                        .with_context(|| format!("starting receiver {id}"))?;
                    if names.is_none() {
                        names = Some(cache);
                    }
                    sources.push(tokio::spawn(async move {
                        if let Err(e) = receiver.run(tx, stop).await {
                            tracing::error!(receiver = %name, "stopped: {e:#}");
                        }
                    }));
                }
                ReceiverConfig::Path(c) => {
                    let settings =
                        crate::path::settings(c).with_context(|| format!("receiver {id}"))?;
                    let source = if has_flow_source {
                        dest_source.clone()
                    } else {
                        None
                    };
                    let receiver = PathReceiver::start(
                        settings,
                        telemetry.clone(),
                        Arc::new(TrippyProber),
                        source,
                    )
                    .with_context(|| format!("starting receiver {id}"))?;
                    sources.push(tokio::spawn(receiver.run(tx, stop)));
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
        telemetry.events_lost(
            "pipeline",
            "pipeline_closed",
            (b.flows.len() + b.points.len()) as u64,
        )
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
    let resource = self_resource();
    let mut start = std::time::SystemTime::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let now = std::time::SystemTime::now();
        let points = telemetry.drain(&resource);
        let batch = FlowBatch::of_points(unix_nanos(start), unix_nanos(now), points);
        start = now;
        for o in &outs {
            if let Err(e) = o.send(batch.clone()).await {
                warn!("a pipeline stopped before the agent");
                telemetry.events_lost("pipeline", "pipeline_closed", e.0.points.len() as u64);
            }
        }
        if last {
            return;
        }
    }
}
