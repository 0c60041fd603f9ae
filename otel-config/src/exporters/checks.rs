//! Checks the exporter configs share: endpoint URLs and headers as the
//! HTTP stack will parse them, listen addresses, request sizes, retry
//! factors, and the Collector settings flowscope reads and refuses
//! ([`Unused`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::de::duration;

/// A Collector setting flowscope accepts without acting on it, because it
/// changes nothing that matters here: whether the file sets it. Loading
/// warns once, naming every such key that is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unused {
    /// The key is in the file.
    pub set: bool,
}

impl Unused {
    pub(super) const SET: Unused = Unused { set: true };

    pub(super) fn note(self, prefix: &str, key: &str, out: &mut Vec<String>) {
        if self.set {
            out.push(format!("{prefix}{key}"));
        }
    }
}

impl<'de> Deserialize<'de> for Unused {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d)?;
        Ok(Unused::SET)
    }
}

/// A Collector setting that would change behaviour flowscope does not
/// have; the message says what to write instead.
pub(super) fn rejected<'de, D: Deserializer<'de>>(
    d: D,
    message: &'static str,
) -> Result<Unused, D::Error> {
    de::IgnoredAny::deserialize(d)?;
    Err(de::Error::custom(message))
}

pub(super) fn reject_auth<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "flowscope has no authenticator extensions; send the credential as a header \
         instead, e.g. `headers: {authorization: \"Bearer ${env:TOKEN}\"}`",
    )
}

pub(super) fn reject_authority<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "not supported: flowscope sends the endpoint's host:port as the authority; to verify \
         the server under another name set `tls.server_name_override`",
    )
}

pub(super) fn reject_proxy<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "flowscope does not send through a proxy; point `endpoint` at the backend or at a \
         Collector that forwards",
    )
}

pub(super) fn reject_const_labels<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "not supported: add the labels as Resource attributes instead \
         (`resource_to_telemetry_conversion` copies them onto every series)",
    )
}

pub(super) fn reject_server_tls<'de, D: Deserializer<'de>>(d: D) -> Result<Unused, D::Error> {
    rejected(
        d,
        "the prometheus exporter serves plain HTTP; put a TLS-terminating proxy in front, or \
         listen on 127.0.0.1 only",
    )
}

pub(super) fn request_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    opt_request_size(d).map(|v| v.unwrap_or(1024))
}

/// The gRPC endpoint as [`OtlpExporterConfig::endpoint`] takes it: the URL
/// it stands for (`host:port` gets `https://`, or `http://` if `insecure`
/// is decided later; the scheme does not change what is checked here).
///
/// # Errors
/// A message saying what is wrong and what to write.
pub fn parse_grpc_endpoint(endpoint: &str) -> Result<http::Uri, String> {
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    };
    let uri = parse_url(endpoint, &url)?;
    Ok(uri)
}

/// An `http://` or `https://` URL with a host.
///
/// # Errors
/// A message saying what is wrong and what to write.
pub fn parse_http_url(url: &str) -> Result<http::Uri, String> {
    parse_url(url, url)
}

pub(super) fn parse_url(written: &str, url: &str) -> Result<http::Uri, String> {
    let example = "write `host:port` or `http(s)://host:port`";
    if !url.contains("://") {
        return Err(format!(
            "`{written}` has no scheme; write `http(s)://host:port`"
        ));
    }
    if let Some((scheme, _)) = url.split_once("://")
        && !matches!(scheme, "http" | "https")
    {
        return Err(format!(
            "`{written}`: scheme `{scheme}` is not supported, only `http` and `https`; {example}"
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{written}` is not a valid URL ({e}); {example}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "`{written}`: scheme `{other}` is not supported, only `http` and `https`; \
                 {example}"
            ));
        }
        None => return Err(format!("`{written}` has no scheme; {example}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{written}` has no host; {example}"));
    }
    Ok(uri)
}

pub(super) fn grpc_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    parse_grpc_endpoint(&text).map_err(de::Error::custom)?;
    Ok(Some(text))
}

pub(super) fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    parse_http_url(&text).map_err(de::Error::custom)?;
    Ok(Some(text))
}

/// Checks one header as [`OtlpExporterConfig::headers`] (`grpc`) or
/// [`OtlpHttpExporterConfig::headers`] send it.
///
/// # Errors
/// A message naming the header and what is wrong.
pub fn check_header(name: &str, value: &str, grpc: bool) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "`{name}` is not a valid header name (letters, digits and `!#$%&'*+-.^_`|~`)"
        ));
    }
    if grpc && name.to_ascii_lowercase().ends_with("-bin") {
        return Err(format!(
            "`{name}`: gRPC metadata ending in `-bin` is binary, which headers cannot carry"
        ));
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "the value of header `{name}` may only hold visible ASCII characters, spaces and tabs"
        ));
    }
    Ok(())
}

pub(super) fn headers<'de, D: Deserializer<'de>>(
    d: D,
    grpc: bool,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (k, v) in &map {
        check_header(k, v, grpc).map_err(de::Error::custom)?;
    }
    Ok(map)
}

pub(super) fn grpc_headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    headers(d, true)
}

pub(super) fn http_headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    headers(d, false)
}

/// A server's `address:port` (the `prometheus` exporter, `health_check`,
/// a `pull` reader).
pub(crate) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    check_listen_address(&text).map_err(de::Error::custom)?;
    Ok(text)
}

/// Why `text` is not an address to listen on, if it is not.
pub(crate) fn check_listen_address(text: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let fail = |why: String| {
        format!(
            "`{text}` is not an address to listen on ({why}); write `address:port`, e.g. \
             `127.0.0.1:9464` or `[::]:9464`"
        )
    };
    if text.contains("://") {
        return Err(fail("no scheme".to_owned()));
    }
    let addrs = text.to_socket_addrs().map_err(|e| fail(e.to_string()))?;
    if addrs.count() == 0 {
        return Err(fail("it resolves to no address".to_owned()));
    }
    Ok(())
}

pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

pub(super) fn opt_request_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let value = usize::deserialize(d)?;
    if value < 1024 {
        return Err(de::Error::custom("must be at least 1024 bytes"));
    }
    Ok(Some(value))
}

pub(super) fn multiplier<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !value.is_finite() || value < 1.0 {
        return Err(de::Error::custom("must be a number of at least 1"));
    }
    Ok(value)
}

pub(super) fn unit_interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(de::Error::custom("must be between 0 and 1"));
    }
    Ok(value)
}
