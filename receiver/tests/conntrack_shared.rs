//! The host's one conntrack service per agent (root: it opens netlink
//! sockets in every network namespace): two `ebpf` receivers with
//! `nat.enabled` share it through the context, another agent has its own,
//! and it stops with its last holder.

use std::sync::Arc;

use flowscope_model::Context;
use flowscope_receiver::conntrack::{Conntrack, ConntrackSettings};

#[test]
fn one_conntrack_service_per_agent_stopped_by_its_last_holder() {
    let ctx = Context::default();
    let first = Conntrack::shared(ConntrackSettings::default(), &ctx).expect("start conntrack");
    // A second receiver's settings do not start a second service.
    let second = Conntrack::shared(
        ConntrackSettings {
            max_tracked: 10,
            ..ConntrackSettings::default()
        },
        &ctx.clone(),
    )
    .expect("join conntrack");
    assert!(Arc::ptr_eq(&first, &second));
    let other = Conntrack::shared(ConntrackSettings::default(), &Context::default())
        .expect("another agent's conntrack");
    assert!(!Arc::ptr_eq(&first, &other));

    let weak = Arc::downgrade(&first);
    drop(first);
    assert!(
        weak.upgrade().is_some(),
        "the second receiver still holds it"
    );
    drop(second);
    assert!(weak.upgrade().is_none(), "stopped with its last holder");
    let again = Conntrack::shared(ConntrackSettings::default(), &ctx).expect("restart");
    assert!(!Arc::ptr_eq(&again, &other));
}
