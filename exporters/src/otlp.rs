//! What `otlp` and `otlphttp` share: batches prepared into requests at
//! submit time, the persistent-queue codec, and delivery with retries as
//! the OTLP specification prescribes.
//!
//! Preparing at submit time (temporality, encoding, splitting by size) means
//! the queue, and the queue directory, hold exactly the requests that will
//! be sent: a restart resends the same bytes.
//!
//! Delivery of one request ([`deliver`]): a success may carry a
//! `partial_success` whose rejected points are counted
//! (`error.type="rejected"`) and never retried; a retryable error (gRPC
//! CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE,
//! DATA_LOSS, RESOURCE_EXHAUSTED with RetryInfo; HTTP 429, 502, 503, 504;
//! connection errors and timeouts) is retried after the server's
//! `Retry-After`/`RetryInfo` delay if it gave one, else after an
//! exponentially growing, jittered backoff, until `max_elapsed_time` since
//! the batch's first try; anything else fails at once. Failed points are
//! counted with the last error's `error.type`.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use flowscope_model::internal_events::ExporterFailed;
use flowscope_model::telemetry::Component;
use flowscope_model::{MetricBatch, Telemetry};
use flowscope_otel_config::exporters::RetryConfig;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use tokio::time::Instant;

use crate::encode::{Temporality, encode, encode_points, request_points, split};
use crate::queue::{Codec, Item};
use crate::temporality::Cumulative;
use crate::{HealthCell, Outcome, Sink};

/// `error.type` of points a backend refused in a `partial_success`.
pub const REJECTED: &str = "rejected";

/// One batch, ready to send: requests no larger than the size limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub requests: Vec<ExportMetricsServiceRequest>,
    pub points: u64,
}

impl Item for Prepared {
    fn points(&self) -> u64 {
        self.points
    }
}

/// Queue records: the requests, each length-delimited protobuf.
pub(crate) struct PreparedCodec;

impl Codec<Prepared> for PreparedCodec {
    fn encode(&self, item: &Prepared) -> Vec<u8> {
        let mut buf = Vec::new();
        for r in &item.requests {
            // Writing into a Vec cannot run out of space.
            let _ = r.encode_length_delimited(&mut buf);
        }
        buf
    }

    fn decode(&self, mut bytes: &[u8]) -> Result<Prepared, String> {
        let mut requests = Vec::new();
        while !bytes.is_empty() {
            let r = ExportMetricsServiceRequest::decode_length_delimited(&mut bytes)
                .map_err(|e| e.to_string())?;
            requests.push(r);
        }
        let points = requests.iter().map(request_points).sum();
        Ok(Prepared { requests, points })
    }
}

/// Turns batches into [`Prepared`] requests, keeping cumulative state.
pub(crate) struct Preparer {
    pub(crate) component: Component,
    pub(crate) telemetry: Telemetry,
    pub(crate) temporality: Temporality,
    pub(crate) cumulative: Mutex<Cumulative>,
    pub(crate) max_request_bytes: usize,
}

impl Preparer {
    pub(crate) fn new(
        component: Component,
        telemetry: Telemetry,
        temporality: Temporality,
        series_idle: Duration,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            component,
            telemetry,
            temporality,
            cumulative: Mutex::new(Cumulative::new(series_idle)),
            max_request_bytes,
        }
    }

    pub(crate) fn prepare(&self, batch: &MetricBatch) -> Option<Prepared> {
        let enc = match self.temporality {
            Temporality::Delta => encode(batch),
            Temporality::Cumulative => {
                let mut state = self.cumulative.lock().unwrap_or_else(|e| e.into_inner());
                let points = state.update(batch);
                encode_points(
                    points.iter().map(|(p, s)| (p, *s)),
                    batch.time_unix_nanos,
                    Temporality::Cumulative,
                )
            }
        };
        if enc.skipped > 0 {
            self.telemetry.emit(ExporterFailed {
                exporter: &self.component,
                error_type: "encode",
                count: enc.skipped,
            });
            tracing::warn!(exporter = %self.component, points = enc.skipped, "points whose value does not match their instrument were not exported");
        }
        if enc.points == 0 {
            return None;
        }
        Some(Prepared {
            requests: split(enc.request, self.max_request_bytes),
            points: enc.points,
        })
    }
}

/// The result of one try of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Accepted; `rejected` points were refused in a partial success.
    Accepted { rejected: u64, message: String },
    /// Worth another try, after `after` if the server said so.
    Retry {
        error_type: String,
        after: Option<Duration>,
        message: String,
    },
    /// Not worth another try.
    Fail { error_type: String, message: String },
}

/// Sends one request (OTLP over gRPC or HTTP, a remote-write body).
pub(crate) trait Transport: Send + 'static {
    /// What one try sends.
    type Request: Sync;
    fn send(&mut self, req: &Self::Request) -> impl Future<Output = Attempt> + Send;
}

/// Exponential backoff with jitter (the Collector's defaults: 5 s, x1.5,
/// at most 30 s, +-50 %).
pub(crate) struct Backoff {
    next: Duration,
    cfg: RetryConfig,
}

impl Backoff {
    pub(crate) fn new(cfg: &RetryConfig) -> Self {
        Self {
            next: cfg.initial_interval,
            cfg: cfg.clone(),
        }
    }

    /// The next wait: the current interval scaled by a random factor in
    /// `[1 - r, 1 + r]`; the interval then grows by `multiplier` up to
    /// `max_interval`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = scale(base, self.cfg.multiplier).min(self.cfg.max_interval);
        let r = self.cfg.randomization_factor;
        scale(base, 1.0 - r + 2.0 * r * fastrand::f64())
    }
}

/// `d * f`, saturating instead of panicking on overflow (intervals come
/// from the config, which may hold absurd values).
fn scale(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX)
}

/// Delivers `req`, which carries `points` data points, retrying per the
/// module docs; every try sends the same request. `started` is the batch's
/// first try. Adds what became of its points to `out`.
pub(crate) async fn deliver<T: Transport>(
    transport: &mut T,
    req: &T::Request,
    points: u64,
    retry: &RetryConfig,
    started: Instant,
    out: &mut Outcome,
    health: Option<&HealthCell>,
) {
    let mut backoff = Backoff::new(retry);
    loop {
        match transport.send(req).await {
            Attempt::Accepted { rejected, message } => {
                let rejected = rejected.min(points);
                out.sent += points - rejected;
                if rejected > 0 {
                    tracing::warn!(
                        rejected,
                        "backend accepted the request partially: {message}"
                    );
                    out.fail(
                        rejected,
                        REJECTED,
                        format!("partial success, {rejected} points rejected: {message}"),
                    );
                }
                return;
            }
            Attempt::Fail {
                error_type,
                message,
            } => {
                out.fail(points, &error_type, message);
                return;
            }
            Attempt::Retry {
                error_type,
                after,
                message,
            } => {
                let delay = match after {
                    Some(d) => d,
                    None => backoff.next_delay(),
                };
                if !retry.enabled
                    || started.elapsed().saturating_add(delay) > retry.max_elapsed_time
                {
                    let why = if retry.enabled {
                        "retries exhausted"
                    } else {
                        "retry disabled"
                    };
                    out.fail(points, &error_type, format!("{message} ({why})"));
                    return;
                }
                tracing::debug!(error_type, ?delay, "export failed, retrying: {message}");
                // Say so now rather than when the batch finally gives up.
                if let Some(h) = health {
                    let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                    h.delivering = false;
                    h.last_error = Some(format!("{message} (retrying)"));
                }
                out.retry(&error_type);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The sink of `otlp`/`otlphttp`: every request of a batch in order.
pub(crate) struct OtlpSink<T> {
    pub(crate) transport: T,
    pub(crate) retry: RetryConfig,
    pub(crate) health: Option<HealthCell>,
}

impl<T: Transport<Request = ExportMetricsServiceRequest>> Sink for OtlpSink<T> {
    type Item = Prepared;

    async fn export(&mut self, item: &Prepared) -> Outcome {
        let mut out = Outcome::default();
        let started = Instant::now();
        for req in &item.requests {
            deliver(
                &mut self.transport,
                req,
                request_points(req),
                &self.retry,
                started,
                &mut out,
                self.health.as_ref(),
            )
            .await;
        }
        out
    }
}

/// The `Retry-After` header: seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;

    struct Script(VecDeque<Attempt>, Vec<Instant>);

    impl Transport for Script {
        type Request = ExportMetricsServiceRequest;
        async fn send(&mut self, _req: &ExportMetricsServiceRequest) -> Attempt {
            self.1.push(Instant::now());
            self.0.pop_front().unwrap_or(Attempt::Fail {
                error_type: "script".into(),
                message: "end".into(),
            })
        }
    }

    fn req(points: usize) -> ExportMetricsServiceRequest {
        let mut b = MetricBatch::new(0, 1);
        let r = Arc::new(flowscope_model::Attrs::new());
        for i in 0..points {
            b.points.push(flowscope_model::Point {
                resource: r.clone(),
                metric: flowscope_model::metrics::FLOW_IO,
                attrs: flowscope_model::Attrs::new().with("i", i as i64),
                value: flowscope_model::PointValue::Int(1),
            });
        }
        encode(&b).request
    }

    fn retry(max_elapsed: u64) -> RetryConfig {
        RetryConfig {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(4),
            max_elapsed_time: Duration::from_secs(max_elapsed),
            multiplier: 2.0,
            randomization_factor: 0.0,
            enabled: true,
        }
    }

    fn retry_after(s: u64) -> Attempt {
        Attempt::Retry {
            error_type: "503".into(),
            after: Some(Duration::from_secs(s)),
            message: "busy".into(),
        }
    }

    fn unavailable() -> Attempt {
        Attempt::Retry {
            error_type: "unavailable".into(),
            after: None,
            message: "down".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_and_retry_after_wins() {
        let mut t = Script(
            VecDeque::from([
                unavailable(),
                unavailable(),
                unavailable(),
                unavailable(),
                retry_after(2),
                Attempt::Accepted {
                    rejected: 0,
                    message: String::new(),
                },
            ]),
            Vec::new(),
        );
        let mut out = Outcome::default();
        let start = Instant::now();
        deliver(&mut t, &req(3), 3, &retry(60), start, &mut out, None).await;
        let gaps: Vec<u64> =
            t.1.windows(2)
                .map(|w| (w[1] - w[0]).as_millis() as u64)
                .collect();
        // 1, 2, 4, 4 (capped), then the server's 2 s.
        assert_eq!(gaps, [1000, 2000, 4000, 4000, 2000]);
        assert_eq!((out.sent, out.retries), (3, 5));
        assert!(out.failed.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_max_elapsed_and_counts_with_the_last_error() {
        let mut t = Script(VecDeque::from(vec![unavailable(); 10]), Vec::new());
        let mut out = Outcome::default();
        deliver(
            &mut t,
            &req(5),
            5,
            &retry(6),
            Instant::now(),
            &mut out,
            None,
        )
        .await;
        // Tries at 0, 1, 3 s; the next wait (4 s) would end past 6 s.
        assert_eq!(t.1.len(), 3);
        assert_eq!(out.failed, vec![("unavailable".to_string(), 5)]);
        assert_eq!(out.sent, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_and_partial_success_are_not_retried() {
        let mut t = Script(
            VecDeque::from([
                Attempt::Fail {
                    error_type: "400".into(),
                    message: "bad".into(),
                },
                Attempt::Accepted {
                    rejected: 2,
                    message: "2 too old".into(),
                },
            ]),
            Vec::new(),
        );
        let mut out = Outcome::default();
        deliver(
            &mut t,
            &req(4),
            4,
            &retry(60),
            Instant::now(),
            &mut out,
            None,
        )
        .await;
        deliver(
            &mut t,
            &req(5),
            5,
            &retry(60),
            Instant::now(),
            &mut out,
            None,
        )
        .await;
        assert_eq!(t.1.len(), 2);
        assert_eq!(out.sent, 3);
        assert_eq!(
            out.failed,
            vec![("400".to_string(), 4), (REJECTED.to_string(), 2)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_server_delays_and_intervals_do_not_panic() {
        let huge = Attempt::Retry {
            error_type: "503".into(),
            after: Some(Duration::MAX),
            message: "x".into(),
        };
        let mut t = Script(VecDeque::from([huge]), Vec::new());
        let mut out = Outcome::default();
        deliver(
            &mut t,
            &req(1),
            1,
            &retry(60),
            Instant::now(),
            &mut out,
            None,
        )
        .await;
        assert_eq!(out.failed, vec![("503".to_string(), 1)]);
        let mut cfg = retry(60);
        cfg.initial_interval = Duration::MAX;
        cfg.max_interval = Duration::MAX;
        let mut b = Backoff::new(&cfg);
        assert_eq!(b.next_delay(), Duration::MAX);
        assert_eq!(b.next_delay(), Duration::MAX);
    }

    #[test]
    fn jitter_stays_within_the_factor() {
        let mut cfg = retry(60);
        cfg.randomization_factor = 0.5;
        for _ in 0..200 {
            let d = Backoff::new(&cfg).next_delay();
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_millis(1500),
                "{d:?}"
            );
        }
    }

    #[test]
    fn codec_round_trips_and_rejects_garbage() {
        let p = Prepared {
            requests: vec![req(2), req(3)],
            points: 5,
        };
        let bytes = PreparedCodec.encode(&p);
        assert_eq!(PreparedCodec.decode(&bytes).unwrap(), p);
        assert!(PreparedCodec.decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
