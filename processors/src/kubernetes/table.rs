//! What the processor names from, sans-IO: the node's pods (the kubelet's
//! last good answer, [`LocalPods`]) and the cluster's pods, Services and
//! ReplicaSets as listed and watched from the API server ([`Cluster`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::api::{ReplicaSet, Service};
use super::pods::{Pod, Workload};

/// The kubelet's pods by UID.
#[derive(Debug, Default)]
pub struct LocalPods {
    pub by_uid: HashMap<String, Arc<Pod>>,
}

impl LocalPods {
    pub fn new(pods: Vec<Pod>) -> Self {
        LocalPods {
            by_uid: pods
                .into_iter()
                .map(|p| (p.uid.clone(), Arc::new(p)))
                .collect(),
        }
    }
}

/// What a peer address names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerName {
    /// `service.peer.name`: the pod's workload (the pod's own name when it
    /// has none), or the Service's name.
    pub service: Arc<str>,
    /// `service.peer.namespace`.
    pub namespace: Arc<str>,
    /// `flowscope.peer.k8s.pod.name`, when the address is a pod's.
    pub pod: Option<Arc<str>>,
}

/// Where an address points.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    Pod(String),
    Service(String),
}

/// Why an object was not taken into the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// The cluster's pods, Services and ReplicaSets, bounded by `max_objects`
/// together. Pods and Services are kept by UID; an address index points at
/// the object that holds it now (a newer pod with an old pod's IP takes it
/// over; deleting the old one then leaves it alone).
#[derive(Debug)]
pub struct Cluster {
    max_objects: usize,
    pods: HashMap<String, Pod>,
    services: HashMap<String, Service>,
    /// (namespace, name) -> the Deployment that controls it, if any.
    replicasets: HashMap<(String, String), Option<String>>,
    by_ip: HashMap<IpAddr, Owner>,
}

impl Cluster {
    pub fn new(max_objects: usize) -> Self {
        Cluster {
            max_objects,
            pods: HashMap::new(),
            services: HashMap::new(),
            replicasets: HashMap::new(),
            by_ip: HashMap::new(),
        }
    }

    /// Objects held now.
    pub fn len(&self) -> usize {
        self.pods.len() + self.services.len() + self.replicasets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn has_room(&self) -> bool {
        self.len() < self.max_objects
    }

    /// Adds or updates a pod.
    pub fn upsert_pod(&mut self, pod: Pod) -> Result<(), Full> {
        if let Some(old) = self.pods.remove(&pod.uid) {
            self.unindex(&old.ips, &Owner::Pod(old.uid.clone()));
        } else if !self.has_room() {
            return Err(Full);
        }
        for ip in &pod.ips {
            self.by_ip.insert(*ip, Owner::Pod(pod.uid.clone()));
        }
        self.pods.insert(pod.uid.clone(), pod);
        Ok(())
    }

    pub fn delete_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            self.unindex(&old.ips, &Owner::Pod(old.uid.clone()));
        }
    }

    pub fn upsert_service(&mut self, svc: Service) -> Result<(), Full> {
        if let Some(old) = self.services.remove(&svc.uid) {
            self.unindex(&old.cluster_ips, &Owner::Service(old.uid.clone()));
        } else if !self.has_room() {
            return Err(Full);
        }
        for ip in &svc.cluster_ips {
            self.by_ip.insert(*ip, Owner::Service(svc.uid.clone()));
        }
        self.services.insert(svc.uid.clone(), svc);
        Ok(())
    }

    pub fn delete_service(&mut self, uid: &str) {
        if let Some(old) = self.services.remove(uid) {
            self.unindex(&old.cluster_ips, &Owner::Service(old.uid.clone()));
        }
    }

    pub fn upsert_replicaset(&mut self, rs: ReplicaSet) -> Result<(), Full> {
        let key = (rs.namespace, rs.name);
        if !self.replicasets.contains_key(&key) && !self.has_room() {
            return Err(Full);
        }
        self.replicasets.insert(key, rs.deployment);
        Ok(())
    }

    pub fn delete_replicaset(&mut self, rs: &ReplicaSet) {
        self.replicasets
            .remove(&(rs.namespace.clone(), rs.name.clone()));
    }

    /// Drops every pod (a new list replaces them all).
    pub fn clear_pods(&mut self) {
        for (_, p) in std::mem::take(&mut self.pods) {
            self.unindex(&p.ips, &Owner::Pod(p.uid.clone()));
        }
    }

    pub fn clear_services(&mut self) {
        for (_, s) in std::mem::take(&mut self.services) {
            self.unindex(&s.cluster_ips, &Owner::Service(s.uid.clone()));
        }
    }

    pub fn clear_replicasets(&mut self) {
        self.replicasets.clear();
    }

    fn unindex(&mut self, ips: &[IpAddr], owner: &Owner) {
        for ip in ips {
            if self.by_ip.get(ip) == Some(owner) {
                self.by_ip.remove(ip);
            }
        }
    }

    /// The workload of `pod`: a ReplicaSet's Deployment as the API server
    /// lists it when the ReplicaSet is known (none: the ReplicaSet itself
    /// is the workload), else what the pod-template-hash rule said.
    pub fn workload_of(&self, pod: &Pod) -> Option<Workload> {
        if let Some(rs) = &pod.replicaset
            && let Some(dep) = self.replicasets.get(&(pod.namespace.clone(), rs.clone()))
        {
            return Some(match dep {
                Some(d) => Workload::Deployment(d.clone()),
                None => Workload::Other {
                    kind: "ReplicaSet".to_owned(),
                    name: rs.clone(),
                },
            });
        }
        pod.workload.clone()
    }

    /// What `ip` names: a pod (its workload) or a Service.
    pub fn peer(&self, ip: IpAddr) -> Option<PeerName> {
        match self.by_ip.get(&ip)? {
            Owner::Pod(uid) => {
                let p = self.pods.get(uid)?;
                let service = self
                    .workload_of(p)
                    .map_or_else(|| p.name.clone(), |w| w.name().to_owned());
                Some(PeerName {
                    service: service.into(),
                    namespace: p.namespace.as_str().into(),
                    pod: Some(p.name.as_str().into()),
                })
            }
            Owner::Service(uid) => {
                let s = self.services.get(uid)?;
                Some(PeerName {
                    service: s.name.as_str().into(),
                    namespace: s.namespace.as_str().into(),
                    pod: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::parse_list;
    use super::*;

    fn cluster(max: usize) -> Cluster {
        let mut c = Cluster::new(max);
        for p in parse_list::<Pod>(include_bytes!("fixtures/api-pods.json"))
            .unwrap()
            .items
        {
            let _ = c.upsert_pod(p);
        }
        for s in parse_list::<Service>(include_bytes!("fixtures/api-services.json"))
            .unwrap()
            .items
        {
            let _ = c.upsert_service(s);
        }
        for r in parse_list::<ReplicaSet>(include_bytes!("fixtures/api-replicasets.json"))
            .unwrap()
            .items
        {
            let _ = c.upsert_replicaset(r);
        }
        c
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pods_services_and_replicasets_name_addresses() {
        let c = cluster(100);
        assert_eq!(c.len(), 7);
        let api = c.peer(ip("198.18.8.20")).unwrap();
        assert_eq!(
            (&*api.service, &*api.namespace, api.pod.as_deref()),
            ("api", "shop", Some("api-5c8d9e7f6-m3n4b"))
        );
        // cart's pod has no pod-template-hash label; its ReplicaSet, listed
        // without a Deployment, is the workload.
        assert_eq!(
            &*c.peer(ip("198.18.8.21")).unwrap().service,
            "cart-66b5d4c3f2"
        );
        // web's ReplicaSet is not listed: the hash rule names the Deployment.
        assert_eq!(&*c.peer(ip("198.18.7.10")).unwrap().service, "web");
        let svc = c.peer(ip("198.18.96.20")).unwrap();
        assert_eq!((&*svc.service, svc.pod.as_deref()), ("api", None));
        assert_eq!(c.peer(ip("198.18.9.9")), None);
    }

    #[test]
    fn deletes_and_ip_reuse() {
        let mut c = cluster(100);
        let mut old = c
            .pods
            .values()
            .find(|p| p.name.starts_with("api"))
            .unwrap()
            .clone();
        // A new pod gets the old one's IP before the old one's delete arrives.
        let mut new = old.clone();
        new.uid = "new-uid".into();
        new.name = "api-5c8d9e7f6-zzzzz".into();
        c.upsert_pod(new).unwrap();
        c.delete_pod(&old.uid);
        assert_eq!(
            c.peer(ip("198.18.8.20")).unwrap().pod.as_deref(),
            Some("api-5c8d9e7f6-zzzzz")
        );
        c.delete_pod("new-uid");
        assert_eq!(c.peer(ip("198.18.8.20")), None);
        // An update that moves a pod to another IP frees the old one.
        old.ips = vec![ip("198.18.8.99")];
        c.upsert_pod(old).unwrap();
        assert_eq!(c.peer(ip("198.18.8.20")), None);
        assert!(c.peer(ip("198.18.8.99")).is_some());
        c.clear_services();
        assert_eq!(c.peer(ip("198.18.96.20")), None);
    }

    #[test]
    fn bounded() {
        let c = cluster(4);
        assert_eq!(c.len(), 4);
        let mut c = c;
        let p = c.pods.values().next().unwrap().clone();
        assert_eq!(c.upsert_pod(p), Ok(()), "an update needs no room");
        let mut q = c.pods.values().next().unwrap().clone();
        q.uid = "another".into();
        assert_eq!(c.upsert_pod(q), Err(Full));
    }
}
