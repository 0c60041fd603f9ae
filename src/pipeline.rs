//! Wires a loaded config into running components.
//!
//! ```text
//! receiver --(bounded)--> fan-out --(bounded)--> pipeline: Chain -> exporters
//! self-telemetry tick ----^
//! ```
//! The agent builds one [`Context`] (self-telemetry, the DNS name cache,
//! the table of local listeners, host facts) and hands it to every
//! receiver, processor and exporter it builds; that is the only state they
//! share. Receivers are built through one trait
//! ([`flowscope_receiver::component`]), in the order the pipelines name
//! them; what one needs from another (dynamic path tests need a flow
//! source) and the capabilities of all are checked before any starts. No
//! receiver type is named here.
//!
//! Every receiver runs in its own task and sends one `FlowBatch` per
//! interval. A fan-out task per receiver clones the batch to each pipeline
//! that lists it; a pipeline task runs its processor chain and submits the
//! result to its exporters, whose queues never block.
//!
//! The agent's own telemetry reaches each exporter exactly once, however
//! many pipelines list it: it goes through the processors of the first
//! pipeline (in file order) that lists the exporter, and that pipeline
//! submits it only to the exporters it carries it for
//! ([`self_telemetry_routes`]). A pipeline that carries it for no exporter
//! never sees it. Shutdown runs the same
//! way: receivers send their last partial interval and close their channels,
//! the pipelines drain, and the exporters flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use flowscope_exporters::ExporterHandle;
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::{Context, FlowBatch, MemoryPressure, MetricBatch, Telemetry};
use flowscope_otel_config::{ComponentId, Config};
use flowscope_processors::Chain;
use flowscope_receiver::component::BuildReceiver;
use flowscope_receiver::unix_nanos;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The builders of the receivers the pipelines list, in the order the
/// pipelines name them (each once).
type Receivers<'a> = Vec<(ComponentId, &'a dyn BuildReceiver)>;

/// Checks, before anything starts, what the pipelines' receivers need from
/// each other ([`flowscope_receiver::component::check_supplies`]) and every
/// capability they need, so one error names all that are missing.
fn check_receivers(receivers: &Receivers<'_>) -> anyhow::Result<()> {
    use flowscope_receiver::capabilities::check;
    flowscope_receiver::component::check_supplies(
        receivers.iter().map(|(id, r)| (id.to_string(), *r)),
    )?;
    let features: Vec<_> = receivers.iter().flat_map(|(_, r)| r.features()).collect();
    check(&features)?;
    Ok(())
}

/// The builders of the receivers `config`'s pipelines list, in the order
/// they name them.
pub fn receivers(config: &Config) -> anyhow::Result<Receivers<'_>> {
    let mut out: Receivers<'_> = Vec::new();
    for pipeline in config.service.pipelines.values() {
        for id in &pipeline.receivers {
            if out.iter().any(|(seen, _)| seen == id) {
                continue;
            }
            let cfg = config
                .receivers
                .get(id)
                .ok_or_else(|| anyhow!("receiver {id} is not defined"))?;
            let builder = flowscope_receiver::component::component(cfg)
                .with_context(|| format!("receiver {id}"))?;
            out.push((id.clone(), builder));
        }
    }
    Ok(out)
}

/// Batches waiting between stages. Small: a batch is a whole interval.
const STAGE_QUEUE: usize = 4;

/// What a pipeline receives.
enum Input {
    /// A receiver's interval: for every exporter of the pipeline.
    Flows(FlowBatch),
    /// The agent's own telemetry: only for the exporters this pipeline
    /// carries it for.
    SelfTelemetry(FlowBatch),
}

impl Input {
    fn batch(&self) -> &FlowBatch {
        match self {
            Input::Flows(b) | Input::SelfTelemetry(b) => b,
        }
    }
}

/// For each pipeline (given as its exporters, in file order), the
/// exporters it carries the agent's own telemetry for: those no earlier
/// pipeline lists. Every exporter is in exactly one of the lists, so each
/// receives each self-telemetry interval once; an exporter listed in two
/// pipelines would otherwise receive every counter delta twice, and a
/// backend summing them would report twice what happened.
fn self_telemetry_routes<T: Clone + Eq + std::hash::Hash>(pipelines: &[&[T]]) -> Vec<Vec<T>> {
    let mut claimed = std::collections::HashSet::new();
    pipelines
        .iter()
        .map(|exporters| {
            exporters
                .iter()
                .filter(|e| claimed.insert((*e).clone()))
                .cloned()
                .collect()
        })
        .collect()
}

/// The running agent.
pub struct Agent {
    shutdown: watch::Sender<bool>,
    sources: Vec<JoinHandle<()>>,
    self_stop: watch::Sender<bool>,
    self_task: JoinHandle<()>,
    /// Hands the allocator's free memory back once per interval.
    heap_task: JoinHandle<()>,
    pipelines: Vec<JoinHandle<()>>,
    exporters: Vec<ExporterHandle>,
    /// The self-telemetry interval: the shortest receiver interval (10 s at
    /// most).
    interval: Duration,
}

impl Agent {
    /// Starts every component the pipelines use, each built with `ctx`.
    /// Must run inside a tokio runtime. Fails, naming the component, when
    /// one cannot start.
    pub fn start(config: &Config, ctx: &Context) -> anyhow::Result<Agent> {
        Agent::start_with(config, &receivers(config)?, ctx)
    }

    /// As [`Agent::start`], with the builders of the receivers the
    /// pipelines list given ([`receivers`] finds them in `config`).
    fn start_with(
        config: &Config,
        receivers: &Receivers<'_>,
        ctx: &Context,
    ) -> anyhow::Result<Agent> {
        check_receivers(receivers)?;
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
        let mut inputs: HashMap<ComponentId, Vec<mpsc::Sender<Input>>> = HashMap::new();
        let mut self_inputs = Vec::new();
        let mut pipelines = Vec::new();
        let listed: Vec<&[ComponentId]> = config
            .service
            .pipelines
            .values()
            .map(|p| p.exporters.as_slice())
            .collect();
        let self_routes = self_telemetry_routes(&listed);
        for ((pid, pipeline), self_route) in config.service.pipelines.iter().zip(self_routes) {
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
            let self_outs: Vec<ExporterHandle> = self_route
                .iter()
                .filter_map(|id| exporters.get(id).cloned())
                .collect();
            let (tx, rx) = mpsc::channel(STAGE_QUEUE);
            for r in &pipeline.receivers {
                inputs.entry(r.clone()).or_default().push(tx.clone());
            }
            // `service.telemetry.metrics.level: none`: no self-telemetry.
            if !self_outs.is_empty() && !crate::readers::self_metrics_off(config) {
                self_inputs.push(tx);
            }
            pipelines.push(tokio::spawn(run_pipeline(
                pid.to_string(),
                chain,
                rx,
                outs,
                self_outs,
                ctx.telemetry.clone(),
                ctx.memory.clone(),
            )));
        }

        // Receivers, in the order the pipelines name them.
        let mut sources = Vec::new();
        let mut interval = Duration::from_secs(10);
        for (id, builder) in receivers {
            let outs = inputs.remove(id).unwrap_or_default();
            if let Some(i) = builder.interval() {
                interval = interval.min(i);
            }
            let receiver = builder
                .build(ctx)
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("starting receiver {id}"))?;
            let (tx, rx) = mpsc::channel(STAGE_QUEUE);
            let stop = shutdown_rx.clone();
            let name = id.to_string();
            sources.push(tokio::spawn(async move {
                if let Err(e) = receiver.run(tx, stop).await {
                    tracing::error!(receiver = %name, "stopped: {e:#}");
                }
            }));
            sources.push(tokio::spawn(fan_out(rx, outs, telemetry.clone())));
        }

        // The agent's own telemetry, once per (shortest) interval.
        let (self_stop, self_stop_rx) = watch::channel(false);
        let heap_task = tokio::spawn(release_heap(interval, self_stop_rx.clone()));
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
            heap_task,
            pipelines,
            exporters: exporters.into_values().collect(),
            interval,
        })
    }

    /// How often the agent reports its own telemetry (the readers of
    /// `service.telemetry` tick with it).
    pub fn interval(&self) -> Duration {
        self.interval
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
        let _ = self.heap_task.await;
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
    outs: Vec<mpsc::Sender<Input>>,
    telemetry: Telemetry,
) {
    // A pipeline only closes its input when its task died; what would have
    // gone to it is counted, not silently dropped.
    let lost = |i: &Input| {
        let b = i.batch();
        telemetry.emit(EventsLost::new(
            Source::Pipeline,
            LossReason::PipelineClosed,
            (b.flows.len() + b.points.len()) as u64,
        ))
    };
    while let Some(batch) = rx.recv().await {
        if let Some((last, rest)) = outs.split_last() {
            for o in rest {
                if let Err(e) = o.send(Input::Flows(batch.clone())).await {
                    lost(&e.0);
                }
            }
            if let Err(e) = last.send(Input::Flows(batch)).await {
                lost(&e.0);
            }
        }
    }
}

async fn run_pipeline(
    name: String,
    mut chain: Chain,
    mut rx: mpsc::Receiver<Input>,
    exporters: Vec<ExporterHandle>,
    self_exporters: Vec<ExporterHandle>,
    telemetry: Telemetry,
    memory: MemoryPressure,
) {
    while let Some(input) = rx.recv().await {
        let (batch, to) = match input {
            Input::Flows(b) => (b, &exporters),
            Input::SelfTelemetry(b) => (b, &self_exporters),
        };
        let metrics: MetricBatch = chain.process(batch);
        tracing::debug!(pipeline = %name, points = metrics.points.len(), "interval processed");
        let points = metrics.points.len() as u64;
        let metrics = Arc::new(metrics);
        // Submitting encodes the batch for each exporter and, with a
        // persistent queue, writes and fsyncs it: blocking work, done on
        // the blocking pool. Awaited, so batches reach each exporter in
        // order.
        let to = to.clone();
        let memory = memory.clone();
        let submitted = tokio::task::spawn_blocking(move || {
            for e in &to {
                e.submit(metrics.clone());
            }
            // The heap at its busiest: the batch and its encodings held.
            if memory.watched() {
                memory.note_heap(flowscope_model::memory::heap().in_use);
            }
        })
        .await;
        if let Err(e) = submitted {
            // A bug (a panic while encoding): the interval is lost, and said.
            tracing::error!(pipeline = %name, "submitting an interval to the exporters failed: {e}");
            telemetry.emit(EventsLost::new(
                Source::Pipeline,
                LossReason::PipelineClosed,
                points,
            ));
        }
    }
    info!(pipeline = %name, "pipeline drained");
}

/// Once per interval, after the interval's peak (its batch processed and
/// encoded, the UI's queries), hands the allocator's free memory back to
/// the system ([`flowscope_model::memory::release_free`]), on the blocking
/// pool.
async fn release_heap(interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = tokio::task::spawn_blocking(flowscope_model::memory::release_free).await;
            }
            _ = stop.changed() => return,
        }
    }
}

async fn self_telemetry(
    telemetry: Telemetry,
    interval: Duration,
    outs: Vec<mpsc::Sender<Input>>,
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
            if let Err(e) = o.send(Input::SelfTelemetry(batch.clone())).await {
                warn!("a pipeline stopped before the agent");
                telemetry.emit(EventsLost::new(
                    Source::Pipeline,
                    LossReason::PipelineClosed,
                    e.0.batch().points.len() as u64,
                ));
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use flowscope_model::metrics::FLOW_IO;
    use flowscope_model::{Attrs, Point, PointValue};
    use flowscope_receiver::capabilities::Feature;
    use flowscope_receiver::component::{BoxError, Receiver, RunFuture, Supply};

    /// Adding a receiver, as docs/architecture.md lists it: a config type
    /// that builds it from the Context and says what it needs, and a
    /// receiver that sends batches until shutdown. (In the agent, the
    /// config type is a `ReceiverConfig` variant and
    /// `flowscope_receiver::component::component` maps it here; this test
    /// hands the builder to the same loop directly.)
    struct OnePointConfig {
        bytes: u64,
        needs: Vec<Supply>,
    }

    struct OnePoint {
        point: Point,
    }

    impl BuildReceiver for OnePointConfig {
        fn features(&self) -> Vec<Feature> {
            Vec::new()
        }

        fn needs(&self) -> Vec<Supply> {
            self.needs.clone()
        }

        fn build(&self, ctx: &Context) -> Result<Box<dyn Receiver>, BoxError> {
            Ok(Box::new(OnePoint {
                point: Point {
                    resource: Arc::new(ctx.host.attrs.clone()),
                    metric: FLOW_IO,
                    attrs: Attrs::new().with("network.io.direction", "transmit"),
                    value: PointValue::Int(self.bytes),
                },
            }))
        }
    }

    impl Receiver for OnePoint {
        fn run(
            self: Box<Self>,
            tx: mpsc::Sender<FlowBatch>,
            mut shutdown: watch::Receiver<bool>,
        ) -> RunFuture {
            Box::pin(async move {
                let batch = FlowBatch::of_points(1_000, 2_000, vec![self.point]);
                tx.send(batch).await?;
                let _ = shutdown.changed().await;
                Ok(())
            })
        }
    }

    const CONFIG: &str = "\
receivers:
  ebpf:
exporters:
  file:
    path: PATH
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [ebpf]
      exporters: [file]
";

    /// The file exporter's lines for `config` with the pipeline's receiver
    /// replaced by `receiver` (as `one`), after the agent ran and stopped.
    fn run_with(receiver: &OnePointConfig) -> anyhow::Result<Vec<serde_json::Value>> {
        let dir = std::env::temp_dir().join(format!(
            "flowscope-one-receiver-{}-{}",
            std::process::id(),
            receiver.bytes
        ));
        std::fs::create_dir_all(&dir)?;
        let out = dir.join("out.json");
        let _ = std::fs::remove_file(&out);
        let text = CONFIG.replace("PATH", &out.display().to_string());
        let mut config = flowscope_otel_config::load_str(&text, "test.yaml")?.config;
        let id: ComponentId = "one".parse()?;
        for p in config.service.pipelines.values_mut() {
            p.receivers = vec![id.clone()];
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let ctx = Context::default();
        let started = rt.block_on(async {
            let agent =
                Agent::start_with(&config, &vec![(id, receiver as &dyn BuildReceiver)], &ctx)?;
            agent.stop().await;
            anyhow::Ok(())
        });
        let lines = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        started?;
        Ok(lines
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?)
    }

    #[test]
    fn a_new_receiver_reaches_the_exporters() {
        let lines = run_with(&OnePointConfig {
            bytes: 1234,
            needs: Vec::new(),
        })
        .expect("the agent runs the receiver");
        assert_eq!(lines.len(), 1, "one batch, one line: {lines:?}");
        let metrics = &lines[0]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        assert_eq!(metrics.as_array().map(Vec::len), Some(1), "{metrics}");
        assert_eq!(metrics[0]["name"], "network.flow.io");
        let points = &metrics[0]["sum"]["dataPoints"];
        assert_eq!(points.as_array().map(Vec::len), Some(1), "{points}");
        assert_eq!(points[0]["asInt"], "1234");
        assert_eq!(points[0]["startTimeUnixNano"], "1000");
        assert_eq!(points[0]["timeUnixNano"], "2000");
        assert_eq!(
            points[0]["attributes"],
            serde_json::json!([{"key": "network.io.direction", "value": {"stringValue": "transmit"}}])
        );
    }

    #[test]
    fn a_receiver_needing_what_none_supplies_does_not_start() {
        let e = run_with(&OnePointConfig {
            bytes: 1,
            needs: vec![Supply::FlowDestinations],
        })
        .expect_err("nothing supplies flow destinations");
        assert_eq!(
            e.to_string(),
            "receiver one: dynamic tests need an ebpf receiver in the same agent to observe flows"
        );
    }

    #[test]
    fn self_telemetry_reaches_each_exporter_once() {
        // metrics: [file, otlp], debug: [file, console], again: [otlp].
        let routes = self_telemetry_routes(&[
            &["file", "otlp"][..],
            &["file", "console"][..],
            &["otlp"][..],
        ]);
        assert_eq!(
            routes,
            vec![vec!["file", "otlp"], vec!["console"], Vec::<&str>::new()]
        );
        let mut all: Vec<_> = routes.concat();
        all.sort_unstable();
        assert_eq!(all, vec!["console", "file", "otlp"]);
    }
}
