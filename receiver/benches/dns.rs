//! DNS packets parsed and matched per second on one core: captured IP
//! packets (UDP queries and their responses, and DNS over TCP) through
//! decoding, parsing, matching, top-K folding, the name cache and
//! aggregation, as the capture thread runs them. Results: docs/benchmarks-dns.md.
//!
//! Run: `cargo bench -p flowscope-receiver --bench dns`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowscope_model::{Attrs, Telemetry};
use flowscope_receiver::dns::engine::{Captured, Direction, Engine, EngineSettings, FixedOwner};
use flowscope_receiver::dns::message;
use flowscope_receiver::dns::names::DnsNames;
use flowscope_receiver::dns::packet::build;

const LOOKUPS: usize = 10_000;
const NAMES: usize = 500;

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    b[0..2].copy_from_slice(&id.to_be_bytes());
    b[2] = 0x01;
    b[5] = 1;
    for label in name.split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.push(0);
    b.extend_from_slice(&[0, 1, 0, 1]);
    b
}

/// The response to `q`: a CNAME and two A records, as CDNs answer.
fn response(q: &[u8], i: usize) -> Vec<u8> {
    let mut r = q.to_vec();
    r[2] |= 0x80;
    r[3] = 0x80;
    r[7] = 3;
    // www.<name> CNAME edge.<name> (pointer to the question + 5 bytes label).
    r.extend_from_slice(&[
        0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 7, 4, b'e', b'd', b'g', b'e', 0xc0, 16,
    ]);
    let cname_at = (q.len() + 12) as u8;
    for k in 0..2u8 {
        r.extend_from_slice(&[
            0xc0,
            cname_at,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            60,
            0,
            4,
            198,
            18,
            (i % 250) as u8,
            k,
        ]);
    }
    r
}

fn packets(tcp: bool) -> Vec<(Vec<u8>, Direction)> {
    let server: SocketAddr = "198.18.0.1:53".parse().expect("addr");
    let mut out = Vec::with_capacity(LOOKUPS * 2);
    for i in 0..LOOKUPS {
        let client = SocketAddr::new(
            "198.18.0.2".parse().expect("addr"),
            20_000 + (i % 40_000) as u16,
        );
        let name = format!("www.svc{}.example.com", i % NAMES);
        let q = query(i as u16, &name);
        let r = response(&q, i);
        if tcp {
            let frame = |m: &[u8]| {
                let mut f = (m.len() as u16).to_be_bytes().to_vec();
                f.extend_from_slice(m);
                f
            };
            out.push((
                build::tcp(client, server, 1, 0x18, &frame(&q)),
                Direction::Outgoing,
            ));
            out.push((
                build::tcp(server, client, 1, 0x19, &frame(&r)),
                Direction::Incoming,
            ));
            out.push((
                build::tcp(client, server, 1 + q.len() as u32 + 2, 0x11, &[]),
                Direction::Outgoing,
            ));
        } else {
            out.push((build::udp(client, server, &q), Direction::Outgoing));
            out.push((build::udp(server, client, &r), Direction::Incoming));
        }
    }
    out
}

fn engine() -> Engine {
    let settings = EngineSettings {
        timeout: Duration::from_secs(5),
        max_outstanding: 65_536,
        top_k: 100,
        buckets: Arc::from(flowscope_model::hist::DNS_BOUNDS),
        max_tcp_streams: 4096,
    };
    let names = Arc::new(DnsNames::new(65_536, Duration::from_secs(30)));
    let owner = FixedOwner(Arc::new(Attrs::new().with("service.name", "bench")));
    Engine::new(settings, Telemetry::new(), names, Box::new(owner))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dns");
    for (label, tcp) in [("udp_packets", false), ("tcp_segments", true)] {
        let pkts = packets(tcp);
        g.throughput(Throughput::Elements(pkts.len() as u64));
        g.bench_function(label, |b| {
            b.iter(|| {
                let mut e = engine();
                for (i, (data, direction)) in pkts.iter().enumerate() {
                    e.on_packet(&Captured {
                        netns: 1,
                        ts_ns: 1_000_000 + i as u64 * 1000,
                        direction: *direction,
                        loopback: false,
                        data,
                    });
                }
                assert_eq!(e.answered, LOOKUPS as u64);
                black_box(e.finish())
            })
        });
    }
    let msgs: Vec<Vec<u8>> = (0..LOOKUPS)
        .map(|i| response(&query(i as u16, "www.svc1.example.com"), i))
        .collect();
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("parse_responses", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(message::parse(m).is_ok());
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
