//! `otlp`: OTLP/gRPC through tonic.
//!
//! The channel connects lazily, so the agent starts while the backend is
//! down; every request carries the configured headers as metadata, the
//! timeout as `grpc-timeout` (and a local deadline of the same length), and
//! is compressed with gzip or zstd when configured. Status codes are
//! classified as the OTLP specification lists them; a RESOURCE_EXHAUSTED is
//! retried only when the server attached a `google.rpc.RetryInfo`, whose
//! delay is then honoured (as is any RetryInfo on a retryable code).

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use flowscope_otel_config::exporters::Compression;

use crate::otlp::{Attempt, Transport};
use crate::settings::Resolved;
use crate::tls::{ForceTls, TlsError, connector};

/// Why the gRPC exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("endpoint `{url}`")]
    Endpoint {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("header `{0}` is not valid gRPC metadata")]
    Header(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

pub(crate) struct Grpc {
    client: MetricsServiceClient<Channel>,
    headers: MetadataMap,
    timeout: Duration,
}

/// The channel's endpoint: with TLS, tonic gets an `http://` URI and the
/// connector does TLS (tonic refuses `https://` unless its own TLS is
/// compiled in).
fn endpoint(s: &Resolved) -> Result<Endpoint, GrpcError> {
    let url = if s.plaintext {
        s.url.to_string()
    } else {
        let authority = s.url.authority().map_or("", |a| a.as_str());
        format!("http://{authority}")
    };
    Endpoint::from_shared(url.clone()).map_err(|source| GrpcError::Endpoint { url, source })
}

/// The configured headers as gRPC metadata.
fn metadata(s: &Resolved) -> Result<MetadataMap, GrpcError> {
    let mut headers = MetadataMap::new();
    for (k, v) in &s.headers {
        let key =
            MetadataKey::from_bytes(k.as_bytes()).map_err(|_| GrpcError::Header(k.clone()))?;
        let value =
            MetadataValue::try_from(v.as_str()).map_err(|_| GrpcError::Header(k.clone()))?;
        headers.insert(key, value);
    }
    Ok(headers)
}

/// Everything [`Grpc::new`] checks, without opening a channel (which needs
/// a runtime).
pub(crate) fn check(s: &Resolved) -> Result<(), GrpcError> {
    endpoint(s)?;
    if !s.plaintext {
        connector(&s.tls, true)?;
    }
    metadata(s)?;
    Ok(())
}

impl Grpc {
    pub(crate) fn new(s: &Resolved) -> Result<Self, GrpcError> {
        // With TLS, tonic gets an `http://` URI and the connector does TLS
        // (tonic refuses `https://` unless its own TLS is compiled in).
        let endpoint = endpoint(s)?.connect_timeout(s.timeout).tcp_nodelay(true);
        let channel = if s.plaintext {
            endpoint.connect_lazy()
        } else {
            endpoint.connect_with_connector_lazy(ForceTls(connector(&s.tls, true)?))
        };
        let mut client = MetricsServiceClient::new(channel)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(usize::MAX);
        client = match s.compression {
            Compression::Gzip => client.send_compressed(CompressionEncoding::Gzip),
            Compression::Zstd => client.send_compressed(CompressionEncoding::Zstd),
            Compression::None => client,
        };
        let headers = metadata(s)?;
        Ok(Self {
            client,
            headers,
            timeout: s.timeout,
        })
    }
}

impl Transport for Grpc {
    type Request = ExportMetricsServiceRequest;
    async fn send(&mut self, req: &ExportMetricsServiceRequest) -> Attempt {
        let mut r = tonic::Request::new(req.clone());
        *r.metadata_mut() = self.headers.clone();
        r.set_timeout(self.timeout);
        match tokio::time::timeout(self.timeout, self.client.export(r)).await {
            Err(_) => Attempt::Retry {
                error_type: "timeout".into(),
                after: None,
                message: format!("no answer within {:?}", self.timeout),
            },
            Ok(Ok(resp)) => {
                let ps = resp.into_inner().partial_success.unwrap_or_default();
                Attempt::Accepted {
                    rejected: u64::try_from(ps.rejected_data_points).unwrap_or(0),
                    message: ps.error_message,
                }
            }
            Ok(Err(status)) => classify(&status),
        }
    }
}

/// The contract's `error.type` for a gRPC code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Retryable or not, per the OTLP specification's table.
pub(crate) fn classify(status: &Status) -> Attempt {
    let error_type = code_name(status.code()).to_string();
    let message = status.message().to_string();
    let after = retry_info(status);
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => after.is_some(),
        _ => false,
    };
    if retryable {
        Attempt::Retry {
            error_type,
            after,
            message,
        }
    } else {
        Attempt::Fail {
            error_type,
            message,
        }
    }
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The delay of a `RetryInfo` in the status details, if any.
fn retry_info(status: &Status) -> Option<Duration> {
    let details = RpcStatus::decode(status.details()).ok()?;
    let any = details
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let d = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos))
}

/// A status carrying a RetryInfo of `delay` (for test servers).
pub fn status_with_retry_info(code: Code, message: &str, delay: Duration) -> Status {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        }),
    };
    let details = RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_spec() {
        assert!(matches!(
            classify(&Status::unavailable("x")),
            Attempt::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("x")),
            Attempt::Fail { .. }
        ));
        // RESOURCE_EXHAUSTED only with RetryInfo, whose delay is used.
        assert!(matches!(
            classify(&Status::resource_exhausted("x")),
            Attempt::Fail { .. }
        ));
        let s = status_with_retry_info(
            Code::ResourceExhausted,
            "slow down",
            Duration::from_millis(1500),
        );
        assert_eq!(
            classify(&s),
            Attempt::Retry {
                error_type: "resource_exhausted".into(),
                after: Some(Duration::from_millis(1500)),
                message: "slow down".into()
            }
        );
    }
}
