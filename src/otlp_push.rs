//! The SDK's OTLP exporters (`opentelemetry-otlp`) set up from a
//! `service.telemetry` exporter ([`OtlpPushExporter`]): one way for the
//! agent's own logs ([`crate::logs`]) and its own metrics
//! ([`crate::readers`]).
//!
//! gRPC exporters must be built inside the tokio runtime: the channel's
//! worker is spawned there, and the SDK's batch and periodic threads send
//! through it. HTTP exporters use the blocking reqwest client on those
//! threads and need no runtime.

use std::collections::HashMap;

use anyhow::Context as _;
use flowscope_otel_config::exporters::Compression;
use flowscope_otel_config::telemetry::{OtlpPushExporter, PushProtocol};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};

/// `builder` (an SDK exporter builder on the tonic transport) with the
/// endpoint, metadata, timeout and compression of `e`.
pub fn tonic<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    e: &OtlpPushExporter,
) -> anyhow::Result<B> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &e.headers {
        let key =
            http::HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("header `{k}`"))?;
        let value = http::HeaderValue::from_str(v).with_context(|| format!("header `{k}`"))?;
        headers.insert(key, value);
    }
    let metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
    let endpoint = if e.endpoint.contains("://") {
        e.endpoint.clone()
    } else if e.insecure {
        format!("http://{}", e.endpoint)
    } else {
        format!("https://{}", e.endpoint)
    };
    let mut b = builder.with_endpoint(endpoint).with_metadata(metadata);
    if let Some(t) = e.timeout {
        b = b.with_timeout(t);
    }
    if let Some(c) = compression(e.compression) {
        b = b.with_compression(c);
    }
    Ok(b)
}

/// `builder` (an SDK exporter builder on the HTTP transport) with the
/// URL, protocol, headers, timeout and compression of `e`.
pub fn http<B: WithExportConfig + WithHttpConfig>(builder: B, e: &OtlpPushExporter) -> B {
    let headers: HashMap<String, String> = e.headers.clone().into_iter().collect();
    let protocol = if e.protocol == PushProtocol::HttpJson {
        opentelemetry_otlp::Protocol::HttpJson
    } else {
        opentelemetry_otlp::Protocol::HttpBinary
    };
    let mut b = builder
        .with_endpoint(e.endpoint.clone())
        .with_protocol(protocol)
        .with_headers(headers);
    if let Some(t) = e.timeout {
        b = b.with_timeout(t);
    }
    if let Some(c) = compression(e.compression) {
        b = b.with_compression(c);
    }
    b
}

fn compression(c: Option<Compression>) -> Option<opentelemetry_otlp::Compression> {
    match c? {
        Compression::None => None,
        Compression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
        Compression::Zstd => Some(opentelemetry_otlp::Compression::Zstd),
    }
}
