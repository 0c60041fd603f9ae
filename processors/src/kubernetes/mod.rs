//! `kubernetes`: names the local pod of each flow and the peers that are
//! pods or Services of the cluster (docs/kubernetes.md).
//!
//! - **Local pod.** The `ebpf` receiver reads each process's
//!   `/proc/<pid>/cgroup` once, while it runs, and puts the pod UID the
//!   kubepods cgroup names on the flow's Resource (`k8s.pod.uid`, parsed by
//!   [`cgroup`]) next to `container.id`. This processor adds the rest from
//!   the node's kubelet (`/pods`): `k8s.namespace.name`, `k8s.pod.name`,
//!   `k8s.node.name`, `k8s.container.name` and `container.name` (the
//!   container of that id in the pod's status), and the owning workload
//!   (`k8s.deployment.name`, `k8s.statefulset.name`, `k8s.daemonset.name`,
//!   `k8s.job.name`). A pod UID the last kubelet answer does not list asks
//!   for a new one (rate-limited) and stays unnamed until it comes.
//! - **Peers.** A peer address that is a pod IP or a Service ClusterIP of
//!   the cluster (listed and watched from the API server) gets
//!   `service.peer.name` (the pod's workload, or the Service's name),
//!   `service.peer.namespace`, and for a pod `flowscope.peer.k8s.pod.name`
//!   and `flowscope.peer.k8s.namespace.name`.
//!
//! The requests run on a thread of their own ([`fetch`]); a flow is named
//! from the last good answers and never waits for one.

pub mod api;
pub mod client;
pub mod fetch;
pub mod pods;
pub mod table;

/// Which pod and container a cgroup path names (kept in the model: the
/// `ebpf` receiver reads it too).
pub use flowscope_model::kubepods as cgroup;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use flowscope_model::names::{attr, k8s, resource};
use flowscope_model::{Attrs, Flow, Telemetry};
use flowscope_otel_config::processors::KubernetesProcessorConfig;
use tokio::sync::watch;

use fetch::{Endpoint, Settings, Shared};
use pods::Workload;
use table::LocalPods;

/// One running client (its thread and what it writes).
struct Running {
    shared: Arc<Shared>,
    /// Dropped with the last processor using it: the thread then ends.
    _stop: watch::Sender<()>,
    api: bool,
}

/// The clients of one agent: processors with the same settings (one
/// `kubernetes` processor listed in several pipelines) share one, so the
/// kubelet and the API server are asked once. Kept in the agent's context
/// ([`flowscope_model::Context::services`], taken by [`crate::Builder`]);
/// a client lives as long as a processor uses it.
#[derive(Default)]
pub struct Clients {
    running: Mutex<Vec<(KubernetesProcessorConfig, Weak<Running>)>>,
}

impl Clients {
    pub fn new() -> Self {
        Clients::default()
    }

    fn get(
        &self,
        c: &KubernetesProcessorConfig,
        telemetry: &Telemetry,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> std::io::Result<Arc<Running>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|(_, r)| r.strong_count() > 0);
        if let Some(r) = running
            .iter()
            .find(|(cfg, _)| cfg == c)
            .and_then(|(_, r)| r.upgrade())
        {
            return Ok(r);
        }
        let settings = settings(c, env);
        let shared = Arc::new(Shared::new(c.api.max_objects));
        let (stop, rx) = watch::channel(());
        let api = settings.api.is_some();
        fetch::spawn(settings, shared.clone(), telemetry.clone(), rx)?;
        let r = Arc::new(Running {
            shared,
            _stop: stop,
            api,
        });
        running.push((c.clone(), Arc::downgrade(&r)));
        Ok(r)
    }
}

/// The processor: reads the background side's snapshots, one per batch.
pub struct Kubernetes {
    shared: Arc<Shared>,
    _running: Arc<Running>,
    api: bool,
    local: Arc<LocalPods>,
    /// `k8s.cluster.name` for every Resource, when configured.
    cluster_name: Option<Arc<str>>,
    /// This batch's Resources, by the address of the one they replace;
    /// that one is held too, so its address names it for the whole batch
    /// (a freed address could be reused by a Resource made meanwhile).
    named: HashMap<usize, (Arc<Attrs>, Option<Arc<Attrs>>)>,
    asked: bool,
}

impl Kubernetes {
    /// Builds the processor with the client of `clients` for these
    /// settings, starting it (its thread) if none runs. `env` reads the
    /// agent's environment (the in-cluster defaults of the endpoints).
    pub fn from_config(
        c: &KubernetesProcessorConfig,
        clients: &Clients,
        telemetry: &Telemetry,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> std::io::Result<Kubernetes> {
        let running = clients.get(c, telemetry, env)?;
        Ok(Kubernetes {
            shared: running.shared.clone(),
            api: running.api,
            _running: running,
            cluster_name: c.cluster_name.as_deref().map(Arc::from),
            local: Arc::new(LocalPods::default()),
            named: HashMap::new(),
            asked: false,
        })
    }

    /// Takes the kubelet's last good answer for this batch.
    pub fn begin_batch(&mut self) {
        self.local = self
            .shared
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.named.clear();
        self.asked = false;
    }

    pub fn enrich(&mut self, flow: &mut Flow) {
        let key = Arc::as_ptr(&flow.resource) as usize;
        let named = match self.named.get(&key) {
            Some((_, n)) => n.clone(),
            None => {
                let n = self.name_local(&flow.resource);
                self.named.insert(key, (flow.resource.clone(), n.clone()));
                n
            }
        };
        if let Some(r) = named {
            flow.resource = r;
        }
        if !self.api {
            return;
        }
        let cluster = self
            .shared
            .cluster
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cluster.peer(flow.peer_ip()) {
            flow.attrs.set(attr::PEER_SERVICE_NAME, p.service.clone());
            flow.attrs
                .set(k8s::PEER_SERVICE_NAMESPACE, p.namespace.clone());
            if let Some(pod) = &p.pod {
                flow.attrs.set(k8s::PEER_POD_NAME, pod.clone());
                flow.attrs
                    .set(k8s::PEER_NAMESPACE_NAME, p.namespace.clone());
            }
        }
    }

    /// The Resource with the pod's names, None when it names no pod this
    /// processor knows.
    fn name_local(&mut self, res: &Attrs) -> Option<Arc<Attrs>> {
        let with_cluster = |cluster: &Option<Arc<str>>| {
            let name = cluster.as_ref()?;
            Some(Arc::new(res.clone().with(k8s::CLUSTER_NAME, name.clone())))
        };
        let Some(uid) = res.get_str(resource::K8S_POD_UID) else {
            return with_cluster(&self.cluster_name);
        };
        let Some(pod) = self.local.by_uid.get(uid) else {
            if !self.asked {
                self.asked = true;
                self.shared.refresh.notify_one();
            }
            return with_cluster(&self.cluster_name);
        };
        let mut a = res.clone();
        if let Some(name) = &self.cluster_name {
            a.set(k8s::CLUSTER_NAME, name.clone());
        }
        a.set(k8s::NAMESPACE_NAME, pod.namespace.as_str());
        a.set(k8s::POD_NAME, pod.name.as_str());
        if let Some(node) = &pod.node {
            a.set(k8s::NODE_NAME, node.as_str());
        }
        if let Some(name) = res
            .get_str(resource::CONTAINER_ID)
            .and_then(|id| pod.containers.get(id))
        {
            a.set(k8s::CONTAINER_NAME, name.as_str());
            a.set(k8s::CONTAINER_RUNTIME_NAME, name.as_str());
        }
        let workload = if self.api {
            self.shared
                .cluster
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .workload_of(pod)
        } else {
            pod.workload.clone()
        };
        match workload {
            Some(Workload::Deployment(n)) => a.set(k8s::DEPLOYMENT_NAME, n),
            Some(Workload::StatefulSet(n)) => a.set(k8s::STATEFULSET_NAME, n),
            Some(Workload::DaemonSet(n)) => a.set(k8s::DAEMONSET_NAME, n),
            Some(Workload::Job(n)) => a.set(k8s::JOB_NAME, n),
            Some(Workload::Other { .. }) | None => {}
        }
        Some(Arc::new(a))
    }

    /// A processor over `shared` filled by hand, with no thread (tests).
    #[cfg(test)]
    fn with_shared(shared: Arc<Shared>, api: bool) -> Kubernetes {
        let (stop, _) = watch::channel(());
        Kubernetes {
            _running: Arc::new(Running {
                shared: shared.clone(),
                _stop: stop,
                api,
            }),
            shared,
            api,
            local: Arc::new(LocalPods::default()),
            cluster_name: None,
            named: HashMap::new(),
            asked: false,
        }
    }

    /// True once the kubelet answered (tests, diagnostics).
    pub fn kubelet_answered(&self) -> bool {
        self.shared.kubelet_answered.load(Ordering::Relaxed)
    }
}

/// The endpoints and intervals, with the in-cluster defaults.
fn settings(c: &KubernetesProcessorConfig, env: &dyn Fn(&str) -> Option<String>) -> Settings {
    let set = |k: &str| {
        env(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let kubelet_base = c.kubelet.endpoint.clone().unwrap_or_else(|| {
        let host = set("NODE_IP")
            .or_else(|| set("K8S_NODE_NAME"))
            .unwrap_or_else(|| "localhost".to_owned());
        format!("https://{}:10250", bracket(&host))
    });
    let kubelet = Endpoint {
        base: kubelet_base,
        ca_file: c
            .kubelet
            .ca_file
            .clone()
            .unwrap_or_else(|| c.ca_file.clone()),
        insecure: c.kubelet.insecure_skip_verify,
        token_path: c.token_path.clone(),
        timeout: c.timeout,
    };
    let api_base = if c.api.enabled {
        c.api.endpoint.clone().or_else(|| {
            let host = set("KUBERNETES_SERVICE_HOST")?;
            let port = set("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".to_owned());
            Some(format!("https://{}:{port}", bracket(&host)))
        })
    } else {
        None
    };
    match (&api_base, c.api.enabled) {
        (None, true) => tracing::warn!(
            "kubernetes processor: no API server (no `api.endpoint` and KUBERNETES_SERVICE_HOST is not set): peer pods and Services will not be named, and a ReplicaSet's Deployment comes from the pod-template-hash naming rule; local pods are still named from the kubelet"
        ),
        (None, false) => tracing::info!(
            "kubernetes processor: API server disabled (`api.enabled: false`): peers are not named; local pods are named from the kubelet"
        ),
        _ => {}
    }
    let api = api_base.map(|base| Endpoint {
        base,
        ca_file: c.ca_file.clone(),
        insecure: false,
        token_path: c.token_path.clone(),
        timeout: c.timeout,
    });
    Settings {
        kubelet,
        refresh_interval: c.kubelet.refresh_interval,
        min_refresh_interval: c.kubelet.min_refresh_interval,
        api,
        backoff: c.api.backoff,
        max_backoff: c.api.max_backoff.max(c.api.backoff),
        max_objects: c.api.max_objects,
    }
}

/// An IPv6 address in a URL goes in brackets.
fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use flowscope_model::env::fixed as env;

    const WEB_UID: &str = "8f3c2a1e-5b6d-4c7e-9f80-1a2b3c4d5e6f";
    const WEB_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn flow(resource: &Arc<Attrs>, peer: &str) -> Flow {
        Flow {
            resource: resource.clone(),
            attrs: Attrs::new(),
            transport: flowscope_model::Transport::Tcp,
            role: flowscope_model::Role::Client,
            local: "198.18.7.10:40000".parse().unwrap(),
            peer: format!("{peer}:80").parse().unwrap(),
            netns: 1,
            pid: 1,
            stats: Default::default(),
        }
    }

    fn shared(api: bool) -> Arc<Shared> {
        let s = Arc::new(Shared::new(100));
        let pods = pods::parse_pod_list(include_bytes!("fixtures/kubelet-pods.json")).unwrap();
        *s.local.lock().unwrap() = Arc::new(LocalPods::new(pods));
        if api {
            let mut c = s.cluster.write().unwrap();
            let raw = include_bytes!("fixtures/api-pods.json");
            for p in api::parse_list::<pods::Pod>(raw).unwrap().items {
                c.upsert_pod(p).unwrap();
            }
            let raw = include_bytes!("fixtures/api-services.json");
            for x in api::parse_list::<api::Service>(raw).unwrap().items {
                c.upsert_service(x).unwrap();
            }
        }
        s
    }

    #[test]
    fn names_the_local_pod_from_the_kubelet_alone() {
        let mut k = Kubernetes::with_shared(shared(false), false);
        let res = Arc::new(
            Attrs::new()
                .with(resource::SERVICE_NAME, "nginx")
                .with(resource::K8S_POD_UID, WEB_UID)
                .with(resource::CONTAINER_ID, WEB_ID),
        );
        k.begin_batch();
        let (mut a, mut b) = (flow(&res, "198.18.8.20"), flow(&res, "198.18.9.9"));
        k.enrich(&mut a);
        k.enrich(&mut b);
        assert!(
            Arc::ptr_eq(&a.resource, &b.resource),
            "named once per batch"
        );
        let want = Attrs::new()
            .with(resource::SERVICE_NAME, "nginx")
            .with(resource::K8S_POD_UID, WEB_UID)
            .with(resource::CONTAINER_ID, WEB_ID)
            .with(k8s::NAMESPACE_NAME, "shop")
            .with(k8s::POD_NAME, "web-7d4b9c6f8-x2k9p")
            .with(k8s::NODE_NAME, "node-1")
            .with(k8s::CONTAINER_NAME, "nginx")
            .with(k8s::CONTAINER_RUNTIME_NAME, "nginx")
            .with(k8s::DEPLOYMENT_NAME, "web");
        assert_eq!(*a.resource, want);
        // Without the API server no peer is named.
        assert!(a.attrs.is_empty());
    }

    #[test]
    fn cluster_name_on_every_resource() {
        let mut k = Kubernetes::with_shared(shared(false), false);
        k.cluster_name = Some("prod-eu".into());
        k.begin_batch();
        let host = Arc::new(Attrs::new().with(resource::SERVICE_NAME, "sshd"));
        let pod = Arc::new(Attrs::new().with(resource::K8S_POD_UID, WEB_UID));
        let (mut a, mut b) = (flow(&host, "198.18.9.9"), flow(&pod, "198.18.9.9"));
        k.enrich(&mut a);
        k.enrich(&mut b);
        assert_eq!(a.resource.get_str(k8s::CLUSTER_NAME), Some("prod-eu"));
        assert_eq!(b.resource.get_str(k8s::CLUSTER_NAME), Some("prod-eu"));
        assert_eq!(
            b.resource.get_str(k8s::POD_NAME),
            Some("web-7d4b9c6f8-x2k9p")
        );
    }

    #[test]
    fn names_peers_and_asks_for_unknown_pods() {
        let s = shared(true);
        let mut k = Kubernetes::with_shared(s.clone(), true);
        k.begin_batch();
        let outside = Arc::new(Attrs::new().with(resource::SERVICE_NAME, "curl"));
        let mut f = flow(&outside, "198.18.8.20");
        k.enrich(&mut f);
        assert!(
            Arc::ptr_eq(&f.resource, &outside),
            "not in a pod: untouched"
        );
        let peer = |f: &Flow, key| f.attrs.get_str(key).map(str::to_owned);
        assert_eq!(peer(&f, attr::PEER_SERVICE_NAME).as_deref(), Some("api"));
        assert_eq!(
            peer(&f, k8s::PEER_SERVICE_NAMESPACE).as_deref(),
            Some("shop")
        );
        assert_eq!(
            peer(&f, k8s::PEER_POD_NAME).as_deref(),
            Some("api-5c8d9e7f6-m3n4b")
        );
        assert_eq!(peer(&f, k8s::PEER_NAMESPACE_NAME).as_deref(), Some("shop"));
        let mut svc = flow(&outside, "198.18.96.20");
        k.enrich(&mut svc);
        assert_eq!(peer(&svc, attr::PEER_SERVICE_NAME).as_deref(), Some("api"));
        assert_eq!(peer(&svc, k8s::PEER_POD_NAME), None);

        // A pod the kubelet has not listed: unnamed, and a new read asked
        // for (once per batch).
        let unknown = Arc::new(Attrs::new().with(
            resource::K8S_POD_UID,
            "00000000-0000-4000-8000-000000000000",
        ));
        let mut u = flow(&unknown, "198.18.9.9");
        k.enrich(&mut u);
        assert!(Arc::ptr_eq(&u.resource, &unknown));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let asked = |s: &Shared| {
            rt.block_on(async {
                let wait = std::time::Duration::from_millis(20);
                tokio::time::timeout(wait, s.refresh.notified())
                    .await
                    .is_ok()
            })
        };
        assert!(asked(&s));
        assert!(!asked(&s), "one permit, not one per flow");
    }

    #[test]
    fn one_client_per_settings_while_used() {
        let ctx = flowscope_model::Context::default();
        let clients = Clients::new();
        let mut c = KubernetesProcessorConfig::default();
        c.kubelet.endpoint = Some("https://127.0.0.1:9".into());
        c.api.enabled = false;
        let none = |_: &str| None;
        let a = Kubernetes::from_config(&c, &clients, &ctx.telemetry, &none).unwrap();
        let b = Kubernetes::from_config(&c, &clients, &ctx.telemetry, &none).unwrap();
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        let mut other = c.clone();
        other.timeout = std::time::Duration::from_secs(1);
        let d = Kubernetes::from_config(&other, &clients, &ctx.telemetry, &none).unwrap();
        assert!(!Arc::ptr_eq(&a.shared, &d.shared));
        let weak = Arc::downgrade(&a.shared);
        drop((a, b, d));
        let e = Kubernetes::from_config(&c, &clients, &ctx.telemetry, &none).unwrap();
        // A new client: the first one stopped with its last user (its
        // thread may still be finishing and hold its state a moment).
        assert!(
            weak.upgrade()
                .is_none_or(|old| !Arc::ptr_eq(&old, &e.shared))
        );
        assert_eq!(clients.running.lock().unwrap().len(), 1);
        drop(e);
    }

    #[test]
    fn in_cluster_defaults() {
        let c = KubernetesProcessorConfig::default();
        let s = settings(
            &c,
            &env(&[
                ("NODE_IP", "fd00::5"),
                ("KUBERNETES_SERVICE_HOST", "198.18.96.1"),
                ("KUBERNETES_SERVICE_PORT", "6443"),
            ]),
        );
        assert_eq!(s.kubelet.base, "https://[fd00::5]:10250");
        assert_eq!(s.api.unwrap().base, "https://198.18.96.1:6443");
        let s = settings(&c, &env(&[("K8S_NODE_NAME", "node-1")]));
        assert_eq!(s.kubelet.base, "https://node-1:10250");
        assert!(s.api.is_none());
        assert_eq!(
            s.kubelet.token_path,
            std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token")
        );
    }
}
