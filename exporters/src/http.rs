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
use flowscope_otel_config::exporters::{Compression, HttpEncoding, TlsClientConfig};
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
    #[error("endpoint `{0}` is not a valid URL")]
    Endpoint(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Largest response body read (bigger is a connection error).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

pub(crate) struct Http {
    poster: Poster,
    compression: Compression,
    encoding: HttpEncoding,
}

/// `POST`s to one URL (what `otlphttp` and `prometheusremotewrite` share):
/// the shared rustls connector, the configured headers plus a User-Agent,
/// and a deadline on each exchange.
pub(crate) struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
    timeout: Duration,
}

/// What one `POST` got back: (status, headers, body).
pub(crate) type Answer = (StatusCode, HeaderMap, Bytes);

impl Poster {
    pub(crate) fn new<'a>(
        url: Uri,
        tls: &TlsClientConfig,
        headers: impl IntoIterator<Item = (&'a String, &'a String)>,
        timeout: Duration,
    ) -> Result<Self, HttpError> {
        let client = Client::builder(TokioExecutor::new()).build(connector(tls, false)?);
        let mut headers = header_map(headers)?;
        let ua = concat!("flowscope/", env!("CARGO_PKG_VERSION"));
        headers.insert(USER_AGENT, HeaderValue::from_static(ua));
        Ok(Self {
            client,
            url,
            headers,
            timeout,
        })
    }

    /// Sends `body` with the configured headers and `extra`; the answer, or
    /// the [`Attempt`] a missing answer calls for (timeouts and connection
    /// errors are retried, a request that cannot be built is not).
    pub(crate) async fn post(
        &self,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Answer, Attempt> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone());
        if let Some(h) = builder.headers_mut() {
            h.clone_from(&self.headers);
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        let request = builder.body(Full::new(body)).map_err(|e| Attempt::Fail {
            error_type: "encode".into(),
            message: e.to_string(),
        })?;
        let exchange = async {
            let resp = self.client.request(request).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            // A response is a status and maybe a short message: cap what a
            // misbehaving server can make us buffer.
            let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, headers, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(Attempt::Retry {
                error_type: "timeout".into(),
                after: None,
                message: format!("no answer within {:?}", self.timeout),
            }),
            Ok(Err(e)) => Err(Attempt::Retry {
                error_type: "connection".into(),
                after: None,
                message: chain(&*e),
            }),
            Ok(Ok(x)) => Ok(x),
        }
    }
}

/// The configured headers as HTTP headers.
pub(crate) fn header_map<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<HeaderMap, HttpError> {
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
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
    header_map(s.headers.iter().map(|(k, v)| (k, v)))?;
    Ok(())
}

impl Http {
    pub(crate) fn new(s: &Resolved) -> Result<Self, HttpError> {
        Ok(Self {
            poster: Poster::new(
                s.url.clone(),
                &s.tls,
                s.headers.iter().map(|(k, v)| (k, v)),
                s.timeout,
            )?,
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
    type Request = ExportMetricsServiceRequest;
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
        let mut extra = vec![(CONTENT_TYPE, HeaderValue::from_static(ctype))];
        if let Some(enc) = encoding_name(self.compression) {
            extra.push((CONTENT_ENCODING, HeaderValue::from_static(enc)));
        }
        let (status, headers, body) = match self.poster.post(Bytes::from(body), &extra).await {
            Ok(answer) => answer,
            Err(attempt) => return attempt,
        };
        classify(status, &headers, &body, self.encoding == HttpEncoding::Json)
    }
}

/// An error with its sources, `a: b: c`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    flowscope_model::errors::error_chain(e)
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
    refused(
        status,
        headers,
        body,
        matches!(status.as_u16(), 429 | 502 | 503 | 504),
    )
}

/// The [`Attempt`] for a status that refused the request: `error.type` is
/// the status code, the message quotes the start of the body, and a
/// retryable one waits for the server's `Retry-After` if it gave one.
pub(crate) fn refused(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    retryable: bool,
) -> Attempt {
    let error_type = status.as_str().to_string();
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let message = format!("HTTP {status}: {}", text.trim_end());
    if retryable {
        Attempt::Retry {
            error_type,
            after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
            message,
        }
    } else {
        Attempt::Fail {
            error_type,
            message,
        }
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
