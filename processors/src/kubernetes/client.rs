//! A small typed HTTPS client for the kubelet and the API server.
//!
//! Why not `kube` + `k8s-openapi`: the processor reads three collections
//! (pods, Services, ReplicaSets) and a handful of their fields, with GET
//! only. `k8s-openapi` generates every type of every API group (a long
//! compile on the 2-core machines this is built on) and `kube` brings its
//! own runtime, config loader and TLS choices; flowscope already builds
//! hyper 1, hyper-util, hyper-rustls and rustls (ring) for its exporters, so
//! a GET with a bearer token over that stack, plus serde for the few fields
//! (`pods.rs`, `api.rs`), is all this needs.
//!
//! Every request carries the service-account token, read from its file
//! each time (projected tokens rotate), and is verified against the CA
//! bundle of the service-account mount (or another one configured).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flowscope_model::internal_events::LossReason;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::api::{ApiError, Status};
use super::pods::PodListError;

/// Why a request failed. Each maps to the `flowscope.reason` it is counted
/// under ([`FetchError::reason`]).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read the CA bundle {path}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA bundle {path} holds no usable certificate")]
    NoCa { path: PathBuf },
    #[error("cannot read the service-account token {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad URL {0}")]
    Url(String),
    #[error("cannot reach {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered what is not a Kubernetes object")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
}

/// What could not be read in an answer.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Pods(#[from] PodListError),
}

impl FetchError {
    /// The reason it is counted under.
    pub fn reason(&self) -> LossReason {
        match self {
            FetchError::Timeout { .. } => LossReason::Timeout,
            FetchError::Status { .. } => LossReason::HttpError,
            FetchError::Parse { .. } => LossReason::ParseError,
            _ => LossReason::Unreachable,
        }
    }

    /// The HTTP status, when the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One server's client: its base URL, TLS trust and token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token_path: PathBuf,
    timeout: Duration,
    http: HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// A response whose body is read as it arrives (a watch).
pub struct Streaming {
    body: Incoming,
}

impl Streaming {
    /// The next piece of the body; None at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self.body.frame().await? {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }
}

impl Client {
    /// A client of `base` (`https://host:port`) trusting `ca_file` (or any
    /// certificate with `insecure`).
    ///
    /// # Errors
    /// The CA bundle cannot be read or holds no certificate.
    pub fn new(
        base: &str,
        ca_file: &Path,
        insecure: bool,
        token_path: &Path,
        timeout: Duration,
    ) -> Result<Client, FetchError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        if !insecure {
            let pem = std::fs::read(ca_file).map_err(|source| FetchError::Ca {
                path: ca_file.to_owned(),
                source,
            })?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(FetchError::NoCa {
                    path: ca_file.to_owned(),
                });
            }
        }
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Url(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        if insecure {
            flowscope_tls::skip_verification(&mut config, provider);
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token_path: token_path.to_owned(),
            timeout,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        path_and_query: &str,
    ) -> Result<(String, hyper::Response<Incoming>), FetchError> {
        let url = format!("{}{path_and_query}", self.base);
        let token =
            std::fs::read_to_string(&self.token_path).map_err(|source| FetchError::Token {
                path: self.token_path.clone(),
                source,
            })?;
        let req = hyper::Request::get(&url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            )
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "flowscope")
            .body(Empty::new())
            .map_err(|_| FetchError::Url(url.clone()))?;
        let resp = match tokio::time::timeout(self.timeout, self.http.request(req)).await {
            Err(_) => {
                return Err(FetchError::Timeout {
                    url,
                    timeout: self.timeout,
                });
            }
            Ok(Err(e)) => {
                // hyper-util's message is `client error (Connect)`; the
                // reason is in its sources.
                let mut parts = vec![e.to_string()];
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    parts.push(s.to_string());
                    src = s.source();
                }
                let why = parts.join("; ");
                return Err(FetchError::Unreachable { url, why });
            }
            Ok(Ok(r)) => r,
        };
        Ok((url, resp))
    }

    /// GET `path_and_query`, the whole body within the timeout. An HTTP
    /// error status is an error carrying the `v1.Status` message when the
    /// body is one.
    pub async fn get(&self, path_and_query: &str) -> Result<Bytes, FetchError> {
        let (url, resp) = self.send(path_and_query).await?;
        let status = resp.status();
        let body = match tokio::time::timeout(self.timeout, resp.into_body().collect()).await {
            Err(_) => {
                return Err(FetchError::Timeout {
                    url,
                    timeout: self.timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(FetchError::Unreachable {
                    url,
                    why: e.to_string(),
                });
            }
            Ok(Ok(b)) => b.to_bytes(),
        };
        if !status.is_success() {
            return Err(status_error(url, status.as_u16(), &body));
        }
        Ok(body)
    }

    /// GET a watch: the status within the timeout, then the body as it
    /// comes.
    pub async fn stream(&self, path_and_query: &str) -> Result<Streaming, FetchError> {
        let (url, resp) = self.send(path_and_query).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = tokio::time::timeout(self.timeout, resp.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(status_error(url, status.as_u16(), &body));
        }
        Ok(Streaming {
            body: resp.into_body(),
        })
    }
}

/// An HTTP error, with the message of the `v1.Status` the API server
/// sends with it (else the start of the body).
fn status_error(url: String, status: u16, body: &[u8]) -> FetchError {
    let message = serde_json::from_slice::<Status>(body)
        .ok()
        .map(|s| s.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect::<String>().trim().to_owned()
        });
    FetchError::Status {
        url,
        status,
        message,
    }
}
