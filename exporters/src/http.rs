//! `otlphttp`: OTLP/HTTP `POST` to the metrics URL, through hyper (the
//! HTTP stack tonic already brings) and the shared rustls connector.
//!
//! The body is the request as binary protobuf (`application/x-protobuf`)
//! or in the OTLP JSON mapping (`application/json`), gzip- or
//! zstd-compressed when configured (`Content-Encoding`). A 2xx answer may
//! carry an `ExportMetricsServiceResponse` whose `partial_success` counts
//! rejected points; 429, 502, 503 and 504 are retried (honouring
//! `Retry-After`); every other status fails at once, its `error.type` being
//! the status code.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flowscope_otel_config::exporters::{Compression, HttpEncoding};
use http::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use serde::Deserialize;

use crate::json::request_to_json;
use crate::otlp::{Attempt, Transport, parse_retry_after};
use crate::settings::Resolved;
use crate::tls::{TlsError, connector};

/// Why the HTTP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("header `{0}` is not a valid HTTP header")]
    Header(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Largest response body read (bigger is a connection error).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

pub(crate) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
    timeout: Duration,
    compression: Compression,
    encoding: HttpEncoding,
}

/// The configured headers as HTTP headers.
pub(crate) fn header_map(s: &Resolved) -> Result<HeaderMap, HttpError> {
    let mut headers = HeaderMap::new();
    for (k, v) in &s.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| HttpError::Header(k.clone()))?;
        let value = HeaderValue::from_str(v).map_err(|_| HttpError::Header(k.clone()))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Everything [`Http::new`] checks, without building the client.
pub(crate) fn check(s: &Resolved) -> Result<(), HttpError> {
    connector(&s.tls, false)?;
    header_map(s)?;
    Ok(())
}

impl Http {
    pub(crate) fn new(s: &Resolved) -> Result<Self, HttpError> {
        let client = Client::builder(TokioExecutor::new()).build(connector(&s.tls, false)?);
        let mut headers = header_map(s)?;
        let ua = concat!("flowscope/", env!("CARGO_PKG_VERSION"));
        headers.insert(USER_AGENT, HeaderValue::from_static(ua));
        Ok(Self {
            client,
            url: s.url.clone(),
            headers,
            timeout: s.timeout,
            compression: s.compression,
            encoding: s.encoding,
        })
    }

    /// The body, content type and content encoding of `req`.
    pub(crate) fn body(
        &self,
        req: &ExportMetricsServiceRequest,
    ) -> Result<(Vec<u8>, &'static str), String> {
        let (raw, ctype) = match self.encoding {
            HttpEncoding::Proto => (req.encode_to_vec(), "application/x-protobuf"),
            HttpEncoding::Json => (
                request_to_json(req)
                    .map_err(|e| format!("encoding OTLP JSON: {e}"))?
                    .into_bytes(),
                "application/json",
            ),
        };
        let body =
            compress(self.compression, raw).map_err(|e| format!("compressing the body: {e}"))?;
        Ok((body, ctype))
    }
}

/// Compresses `raw` as configured.
pub fn compress(c: Compression, raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(raw),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(raw.len() / 4),
                flate2::Compression::fast(),
            );
            e.write_all(&raw)?;
            e.finish()
        }
        Compression::Zstd => zstd::bulk::compress(&raw, 3),
    }
}

fn encoding_name(c: Compression) -> Option<&'static str> {
    match c {
        Compression::None => None,
        Compression::Gzip => Some("gzip"),
        Compression::Zstd => Some("zstd"),
    }
}

/// `ExportMetricsServiceResponse` in JSON, lenient on `rejectedDataPoints`
/// (an int64, hence a string in the OTLP mapping, but some servers write a
/// number).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonResponse {
    partial_success: Option<JsonPartial>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonPartial {
    rejected_data_points: Option<serde_json::Value>,
    error_message: String,
}

/// (rejected points, message) of a 2xx body.
fn partial_success(body: &[u8], json: bool) -> (u64, String) {
    if body.is_empty() {
        return (0, String::new());
    }
    if json {
        let Ok(r) = serde_json::from_slice::<JsonResponse>(body) else {
            return (0, String::new());
        };
        let Some(p) = r.partial_success else {
            return (0, String::new());
        };
        let n = match p.rejected_data_points {
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        (n, p.error_message)
    } else {
        match ExportMetricsServiceResponse::decode(body) {
            Ok(r) => {
                let p = r.partial_success.unwrap_or_default();
                (
                    u64::try_from(p.rejected_data_points).unwrap_or(0),
                    p.error_message,
                )
            }
            Err(_) => (0, String::new()),
        }
    }
}

impl Transport for Http {
    async fn send(&mut self, req: &ExportMetricsServiceRequest) -> Attempt {
        let (body, ctype) = match self.body(req) {
            Ok(b) => b,
            Err(message) => {
                return Attempt::Fail {
                    error_type: "encode".into(),
                    message,
                };
            }
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone());
        if let Some(h) = builder.headers_mut() {
            h.clone_from(&self.headers);
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
            if let Some(enc) = encoding_name(self.compression) {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
            }
        }
        let request = match builder.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Fail {
                    error_type: "encode".into(),
                    message: e.to_string(),
                };
            }
        };
        let exchange = async {
            let resp = self.client.request(request).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            // A response is a status and maybe a partial success: cap what
            // a misbehaving server can make us buffer.
            let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, headers, body))
        };
        let (status, headers, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Attempt::Retry {
                    error_type: "timeout".into(),
                    after: None,
                    message: format!("no answer within {:?}", self.timeout),
                };
            }
            Ok(Err(e)) => {
                return Attempt::Retry {
                    error_type: "connection".into(),
                    after: None,
                    message: chain(&*e),
                };
            }
            Ok(Ok(x)) => x,
        };
        classify(status, &headers, &body, self.encoding == HttpEncoding::Json)
    }
}

/// An error with its sources, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    json: bool,
) -> Attempt {
    if status.is_success() {
        let (rejected, message) = partial_success(body, json);
        return Attempt::Accepted { rejected, message };
    }
    let error_type = status.as_str().to_string();
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let message = format!("HTTP {status}: {text}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Attempt::Retry {
            error_type,
            after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
            message,
        },
        _ => Attempt::Fail {
            error_type,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;

    use super::*;

    #[test]
    fn statuses_and_partial_success() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &h, b"busy", false),
            Attempt::Retry {
                error_type: "503".into(),
                after: Some(Duration::from_secs(2)),
                message: "HTTP 503 Service Unavailable: busy".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &h, b"", false),
            Attempt::Fail { .. }
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b"", false),
            Attempt::Retry { after: None, .. }
        ));
        let resp = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "old".into(),
            }),
        };
        assert_eq!(
            classify(StatusCode::OK, &h, &resp.encode_to_vec(), false),
            Attempt::Accepted {
                rejected: 3,
                message: "old".into()
            }
        );
        let json = br#"{"partialSuccess":{"rejectedDataPoints":"4","errorMessage":"x"}}"#;
        assert_eq!(
            classify(StatusCode::OK, &h, json, true),
            Attempt::Accepted {
                rejected: 4,
                message: "x".into()
            }
        );
        assert_eq!(
            classify(StatusCode::OK, &h, b"", true),
            Attempt::Accepted {
                rejected: 0,
                message: String::new()
            }
        );
    }

    #[test]
    fn compression_round_trips() {
        let raw = b"flowscope ".repeat(1000);
        let gz = compress(Compression::Gzip, raw.clone()).unwrap();
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut back).unwrap();
        assert_eq!(back, raw);
        let z = compress(Compression::Zstd, raw.clone()).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), raw);
        assert!(gz.len() < 200 && z.len() < 200, "{} {}", gz.len(), z.len());
    }
}
