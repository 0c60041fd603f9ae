//! Names of hops: the reverse DNS name (PTR) of each hop address, asked in
//! the test's own network namespace, and the autonomous system announcing
//! it, from an ASN database the user points to (`asn_database`).
//!
//! # PTR
//! The lookups run on the run's own thread right after the trace, inside
//! the namespace the test probes from, so a hop is named by the resolver
//! that namespace uses: `/etc/netns/NAME/resolv.conf` for a test whose
//! `netns` is `/run/netns/NAME` (where `ip netns exec` finds it), else the
//! agent's `/etc/resolv.conf`. One UDP query per unknown address goes to
//! the first `nameserver`, all at once, and the answers are awaited for at
//! most [`PTR_WAIT`]. Answers (a name, or none) are cached for
//! [`PTR_TTL`] ([`NEGATIVE_TTL`] for none), at most [`MAX_CACHED`]
//! addresses; a full cache first forgets what expired, then the entries
//! that expire soonest.
//!
//! # AS numbers
//! The `.mmdb` is read with the `maxminddb` crate (MaxMind GeoLite2-ASN and
//! DB-IP ASN Lite use the same `autonomous_system_number` and
//! `autonomous_system_organization` fields). The file is opened at start
//! (a missing or bad file is a start error naming it) and read again when
//! its modification time or size changes, checked at most every
//! [`RELOAD_CHECK`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, TYPE};
use thiserror::Error;
use tracing::warn;

use super::netns::Netns;
use super::points::{HopNameMap, HopNames};

/// Longest a run waits for its PTR answers.
pub const PTR_WAIT: Duration = Duration::from_millis(1000);
/// How long a PTR answer is kept.
pub const PTR_TTL: Duration = Duration::from_secs(3600);
/// How long "no name" is kept.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(300);
/// Most addresses whose PTR answer is kept (per receiver).
pub const MAX_CACHED: usize = 4096;
/// Least time between two checks of the ASN database file.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum HopNameError {
    #[error("asn_database {path}: {source}")]
    Asn {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

/// The fields of an ASN database record.
#[derive(serde::Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
}

struct AsnDb {
    path: PathBuf,
    reader: maxminddb::Reader<Vec<u8>>,
    stamp: Option<(u64, SystemTime)>,
    checked: Instant,
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl AsnDb {
    fn open(path: &Path) -> Result<AsnDb, HopNameError> {
        let reader =
            maxminddb::Reader::open_readfile(path).map_err(|source| HopNameError::Asn {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AsnDb {
            path: path.to_path_buf(),
            reader,
            stamp: stamp(path),
            checked: Instant::now(),
        })
    }

    /// Reads the file again when it changed; a file that became unreadable
    /// keeps the loaded database and is logged.
    fn refresh(&mut self) {
        if self.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        self.checked = Instant::now();
        let now = stamp(&self.path);
        if now == self.stamp {
            return;
        }
        match AsnDb::open(&self.path) {
            Ok(db) => *self = db,
            Err(e) => {
                warn!("keeping the loaded ASN database: {e:#}");
                self.stamp = now;
            }
        }
    }

    fn lookup(&self, ip: IpAddr) -> Option<(u32, Option<String>)> {
        let r = self.reader.lookup(ip).ok()?;
        let rec: AsnRecord = r.decode().ok()??;
        Some((
            rec.autonomous_system_number?,
            rec.autonomous_system_organization,
        ))
    }
}

struct Cached {
    name: Option<String>,
    expires: Instant,
}

/// Names hops; shared by every run of one `path` receiver.
pub struct HopNamer {
    resolve: bool,
    asn: Option<Mutex<AsnDb>>,
    /// (resolv.conf the lookup used, address) -> answer.
    cache: Mutex<HashMap<(PathBuf, IpAddr), Cached>>,
}

impl std::fmt::Debug for HopNamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopNamer")
            .field("resolve", &self.resolve)
            .field("asn", &self.asn.is_some())
            .finish()
    }
}

/// The resolver configuration a test in `netns` uses.
pub fn resolv_conf(netns: &Netns) -> PathBuf {
    if let Netns::Path(p) = netns
        && p.parent() == Some(Path::new("/run/netns"))
        && let Some(name) = p.file_name()
    {
        let own = Path::new("/etc/netns").join(name).join("resolv.conf");
        if own.exists() {
            return own;
        }
    }
    PathBuf::from("/etc/resolv.conf")
}

/// The first `nameserver` of a resolv.conf.
fn nameserver(conf: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// `4.3.2.1.in-addr.arpa` / the nibbles of an IPv6 address under
/// `ip6.arpa`.
pub fn ptr_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let mut s = String::with_capacity(72);
            for b in v.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// Asks `server` for the PTR of every address at once; returns what was
/// answered within `wait` (an address without a PTR record maps to None).
fn ask_ptr(server: SocketAddr, ips: &[IpAddr], wait: Duration) -> HashMap<IpAddr, Option<String>> {
    let mut out = HashMap::new();
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(server)
    } else {
        "[::]:0".parse().unwrap_or(server)
    };
    let Ok(sock) = UdpSocket::bind(bind) else {
        return out;
    };
    let base: u16 = (SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16;
    let mut ids: HashMap<u16, IpAddr> = HashMap::new();
    for (i, ip) in ips.iter().enumerate() {
        let id = base.wrapping_add(i as u16);
        let qname = ptr_name(*ip);
        let mut p = Packet::new_query(id);
        p.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(&qname),
            QTYPE::TYPE(TYPE::PTR),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        if let Ok(bytes) = p.build_bytes_vec()
            && sock.send_to(&bytes, server).is_ok()
        {
            ids.insert(id, *ip);
        }
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while !ids.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            break;
        };
        if from != server {
            continue;
        }
        let Ok(p) = Packet::parse(&buf[..n]) else {
            continue;
        };
        let Some(ip) = ids.remove(&p.id()) else {
            continue;
        };
        let name = p.answers.iter().find_map(|a| match &a.rdata {
            RData::PTR(ptr) => Some(ptr.0.to_string().trim_end_matches('.').to_string()),
            _ => None,
        });
        out.insert(ip, name.filter(|n| !n.is_empty()));
    }
    out
}

impl HopNamer {
    /// `resolve`: ask PTR records; `asn_database`: the `.mmdb` to read AS
    /// numbers from.
    pub fn new(resolve: bool, asn_database: Option<&Path>) -> Result<Self, HopNameError> {
        let asn = asn_database.map(AsnDb::open).transpose()?.map(Mutex::new);
        Ok(HopNamer {
            resolve,
            asn,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether anything is named at all.
    pub fn enabled(&self) -> bool {
        self.resolve || self.asn.is_some()
    }

    /// Names `ips`. Blocking (PTR lookups); runs on the run's thread inside
    /// the test's namespace, whose resolver is `conf`.
    pub fn name(&self, conf: &Path, ips: &[IpAddr]) -> HopNameMap {
        let mut out = HopNameMap::new();
        if self.resolve {
            let now = Instant::now();
            let mut unknown = Vec::new();
            {
                let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                for ip in ips {
                    match cache.get(&(conf.to_path_buf(), *ip)) {
                        Some(c) if c.expires > now => {
                            if let Some(n) = &c.name {
                                out.entry(*ip).or_default().name = Some(n.clone());
                            }
                        }
                        _ => unknown.push(*ip),
                    }
                }
            }
            if !unknown.is_empty()
                && let Some(server) = nameserver(conf)
            {
                let mut answers = ask_ptr(server, &unknown, PTR_WAIT);
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                // An address without an answer in time is cached as
                // nameless too, so the next run does not wait for it again.
                for ip in unknown {
                    let name = answers.remove(&ip).flatten();
                    if cache.len() >= MAX_CACHED {
                        evict(&mut cache, now);
                    }
                    let ttl = if name.is_some() {
                        PTR_TTL
                    } else {
                        NEGATIVE_TTL
                    };
                    if let Some(n) = &name {
                        out.entry(ip).or_default().name = Some(n.clone());
                    }
                    cache.insert(
                        (conf.to_path_buf(), ip),
                        Cached {
                            name,
                            expires: now + ttl,
                        },
                    );
                }
            }
        }
        if let Some(db) = &self.asn {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            db.refresh();
            for ip in ips {
                if let Some((n, org)) = db.lookup(*ip) {
                    let e: &mut HopNames = out.entry(*ip).or_default();
                    e.as_number = Some(n);
                    e.as_name = org;
                }
            }
        }
        out
    }
}

/// Makes room in a full cache: drops what expired, then the quarter that
/// expires soonest.
fn evict(cache: &mut HashMap<(PathBuf, IpAddr), Cached>, now: Instant) {
    cache.retain(|_, c| c.expires > now);
    if cache.len() < MAX_CACHED {
        return;
    }
    let mut by_expiry: Vec<Instant> = cache.values().map(|c| c.expires).collect();
    by_expiry.sort_unstable();
    let cut = by_expiry[by_expiry.len() / 4];
    cache.retain(|_, c| c.expires > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names() {
        assert_eq!(
            ptr_name("198.19.1.1".parse().unwrap()),
            "1.1.19.198.in-addr.arpa"
        );
        // As Python's ipaddress.reverse_pointer spells it.
        assert_eq!(
            ptr_name("fd00:1::2".parse().unwrap()),
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa"
        );
    }

    #[test]
    fn a_full_cache_forgets_the_expired_then_the_soonest_to_expire() {
        let now = Instant::now();
        let conf = PathBuf::from("/etc/resolv.conf");
        let mut cache = HashMap::new();
        for i in 0..MAX_CACHED as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            // The first ten already expired; the rest expire in i seconds.
            let expires = if i < 10 {
                now - Duration::from_secs(1)
            } else {
                now + Duration::from_secs(u64::from(i))
            };
            cache.insert(
                (conf.clone(), ip),
                Cached {
                    name: None,
                    expires,
                },
            );
        }
        evict(&mut cache, now);
        assert_eq!(cache.len(), MAX_CACHED - 10, "the expired ones go first");
        // Full again with ten long-lived entries: a quarter goes, soonest
        // to expire first.
        for i in 0..10u8 {
            cache.insert(
                (conf.clone(), IpAddr::from([10, 255, 0, i])),
                Cached {
                    name: None,
                    expires: now + PTR_TTL + Duration::from_secs(3600),
                },
            );
        }
        assert_eq!(cache.len(), MAX_CACHED);
        evict(&mut cache, now);
        assert!(cache.len() <= MAX_CACHED * 3 / 4 + 1, "{}", cache.len());
        assert!(
            cache.contains_key(&(conf.clone(), IpAddr::from([10, 255, 0, 1]))),
            "the longest-lived entries stay"
        );
        assert!(!cache.contains_key(&(conf, IpAddr::from(std::net::Ipv4Addr::from(0x0a00_000a)))));
    }

    #[test]
    fn bad_database_names_the_file() {
        let dir = std::env::temp_dir().join(format!("fs-asn-{}", std::process::id()));
        std::fs::write(&dir, b"not an mmdb").unwrap();
        let e = HopNamer::new(true, Some(&dir)).unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(e.contains("asn_database") && e.contains("fs-asn-"), "{e}");
    }
}
