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

/// Names the ends of flow points that another agent's reports identify
/// (module documentation, "Joined across nodes, counted once").
pub fn join(points: &mut [Point]) {
    let role = |p: &Point| p.attrs.get_str(attr::FLOW_ROLE).map(str::to_string);
    // (address, port) -> server workload; address -> client workload.
    let mut servers: HashMap<(String, String), Workload> = HashMap::new();
    let mut clients: HashMap<String, Workload> = HashMap::new();
    for p in points.iter() {
        let Some(local) = p.attrs.get_str(attr::LOCAL_ADDRESS) else {
            continue;
        };
        let w = Workload {
            resource: p.resource.clone(),
        };
        match role(p).as_deref() {
            Some("server") => {
                if let Some(port) = p.attrs.get(attr::LOCAL_PORT) {
                    servers.insert((local.to_string(), port.to_string()), w);
                }
            }
            Some("client") => {
                clients.insert(local.to_string(), w);
            }
            _ => {}
        }
    }
    if servers.is_empty() && clients.is_empty() {
        return;
    }
    for p in points.iter_mut() {
        if p.attrs.get(attr::PEER_SERVICE_NAME).is_some() {
            continue;
        }
        let Some(peer) = p.attrs.get_str(attr::PEER_ADDRESS).map(str::to_string) else {
            continue;
        };
        let found = match role(p).as_deref() {
            Some("client") => p
                .attrs
                .get(attr::PEER_PORT)
                .and_then(|port| servers.get(&(peer.clone(), port.to_string()))),
            Some("server") => clients.get(&peer),
            _ => None,
        };
        let Some(w) = found else { continue };
        for (local_key, peer_key) in PEER_COPIES {
            if let Some(v) = w.resource.get(local_key) {
                p.attrs.set(*peer_key, v.clone());
            }
        }
    }
}
