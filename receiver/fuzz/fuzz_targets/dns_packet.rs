//! Feeds arbitrary bytes through the DNS packet path: the message parser,
//! the IP/UDP/TCP decoder, TCP reassembly and the matching engine. The
//! first byte picks how the rest is presented: as a whole IP packet, as
//! the payload of a UDP query or response, or as a TCP stream cut into
//! segments. Any panic is a bug.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

/// Stands in for flowscope_receiver::collector, which names.rs uses.
#[allow(dead_code)]
mod collector {
    pub trait PeerNames: Send + Sync {
        fn name_of(&self, netns: u32, ip: std::net::IpAddr) -> Option<std::sync::Arc<str>>;
    }
}

// The packet-path modules of receiver/src/dns, at the crate root so
// their `super::` paths resolve to each other.
#[allow(dead_code)]
#[path = "../../src/dns/engine.rs"]
mod engine;
#[path = "../../src/dns/message.rs"]
mod message;
#[allow(dead_code)]
#[path = "../../src/dns/names.rs"]
mod names;
#[allow(dead_code)]
#[path = "../../src/dns/packet.rs"]
mod packet;
#[allow(dead_code)]
#[path = "../../src/dns/tcp.rs"]
mod tcp;
#[allow(dead_code)]
#[path = "../../src/dns/topk.rs"]
mod topk;

use engine::{Captured, Direction, Engine, EngineSettings, FixedOwner};
use packet::build;
use flowscope_model::{Attrs, Telemetry};

fuzz_target!(|data: &[u8]| {
    let _ = message::parse(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let settings = EngineSettings {
        timeout: Duration::from_secs(1),
        max_outstanding: 64,
        top_k: 2,
        buckets: Arc::from(&[0.001, 0.01][..]),
        max_tcp_streams: 4,
    };
    let names = Arc::new(names::DnsNames::new(16, Duration::ZERO));
    let mut e = Engine::new(settings, Telemetry::new(), names, Box::new(FixedOwner(Arc::new(Attrs::new()))));
    let c = "198.18.0.2:40000".parse().unwrap();
    let s = "[fd00::1]:53".parse().unwrap();
    let c6 = "[fd00::2]:40000".parse().unwrap();
    let mut feed = |data: &[u8], direction, ts_ns| {
        e.on_packet(&Captured { netns: 1, ts_ns, direction, loopback: mode & 0x80 != 0, data });
    };
    match mode % 4 {
        0 => feed(rest, Direction::Incoming, 1),
        1 => {
            // The same bytes as a query and as its response.
            feed(&build::udp(c6, s, rest), Direction::Outgoing, 1);
            feed(&build::udp(s, c6, rest), Direction::Incoming, 2);
        }
        2 => {
            let s4 = "198.18.0.1:53".parse().unwrap();
            feed(&build::udp(c, s4, rest), Direction::Outgoing, 1);
            feed(&build::udp(s4, c, rest), Direction::Incoming, 2);
        }
        _ => {
            // A TCP stream in segments of (mode / 4 + 1) bytes, sequence
            // numbers from the first bytes so wrap-around and gaps happen.
            let size = usize::from(mode / 4) + 1;
            let mut seq = rest.iter().take(4).fold(0u32, |a, b| a << 8 | u32::from(*b));
            feed(&build::tcp(c6, s, seq, 0x02, &[]), Direction::Outgoing, 1);
            seq = seq.wrapping_add(1);
            for chunk in rest.chunks(size) {
                feed(&build::tcp(c6, s, seq, 0x18, chunk), Direction::Outgoing, 3);
                seq = seq.wrapping_add(chunk.len() as u32);
            }
        }
    }
    e.expire(u64::MAX);
    let _ = e.finish();
});
