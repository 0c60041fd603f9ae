//! Prints every flow batch the receiver produces: `cargo run --example dump -p flowscope-receiver`.
use std::sync::Arc;
use std::time::Duration;

use flowscope_model::Telemetry;
use flowscope_receiver::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let settings = ReceiverSettings {
        interval: Duration::from_secs(secs),
        load: LoadOptions {
            tcp: true,
            udp: true,
            max_flows: 65536,
            ring_buffer_bytes: 1 << 20,
        },
        collector: CollectorSettings {
            max_tracked: 65536,
            granularity: Granularity::Process,
            include_command_line: false,
            rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
            duration_bounds: Arc::from(flowscope_model::hist::DURATION_BOUNDS),
            ephemeral: ephemeral_ports(),
            host: host_attrs(),
        },
    };
    let telemetry = Telemetry::new();
    let rx = EbpfReceiver::start(settings, telemetry.clone(), None)?;
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
        for p in telemetry.drain(&self_resource()) {
            println!("  self {} {:?} {:?}", p.metric.name, p.attrs, p.value);
        }
    }
    Ok(())
}
