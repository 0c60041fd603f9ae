//! flowscope's DNS programs: the capture filter, and the programs that
//! record which process owns each DNS socket.
//!
//! ## Capture
//!
//! A socket filter attached (SO_ATTACH_BPF) to one `AF_PACKET`/`SOCK_DGRAM`
//! socket per network namespace. On such a socket the kernel runs the filter
//! with `skb->data` at the network header, so offset 0 is the IPv4 or IPv6
//! header. The filter keeps UDP and TCP packets whose source or destination
//! port is one of the configured DNS ports (`DNS_PORTS`, filled by user space
//! before the socket is bound) and drops everything else before it is copied
//! to user space. It keeps IPv4 first fragments and unfragmented packets
//! only (later fragments carry no ports), and for IPv6 only packets whose
//! first next-header is TCP or UDP.
//!
//! The return value is how many bytes to copy: the whole packet, or 0 to
//! drop it.
//!
//! ## Owners
//!
//! A captured packet names a socket (namespace, address, port), not a
//! process, and the process may be gone by the time user space reads the
//! packet. So the owner is written down in the kernel when the message
//! leaves, in the sender's own context:
//!
//! - `sock:sock_send_length` fires at the end of every sendmsg (every
//!   message of a sendmmsg) with the socket, in the calling process. A TCP
//!   or UDP socket whose local or connected peer port is a DNS port
//!   (`DNS_PORT_SET`, read-only data: one load per test) is a DNS socket;
//!   an unconnected UDP socket is one when this thread's
//!   `cgroup/sendmsg4/6` program, earlier in the same syscall, saw a DNS
//!   port as the destination (`DNS_STASH`). Either way the program writes
//!   (namespace, bound address, port, protocol) -> (tgid, process start
//!   time) into `DNS_SOCKS`, an LRU map, unless that entry already names
//!   this process (one lookup, the common case for a busy socket).
//! - The first time a process is written there, the program also sends
//!   its identity on `DNS_EVENTS`: tgid, start time, comm, cgroup id and its
//!   environment block (the bytes /proc/PID/environ shows, up to
//!   [`DNS_ENV_MAX`]), read with `bpf_probe_read_user` while the process
//!   certainly runs. User space builds the Resource (service.name from
//!   `OTEL_SERVICE_NAME`...) from it however soon the process exits.
//!   `DNS_PROCS` remembers which processes were sent.
//!
//! As the flow programs do, the owner programs come twice: a BTF-typed raw
//! tracepoint (`dns_send`, plain loads from the socket) and a classic
//! tracepoint (`dns_send_tp`, one `bpf_probe_read_kernel` per field), the
//! fallback. Offsets come from user space ([`Offsets`]).
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task, bpf_probe_read_user},
    },
    macros::{btf_tracepoint, cgroup_sock_addr, map, socket_filter, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, SkBuffContext, SockAddrContext, TracePointContext},
};
use flowscope_common::{
    AF_INET, AF_INET6, DNS_ENV_MAX, DnsProcess, DnsProcessRecord, DnsSockKey, DnsSockOwner,
    Offsets, PortSet, dns_counter, dns_flags,
};
use flowscope_ebpf::{btf_load, btf_load16, frozen, map_value, off, probe_read, socket_cookie};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Filled by user space before load (read-only data).
// SAFETY: no other symbol is named OFFSETS; user space finds and fills
// it by this name.
#[unsafe(no_mangle)]
// SAFETY: `Offsets` is plain integers, for which all zeroes is a value.
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };
/// The DNS ports, as a bit set (read-only data, filled by user space).
// SAFETY: no other symbol is named DNS_PORT_SET; user space finds and
// fills it by this name.
#[unsafe(no_mangle)]
static DNS_PORT_SET: PortSet = PortSet::EMPTY;

/// Socket -> the process that last sent a DNS message on it. LRU: an entry
/// is needed until user space has read the query (milliseconds) or, when
/// it came too early, the answer; 16,384 sockets that sent DNS lately
/// (about 1.5 MiB, preallocated) is far more than that window holds.
#[map]
static DNS_SOCKS: LruHashMap<DnsSockKey, DnsSockOwner> = LruHashMap::with_max_entries(16384, 0);
/// Processes whose identity was sent (tgid -> start time). LRU: a process
/// evicted is sent again, which refreshes a cache.
#[map]
static DNS_PROCS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);
/// Thread id -> cookie of the unconnected UDP socket whose sendmsg is
/// addressed to a DNS port (0: used), from `cgroup/sendmsg4/6` for the
/// length tracepoint at the end of the same syscall. LRU: one entry per
/// thread that sent DNS from an unconnected socket lately.
#[map]
static DNS_STASH: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);
/// Process identities for user space, read when it needs them (no
/// wake-ups). Size set by user space.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
/// Where a process record is built (too large for the stack).
#[map]
static DNS_SCRATCH: PerCpuArray<DnsProcessRecord> = PerCpuArray::with_max_entries(1, 0);
#[map]
static DNS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(dns_counter::COUNT, 0);

/// DNS ports to keep (key: port in host byte order; value unused).
#[map]
static DNS_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(16, 0);

#[socket_filter]
pub fn dns_filter(ctx: SkBuffContext) -> i64 {
    if keep(&ctx) { ctx.len() as i64 } else { 0 }
}

#[inline(always)]
fn keep(ctx: &SkBuffContext) -> bool {
    let Ok(first) = ctx.load::<u8>(0) else {
        return false;
    };
    let (proto, l4) = match first >> 4 {
        4 => {
            let ihl = ((first & 0x0f) as usize) * 4;
            if ihl < 20 {
                return false;
            }
            // Fragment offset (13 bits): later fragments carry no L4 header.
            let Ok(frag) = ctx.load::<[u8; 2]>(6) else {
                return false;
            };
            if (u16::from_be_bytes(frag) & 0x1fff) != 0 {
                return false;
            }
            let Ok(p) = ctx.load::<u8>(9) else {
                return false;
            };
            (p, ihl)
        }
        6 => {
            let Ok(p) = ctx.load::<u8>(6) else {
                return false;
            };
            (p, 40)
        }
        _ => return false,
    };
    if proto != IPPROTO_UDP && proto != IPPROTO_TCP {
        return false;
    }
    let Ok(ports) = ctx.load::<[u8; 4]>(l4) else {
        return false;
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    is_dns_port(sport) || is_dns_port(dport)
}

#[inline(always)]
fn is_dns_port(port: u16) -> bool {
    // SAFETY: a plain lookup; the value is not kept.
    unsafe { DNS_PORTS.get(&port) }.is_some()
}

#[inline(always)]
fn o() -> &'static Offsets {
    &OFFSETS
}

#[inline(always)]
fn dns_port(port: u16) -> bool {
    let word = frozen(&DNS_PORT_SET.bits[usize::from(port >> 6)]);
    word & (1u64 << (port & 63)) != 0
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(v) = DNS_COUNTERS.get_ptr_mut(index) {
        *map_value(v) += 1;
    }
}

/// How a program reads `struct sock` (as in the flow programs).
trait Mem {
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32>;
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32>;
    /// The socket's cookie (the same number `bpf_get_socket_cookie` gives
    /// the sock_addr programs).
    fn cookie(sk: u64) -> u64;
}

/// Classic tracepoint: every field through `bpf_probe_read_kernel`.
struct Probe;

impl Mem for Probe {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32> {
        probe_read::<T>(base + offset)
    }
    #[inline(always)]
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32> {
        Self::read(base, offset)
    }
    #[inline(always)]
    fn cookie(sk: u64) -> u64 {
        // Set: the sock_addr program asked for it first (which generates it).
        Self::read(sk, off(&o().sk_cookie)).unwrap_or(0)
    }
}

/// BTF-typed raw tracepoint: plain loads the verifier checks against
/// `struct sock`.
struct Direct;

impl Mem for Direct {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u64) -> Result<T, i32> {
        Ok(btf_load(base, offset))
    }
    #[inline(always)]
    fn read16(base: u64, offset: u64) -> Result<[u8; 16], i32> {
        Ok(btf_load16(base, offset))
    }
    #[inline(always)]
    fn cookie(sk: u64) -> u64 {
        socket_cookie(sk as *mut c_void)
    }
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn dns_send(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(struct sock *sk, int ret, int flags)
    let ret: i32 = ctx.arg(1);
    if ret < 0 {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    if let Ok(protocol) = Direct::read::<u16>(sk, off(&o().sk_protocol)) {
        let _ = on_send::<Direct>(sk, protocol);
    }
    0
}

#[tracepoint]
pub fn dns_send_tp(ctx: TracePointContext) -> u32 {
    let _ = tp_send(&ctx);
    0
}

#[inline(always)]
fn tp_send(ctx: &TracePointContext) -> Result<(), i32> {
    let offs = o();
    let ret: i32 = tp_read(ctx, &offs.send_len_ret)?;
    if ret < 0 {
        return Ok(());
    }
    let protocol: u16 = tp_read(ctx, &offs.send_len_protocol)?;
    let sk: u64 = tp_read(ctx, &offs.send_len_sk)?;
    on_send::<Probe>(sk, protocol)
}

/// A field of the tracepoint's event record, at the offset user space
/// read from tracefs.
#[inline(always)]
fn tp_read<T>(ctx: &TracePointContext, field: &u32) -> Result<T, i32> {
    // SAFETY: `read_at` copies with `bpf_probe_read_kernel`, which checks
    // the address; the offset is the field's in the event record.
    unsafe { ctx.read_at::<T>(off(field) as usize) }
}

/// One send on socket `sk`: records its owner if it is a DNS socket.
#[inline(always)]
fn on_send<M: Mem>(sk: u64, protocol: u16) -> Result<(), i32> {
    if protocol != u16::from(IPPROTO_UDP) && protocol != u16::from(IPPROTO_TCP) {
        return Ok(());
    }
    let offs = o();
    let lport: u16 = M::read(sk, off(&offs.sk_num))?;
    let rport: u16 = u16::from_be(M::read(sk, off(&offs.sk_dport))?);
    if !dns_port(lport) && !dns_port(rport) {
        // An unconnected UDP socket's peer is not in the socket: was this
        // send addressed to a DNS port (the sock_addr program says)?
        if protocol != u16::from(IPPROTO_UDP) || rport != 0 {
            return Ok(());
        }
        let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
        let Some(p) = DNS_STASH.get_ptr_mut(&tid) else {
            return Ok(());
        };
        let p = map_value(p);
        let stashed = *p;
        if stashed == 0 || stashed != M::cookie(sk) {
            return Ok(());
        }
        *p = 0;
    }
    record::<M>(sk, protocol as u8, lport)
}

/// Network namespace inode of socket `sk`.
#[inline(always)]
fn netns_of<M: Mem>(sk: u64) -> u32 {
    let net: u64 = M::read(sk, off(&o().sk_net)).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    M::read(net, off(&o().net_ns_inum)).unwrap_or(0)
}

/// Writes the calling process as the owner of DNS socket `sk`.
#[inline(always)]
fn record<M: Mem>(sk: u64, proto: u8, lport: u16) -> Result<(), i32> {
    let offs = o();
    let family: u16 = M::read(sk, off(&offs.sk_family))?;
    let mut key = DnsSockKey {
        netns: netns_of::<M>(sk),
        port: lport,
        proto,
        ..DnsSockKey::default()
    };
    if family == AF_INET {
        let a: u32 = M::read(sk, off(&offs.sk_rcv_saddr))?;
        if a != 0 {
            key.addr[10] = 0xff;
            key.addr[11] = 0xff;
            key.addr[12..].copy_from_slice(&a.to_ne_bytes());
        }
    } else if family == AF_INET6 {
        key.addr = M::read16(sk, off(&offs.sk_v6_rcv_saddr))?;
    } else {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(v) = DNS_SOCKS.get_ptr_mut(&key)
        && map_value(v).tgid == tgid
    {
        return Ok(());
    }
    // SAFETY: a helper without arguments; the result is only read
    // through `bpf_probe_read_kernel`.
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = Probe::read(task, off(&offs.task_group_leader)).unwrap_or(0);
    let start_ns: u64 = if leader == 0 {
        0
    } else {
        Probe::read(leader, off(&offs.task_start_time)).unwrap_or(0)
    };
    announce(task, tgid, start_ns);
    let owner = DnsSockOwner {
        start_ns,
        tgid,
        _pad: 0,
    };
    let _ = DNS_SOCKS.insert(&key, &owner, 0);
    Ok(())
}

/// bpf_ringbuf_output flag: user space reads when it needs to.
const BPF_RB_NO_WAKEUP: u64 = 1;
const HEAD: usize = core::mem::size_of::<DnsProcess>();

/// Sends the calling process's identity to user space, once per process.
#[inline(always)]
fn announce(task: u64, tgid: u32, start_ns: u64) {
    if let Some(s) = DNS_PROCS.get_ptr_mut(&tgid)
        && *map_value(s) == start_ns
    {
        return;
    }
    let Some(rec) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let rec = map_value(rec);
    let offs = o();
    rec.head = DnsProcess {
        start_ns,
        // SAFETY: a helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid,
        env_len: 0,
        env_total: 0,
        flags: dns_flags::ENV_UNREAD,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let mm: u64 = Probe::read(task, off(&offs.task_mm)).unwrap_or(0);
    if mm != 0 {
        let start: u64 = Probe::read(mm, off(&offs.mm_env_start)).unwrap_or(0);
        let end: u64 = Probe::read(mm, off(&offs.mm_env_end)).unwrap_or(0);
        if start != 0 && end > start {
            let total = end - start;
            let len = if total > DNS_ENV_MAX as u64 {
                DNS_ENV_MAX as u64
            } else {
                total
            };
            rec.head.env_total = total as u32;
            // SAFETY: the destination is `rec.env`, at least `len` bytes
            // (`len` <= DNS_ENV_MAX); the helper checks the user address
            // and fails instead of faulting.
            let r = unsafe {
                bpf_probe_read_user(
                    rec.env.as_mut_ptr() as *mut c_void,
                    len as u32,
                    start as *const c_void,
                )
            };
            if r == 0 {
                rec.head.env_len = len as u32;
                rec.head.flags = 0;
            }
        }
    }
    if rec.head.flags & dns_flags::ENV_UNREAD != 0 {
        bump(dns_counter::ENV_UNREAD);
    }
    let mut size = HEAD as u64 + u64::from(rec.head.env_len);
    if size > core::mem::size_of::<DnsProcessRecord>() as u64 {
        size = core::mem::size_of::<DnsProcessRecord>() as u64;
    }
    // SAFETY: `rec` is a whole `DnsProcessRecord` of plain integers and
    // bytes, and `size` is at most its size.
    let bytes = unsafe {
        core::slice::from_raw_parts(rec as *const DnsProcessRecord as *const u8, size as usize)
    };
    if DNS_EVENTS.output::<[u8]>(bytes, BPF_RB_NO_WAKEUP).is_ok() {
        let _ = DNS_PROCS.insert(&tgid, &start_ns, 0);
    } else {
        bump(dns_counter::RINGBUF_FULL);
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub fn dns_sendmsg4(ctx: SockAddrContext) -> i32 {
    stash(&ctx);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn dns_sendmsg6(ctx: SockAddrContext) -> i32 {
    stash(&ctx);
    1
}

/// An unconnected UDP sendmsg with an address (these programs run inside
/// udp_sendmsg/udpv6_sendmsg only then): remembers for this thread that
/// this socket sends to a DNS port, for the length tracepoint that ends the
/// syscall. Any other destination leaves after the port test: an entry
/// left over (a send that failed before the tracepoint consumed it) names
/// a socket that did send DNS, so at worst that socket's owner is written
/// once more. Always allows the call.
#[inline(always)]
fn stash(ctx: &SockAddrContext) {
    // user_port holds the port in network byte order in its low 16 bits.
    // SAFETY: `sock_addr` is the program's `struct bpf_sock_addr`
    // context; the verifier checks the field access.
    let port = u16::from_be(unsafe { (*ctx.sock_addr).user_port } as u16);
    if !dns_port(port) {
        return;
    }
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    let cookie = socket_cookie(ctx.as_ptr());
    match DNS_STASH.get_ptr_mut(&tid) {
        Some(p) => *map_value(p) = cookie,
        None => {
            let _ = DNS_STASH.insert(&tid, &cookie, 0);
        }
    }
}
