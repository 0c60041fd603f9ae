//! The `path` receiver's settings from its configuration
//! ([`PathReceiverConfig`], validated when the config was loaded; defaults
//! and limits live there), as the `ebpf` receiver's are built beside it
//! ([`crate::ReceiverSettings::new`]). What the config types alone cannot
//! decide (a TCP test's port, TLS checks only on TCP, the CIDR lists) is
//! checked here, naming the key.

use std::sync::Arc;

use flowscope_model::HostFacts;
use flowscope_otel_config::receivers::{
    PathProbeConfig, PathProtocol, PathReceiverConfig, PathTestConfig,
};
use thiserror::Error;

use super::dynamic::{Cidr, TableSettings};
use super::prober::Protocol;
use super::tls::{TlsCheck, TlsSettingsError};
use super::{DynamicSettings, PathSettings, ProbeSettings, ScheduledTest};

/// A `path` receiver configuration its receiver cannot run.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error(
        "tests[{index}]: test to {host}: protocol tcp needs a port (the server's listening port)"
    )]
    NoPort { index: usize, host: String },
    #[error("tests[{index}]: test to {host}: `server_name` and `ca_file` need `tls: true`")]
    TlsOff { index: usize, host: String },
    #[error(
        "tests[{index}]: test to {host}: `tls: true` needs protocol tcp (the handshake goes to the TCP port)"
    )]
    TlsNotTcp { index: usize, host: String },
    #[error("tests[{index}]: test to {host}")]
    Tls {
        index: usize,
        host: String,
        #[source]
        source: TlsSettingsError,
    },
    #[error("dynamic.{key}: {value:?} is not a CIDR")]
    Cidr { key: &'static str, value: String },
}

/// The prober's protocol for a configured one.
pub fn protocol(p: PathProtocol) -> Protocol {
    match p {
        PathProtocol::Tcp => Protocol::Tcp,
        PathProtocol::Udp => Protocol::Udp,
        PathProtocol::Icmp => Protocol::Icmp,
    }
}

fn probe(p: &PathProbeConfig) -> ProbeSettings {
    ProbeSettings {
        max_ttl: p.max_ttl,
        timeout: p.timeout,
        queries: p.queries,
        e2e_probes: p.e2e_probes,
    }
}

/// The port a test probes: TCP needs one, UDP defaults to 33434 (a closed
/// port answers with ICMP port unreachable), ICMP has none.
fn test_port(index: usize, t: &PathTestConfig) -> Result<u16, SettingsError> {
    match (t.protocol, t.port) {
        (PathProtocol::Tcp, None) => Err(SettingsError::NoPort {
            index,
            host: t.host.clone(),
        }),
        (PathProtocol::Udp, None) => Ok(PathTestConfig::DEFAULT_UDP_PORT),
        (_, p) => Ok(p.unwrap_or(0)),
    }
}

/// A test's TLS check (`tls: true`): TCP only, with its `server_name` and
/// `ca_file`.
fn tls_check(index: usize, t: &PathTestConfig) -> Result<Option<TlsCheck>, SettingsError> {
    let host = || t.host.clone();
    if !t.tls {
        if t.server_name.is_some() || t.ca_file.is_some() {
            return Err(SettingsError::TlsOff {
                index,
                host: host(),
            });
        }
        return Ok(None);
    }
    if t.protocol != PathProtocol::Tcp {
        return Err(SettingsError::TlsNotTcp {
            index,
            host: host(),
        });
    }
    let check = TlsCheck::new(&t.host, t.server_name.as_deref(), t.ca_file.as_deref()).map_err(
        |source| SettingsError::Tls {
            index,
            host: host(),
            source,
        },
    )?;
    Ok(Some(check))
}

impl PathSettings {
    /// The settings `config` describes on the host `host`; scheduled
    /// tests' points carry the host's Resource attributes.
    pub fn new(c: &PathReceiverConfig, host: &HostFacts) -> Result<Self, SettingsError> {
        let tests = c
            .tests
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let port = test_port(i, t)?;
                Ok(ScheduledTest {
                    host: t.host.clone(),
                    port,
                    protocol: protocol(t.protocol),
                    interval: t.interval,
                    probe: probe(&t.probe()),
                    tags: t.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    netns: t.netns.clone(),
                    tls: tls_check(i, t)?,
                })
            })
            .collect::<Result<Vec<_>, SettingsError>>()?;
        let d = &c.dynamic;
        let dynamic = if d.enabled {
            let cidrs = |key: &'static str, list: &[String]| {
                list.iter()
                    .map(|s| {
                        Cidr::parse(s).ok_or_else(|| SettingsError::Cidr {
                            key,
                            value: s.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, SettingsError>>()
            };
            let include_cidrs = cidrs("include_cidrs", &d.include_cidrs)?;
            let exclude_cidrs = cidrs("exclude_cidrs", &d.exclude_cidrs)?;
            Some(DynamicSettings {
                table: TableSettings {
                    interval: d.interval,
                    ttl: d.ttl,
                    max_new_per_minute: d.max_new_per_minute,
                    max_destinations: d.max_destinations,
                    include_cidrs,
                    exclude_cidrs,
                    exclude_domains: d.exclude_domains.clone(),
                },
                workers: d.workers,
                probe: probe(&d.probe()),
            })
        } else {
            None
        };
        Ok(PathSettings {
            tests,
            dynamic,
            resource: Arc::new(host.attrs.clone()),
            rtt_bounds: Arc::from(flowscope_model::hist::RTT_BOUNDS),
            resolve_hops: c.resolve_hops,
            asn_database: c.asn_database.clone(),
        })
    }
}
