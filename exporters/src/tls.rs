//! TLS for the network exporters: one rustls client configuration (custom
//! CA, client certificate for mTLS, protocol versions, or verification off
//! for tests) turned into a hyper-rustls connector that both the gRPC
//! channel and the HTTP client use.
//!
//! Trust, as the Collector's `configtls`: without `ca_file`/`ca_pem` the
//! system CA pool (what OpenSSL reads: `/etc/ssl/certs`, or the files named
//! by `SSL_CERT_FILE`/`SSL_CERT_DIR`) AND the Mozilla roots of
//! `webpki-roots` are trusted, so a private CA installed on the host works
//! and a minimal container without a CA bundle still reaches public
//! backends. With `ca_file` or `ca_pem` only that CA is trusted, unless
//! `include_system_ca_certs_pool` adds both sets back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowscope_otel_config::exporters::{
    ServerTlsConfig, TlsClientConfig, TlsVersion, parse_pem_certs, parse_pem_key,
};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

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
    #[error("`tls.{key}` {source_name}: {why}")]
    Pem {
        key: &'static str,
        source_name: String,
        why: String,
    },
    #[error("`tls.{key}`: certificate not accepted as a root")]
    Root {
        key: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "a client certificate needs its key: give `tls.cert_file` (or `cert_pem`) together with \
         `tls.key_file` (or `key_pem`)"
    )]
    HalfClientAuth,
    #[error("client certificate and key do not form a usable identity")]
    ClientAuth(#[source] rustls::Error),
    #[error("TLS protocol versions")]
    Versions(#[source] rustls::Error),
    #[error("`tls.min_version` is above `tls.max_version`")]
    NoVersion,
    #[error("`tls.server_name_override` `{0}` is not a valid server name")]
    ServerName(String),
    #[error("serving HTTPS needs both `tls.cert_file` and `tls.key_file`")]
    HalfServer,
    #[error("`tls.cert_file` and `tls.key_file` do not form a usable server identity")]
    ServerIdentity(#[source] rustls::Error),
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// PEM from `<key>_file` or `<key>_pem`, whichever is set, with a name for
/// messages (`file \`/x.pem\`` or `inline PEM`).
fn pem_source(
    file_key: &'static str,
    file: Option<&PathBuf>,
    pem: Option<&String>,
) -> Result<Option<(Vec<u8>, String)>, TlsError> {
    Ok(match (file, pem) {
        (Some(path), _) => Some((read(file_key, path)?, format!("file `{}`", path.display()))),
        (None, Some(pem)) => Some((pem.as_bytes().to_vec(), "inline PEM".to_owned())),
        (None, None) => None,
    })
}

fn certs(
    key: &'static str,
    file: Option<&PathBuf>,
    pem: Option<&String>,
) -> Result<Option<Vec<CertificateDer<'static>>>, TlsError> {
    let Some((bytes, source_name)) = pem_source(key, file, pem)? else {
        return Ok(None);
    };
    parse_pem_certs(&bytes)
        .map(Some)
        .map_err(|why| TlsError::Pem {
            key,
            source_name,
            why,
        })
}

/// The rustls client configuration for `tls`.
pub fn client_config(tls: &TlsClientConfig) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let min = tls.min_version.unwrap_or(TlsVersion::V1_2);
    let max = tls.max_version.unwrap_or(TlsVersion::V1_3);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, p)| p)
    .collect();
    if versions.is_empty() {
        return Err(TlsError::NoVersion);
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(TlsError::Versions)?;
    let mut roots = RootCertStore::empty();
    let custom = certs("ca_file", tls.ca_file.as_ref(), tls.ca_pem.as_ref())?;
    let with_system = custom.is_none() || tls.include_system_ca_certs_pool;
    if let Some(ca) = custom {
        for c in ca {
            roots.add(c).map_err(|source| TlsError::Root {
                key: "ca_file",
                source,
            })?;
        }
    }
    if with_system {
        // Certificates a system bundle holds that rustls cannot parse as
        // roots are skipped, as other rustls-based clients do.
        let (_added, _ignored) = roots.add_parsable_certificates(flowscope_tls::system_roots());
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let builder = builder.with_root_certificates(roots);
    let chain = certs("cert_file", tls.cert_file.as_ref(), tls.cert_pem.as_ref())?;
    let key = match pem_source("key_file", tls.key_file.as_ref(), tls.key_pem.as_ref())? {
        Some((bytes, source_name)) => Some(parse_pem_key(&bytes).map_err(|why| TlsError::Pem {
            key: "key_file",
            source_name,
            why,
        })?),
        None => None,
    };
    let mut config = match (chain, key) {
        (Some(chain), Some(key)) => {
            let key: PrivateKeyDer<'static> = key;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::ClientAuth)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientAuth),
    };
    if tls.insecure_skip_verify {
        flowscope_tls::skip_verification(&mut config, provider);
    }
    Ok(config)
}

/// The rustls server configuration of a server's `tls` (the UI): TLS 1.2
/// and 1.3, no client certificates, HTTP/1.1 offered by ALPN.
pub fn server_config(tls: &ServerTlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("cert_file", tls.cert_file.as_ref(), None)?;
    let key = match pem_source("key_file", tls.key_file.as_ref(), None)? {
        Some((bytes, source_name)) => parse_pem_key(&bytes).map_err(|why| TlsError::Pem {
            key: "key_file",
            source_name,
            why,
        })?,
        None => return Err(TlsError::HalfServer),
    };
    let Some(chain) = chain else {
        return Err(TlsError::HalfServer);
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(TlsError::Versions)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::ServerIdentity)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
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
