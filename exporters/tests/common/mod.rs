//! Test OTLP receivers on 127.0.0.1 (gRPC through tonic, HTTP through
//! hyper), optionally with TLS/mTLS, each answering from a script of
//! replies, recording what arrived and when; and batch builders.
#![allow(dead_code)]

pub mod pki;

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flowscope_exporters::encode::request_points;
use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE};
use flowscope_model::names::{attr, resource};
use flowscope_model::{Attrs, MetricBatch, Point, PointValue, Telemetry};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Ok,
    /// gRPC status code.
    Grpc(tonic::Code),
    /// gRPC status code with a `google.rpc.RetryInfo` delay.
    GrpcRetryInfo(tonic::Code, Duration),
    /// HTTP status with an optional `Retry-After`.
    Http(u16, Option<&'static str>),
    /// Accept, rejecting this many points in a partial success.
    Partial(i64),
    /// Answer OK only after this long.
    Hang(Duration),
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: Instant,
    pub request: ExportMetricsServiceRequest,
    pub headers: Vec<(String, String)>,
    pub reply: Reply,
}

#[derive(Default)]
pub struct Receiver {
    script: Mutex<VecDeque<Reply>>,
    arrivals: Mutex<Vec<Arrival>>,
    /// Count only (benchmarks): keep no arrivals.
    count_only: bool,
    points: std::sync::atomic::AtomicU64,
}

impl Receiver {
    pub fn new(script: impl IntoIterator<Item = Reply>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into_iter().collect()),
            ..Default::default()
        })
    }

    /// A receiver that answers OK and only counts points.
    pub fn counting() -> Arc<Self> {
        Arc::new(Self {
            count_only: true,
            ..Default::default()
        })
    }

    /// Points received by a counting receiver.
    pub fn counted(&self) -> u64 {
        self.points.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn next(&self, request: ExportMetricsServiceRequest, headers: Vec<(String, String)>) -> Reply {
        if self.count_only {
            self.points.fetch_add(
                request_points(&request),
                std::sync::atomic::Ordering::Relaxed,
            );
            return Reply::Ok;
        }
        let reply = self.script.lock().unwrap().pop_front().unwrap_or(Reply::Ok);
        self.arrivals.lock().unwrap().push(Arrival {
            at: Instant::now(),
            request,
            headers,
            reply: reply.clone(),
        });
        reply
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Points the receiver accepted (not those it answered with an error,
    /// rejected in a partial success, or answered after a hang the client
    /// gave up on).
    pub fn accepted_points(&self) -> u64 {
        self.arrivals()
            .iter()
            .map(|a| match a.reply {
                Reply::Ok => request_points(&a.request),
                Reply::Partial(n) => request_points(&a.request) - n as u64,
                _ => 0,
            })
            .sum()
    }

    /// Accepted requests, in arrival order.
    pub fn accepted(&self) -> Vec<ExportMetricsServiceRequest> {
        self.arrivals()
            .into_iter()
            .filter(|a| matches!(a.reply, Reply::Ok | Reply::Partial(_)))
            .map(|a| a.request)
            .collect()
    }
}

struct Grpc(Arc<Receiver>);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                }
                _ => None,
            })
            .collect();
        match self.0.next(request.into_inner(), headers) {
            Reply::Ok => Ok(tonic::Response::new(ExportMetricsServiceResponse::default())),
            Reply::Partial(n) => Ok(tonic::Response::new(ExportMetricsServiceResponse {
                partial_success: Some(ExportMetricsPartialSuccess {
                    rejected_data_points: n,
                    error_message: "too old".into(),
                }),
            })),
            Reply::Hang(d) => {
                tokio::time::sleep(d).await;
                Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
            }
            Reply::Grpc(code) => Err(tonic::Status::new(code, "scripted failure")),
            Reply::GrpcRetryInfo(code, delay) => Err(
                flowscope_exporters::grpc::status_with_retry_info(code, "scripted throttle", delay),
            ),
            Reply::Http(..) => Err(tonic::Status::internal("HTTP reply scripted on gRPC")),
        }
    }
}

/// TLS material for a test server.
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
    /// Require client certificates signed by this CA (mTLS).
    pub client_ca_pem: Option<String>,
    /// Offer TLS 1.2 only (HTTP receiver), to test `min_version`.
    pub tls12_only: bool,
}

/// Starts a gRPC receiver on `addr` (port 0 for any); returns its address.
pub async fn grpc_receiver(addr: &str, rx: Arc<Receiver>, tls: Option<ServerTls>) -> SocketAddr {
    use tonic::codec::CompressionEncoding;
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    let svc = MetricsServiceServer::new(Grpc(rx))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        let mut cfg = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(t.cert_pem, t.key_pem));
        if let Some(ca) = t.client_ca_pem {
            cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(cfg).unwrap();
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let _ = builder.add_service(svc).serve_with_incoming(incoming).await;
    });
    local
}

fn decompress(enc: Option<&str>, body: &[u8]) -> Vec<u8> {
    match enc {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::decode_all(body).unwrap(),
        _ => body.to_vec(),
    }
}

/// Starts an OTLP/HTTP receiver on `addr`; returns its address.
pub async fn http_receiver(addr: &str, rx: Arc<Receiver>, tls: Option<ServerTls>) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    let acceptor = tls.map(|t| {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(t.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(t.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = if t.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let b = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap();
        let cfg = match t.client_ca_pem {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let v = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap();
                b.with_client_cert_verifier(v)
                    .with_single_cert(certs, key)
                    .unwrap()
            }
            None => b
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        };
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let rx = rx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let rx = rx.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle_http(&rx, req).await) }
                    },
                );
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream).await {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    local
}

async fn handle_http(
    rx: &Receiver,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let json = get("content-type").as_deref() == Some("application/json");
    let enc = get("content-encoding");
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let raw = decompress(enc.as_deref(), &body);
    let request = if json {
        flowscope_exporters::json::request_from_json(std::str::from_utf8(&raw).unwrap()).unwrap()
    } else {
        ExportMetricsServiceRequest::decode(raw.as_slice()).unwrap()
    };
    assert_eq!(path, "/v1/metrics");
    let respond = |status: u16, body: Vec<u8>| {
        let mut r = http::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(if json {
                "application/json"
            } else {
                "application/x-protobuf"
            }),
        );
        r
    };
    match rx.next(request, headers) {
        Reply::Ok => respond(200, Vec::new()),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            respond(200, Vec::new())
        }
        Reply::Partial(n) => {
            let resp = ExportMetricsServiceResponse {
                partial_success: Some(ExportMetricsPartialSuccess {
                    rejected_data_points: n,
                    error_message: "too old".into(),
                }),
            };
            if json {
                let body = format!(
                    r#"{{"partialSuccess":{{"rejectedDataPoints":"{n}","errorMessage":"too old"}}}}"#
                );
                respond(200, body.into_bytes())
            } else {
                respond(200, resp.encode_to_vec())
            }
        }
        Reply::Http(code, retry_after) => {
            let mut r = respond(code, b"scripted failure".to_vec());
            if let Some(ra) = retry_after {
                r.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static(ra),
                );
            }
            r
        }
        Reply::Grpc(_) | Reply::GrpcRetryInfo(..) => {
            respond(500, b"gRPC reply scripted on HTTP".to_vec())
        }
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Batch `id` of an interval: `flows` client flows of service `checkout`,
/// flow `i` sending `1000 * (id + 1) + i` bytes and holding 1 connection.
pub fn batch(id: u64, flows: usize) -> Arc<MetricBatch> {
    let r = Arc::new(Attrs::new().with(resource::SERVICE_NAME, "checkout"));
    let start = 1_700_000_000_000_000_000 + id * 10_000_000_000;
    let mut b = MetricBatch::new(start, start + 10_000_000_000);
    for i in 0..flows {
        let a = Attrs::new()
            .with(attr::FLOW_ROLE, "client")
            .with(attr::PEER_ADDRESS, "198.18.0.2")
            .with(attr::PEER_PORT, 1000 + i as i64);
        b.points.push(Point {
            resource: r.clone(),
            metric: FLOW_IO,
            attrs: a.clone().with(attr::IO_DIRECTION, attr::TRANSMIT),
            value: PointValue::Int(1000 * (id + 1) + i as u64),
        });
        b.points.push(Point {
            resource: r.clone(),
            metric: TCP_ACTIVE,
            attrs: a,
            value: PointValue::Int(1),
        });
    }
    Arc::new(b)
}

/// `network.flow.io` values by peer port, from accepted requests.
pub fn io_values(reqs: &[ExportMetricsServiceRequest]) -> Vec<(i64, i64, u64, u64)> {
    let mut out = Vec::new();
    for r in reqs {
        for rm in &r.resource_metrics {
            for m in &rm.scope_metrics[0].metrics {
                if m.name != "network.flow.io" {
                    continue;
                }
                let Some(metric::Data::Sum(s)) = &m.data else {
                    panic!("io not a sum")
                };
                for p in &s.data_points {
                    let port = p
                        .attributes
                        .iter()
                        .find(|kv| kv.key == attr::PEER_PORT)
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(|v| match v.value {
                            Some(
                                opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(
                                    i,
                                ),
                            ) => Some(i),
                            _ => None,
                        })
                        .unwrap();
                    let Some(number_data_point::Value::AsInt(v)) = p.value else {
                        panic!("not int")
                    };
                    out.push((port, v, p.start_time_unix_nano, p.time_unix_nano));
                }
            }
        }
    }
    out
}

/// Exporter accounting from the shared telemetry, by the exporter's config
/// id (`otel.component.name`; its type is checked in component_type.rs).
pub fn sent(t: &Telemetry, exporter: &str) -> u64 {
    t.total_matching(flowscope_model::telemetry::EXPORTER_SENT, &named(exporter))
}

pub fn failed(t: &Telemetry, exporter: &str, error_type: &str) -> u64 {
    t.total_matching(
        flowscope_model::telemetry::EXPORTER_FAILED,
        &named(exporter).with(attr::ERROR_TYPE, error_type),
    )
}

pub fn failed_all(t: &Telemetry, exporter: &str) -> u64 {
    t.total_matching(
        flowscope_model::telemetry::EXPORTER_FAILED,
        &named(exporter),
    )
}

fn named(exporter: &str) -> flowscope_model::Attrs {
    flowscope_model::Attrs::new().with(attr::COMPONENT_NAME, exporter)
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes.
pub async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` from 127.0.0.1:`port`; (status line, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Chunked bodies (VictoriaMetrics): keep the chunks, drop the sizes.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    Ok((head.lines().next().unwrap_or("").to_string(), body))
}

/// The test peer binary `default` (or the path in `$var`), failing the test
/// (never skipping it) when it does not run.
pub fn peer_binary(var: &str, default: &str, version_flag: &str) -> String {
    let bin = std::env::var(var).unwrap_or_else(|_| default.into());
    let ok = std::process::Command::new(&bin)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{bin}` not found: install the test peers with `scripts/bootstrap.sh --test` \
         (apt-get install prometheus victoria-metrics), or set {var}"
    );
    bin
}

/// A storage server started by a test on loopback, with its own data
/// directory; killed when dropped.
pub struct Peer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _child: Killed,
}

/// Polls GET `path` until it answers 200 (60 s at most).
async fn wait_http_ok(port: u16, path: &'static str, what: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Ok((status, _))) = tokio::task::spawn_blocking(move || http_get(port, path)).await
            && status.contains(" 200")
        {
            return;
        }
        assert!(Instant::now() < end, "{what} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts Debian's Prometheus (`$PROMETHEUS_BIN` or `prometheus`) with
/// `config` as its configuration file and `extra` flags; returns once it
/// is ready.
pub async fn start_prometheus(config: &str, extra: &[&str]) -> Peer {
    let bin = peer_binary("PROMETHEUS_BIN", "prometheus", "--version");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(&conf, config).unwrap();
    let child = std::process::Command::new(&bin)
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_http_ok(port, "/-/ready", "Prometheus").await;
    Peer {
        port,
        dir,
        _child: child,
    }
}

/// Starts VictoriaMetrics (`$VICTORIA_METRICS_BIN` or
/// `/usr/bin/victoria-metrics`), samples queryable as soon as they arrive.
pub async fn start_victoria_metrics() -> Peer {
    let bin = peer_binary(
        "VICTORIA_METRICS_BIN",
        "/usr/bin/victoria-metrics",
        "-version",
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = std::process::Command::new(&bin)
        .arg(format!("-storageDataPath={}", dir.path().display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        // Fresh samples are hidden for 30 s by default, and answers cached.
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_http_ok(port, "/health", "VictoriaMetrics").await;
    Peer {
        port,
        dir,
        _child: child,
    }
}

/// `s` percent-encoded for a URL query.
pub fn url_encode(s: &str) -> String {
    flowscope_model::percent::query_value(s)
}

/// `GET /api/v1/query` of `promql` at Unix time `at_ms`: the result vector.
pub async fn instant_query(port: u16, promql: &str, at_ms: i64) -> Vec<serde_json::Value> {
    let path = format!(
        "/api/v1/query?query={}&time={}.{:03}",
        url_encode(promql),
        at_ms / 1000,
        at_ms % 1000
    );
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, &path))
        .await
        .unwrap()
        .unwrap();
    assert!(status.contains(" 200"), "{status}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// A realistic interval for the benchmarks: `flows` TCP client flows over 20 local services,
/// 7 points each (bytes and packets both ways, retransmits, RTT histogram,
/// active connections).
pub fn flows_batch(flows: usize) -> Arc<MetricBatch> {
    let services: Vec<Arc<Attrs>> = (0..20)
        .map(|s| {
            Arc::new(
                Attrs::new()
                    .with(resource::SERVICE_NAME, format!("service-{s}"))
                    .with(resource::HOST_NAME, "node-7")
                    .with(resource::OS_TYPE, "linux"),
            )
        })
        .collect();
    let bounds: Arc<[f64]> = Arc::from(flowscope_model::hist::RTT_BOUNDS);
    let mut b = MetricBatch::new(1_700_000_000_000_000_000, 1_700_000_010_000_000_000);
    for i in 0..flows {
        let r = &services[i % services.len()];
        let a = Attrs::new()
            .with(attr::NETWORK_TRANSPORT, "tcp")
            .with(attr::NETWORK_TYPE, "ipv4")
            .with(attr::FLOW_ROLE, "client")
            .with(
                attr::PEER_ADDRESS,
                format!("198.18.{}.{}", i / 250, i % 250),
            )
            .with(attr::PEER_PORT, 443u16);
        let mut push = |metric, attrs: Attrs, value| {
            b.points.push(Point {
                resource: r.clone(),
                metric,
                attrs,
                value,
            });
        };
        for (m, tx, rx) in [
            (FLOW_IO, 123_456u64 + i as u64, 9_876u64),
            (flowscope_model::metrics::FLOW_PACKETS, 120, 80),
        ] {
            push(
                m,
                a.clone().with(attr::IO_DIRECTION, attr::TRANSMIT),
                PointValue::Int(tx),
            );
            push(
                m,
                a.clone().with(attr::IO_DIRECTION, attr::RECEIVE),
                PointValue::Int(rx),
            );
        }
        push(
            flowscope_model::metrics::TCP_RETRANSMITS,
            a.clone(),
            PointValue::Int(2),
        );
        let mut h = flowscope_model::Histogram::new(bounds.clone());
        h.record(0.0004 + (i % 10) as f64 * 0.001);
        push(
            flowscope_model::metrics::TCP_RTT,
            a.clone(),
            PointValue::Histogram(h),
        );
        push(TCP_ACTIVE, a, PointValue::Int(1));
    }
    Arc::new(b)
}
