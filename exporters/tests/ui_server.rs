//! The `ui` server over real sockets: a rebound `Host` or a foreign
//! `Origin` is refused, half-sent requests and idle connections are closed,
//! and connections past the cap are answered 503; each refusal is counted
//! in `flowscope.server.refused`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use flowscope_exporters::server::{Limits, Server};
use flowscope_exporters::ui::{Ui, serve};
use flowscope_model::internal_events::ServerKind;
use flowscope_model::names::attr;
use flowscope_model::telemetry::SERVER_REFUSED;
use flowscope_model::{Attrs, Telemetry};
use flowscope_otel_config::exporters::{ServerTlsConfig, UiExporterConfig};

/// Sends `request` and reads the whole answer (status line, body).
fn ask(port: u16, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn get(port: u16, host: &str, extra: &str) -> (String, String) {
    ask(
        port,
        &format!("GET /api/map HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

fn refused(t: &Telemetry, reason: &str) -> u64 {
    t.total_matching(
        SERVER_REFUSED,
        &Attrs::new()
            .with(attr::SOURCE, ServerKind::Ui.as_str())
            .with(attr::REASON, reason),
    )
}

/// Starts a `ui` server on a free loopback port with `limits`.
fn start(rt: &tokio::runtime::Runtime, limits: Limits, t: &Telemetry) -> u16 {
    let port = free_port();
    let cfg = UiExporterConfig {
        endpoint: format!("127.0.0.1:{port}"),
        allowed_hosts: vec!["flowscope.internal".into()],
        ..Default::default()
    };
    let ui = Ui::new(&cfg, &|_| None).unwrap().with_telemetry(t.clone());
    let server = Server {
        kind: ServerKind::Ui,
        limits,
        telemetry: t.clone(),
    };
    let _guard = rt.enter();
    let listener = ui.bind().unwrap();
    rt.spawn(serve(listener, Arc::new(ui), server));
    port
}

/// Polls `f` every 20 ms until it holds, for at most `within`.
fn until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn dns_rebinding_is_refused_and_counted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Telemetry::new();
    let port = start(&rt, Limits::default(), &t);

    let (status, body) = get(port, &format!("attacker.example:{port}"), "");
    assert_eq!(status, "HTTP/1.1 403 Forbidden", "{body}");
    assert!(body.contains("\"parameter\":\"host\""), "{body}");
    let (status, _) = get(
        port,
        &format!("127.0.0.1:{port}"),
        "Origin: https://attacker.example\r\n",
    );
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    // HTTP/1.0 without a Host header.
    let (status, _) = ask(port, "GET /api/map HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 403 Forbidden");

    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "flowscope.internal".to_string(),
    ] {
        let (status, body) = get(port, &host, "");
        assert_eq!(status, "HTTP/1.1 200 OK", "{host}: {body}");
    }
    let (status, _) = get(
        port,
        &format!("127.0.0.1:{port}"),
        &format!("Origin: http://127.0.0.1:{port}\r\n"),
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(refused(&t, "forbidden_host"), 2);
    assert_eq!(refused(&t, "forbidden_origin"), 1);
    // /api/status shows them: the one place a standalone `flowscope ui`
    // (fleet mode, no pipeline) reports its refusals.
    let (status, body) = ask(
        port,
        &format!("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        j["refused"],
        serde_json::json!({"forbidden_host": 2, "forbidden_origin": 1}),
        "{body}"
    );
}

#[test]
fn half_sent_requests_time_out_and_connections_are_capped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Telemetry::new();
    let limits = Limits {
        max_connections: 20,
        header_read_timeout: Duration::from_secs(1),
        max_lifetime: Duration::from_secs(60),
    };
    let port = start(&rt, limits, &t);

    // 20 clients that send half a request and stop: they hold every slot.
    let mut half: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /api/map HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            s
        })
        .collect();
    // Once the server has taken all 20, the 21st is answered 503.
    assert!(
        until(Duration::from_secs(5), || {
            let (status, _) = get(port, "127.0.0.1", "");
            status == "HTTP/1.1 503 Service Unavailable"
        }),
        "the 21st connection was not refused"
    );
    assert!(refused(&t, "connection_limit") >= 1);

    // Each half request is closed by the server (EOF) after the header
    // read timeout, not held.
    for s in &mut half {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert!(
        until(Duration::from_secs(5), || refused(&t, "timeout") == 20),
        "timeouts counted: {}",
        refused(&t, "timeout")
    );
    // The slots are free again.
    let (status, body) = get(port, "127.0.0.1", "");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");

    // An idle kept-alive connection is closed after the same time.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /api/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "idle connection held {:?}",
        started.elapsed()
    );
}

/// One request over TLS, trusting the test CA; the whole answer as text
/// (what arrived before the server closed).
async fn ask_tls(port: u16, client: Arc<rustls::ClientConfig>, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the UI");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn https_serves_the_pages_with_a_secure_cookie_and_refuses_plain_http() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Telemetry::new();
    let pki = common::pki::Pki::new();
    std::fs::write(pki.path("server.pem"), &pki.server.0).unwrap();
    std::fs::write(pki.path("server.key"), &pki.server.1).unwrap();
    let port = free_port();
    let mut cfg = UiExporterConfig {
        endpoint: format!("127.0.0.1:{port}"),
        tls: Some(ServerTlsConfig {
            cert_file: Some(pki.path("server.pem")),
            key_file: Some(pki.path("server.key")),
        }),
        ..Default::default()
    };
    cfg.auth.token = Some("s3cret".into());
    let ui = Ui::new(&cfg, &|_| None).unwrap();
    assert_eq!(ui.scheme(), "https");
    let server = Server {
        kind: ServerKind::Ui,
        limits: Limits::default(),
        telemetry: t.clone(),
    };
    {
        let _guard = rt.enter();
        let listener = ui.bind().unwrap();
        rt.spawn(serve(listener, Arc::new(ui), server));
    }
    let client =
        Arc::new(flowscope_exporters::tls::client_config(&pki.client(true, false)).unwrap());

    // The token exchanged for a session: the cookie is `Secure`.
    let login = rt.block_on(ask_tls(
        port,
        client.clone(),
        "GET /?token=s3cret HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ));
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie in {login}"));
    assert!(
        cookie.ends_with("HttpOnly; SameSite=Strict; Secure"),
        "{cookie}"
    );
    // The API over HTTPS with the token.
    let api = rt.block_on(ask_tls(
        port,
        client,
        "GET /api/map HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\n\
         Connection: close\r\n\r\n",
    ));
    assert!(api.starts_with("HTTP/1.1 200"), "{api}");

    // Plain HTTP to the HTTPS port: no HTTP answer (only rustls' TLS
    // alert), the connection closed and counted.
    assert_eq!(refused(&t, "tls_handshake"), 0);
    let (status, _) = get(port, "127.0.0.1", "");
    assert!(
        !status.contains("HTTP/"),
        "plain HTTP got an HTTP answer: {status:?}"
    );
    assert!(until(Duration::from_secs(5), || refused(
        &t,
        "tls_handshake"
    ) == 1));

    // A client that connects and never starts the handshake is closed by
    // the header-read timeout.
    assert_eq!(refused(&t, "timeout"), 0);
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    assert!(buf.is_empty());
    assert!(until(Duration::from_secs(5), || refused(&t, "timeout") == 1));
}
