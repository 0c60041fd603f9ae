//! A CA, a server certificate (localhost, 127.0.0.1) and a client
//! certificate made at test time, written to a temporary directory.

use std::path::PathBuf;

use flowscope_otel_config::exporters::TlsClientConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::ServerTls;

/// Test PKI: `ca.pem`, `client.pem`, `client.key` in `dir`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub server: (String, String),
    pub client: (String, String),
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "flowscope test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name
                .push(DnType::CommonName, "flowscope test");
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(vec!["agent".into()], ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().unwrap();
        let pki = Self {
            dir,
            ca_pem: ca_cert.pem(),
            server,
            client,
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(pki.path("client.pem"), &pki.client.0).unwrap();
        std::fs::write(pki.path("client.key"), &pki.client.1).unwrap();
        pki
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub fn server_tls(&self, mtls: bool) -> ServerTls {
        ServerTls {
            cert_pem: self.server.0.clone(),
            key_pem: self.server.1.clone(),
            client_ca_pem: mtls.then(|| self.ca_pem.clone()),
            tls12_only: false,
        }
    }

    pub fn client(&self, ca: bool, client_cert: bool) -> TlsClientConfig {
        TlsClientConfig {
            ca_file: ca.then(|| self.path("ca.pem")),
            cert_file: client_cert.then(|| self.path("client.pem")),
            key_file: client_cert.then(|| self.path("client.key")),
            ..Default::default()
        }
    }
}
