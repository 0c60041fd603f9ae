//! The agent's HTTP/1.1 servers (the `ui` pages, the `prometheus` pull
//! endpoint, `/healthz`): one accept loop with the limits every one of them
//! needs, and the check of who is asking ([`HostCheck`]).
//!
//! # Limits
//! - **Connections**: at most [`Limits::max_connections`] open at once. A
//!   connection beyond that is answered `503` with a line saying why and
//!   closed at once, so it holds no file descriptor the exporters and the
//!   eBPF loader need.
//! - **Header read and idle time**: hyper's header-read timer starts when it
//!   waits for a request's head, which is also the wait between two
//!   requests on a kept-alive connection; a client that sends half a
//!   request, or nothing, is closed after [`Limits::header_read_timeout`].
//! - **Lifetime**: a connection is closed (gracefully, after the request in
//!   flight) after [`Limits::max_lifetime`], so a client that never reads
//!   its answer cannot hold a slot forever.
//!
//! Every refusal is a typed [`ServerRefused`] event (self-telemetry
//! `flowscope.server.refused`).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flowscope_model::internal_events::{RefuseReason, ServerKind, ServerRefused};
use flowscope_model::telemetry::Telemetry;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// (status, content type, body) for a request path.
pub type Handler = Arc<dyn Fn(&str) -> (StatusCode, &'static str, String) + Send + Sync>;

/// Binds `addr` now (so a taken port is an error at start, not later).
pub fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// What one server allows each client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time to send a request's head, and to start the next one on a
    /// kept-alive connection.
    pub header_read_timeout: Duration,
    /// Longest life of one connection.
    pub max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(300),
        }
    }
}

/// Which `Host` (and `Origin`) a server answers: the defence against DNS
/// rebinding. A page on `attacker.example` whose name is made to resolve
/// to 127.0.0.1 reaches a loopback server with `Host: attacker.example`;
/// the browser treats it as the attacker's own origin, so without this
/// check that page could read every answer.
///
/// Accepted hosts (the port is not compared, as a proxy may change it):
/// - an IP literal (`127.0.0.1`, `[::1]`, `198.18.0.1`): a name that can
///   be rebound is never an IP literal;
/// - `localhost`, which browsers resolve to loopback themselves;
/// - the endpoint's own host, and every `allowed_hosts` entry (exact,
///   case-insensitive; an entry with a port must match the port too).
///
/// `Origin`, when sent, must be `http://` or `https://` with an accepted
/// host; `Origin: null` (sandboxed frames, `file:` pages) is refused.
#[derive(Clone, Debug, Default)]
pub struct HostCheck {
    /// Lower-case names, `name` or `name:port`.
    allowed: Vec<String>,
}

impl HostCheck {
    /// Accepts the endpoint's host and `allowed_hosts`.
    pub fn new(endpoint: &str, allowed_hosts: &[String]) -> Self {
        let mut allowed: Vec<String> = allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some((host, _)) = split_host_port(endpoint) {
            allowed.push(host.to_ascii_lowercase());
        }
        HostCheck { allowed }
    }

    /// Whether a `Host` value (`name[:port]`) is one this server answers.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = split_host_port(&host) else {
            return false;
        };
        if name.parse::<IpAddr>().is_ok() || name == "localhost" {
            return true;
        }
        self.allowed.iter().any(|a| match split_host_port(a) {
            Some((n, Some(p))) => n == name && Some(p) == port,
            Some((n, None)) => n == name,
            None => false,
        })
    }

    /// Checks a request's headers: `None` when it may be answered, else
    /// why not.
    pub fn check(&self, headers: &http::HeaderMap) -> Option<RefuseReason> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host_ok = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h.to_str().is_ok_and(|h| self.host_allowed(h)),
            // None, or two Host headers (ambiguous: refused).
            _ => false,
        };
        if !host_ok {
            return Some(RefuseReason::Host);
        }
        for origin in headers.get_all(header::ORIGIN) {
            let ok = origin.to_str().ok().and_then(|o| {
                o.strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"))
            });
            if !ok.is_some_and(|rest| !rest.contains('/') && self.host_allowed(rest)) {
                return Some(RefuseReason::Origin);
            }
        }
        None
    }
}

/// `name[:port]` or `[v6][:port]` -> (name without brackets, port).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        return match after {
            "" => Some((name, None)),
            p => Some((name, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match s.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((name, _)) if name.contains(':') => Some((s, None)),
        Some((name, p)) => Some((name, Some(p.parse().ok()?))),
        None if s.is_empty() => None,
        None => Some((s, None)),
    }
}

/// The 403 every server answers a refused `Host` or `Origin` with.
pub fn forbidden_body(reason: RefuseReason) -> &'static str {
    match reason {
        RefuseReason::Origin => {
            "forbidden: the Origin header names a site this server does not serve\n"
        }
        _ => {
            "forbidden: the Host header is not this server's address, localhost or an \
             allowed_hosts entry\n"
        }
    }
}

/// One server: its name for self-telemetry, its limits, and the telemetry
/// its refusals are counted on.
#[derive(Clone)]
pub struct Server {
    pub kind: ServerKind,
    pub limits: Limits,
    pub telemetry: Telemetry,
}

impl Server {
    fn refused(&self, reason: RefuseReason) {
        self.telemetry.emit(ServerRefused {
            server: self.kind,
            reason,
            count: 1,
        });
    }

    /// Accepts connections on `listener` and answers each request with
    /// the future `answer` makes of it, within [`Limits`], until the task
    /// is dropped.
    pub async fn run<F, Fut>(self, listener: TcpListener, answer: F)
    where
        F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        self.run_tls(listener, None, answer).await
    }

    /// [`Server::run`], over TLS when `tls` is given: the handshake must
    /// finish within the header-read timeout (a client that connects and
    /// says nothing is closed and counted as `timeout`), and a failed one
    /// (a plain-HTTP request to the HTTPS port, say) closes the connection
    /// and is counted as `tls_handshake`.
    pub async fn run_tls<F, Fut>(
        self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        answer: F,
    ) where
        F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let answer = Arc::new(answer);
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        loop {
            let (mut stream, peer): (_, SocketAddr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::warn!(server = self.kind.as_str(), "accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                self.refused(RefuseReason::Connections);
                if tls.is_some() {
                    // A plain-text 503 means nothing inside TLS: just close.
                    continue;
                }
                tokio::spawn(async move {
                    let body = "too many connections to this server: try again later\n";
                    let msg = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
                         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        stream.write_all(msg.as_bytes()),
                    )
                    .await;
                });
                continue;
            };
            let answer = answer.clone();
            let server = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let resp = answer(req);
                    async move { Ok::<_, Infallible>(resp.await) }
                });
                match tls {
                    None => server.connection(stream, peer, svc).await,
                    Some(acceptor) => {
                        let limit = server.limits.header_read_timeout;
                        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => server.connection(stream, peer, svc).await,
                            Ok(Err(e)) => {
                                server.refused(RefuseReason::Tls);
                                tracing::debug!(%peer, server = server.kind.as_str(), "TLS handshake failed: {e}");
                            }
                            Err(_) => server.refused(RefuseReason::Timeout),
                        }
                    }
                }
            });
        }
    }

    /// Serves one accepted connection (plain or TLS) within the limits.
    async fn connection<I, S>(&self, stream: I, peer: SocketAddr, svc: S)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Full<Bytes>>,
    {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = tokio::time::sleep(self.limits.max_lifetime) => {
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            if e.is_timeout() {
                self.refused(RefuseReason::Timeout);
            }
            tracing::debug!(%peer, server = self.kind.as_str(), "HTTP connection ended: {e}");
        }
    }
}

/// Serves `handler` on `listener` until the task is dropped, answering only
/// the hosts `hosts` accepts.
pub async fn serve(listener: TcpListener, handler: Handler, hosts: HostCheck, server: Server) {
    let s = server.clone();
    server
        .run(listener, move |req| {
            let (status, ctype, body) = match hosts.check(req.headers()) {
                Some(reason) => {
                    s.refused(reason);
                    (
                        StatusCode::FORBIDDEN,
                        "text/plain",
                        forbidden_body(reason).to_string(),
                    )
                }
                None => handler(req.uri().path()),
            };
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            if let Ok(v) = http::HeaderValue::from_str(ctype) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            std::future::ready(resp)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn rebound_names_are_refused() {
        let c = HostCheck::new("127.0.0.1:8686", &["ui.example.com".into()]);
        for ok in [
            "127.0.0.1:8686",
            "127.0.0.1",
            "localhost:8686",
            "LOCALHOST",
            "[::1]:8686",
            "ui.example.com",
            "UI.example.com:443",
        ] {
            assert_eq!(c.check(&headers(&[("host", ok)])), None, "{ok}");
        }
        for bad in [
            "attacker.example:8686",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8686",
            "",
            "ui.example.com:notaport",
        ] {
            assert_eq!(
                c.check(&headers(&[("host", bad)])),
                Some(RefuseReason::Host),
                "{bad}"
            );
        }
        assert_eq!(c.check(&headers(&[])), Some(RefuseReason::Host));
        assert_eq!(
            c.check(&headers(&[("host", "127.0.0.1"), ("host", "evil.example")])),
            Some(RefuseReason::Host)
        );
    }

    #[test]
    fn origin_when_sent_must_be_served_here() {
        let c = HostCheck::new("0.0.0.0:8686", &["ui.example.com:8443".into()]);
        let h = |o: &str| headers(&[("host", "127.0.0.1:8686"), ("origin", o)]);
        assert_eq!(c.check(&h("http://127.0.0.1:8686")), None);
        assert_eq!(c.check(&h("https://ui.example.com:8443")), None);
        for bad in [
            "https://attacker.example",
            "https://ui.example.com",
            "null",
            "file://",
            "http://127.0.0.1:8686/x",
        ] {
            assert_eq!(c.check(&h(bad)), Some(RefuseReason::Origin), "{bad}");
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a:1"), Some(("a", Some(1))));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", Some(80))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("::1"), Some(("::1", None)));
        assert_eq!(split_host_port("a:x"), None);
        assert_eq!(split_host_port("[::1]x"), None);
    }
}
