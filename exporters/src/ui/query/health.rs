//! The Network Health page's findings: failed DNS lookups, failed, reset
//! and retransmitting connections, unreachable and lossy network paths,
//! and what the other pages find (drops, routes, certificates, rises over
//! the baseline, connection churn), worst first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use flowscope_model::names::{attr, metric, resource, ui};
use flowscope_model::{MetricId, PointValue};
use flowscope_otel_config::exporters::UiHealthConfig;

use super::totals::{count, is};
use super::{Cidr, Edge, Finding, NONE, Selection, UNKNOWN, dns_failure, finding, is_dns_client};
use crate::ui::store::Store;

#[derive(Default)]
struct DnsAcc {
    lookups: u64,
    failed: BTreeMap<String, (u64, BTreeSet<String>)>,
}

/// What the DNS and path test series of a range say, per server address.
#[derive(Default)]
struct ServerSeries {
    /// Lookups and failures per (client service, DNS server address).
    dns: BTreeMap<(String, String), DnsAcc>,
    /// DNS server address -> the local service answering there.
    dns_servers: BTreeMap<String, String>,
    /// Path test destination -> (end of the newest slot, reachable).
    paths: BTreeMap<String, (u64, f64)>,
    /// Path test destination -> (probes sent, probes lost).
    probes: BTreeMap<String, (u64, u64)>,
}

/// The findings of `(from, to]`, worst first.
/// With `cidr`, only flows whose peer address, and lookups and paths whose
/// server address, is inside.
pub fn health(
    store: &Store,
    from: u64,
    to: u64,
    cidr: Option<Cidr>,
    th: &UiHealthConfig,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let servers = ServerSeries::read(store, from, to, cidr);
    servers.dns_findings(th, &mut out);
    // The dependencies once, with the connection durations that only the
    // churn finding reads: each is a pass over every flow series.
    let sel = Selection::services(from, to, cidr);
    let edges = super::edges_reading(
        store,
        &sel,
        false,
        &[flowscope_model::metrics::TCP_DURATION],
    );
    connection_findings(&edges, th, &mut out);
    servers.path_findings(th, &mut out);
    // What the other pages find: kernel drops, route changes,
    // certificates, rises over the baseline and connection churn.
    out.extend(crate::ui::drops::drop_findings(
        store,
        from,
        to,
        cidr,
        th.min_failures,
    ));
    out.extend(crate::ui::paths::route_findings(store, from, to, cidr));
    out.extend(crate::ui::paths::certificate_findings(
        store,
        from,
        to,
        cidr,
        th.certificate_warning,
    ));
    out.extend(crate::ui::baseline::findings(store, from, to, cidr, th));
    out.extend(crate::ui::churn::findings(store, &edges, from, to, th));
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.title.cmp(&b.title))
    });
    out
}

impl ServerSeries {
    /// Reads the DNS lookup and path test series of `(from, to]` whose
    /// server address is inside `cidr` (all without).
    fn read(store: &Store, from: u64, to: u64, cidr: Option<Cidr>) -> Self {
        let mut s = ServerSeries::default();
        let read = |m: &MetricId| {
            is(m, metric::DNS_DURATION)
                || is(m, ui::PATH_REACHABLE)
                || is(m, ui::PATH_PROBES_SENT)
                || is(m, ui::PATH_PROBES_LOST)
        };
        for ((res, m, attrs), slots) in store.series_slots(from, to, |(_, m, _)| read(m)) {
            let server = attrs.get_str(attr::SERVER_ADDRESS).unwrap_or(UNKNOWN);
            if let Some(c) = &cidr
                && !server.parse::<IpAddr>().is_ok_and(|ip| c.contains(ip))
            {
                continue;
            }
            if is(m, metric::DNS_DURATION) {
                if !is_dns_client(attrs) {
                    if let Some(name) = res.get_str(resource::SERVICE_NAME) {
                        s.dns_servers.insert(server.to_string(), name.to_string());
                    }
                    continue;
                }
                let lookups: u64 = slots
                    .filter_map(|sl| match &sl.value {
                        PointValue::Histogram(h) => Some(h.count),
                        _ => None,
                    })
                    .sum();
                let client = res.get_str(resource::SERVICE_NAME).unwrap_or(NONE);
                let acc = s
                    .dns
                    .entry((client.to_string(), server.to_string()))
                    .or_default();
                acc.lookups += lookups;
                if let Some(kind) = dns_failure(attrs) {
                    let f = acc.failed.entry(kind.to_string()).or_default();
                    f.0 += lookups;
                    if f.1.len() < 5
                        && let Some(q) = attrs.get_str(attr::DNS_QUESTION_NAME)
                    {
                        f.1.insert(q.to_string());
                    }
                }
            } else if is(m, ui::PATH_REACHABLE) {
                // The slots are in time order: the last is the newest.
                if let Some(last) = slots.last() {
                    let p = s.paths.entry(server.to_string()).or_insert((0, 1.0));
                    if last.end >= p.0 {
                        *p = (last.end, last.value.as_f64());
                    }
                }
            } else {
                let n: u64 = slots.map(|sl| count(&sl.value)).sum();
                let p = s.probes.entry(server.to_string()).or_default();
                if is(m, ui::PATH_PROBES_SENT) {
                    p.0 += n;
                } else {
                    p.1 += n;
                }
            }
        }
        s
    }

    /// DNS: failed lookups per client and server, by error type.
    fn dns_findings(&self, th: &UiHealthConfig, out: &mut Vec<Finding>) {
        for ((client, server), acc) in &self.dns {
            for (kind, (n, names)) in &acc.failed {
                if *n < th.min_failures {
                    continue;
                }
                let server_label = match self.dns_servers.get(server) {
                    Some(name) => format!("{server} ({name})"),
                    None => server.clone(),
                };
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let critical = kind != "NXDOMAIN";
                out.push(finding(
                    "dns_failure",
                    critical,
                    *n as f64,
                    format!("DNS {kind}: {client} → {server_label}"),
                    format!(
                        "{n} of {} lookups by {client} to DNS server {server_label} failed with {kind}; names: {}",
                        acc.lookups,
                        names.join(", ")
                    ),
                    client,
                    server,
                    Some(kind),
                    *n,
                ));
            }
        }
    }

    /// Network paths: unreachable destinations, and loss above the
    /// threshold.
    fn path_findings(&self, th: &UiHealthConfig, out: &mut Vec<Finding>) {
        for (server, (_, reachable)) in &self.paths {
            if *reachable == 0.0 {
                out.push(finding(
                    "path_unreachable",
                    true,
                    1.0,
                    format!("Path unreachable: {server}"),
                    format!("the last path test to {server} got no answer from the destination"),
                    "",
                    server,
                    None,
                    1,
                ));
            }
        }
        for (server, (sent, lost)) in &self.probes {
            if *sent == 0 {
                continue;
            }
            let loss = *lost as f64 / *sent as f64;
            if loss > th.path_loss_ratio {
                out.push(finding(
                    "path_loss",
                    false,
                    *lost as f64,
                    format!("Path loss {:.1} %: {server}", loss * 100.0),
                    format!(
                        "{lost} of {sent} probes to {server} lost (threshold {:.1} %)",
                        th.path_loss_ratio * 100.0
                    ),
                    "",
                    server,
                    None,
                    *lost,
                ));
            }
        }
    }
}

/// Connections: failures, resets and retransmits per service pair.
fn connection_findings(edges: &[Edge], th: &UiHealthConfig, out: &mut Vec<Finding>) {
    // An edge of connection durations alone is no dependency of the
    // other pages.
    for e in edges.iter().filter(|e| e.flow) {
        let t = &e.totals;
        for (kind, n) in &t.failed_by_type {
            if *n < th.min_failures {
                continue;
            }
            out.push(finding(
                "connection_failure",
                true,
                *n as f64,
                format!("Connections {kind}: {} → {}", e.client, e.server),
                format!(
                    "{n} connection attempts from {} to {} failed ({kind}); {} opened in the same time",
                    e.client, e.server, t.opened
                ),
                &e.client,
                &e.server,
                Some(kind),
                *n,
            ));
        }
        if t.resets >= th.min_failures {
            out.push(finding(
                "resets",
                false,
                t.resets as f64,
                format!("TCP resets: {} → {}", e.client, e.server),
                format!(
                    "{} resets between {} and {} ({} connections opened, {} closed)",
                    t.resets, e.client, e.server, t.opened, t.closed
                ),
                &e.client,
                &e.server,
                None,
                t.resets,
            ));
        }
        let ratio = t.retransmit_ratio();
        if t.packets >= th.min_packets && ratio > th.retransmit_ratio {
            out.push(finding(
                "retransmits",
                false,
                t.retransmits as f64,
                format!(
                    "Retransmits {:.1} %: {} → {}",
                    ratio * 100.0,
                    e.client,
                    e.server
                ),
                format!(
                    "{} of {} packets retransmitted (threshold {:.1} %)",
                    t.retransmits,
                    t.packets,
                    th.retransmit_ratio * 100.0
                ),
                &e.client,
                &e.server,
                None,
                t.retransmits,
            ));
        }
    }
}
