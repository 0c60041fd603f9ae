//! Kernel drop reasons per flow (contract v3: `flowscope.flow.drops`,
//! `flowscope.host.drops`).
//!
//! A BTF-typed raw tracepoint on `skb:kfree_skb`
//! (`receiver-ebpf/src/bin/drops.rs`) counts every packet the kernel drops
//! by (addresses, ports, protocol, reason) in the `DROPS` map. Each
//! interval the receiver reads the map's deltas ([`DropsProgram::read`]),
//! names the reasons from the running kernel's BTF ([`reasons`]) and hands
//! them to the connection table, which gives each drop to the flow its
//! packet belongs to ([`attribute`]) or to the host.
//!
//! Cost: the program runs only when the kernel drops a packet (a packet
//! used up normally goes to `skb:consume_skb`), and leaves at once for
//! the ignored reasons (`NOT_SPECIFIED` by default); user space reads the map once
//! an interval (one syscall while it is empty). docs/benchmarks.md has the
//! measured cost per run.

pub mod attribute;
pub mod reasons;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{BtfTracePoint, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};
use flowscope_common::{AF_INET, AF_INET6, DropKey, DropOffsets, drop_counter};
use flowscope_model::Telemetry;
use flowscope_model::Transport;
use flowscope_model::internal_events::{EventsLost, LossReason, Source};
use flowscope_model::local::LEARNED_TTL;
use hashbrown::HashMap;
use thiserror::Error;

use crate::btf::{Btf, BtfError};
use attribute::{DropDelta, Packet};
use reasons::DropReasons;

/// The drop program, built by build.rs for the bpf target.
static DROPS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowscope-drops"));

/// The program's name in the object and the tracepoint it attaches to.
const PROGRAM: &str = "kfree_skb";

#[derive(Debug, Error)]
pub enum DropsError {
    #[error("reading the kernel's BTF for struct sk_buff and enum skb_drop_reason")]
    Btf(#[from] BtfError),
    #[error("kernel struct member sk_buff.{member} is {size} bytes, flowscope expects {expected}")]
    Size {
        member: &'static str,
        size: u32,
        expected: u32,
    },
    #[error("the kernel rejected flowscope's drop program object")]
    Load(#[source] EbpfError),
    #[error("reading the kernel's BTF to load the tp_btf program")]
    AyaBtf(#[source] aya::BtfError),
    #[error("eBPF program or map `{0}` is missing from the drop object (a build problem)")]
    Missing(&'static str),
    #[error("eBPF map `{name}` has an unexpected type")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("loading or attaching tp_btf/kfree_skb")]
    Program(#[source] ProgramError),
}

/// What the drop program runs with (the `ebpf` receiver's `drops`
/// settings).
#[derive(Clone, Debug)]
pub struct DropSettings {
    /// Reasons not counted (names without the prefix); names this kernel
    /// does not have are warned about and skipped.
    pub ignore: Vec<String>,
    /// The host's ephemeral port range (see `DropOffsets::ephemeral_low`).
    pub ephemeral: (u16, u16),
    /// Entries of the kernel's `DROPS` map.
    pub max_tracked: u32,
    /// How often the map is read (the collection interval).
    pub interval: Duration,
}

/// Slots of `DROPS_BY_REASON`: reasons 0-255 and one for the rest.
const BY_REASON_SLOTS: u32 = 257;

/// Ports learned at most: the program's bit set has room for every port,
/// but a host that shows more listeners than this is not told apart any
/// better by more of them (the limit the map had as a hash map).
const MAX_LISTENERS: usize = 4096;

/// The loaded drop program and what user space remembers of its map.
pub struct DropsProgram {
    /// Keeps the program and its link alive.
    _ebpf: Ebpf,
    drops: BpfHashMap<MapData, DropKey, u64>,
    /// The kernel's `LISTEN_PORTS`: the ports of `listeners`, a bit each
    /// (port `p`: bit `p % 64` of word `p / 64`).
    listen_ports: Array<MapData, u64>,
    /// Those ports and when a server flow last showed each.
    listeners: HashMap<u16, Instant>,
    counters: PerCpuArray<MapData, u64>,
    counters_last: [u64; drop_counter::COUNT as usize],
    /// Drops counted by reason alone when `DROPS` was full, and their last
    /// totals.
    by_reason: PerCpuArray<MapData, u64>,
    by_reason_last: Vec<u64>,
    /// Last total per key and when it last changed.
    last: HashMap<DropKey, (u64, Instant)>,
    /// A kernel entry unchanged for this long (two reads) is deleted: its
    /// counts were all reported, and a busy host's map keeps room.
    idle: Duration,
    reasons: DropReasons,
}

fn member(btf: &Btf, member: &'static str, size: u32) -> Result<u32, DropsError> {
    let m = btf.member("sk_buff", member)?;
    if m.size != size {
        return Err(DropsError::Size {
            member,
            size: m.size,
            expected: size,
        });
    }
    Ok(m.offset)
}

impl DropsProgram {
    /// Loads and attaches the program (privileges were checked with the
    /// flow programs').
    pub fn load(settings: &DropSettings) -> Result<Self, DropsError> {
        // The kernel's types are freed before the object is loaded: each
        // parsed copy of its BTF takes 12 - 14 MB, and two alive at once
        // set the agent's peak memory (see crate::loader::load).
        let (reasons, skb_head, skb_network_header) = {
            let btf = Btf::from_sys_fs()?;
            (
                DropReasons::from_btf(&btf)?,
                member(&btf, "head", 8)?,
                member(&btf, "network_header", 2)?,
            )
        };
        let mut ignore = [0u32; 8];
        for name in &settings.ignore {
            match reasons.value(name) {
                Some(v) if v < 256 => ignore[(v / 32) as usize] |= 1 << (v % 32),
                Some(v) => tracing::warn!(
                    "ebpf.drops.ignore: {name} is reason {v}, above the 255 the program can leave out; it is counted"
                ),
                None => tracing::warn!(
                    "ebpf.drops.ignore: this kernel has no drop reason {name} (enum skb_drop_reason)"
                ),
            }
        }
        let offsets = DropOffsets {
            skb_head,
            skb_network_header,
            ignore,
            ephemeral_low: settings.ephemeral.0,
            ephemeral_high: settings.ephemeral.1,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("DROP_OFFSETS", &offsets, true)
            .map_max_entries("DROPS", settings.max_tracked.max(1))
            .load(DROPS_OBJECT)
            .map_err(DropsError::Load)?;
        let kernel_btf = aya::Btf::from_sys_fs().map_err(DropsError::AyaBtf)?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or(DropsError::Missing(PROGRAM))?
            .try_into()
            .map_err(DropsError::Program)?;
        prog.load("kfree_skb", &kernel_btf)
            .map_err(DropsError::Program)?;
        prog.attach().map_err(DropsError::Program)?;
        let drops = take(&mut ebpf, "DROPS")?;
        let listen_ports = take(&mut ebpf, "LISTEN_PORTS")?;
        let counters = take(&mut ebpf, "DROP_COUNTERS")?;
        let by_reason = take(&mut ebpf, "DROPS_BY_REASON")?;
        tracing::info!(
            reasons = reasons.len(),
            ignore = ?settings.ignore,
            "drop program attached to tp_btf/kfree_skb"
        );
        Ok(Self {
            _ebpf: ebpf,
            drops,
            listen_ports,
            listeners: HashMap::new(),
            counters,
            counters_last: [0; drop_counter::COUNT as usize],
            by_reason,
            by_reason_last: vec![0; BY_REASON_SLOTS as usize],
            last: HashMap::new(),
            idle: settings.interval * 2,
            reasons,
        })
    }

    /// Learns the ports local servers listen on from an interval's server
    /// flows (their local ports), for the program to tell the client's
    /// port from the server's where the ephemeral range cannot: a network
    /// namespace may hand out client ports outside the host's range, and
    /// without this every connection's drop would be its own key. A port
    /// no server flow showed for [`LEARNED_TTL`] is forgotten, as
    /// `LocalServices` forgets a learned listener. Once 4,096 ports are
    /// learned, a new port is not: its drops are still counted, with both
    /// ports in their key.
    pub fn listen(&mut self, ports: impl IntoIterator<Item = u16>) {
        let now = Instant::now();
        for port in ports {
            if port == 0 {
                continue;
            }
            if let Some(seen) = self.listeners.get_mut(&port) {
                *seen = now;
                continue;
            }
            if self.listeners.len() >= MAX_LISTENERS {
                tracing::debug!(port, "listening ports full; port not learned");
                continue;
            }
            self.listeners.insert(port, now);
            if !self.write_word(port) {
                self.listeners.remove(&port);
                tracing::debug!(port, "writing the listening ports failed; port not learned");
            }
        }
        let stale: Vec<u16> = self
            .listeners
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) >= LEARNED_TTL)
            .map(|(port, _)| *port)
            .collect();
        for port in &stale {
            self.listeners.remove(port);
        }
        for port in stale {
            self.write_word(port);
        }
    }

    /// Writes the word of the kernel's `LISTEN_PORTS` that holds `port`'s
    /// bit, from `listeners` (the 64 ports it covers); false when the
    /// kernel did not take it. Runs only when a port is learned or
    /// forgotten.
    fn write_word(&mut self, port: u16) -> bool {
        let first = port & !63;
        let word = (0..64u16)
            .filter(|b| self.listeners.contains_key(&(first + b)))
            .fold(0u64, |w, b| w | 1 << b);
        self.listen_ports.set(u32::from(port / 64), word, 0).is_ok()
    }

    /// The drops counted since the last read, named; deletes kernel
    /// entries unchanged for two intervals. Drops the map had no room for
    /// come by reason alone (the host's). Map read errors and the kernel's
    /// own misses (map full: counted without their flow; unreadable
    /// header) are counted in
    /// `flowscope.events.lost{flowscope.source=ebpf.drops}`.
    pub fn read(&mut self, telemetry: &Telemetry) -> Vec<DropDelta> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut idle = Vec::new();
        let mut errors = 0;
        let mut seen = 0usize;
        for item in self.drops.iter() {
            let (key, total) = match item {
                Ok(kv) => kv,
                Err(_) => {
                    errors += 1;
                    continue;
                }
            };
            seen += 1;
            let (before, changed) = self.last.get(&key).copied().unwrap_or((0, now));
            // A total below the last one: the entry was deleted and
            // created again in between; all of it is new.
            let delta = if total >= before {
                total - before
            } else {
                total
            };
            if delta > 0 {
                self.last.insert(key, (total, now));
                out.push(DropDelta {
                    packet: packet(&key),
                    reason: self.reasons.name(key.reason),
                    packets: delta,
                });
            } else if now.duration_since(changed) >= self.idle {
                idle.push(key);
            }
        }
        for key in idle {
            let _ = self.drops.remove(&key);
            self.last.remove(&key);
        }
        // Entries the kernel no longer has (deleted above on an earlier
        // read) need no memory here.
        if self.last.len() > seen.saturating_mul(2) + 64 {
            let keys: hashbrown::HashSet<DropKey> =
                self.drops.keys().filter_map(Result::ok).collect();
            self.last.retain(|k, _| keys.contains(k));
        }
        let mut read = |i: u32| -> u64 {
            let total: u64 = self
                .counters
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0);
            let slot = &mut self.counters_last[i as usize];
            let d = total.saturating_sub(*slot);
            *slot = total;
            d
        };
        let full = read(drop_counter::MAP_FULL);
        let unreadable = read(drop_counter::READ_ERROR);
        if full > 0 {
            // Only then: 257 per-CPU reads.
            for i in 0..BY_REASON_SLOTS {
                let total: u64 = self
                    .by_reason
                    .get(&i, 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                let slot = &mut self.by_reason_last[i as usize];
                let d = total.saturating_sub(*slot);
                *slot = total;
                if d > 0 {
                    out.push(DropDelta {
                        packet: None,
                        reason: if i < 256 {
                            self.reasons.name(i)
                        } else {
                            std::sync::Arc::from("UNKNOWN")
                        },
                        packets: d,
                    });
                }
            }
        }
        telemetry.emit(EventsLost::new(
            Source::EbpfDrops,
            LossReason::MapFull,
            full,
        ));
        telemetry.emit(EventsLost::new(
            Source::EbpfDrops,
            LossReason::ReadError,
            unreadable,
        ));
        telemetry.emit(EventsLost::new(
            Source::EbpfDrops,
            LossReason::MapReadError,
            errors,
        ));
        out
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DropsError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DropsError::Missing(name))?;
    T::try_from(map).map_err(|source| DropsError::Map { name, source })
}

/// The transport and ends of a decoded key; `None` when the packet was not
/// TCP or UDP over IP (or its headers were not there).
pub fn packet(key: &DropKey) -> Option<Packet> {
    let transport = match key.protocol {
        6 => Transport::Tcp,
        17 => Transport::Udp,
        _ => return None,
    };
    let ip = |raw: &[u8; 16]| -> Option<IpAddr> {
        match key.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            AF_INET6 => {
                let v6 = Ipv6Addr::from(*raw);
                Some(match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                })
            }
            _ => None,
        }
    };
    Some(Packet {
        transport,
        src: SocketAddr::new(ip(&key.saddr)?, key.sport),
        dst: SocketAddr::new(ip(&key.daddr)?, key.dport),
    })
}
