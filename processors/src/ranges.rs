//! Published cloud IP ranges: which provider, region and service an address
//! belongs to.
//!
//! Three formats are read: AWS `ip-ranges.json` (`prefixes[].ip_prefix`,
//! `ipv6_prefixes[].ipv6_prefix`, each with `region` and `service`), GCP
//! `cloud.json` (`prefixes[].ipv4Prefix`/`ipv6Prefix` with `scope` as the
//! region and `service`), and Azure service tags (`values[].properties`
//! with `region`, `systemService` and `addressPrefixes`). All providers go
//! into one longest-prefix table. When one network is listed several times
//! the most specific listing wins: a named service over a provider-wide one
//! (AWS `AMAZON`, then `EC2`; Azure `AzureCloud`), a regional listing over a
//! global one, and otherwise the first in the file.
//!
//! The AWS and GCP files of the day the binary was built are embedded and
//! used unless the configuration names others.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use serde::Deserialize;

use crate::cidr::CidrMap;

/// The AWS file shipped in the binary.
pub static BUILTIN_AWS: &[u8] = include_bytes!("../data/aws-ip-ranges.json");
/// The GCP file shipped in the binary.
pub static BUILTIN_GCP: &[u8] = include_bytes!("../data/gcp-cloud.json");

/// Why a ranges file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RangesError {
    #[error("not valid {format} JSON")]
    Json {
        format: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{format}: `{value}` is not a CIDR")]
    Cidr {
        format: &'static str,
        value: String,
        #[source]
        source: ipnet::AddrParseError,
    },
}

/// What the ranges say about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudPeer {
    /// `aws`, `gcp` or `azure`.
    pub provider: &'static str,
    /// Region, when the listing has one (not for global ones).
    pub region: Option<Arc<str>>,
    /// The service as the file names it (`S3`, `Google Cloud`,
    /// `AzureStorage`).
    pub service: Arc<str>,
    /// False for provider-wide listings (`AMAZON`, `EC2`, `Google Cloud`,
    /// `AzureCloud`), which name no particular service.
    pub specific: bool,
    rank: u8,
}

/// A longest-prefix table over one or more providers' ranges.
#[derive(Default)]
pub struct RangeTable {
    map: CidrMap<Arc<CloudPeer>>,
}

impl RangeTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Networks in the table.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The listing of the longest network containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&Arc<CloudPeer>> {
        self.map.longest(ip)
    }

    fn add(&mut self, net: IpNet, peer: &Arc<CloudPeer>) {
        match self.map.get_mut(&net) {
            Some(old) if old.rank >= peer.rank => {}
            Some(old) => *old = peer.clone(),
            None => {
                self.map.insert(net, peer.clone());
            }
        }
    }

    /// Adds every range of an AWS `ip-ranges.json`.
    pub fn add_aws(&mut self, json: &[u8]) -> Result<(), RangesError> {
        const F: &str = "AWS ip-ranges.json";
        #[derive(Deserialize)]
        struct File<'a> {
            #[serde(borrow)]
            prefixes: Vec<V4<'a>>,
            #[serde(borrow, default)]
            ipv6_prefixes: Vec<V6<'a>>,
        }
        #[derive(Deserialize)]
        struct V4<'a> {
            ip_prefix: &'a str,
            region: &'a str,
            service: &'a str,
        }
        #[derive(Deserialize)]
        struct V6<'a> {
            ipv6_prefix: &'a str,
            region: &'a str,
            service: &'a str,
        }
        let file: File = serde_json::from_slice(json)
            .map_err(|source| RangesError::Json { format: F, source })?;
        let mut interner = Interner::default();
        let entries = file
            .prefixes
            .iter()
            .map(|p| (p.ip_prefix, p.region, p.service))
            .chain(
                file.ipv6_prefixes
                    .iter()
                    .map(|p| (p.ipv6_prefix, p.region, p.service)),
            );
        for (prefix, region, service) in entries {
            let net = parse_net(F, prefix)?;
            let specific = !matches!(service, "AMAZON" | "EC2");
            let rank = match service {
                "AMAZON" => 0,
                "EC2" => 1,
                _ => 2,
            } * 2
                + u8::from(region != "GLOBAL");
            let region = (region != "GLOBAL").then(|| interner.strings.get(region));
            let peer = interner.peer("aws", region, service, specific, rank);
            self.add(net, &peer);
        }
        Ok(())
    }

    /// Adds every range of a GCP `cloud.json`.
    pub fn add_gcp(&mut self, json: &[u8]) -> Result<(), RangesError> {
        const F: &str = "GCP cloud.json";
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct File<'a> {
            #[serde(borrow)]
            prefixes: Vec<Entry<'a>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry<'a> {
            ipv4_prefix: Option<&'a str>,
            ipv6_prefix: Option<&'a str>,
            service: &'a str,
            scope: &'a str,
        }
        let file: File = serde_json::from_slice(json)
            .map_err(|source| RangesError::Json { format: F, source })?;
        let mut interner = Interner::default();
        for e in &file.prefixes {
            let specific = e.service != "Google Cloud";
            let regional = e.scope != "global";
            let rank = u8::from(specific) * 2 + u8::from(regional);
            let region = regional.then(|| interner.strings.get(e.scope));
            let peer = interner.peer("gcp", region, e.service, specific, rank);
            for prefix in [e.ipv4_prefix, e.ipv6_prefix].into_iter().flatten() {
                self.add(parse_net(F, prefix)?, &peer);
            }
        }
        Ok(())
    }

    /// Adds every range of an Azure service tags file.
    pub fn add_azure(&mut self, json: &[u8]) -> Result<(), RangesError> {
        const F: &str = "Azure service tags";
        #[derive(Deserialize)]
        struct File<'a> {
            #[serde(borrow)]
            values: Vec<Tag<'a>>,
        }
        #[derive(Deserialize)]
        struct Tag<'a> {
            name: &'a str,
            #[serde(borrow)]
            properties: Props<'a>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Props<'a> {
            #[serde(default)]
            region: &'a str,
            #[serde(default)]
            system_service: &'a str,
            #[serde(borrow, default)]
            address_prefixes: Vec<&'a str>,
        }
        let file: File = serde_json::from_slice(json)
            .map_err(|source| RangesError::Json { format: F, source })?;
        let mut interner = Interner::default();
        for t in &file.values {
            let p = &t.properties;
            // `AzureCloud.westeurope` has no system service: it is the
            // provider-wide listing of a region.
            let service = if p.system_service.is_empty() {
                t.name.split('.').next().unwrap_or(t.name)
            } else {
                p.system_service
            };
            let specific = service != "AzureCloud";
            let regional = !p.region.is_empty();
            let rank = u8::from(specific) * 2 + u8::from(regional);
            let region = regional.then(|| interner.strings.get(p.region));
            let peer = interner.peer("azure", region, service, specific, rank);
            for prefix in &p.address_prefixes {
                self.add(parse_net(F, prefix)?, &peer);
            }
        }
        Ok(())
    }
}

fn parse_net(format: &'static str, s: &str) -> Result<IpNet, RangesError> {
    s.trim()
        .parse::<IpNet>()
        .map_err(|source| RangesError::Cidr {
            format,
            value: s.to_owned(),
            source,
        })
}

/// Shares one `Arc` per distinct string and per distinct listing, so 16,000
/// networks cost a few hundred allocations.
#[derive(Default)]
struct Interner {
    strings: flowscope_model::intern::Strings,
    /// (region, service) -> listing.
    peers: std::collections::HashMap<ListingKey, Arc<CloudPeer>>,
}

type ListingKey = (Option<Arc<str>>, Arc<str>);

impl Interner {
    fn peer(
        &mut self,
        provider: &'static str,
        region: Option<Arc<str>>,
        service: &str,
        specific: bool,
        rank: u8,
    ) -> Arc<CloudPeer> {
        let service = self.strings.get(service);
        self.peers
            .entry((region.clone(), service.clone()))
            .or_insert_with(|| {
                Arc::new(CloudPeer {
                    provider,
                    region,
                    service,
                    specific,
                    rank,
                })
            })
            .clone()
    }
}

/// The table of the embedded AWS and GCP files, parsed once per process.
pub fn builtin() -> Arc<RangeTable> {
    static TABLE: LazyLock<Arc<RangeTable>> = LazyLock::new(|| {
        let mut t = RangeTable::new();
        // The embedded files are checked by this crate's tests; should one
        // ever fail to parse, the agent runs without those ranges and says so.
        if let Err(e) = t.add_aws(BUILTIN_AWS) {
            tracing::error!(error = %e, "embedded AWS ranges unusable");
        }
        if let Err(e) = t.add_gcp(BUILTIN_GCP) {
            tracing::error!(error = %e, "embedded GCP ranges unusable");
        }
        Arc::new(t)
    });
    TABLE.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_parse_completely() {
        let t = builtin();
        // 10,762 distinct AWS networks and 1,047 GCP ones in the shipped
        // files (no GCP network is also an AWS one).
        assert_eq!(t.len(), 10_762 + 1_047);
    }
}
