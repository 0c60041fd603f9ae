//! An OTLP/HTTP metrics receiver for the soak's fault suite
//! (`scripts/soak.sh`): it may be killed at any moment and restarted, and
//! still tells exactly what it received, once.
//!
//! ```text
//! flowscope-otlp-sink serve ADDR LOG PEER_PORT
//! flowscope-otlp-sink summary LOG
//! ```
//! `serve` accepts `POST /v1/metrics` (uncompressed protobuf) on ADDR. For
//! each request it appends one line to LOG, `hash points closed lost`, and
//! syncs the file before it answers 200, so an acknowledged request is
//! never forgotten across a kill: `hash` is a hash of the body (a request
//! the agent sends again after a kill that came between the sync and the
//! answer has the same body, and counts once), `points` the data points in
//! it, `closed` the sum of `flowscope.tcp.connection.closed` points of
//! client flows to PEER_PORT (the soak's load), `lost` the
//! `flowscope.events.lost` points summed by source and reason
//! (`source/reason=n,...`, `-` for none). A body that does not decode
//! answers 400 and is logged to stderr.
//!
//! `summary` prints one JSON object over the unique requests in LOG:
//! requests, repeated requests, points, closed, and lost by
//! `source/reason`.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

/// The largest body accepted (the agent splits requests well below it).
const MAX_BODY: usize = 64 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 5 => match args[4].parse::<i64>() {
            Ok(port) => serve(&args[2], &args[3], port),
            Err(e) => Err(format!("PEER_PORT `{}`: {e}", args[4])),
        },
        Some("summary") if args.len() == 3 => summary(&args[2]),
        _ => Err("usage: flowscope-otlp-sink serve ADDR LOG PEER_PORT | summary LOG".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowscope-otlp-sink: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(addr: &str, log: &str, peer_port: i64) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {log}: {e}"))?;
    println!("listening");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = one(stream, &mut file, peer_port) {
            eprintln!("flowscope-otlp-sink: {e}");
        }
    }
    Ok(())
}

/// Serves one connection (keep-alive: requests until the client closes).
fn one(stream: TcpStream, log: &mut std::fs::File, peer_port: i64) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = None;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let Some(len) = len.filter(|n| *n <= MAX_BODY) else {
            let _ = writer.write_all(
                b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return Err("a request without a usable content-length".into());
        };
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        let Ok(req) = ExportMetricsServiceRequest::decode(body.as_slice()) else {
            let _ = writer.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            eprintln!("flowscope-otlp-sink: a body of {len} bytes is not an OTLP metrics request");
            continue;
        };
        let (points, closed, lost) = tally(&req, peer_port);
        let lost = if lost.is_empty() {
            "-".to_owned()
        } else {
            lost.iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut h = std::hash::DefaultHasher::new();
        body.hash(&mut h);
        writeln!(log, "{:016x} {points} {closed} {lost}", h.finish())
            .and_then(|()| log.sync_data())
            .map_err(|e| format!("writing the log: {e}"))?;
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
            )
            .map_err(|e| e.to_string())?;
    }
}

/// (data points, closed client connections to `peer_port`, events lost by
/// `source/reason`).
fn tally(req: &ExportMetricsServiceRequest, peer_port: i64) -> (u64, i64, BTreeMap<String, i64>) {
    let (mut points, mut closed, mut lost) = (0u64, 0i64, BTreeMap::new());
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                match data {
                    metric::Data::Sum(s) => {
                        points += s.data_points.len() as u64;
                        for dp in &s.data_points {
                            let Some(number_data_point::Value::AsInt(v)) = dp.value else {
                                continue;
                            };
                            let attr = |k: &str| {
                                dp.attributes
                                    .iter()
                                    .find(|kv| kv.key == k)
                                    .and_then(|kv| kv.value.as_ref())
                            };
                            if m.name == "flowscope.events.lost" {
                                let name = |k: &str| match attr(k).and_then(|v| v.value.as_ref()) {
                                    Some(any_value::Value::StringValue(s)) => s.clone(),
                                    _ => "?".to_owned(),
                                };
                                let key = format!(
                                    "{}/{}",
                                    name("flowscope.source"),
                                    name("flowscope.reason")
                                );
                                *lost.entry(key).or_insert(0) += v;
                            } else if m.name == "flowscope.tcp.connection.closed"
                                && is_str(attr("flowscope.flow.role"), "client")
                                && is_int(attr("network.peer.port"), peer_port)
                            {
                                closed += v;
                            }
                        }
                    }
                    metric::Data::Gauge(g) => points += g.data_points.len() as u64,
                    metric::Data::Histogram(h) => points += h.data_points.len() as u64,
                    metric::Data::ExponentialHistogram(h) => points += h.data_points.len() as u64,
                    metric::Data::Summary(s) => points += s.data_points.len() as u64,
                }
            }
        }
    }
    (points, closed, lost)
}

fn is_str(v: Option<&AnyValue>, want: &str) -> bool {
    matches!(v.and_then(|v| v.value.as_ref()), Some(any_value::Value::StringValue(s)) if s == want)
}

fn is_int(v: Option<&AnyValue>, want: i64) -> bool {
    matches!(v.and_then(|v| v.value.as_ref()), Some(any_value::Value::IntValue(i)) if *i == want)
}

fn summary(log: &str) -> Result<(), String> {
    let f = std::fs::File::open(log).map_err(|e| format!("opening {log}: {e}"))?;
    let mut seen = HashSet::new();
    let (mut requests, mut repeated, mut points, mut closed) = (0u64, 0u64, 0u64, 0i64);
    let mut lost: BTreeMap<String, i64> = BTreeMap::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("{log}: {e}"))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [hash, p, c, l] = fields[..] else {
            // A kill while writing leaves at most a torn last line, which
            // was never acknowledged.
            eprintln!("flowscope-otlp-sink: {log}:{}: skipped a torn line", n + 1);
            continue;
        };
        let parse = |s: &str| {
            s.parse::<i64>()
                .map_err(|e| format!("{log}:{}: {e}", n + 1))
        };
        if !seen.insert(hash.to_owned()) {
            repeated += 1;
            continue;
        }
        requests += 1;
        points += parse(p)? as u64;
        closed += parse(c)?;
        for pair in l.split(',').filter(|p| *p != "-") {
            let Some((k, v)) = pair.rsplit_once('=') else {
                return Err(format!("{log}:{}: `{pair}` is not source/reason=n", n + 1));
            };
            *lost.entry(k.to_owned()).or_insert(0) += parse(v)?;
        }
    }
    let lost: Vec<String> = lost.iter().map(|(k, n)| format!("\"{k}\": {n}")).collect();
    println!(
        "{{\"requests\": {requests}, \"repeated\": {repeated}, \"points\": {points}, \"closed\": {closed}, \"lost\": {{{}}}}}",
        lost.join(", ")
    );
    Ok(())
}
