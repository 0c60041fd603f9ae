//! The PromQL the fleet view sends: metric names as the exporters translate
//! them, the exact increase of a counter over a window, and the recording
//! rules' names and expressions.

use super::*;

/// The Prometheus name of `metric` (as the exporters translate it), with
/// `_bucket` for a histogram.
pub fn prom_name(metric: MetricId) -> String {
    let o = Options {
        namespace: None,
        add_metric_suffixes: true,
        resource_labels: true,
    };
    let name = metric_name(metric, &o);
    if metric.kind() == Kind::Histogram {
        format!("{name}_bucket")
    } else {
        name
    }
}

/// How the storage is asked for the exact increase of a counter.
///
/// PromQL has no function for it: `increase()` extrapolates to the range's
/// edges. So by default it is joined from two selections (the last value
/// minus the value at the start, or the last value alone), which costs the
/// storage two joins over every series: at 100 simulated nodes, on half the
/// RTT buckets, the join took VictoriaMetrics 1.2-1.6 s where reading the
/// series took 0.4 s (Prometheus: 2.6-3.1 s and 0.8-1.2 s; docs/benchmarks.md,
/// "VictoriaMetrics' own increase"). MetricsQL has the exact increase as one
/// function, `increase_pure()` (counters start at zero; resets counted),
/// read in one pass; [`super::Fleet`] asks the storage once whether it
/// knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Increase {
    /// `((last_over_time(x[w]) - x offset w) >= 0) or last_over_time(x[w])`:
    /// any PromQL engine (Prometheus, Thanos, Mimir).
    Joined,
    /// `increase_pure(x[w])`: MetricsQL (VictoriaMetrics).
    Pure,
}

/// The query that tells the two apart: a storage that does not know
/// `increase_pure` refuses it (Prometheus: `bad_data`); one that does
/// answers an empty vector, as no series has this name.
pub(super) const INCREASE_PROBE: &str = "increase_pure(flowscope_probe_absent_series[1m])";

/// The PromQL of `metric` over the `window_ns` before the evaluation time,
/// summed by `by` (label names from [`sanitize`], never user text).
///
/// Counters (and histogram buckets): the exact increase, as the module
/// documentation says, asked as `increase` says. Gauges: the last value.
pub fn expr(metric: MetricId, by: &BTreeSet<String>, window_ns: u64, increase: Increase) -> String {
    expr_offset(metric, by, window_ns, 0, increase)
}

/// [`expr`] for the window that ends `offset_ns` before the evaluation
/// time (PromQL `offset`): the baseline spans of the Health page.
pub fn expr_offset(
    metric: MetricId,
    by: &BTreeSet<String>,
    window_ns: u64,
    offset_ns: u64,
    increase: Increase,
) -> String {
    expr_shard(metric, by, window_ns, offset_ns, "", increase)
}

/// A histogram's buckets asked as two queries, split by the last character
/// of `le`: the storage evaluates them at once (on two cores), and the UI
/// reads the first answer while the second is made. Any split is exact,
/// as each bucket series is in one part; this one halves the contract's
/// default bounds (and the simulated fleet's). At 100 simulated nodes the
/// RTT buckets are 110,000 of the Map's 190,000 series (#18).
pub(super) const HISTOGRAM_SHARDS: [&str; 2] = [r#"le=~".*5""#, r#"le!~".*5""#];

/// The bytes asked as two queries, split by direction, when the Map and
/// Analytics ask them alone, first (module documentation, "Only what a
/// page shows"), from an engine that evaluates a query on one core
/// ([`Increase::Joined`]: Prometheus): at 100 simulated nodes Prometheus
/// took 0.40 s for all of them, 0.24 s for the two halves at once.
/// VictoriaMetrics spreads one query over the cores already (0.20 - 0.27 s
/// whole, 0.14 - 0.25 s in halves); and asked with the other metrics, the
/// cores are busy anyway.
pub(super) const DIRECTION_SHARDS: [&str; 2] = [
    r#"network_io_direction="transmit""#,
    r#"network_io_direction!="transmit""#,
];

/// The queries `metric` is asked in: each selects the series of one
/// matcher list, every series in one.
pub(super) fn shards(metric: MetricId) -> &'static [&'static str] {
    if metric.kind() == Kind::Histogram {
        &HISTOGRAM_SHARDS
    } else {
        &[""]
    }
}

/// The selector of the series named `name` that `matchers` (a
/// comma-separated list such as `le=~".*5"`, or nothing) select.
fn selector(name: String, matchers: &str) -> String {
    match matchers {
        "" => name,
        m => format!("{name}{{{m}}}"),
    }
}

/// Matcher lists joined into one (each may be empty).
pub(super) fn and(a: &str, b: &str) -> String {
    match (a, b) {
        ("", m) | (m, "") => m.to_string(),
        (a, b) => format!("{a},{b}"),
    }
}

/// The matcher selecting the series whose `label` is one of `values`
/// exactly; `""` among them selects the series without the label. Values
/// are the storage's own (never a request's), escaped for the regular
/// expression and then for the PromQL string, so that any text stays
/// literal. Prometheus and VictoriaMetrics anchor a label regex at both
/// ends and look an alternation of literals up in their index.
pub(super) fn one_of<'a>(label: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let alternation: Vec<String> = values.into_iter().map(regex_literal).collect();
    format!("{label}=~{}", quoted(&alternation.join("|")))
}

/// `s` as a regular expression (RE2, Go's and Rust's syntax) that matches
/// exactly `s`: its metacharacters escaped as Go's `regexp.QuoteMeta`
/// does, control characters as `\x{..}`.
pub(super) fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            out.push_str(&format!("\\x{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` as a double-quoted PromQL (and MetricsQL) string, escaped as the
/// `prometheus` exporter escapes a label value (`s` holds no other control
/// character: [`regex_literal`] escapes them).
pub(super) fn quoted(s: &str) -> String {
    format!("\"{}\"", crate::prometheus::escape(s))
}

/// [`expr_offset`] over the series `matchers` (a list such as
/// `le=~".*5"`, or nothing) select.
pub(super) fn expr_shard(
    metric: MetricId,
    by: &BTreeSet<String>,
    window_ns: u64,
    offset_ns: u64,
    matchers: &str,
    increase: Increase,
) -> String {
    let name = selector(prom_name(metric), matchers);
    let mut by: Vec<&str> = by.iter().map(String::as_str).collect();
    if metric.kind() == Kind::Histogram {
        by.push("le");
    }
    let by = by.join(", ");
    let window = Window::new(window_ns, offset_ns);
    match metric.kind() {
        Kind::Gauge | Kind::UpDownCounter => format!("max by ({by}) ({})", window.last(&name)),
        _ => format!("sum by ({by}) ({})", window.increase(&name, increase)),
    }
}

/// A window of whole seconds (at least one) that ends `offset` seconds
/// before the evaluation time.
pub(super) struct Window {
    secs: u64,
    offset: u64,
}

impl Window {
    pub(super) fn new(window_ns: u64, offset_ns: u64) -> Self {
        Window {
            secs: (window_ns / NS).max(1),
            offset: offset_ns / NS,
        }
    }

    /// `sel`'s range over the window: `sel[300s]`, `sel[300s] offset 60s`.
    fn range(&self, sel: &str) -> String {
        match self.offset {
            0 => format!("{sel}[{}s]", self.secs),
            o => format!("{sel}[{}s] offset {o}s", self.secs),
        }
    }

    /// The last value of every series `sel` selects in the window.
    pub(super) fn last(&self, sel: &str) -> String {
        format!("last_over_time({})", self.range(sel))
    }

    /// The exact increase of every counter `sel` selects in the window (an
    /// expression to put in parentheses).
    pub(super) fn increase(&self, sel: &str, increase: Increase) -> String {
        match increase {
            Increase::Pure => format!("increase_pure({})", self.range(sel)),
            Increase::Joined => {
                let last = self.last(sel);
                let before = self.secs + self.offset;
                format!("(({last} - {sel} offset {before}s) >= 0) or {last}")
            }
        }
    }
}

/// The flow metrics the recording rules cover.
pub const RULE_METRICS: [MetricId; 8] = [
    FLOW_IO,
    FLOW_PACKETS,
    TCP_RETRANSMITS,
    TCP_OPENED,
    TCP_CLOSED,
    TCP_FAILED,
    TCP_RESETS,
    TCP_RTT,
];

/// The recording rule's name for `metric`.
pub fn rule_name(metric: MetricId) -> String {
    format!("flowscope:{}:increase1m", prom_name(metric))
}

/// The recording rule's expression for `metric`: the exact increase of
/// every series over the last minute (a series new in that minute counts
/// its value, as its counter started at zero; after a reset, the value
/// since the reset), summed by the flow labels.
pub fn rule_expr(metric: MetricId) -> String {
    let name = prom_name(metric);
    let mut by: Vec<String> = FLOW_LABELS.iter().map(|k| sanitize(k, false)).collect();
    if metric.kind() == Kind::Histogram {
        by.push("le".into());
    }
    format!(
        "sum by ({}) ((({name} - {name} offset 1m) >= 0) or {name})",
        by.join(", ")
    )
}

/// What a page reads from the recording rule of `metric` over the
/// `window_ns` before the evaluation time.
pub(super) fn rule_query(
    metric: MetricId,
    by: &BTreeSet<String>,
    window_ns: u64,
    matchers: &str,
) -> String {
    let mut by: Vec<&str> = by.iter().map(String::as_str).collect();
    if metric.kind() == Kind::Histogram {
        by.push("le");
    }
    let name = selector(rule_name(metric), matchers);
    format!(
        "sum by ({}) (sum_over_time({name}[{}s]))",
        by.join(", "),
        (window_ns / NS).max(1)
    )
}

pub(super) fn secs(ns: u64) -> String {
    format!("{}.{:03}", ns / NS, (ns % NS) / 1_000_000)
}
