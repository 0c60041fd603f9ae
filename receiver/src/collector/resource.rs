//! What a reported flow carries: the Resource of the process that owns it
//! (service, container, pod, host; process details at
//! [`Granularity::Process`]) and the flow's attributes.

use hashbrown::HashMap;
use std::sync::Arc;

use flowscope_model::names::resource;
use flowscope_model::spelled::spelled;
use flowscope_model::{Attrs, Flow, FlowStats, Role};

use super::key::FlowKey;
use super::{Collector, Granularity};
use crate::process::comm_str;

impl Collector {
    fn resource(
        &mut self,
        key: &FlowKey,
        cache: &mut HashMap<(u32, [u8; 16]), Arc<Attrs>>,
    ) -> Arc<Attrs> {
        if let Some(r) = cache.get(&(key.pid, key.comm)) {
            return r.clone();
        }
        let mut attrs = self.settings.host.clone();
        if key.pid == 0 {
            let name = comm_str(&key.comm);
            attrs.set(
                resource::SERVICE_NAME,
                if name.is_empty() {
                    "unknown".to_string()
                } else {
                    name
                },
            );
        } else {
            let info = self.procs.get(key.pid, &key.comm);
            attrs.set(resource::SERVICE_NAME, info.service_name.clone());
            if let Some(ns) = &info.service_namespace {
                attrs.set(resource::SERVICE_NAMESPACE, ns.clone());
            }
            if let Some(v) = &info.service_version {
                attrs.set(resource::SERVICE_VERSION, v.clone());
            }
            if let Some(c) = &info.container_id {
                attrs.set(resource::CONTAINER_ID, c.clone());
            }
            if let Some(uid) = &info.pod_uid {
                attrs.set(resource::K8S_POD_UID, uid.clone());
            }
            if self.settings.granularity == Granularity::Process {
                attrs.set(resource::PROCESS_PID, key.pid);
                attrs.set(
                    resource::PROCESS_EXECUTABLE_NAME,
                    info.executable_name.clone(),
                );
                if let Some(cmd) = &info.command {
                    attrs.set(resource::PROCESS_COMMAND, cmd.clone());
                }
                if self.settings.include_command_line
                    && let Some(line) = &info.command_line
                {
                    attrs.set(resource::PROCESS_COMMAND_LINE, line.clone());
                }
            }
        }
        let r = Arc::new(attrs);
        cache.insert((key.pid, key.comm), r.clone());
        r
    }

    /// The flow `key` reports with this interval's `stats`: its Resource
    /// (built once per process and interval, through `resources`) and its
    /// attributes.
    pub(super) fn flow(
        &mut self,
        key: FlowKey,
        stats: FlowStats,
        resources: &mut HashMap<(u32, [u8; 16]), Arc<Attrs>>,
    ) -> Flow {
        let res = self.resource(&key, resources);
        let sp = spelled();
        let mut attrs = Attrs::new()
            .with(
                sp.transport.clone(),
                sp.transport_value(key.transport).clone(),
            )
            .with(
                sp.network_type.clone(),
                sp.network_type_value(key.peer.ip.is_ipv4()).clone(),
            )
            .with(sp.role.clone(), sp.role_value(key.role).clone())
            .with(sp.peer_address.clone(), key.peer.ip.to_string());
        match key.role {
            Role::Client => attrs.set(sp.peer_port.clone(), key.peer.port),
            Role::Server => attrs.set(sp.local_port.clone(), key.local.port),
        }
        // The local address names this workload's end for a fleet view
        // that sees the other end reported by another node. A socket
        // bound to the wildcard whose source was not found has none.
        if !key.local.ip.is_unspecified() {
            attrs.set(sp.local_address.clone(), key.local.ip.to_string());
        }
        // The `peer` processor names the peer from the address the
        // client used: this one when NAT rewrote it.
        if let Some(nat) = key.nat {
            attrs.set(sp.nat_address.clone(), nat.ip.to_string());
            if key.role == Role::Client {
                attrs.set(sp.nat_port.clone(), nat.port);
            }
        }
        Flow {
            resource: res,
            attrs,
            transport: key.transport,
            role: key.role,
            local: key.local.socket(),
            peer: key.peer.socket(),
            netns: key.netns,
            pid: key.pid,
            stats,
        }
    }
}
