//! The floor: programs that return at once, on exactly the hooks the flow
//! programs (`src/main.rs`) and the drop program (`drops.rs`) use, with the
//! same program types.
//!
//! `scripts/bench-load.sh --floor` loads this object (through the
//! `flowscope-floor` binary of the receiver crate) beside the agent for
//! the same load run. What one of these programs costs per run is what the
//! kernel spends to call any program on that hook (the tracepoint's
//! dispatch, the run-time accounting that `kernel.bpf_stats_enabled`
//! adds, RCU and migration guards), so the agent's figure divided by this
//! one is the part of the cost its own instructions add, measured on the
//! same machine, at the same moment, under the same load.
//!
//! Each program reads nothing, calls no helper and touches no map. The set
//! mirrors the agent's two sets: BTF-typed raw tracepoints with the four
//! `cgroup/sendmsg4/6`, `cgroup/recvmsg4/6` programs (the default), or
//! classic tracepoints with the two cgroup_skb programs (the fallback).
//! Beside either goes `floor_kfree_skb`, on the hook of the agent's drop
//! program (`drops.rs`), which is a BTF-typed raw tracepoint in both sets.
//! Names start with `floor_` so that `bpftool prog show` tells them from
//! the agent's (the kernel keeps 15 characters of a name).
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb, cgroup_sock_addr, tracepoint},
    programs::{BtfTracePointContext, SkBuffContext, SockAddrContext, TracePointContext},
};
// The shared panic handler.
use flowscope_ebpf as _;

// BTF-typed raw tracepoints (the agent's `btf_*` programs).

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn floor_set_state(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn floor_send_len(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn floor_recv_len(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn floor_send_rst(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn floor_recv_rst(_ctx: BtfTracePointContext) -> u32 {
    0
}

// The drop program's hook (both sets).

#[btf_tracepoint(function = "kfree_skb")]
pub fn floor_kfree_skb(_ctx: BtfTracePointContext) -> u32 {
    0
}

// Their UDP peer programs (they always allow the call, as the agent's do).

#[cgroup_sock_addr(sendmsg4)]
pub fn floor_sendmsg4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn floor_sendmsg6(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn floor_recvmsg4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn floor_recvmsg6(_ctx: SockAddrContext) -> i32 {
    1
}

// Classic tracepoints (the fallback) and their cgroup_skb programs.

#[tracepoint]
pub fn floor_tp_state(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_tp_send(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_tp_recv(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_tp_sndrst(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_tp_rcvrst(_ctx: TracePointContext) -> u32 {
    0
}

#[cgroup_skb(egress)]
pub fn floor_egress(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(ingress)]
pub fn floor_ingress(_ctx: SkBuffContext) -> i32 {
    1
}
