//! TLS pieces shared by the agent's TLS clients: the exporters
//! (`exporters/src/tls.rs`), the Kubernetes client
//! (`processors/src/kubernetes/client.rs`) and the path receiver's
//! certificate checks (`receiver/src/path/tls.rs`). Each builds its own rustls
//! `ClientConfig` from its own settings; what they have in common lives
//! here, so that a fix to it is made once.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// The system CA pool: what OpenSSL would trust on this host. Unreadable
/// entries are skipped (logged); an empty pool is not an error here, each
/// caller decides what else it trusts.
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("system CA pool: {e}");
    }
    found.certs
}

/// Turns certificate verification off (`insecure_skip_verify`, for tests
/// and private endpoints whose CA the operator cannot hand over).
///
/// Any server certificate is accepted, whatever its issuer, name or
/// validity dates. The handshake signatures are still checked with
/// `provider`'s algorithms, so the server must hold the key of the
/// certificate it sends: this removes the trust check, not the handshake's
/// integrity.
pub fn skip_verification(config: &mut ClientConfig, provider: Arc<CryptoProvider>) {
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AcceptAny(provider)));
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

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
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
