//! Prints every flow batch the receiver produces: `cargo run --example dump -p flowscope-receiver`.
use std::time::Duration;

use flowscope_model::{Context, HostFacts};
use flowscope_receiver::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let config = flowscope_otel_config::receivers::EbpfReceiverConfig {
        collection_interval: Duration::from_secs(secs),
        resource_granularity: flowscope_otel_config::receivers::ResourceGranularity::Process,
        ..Default::default()
    };
    let ctx = Context::new(HostFacts::detect());
    let telemetry = ctx.telemetry.clone();
    let rx = EbpfReceiver::start(&config, &ctx)?;
    let (tx, mut brx) = tokio::sync::mpsc::channel(4);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(rx.run(tx, stop_rx));
    while let Some(b) = brx.recv().await {
        println!("--- {} flows", b.flows.len());
        for f in &b.flows {
            println!(
                "{:?} {:?} {} -> {} res={:?} {:?}",
                f.transport,
                f.role,
                f.local,
                f.peer,
                f.resource.get_str("service.name"),
                f.stats
            );
        }
        for p in telemetry.collect_interval() {
            println!("  self {} {:?} {:?}", p.metric.name(), p.attrs, p.value);
        }
    }
    Ok(())
}
