//! The attribute keys and few-valued values the hot paths add to every
//! flow and point, allocated once for the process instead of once per flow
//! or point: the collector's flow attributes and [`crate::metrics::flow_points`]'
//! direction, error type and drop reason. Sharing one allocation also keeps
//! the keys in cache for the processors that compare them.

use std::sync::LazyLock;

use crate::Value;
use crate::attr::Key;
use crate::flow::{FailReason, Role, Transport};
use crate::names::{attr, nat};

/// The spelled keys and values ([`spelled`]).
pub struct Spelled {
    pub transport: Key,
    tcp: Value,
    udp: Value,
    pub network_type: Key,
    ipv4: Value,
    ipv6: Value,
    pub role: Key,
    client: Value,
    server: Value,
    pub peer_address: Key,
    pub peer_port: Key,
    pub local_port: Key,
    pub local_address: Key,
    pub nat_address: Key,
    pub nat_port: Key,
    pub direction: Key,
    pub transmit: Value,
    pub receive: Value,
    pub error_type: Key,
    fail_reasons: [Value; FailReason::ALL.len()],
    pub drop_reason: Key,
}

impl Spelled {
    pub fn transport_value(&self, t: Transport) -> &Value {
        match t {
            Transport::Tcp => &self.tcp,
            Transport::Udp => &self.udp,
        }
    }

    /// `ipv4` or `ipv6` (`network.type`).
    pub fn network_type_value(&self, ipv4: bool) -> &Value {
        if ipv4 { &self.ipv4 } else { &self.ipv6 }
    }

    pub fn role_value(&self, r: Role) -> &Value {
        match r {
            Role::Client => &self.client,
            Role::Server => &self.server,
        }
    }

    pub fn fail_reason_value(&self, r: FailReason) -> &Value {
        &self.fail_reasons[r.index()]
    }
}

static SPELLED: LazyLock<Spelled> = LazyLock::new(|| Spelled {
    transport: Key::from(attr::NETWORK_TRANSPORT),
    tcp: Value::from(Transport::Tcp.as_str()),
    udp: Value::from(Transport::Udp.as_str()),
    network_type: Key::from(attr::NETWORK_TYPE),
    ipv4: Value::from("ipv4"),
    ipv6: Value::from("ipv6"),
    role: Key::from(attr::FLOW_ROLE),
    client: Value::from(Role::Client.as_str()),
    server: Value::from(Role::Server.as_str()),
    peer_address: Key::from(attr::PEER_ADDRESS),
    peer_port: Key::from(attr::PEER_PORT),
    local_port: Key::from(attr::LOCAL_PORT),
    local_address: Key::from(attr::LOCAL_ADDRESS),
    nat_address: Key::from(nat::PEER_NAT_ADDRESS),
    nat_port: Key::from(nat::PEER_NAT_PORT),
    direction: Key::from(attr::IO_DIRECTION),
    transmit: Value::from(attr::TRANSMIT),
    receive: Value::from(attr::RECEIVE),
    error_type: Key::from(attr::ERROR_TYPE),
    fail_reasons: FailReason::ALL.map(|r| Value::from(r.as_str())),
    drop_reason: Key::from(attr::DROP_REASON),
});

/// The process's spelled keys and values.
pub fn spelled() -> &'static Spelled {
    &SPELLED
}
