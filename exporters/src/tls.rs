//! TLS for the network exporters: one rustls client configuration (custom
//! CA, client certificate for mTLS, or verification off for tests) turned
//! into a hyper-rustls connector that both the gRPC channel and the HTTP
//! client use. Without `ca_file` the Mozilla roots of `webpki-roots` are
//! trusted, which works the same in a minimal container without a system
//! CA bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowscope_otel_config::exporters::TlsClientConfig;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading `tls.{key}` file `{path}`")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`tls.{key}` file `{path}` holds no usable PEM {what}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("`tls.ca_file` `{path}`: certificate not accepted as a root")]
    Root {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("`tls.cert_file` and `tls.key_file` must be given together")]
    HalfClientAuth,
    #[error("client certificate and key do not form a usable identity")]
    ClientAuth(#[source] rustls::Error),
    #[error("TLS protocol versions")]
    Versions(#[source] rustls::Error),
    #[error("`tls.server_name_override` `{0}` is not a valid server name")]
    ServerName(String),
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// The rustls client configuration for `tls`.
pub fn client_config(tls: &TlsClientConfig) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?;
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let pem = read("ca_file", path)?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err(TlsError::Pem {
                    key: "ca_file",
                    path: path.clone(),
                    what: "certificate",
                });
            }
            for c in certs {
                roots.add(c).map_err(|source| TlsError::Root {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let pem = read("cert_file", cert)?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if chain.is_empty() {
                return Err(TlsError::Pem {
                    key: "cert_file",
                    path: cert.clone(),
                    what: "certificate",
                });
            }
            let key_pem = read("key_file", key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
                key: "key_file",
                path: key.clone(),
                what: "private key",
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(TlsError::ClientAuth)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientAuth),
    };
    if tls.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAny(provider)));
    }
    Ok(config)
}

/// A connector doing TLS for `https://` URIs: HTTP/2 only (ALPN `h2`) for
/// gRPC (`grpc`, wrap it in [`ForceTls`]), else HTTP/1.1.
pub fn connector(
    tls: &TlsClientConfig,
    grpc: bool,
) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let config = client_config(tls)?;
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
    let b = b.https_or_http();
    let b = match &tls.server_name_override {
        Some(name) => {
            let sn = ServerName::try_from(name.clone())
                .map_err(|_| TlsError::ServerName(name.clone()))?;
            b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(sn))
        }
        None => b,
    };
    Ok(if grpc {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    })
}

/// The gRPC connector: rewrites tonic's `http://` URI to `https://` so the
/// inner connector always does TLS.
#[derive(Clone)]
pub struct ForceTls(pub HttpsConnector<HttpConnector>);

impl tower_service::Service<http::Uri> for ForceTls {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Response;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        let uri = http::Uri::from_parts(parts).unwrap_or(uri);
        self.0.call(uri)
    }
}

/// `insecure_skip_verify`: accepts any certificate, still checks the
/// handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
