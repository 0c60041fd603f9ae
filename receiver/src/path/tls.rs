//! TLS certificate checks of scheduled path tests (`tls: true`).
//!
//! After a run's trace, the test connects to its destination's port and
//! does a TLS handshake with rustls, in the test's network namespace, on
//! the run's blocking thread. The leaf certificate is recorded as the
//! server presents it, before it is verified, so an expired, self-signed or
//! otherwise untrusted certificate still reports its time left; the
//! verification's verdict is reported apart as the check's `error.type`.
//!
//! Verification is rustls' WebPKI verifier against the system trust store
//! (what OpenSSL reads: `/etc/ssl/certs`, `SSL_CERT_FILE`/`SSL_CERT_DIR`)
//! or, with `ca_file`, only that file's CAs. Every step is bounded by the
//! test's timeout: a port that accepts and says nothing is a `timeout`,
//! never a hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use flowscope_model::names::path as names;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use thiserror::Error;

/// Why a test's TLS settings cannot be used.
#[derive(Debug, Error)]
pub enum TlsSettingsError {
    #[error("reading `ca_file` `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`ca_file` `{path}`: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("`ca_file` `{path}`: no usable CA certificate")]
    NoRoots { path: PathBuf },
    #[error("`server_name` `{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("the certificate verifier")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
}

/// One test's TLS check, built once from its config.
#[derive(Clone)]
pub struct TlsCheck {
    server_name: ServerName<'static>,
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for TlsCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCheck")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The leaf certificate a server presented.
#[derive(Clone, Debug, PartialEq)]
pub struct Certificate {
    pub subject: String,
    pub issuer: String,
    /// `notAfter`, unix seconds.
    pub not_after: i64,
}

impl Certificate {
    /// `notAfter` as RFC 3339 (`2026-12-09T10:00:00Z`), as semconv's
    /// `tls.server.not_after` is written.
    pub fn not_after_rfc3339(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.not_after)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }

    /// Seconds from `now` to `notAfter`; negative once expired.
    pub fn time_left(&self, now: SystemTime) -> f64 {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.not_after as f64 - now
    }
}

/// What one check found: the certificate when one was received, and the
/// failure (`error.type`), if any.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsOutcome {
    pub certificate: Option<Certificate>,
    pub error: Option<&'static str>,
}

impl TlsCheck {
    /// The check of a test to `host` (its `server_name` when given), with
    /// the CAs of `ca_file` or the system's.
    pub fn new(
        host: &str,
        server_name: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, TlsSettingsError> {
        let name = server_name.unwrap_or(host).to_string();
        let server_name =
            ServerName::try_from(name.clone()).map_err(|_| TlsSettingsError::ServerName(name))?;
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| TlsSettingsError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let certs =
                    flowscope_otel_config::exporters::parse_pem_certs(&pem).map_err(|why| {
                        TlsSettingsError::Pem {
                            path: path.to_path_buf(),
                            why,
                        }
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsSettingsError::NoRoots {
                        path: path.to_path_buf(),
                    });
                }
            }
            None => {
                roots.add_parsable_certificates(flowscope_tls::system_roots());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(TlsSettingsError::Verifier)?;
        Ok(TlsCheck {
            server_name,
            verifier,
            provider,
        })
    }

    /// Connects to `addr` and does the handshake, each step within
    /// `timeout`. Blocking: runs on the test's thread, in its namespace.
    pub fn run(&self, addr: SocketAddr, timeout: Duration) -> TlsOutcome {
        let seen = Arc::new(Mutex::new(None));
        let recorder = Arc::new(Recorder {
            inner: self.verifier.clone(),
            leaf: seen.clone(),
        });
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(recorder)
                    .with_no_client_auth()
            });
        let error = match config {
            Ok(config) => handshake(Arc::new(config), self.server_name.clone(), addr, timeout),
            Err(_) => Some(names::TLS_ERROR_HANDSHAKE),
        };
        let leaf = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
        TlsOutcome {
            certificate: leaf.as_deref().and_then(parse),
            error,
        }
    }
}

/// The handshake; `None` when it completed and the certificate verified.
fn handshake(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    addr: SocketAddr,
    timeout: Duration,
) -> Option<&'static str> {
    let mut tcp = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if is_timeout(&e) => return Some(names::TLS_ERROR_TIMEOUT),
        Err(_) => return Some(names::TLS_ERROR_CONNECT),
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let Ok(mut conn) = rustls::ClientConnection::new(config, name) else {
        return Some(names::TLS_ERROR_HANDSHAKE);
    };
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() => return Some(names::TLS_ERROR_HANDSHAKE),
            Ok(_) => {}
            Err(e) => return Some(kind_of(&e)),
        }
    }
    // Close politely; the answer does not matter.
    conn.send_close_notify();
    let _ = conn.write_tls(&mut tcp);
    let _ = tcp.flush();
    let _ = tcp.read(&mut [0u8; 1]);
    None
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// The `error.type` of a failed handshake.
fn kind_of(e: &std::io::Error) -> &'static str {
    if is_timeout(e) {
        return names::TLS_ERROR_TIMEOUT;
    }
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                names::TLS_ERROR_EXPIRED
            }
            CertificateError::UnknownIssuer => names::TLS_ERROR_UNKNOWN_ISSUER,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                names::TLS_ERROR_NAME_MISMATCH
            }
            _ => names::TLS_ERROR_HANDSHAKE,
        },
        _ => names::TLS_ERROR_HANDSHAKE,
    }
}

/// Subject, issuer and notAfter of a DER certificate.
fn parse(der: &[u8]) -> Option<Certificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(Certificate {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// rustls' verifier, keeping the leaf certificate it is shown.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.leaf.lock().unwrap_or_else(|e| e.into_inner()) = Some(end_entity.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
