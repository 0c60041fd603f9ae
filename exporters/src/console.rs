//! `console` exporter: every interval, a table of the busiest flows.
//!
//! [`render`] is a pure function from a batch to text, so its output is
//! tested exactly; the exporter writes that text to stdout. One row per
//! (local service, role, transport, peer): bytes each way, retransmits, mean
//! smoothed RTT, failed connects. Rows are sorted by total bytes, busiest
//! first; points of the agent's own telemetry (`flowscope.*`) and points
//! without a flow role are not rows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use flowscope_model::names::{attr, metric, resource};
use flowscope_model::{Histogram, MetricBatch, PointValue, Value};

use crate::{Outcome, Sink};

#[derive(Default)]
struct Row {
    tx: u64,
    rx: u64,
    retransmits: u64,
    failed: u64,
    rtt_sum: f64,
    rtt_count: u64,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RowKey {
    service: String,
    role: String,
    transport: String,
    peer: String,
}

fn int(v: &PointValue) -> u64 {
    match v {
        PointValue::Int(i) => *i,
        PointValue::Double(d) => d.max(0.0) as u64,
        _ => 0,
    }
}

fn str_or<'a>(v: Option<&'a Value>, default: &'a str) -> String {
    match v {
        Some(v) => v.to_string(),
        None => default.to_string(),
    }
}

/// Renders one interval's table: a title line, a header, at most `max_rows`
/// rows and one summary line, each ending in `\n`.
pub fn render(batch: &MetricBatch, max_rows: usize) -> String {
    let mut rows: HashMap<RowKey, Row> = HashMap::new();
    for p in &batch.points {
        let Some(role) = p.attrs.get_str(attr::FLOW_ROLE) else {
            continue;
        };
        let mut service = p
            .resource
            .get_str(resource::SERVICE_NAME)
            .or_else(|| p.resource.get_str(resource::PROCESS_EXECUTABLE_NAME))
            .unwrap_or("?")
            .to_string();
        if let Some(port) = p.attrs.get(attr::LOCAL_PORT) {
            let _ = write!(service, ":{port}");
        }
        let addr = str_or(p.attrs.get(attr::PEER_ADDRESS), "?");
        let peer = match p.attrs.get(attr::PEER_PORT) {
            Some(port) if addr.contains(':') => format!("[{addr}]:{port}"),
            Some(port) => format!("{addr}:{port}"),
            None => addr,
        };
        let key = RowKey {
            service,
            role: role.to_string(),
            transport: str_or(p.attrs.get(attr::NETWORK_TRANSPORT), "?"),
            peer,
        };
        let row = rows.entry(key).or_default();
        let name = p.metric.name();
        if name == metric::FLOW_IO.0 {
            match p.attrs.get_str(attr::IO_DIRECTION) {
                Some(attr::TRANSMIT) => row.tx += int(&p.value),
                Some(attr::RECEIVE) => row.rx += int(&p.value),
                _ => {}
            }
        } else if name == metric::TCP_RETRANSMITS.0 {
            row.retransmits += int(&p.value);
        } else if name == metric::TCP_FAILED.0 {
            row.failed += int(&p.value);
        } else if name == metric::TCP_RTT.0
            && let PointValue::Histogram(Histogram { sum, count, .. }) = &p.value
        {
            row.rtt_sum += sum;
            row.rtt_count += count;
        }
    }

    let mut sorted: Vec<(RowKey, Row)> = rows.into_iter().collect();
    sorted.sort_by(|(ka, a), (kb, b)| (b.tx + b.rx).cmp(&(a.tx + a.rx)).then_with(|| ka.cmp(kb)));

    let total = |f: fn(&Row) -> u64| sorted.iter().map(|(_, r)| f(r)).sum::<u64>();
    let (tx, rx) = (total(|r| r.tx), total(|r| r.rx));
    let (retransmits, failed) = (total(|r| r.retransmits), total(|r| r.failed));

    let header = [
        "SERVICE", "ROLE", "PROTO", "PEER", "TX", "RX", "RETRANS", "RTT ms", "FAILED",
    ];
    let mut table: Vec<[String; 9]> = vec![header.map(str::to_string)];
    for (k, r) in sorted.iter().take(max_rows) {
        let rtt = if r.rtt_count > 0 {
            format!("{:.2}", r.rtt_sum / r.rtt_count as f64 * 1000.0)
        } else {
            "-".to_string()
        };
        table.push([
            k.service.clone(),
            k.role.clone(),
            k.transport.clone(),
            k.peer.clone(),
            bytes(r.tx),
            bytes(r.rx),
            r.retransmits.to_string(),
            rtt,
            r.failed.to_string(),
        ]);
    }
    let mut widths = [0usize; 9];
    for line in &table {
        for (w, cell) in widths.iter_mut().zip(line.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }

    let secs = batch.time_unix_nanos.saturating_sub(batch.start_unix_nanos) as f64 / 1e9;
    let mut out = format!(
        "flowscope {} UTC, interval {secs:.1} s\n",
        clock(batch.time_unix_nanos)
    );
    for line in &table {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            // Names left, numbers right.
            if i < 4 {
                let _ = write!(text, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(text, "{cell:>w$}", w = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{} flows ({} shown), tx {}, rx {}, {retransmits} retransmits, {failed} failed connects",
        sorted.len(),
        sorted.len().min(max_rows),
        bytes(tx),
        bytes(rx),
    );
    out.push_str(&render_paths(batch));
    out
}

/// One line per Network Path run in the batch: the destination, then its
/// hops in TTL order (`*` for a silent one, with the hop's mean RTT), then
/// reachability and end-to-end loss. Empty when the batch has no path.
pub fn render_paths(batch: &MetricBatch) -> String {
    use flowscope_model::names::path;
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct PathLine {
        reachable: Option<u64>,
        sent: u64,
        lost: u64,
        hops: BTreeMap<i64, (String, f64, u64)>,
    }
    let mut paths: BTreeMap<(String, String, String, String), PathLine> = BTreeMap::new();
    for p in &batch.points {
        let name = p.metric.name();
        if !name.starts_with("flowscope.path.") {
            continue;
        }
        let a = |k: &str| str_or(p.attrs.get(k), "");
        let dest = match p.attrs.get(path::SERVER_PORT) {
            Some(port) => {
                let addr = a(path::SERVER_ADDRESS);
                if addr.contains(':') {
                    format!("[{addr}]:{port}")
                } else {
                    format!("{addr}:{port}")
                }
            }
            None => a(path::SERVER_ADDRESS),
        };
        let service = p
            .resource
            .get_str(resource::SERVICE_NAME)
            .or_else(|| p.resource.get_str(resource::HOST_NAME))
            .unwrap_or("?")
            .to_string();
        let line = paths
            .entry((service, a(path::PROTOCOL), dest, a(path::TEST)))
            .or_default();
        let hop = match p.attrs.get(path::HOP_INDEX) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        };
        match (name, hop) {
            (n, None) if n == path::REACHABLE.0 => line.reachable = Some(int(&p.value)),
            (n, None) if n == path::PROBES_SENT.0 => line.sent += int(&p.value),
            (n, None) if n == path::PROBES_LOST.0 => line.lost += int(&p.value),
            (n, Some(i)) if n == path::HOP_RTT.0 => {
                if let PointValue::Histogram(Histogram { sum, count, .. }) = &p.value {
                    let e = line.hops.entry(i).or_default();
                    e.0 = a(path::HOP_ADDRESS);
                    e.1 += sum;
                    e.2 += count;
                }
            }
            (_, Some(i)) => {
                line.hops.entry(i).or_default().0 = a(path::HOP_ADDRESS);
            }
            _ => {}
        }
    }
    let mut out = String::new();
    for ((service, proto, dest, test), l) in paths {
        let Some(reachable) = l.reachable else {
            continue;
        };
        let hops: Vec<String> = l
            .hops
            .values()
            .map(|(addr, sum, count)| {
                if *count > 0 {
                    format!("{addr} {:.2}ms", sum / *count as f64 * 1000.0)
                } else {
                    addr.clone()
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "path {service} -> {dest} {proto} {test}: {} | {}, loss {}/{}",
            if hops.is_empty() {
                "-".to_string()
            } else {
                hops.join(" > ")
            },
            if reachable == 1 {
                "reachable"
            } else {
                "unreachable"
            },
            l.lost,
            l.sent
        );
    }
    out
}

/// `1536` -> `1.5 KiB`; below 1 KiB the exact count.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `HH:MM:SS` of a Unix time in nanoseconds.
fn clock(unix_nanos: u64) -> String {
    let s = unix_nanos / 1_000_000_000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// Writes [`render`]'s table for each batch to a writer (stdout in the
/// agent). The write runs on the blocking pool: a terminal or pipe that
/// stops reading holds that thread, never one of the async workers.
pub(crate) struct ConsoleSink {
    /// `None` only while a write is in flight, or after one panicked.
    out: Option<Box<dyn Write + Send>>,
    max_rows: usize,
}

impl ConsoleSink {
    pub(crate) fn new(out: Box<dyn Write + Send>, max_rows: usize) -> Self {
        Self {
            out: Some(out),
            max_rows,
        }
    }
}

impl Sink for ConsoleSink {
    type Item = MetricBatch;

    async fn export(&mut self, batch: &MetricBatch) -> Outcome {
        let n = batch.points.len() as u64;
        // The table is about the host's traffic. Batches without any flow
        // point (the agent's own telemetry, the DNS receiver's lookups, an
        // idle interval) print nothing, so each interval prints one table.
        if !batch
            .points
            .iter()
            .any(|p| flowscope_model::metrics::FLOW_METRICS.contains(&p.metric))
        {
            return Outcome::sent(n);
        }
        let text = render(batch, self.max_rows);
        let written = crate::with_writer_blocking(&mut self.out, move |out| {
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        })
        .await;
        match written.and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(()) => Outcome::sent(n),
            Err(e) => Outcome::failed(n, "io", format!("writing the console table: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowscope_model::metrics::{
        FLOW_IO, PATH_HOP_PROBES_SENT, PATH_HOP_RTT, PATH_PROBES_LOST, PATH_PROBES_SENT,
        PATH_REACHABLE, TCP_FAILED, TCP_RETRANSMITS, TCP_RTT,
    };
    use flowscope_model::telemetry::EXPORTER_SENT;
    use flowscope_model::{Attrs, MetricId, Point};

    use super::*;

    fn push(b: &mut MetricBatch, res: &Arc<Attrs>, m: MetricId, attrs: Attrs, v: PointValue) {
        b.points.push(Point {
            resource: res.clone(),
            metric: m,
            attrs,
            value: v,
        });
    }

    #[test]
    fn renders_exact_table() {
        let checkout = Arc::new(Attrs::new().with(resource::SERVICE_NAME, "checkout"));
        let nginx = Arc::new(Attrs::new().with(resource::PROCESS_EXECUTABLE_NAME, "nginx"));
        let client = Attrs::new()
            .with(attr::FLOW_ROLE, "client")
            .with(attr::NETWORK_TRANSPORT, "tcp")
            .with(attr::PEER_ADDRESS, "198.18.0.2")
            .with(attr::PEER_PORT, 443u16);
        let server = Attrs::new()
            .with(attr::FLOW_ROLE, "server")
            .with(attr::NETWORK_TRANSPORT, "tcp")
            .with(attr::PEER_ADDRESS, "fd00::1")
            .with(attr::LOCAL_PORT, 80u16);
        let v6client = Attrs::new()
            .with(attr::FLOW_ROLE, "client")
            .with(attr::NETWORK_TRANSPORT, "udp")
            .with(attr::PEER_ADDRESS, "fd00::53")
            .with(attr::PEER_PORT, 53u16);
        let dir = |a: &Attrs, d: &'static str| a.clone().with(attr::IO_DIRECTION, d);

        // 3661 s after midnight, a 10 s interval.
        let mut b = MetricBatch::new(3_651_000_000_000, 3_661_000_000_000);
        push(
            &mut b,
            &checkout,
            FLOW_IO,
            dir(&client, attr::TRANSMIT),
            PointValue::Int(1_000_000),
        );
        push(
            &mut b,
            &checkout,
            FLOW_IO,
            dir(&client, attr::RECEIVE),
            PointValue::Int(250_000),
        );
        push(
            &mut b,
            &checkout,
            TCP_RETRANSMITS,
            client.clone(),
            PointValue::Int(7),
        );
        let mut h = Histogram::new(Arc::from(&[0.01][..]));
        h.record(0.002);
        h.record(0.004);
        push(
            &mut b,
            &checkout,
            TCP_RTT,
            client.clone(),
            PointValue::Histogram(h),
        );
        push(
            &mut b,
            &nginx,
            FLOW_IO,
            dir(&server, attr::RECEIVE),
            PointValue::Int(500),
        );
        push(
            &mut b,
            &checkout,
            TCP_FAILED,
            client.clone().with(attr::ERROR_TYPE, "refused"),
            PointValue::Int(2),
        );
        push(
            &mut b,
            &checkout,
            FLOW_IO,
            dir(&v6client, attr::TRANSMIT),
            PointValue::Int(100),
        );
        // Self-telemetry never becomes a row.
        push(
            &mut b,
            &checkout,
            EXPORTER_SENT,
            flowscope_model::telemetry::Component::new("file", "file").attrs(),
            PointValue::Int(9),
        );

        let want = "\
flowscope 01:01:01 UTC, interval 10.0 s
SERVICE   ROLE    PROTO  PEER                   TX         RX  RETRANS  RTT ms  FAILED
checkout  client  tcp    198.18.0.2:443  976.6 KiB  244.1 KiB        7    3.00       2
nginx:80  server  tcp    fd00::1               0 B      500 B        0       -       0
3 flows (2 shown), tx 976.7 KiB, rx 244.6 KiB, 7 retransmits, 2 failed connects
";
        assert_eq!(render(&b, 2), want);
        // The third row (100 B over UDP to an IPv6 peer) shows with room for it.
        let all = render(&b, 10);
        assert!(
            all.contains("checkout  client  udp    [fd00::53]:53       100 B        0 B"),
            "{all}"
        );
        assert!(all.ends_with(
            "3 flows (3 shown), tx 976.7 KiB, rx 244.6 KiB, 7 retransmits, 2 failed connects\n"
        ));
    }

    #[test]
    fn path_is_a_line_of_hops() {
        use flowscope_model::names::path;
        let host = Arc::new(Attrs::new().with(resource::HOST_NAME, "node1"));
        let base = Attrs::new()
            .with(path::SERVER_ADDRESS, "198.18.3.2")
            .with(path::SERVER_PORT, 5432u16)
            .with(path::PROTOCOL, "tcp")
            .with(path::TEST, "scheduled");
        let hop = |i: i64, a: &str| {
            base.clone()
                .with(path::HOP_INDEX, i)
                .with(path::HOP_ADDRESS, a)
        };
        let hist = |v: f64| {
            let mut h = Histogram::new(Arc::from(&[0.1][..]));
            h.record(v);
            PointValue::Histogram(h)
        };
        let mut b = MetricBatch::new(0, 1_000_000_000);
        push(
            &mut b,
            &host,
            PATH_REACHABLE,
            base.clone(),
            PointValue::Int(1),
        );
        push(
            &mut b,
            &host,
            PATH_PROBES_SENT,
            base.clone(),
            PointValue::Int(10),
        );
        push(
            &mut b,
            &host,
            PATH_PROBES_LOST,
            base.clone(),
            PointValue::Int(1),
        );
        push(
            &mut b,
            &host,
            PATH_HOP_RTT,
            hop(1, "198.18.1.1"),
            hist(0.001),
        );
        push(
            &mut b,
            &host,
            PATH_HOP_PROBES_SENT,
            hop(2, "*"),
            PointValue::Int(3),
        );
        push(
            &mut b,
            &host,
            PATH_HOP_RTT,
            hop(3, "198.18.3.2"),
            hist(0.0025),
        );
        assert_eq!(
            render_paths(&b),
            "path node1 -> 198.18.3.2:5432 tcp scheduled: 198.18.1.1 1.00ms > * > 198.18.3.2 2.50ms | reachable, loss 1/10\n"
        );
        assert!(render(&b, 10).ends_with("failed connects\npath node1 -> 198.18.3.2:5432 tcp scheduled: 198.18.1.1 1.00ms > * > 198.18.3.2 2.50ms | reachable, loss 1/10\n"));
    }

    #[test]
    fn empty_batch_has_header_and_summary() {
        let b = MetricBatch::new(0, 10_000_000_000);
        assert_eq!(
            render(&b, 5),
            "flowscope 00:00:10 UTC, interval 10.0 s\n\
             SERVICE  ROLE  PROTO  PEER  TX  RX  RETRANS  RTT ms  FAILED\n\
             0 flows (0 shown), tx 0 B, rx 0 B, 0 retransmits, 0 failed connects\n"
        );
    }
}
