//! `prometheus` exporter: a pull endpoint in the Prometheus text format
//! (0.0.4), names translated as the OpenTelemetry "Prometheus and
//! OpenMetrics compatibility" specification says:
//!
//! - the name's characters outside `[a-zA-Z0-9_:]` become `_` (repeated
//!   `_` collapse), then the unit is appended (`By` -> `_bytes`, `s` ->
//!   `_seconds`, `1` on a gauge -> `_ratio`, `a/b` -> `_a_per_b`,
//!   annotations in braces like `{packet}` dropped), then `_total` on
//!   counters: `network.flow.io` (By, sum) -> `network_flow_io_bytes_total`,
//!   `flowscope.tcp.rtt` (s, histogram) -> `flowscope_tcp_rtt_seconds`;
//! - non-monotonic sums (UpDownCounters such as
//!   `flowscope.tcp.connection.active`) are gauges, without `_total`;
//! - every family has a `# HELP` line: the metric's description;
//! - attribute keys become label names the same way (`network.peer.port` ->
//!   `network_peer_port`);
//! - `service.name` becomes `job` (prefixed by `service.namespace/`),
//!   `service.instance.id` becomes `instance`; with
//!   `resource_to_telemetry_conversion` (default on) every Resource attribute
//!   is also a label, otherwise they go on one `target_info` series per
//!   Resource.
//!
//! The translation (names, labels, `target_info`) is the one the
//! `prometheusremotewrite` exporter uses too ([`metric_name`],
//! [`series_labels`], [`target_info_labels`]), so a series has the same
//! name and labels whether it is scraped or pushed.
//!
//! Sums are cumulative here (Prometheus counters): the exporter folds every
//! delta batch into running totals ([`crate::temporality`]) and forgets
//! series not updated for `metric_expiration`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use flowscope_model::names::{SCOPE_NAME, resource};
use flowscope_model::{Attrs, Kind, MetricBatch, MetricId, PointValue};
use flowscope_otel_config::exporters::PrometheusExporterConfig;

use crate::temporality::Cumulative;
use crate::{Outcome, Sink};

/// Rendering options.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: Option<String>,
    pub add_metric_suffixes: bool,
    pub resource_labels: bool,
}

impl From<&PrometheusExporterConfig> for Options {
    fn from(c: &PrometheusExporterConfig) -> Self {
        Self {
            namespace: c.namespace.clone(),
            add_metric_suffixes: c.add_metric_suffixes,
            resource_labels: c.resource_to_telemetry_conversion.enabled,
        }
    }
}

/// Characters outside `[a-zA-Z0-9_:]` -> `_`, runs of `_` collapsed, a
/// leading digit prefixed by `_`.
pub fn sanitize(s: &str, allow_colon: bool) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Prometheus word for a UCUM unit (`By` -> `bytes`), as the
/// compatibility specification's translator maps them; other units are
/// kept, sanitized.
fn main_unit_word(u: &str) -> String {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        // UCUM writes the kilo prefix `k`; `KBy` is the spelling the
        // Collector's table uses. Both mean 1000 bytes.
        "kBy" | "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "bit" => "bits",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => return sanitize(other, false).trim_matches('_').to_string(),
    }
    .to_string()
}

/// The word for the unit after `/` (singular: `By/s` -> `bytes_per_second`).
fn per_unit_word(u: &str) -> String {
    match u {
        "s" => "second",
        "m" => "minute",
        "min" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" | "wk" => "week",
        "mo" => "month",
        "y" | "a" => "year",
        other => return main_unit_word(other),
    }
    .to_string()
}

/// Drops `{annotations}`: a count of packets (`{packet}`) has no unit.
fn strip_annotations(unit: &str) -> String {
    let mut u = String::new();
    let mut depth = 0u32;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => u.push(c),
            _ => {}
        }
    }
    u.trim().to_string()
}

/// The Prometheus unit suffix for a UCUM unit, or None to add none: words
/// for abbreviations, annotations dropped, `1` -> `ratio` on gauges only,
/// `a/b` -> `a_per_b`.
fn unit_word(unit: &str, kind: Kind) -> Option<String> {
    let (main, per) = match unit.split_once('/') {
        Some((a, b)) => (strip_annotations(a), strip_annotations(b)),
        None => (strip_annotations(unit), String::new()),
    };
    let main = match main.as_str() {
        "" => None,
        "1" => (kind == Kind::Gauge && per.is_empty()).then(|| "ratio".to_string()),
        u => Some(main_unit_word(u)).filter(|w| !w.is_empty()),
    };
    let per = match per.as_str() {
        "" | "1" => None,
        u => Some(per_unit_word(u)).filter(|w| !w.is_empty()),
    };
    match (main, per) {
        (None, None) => None,
        (Some(m), None) => Some(m),
        (None, Some(p)) => Some(format!("per_{p}")),
        (Some(m), Some(p)) => Some(format!("{m}_per_{p}")),
    }
}

/// The Prometheus metric name of `m` (without `_bucket`/`_sum`/`_count`).
pub fn metric_name(m: MetricId, o: &Options) -> String {
    let mut name = sanitize(m.name(), true);
    if o.add_metric_suffixes {
        if let Some(unit) = unit_word(m.unit(), m.kind())
            && !name.ends_with(&format!("_{unit}"))
        {
            name.push('_');
            name.push_str(&unit);
        }
        if m.kind() == Kind::Sum && !name.ends_with("_total") {
            name.push_str("_total");
        }
    }
    if let Some(ns) = &o.namespace {
        name = format!("{}_{name}", sanitize(ns, true));
    }
    name
}

/// A label value as Prometheus' text format and PromQL's double-quoted
/// strings both write it: backslash, quote and newline escaped.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A sample value or `le` bound as Prometheus writes it (`+Inf`, `NaN`).
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `otel_scope_name`, the label the compatibility specification puts on
/// every series: the instrumentation scope of flowscope's metrics.
pub const SCOPE_NAME_LABEL: &str = "otel_scope_name";
/// `otel_scope_version`: the scope's version (flowscope's).
pub const SCOPE_VERSION_LABEL: &str = "otel_scope_version";

/// Adds `key`=`value` unless the label is already set or the value is
/// empty (Prometheus reads an empty label as an absent one).
fn add_label(l: &mut BTreeMap<String, String>, key: String, value: String) {
    if !value.is_empty() {
        l.entry(key).or_insert(value);
    }
}

/// Labels of a series: point attributes, then the scope's name and version,
/// then job/instance, then (when enabled) Resource attributes; a label
/// already set is not overwritten, an empty value is left out. Sorted by
/// name, each name once.
pub fn series_labels(res: &Attrs, attrs: &Attrs, o: &Options) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for (k, v) in attrs.iter() {
        add_label(&mut l, sanitize(k, false), v.to_string());
    }
    l.entry(SCOPE_NAME_LABEL.to_string())
        .or_insert_with(|| SCOPE_NAME.to_string());
    l.entry(SCOPE_VERSION_LABEL.to_string())
        .or_insert_with(|| env!("CARGO_PKG_VERSION").to_string());
    for (k, v) in job_instance(res) {
        add_label(&mut l, k.to_string(), v);
    }
    if o.resource_labels {
        for (k, v) in res.iter() {
            add_label(&mut l, sanitize(k, false), v.to_string());
        }
    }
    l
}

/// Labels of a Resource's `target_info` series: `job`/`instance`, then
/// every Resource attribute.
pub fn target_info_labels(res: &Attrs) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for (k, v) in job_instance(res) {
        add_label(&mut l, k.to_string(), v);
    }
    for (k, v) in res.iter() {
        add_label(&mut l, sanitize(k, false), v.to_string());
    }
    l
}

fn job_instance(res: &Attrs) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(name) = res.get(resource::SERVICE_NAME) {
        let job = match res.get("service.namespace") {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        out.push(("job", job));
    }
    if let Some(id) = res.get("service.instance.id") {
        out.push(("instance", id.to_string()));
    }
    out
}

fn label_text(l: &BTreeMap<String, String>, extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{}\"", escape(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// The text exposition of every live series.
pub fn render(state: &Cumulative, o: &Options) -> String {
    // family name -> (type, help, per series: (labels, sample lines))
    type Family = (&'static str, &'static str, Vec<(String, Vec<String>)>);
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut resources: BTreeMap<String, ()> = BTreeMap::new();
    for ((res, metric, attrs), series) in state.iter() {
        let name = metric_name(*metric, o);
        let l = series_labels(res, attrs, o);
        if !o.resource_labels {
            resources.insert(label_text(&target_info_labels(res), None), ());
        }
        let (ty, _, blocks) = families.entry(name.clone()).or_insert_with(|| {
            let ty = match metric.kind() {
                Kind::Sum => "counter",
                // A non-monotonic sum is a gauge in Prometheus (the
                // compatibility specification's mapping).
                Kind::UpDownCounter | Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            (ty, metric.description(), Vec::new())
        });
        let mut lines = Vec::new();
        match (&series.value, *ty) {
            (PointValue::Histogram(h), "histogram") => {
                let mut cum = 0u64;
                for (i, c) in h.counts.iter().enumerate() {
                    cum += c;
                    let le = h
                        .bounds
                        .get(i)
                        .map_or_else(|| "+Inf".to_string(), |b| number(*b));
                    lines.push(format!(
                        "{name}_bucket{} {cum}",
                        label_text(&l, Some(("le", &le)))
                    ));
                }
                lines.push(format!(
                    "{name}_sum{} {}",
                    label_text(&l, None),
                    number(h.sum)
                ));
                lines.push(format!("{name}_count{} {}", label_text(&l, None), h.count));
            }
            (PointValue::Int(v), _) => lines.push(format!("{name}{} {v}", label_text(&l, None))),
            (v, _) => lines.push(format!(
                "{name}{} {}",
                label_text(&l, None),
                number(v.as_f64())
            )),
        }
        blocks.push((label_text(&l, None), lines));
    }
    let mut out = String::new();
    for (name, (ty, help, mut blocks)) in families {
        // Series in label order; a histogram's lines stay in bucket order.
        blocks.sort();
        if !help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        }
        let _ = writeln!(out, "# TYPE {name} {ty}");
        for line in blocks.into_iter().flat_map(|(_, lines)| lines) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !resources.is_empty() {
        let _ = writeln!(out, "# TYPE target_info gauge");
        for l in resources.keys() {
            let _ = writeln!(out, "target_info{l} 1");
        }
    }
    out
}

/// A `# HELP` text as the exposition format wants it: backslash and line
/// feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Folds batches into the state the endpoint renders.
pub(crate) struct PrometheusSink {
    pub(crate) state: Arc<Mutex<Cumulative>>,
}

impl Sink for PrometheusSink {
    type Item = MetricBatch;

    async fn export(&mut self, batch: &MetricBatch) -> Outcome {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.update(batch);
        Outcome::sent(batch.points.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flowscope_model::metrics::{FLOW_IO, FLOW_PACKETS, TCP_ACTIVE, TCP_RTT};
    use flowscope_model::names::attr;
    use flowscope_model::{Histogram, Point};

    use super::*;

    fn opts() -> Options {
        Options {
            namespace: None,
            add_metric_suffixes: true,
            resource_labels: true,
        }
    }

    #[test]
    fn names_follow_the_compatibility_spec() {
        let o = opts();
        assert_eq!(metric_name(FLOW_IO, &o), "network_flow_io_bytes_total");
        assert_eq!(
            metric_name(FLOW_PACKETS, &o),
            "flowscope_flow_packets_total"
        );
        assert_eq!(metric_name(TCP_RTT, &o), "flowscope_tcp_rtt_seconds");
        assert_eq!(
            metric_name(TCP_ACTIVE, &o),
            "flowscope_tcp_connection_active"
        );
        let ratio = MetricId::gauge(&("flowscope.path.reachable", "1", ""));
        assert_eq!(metric_name(ratio, &o), "flowscope_path_reachable_ratio");
        let rate = MetricId::gauge(&("x.rate", "By/s", ""));
        assert_eq!(metric_name(rate, &o), "x_rate_bytes_per_second");
        let o2 = Options {
            namespace: Some("fs".into()),
            add_metric_suffixes: false,
            resource_labels: true,
        };
        assert_eq!(metric_name(FLOW_IO, &o2), "fs_network_flow_io");
        assert_eq!(sanitize("9a..b-c", false), "_9a_b_c");
    }

    #[test]
    fn units_follow_the_compatibility_spec() {
        let u = |unit, kind| unit_word(unit, kind);
        let sum = Kind::Sum;
        let gauge = Kind::Gauge;
        assert_eq!(u("By", sum).as_deref(), Some("bytes"));
        assert_eq!(u("kBy", sum).as_deref(), Some("kilobytes"));
        assert_eq!(u("KBy", sum).as_deref(), Some("kilobytes"));
        assert_eq!(u("KiBy", sum).as_deref(), Some("kibibytes"));
        assert_eq!(u("MiBy", gauge).as_deref(), Some("mebibytes"));
        assert_eq!(u("s", Kind::Histogram).as_deref(), Some("seconds"));
        assert_eq!(u("ms", Kind::Histogram).as_deref(), Some("milliseconds"));
        assert_eq!(u("us", sum).as_deref(), Some("microseconds"));
        assert_eq!(u("min", sum).as_deref(), Some("minutes"));
        assert_eq!(u("%", gauge).as_deref(), Some("percent"));
        assert_eq!(u("Cel", gauge).as_deref(), Some("celsius"));
        // `1`: a ratio on a gauge, nothing on a counter.
        assert_eq!(u("1", gauge).as_deref(), Some("ratio"));
        assert_eq!(u("1", sum), None);
        // Annotations carry no unit, alone or around a rate.
        assert_eq!(u("{packet}", sum), None);
        assert_eq!(u("{connection}", gauge), None);
        assert_eq!(u("{packet}/s", gauge).as_deref(), Some("per_second"));
        assert_eq!(u("By/s", gauge).as_deref(), Some("bytes_per_second"));
        assert_eq!(u("m/s", gauge).as_deref(), Some("meters_per_second"));
        assert_eq!(u("By/h", gauge).as_deref(), Some("bytes_per_hour"));
        assert_eq!(u("1/s", gauge).as_deref(), Some("per_second"));
        assert_eq!(u("", sum), None);
        // Unknown units are kept, sanitized.
        assert_eq!(u("flows", sum).as_deref(), Some("flows"));
        let m = MetricId::gauge(&("net.speed", "kBy/s", ""));
        assert_eq!(metric_name(m, &opts()), "net_speed_kilobytes_per_second");
        assert_eq!(sanitize("", false), "_");
    }

    #[test]
    fn renders_counters_gauges_histograms_exactly() {
        let r = Arc::new(
            Attrs::new()
                .with(resource::SERVICE_NAME, "checkout")
                .with(resource::PROCESS_PID, 42i64),
        );
        let a = Attrs::new()
            .with(attr::PEER_ADDRESS, "198.18.0.2")
            .with(attr::PEER_PORT, 443u16);
        let mut h = Histogram::new(Arc::from(&[0.001, 0.01][..]));
        h.record(0.0005);
        h.record(0.02);
        let mut b = MetricBatch::new(0, 10_000_000_000);
        b.points = vec![
            Point {
                resource: r.clone(),
                metric: FLOW_IO,
                attrs: a.clone().with(attr::IO_DIRECTION, "transmit"),
                value: PointValue::Int(1000),
            },
            Point {
                resource: r.clone(),
                metric: TCP_ACTIVE,
                attrs: a.clone(),
                value: PointValue::Int(2),
            },
            Point {
                resource: r.clone(),
                metric: TCP_RTT,
                attrs: a.clone(),
                value: PointValue::Histogram(h),
            },
        ];
        let mut st = Cumulative::new(Duration::from_secs(300));
        st.update(&b);
        // A second interval adds to the counter and replaces the gauge.
        let mut b2 = MetricBatch::new(10_000_000_000, 20_000_000_000);
        b2.points = vec![
            Point {
                resource: r.clone(),
                metric: FLOW_IO,
                attrs: a.clone().with(attr::IO_DIRECTION, "transmit"),
                value: PointValue::Int(500),
            },
            Point {
                resource: r,
                metric: TCP_ACTIVE,
                attrs: a,
                value: PointValue::Int(1),
            },
        ];
        st.update(&b2);
        let v = env!("CARGO_PKG_VERSION");
        let l = format!(
            r#"job="checkout",network_peer_address="198.18.0.2",network_peer_port="443",otel_scope_name="flowscope",otel_scope_version="{v}",process_pid="42",service_name="checkout""#
        );
        let want = format!(
            "# HELP flowscope_tcp_connection_active TCP connections open now.\n\
             # TYPE flowscope_tcp_connection_active gauge\n\
             flowscope_tcp_connection_active{{{l}}} 1\n\
             # HELP flowscope_tcp_rtt_seconds Smoothed TCP round-trip time, one sample per connection and interval.\n\
             # TYPE flowscope_tcp_rtt_seconds histogram\n\
             flowscope_tcp_rtt_seconds_bucket{{{l},le=\"0.001\"}} 1\n\
             flowscope_tcp_rtt_seconds_bucket{{{l},le=\"0.01\"}} 1\n\
             flowscope_tcp_rtt_seconds_bucket{{{l},le=\"+Inf\"}} 2\n\
             flowscope_tcp_rtt_seconds_sum{{{l}}} 0.0205\n\
             flowscope_tcp_rtt_seconds_count{{{l}}} 2\n\
             # HELP network_flow_io_bytes_total Bytes a flow carried, by direction.\n\
             # TYPE network_flow_io_bytes_total counter\n\
             network_flow_io_bytes_total{{job=\"checkout\",network_io_direction=\"transmit\",network_peer_address=\"198.18.0.2\",network_peer_port=\"443\",otel_scope_name=\"flowscope\",otel_scope_version=\"{v}\",process_pid=\"42\",service_name=\"checkout\"}} 1500\n"
        );
        assert_eq!(render(&st, &opts()), want);
        // A description with a backslash or a line feed stays on its line.
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");

        let o = Options {
            resource_labels: false,
            ..opts()
        };
        let text = render(&st, &o);
        assert!(text.contains(&format!("flowscope_tcp_connection_active{{job=\"checkout\",network_peer_address=\"198.18.0.2\",network_peer_port=\"443\",otel_scope_name=\"flowscope\",otel_scope_version=\"{v}\"}} 1\n")), "{text}");
        assert!(text.ends_with("# TYPE target_info gauge\ntarget_info{job=\"checkout\",process_pid=\"42\",service_name=\"checkout\"} 1\n"), "{text}");
    }
}
