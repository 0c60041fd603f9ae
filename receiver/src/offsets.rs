//! Fills [`Offsets`] for the running kernel from BTF and tracefs.

use flowscope_common::Offsets;
use thiserror::Error;

use crate::btf::{Btf, BtfError};
use crate::tracefs::{self, Format, TracefsError};

#[derive(Debug, Error)]
pub enum OffsetsError {
    #[error("kernel struct layout")]
    Btf(#[from] BtfError),
    #[error("tracepoint layout")]
    Tracefs(#[from] TracefsError),
    #[error("kernel struct member {path} is {size} bytes, flowscope expects {expected}")]
    Size {
        path: String,
        size: u32,
        expected: u32,
    },
}

fn member(btf: &Btf, strukt: &str, path: &str, size: u32) -> Result<u32, OffsetsError> {
    let m = btf.member(strukt, path)?;
    if m.size != size {
        return Err(OffsetsError::Size {
            path: format!("{strukt}.{path}"),
            size: m.size,
            expected: size,
        });
    }
    Ok(m.offset)
}

/// Reads every offset the flow programs use. Fails naming the struct member
/// or tracepoint field that this kernel lacks.
pub fn discover() -> Result<Offsets, OffsetsError> {
    let btf = Btf::from_sys_fs()?;
    let root = tracefs::root()?;
    let set_state = Format::read(&root, "sock", "inet_sock_set_state")?;
    let send_len = Format::read(&root, "sock", "sock_send_length")?;
    let recv_len = Format::read(&root, "sock", "sock_recv_length")?;
    let send_reset = Format::read(&root, "tcp", "tcp_send_reset")?;
    let recv_reset = Format::read(&root, "tcp", "tcp_receive_reset")?;

    Ok(Offsets {
        sk_family: member(&btf, "sock", "__sk_common.skc_family", 2)?,
        sk_state: member(&btf, "sock", "__sk_common.skc_state", 1)?,
        sk_daddr: member(&btf, "sock", "__sk_common.skc_daddr", 4)?,
        sk_rcv_saddr: member(&btf, "sock", "__sk_common.skc_rcv_saddr", 4)?,
        sk_dport: member(&btf, "sock", "__sk_common.skc_dport", 2)?,
        sk_num: member(&btf, "sock", "__sk_common.skc_num", 2)?,
        sk_v6_daddr: member(&btf, "sock", "__sk_common.skc_v6_daddr", 16)?,
        sk_v6_rcv_saddr: member(&btf, "sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
        sk_net: member(&btf, "sock", "__sk_common.skc_net.net", 8)?,
        sk_cookie: member(&btf, "sock", "__sk_common.skc_cookie", 8)?,
        sk_err: member(&btf, "sock", "sk_err", 4)?,
        sk_protocol: member(&btf, "sock", "sk_protocol", 2)?,
        net_ns_inum: member(&btf, "net", "ns.inum", 4)?,
        tcp_srtt_us: member(&btf, "tcp_sock", "srtt_us", 4)?,
        tcp_mdev_us: member(&btf, "tcp_sock", "mdev_us", 4)?,
        tcp_segs_in: member(&btf, "tcp_sock", "segs_in", 4)?,
        tcp_segs_out: member(&btf, "tcp_sock", "segs_out", 4)?,
        tcp_total_retrans: member(&btf, "tcp_sock", "total_retrans", 4)?,
        sk_flags: member(&btf, "sock", "__sk_common.skc_flags", 8)?,
        tcp_bytes_acked: member(&btf, "tcp_sock", "bytes_acked", 8)?,
        tcp_bytes_received: member(&btf, "tcp_sock", "bytes_received", 8)?,
        tcp_write_seq: member(&btf, "tcp_sock", "write_seq", 4)?,
        tcp_snd_una: member(&btf, "tcp_sock", "snd_una", 4)?,
        tcp_rcv_nxt: member(&btf, "tcp_sock", "rcv_nxt", 4)?,
        tcp_copied_seq: member(&btf, "tcp_sock", "copied_seq", 4)?,
        inet_sport: member(&btf, "inet_sock", "inet_sport", 2)?,
        set_state_skaddr: set_state.offset("skaddr", 8)?,
        set_state_oldstate: set_state.offset("oldstate", 4)?,
        set_state_newstate: set_state.offset("newstate", 4)?,
        set_state_protocol: set_state.offset("protocol", 2)?,
        send_len_sk: send_len.offset("sk", 8)?,
        send_len_protocol: send_len.offset("protocol", 2)?,
        send_len_ret: send_len.offset("ret", 4)?,
        send_len_flags: send_len.offset("flags", 4)?,
        recv_len_sk: recv_len.offset("sk", 8)?,
        recv_len_protocol: recv_len.offset("protocol", 2)?,
        recv_len_ret: recv_len.offset("ret", 4)?,
        recv_len_flags: recv_len.offset("flags", 4)?,
        send_reset_skaddr: send_reset.offset("skaddr", 8)?,
        recv_reset_skaddr: recv_reset.offset("skaddr", 8)?,
        udp_pending: member(&btf, "udp_sock", "pending", 4)?,
        udp_gso_size: member(&btf, "udp_sock", "gso_size", 2)?,
        task_group_leader: member(&btf, "task_struct", "group_leader", 8)?,
        task_start_time: member(&btf, "task_struct", "start_time", 8)?,
        task_mm: member(&btf, "task_struct", "mm", 8)?,
        mm_env_start: member(&btf, "mm_struct", "env_start", 8)?,
        mm_env_end: member(&btf, "mm_struct", "env_end", 8)?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_every_offset() {
        // Needs tracefs mounted (scripts/bootstrap.sh does it) and BTF.
        let o = super::discover()
            .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
        // sock_common begins struct sock; the family sits past the addresses.
        assert!(o.sk_family > 0 && o.sk_family < 64);
        assert_eq!(o.set_state_skaddr, 8);
        assert!(o.tcp_srtt_us > o.sk_err);
    }
}
