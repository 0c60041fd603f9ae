//! Throughput of the processors on one core (run under `taskset -c 0`):
//! flow updates per second through aggregation + enrichment, through the
//! default chain, and peer lookups per second in the shipped cloud ranges.
//! docs/benchmarks-processors.md has the numbers and how to rerun.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flowscope_model::{Attrs, Flow, FlowBatch, Role, Transport};

/// `n` flow updates: 50 local services, peers spread over private subnets,
/// AWS and GCP ranges and the internet, half TCP with RTT samples.
fn workload(n: usize) -> FlowBatch {
    let services: Vec<Arc<Attrs>> = (0..50).map(|i| resource(&format!("svc-{i}"))).collect();
    let bounds: Arc<[f64]> = Arc::from(flowscope_model::hist::RTT_BOUNDS);
    let peers = [
        "198.18.{a}.{b}:5432",
        "10.{a}.{b}.1:443",
        "140.179.36.{b}:443",
        "3.5.140.{b}:443",
        "34.1.208.{b}:443",
        "9.9.{a}.{b}:443",
    ];
    let flows: Vec<Flow> = (0..n)
        .map(|i| {
            let res = &services[i % services.len()];
            let peer = peers[i % peers.len()]
                .replace("{a}", &((i / 256) % 256).to_string())
                .replace("{b}", &(i % 256).to_string());
            let transport = if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            let mut f = with_bytes(
                flow(res, transport, Role::Client, "198.18.200.1:40000", &peer),
                1500,
                300,
            );
            f.stats.packets_tx = 3;
            f.stats.packets_rx = 2;
            f.stats.active = 1;
            if transport == Transport::Tcp {
                f.stats.record_rtt(&bounds, 0.001, 0.0002);
            }
            f
        })
        .collect();
    batch(flows)
}

const ENRICH: &str = "  cloud:
    detectors: []
    set: {provider: aws, region: eu-west-1, availability_zone: eu-west-1a}
  peer:
    tags:
      - cidrs: [198.18.0.0/15]
        tags: {env: lab}
  locality:
    subnets:
      - {cidr: 198.18.0.0/16, zone: eu-west-1a}
      - {cidr: 10.0.0.0/8, zone: eu-west-1b}
  cost:
    prices: {cross_zone: 0.01, cross_region: 0.02, cross_cloud: 0.09, internet: 0.09}
  aggregate:
    group_by:
      resource: [service.name, host.name, cloud.region, cloud.availability_zone]
      attributes: [network.transport, network.peer.port, service.peer.name, flowscope.peer.cloud.provider, flowscope.peer.cloud.region, flowscope.network.locality, flowscope.peer.tag.env]";

fn chain_throughput(c: &mut Criterion) {
    const N: usize = 10_000;
    let work = workload(N);
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(N as u64));

    let mut full = chain_from_yaml(ENRICH, &["cloud", "peer", "locality", "cost", "aggregate"]);
    g.bench_function("enrich_aggregate_10k_flows", |b| {
        b.iter_batched(|| work.clone(), |w| full.process(w), BatchSize::LargeInput)
    });

    let mut plain = chain_from_yaml("  aggregate:\n    max_series: 100000", &["aggregate"]);
    g.bench_function("full_detail_10k_flows", |b| {
        b.iter_batched(|| work.clone(), |w| plain.process(w), BatchSize::LargeInput)
    });
    g.finish();
}

fn peer_lookups(c: &mut Criterion) {
    let table = flowscope_processors::ranges::builtin();
    let addrs: Vec<IpAddr> = (0..4096u32)
        .map(|i| {
            let s = match i % 4 {
                0 => format!("140.179.{}.{}", i % 256, (i / 7) % 256),
                1 => format!("34.1.{}.{}", 208 + i % 16, i % 256),
                2 => format!("2600:1900:8000::{:x}", i),
                _ => format!("9.9.{}.{}", i % 256, (i / 3) % 256),
            };
            s.parse().expect("address")
        })
        .collect();
    let mut g = c.benchmark_group("peer");
    g.throughput(Throughput::Elements(addrs.len() as u64));
    g.bench_function("cloud_range_lookup", |b| {
        b.iter(|| addrs.iter().filter(|a| table.lookup(**a).is_some()).count())
    });
    g.finish();
}

criterion_group!(benches, chain_throughput, peer_lookups);
criterion_main!(benches);
