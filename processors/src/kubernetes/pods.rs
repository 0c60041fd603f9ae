//! Pods as the kubelet's `/pods` and the API server's pod lists return
//! them (`v1.PodList`), reduced to what naming a flow needs. Sans-IO: the
//! caller passes the response body.
//!
//! Only the fields used are declared; serde ignores the rest, so the
//! memory of a pod is a few strings whatever its spec holds.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;

/// The owning workload of a pod, as its Resource names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    Deployment(String),
    StatefulSet(String),
    DaemonSet(String),
    Job(String),
    /// A ReplicaSet without a Deployment, or any other controller kind.
    Other {
        kind: String,
        name: String,
    },
}

impl Workload {
    /// The workload's name (`service.peer.name` of a peer pod).
    pub fn name(&self) -> &str {
        match self {
            Workload::Deployment(n)
            | Workload::StatefulSet(n)
            | Workload::DaemonSet(n)
            | Workload::Job(n) => n,
            Workload::Other { name, .. } => name,
        }
    }
}

/// One pod, reduced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    pub workload: Option<Workload>,
    /// Container id (without the `runtime://` prefix) -> container name.
    pub containers: HashMap<String, String>,
    /// The controlling ReplicaSet's name, when that is the owner: the API
    /// server's ReplicaSets name its Deployment exactly
    /// ([`super::table::Cluster`]); `workload` holds the pod-template-hash
    /// rule's answer for when they are not known.
    pub replicaset: Option<String>,
}

/// Why a pod list could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a Kubernetes PodList: {0}")]
pub struct PodListError(#[source] serde_json::Error);

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<RawPod>,
}

/// A pod as the API returns it, only the fields used.
#[derive(Deserialize)]
pub struct RawPod {
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
    uid: String,
    #[serde(default)]
    labels: HashMap<String, String>,
    #[serde(default, rename = "ownerReferences")]
    owners: Vec<Owner>,
}

#[derive(Deserialize)]
pub(crate) struct Owner {
    pub(crate) kind: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) controller: bool,
}

/// The controlling owner (`controller: true`), else the first.
pub(crate) fn controller(owners: &[Owner]) -> Option<&Owner> {
    owners.iter().find(|o| o.controller).or(owners.first())
}

/// The controlling owner's name when it is a `kind` (a pod's ReplicaSet, a
/// ReplicaSet's Deployment).
pub(crate) fn controller_named(owners: &[Owner], kind: &str) -> Option<String> {
    controller(owners)
        .filter(|o| o.kind == kind)
        .map(|o| o.name.clone())
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
    #[serde(default, rename = "hostNetwork")]
    host_network: bool,
}

#[derive(Deserialize, Default)]
struct Status {
    phase: Option<String>,
    #[serde(default, rename = "podIPs")]
    pod_ips: Vec<PodIp>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(default, rename = "containerStatuses")]
    containers: Vec<ContainerStatus>,
    #[serde(default, rename = "initContainerStatuses")]
    init_containers: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
struct PodIp {
    ip: String,
}

#[derive(Deserialize)]
struct ContainerStatus {
    name: String,
    #[serde(rename = "containerID")]
    container_id: Option<String>,
}

/// Parses a `v1.PodList` body.
pub fn parse_pod_list(body: &[u8]) -> Result<Vec<Pod>, PodListError> {
    let list: PodList = serde_json::from_slice(body).map_err(PodListError)?;
    Ok(list.items.into_iter().map(reduce).collect())
}

/// One pod, reduced.
pub(crate) fn reduce(p: RawPod) -> Pod {
    let mut ips: Vec<IpAddr> = p
        .status
        .pod_ips
        .iter()
        .filter_map(|i| i.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = p.status.pod_ip.as_deref().and_then(|i| i.parse().ok())
    {
        ips.push(ip);
    }
    // A host-network pod's IP is the node's: it names no one peer. A pod
    // that has finished gave its IP back: another pod may have it now.
    let finished = matches!(p.status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if p.spec.host_network || finished {
        ips.clear();
    }
    let containers = p
        .status
        .containers
        .iter()
        .chain(&p.status.init_containers)
        .filter_map(|c| {
            let id = c.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            Some((id.to_string(), c.name.clone()))
        })
        .collect();
    let workload = workload(&p.metadata);
    let replicaset = controller_named(&p.metadata.owners, "ReplicaSet");
    Pod {
        uid: p.metadata.uid,
        name: p.metadata.name,
        namespace: p.metadata.namespace,
        node: p.spec.node_name,
        ips,
        workload,
        containers,
        replicaset,
    }
}

/// The controlling owner as a workload. A ReplicaSet made by a Deployment
/// is named `<deployment>-<pod-template-hash>` and its pods carry that
/// hash as a label: the Deployment's name is the ReplicaSet's without it,
/// exactly, without asking the API server.
fn workload(m: &Meta) -> Option<Workload> {
    let o = controller(&m.owners)?;
    let name = o.name.clone();
    Some(match o.kind.as_str() {
        "ReplicaSet" => match m.labels.get("pod-template-hash").and_then(|h| {
            name.strip_suffix(h.as_str())
                .and_then(|n| n.strip_suffix('-'))
        }) {
            Some(d) => Workload::Deployment(d.to_string()),
            None => Workload::Other {
                kind: o.kind.clone(),
                name,
            },
        },
        "StatefulSet" => Workload::StatefulSet(name),
        "DaemonSet" => Workload::DaemonSet(name),
        "Job" => Workload::Job(name),
        _ => Workload::Other {
            kind: o.kind.clone(),
            name,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubelet `/pods` answer in the API's exact shape (trimmed to three
    /// pods, fields the parser ignores left in).
    const FIXTURE: &[u8] = include_bytes!("fixtures/kubelet-pods.json");

    #[test]
    fn parses_the_kubelet_fixture() {
        let pods = parse_pod_list(FIXTURE).unwrap();
        assert_eq!(pods.len(), 3);
        let web = &pods[0];
        assert_eq!(
            (web.name.as_str(), web.namespace.as_str(), web.uid.as_str()),
            (
                "web-7d4b9c6f8-x2k9p",
                "shop",
                "8f3c2a1e-5b6d-4c7e-9f80-1a2b3c4d5e6f"
            )
        );
        assert_eq!(web.node.as_deref(), Some("node-1"));
        assert_eq!(web.workload, Some(Workload::Deployment("web".into())));
        assert_eq!(web.replicaset.as_deref(), Some("web-7d4b9c6f8"));
        assert_eq!(web.ips, vec!["198.18.7.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            web.containers
                .get("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
                .map(String::as_str),
            Some("nginx")
        );
        assert_eq!(pods[1].workload, Some(Workload::StatefulSet("db".into())));
        assert_eq!(pods[1].ips.len(), 2, "dual-stack podIPs");
        // Host network: no peer address of its own.
        assert_eq!(pods[2].workload, Some(Workload::DaemonSet("agent".into())));
        assert!(pods[2].ips.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [&b"<html>"[..], b"{\"items\": 3}", b""] {
            assert!(parse_pod_list(body).is_err());
        }
        assert!(
            parse_pod_list(b"{\"kind\":\"PodList\"}")
                .unwrap()
                .is_empty()
        );
    }
}
