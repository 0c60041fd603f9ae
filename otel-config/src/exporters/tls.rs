//! TLS settings: the exporters' client side (`tls:`, CA, client
//! certificate, PEM files and inline PEM read at load time) and the UI's
//! server side.

use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::validate::non_empty_path;

use super::checks::Unused;

/// TLS client settings, as the Collector's `configtls`. Unset fields fall
/// back to the `OTEL_EXPORTER_OTLP_*` environment variables, then to the
/// defaults named here. Files and inline PEM are read and parsed when the
/// configuration loads, so `flowscope validate` reports a missing or bad one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// `otlp` only: plaintext gRPC (no TLS at all). Default false. For
    /// `otlphttp` the endpoint's scheme decides (`http://` is plaintext).
    pub insecure: Option<bool>,
    /// Use TLS but accept any server certificate. For tests only. Default false.
    pub insecure_skip_verify: bool,
    /// PEM file of CA certificates to trust instead of the system pool and
    /// the built-in roots.
    #[serde(deserialize_with = "pem_file_certs")]
    pub ca_file: Option<PathBuf>,
    /// The same certificates inline (PEM text); not together with `ca_file`.
    #[serde(deserialize_with = "pem_certs")]
    pub ca_pem: Option<String>,
    /// With `ca_file`/`ca_pem`: trust the system pool and the built-in
    /// roots as well. Without them both are always trusted. Default false.
    pub include_system_ca_certs_pool: bool,
    /// PEM client certificate chain for mTLS (needs `key_file` or `key_pem`).
    #[serde(deserialize_with = "pem_file_certs")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate chain inline (PEM text).
    #[serde(deserialize_with = "pem_certs")]
    pub cert_pem: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(deserialize_with = "pem_file_key")]
    pub key_file: Option<PathBuf>,
    /// The private key inline (PEM text).
    #[serde(deserialize_with = "pem_key")]
    pub key_pem: Option<String>,
    /// Lowest TLS version offered: `"1.2"` (default) or `"1.3"`. `"1.0"` and
    /// `"1.1"` are refused (rustls implements neither).
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version offered: `"1.2"` or `"1.3"` (default).
    pub max_version: Option<TlsVersion>,
    /// Server name to verify instead of the endpoint's host.
    pub server_name_override: Option<String>,
    /// Collector setting accepted and ignored (a warning names it): the
    /// files are read once at start.
    pub reload_interval: Unused,
}

/// A TLS protocol version, written `"1.2"` or `"1.3"` as in the Collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim() {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            "1.0" | "1.1" => Err(de::Error::custom(format_args!(
                "TLS {text} is not supported (flowscope's TLS library, rustls, implements \
                 only 1.2 and 1.3); write \"1.2\" or \"1.3\""
            ))),
            _ => Err(de::Error::custom(format_args!(
                "unknown TLS version `{text}`; write \"1.2\" or \"1.3\""
            ))),
        }
    }
}

impl TlsClientConfig {
    /// Cross-field rules, checked when the configuration loads.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.ca_file.is_some() && self.ca_pem.is_some() {
            return Err("give either `ca_file` or `ca_pem`, not both".to_owned());
        }
        if self.cert_file.is_some() && self.cert_pem.is_some() {
            return Err("give either `cert_file` or `cert_pem`, not both".to_owned());
        }
        if self.key_file.is_some() && self.key_pem.is_some() {
            return Err("give either `key_file` or `key_pem`, not both".to_owned());
        }
        let cert = self.cert_file.is_some() || self.cert_pem.is_some();
        let key = self.key_file.is_some() || self.key_pem.is_some();
        if cert != key {
            return Err(
                "a client certificate needs its key: give `cert_file` (or `cert_pem`) \
                 together with `key_file` (or `key_pem`)"
                    .to_owned(),
            );
        }
        if let (Some(min), Some(max)) = (self.min_version, self.max_version)
            && min > max
        {
            return Err("`min_version` is above `max_version`".to_owned());
        }
        Ok(())
    }

    pub(super) fn unused(&self, prefix: &str, out: &mut Vec<String>) {
        self.reload_interval.note(prefix, "reload_interval", out);
    }
}

pub(super) fn tls_settings<'de, D: Deserializer<'de>>(d: D) -> Result<TlsClientConfig, D::Error> {
    let tls = TlsClientConfig::deserialize(d)?;
    tls.check().map_err(de::Error::custom)?;
    Ok(tls)
}

/// Parses PEM certificates; the error says what is wrong.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        certs.push(c.map_err(|e| format!("bad PEM certificate: {e}"))?);
    }
    if certs.is_empty() {
        return Err("no PEM certificate (`-----BEGIN CERTIFICATE-----`) found".to_owned());
    }
    Ok(certs)
}

/// Parses one PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn parse_pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (`-----BEGIN PRIVATE KEY-----`) found".to_owned()
        }
        e => format!("bad PEM private key: {e}"),
    })
}

pub(super) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// A PEM certificate file, read and parsed when the configuration loads
/// (also the path receiver's `ca_file`).
pub(crate) fn pem_file_certs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = non_empty_path(d)?;
    let bytes = read_file(&path).map_err(de::Error::custom)?;
    parse_pem_certs(&bytes)
        .map_err(|e| de::Error::custom(format_args!("`{}`: {e}", path.display())))?;
    Ok(Some(path))
}

pub(super) fn pem_file_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = non_empty_path(d)?;
    let bytes = read_file(&path).map_err(de::Error::custom)?;
    parse_pem_key(&bytes)
        .map_err(|e| de::Error::custom(format_args!("`{}`: {e}", path.display())))?;
    Ok(Some(path))
}

pub(super) fn pem_certs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let pem = String::deserialize(d)?;
    parse_pem_certs(pem.as_bytes()).map_err(de::Error::custom)?;
    Ok(Some(pem))
}

pub(super) fn pem_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let pem = String::deserialize(d)?;
    parse_pem_key(pem.as_bytes()).map_err(de::Error::custom)?;
    Ok(Some(pem))
}

/// TLS server settings (`ui.tls`), as the Collector's `confighttp` server
/// `tls`: a certificate chain and its key, both PEM files, read and parsed
/// when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// PEM certificate chain the server presents (leaf first).
    #[serde(deserialize_with = "pem_file_certs")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "pem_file_key")]
    pub key_file: Option<PathBuf>,
}

pub(super) fn server_tls<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ServerTlsConfig>, D::Error> {
    let tls = ServerTlsConfig::deserialize(d)?;
    if tls.cert_file.is_none() || tls.key_file.is_none() {
        return Err(de::Error::custom(
            "serving HTTPS needs both `cert_file` and `key_file` (PEM files)",
        ));
    }
    Ok(Some(tls))
}
