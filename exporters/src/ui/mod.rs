//! `ui`: the Network Map, Network Analytics and Network Health pages,
//! served by the agent itself from the last hour of metrics it keeps in
//! memory ([`store`]), with the JSON API the pages read ([`api`]).
//!
//! Read-only. Every request is a `GET` (or `HEAD`); the pages are static
//! files built into the binary and fetch all data from `/api/`, inserting it
//! as text, never as markup; a strict Content-Security-Policy forbids inline
//! scripts and styles. Bound to loopback by default; bound to any other
//! address it refuses to start without a bearer token, and then checks the
//! token on every request. Every request must name this server in `Host`
//! (and in `Origin`, when a browser sends one): an IP literal, `localhost`,
//! the endpoint's host or an `allowed_hosts` entry, so that a page whose
//! DNS name was rebound to loopback cannot read the API
//! ([`crate::server::HostCheck`]). Connections are capped and time out
//! ([`crate::server::Limits`]).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use flowscope_model::MetricBatch;
use flowscope_model::internal_events::RefuseReason;
use flowscope_otel_config::exporters::UiExporterConfig;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::server::{HostCheck, Server};
use crate::{Outcome, Sink};

pub mod api;
mod assets;
pub mod baseline;
pub mod churn;
pub mod drops;
pub mod fleet;
pub mod paths;
pub mod query;
pub mod store;

pub use store::Store;

/// Environment variable read for the token when `auth.token` is unset.
pub const TOKEN_ENV: &str = "FLOWSCOPE_UI_TOKEN";
/// The cookie the page sets after `/?token=...`: a random session id,
/// never the token itself.
pub const COOKIE: &str = "flowscope_ui_session";
/// Sessions held at once; the one closest to expiry goes first.
const MAX_SESSIONS: usize = 1024;
/// `error.type` of points dropped at the series limit.
pub const SERIES_LIMIT: &str = "series_limit";

/// The Content-Security-Policy of every response: only this origin's own
/// scripts, styles and API; no inline code, no frames, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// Why the `ui` exporter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("endpoint `{endpoint}` is not an address:port")]
    Endpoint {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "endpoint `{endpoint}` is not a loopback address: set auth.token (or {TOKEN_ENV}) so that \
         every request must carry it"
    )]
    NoToken { endpoint: String },
    #[error("full_resolution ({full:?}) is longer than retention ({retention:?})")]
    Resolution {
        full: std::time::Duration,
        retention: std::time::Duration,
    },
    #[error("listening on `{endpoint}`")]
    Listen {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ui: HTTPS settings")]
    Tls(#[source] crate::tls::TlsError),
}

/// Everything a request needs.
pub struct Ui {
    pub store: Arc<Mutex<Store>>,
    pub config: UiExporterConfig,
    token: Option<String>,
    hosts: HostCheck,
    pages: assets::Pages,
    /// Fleet mode: the pages read this storage instead of `store`.
    pub fleet: Option<fleet::Fleet>,
    /// API queries running now.
    queries: AtomicUsize,
    /// Session id -> expiry, for browsers logged in with `/?token=`.
    sessions: Mutex<HashMap<String, Instant>>,
    /// HTTPS (`tls`): the acceptor the server hands each connection to.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where the server counts its refusals; `/api/status` reports them
    /// (the only place a standalone `flowscope ui` shows them).
    telemetry: Option<flowscope_model::Telemetry>,
}

/// One of the `max_concurrent_queries` places, given back on drop.
struct QuerySlot<'a>(&'a AtomicUsize);

impl<'a> QuerySlot<'a> {
    fn take(running: &'a AtomicUsize, max: usize) -> Option<Self> {
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| QuerySlot(running))
    }
}

impl Drop for QuerySlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ui {
    /// Checks `config` (token on a non-loopback endpoint, resolution) and
    /// makes the empty store. `env` gives the token variable.
    pub fn new(
        config: &UiExporterConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, UiError> {
        if config.full_resolution > config.retention {
            return Err(UiError::Resolution {
                full: config.full_resolution,
                retention: config.retention,
            });
        }
        let token = config
            .auth
            .token
            .clone()
            .or_else(|| env(TOKEN_ENV))
            .filter(|t| !t.is_empty());
        let addrs: Vec<SocketAddr> = config
            .endpoint
            .to_socket_addrs()
            .map_err(|source| UiError::Endpoint {
                endpoint: config.endpoint.clone(),
                source,
            })?
            .collect();
        if token.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(UiError::NoToken {
                endpoint: config.endpoint.clone(),
            });
        }
        let tls = match &config.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                crate::tls::server_config(t).map_err(UiError::Tls)?,
            ))),
            None => None,
        };
        Ok(Ui {
            store: Arc::new(Mutex::new(Store::new(
                duration_ns(config.retention),
                duration_ns(config.full_resolution),
                config.max_series,
            ))),
            config: config.clone(),
            token,
            hosts: HostCheck::new(&config.endpoint, &config.allowed_hosts),
            pages: assets::Pages::new(),
            fleet: None,
            queries: AtomicUsize::new(0),
            sessions: Mutex::new(HashMap::new()),
            tls,
            telemetry: None,
        })
    }

    /// The telemetry the server counts its refusals in (the same handle
    /// as the [`crate::server::Server`]'s), for `/api/status`.
    pub fn with_telemetry(mut self, telemetry: flowscope_model::Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Requests and connections refused so far, by `flowscope.reason`
    /// (only reasons with any).
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        use flowscope_model::internal_events::{RefuseReason, ServerKind};
        use flowscope_model::names::attr;
        let Some(t) = &self.telemetry else {
            return Vec::new();
        };
        RefuseReason::ALL
            .iter()
            .map(|r| {
                let at = flowscope_model::Attrs::new()
                    .with(attr::SOURCE, ServerKind::Ui.as_str())
                    .with(attr::REASON, r.as_str());
                (
                    r.as_str(),
                    t.total_matching(flowscope_model::telemetry::SERVER_REFUSED, &at),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// `https` when the pages are served over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The same pages over a Prometheus query API ([`fleet`]).
    pub fn with_fleet(mut self, fleet: fleet::Fleet) -> Self {
        self.fleet = Some(fleet);
        self.pages = assets::Pages::fleet();
        self
    }

    /// Binds the endpoint now, so a taken port fails the start.
    pub fn bind(&self) -> Result<TcpListener, UiError> {
        crate::server::bind(&self.config.endpoint).map_err(|source| UiError::Listen {
            endpoint: self.config.endpoint.clone(),
            source,
        })
    }

    /// Whether the request carries the token (always true without one).
    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| same(t.trim(), token));
        let now = Instant::now();
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && sessions.get(v).is_some_and(|exp| *exp > now));
        bearer || cookie
    }

    /// A new session: 32 random bytes from the system's generator (ring),
    /// valid for [`COOKIE_MAX_AGE_SECONDS`].
    fn new_session(&self) -> Option<String> {
        use ring::rand::SecureRandom;
        let mut id = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut id).ok()?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, exp| *exp > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            now + std::time::Duration::from_secs(COOKIE_MAX_AGE_SECONDS),
        );
        Some(id)
    }

    /// Answers one request.
    pub fn handle(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Reply {
        if let Some(reason) = self.hosts.check(headers) {
            let mut r = Reply::error(
                StatusCode::FORBIDDEN,
                match reason {
                    RefuseReason::Origin => "origin",
                    _ => "host",
                },
                crate::server::forbidden_body(reason).trim_end(),
            );
            r.refused = Some(reason);
            return r;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "the UI is read-only: only GET and HEAD",
            );
        }
        let path = uri.path();
        let params = api::Params::parse(uri.query().unwrap_or(""));
        // `/?token=...` logs a browser in: it gets a session cookie (never
        // the token) and a redirect to a URL without the token.
        if path == "/"
            && let Some(t) = params.get("token")
            && let Some(token) = &self.token
        {
            if !same(t, token) {
                return Reply::unauthorized();
            }
            let Some(session) = self.new_session() else {
                return Reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "token",
                    "the system's random generator failed: no session could be made",
                );
            };
            let mut r = Reply::redirect("/map");
            // Over HTTPS the browser must never send it in clear text.
            let secure = if self.tls.is_some() { "; Secure" } else { "" };
            r.cookie = Some(format!(
                "{COOKIE}={session}; Path=/; Max-Age={COOKIE_MAX_AGE_SECONDS}; HttpOnly; SameSite=Strict{secure}"
            ));
            return r;
        }
        if !self.authorized(headers) {
            return Reply::unauthorized();
        }
        if path == "/" {
            return Reply::redirect("/map");
        }
        if let Some(rest) = path.strip_prefix("/api/") {
            let Some(_slot) = QuerySlot::take(&self.queries, self.config.max_concurrent_queries)
            else {
                let mut r = Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "path",
                    &format!(
                        "{} queries are running, the most this UI answers at once \
                         (max_concurrent_queries): try again",
                        self.config.max_concurrent_queries
                    ),
                );
                r.refused = Some(RefuseReason::Busy);
                return r;
            };
            return api::answer(self, rest, &params);
        }
        let found = match self.pages.get(path) {
            Some(page) => Some((assets::HTML, page)),
            None => assets::get(path).map(|(ctype, body)| (ctype, Bytes::from_static(body))),
        };
        match found {
            Some((ctype, body)) => Reply {
                status: StatusCode::OK,
                ctype,
                body,
                location: None,
                cookie: None,
                cache: true,
                refused: None,
            },
            None => Reply::error(StatusCode::NOT_FOUND, "path", "no such page or API"),
        }
    }
}

fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long the login cookie lasts: a working day.
pub const COOKIE_MAX_AGE_SECONDS: u64 = 12 * 3600;

/// Compares in constant time (`subtle`): no timing hint about how much of
/// a guessed token was right.
fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A response before it is turned into HTTP.
pub struct Reply {
    pub status: StatusCode,
    pub ctype: &'static str,
    pub body: Bytes,
    location: Option<&'static str>,
    cookie: Option<String>,
    cache: bool,
    /// Why the request was refused, for self-telemetry.
    refused: Option<RefuseReason>,
}

impl Reply {
    pub fn json(status: StatusCode, body: String) -> Self {
        Reply {
            status,
            ctype: "application/json",
            body: Bytes::from(body),
            location: None,
            cookie: None,
            cache: false,
            refused: None,
        }
    }

    /// `{"error": message, "parameter": parameter}`.
    pub fn error(status: StatusCode, parameter: &str, message: &str) -> Self {
        let body = serde_json::json!({"error": message, "parameter": parameter});
        Reply::json(status, body.to_string())
    }

    fn unauthorized() -> Self {
        let mut r = Reply::error(
            StatusCode::UNAUTHORIZED,
            "authorization",
            "a bearer token is required (Authorization: Bearer <token>, or open /?token=<token>)",
        );
        r.refused = Some(RefuseReason::Token);
        r
    }

    fn redirect(to: &'static str) -> Self {
        Reply {
            status: StatusCode::SEE_OTHER,
            ctype: "text/plain",
            body: Bytes::new(),
            location: Some(to),
            cookie: None,
            cache: false,
            refused: None,
        }
    }

    fn into_response(self, head: bool) -> Response<Full<Bytes>> {
        let body = if head { Bytes::new() } else { self.body };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.ctype));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if self.cache {
                "max-age=300"
            } else {
                "no-store"
            }),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flowscope\""),
            );
        }
        if let Some(l) = self.location {
            h.insert(header::LOCATION, HeaderValue::from_static(l));
        }
        if let Some(c) = self.cookie
            && let Ok(v) = HeaderValue::from_str(&c)
        {
            h.insert(header::SET_COOKIE, v);
        }
        r
    }
}

/// Serves `ui` on `listener` until the task is dropped, within `server`'s
/// limits, counting every refusal.
pub async fn serve(listener: TcpListener, ui: Arc<Ui>, server: Server) {
    let telemetry = server.telemetry.clone();
    let kind = server.kind;
    let tls = ui.tls.clone();
    server
        .run_tls(listener, tls, move |req| {
            let ui = ui.clone();
            let telemetry = telemetry.clone();
            async move {
                let head = req.method() == http::Method::HEAD;
                let (parts, _) = req.into_parts();
                // Queries read the store under its lock (or ask the fleet's
                // storage): blocking work, kept off the async workers.
                let reply = tokio::task::spawn_blocking(move || {
                    ui.handle(&parts.method, &parts.uri, &parts.headers)
                })
                .await
                .unwrap_or_else(|e| {
                    Reply::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "path",
                        &format!("the query failed: {e}"),
                    )
                });
                if let Some(reason) = reply.refused {
                    telemetry.emit(flowscope_model::internal_events::ServerRefused {
                        server: kind,
                        reason,
                        count: 1,
                    });
                }
                reply.into_response(head)
            }
        })
        .await
}

/// Folds batches into the store.
pub(crate) struct UiSink {
    pub(crate) store: Arc<Mutex<Store>>,
}

impl Sink for UiSink {
    type Item = MetricBatch;

    async fn export(&mut self, batch: &MetricBatch) -> Outcome {
        let n = batch.points.len() as u64;
        // The store's lock is held by queries on the blocking pool for
        // milliseconds at a time: wait for it there, not on an async worker.
        let store = self.store.clone();
        let b = batch.clone();
        let dropped = tokio::task::spawn_blocking(move || {
            store.lock().unwrap_or_else(|e| e.into_inner()).insert(&b)
        })
        .await
        // The insert panicked: nothing of the batch is known to be kept.
        .unwrap_or(n);
        let mut o = Outcome::sent(n - dropped);
        o.fail(
            dropped,
            SERIES_LIMIT,
            format!("ui: series limit reached, {dropped} points dropped"),
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str, token: Option<&str>) -> UiExporterConfig {
        let mut c = UiExporterConfig {
            endpoint: endpoint.into(),
            ..Default::default()
        };
        c.auth.token = token.map(str::to_string);
        c
    }

    fn get(ui: &Ui, uri: &str, auth: Option<&str>) -> Reply {
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8686"));
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        ui.handle(&http::Method::GET, &uri.parse().unwrap(), &h)
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let e = Ui::new(&cfg("0.0.0.0:0", None), &|_| None).err().unwrap();
        assert!(e.to_string().contains("auth.token"), "{e}");
        assert!(
            Ui::new(&cfg("0.0.0.0:0", None), &|k| (k == TOKEN_ENV)
                .then(|| "t".into()))
            .is_ok()
        );
        assert!(Ui::new(&cfg("127.0.0.1:0", None), &|_| None).is_ok());
        assert!(Ui::new(&cfg("[::1]:0", None), &|_| None).is_ok());
    }

    #[test]
    fn token_checked_on_every_request() {
        let ui = Ui::new(&cfg("0.0.0.0:0", Some("s3cret")), &|_| None).unwrap();
        for path in ["/map", "/api/keys", "/assets/app.css", "/nope"] {
            assert_eq!(
                get(&ui, path, None).status,
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
            assert_eq!(
                get(&ui, path, Some("Bearer wrong")).status,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            get(&ui, "/map", Some("Bearer s3cret")).status,
            StatusCode::OK
        );
        assert_eq!(
            get(&ui, "/?token=bad", None).status,
            StatusCode::UNAUTHORIZED
        );
        let r = get(&ui, "/?token=s3cret", None);
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        // The cookie is a random session id, not the token.
        let set = r.cookie.clone().unwrap();
        assert!(!set.contains("s3cret"), "{set}");
        assert!(
            set.contains("Max-Age=43200; HttpOnly; SameSite=Strict"),
            "{set}"
        );
        let session = set
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_string())
            .unwrap();
        assert_eq!(session.len(), 64);
        let with_cookie = |c: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("localhost:8686"));
            h.insert(header::COOKIE, HeaderValue::from_str(c).unwrap());
            ui.handle(&http::Method::GET, &"/api/keys".parse().unwrap(), &h)
                .status
        };
        assert_eq!(
            with_cookie(&format!("a=b; {COOKIE}={session}")),
            StatusCode::OK
        );
        // The token itself, or another id, is no session.
        assert_eq!(
            with_cookie(&format!("{COOKIE}=s3cret")),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            with_cookie(&format!("{COOKIE}={}", "0".repeat(64))),
            StatusCode::UNAUTHORIZED
        );
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("localhost:8686"));
        let r = ui.handle(&http::Method::POST, &"/api/keys".parse().unwrap(), &h);
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn a_rebound_name_cannot_read_the_api() {
        let mut c = cfg("127.0.0.1:8686", None);
        c.allowed_hosts = vec!["flowscope.internal:8686".into()];
        let ui = Ui::new(&c, &|_| None).unwrap();
        let ask = |pairs: &[(header::HeaderName, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(k, HeaderValue::from_static(v));
            }
            ui.handle(&http::Method::GET, &"/api/map".parse().unwrap(), &h)
        };
        let r = ask(&[(header::HOST, "attacker.example:8686")]);
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.refused, Some(RefuseReason::Host));
        assert!(
            String::from_utf8_lossy(&r.body).contains("allowed_hosts"),
            "{:?}",
            r.body
        );
        assert_eq!(ask(&[]).status, StatusCode::FORBIDDEN);
        assert_eq!(
            ask(&[(header::HOST, "flowscope.internal:8686")]).status,
            StatusCode::OK
        );
        let r = ask(&[
            (header::HOST, "127.0.0.1:8686"),
            (header::ORIGIN, "https://attacker.example"),
        ]);
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.refused, Some(RefuseReason::Origin));
        assert_eq!(
            ask(&[
                (header::HOST, "127.0.0.1:8686"),
                (header::ORIGIN, "http://127.0.0.1:8686"),
            ])
            .status,
            StatusCode::OK
        );
    }

    #[test]
    fn the_fleet_view_offers_days() {
        let local = Ui::new(&cfg("127.0.0.1:8686", None), &|_| None).unwrap();
        let page = |ui: &Ui| String::from_utf8_lossy(&get(ui, "/map", None).body).into_owned();
        assert!(!page(&local).contains("value=\"7d\""));
        let fleet = Ui::new(&cfg("127.0.0.1:8686", None), &|_| None)
            .unwrap()
            .with_fleet(
                fleet::Fleet::new("http://127.0.0.1:9", std::time::Duration::from_secs(1), 10)
                    .unwrap(),
            );
        let p = page(&fleet);
        assert!(
            p.contains("value=\"7d\"") && p.contains("value=\"1h\""),
            "{p}"
        );
        assert!(
            fleet::Fleet::new("prometheus:9090", std::time::Duration::from_secs(1), 10).is_err()
        );
    }

    #[test]
    fn busy_and_too_large_queries_are_refused() {
        let mut c = cfg("127.0.0.1:8686", None);
        c.max_concurrent_queries = 1;
        c.max_query_slots = 2;
        let ui = Ui::new(&c, &|_| None).unwrap();
        let s = 1_000_000_000u64;
        for end in [10, 20, 30] {
            let mut b = flowscope_model::MetricBatch::new((end - 10) * s, end * s);
            b.points.push(flowscope_model::Point {
                resource: Arc::new(flowscope_model::Attrs::new().with("service.name", "web")),
                metric: flowscope_model::metrics::FLOW_IO,
                attrs: flowscope_model::Attrs::new(),
                value: flowscope_model::PointValue::Int(1),
            });
            ui.store.lock().unwrap().insert(&b);
        }
        // Three slots in the hour: over the budget of two.
        let r = get(&ui, "/api/analytics?range=1h", None);
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.refused, Some(RefuseReason::TooLarge));
        assert!(String::from_utf8_lossy(&r.body).contains("\"parameter\":\"range\""));
        // The last 15 s hold two: answered.
        assert_eq!(
            get(&ui, "/api/analytics?range=15s", None).status,
            StatusCode::OK
        );
        // One query running: the next is refused, and answered once it ends.
        let running = QuerySlot::take(&ui.queries, 1).unwrap();
        let r = get(&ui, "/api/keys", None);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.refused, Some(RefuseReason::Busy));
        drop(running);
        assert_eq!(get(&ui, "/api/keys", None).status, StatusCode::OK);
    }
}
