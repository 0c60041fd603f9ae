//! A Network Health finding, what each kind asks to do next (the runbook
//! docs/health.md lists), and the few tests findings of several pages
//! share.

use flowscope_model::Attrs;
use flowscope_model::names::attr;
use serde::Serialize;

use super::local_is_client;

/// One Network Health finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `dns_failure`, `connection_failure`, `resets`, `retransmits`,
    /// `path_unreachable`, `path_loss`, `route_changed`,
    /// `certificate_expired`, `certificate_expiring`, `drops`,
    /// `host_drops`, the rises over the baseline ([`super::baseline`]:
    /// `retransmits_rise`, `connection_failure_rise`, `dns_failure_rise`)
    /// and `connection_churn` ([`super::churn`]); [`RUNBOOK`] has them all.
    pub kind: &'static str,
    /// `critical` or `warning`.
    pub severity: &'static str,
    /// Ranking: higher is worse (critical findings first, then by impact).
    pub score: f64,
    pub title: String,
    pub evidence: String,
    pub client: String,
    pub server: String,
    /// `error.type` of failures (`NXDOMAIN`, `refused`, ...), if any.
    pub error_type: Option<String>,
    /// How many failed lookups, connections, resets, retransmits or lost
    /// probes.
    pub count: u64,
    /// What to do next, in one sentence ([`runbook`]).
    pub runbook: &'static str,
}

/// Every kind of finding with what to do next, in one sentence: the
/// runbook line each finding carries (docs/health.md lists them).
pub const RUNBOOK: &[(&str, &str)] = &[
    (
        "dns_failure",
        "Check that the name exists in the zone the client asks (NXDOMAIN) or that the DNS server \
         and its upstreams answer (SERVFAIL, REFUSED, timeout).",
    ),
    (
        "connection_failure",
        "Check that the server listens on that port and that no firewall rule or security group \
         between the two rejects or drops the connection.",
    ),
    (
        "resets",
        "Read the server's logs for aborted requests and check the idle timeouts of proxies and \
         load balancers between the two.",
    ),
    (
        "retransmits",
        "Look for loss on the path between the two (interface errors and drops in `ip -s link`, \
         a saturated link) and test it from the Network Path page.",
    ),
    (
        "path_unreachable",
        "Check the routes and firewall rules towards the destination; the Paths page shows the \
         last hop that answered.",
    ),
    (
        "path_loss",
        "Find the hop where the loss starts on the Paths page and check that link or device.",
    ),
    (
        "route_changed",
        "Compare the old and the new route on the Paths page and confirm that the change was \
         intended.",
    ),
    (
        "certificate_expired",
        "Renew the certificate now and reload the server that presents it.",
    ),
    (
        "certificate_expiring",
        "Renew the certificate before it expires and reload the server that presents it.",
    ),
    (
        "retransmits_rise",
        "Find what changed on the path or on either end (a deployment, a link, a busy host) \
         when the rise began, and compare the two spans on the Analytics page.",
    ),
    (
        "connection_failure_rise",
        "Find what changed on the server side when the rise began: a deployment, a restart, a \
         full accept queue or a new firewall rule.",
    ),
    (
        "dns_failure_rise",
        "Check what changed in the failing names' zone or in the DNS server when the rise \
         began (the evidence names the error).",
    ),
    // Drops: the line of the reason (ui/drops.rs) when it has one.
    (
        "drops",
        "Look the reason up in the kernel's include/net/dropreason-core.h and at the host's \
         network settings.",
    ),
    (
        "host_drops",
        "Look the reason up in the kernel's include/net/dropreason-core.h and at the host's \
         network settings.",
    ),
    (
        "connection_churn",
        "Make the client reuse its connections (HTTP keep-alive, a connection pool) instead \
         of opening one per request.",
    ),
];

/// The runbook line of a kind of finding (empty for a kind without one,
/// which the tests do not allow).
pub fn runbook(kind: &str) -> &'static str {
    RUNBOOK
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("", |(_, line)| line)
}

#[allow(clippy::too_many_arguments)] // one constructor for every kind of finding
pub(crate) fn finding(
    kind: &'static str,
    critical: bool,
    impact: f64,
    title: String,
    evidence: String,
    client: &str,
    server: &str,
    error_type: Option<&str>,
    count: u64,
) -> Finding {
    Finding {
        kind,
        severity: if critical { "critical" } else { "warning" },
        score: if critical { 1e12 + impact } else { impact },
        title,
        evidence,
        client: client.to_string(),
        server: server.to_string(),
        error_type: error_type.map(str::to_string),
        count,
        runbook: runbook(kind),
    }
}

/// How a DNS lookup series failed (`error.type`, else a response code
/// other than `NOERROR`), if it did.
pub(crate) fn dns_failure(attrs: &Attrs) -> Option<&str> {
    attrs.get_str(attr::ERROR_TYPE).or_else(|| {
        attrs
            .get_str(attr::DNS_RESPONSE_CODE)
            .filter(|c| *c != "NOERROR")
    })
}

/// Whether a DNS series is a client's lookups (not a server's answers).
pub(crate) fn is_dns_client(attrs: &Attrs) -> bool {
    local_is_client(attrs) != Some(false)
}
