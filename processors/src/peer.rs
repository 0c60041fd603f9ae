//! `peer`: names the remote side of each flow.
//!
//! - `flowscope.peer.cloud.provider`/`region`/`service` from the published
//!   cloud ranges ([`crate::ranges`]), longest prefix wins;
//! - `flowscope.peer.tag.<key>` from configured CIDR tags; when several
//!   networks containing the peer set one key, the longest network wins;
//! - the peer's DNS name (`flowscope.peer.domain`, [`attr::PEER_DOMAIN`]):
//!   the name the client resolved to reach the address, from the agent's
//!   shared name cache ([`PeerNames`], filled by the `dns` receiver; empty
//!   without one);
//! - `service.peer.name`, first of: the local process behind the
//!   peer address (same host; [`LocalServices`], or the client side of the
//!   same connection seen in this batch), the configured service whose
//!   network (longest wins) and ports match, the cloud service when the
//!   ranges name a specific one (`S3`, not `AMAZON` or `EC2`).
//!
//! Range files named in the configuration are checked for changes (size and
//! modification time) every `reload_interval`; a changed set is parsed on a
//! background thread and swapped in at the start of a later batch, so the
//! pipeline never waits for a parse. A file that fails to load keeps the
//! previous table and is logged.

use std::collections::BTreeMap;
use std::fs;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flowscope_model::names::attr;
use flowscope_model::{Context, Flow, PeerNames, Role, Value};
use flowscope_otel_config::processors::PeerProcessorConfig;

use crate::cidr::{CidrMap, to_net};
use crate::filter::canonical;
use crate::local::{BatchEndpoints, LocalServices};
use crate::ranges::{self, RangeTable, RangesError};

/// Why the peer processor's range files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read {what} file {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} file {path} is unusable")]
    Parse {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: RangesError,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    Aws,
    Gcp,
    Azure,
}

impl Provider {
    fn what(self) -> &'static str {
        match self {
            Provider::Aws => "AWS ip-ranges",
            Provider::Gcp => "GCP cloud ranges",
            Provider::Azure => "Azure service tags",
        }
    }
}

/// Where the range table comes from.
#[derive(Clone, Debug)]
struct Sources {
    builtin: bool,
    files: Vec<(Provider, PathBuf)>,
}

type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl Sources {
    fn stamps(&self) -> Vec<Stamp> {
        self.files.iter().map(|(_, p)| stamp(p)).collect()
    }

    /// Loads the table: the named files, plus the embedded AWS and GCP files
    /// for providers without one when `builtin` is on.
    fn load(&self) -> Result<Arc<RangeTable>, PeerError> {
        if self.files.is_empty() {
            return Ok(if self.builtin {
                ranges::builtin()
            } else {
                Arc::new(RangeTable::new())
            });
        }
        let mut t = RangeTable::new();
        let named = |p: Provider| self.files.iter().any(|(q, _)| *q == p);
        if self.builtin && !named(Provider::Aws) {
            t.add_aws(ranges::BUILTIN_AWS)
                .map_err(|source| PeerError::Parse {
                    what: "embedded AWS",
                    path: PathBuf::from("<builtin>"),
                    source,
                })?;
        }
        if self.builtin && !named(Provider::Gcp) {
            t.add_gcp(ranges::BUILTIN_GCP)
                .map_err(|source| PeerError::Parse {
                    what: "embedded GCP",
                    path: PathBuf::from("<builtin>"),
                    source,
                })?;
        }
        for (p, path) in &self.files {
            let bytes = fs::read(path).map_err(|source| PeerError::Read {
                what: p.what(),
                path: path.clone(),
                source,
            })?;
            let r = match p {
                Provider::Aws => t.add_aws(&bytes),
                Provider::Gcp => t.add_gcp(&bytes),
                Provider::Azure => t.add_azure(&bytes),
            };
            r.map_err(|source| PeerError::Parse {
                what: p.what(),
                path: path.clone(),
                source,
            })?;
        }
        Ok(Arc::new(t))
    }
}

struct Reloader {
    sources: Sources,
    interval: Duration,
    stamps: Vec<Stamp>,
    last_check: Instant,
    /// Filled by the background parse; taken at the start of a batch.
    pending: Arc<Mutex<Option<Arc<RangeTable>>>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl Reloader {
    fn poll(&mut self) -> Option<Arc<RangeTable>> {
        let ready = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if self.last_check.elapsed() >= self.interval
            && !self.busy.load(std::sync::atomic::Ordering::Acquire)
        {
            self.last_check = Instant::now();
            let now = self.sources.stamps();
            if now != self.stamps {
                self.stamps = now;
                self.busy.store(true, std::sync::atomic::Ordering::Release);
                let sources = self.sources.clone();
                let pending = self.pending.clone();
                let busy = self.busy.clone();
                let spawned = std::thread::Builder::new().name("flowscope-ranges".into()).spawn(move || {
                    match sources.load() {
                        Ok(t) => {
                            tracing::info!(networks = t.len(), "cloud range files changed; reloaded");
                            *pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                        }
                        Err(e) => tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "cloud range files changed but cannot be loaded; keeping the previous ranges"),
                    }
                    busy.store(false, std::sync::atomic::Ordering::Release);
                });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start the range reload thread; will retry");
                    self.busy.store(false, std::sync::atomic::Ordering::Release);
                }
            }
        }
        ready
    }
}

struct NamedService {
    name: Arc<str>,
    ports: Vec<RangeInclusive<u16>>,
}

/// The `peer` processor.
pub struct Peer {
    table: Arc<RangeTable>,
    reloader: Option<Reloader>,
    tags: CidrMap<Vec<(Arc<str>, Value)>>,
    services: CidrMap<Vec<NamedService>>,
    local: Option<LocalServices>,
    names: PeerNames,
    batch: BatchEndpoints,
}

impl Peer {
    /// The processor the configuration describes, reading the context's
    /// table of this host's listeners (unless `local_services` is off) and
    /// its DNS name cache.
    ///
    /// # Errors
    /// A named range file cannot be read or parsed.
    pub fn from_config(c: &PeerProcessorConfig, ctx: &Context) -> Result<Self, PeerError> {
        let mut files = Vec::new();
        for (p, f) in [
            (Provider::Aws, &c.aws_ip_ranges),
            (Provider::Gcp, &c.gcp_cloud_ranges),
            (Provider::Azure, &c.azure_service_tags),
        ] {
            if let Some(f) = f {
                files.push((p, f.clone()));
            }
        }
        let sources = Sources {
            builtin: c.builtin_ranges,
            files,
        };
        let stamps = sources.stamps();
        let table = sources.load()?;
        let reloader = (!sources.files.is_empty()).then(|| Reloader {
            sources,
            interval: c.reload_interval,
            stamps,
            last_check: Instant::now(),
            pending: Arc::default(),
            busy: Arc::default(),
        });

        let mut tags: CidrMap<BTreeMap<Arc<str>, Value>> = CidrMap::new();
        let mut nets = Vec::new();
        for t in &c.tags {
            for cidr in &t.cidrs {
                let net = to_net(cidr);
                let entry: Vec<(Arc<str>, Value)> = t
                    .tags
                    .iter()
                    .map(|(k, v)| {
                        (
                            Arc::from(format!("{}{k}", attr::PEER_TAG_PREFIX)),
                            Value::from(v.as_str()),
                        )
                    })
                    .collect();
                match tags.get_mut(&net) {
                    Some(m) => m.extend(entry),
                    None => {
                        tags.insert(net, entry.into_iter().collect());
                        nets.push(net);
                    }
                }
            }
        }
        let mut tag_map = CidrMap::new();
        for net in nets {
            if let Some(m) = tags.get_mut(&net) {
                tag_map.insert(net, std::mem::take(m).into_iter().collect());
            }
        }

        let mut services: CidrMap<Vec<NamedService>> = CidrMap::new();
        for s in &c.services {
            for cidr in &s.cidrs {
                let net = to_net(cidr);
                let entry = NamedService {
                    name: Arc::from(s.name.as_str()),
                    ports: s.ports.iter().map(|p| p.first..=p.last).collect(),
                };
                match services.get_mut(&net) {
                    Some(v) => v.push(entry),
                    None => {
                        services.insert(net, vec![entry]);
                    }
                }
            }
        }
        Ok(Peer {
            table,
            reloader,
            tags: tag_map,
            services,
            local: c.local_services.then(|| ctx.local_services.clone()),
            names: ctx.peer_names.clone(),
            batch: BatchEndpoints::default(),
        })
    }

    /// The ranges in use (for tests).
    pub fn table(&self) -> &Arc<RangeTable> {
        &self.table
    }

    pub(crate) fn begin_batch(&mut self, flows: &[Flow]) {
        if let Some(t) = self.reloader.as_mut().and_then(Reloader::poll) {
            self.table = t;
        }
        if let Some(local) = &self.local {
            local.learn(flows);
            self.batch = BatchEndpoints::build(flows);
        }
    }

    /// Adds the peer attributes to one flow.
    pub fn enrich(&self, flow: &mut Flow) {
        let ip = canonical(flow.peer.ip());
        if let Some(name) = self.names.name_of(flow.netns, ip) {
            flow.attrs.set(attr::PEER_DOMAIN, name);
        }
        let cloud = self.table.lookup(ip);
        if let Some(c) = cloud {
            flow.attrs.set(attr::PEER_CLOUD_PROVIDER, c.provider);
            if let Some(r) = &c.region {
                flow.attrs.set(attr::PEER_CLOUD_REGION, r.clone());
            }
            flow.attrs.set(attr::PEER_CLOUD_SERVICE, c.service.clone());
        }
        // Shortest network first, so longer ones override a key.
        for (_, tags) in self.tags.covering(ip) {
            for (k, v) in tags {
                flow.attrs.set(k.clone(), v.clone());
            }
        }
        if let Some(name) = self.service_name(flow, cloud) {
            flow.attrs.set(attr::PEER_SERVICE_NAME, name);
        }
    }

    fn service_name(
        &self,
        flow: &Flow,
        cloud: Option<&Arc<ranges::CloudPeer>>,
    ) -> Option<Arc<str>> {
        if let Some(local) = &self.local {
            let found = match flow.role {
                // The peer is the server: who listens there?
                Role::Client => local
                    .lookup(flow.transport, flow.peer, flow.netns)
                    .or_else(|| {
                        self.batch
                            .get(flow.transport, flow.peer, flow.netns)
                            .cloned()
                    }),
                // The peer is a client: the other end of this connection,
                // when it is a flow of this host in this batch.
                Role::Server => self
                    .batch
                    .get(flow.transport, flow.peer, flow.netns)
                    .cloned(),
            };
            if found.is_some() {
                return found;
            }
        }
        let ip = canonical(flow.peer.ip());
        let port = flow.peer.port();
        let configured = self
            .services
            .covering(ip)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find_map(|(_, list)| {
                list.iter()
                    .find(|s| {
                        s.ports.is_empty()
                            || (flow.role == Role::Client
                                && s.ports.iter().any(|r| r.contains(&port)))
                    })
                    .map(|s| s.name.clone())
            });
        configured.or_else(|| cloud.filter(|c| c.specific).map(|c| c.service.clone()))
    }
}
