//! Test traffic with exact, known sizes, for the end-to-end tests. Each
//! subcommand prints nothing on success and exits non-zero, saying why, on
//! any deviation (short read, wrong byte count), so a test can trust that
//! the bytes it asked for really crossed the network.
//!
//! ```text
//! flowscope-traffic tcp-server ADDR EXPECT REPLY [--reset]
//! flowscope-traffic tcp-client ADDR SEND EXPECT
//! flowscope-traffic tcp-hold ADDR CHUNK EVERY_MS COUNT
//! flowscope-traffic tcp-connect ADDR          (expects the connect to fail)
//! flowscope-traffic tcp-many-server ADDR COUNT  (accepts COUNT, reads each to its end)
//! flowscope-traffic tcp-many ADDR COUNT HOLD_MS (COUNT connections open at once)
//! flowscope-traffic udp-server ADDR COUNT REPLIES REPLY_SIZE [recv]
//!                   (with `recv`: reads with recv(), not asking for the
//!                   sender; REPLIES must then be 0)
//! flowscope-traffic udp-client ADDR COUNT SIZE REPLIES
//! flowscope-traffic udp-two ADDR1 COUNT1 SIZE1 ADDR2 COUNT2 SIZE2 REPLIES
//!                   (one unconnected socket to two peers, see [`udp_two`])
//! flowscope-traffic udp-gso ADDR SEGMENT SIZE  (one sendto of SIZE bytes from a
//!                   socket with the UDP_SEGMENT option: GSO cuts it into datagrams)
//! flowscope-traffic tcp-serve-each ADDR COUNT EXPECT REPLY  (COUNT connections, one after another)
//! flowscope-traffic tcp-client-each ADDR COUNT SEND  (prints each reply's size, one a line)
//! flowscope-traffic tcp-listen ADDR           (accepts and closes, forever)
//! flowscope-traffic tcp-server-twice ADDR UP1 DOWN1 UP2 DOWN2
//!                   (one connection, two rounds: reads UP1, writes DOWN1,
//!                   then reads UP2, writes DOWN2)
//! flowscope-traffic tcp-client-gated ADDR UP1 DOWN1 UP2 DOWN2
//!                   (the client of tcp-server-twice: after the first round
//!                   it prints `ready` and waits for a line on stdin before
//!                   the second, so a test can start the agent in between)
//! flowscope-traffic udp-spray FIRST_IP COUNT PORT (one datagram to each of
//!                                              COUNT consecutive addresses)
//! flowscope-traffic dns-query SERVER NAME  (one A query over UDP; prints the response code)
//! ```
//! A server serves one connection (or one UDP exchange) and exits.
//!
//! With `FLOWSCOPE_TRAFFIC_LINGER_MS` set, it waits that long before exiting.
//! With `FLOWSCOPE_TRAFFIC_HOLD` set, it prints `done` once its work
//! succeeded and then stays until its stdin is closed, so that a test
//! decides how long the process (and so its /proc entry: service name,
//! open sockets) exists; `dns-query` holds its socket open meanwhile. A
//! failure exits at once, with the reason on stderr.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

type Result<T> = std::result::Result<T, String>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i)
        .ok_or_else(|| format!("missing argument {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]))
}

fn read_exact_count(s: &mut TcpStream, n: u64) -> Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut got = 0u64;
    while got < n {
        let want = buf.len().min((n - got) as usize);
        let r = s
            .read(&mut buf[..want])
            .map_err(|e| format!("read after {got} bytes: {e}"))?;
        if r == 0 {
            return Err(format!("peer closed after {got} of {n} bytes"));
        }
        got += r as u64;
    }
    Ok(())
}

fn write_count(s: &mut TcpStream, n: u64) -> Result<()> {
    let buf = vec![b'f'; 65536];
    let mut left = n;
    while left > 0 {
        let chunk = buf.len().min(left as usize);
        s.write_all(&buf[..chunk])
            .map_err(|e| format!("write: {e}"))?;
        left -= chunk as u64;
    }
    Ok(())
}

/// Closes with a RST instead of a FIN (SO_LINGER with a zero timeout).
fn abort(s: TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("SO_LINGER: {}", std::io::Error::last_os_error()));
    }
    drop(s);
    Ok(())
}

fn tcp_server(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let expect: u64 = arg(args, 1, "EXPECT")?;
    let reply: u64 = arg(args, 2, "REPLY")?;
    let reset = args.get(3).is_some_and(|a| a == "--reset");
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    // Tell the test we listen: it waits for this line.
    println!("listening");
    std::io::stdout().flush().ok();
    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    read_exact_count(&mut s, expect)?;
    write_count(&mut s, reply)?;
    if reset {
        return abort(s);
    }
    s.shutdown(std::net::Shutdown::Write).ok();
    // Wait for the client's FIN so both sides close cleanly.
    expect_end(&mut s, "draining")
}

/// Reads `s` to its end (the peer's FIN): an error if the peer sent more
/// than the exchange expected. `what` names the read in the error.
fn expect_end(s: &mut TcpStream, what: &str) -> Result<()> {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("{what}: {e}"))?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("{} unexpected extra bytes", rest.len()))
    }
}

fn tcp_client(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let send: u64 = arg(args, 1, "SEND")?;
    let expect: u64 = arg(args, 2, "EXPECT")?;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    write_count(&mut s, send)?;
    read_exact_count(&mut s, expect)?;
    // The server closes first (or resets); read to its end.
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => Ok(()),
        Ok(_) => Err(format!("{} unexpected extra bytes", rest.len())),
        // A reset after all expected bytes is what --reset servers do.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(format!("reading the end: {e}")),
    }
}

/// The sizes of [`tcp_server_twice`] and [`tcp_client_gated`]: two
/// rounds of (up, down) bytes.
fn rounds(args: &[String]) -> Result<[(u64, u64); 2]> {
    Ok([
        (arg(args, 1, "UP1")?, arg(args, 2, "DOWN1")?),
        (arg(args, 3, "UP2")?, arg(args, 4, "DOWN2")?),
    ])
}

fn tcp_server_twice(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let rounds = rounds(args)?;
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().ok();
    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    for (up, down) in rounds {
        read_exact_count(&mut s, up)?;
        write_count(&mut s, down)?;
    }
    s.shutdown(std::net::Shutdown::Write).ok();
    expect_end(&mut s, "draining")
}

fn tcp_client_gated(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let [(up1, down1), (up2, down2)] = rounds(args)?;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    write_count(&mut s, up1)?;
    // The server read all of round one before it answered: once the answer
    // is read, neither end moves a byte until the gate opens.
    read_exact_count(&mut s, down1)?;
    println!("ready");
    std::io::stdout().flush().ok();
    let mut gate = String::new();
    std::io::stdin()
        .read_line(&mut gate)
        .map_err(|e| format!("reading the gate: {e}"))?;
    if gate.is_empty() {
        return Err("stdin closed before the gate opened".into());
    }
    write_count(&mut s, up2)?;
    read_exact_count(&mut s, down2)?;
    expect_end(&mut s, "reading the end")
}

fn tcp_hold(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let chunk: u64 = arg(args, 1, "CHUNK")?;
    let every: u64 = arg(args, 2, "EVERY_MS")?;
    let count: u64 = arg(args, 3, "COUNT")?;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    for _ in 0..count {
        write_count(&mut s, chunk)?;
        std::thread::sleep(Duration::from_millis(every));
    }
    s.shutdown(std::net::Shutdown::Write).ok();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("reading the end: {e}"))?;
    Ok(())
}

fn tcp_connect(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    match TcpStream::connect(addr) {
        Ok(_) => Err(format!(
            "connect {addr} succeeded; the test expected a failure"
        )),
        Err(e) => {
            println!("{:?}", e.kind());
            Ok(())
        }
    }
}

fn tcp_many_server(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let count: usize = arg(args, 1, "COUNT")?;
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().ok();
    let mut handles = Vec::new();
    for _ in 0..count {
        let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
        handles.push(std::thread::spawn(move || {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).map(|_| rest.len())
        }));
    }
    for h in handles {
        let n = h
            .join()
            .map_err(|_| "reader panicked")?
            .map_err(|e| format!("read: {e}"))?;
        if n != 100 {
            return Err(format!("a connection carried {n} bytes, not 100"));
        }
    }
    Ok(())
}

fn tcp_many(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let count: usize = arg(args, 1, "COUNT")?;
    let hold: u64 = arg(args, 2, "HOLD_MS")?;
    let mut conns = Vec::new();
    for _ in 0..count {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        write_count(&mut s, 100)?;
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(hold));
    Ok(())
}

fn tcp_serve_each(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let count: usize = arg(args, 1, "COUNT")?;
    let expect: u64 = arg(args, 2, "EXPECT")?;
    let reply: u64 = arg(args, 3, "REPLY")?;
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().ok();
    for i in 0..count {
        let (mut s, _) = l.accept().map_err(|e| format!("accept {i}: {e}"))?;
        read_exact_count(&mut s, expect)?;
        write_count(&mut s, reply)?;
        s.shutdown(std::net::Shutdown::Write).ok();
        expect_end(&mut s, &format!("draining {i}"))?;
    }
    Ok(())
}

/// COUNT connections one after another to ADDR (a Service address whose
/// backends answer different sizes): each sends SEND bytes and reads the
/// answer to its end; prints each answer's size.
fn tcp_client_each(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let count: usize = arg(args, 1, "COUNT")?;
    let send: u64 = arg(args, 2, "SEND")?;
    let mut out = String::new();
    for i in 0..count {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {i} {addr}: {e}"))?;
        write_count(&mut s, send)?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .map_err(|e| format!("reading answer {i}: {e}"))?;
        out.push_str(&format!("{}\n", got.len()));
    }
    print!("{out}");
    Ok(())
}

fn udp_server(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let count: u64 = arg(args, 1, "COUNT")?;
    let replies: u64 = arg(args, 2, "REPLIES")?;
    let size: usize = arg(args, 3, "REPLY_SIZE")?;
    let s = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().ok();
    let mut buf = vec![0u8; 65536];
    if args.get(4).map(String::as_str) == Some("recv") {
        if replies != 0 {
            return Err("with `recv` the sender is unknown: REPLIES must be 0".into());
        }
        for i in 0..count {
            s.recv(&mut buf).map_err(|e| format!("recv {i}: {e}"))?;
        }
        return Ok(());
    }
    let mut peer = None;
    for i in 0..count {
        let (_, from) = s
            .recv_from(&mut buf)
            .map_err(|e| format!("recv {i}: {e}"))?;
        peer = Some(from);
    }
    let peer = peer.ok_or("no datagram")?;
    let reply = vec![b'r'; size];
    for _ in 0..replies {
        s.send_to(&reply, peer).map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

fn udp_client(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let count: u64 = arg(args, 1, "COUNT")?;
    let size: usize = arg(args, 2, "SIZE")?;
    let replies: u64 = arg(args, 3, "REPLIES")?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| "bind address")?;
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let payload = vec![b'u'; size];
    for _ in 0..count {
        // Unconnected sendto: the peer is only in the packet.
        s.send_to(&payload, addr)
            .map_err(|e| format!("send: {e}"))?;
    }
    let mut buf = vec![0u8; 65536];
    for i in 0..replies {
        s.recv_from(&mut buf)
            .map_err(|e| format!("reply {i}: {e}"))?;
    }
    Ok(())
}

/// A socket address as the kernel takes it, and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// One unconnected socket (bound to the wildcard address of ADDR1's family;
/// an IPv4-mapped ADDR is sent to over IPv6) talking to two peers, the ways
/// an application can: to ADDR1, COUNT1 datagrams of SIZE1 with sendto(),
/// the first one corked in two parts (MSG_MORE, then the rest); to ADDR2,
/// COUNT2 datagrams of SIZE2 in one sendmmsg() call. Then REPLIES
/// datagrams read back with recvmmsg(), each with its sender's address.
fn udp_two(args: &[String]) -> Result<()> {
    let a1: SocketAddr = arg(args, 0, "ADDR1")?;
    let n1: usize = arg(args, 1, "COUNT1")?;
    let size1: usize = arg(args, 2, "SIZE1")?;
    let a2: SocketAddr = arg(args, 3, "ADDR2")?;
    let n2: usize = arg(args, 4, "COUNT2")?;
    let size2: usize = arg(args, 5, "SIZE2")?;
    let replies: usize = arg(args, 6, "REPLIES")?;
    if n1 == 0 || size1 < 2 {
        return Err("COUNT1 must be at least 1 and SIZE1 at least 2".into());
    }
    let bind = if a1.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let fd = s.as_raw_fd();
    let p1 = vec![b'1'; size1];
    let (sa1, len1) = sockaddr(a1);
    let send = |part: &[u8], flags: libc::c_int| -> Result<()> {
        // SAFETY: buffer and address are valid for the call.
        let n = unsafe {
            libc::sendto(
                fd,
                part.as_ptr().cast(),
                part.len(),
                flags,
                &sa1 as *const _ as *const libc::sockaddr,
                len1,
            )
        };
        if n != part.len() as isize {
            return Err(format!("sendto: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    // Corked: one datagram of SIZE1 from two calls.
    let half = size1 / 2;
    send(&p1[..half], libc::MSG_MORE)?;
    send(&p1[half..], 0)?;
    for _ in 1..n1 {
        send(&p1, 0)?;
    }
    let p2 = vec![b'2'; size2];
    let (mut sa2, len2) = sockaddr(a2);
    let mut iov: Vec<libc::iovec> = (0..n2)
        .map(|_| libc::iovec {
            iov_base: p2.as_ptr() as *mut libc::c_void,
            iov_len: size2,
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr; the pointers set below outlive
    // the call.
    let mut msgs: Vec<libc::mmsghdr> = (0..n2).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_name = &mut sa2 as *mut _ as *mut libc::c_void;
        m.msg_hdr.msg_namelen = len2;
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    if n2 > 0 {
        // SAFETY: msgs holds n2 initialised headers.
        let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n2 as libc::c_uint, 0) };
        if sent != n2 as libc::c_int {
            return Err(format!(
                "sendmmsg sent {sent} of {n2}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let mut got = 0;
    let mut bufs = vec![[0u8; 2048]; replies.max(1)];
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut names: Vec<libc::sockaddr_storage> = (0..replies.max(1))
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    while got < replies {
        let want = replies - got;
        let mut iov: Vec<libc::iovec> = bufs[..want]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: as for sendmmsg.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..want).map(|_| unsafe { std::mem::zeroed() }).collect();
        for ((m, v), name) in msgs.iter_mut().zip(iov.iter_mut()).zip(names.iter_mut()) {
            m.msg_hdr.msg_name = name as *mut _ as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs holds `want` initialised headers; MSG_WAITFORONE
        // blocks (up to the read timeout) for the first datagram only.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return Err(format!(
                "recvmmsg after {got} of {replies} replies: {}",
                std::io::Error::last_os_error()
            ));
        }
        got += n as usize;
    }
    Ok(())
}

/// `UDP_SEGMENT` (include/uapi/linux/udp.h; the libc crate names it only
/// for uClibc).
const UDP_SEGMENT: libc::c_int = 103;

/// One `sendto` of SIZE bytes to ADDR from an unconnected socket with the
/// UDP_SEGMENT option set to SEGMENT: the kernel (GSO) sends it as
/// SIZE / SEGMENT datagrams, rounded up, the last one shorter.
fn udp_gso(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let segment: libc::c_int = arg(args, 1, "SEGMENT")?;
    let size: usize = arg(args, 2, "SIZE")?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    // SAFETY: a valid socket and an int option value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            &segment as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(format!(
            "setsockopt UDP_SEGMENT: {}",
            std::io::Error::last_os_error()
        ));
    }
    let n = s
        .send_to(&vec![b'g'; size], addr)
        .map_err(|e| format!("send: {e}"))?;
    if n != size {
        return Err(format!("sent {n} of {size} bytes"));
    }
    Ok(())
}

/// Set once [`hold`] ran, so that it holds once.
static HELD: AtomicBool = AtomicBool::new(false);

/// With `FLOWSCOPE_TRAFFIC_HOLD` set: says `done` on stdout and waits until
/// stdin ends (the test closes it, or dies).
fn hold() {
    if std::env::var_os("FLOWSCOPE_TRAFFIC_HOLD").is_none() || HELD.swap(true, Ordering::SeqCst) {
        return;
    }
    println!("done");
    std::io::stdout().flush().ok();
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).ok();
}

/// The response code names of RFC 1035 / 2136 a test meets.
fn rcode_name(code: u8) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// One DNS query (type A, class IN, recursion desired) over UDP to
/// `SERVER` port 53; prints the answer's response code. The socket stays
/// open while the process holds (see [`hold`]), so the agent can find its
/// owner however late it reads the packet.
fn dns_query(args: &[String]) -> Result<()> {
    let server: std::net::IpAddr = arg(args, 0, "SERVER")?;
    let name: String = arg(args, 1, "NAME")?;
    let id = (std::process::id() & 0xffff) as u16;
    // Header: id, flags (RD), 1 question, no answer/authority/additional.
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("bad NAME {name:?}: empty or long label"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    s.connect((server, 53))
        .map_err(|e| format!("connect {server}:53: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.send(&q).map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 512];
    let n = s
        .recv(&mut buf)
        .map_err(|e| format!("no answer from {server}:53: {e}"))?;
    if n < 12 || buf[..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 {
        return Err(format!("not an answer to the query: {n} bytes"));
    }
    println!("{}", rcode_name(buf[3] & 0x0f));
    hold();
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let r = run(&args, rest);
    if r.is_ok() {
        hold();
    }
    // FLOWSCOPE_TRAFFIC_LINGER_MS keeps the process alive after its work,
    // for tests of what only /proc of a running process tells (environment).
    if let Some(ms) = std::env::var("FLOWSCOPE_TRAFFIC_LINGER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowscope-traffic: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A server for path probes: accepts every connection and closes it,
/// until killed.
fn tcp_listen(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR")?;
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    loop {
        match l.accept() {
            Ok((s, _)) => drop(s),
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// One datagram to each of COUNT consecutive IPv4 addresses from FIRST_IP:
/// COUNT distinct client flows at once.
fn udp_spray(args: &[String]) -> Result<()> {
    let first: std::net::Ipv4Addr = arg(args, 0, "FIRST_IP")?;
    let count: u32 = arg(args, 1, "COUNT")?;
    let port: u16 = arg(args, 2, "PORT")?;
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    for i in 0..count {
        let ip = std::net::Ipv4Addr::from(u32::from(first) + i);
        // An unreachable answer for an earlier datagram can surface as an
        // error on this send; the datagram itself still goes out or is
        // reported again, so it is retried once.
        if s.send_to(b"x", (ip, port)).is_err() {
            let _ = s.send_to(b"x", (ip, port));
        }
    }
    Ok(())
}

fn run(args: &[String], rest: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("tcp-server") => tcp_server(rest),
        Some("tcp-client") => tcp_client(rest),
        Some("tcp-hold") => tcp_hold(rest),
        Some("tcp-connect") => tcp_connect(rest),
        Some("tcp-many-server") => tcp_many_server(rest),
        Some("tcp-many") => tcp_many(rest),
        Some("udp-server") => udp_server(rest),
        Some("udp-client") => udp_client(rest),
        Some("udp-two") => udp_two(rest),
        Some("udp-gso") => udp_gso(rest),
        Some("tcp-serve-each") => tcp_serve_each(rest),
        Some("tcp-client-each") => tcp_client_each(rest),
        Some("tcp-listen") => tcp_listen(rest),
        Some("tcp-server-twice") => tcp_server_twice(rest),
        Some("tcp-client-gated") => tcp_client_gated(rest),
        Some("udp-spray") => udp_spray(rest),
        Some("dns-query") => dns_query(rest),
        _ => Err("usage: see the doc comment of integration/src/bin/flowscope-traffic.rs".into()),
    }
}
