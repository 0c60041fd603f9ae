//! Naming the ends of flows from what the other nodes report (the module
//! documentation's "Joined across nodes, counted once").

use super::*;

/// What the fleet knows of one workload, to name the other end of its
/// connections.
#[derive(Clone)]
pub(super) struct Workload {
    resource: Arc<Attrs>,
}

/// Resource keys copied onto the peer side when a bare address is named.
pub(super) const PEER_COPIES: &[(&str, &str)] = &[
    (resource::SERVICE_NAME, attr::PEER_SERVICE_NAME),
    (resource::HOST_NAME, crate::ui::query::PEER_HOST_NAME),
    (k8s::NODE_NAME, crate::ui::query::PEER_K8S_NODE_NAME),
    (resource::K8S_NAMESPACE_NAME, k8s::PEER_SERVICE_NAMESPACE),
];

/// A key value as shared text: strings as they are, numbers (a port set by
/// the single-node pipeline) spelled out.
fn text(v: &flowscope_model::attr::Value) -> Arc<str> {
    match v {
        flowscope_model::attr::Value::Str(s) => s.clone(),
        other => Arc::from(other.to_string()),
    }
}

/// Which side of a flow its point reports.
fn role(p: &Point) -> Option<bool> {
    match p.attrs.get_str(attr::FLOW_ROLE)? {
        "server" => Some(false),
        "client" => Some(true),
        _ => None,
    }
}

/// Which workload has which address, to name the ends of flow points that
/// another agent's reports identify (module documentation, "Joined across
/// nodes, counted once"): (address, port) -> server workload; address ->
/// client workload.
#[derive(Default)]
pub(super) struct Directory {
    servers: HashMap<(Arc<str>, Arc<str>), Workload>,
    clients: HashMap<Arc<str>, Workload>,
}

impl Directory {
    /// The directory of a batch of points, learned from one metric's
    /// points alone, so that a flow is named the same whichever other
    /// metrics are read with them: the bytes when there are any (every
    /// connection that carried data has them; the Map and Analytics read
    /// the rest only for the dependencies they show, module documentation,
    /// "Only what a page shows"), else the packets (the Health page and its
    /// baseline spans, which read no bytes: a connection with bytes has
    /// packets both ways), else all of them.
    pub(super) fn of(points: &[Point]) -> Self {
        let mut d = Directory::default();
        let from = [FLOW_IO, FLOW_PACKETS]
            .into_iter()
            .find(|m| points.iter().any(|p| p.metric == *m));
        for p in points.iter().filter(|p| from.is_none_or(|m| p.metric == m)) {
            let Some(local) = p.attrs.get(attr::LOCAL_ADDRESS) else {
                continue;
            };
            let w = Workload {
                resource: p.resource.clone(),
            };
            match role(p) {
                Some(false) => {
                    if let Some(port) = p.attrs.get(attr::LOCAL_PORT) {
                        d.servers.insert((text(local), text(port)), w);
                    }
                }
                Some(true) => {
                    d.clients.insert(text(local), w);
                }
                None => {}
            }
        }
        d
    }

    /// Names the other end of each point whose address (and port) the
    /// directory knows.
    pub(super) fn name(&self, points: &mut [Point]) {
        if self.servers.is_empty() && self.clients.is_empty() {
            return;
        }
        for p in points.iter_mut() {
            if p.attrs.get(attr::PEER_SERVICE_NAME).is_some() {
                continue;
            }
            let Some(peer) = p.attrs.get(attr::PEER_ADDRESS).map(text) else {
                continue;
            };
            let found = match role(p) {
                Some(true) => p
                    .attrs
                    .get(attr::PEER_PORT)
                    .and_then(|port| self.servers.get(&(peer, text(port)))),
                Some(false) => self.clients.get(&peer),
                None => None,
            };
            let Some(w) = found else { continue };
            for (local_key, peer_key) in PEER_COPIES {
                if let Some(v) = w.resource.get(local_key) {
                    p.attrs.set(*peer_key, v.clone());
                }
            }
        }
    }
}
