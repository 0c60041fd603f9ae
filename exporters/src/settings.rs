//! Resolution of an OTLP exporter's settings: the config file first, then
//! the `OTEL_EXPORTER_OTLP_METRICS_*` variables, then `OTEL_EXPORTER_OTLP_*`,
//! then the defaults, as the OTLP exporter specification orders them
//! (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>).
//!
//! Read: `ENDPOINT` (for HTTP the generic one gets `/v1/metrics` appended,
//! the metrics one is used as is), `INSECURE` (gRPC, endpoint without
//! scheme), `CERTIFICATE`, `CLIENT_CERTIFICATE`, `CLIENT_KEY`, `HEADERS`
//! (`k=v,k2=v2`, values percent-decoded; config headers win on the same
//! key), `COMPRESSION` (`gzip`, `zstd`, `none`), `TIMEOUT` (milliseconds),
//! and `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` (`delta`,
//! `cumulative`, `lowmemory` = delta for flowscope's counters).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use flowscope_model::percent;

use flowscope_otel_config::exporters::{
    Compression, HttpEncoding, OtlpExporterConfig, OtlpHttpExporterConfig, RetryConfig,
    SendingQueueConfig, Temporality as CfgTemporality, TlsClientConfig,
};

use crate::encode::Temporality;

pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_SERIES_IDLE: Duration = Duration::from_secs(300);

/// A setting that could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("`{var}`=`{value}`: {why}")]
    Env {
        var: String,
        value: String,
        why: &'static str,
    },
    #[error("endpoint `{0}` is not a valid URL (write `host:port` or `scheme://host:port`)")]
    Endpoint(String),
    /// A file named by a variable cannot be read.
    #[error("`{var}` names `{}`, which cannot be read", path.display())]
    EnvFile {
        var: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` asks for the other transport.
    #[error("`{var}`=`{value}` {message}")]
    Protocol {
        var: String,
        value: String,
        message: String,
    },
}

/// The transport an exporter type speaks, to check
/// `OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL` against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `otlp` / `otlp_grpc`.
    Grpc,
    /// `otlphttp` / `otlp_http`.
    Http,
}

/// The OTLP specification lets `OTEL_EXPORTER_OTLP_PROTOCOL` choose the
/// transport; in flowscope the exporter type chooses it, so a variable that
/// asks for the other one is an error naming the fix rather than being
/// silently ignored. `http/json` with `otlphttp` is accepted (the body
/// encoding is the exporter's `encoding`).
pub fn check_protocol(
    env: &dyn Fn(&str) -> Option<String>,
    ours: Protocol,
) -> Result<(), SettingsError> {
    let Some((var, value, _)) = lookup(env, "PROTOCOL") else {
        return Ok(());
    };
    let message = match (value.as_str(), ours) {
        ("grpc", Protocol::Grpc) | ("http/protobuf" | "http/json", Protocol::Http) => {
            return Ok(());
        }
        ("http/protobuf" | "http/json", Protocol::Grpc) => {
            "asks for OTLP/HTTP, but this exporter (type `otlp`/`otlp_grpc`) sends OTLP/gRPC: \
             for OTLP/HTTP use an `otlp_http` (or `otlphttp`) exporter with the :4318 endpoint, \
             or unset the variable (or set it to `grpc`)"
        }
        ("grpc", Protocol::Http) => {
            "asks for OTLP/gRPC, but this exporter (type `otlphttp`/`otlp_http`) sends \
             OTLP/HTTP: for OTLP/gRPC use an `otlp_grpc` (or `otlp`) exporter with the :4317 \
             endpoint, or unset the variable (or set it to `http/protobuf`)"
        }
        _ => "is not an OTLP protocol; expected `grpc`, `http/protobuf` or `http/json`",
    };
    Err(SettingsError::Protocol {
        var,
        value,
        message: message.to_owned(),
    })
}

/// An OTLP exporter's settings after env and defaults.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Full URL: for gRPC `scheme://host:port`, for HTTP the metrics URL.
    pub url: http::Uri,
    /// gRPC without TLS.
    pub plaintext: bool,
    pub tls: TlsClientConfig,
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    pub timeout: Duration,
    pub temporality: Temporality,
    pub series_idle: Duration,
    pub max_request_bytes: usize,
    pub encoding: HttpEncoding,
    pub queue: SendingQueueConfig,
    pub retry: RetryConfig,
}

/// Looks up a variable: the metrics-specific one, then the generic one.
/// Returns (value, whether it was the metrics-specific one).
fn lookup(env: &dyn Fn(&str) -> Option<String>, suffix: &str) -> Option<(String, String, bool)> {
    let specific = format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}");
    if let Some(v) = env(&specific).filter(|v| !v.trim().is_empty()) {
        return Some((specific, v.trim().to_string(), true));
    }
    let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
    env(&generic)
        .filter(|v| !v.trim().is_empty())
        .map(|v| (generic, v.trim().to_string(), false))
}

struct Common<'a> {
    tls: &'a TlsClientConfig,
    headers: &'a BTreeMap<String, String>,
    compression: Option<Compression>,
    timeout: Option<Duration>,
    temporality: Option<CfgTemporality>,
    series_idle: Option<Duration>,
    max_request_bytes: Option<usize>,
    queue: &'a SendingQueueConfig,
    retry: &'a RetryConfig,
}

fn resolve_common(
    c: Common<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    url: http::Uri,
    plaintext: bool,
    encoding: HttpEncoding,
) -> Result<Resolved, SettingsError> {
    let bad = |var: String, value: String, why| SettingsError::Env { var, value, why };
    let mut tls = c.tls.clone();
    // A file named by a variable must be readable; the error names the
    // variable (the config's own files were checked when it loaded).
    let path = |suffix| -> Result<Option<PathBuf>, SettingsError> {
        let Some((var, v, _)) = lookup(env, suffix) else {
            return Ok(None);
        };
        let p = PathBuf::from(v);
        std::fs::File::open(&p).map_err(|source| SettingsError::EnvFile {
            var,
            path: p.clone(),
            source,
        })?;
        Ok(Some(p))
    };
    if tls.ca_file.is_none() && tls.ca_pem.is_none() {
        tls.ca_file = path("CERTIFICATE")?;
    }
    if tls.cert_file.is_none() && tls.cert_pem.is_none() {
        tls.cert_file = path("CLIENT_CERTIFICATE")?;
    }
    if tls.key_file.is_none() && tls.key_pem.is_none() {
        tls.key_file = path("CLIENT_KEY")?;
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    if let Some((var, v, _)) = lookup(env, "HEADERS") {
        for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((k, val)) = pair.split_once('=') else {
                return Err(bad(
                    var,
                    v.clone(),
                    "expected `key=value` pairs separated by `,`",
                ));
            };
            let (Some(k), Some(val)) = (
                percent::decode_strict(k.trim()),
                percent::decode_strict(val.trim()),
            ) else {
                return Err(bad(var, v.clone(), "bad percent-encoding"));
            };
            headers.insert(k.to_ascii_lowercase(), val);
        }
    }
    for (k, v) in c.headers {
        headers.insert(k.to_ascii_lowercase(), v.clone());
    }
    let compression = match c.compression {
        Some(x) => x,
        None => match lookup(env, "COMPRESSION") {
            Some((var, v, _)) => match v.to_ascii_lowercase().as_str() {
                "gzip" => Compression::Gzip,
                "zstd" => Compression::Zstd,
                "none" => Compression::None,
                _ => return Err(bad(var, v, "expected gzip, zstd or none")),
            },
            None => Compression::Gzip,
        },
    };
    let timeout = match c.timeout {
        Some(t) => t,
        None => match lookup(env, "TIMEOUT") {
            Some((var, v, _)) => match v.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => return Err(bad(var, v, "expected milliseconds")),
            },
            None => DEFAULT_TIMEOUT,
        },
    };
    let temporality = match c.temporality {
        Some(CfgTemporality::Delta) => Temporality::Delta,
        Some(CfgTemporality::Cumulative) => Temporality::Cumulative,
        None => {
            let var = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
            match env(var).map(|v| v.trim().to_ascii_lowercase()) {
                None => Temporality::Delta,
                Some(v) if v.is_empty() || v == "delta" || v == "lowmemory" => Temporality::Delta,
                Some(v) if v == "cumulative" => Temporality::Cumulative,
                Some(v) => {
                    return Err(bad(
                        var.into(),
                        v,
                        "expected delta, cumulative or lowmemory",
                    ));
                }
            }
        }
    };
    Ok(Resolved {
        url,
        plaintext,
        tls,
        headers: headers.into_iter().collect(),
        compression,
        timeout,
        temporality,
        series_idle: c.series_idle.unwrap_or(DEFAULT_SERIES_IDLE),
        max_request_bytes: c.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
        encoding,
        queue: c.queue.clone(),
        retry: c.retry.clone(),
    })
}

fn parse_uri(s: &str) -> Result<http::Uri, SettingsError> {
    s.parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme().is_some() && u.host().is_some())
        .ok_or_else(|| SettingsError::Endpoint(s.to_string()))
}

/// `otlp` (gRPC).
pub fn resolve_grpc(
    c: &OtlpExporterConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, SettingsError> {
    check_protocol(env, Protocol::Grpc)?;
    let endpoint = match &c.endpoint {
        Some(e) => e.clone(),
        None => {
            lookup(env, "ENDPOINT").map_or_else(|| DEFAULT_GRPC_ENDPOINT.to_string(), |(_, v, _)| v)
        }
    };
    let insecure = match c.tls.insecure {
        Some(b) => b,
        None => match lookup(env, "INSECURE") {
            Some((_, v, _)) => v.eq_ignore_ascii_case("true"),
            None => false,
        },
    };
    // A scheme decides; without one, TLS unless `insecure`.
    let (url, plaintext) = if endpoint.contains("://") {
        let u = parse_uri(&endpoint)?;
        let plain = u.scheme_str() == Some("http");
        (u, plain)
    } else {
        let scheme = if insecure { "http" } else { "https" };
        (parse_uri(&format!("{scheme}://{endpoint}"))?, insecure)
    };
    resolve_common(
        Common {
            tls: &c.tls,
            headers: &c.headers,
            compression: c.compression,
            timeout: c.timeout,
            temporality: c.temporality,
            series_idle: c.series_idle_timeout,
            max_request_bytes: c.max_request_bytes,
            queue: &c.sending_queue,
            retry: &c.retry_on_failure,
        },
        env,
        url,
        plaintext,
        HttpEncoding::Proto,
    )
}

/// `otlphttp`.
pub fn resolve_http(
    c: &OtlpHttpExporterConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, SettingsError> {
    check_protocol(env, Protocol::Http)?;
    let join = |base: &str| format!("{}/v1/metrics", base.trim_end_matches('/'));
    let url = if let Some(m) = &c.metrics_endpoint {
        m.clone()
    } else if let Some(e) = &c.endpoint {
        join(e)
    } else {
        match lookup(env, "ENDPOINT") {
            Some((_, v, true)) => v,
            Some((_, v, false)) => join(&v),
            None => join(DEFAULT_HTTP_ENDPOINT),
        }
    };
    let url = parse_uri(&url)?;
    let plaintext = url.scheme_str() == Some("http");
    resolve_common(
        Common {
            tls: &c.tls,
            headers: &c.headers,
            compression: c.compression,
            timeout: c.timeout,
            temporality: c.temporality,
            series_idle: c.series_idle_timeout,
            max_request_bytes: c.max_request_bytes,
            queue: &c.sending_queue,
            retry: &c.retry_on_failure,
        },
        env,
        url,
        plaintext,
        c.encoding,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use flowscope_model::env::fixed as env;

    #[test]
    fn http_endpoint_rules_of_the_spec() {
        let c = OtlpHttpExporterConfig::default();
        let r = resolve_http(&c, &env(&[])).unwrap();
        assert_eq!(r.url.to_string(), "http://localhost:4318/v1/metrics");
        let r = resolve_http(
            &c,
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw:4318/base/")]),
        )
        .unwrap();
        assert_eq!(r.url.to_string(), "https://gw:4318/base/v1/metrics");
        let r = resolve_http(
            &c,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw:4318"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://m:1/custom"),
            ]),
        )
        .unwrap();
        assert_eq!(r.url.to_string(), "https://m:1/custom");
        let mut c2 = c.clone();
        c2.endpoint = Some("http://cfg:9".into());
        let r = resolve_http(
            &c2,
            &env(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://m:1/x")]),
        )
        .unwrap();
        assert_eq!(r.url.to_string(), "http://cfg:9/v1/metrics");
        assert!(r.plaintext);
    }

    #[test]
    fn grpc_scheme_insecure_headers_timeout_temporality() {
        let mut c = OtlpExporterConfig::default();
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%3Db,X-Team = net "),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "only=metrics"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "Cumulative",
            ),
        ]);
        let r = resolve_grpc(&c, &e).unwrap();
        assert_eq!(r.url.to_string(), "http://collector:4317/");
        assert!(r.plaintext);
        // The metrics-specific variable wins over the generic one whole.
        assert_eq!(r.headers, vec![("only".to_string(), "metrics".to_string())]);
        assert_eq!(r.timeout, Duration::from_millis(2500));
        assert_eq!(r.compression, Compression::None);
        assert_eq!(r.temporality, Temporality::Cumulative);

        c.headers.insert("Only".into(), "cfg".into());
        c.endpoint = Some("gw:4317".into());
        c.tls.insecure = Some(false);
        c.compression = Some(Compression::Zstd);
        let r = resolve_grpc(&c, &e).unwrap();
        assert_eq!(r.url.to_string(), "https://gw:4317/");
        assert!(!r.plaintext);
        assert_eq!(r.headers, vec![("only".to_string(), "cfg".to_string())]);
        assert_eq!(r.compression, Compression::Zstd);

        let e = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%3Db,X-Team = net ")]);
        let r = resolve_grpc(&OtlpExporterConfig::default(), &e).unwrap();
        assert_eq!(
            r.headers,
            vec![
                ("api-key".to_string(), "a=b".to_string()),
                ("x-team".to_string(), "net".to_string())
            ]
        );
        assert_eq!(r.url.to_string(), "http://localhost:4317/");
        assert_eq!(
            (r.timeout, r.compression, r.temporality),
            (DEFAULT_TIMEOUT, Compression::Gzip, Temporality::Delta)
        );
    }

    #[test]
    fn a_protocol_variable_asking_for_the_other_transport_is_an_error() {
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        assert_eq!(
            resolve_grpc(&OtlpExporterConfig::default(), &e)
                .unwrap_err()
                .to_string(),
            "`OTEL_EXPORTER_OTLP_PROTOCOL`=`http/protobuf` asks for OTLP/HTTP, but this exporter \
             (type `otlp`/`otlp_grpc`) sends OTLP/gRPC: for OTLP/HTTP use an `otlp_http` (or \
             `otlphttp`) exporter with the :4318 endpoint, or unset the variable (or set it to \
             `grpc`)"
        );
        assert!(resolve_http(&OtlpHttpExporterConfig::default(), &e).is_ok());
        let e = env(&[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")]);
        assert!(resolve_grpc(&OtlpExporterConfig::default(), &e).is_err());
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ]);
        // The metrics-specific variable wins.
        assert!(resolve_grpc(&OtlpExporterConfig::default(), &e).is_ok());
        let err = resolve_http(&OtlpHttpExporterConfig::default(), &e)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`=`grpc` asks for OTLP/gRPC, but this exporter \
             (type `otlphttp`/`otlp_http`) sends OTLP/HTTP: for OTLP/gRPC use an `otlp_grpc` (or \
             `otlp`) exporter with the :4317 endpoint, or unset the variable (or set it to \
             `http/protobuf`)"
        );
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")]);
        assert!(
            resolve_grpc(&OtlpExporterConfig::default(), &e)
                .unwrap_err()
                .to_string()
                .contains("expected `grpc`, `http/protobuf` or `http/json`")
        );
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert!(resolve_grpc(&OtlpExporterConfig::default(), &e).is_ok());
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let e = env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]);
        let err = resolve_grpc(&OtlpExporterConfig::default(), &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_TIMEOUT") && err.contains("milliseconds"),
            "{err}"
        );
        let e = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]);
        assert!(resolve_grpc(&OtlpExporterConfig::default(), &e).is_err());
        let e = env(&[(
            "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            "/nonexistent/ca.pem",
        )]);
        assert_eq!(
            resolve_http(&OtlpHttpExporterConfig::default(), &e)
                .unwrap_err()
                .to_string(),
            "`OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE` names `/nonexistent/ca.pem`, which cannot \
             be read"
        );
    }
}
