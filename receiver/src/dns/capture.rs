//! Packet capture: one `AF_PACKET` socket per network namespace, each with
//! the eBPF DNS filter attached.
//!
//! - Each rescan also reads every namespace's own addresses (from a process
//!   in it), so the engine can tell lookups made or served there from
//!   queries merely routed through it.
//! - Namespaces are found in `/proc/<pid>/ns/net` (every namespace with a
//!   process) and `/run/netns/*` (named ones, `ip netns add`, which may have
//!   none), deduplicated by inode, and rescanned every
//!   [`CaptureSettings::rescan`]. A namespace no longer found has its socket
//!   closed (the socket would otherwise keep the namespace alive).
//! - A socket is opened from a short-lived thread that enters the namespace
//!   with setns(2): a packet socket belongs to the namespace it was created
//!   in, whichever thread reads it later.
//! - The socket is created with protocol 0 (it receives nothing), gets the
//!   filter (SO_ATTACH_BPF), and only then is bound to `ETH_P_ALL`, so no
//!   unfiltered packet is ever queued. `SOCK_DGRAM` (cooked) sockets deliver
//!   packets from the IP header on, whatever the link type.
//! - `SO_TIMESTAMPNS` stamps each packet with the kernel's receive time,
//!   which is what lookup latency is computed from.
//! - On a loopback device each packet shows twice (`PACKET_OUTGOING`, then
//!   incoming); only the incoming copy is kept.
//! - Packets the kernel dropped because a socket's queue was full are read
//!   from `PACKET_STATISTICS` and counted as
//!   `flowscope.events.lost{flowscope.source=dns, flowscope.reason=socket_full}`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowscope_model::Telemetry;
use flowscope_model::internal_events::{EventsLost, EventsReceived, LossReason};
use thiserror::Error;

use super::engine::{Captured, Direction, Engine, SOURCE};
use crate::netns::{NetnsError, NsPoll, in_namespace};

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what} on the packet socket in network namespace {netns}")]
    Socket {
        what: &'static str,
        netns: u32,
        #[source]
        source: io::Error,
    },
}

/// Capture settings.
#[derive(Clone, Debug)]
pub struct CaptureSettings {
    pub rescan: Duration,
    /// SO_RCVBUF of each socket.
    pub rcvbuf: usize,
}

const ARPHRD_LOOPBACK: u16 = 772;
/// A wake-up this soon after the previous one means load: batch.
const BATCH_AFTER: Duration = Duration::from_millis(2);
const BATCH_WAIT: Duration = Duration::from_millis(1);
/// Longest wait for packets, so the stop flag and expiry are seen.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
const PACKET_OUTGOING: u8 = 4;
const SO_ATTACH_BPF: libc::c_int = 50;

/// A network namespace found by the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub inode: u32,
    pub path: PathBuf,
}

// The namespace scan is shared with the conntrack service.
pub use crate::netns::scan_namespaces;

/// The addresses of the namespace process `pid` is in: IPv4 from the
/// `LOCAL` host routes of `/proc/<pid>/net/fib_trie`, IPv6 from
/// `/proc/<pid>/net/if_inet6`. None when unreadable.
pub fn local_addrs(pid: u32) -> Option<HashSet<IpAddr>> {
    let trie = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).ok()?;
    let mut out = HashSet::new();
    parse_fib_trie(&trie, &mut out);
    if let Ok(v6) = std::fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        parse_if_inet6(&v6, &mut out);
    }
    Some(out)
}

/// Adds every address of a `/32 host LOCAL` leaf of a fib_trie dump.
pub fn parse_fib_trie(text: &str, out: &mut HashSet<IpAddr>) {
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
        {
            out.insert(IpAddr::V4(a));
        }
    }
}

/// Adds the addresses of `/proc/net/if_inet6` (32 hex digits first).
pub fn parse_if_inet6(text: &str, out: &mut HashSet<IpAddr>) {
    for line in text.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        if let Ok(v) = u128::from_str_radix(hex, 16)
            && hex.len() == 32
        {
            out.insert(IpAddr::V6(Ipv6Addr::from(v)));
        }
    }
}

pub use crate::netns::current_netns;

fn sock_err(what: &'static str, netns: u32) -> CaptureError {
    CaptureError::Socket {
        what,
        netns,
        source: io::Error::last_os_error(),
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> bool {
    // SAFETY: `v` points to a live T of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        ) == 0
    }
}

/// Opens a filtered packet socket in the namespace at `path` (inode `netns`).
pub fn open_in(
    path: &Path,
    netns: u32,
    prog_fd: RawFd,
    rcvbuf: usize,
) -> Result<OwnedFd, CaptureError> {
    in_namespace(path, netns, "flowscope-dns-ns", move || {
        open_here(netns, prog_fd, rcvbuf)
    })
}

/// Opens the filtered packet socket in this thread's namespace.
pub fn open_here(netns: u32, prog_fd: RawFd, rcvbuf: usize) -> Result<OwnedFd, CaptureError> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(sock_err("socket(AF_PACKET)", netns));
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if !setsockopt(raw, libc::SOL_SOCKET, SO_ATTACH_BPF, &prog_fd) {
        return Err(sock_err("SO_ATTACH_BPF", netns));
    }
    let one: libc::c_int = 1;
    if !setsockopt(raw, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one) {
        return Err(sock_err("SO_TIMESTAMPNS", netns));
    }
    let size = rcvbuf.min(i32::MAX as usize) as libc::c_int;
    // FORCE ignores rmem_max (needs CAP_NET_ADMIN, which loading eBPF needs
    // too); fall back to the capped option.
    if !setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size) {
        let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
    }
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = 0;
    // SAFETY: sll is a valid sockaddr_ll of the given size.
    let r = unsafe {
        libc::bind(
            raw,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(sock_err("bind(ETH_P_ALL)", netns));
    }
    Ok(fd)
}

struct Sock {
    fd: OwnedFd,
    /// Cumulative drops read so far.
    drops: u64,
}

/// Reads the kernel's drop count since the last read (PACKET_STATISTICS
/// resets on read).
fn drops(fd: BorrowedFd<'_>) -> u64 {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: st and len are valid for the kernel to write.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if r == 0 { u64::from(st.tp_drops) } else { 0 }
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, the clock of
/// SO_TIMESTAMPNS).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The capture loop, run on its own thread until `stop` is set.
pub struct Capture {
    pub settings: CaptureSettings,
    pub prog_fd: OwnedFd,
    pub telemetry: Telemetry,
    pub engine: Arc<Mutex<Engine>>,
    pub stop: Arc<AtomicBool>,
    /// Namespaces with an open socket, for tests and health.
    pub open: Arc<Mutex<Vec<u32>>>,
}

impl Capture {
    pub fn run(self) {
        let mut socks: HashMap<u32, Sock> = HashMap::new();
        let mut failed: HashMap<u32, Instant> = HashMap::new();
        let mut last_scan: Option<Instant> = None;
        let mut buf = vec![0u8; 256 * 1024];
        let mut cbuf = [0u64; 16];
        // Under load, packets gather for a millisecond so one wake-up
        // reads many: latency comes from kernel timestamps, so waiting
        // changes no number. A quiet host is served at once.
        let mut poll = NsPoll::batching(BATCH_AFTER, BATCH_WAIT);
        let mut scanner = crate::netns::NetnsScanner::default();
        while !self.stop.load(Ordering::Relaxed) {
            if last_scan.is_none_or(|t| t.elapsed() >= self.settings.rescan) {
                last_scan = Some(Instant::now());
                self.rescan(scanner.scan(), &mut socks, &mut failed);
                poll.set(socks.iter().map(|(ns, s)| (*ns, s.fd.as_raw_fd())));
            }
            let mut ready = poll.wait(POLL_TIMEOUT).peekable();
            if ready.peek().is_some() {
                let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
                for (ns, fd) in ready {
                    read_all(fd, ns, &mut buf, &mut cbuf, &mut engine, &self.telemetry);
                }
            }
            let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            engine.expire(realtime_ns());
        }
    }

    fn rescan(
        &self,
        found: HashMap<u32, (std::path::PathBuf, Option<u32>)>,
        socks: &mut HashMap<u32, Sock>,
        failed: &mut HashMap<u32, Instant>,
    ) {
        socks.retain(|ns, s| {
            if found.contains_key(ns) {
                let d = drops(s.fd.as_fd());
                s.drops += d;
                self.telemetry
                    .emit(EventsLost::new(SOURCE, LossReason::SocketFull, d));
                true
            } else {
                tracing::debug!(
                    netns = ns,
                    "network namespace gone; closing its DNS capture socket"
                );
                false
            }
        });
        failed.retain(|ns, _| found.contains_key(ns));
        {
            let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            engine.retain_local_addrs(|ns| found.contains_key(&ns));
            for (ns, (_, pid)) in &found {
                if let Some(addrs) = pid.and_then(local_addrs) {
                    engine.set_local_addrs(*ns, addrs);
                }
            }
        }
        for (ns, (path, _)) in &found {
            if socks.contains_key(ns) {
                continue;
            }
            // Retry a failed namespace only every 30 s (it may be going away).
            if failed
                .get(ns)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
            {
                continue;
            }
            match open_in(path, *ns, self.prog_fd.as_raw_fd(), self.settings.rcvbuf) {
                Ok(fd) => {
                    tracing::debug!(netns = ns, path = %path.display(), "capturing DNS");
                    socks.insert(*ns, Sock { fd, drops: 0 });
                }
                Err(e) => {
                    tracing::debug!(netns = ns, error = %e, "cannot capture DNS in this namespace");
                    failed.insert(*ns, Instant::now());
                }
            }
        }
        let mut open: Vec<u32> = socks.keys().copied().collect();
        open.sort_unstable();
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = open;
    }
}

/// Reads every queued packet of one socket into the engine.
fn read_all(
    fd: RawFd,
    netns: u32,
    buf: &mut [u8],
    cbuf: &mut [u64; 16],
    engine: &mut Engine,
    telemetry: &Telemetry,
) {
    // A bound on one socket's turn, so a flood in one namespace does not
    // starve the others or the timeout sweep.
    for _ in 0..4096 {
        // SAFETY: zeroed sockaddr_ll/msghdr are valid; pointers set below
        // reference live buffers of the given lengths.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(cbuf);
        // SAFETY: msg describes valid buffers.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        if n < 0 {
            return;
        }
        let n = n as usize;
        if n > buf.len() || msg.msg_flags & libc::MSG_TRUNC != 0 {
            telemetry.emit(EventsReceived {
                source: SOURCE,
                count: 1,
            });
            telemetry.emit(EventsLost::new(SOURCE, LossReason::ParseError, 1));
            continue;
        }
        let loopback = sll.sll_hatype == ARPHRD_LOOPBACK;
        let outgoing = sll.sll_pkttype == PACKET_OUTGOING;
        if loopback && outgoing {
            // The same packet comes back as incoming on lo.
            continue;
        }
        let ts_ns = timestamp(&msg).unwrap_or_else(realtime_ns);
        engine.on_packet(&Captured {
            netns,
            ts_ns,
            direction: if outgoing {
                Direction::Outgoing
            } else {
                Direction::Incoming
            },
            loopback,
            data: &buf[..n],
        });
    }
}

/// The SCM_TIMESTAMPNS of a received message.
fn timestamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within
    // msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_addresses() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n\
                    |-- 198.18.1.255\n        /32 link BROADCAST\n     |-- 198.18.1.1\n        /32 host LOCAL\n";
        let mut out = HashSet::new();
        parse_fib_trie(trie, &mut out);
        parse_if_inet6(
            "fd000001000000000000000000000001 02 40 00 80 veth0\n",
            &mut out,
        );
        let want: HashSet<IpAddr> = ["127.0.0.1", "198.18.1.1", "fd00:1::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(out, want);
        // This process's namespace has at least loopback.
        let mine = local_addrs(std::process::id()).unwrap();
        assert!(
            mine.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()),
            "{mine:?}"
        );
    }
}
