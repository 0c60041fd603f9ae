//! The JSON API under `/api/` (docs/ui.md): `keys`, `map`, `analytics`,
//! `analytics.csv`, `timeseries`, `health`. Every parameter is checked; a
//! bad one is answered `400 {"error": ..., "parameter": name}`.

use std::fmt::Write as _;

use http::StatusCode;
use serde_json::{Value as Json, json};

use flowscope_model::names::resource;

use super::query::{self, Cidr, Edge, Selection, Totals};
use super::store::Store;
use super::{Reply, Ui};

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
/// Rows (dependencies) one answer holds at most, busiest first.
pub const MAX_ROWS: usize = 2000;

/// Query parameters, percent-decoded, in order (a key may repeat).
pub struct Params(Vec<(String, String)>);

impl Params {
    /// `k=v` pairs separated by `&`, `+` as a space, `%XX` decoded (a
    /// malformed escape stays as written), a pair without `=` as an empty
    /// value: application/x-www-form-urlencoded, as `form_urlencoded` (on
    /// the `percent-encoding` crate) reads it.
    pub fn parse(q: &str) -> Self {
        Params(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn all(&self, k: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(key, v)| key == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// A rejected parameter.
struct Bad {
    parameter: &'static str,
    message: String,
}

fn bad(parameter: &'static str, message: impl Into<String>) -> Bad {
    Bad {
        parameter,
        message: message.into(),
    }
}

/// `90s`, `15m`, `1h`, `2d`.
fn parse_span(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mult)?.checked_mul(SECOND)
}

/// Unix seconds (fractions allowed) to ns.
fn parse_time(s: &str) -> Option<u64> {
    let v: f64 = s.trim().parse().ok()?;
    (0.0..1e11).contains(&v).then_some((v * 1e9) as u64)
}

/// `(from, to]` from `from`/`to` (unix seconds) or `range` (relative to
/// `to`, default the newest data); default: the whole retention.
fn time_range(p: &Params, st: &Store) -> Result<(u64, u64), Bad> {
    range_ending(p, st.latest(), st.default_span_ns())
}

/// `(from, to]` from the parameters, where `to` defaults to `now` and the
/// span to `default_span`.
fn range_ending(p: &Params, now: u64, default_span: u64) -> Result<(u64, u64), Bad> {
    let to = match p.get("to") {
        Some(t) => parse_time(t)
            .ok_or_else(|| bad("to", format!("`{t}` is not a unix time in seconds")))?,
        None => now,
    };
    let from = match (p.get("from"), p.get("range")) {
        (Some(f), _) => parse_time(f)
            .ok_or_else(|| bad("from", format!("`{f}` is not a unix time in seconds")))?,
        (None, Some(r)) => {
            let span = parse_span(r).filter(|s| *s > 0).ok_or_else(|| {
                bad(
                    "range",
                    format!("`{r}` is not a duration like 90s, 15m or 1h"),
                )
            })?;
            to.saturating_sub(span)
        }
        (None, None) => to.saturating_sub(default_span),
    };
    if from >= to && !(from == 0 && to == 0) {
        return Err(bad("from", "`from` must be before `to`"));
    }
    Ok((from, to))
}

/// A group key: any key seen in the data, or one of the suggested ones.
fn group_key(p: &Params, name: &'static str, default: &str, st: &Store) -> Result<String, Bad> {
    let k = p.get(name).unwrap_or(default);
    if st.has_key(k) || query::SUGGESTED_KEYS.contains(&k) {
        Ok(k.to_string())
    } else {
        Err(bad(
            name,
            format!(
                "unknown group key `{k}`: not a Resource or attribute key of the data (see /api/keys)"
            ),
        ))
    }
}

fn selection(p: &Params, st: &Store, default_server: &str) -> Result<Selection, Bad> {
    let (from, to) = time_range(p, st)?;
    let (client_key, server_key) = match p.get("group") {
        Some(_) => {
            let g = group_key(p, "group", resource::SERVICE_NAME, st)?;
            (g.clone(), g)
        }
        None => (
            group_key(p, "client_key", resource::SERVICE_NAME, st)?,
            group_key(p, "server_key", default_server, st)?,
        ),
    };
    let mut filters = Vec::new();
    for f in p.all("filter") {
        let Some((k, v)) = f.split_once('=') else {
            return Err(bad("filter", format!("`{f}` is not key=value")));
        };
        let k = k.trim();
        if !st.has_key(k) && !query::SUGGESTED_KEYS.contains(&k) {
            return Err(bad("filter", format!("unknown key `{k}` (see /api/keys)")));
        }
        filters.push((k.to_string(), v.trim().to_string()));
    }
    let cidr = match p.get("cidr") {
        Some(c) => Some(c.parse::<Cidr>().map_err(|e| bad("cidr", e))?),
        None => None,
    };
    let hide_unresolved = match p.get("hide_unresolved") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(o) => {
            return Err(bad(
                "hide_unresolved",
                format!("`{o}` is not true or false"),
            ));
        }
    };
    Ok(Selection {
        from,
        to,
        client_key,
        server_key,
        filters,
        cidr,
        hide_unresolved,
    })
}

/// Seconds of data inside `(from, to]`, at least 1.
fn covered_seconds(st: &Store, from: u64, to: u64) -> f64 {
    let end = to.min(st.latest());
    let start = from.max(st.oldest());
    (end.saturating_sub(start) as f64 / 1e9).max(1.0)
}

fn ms(v: Option<f64>) -> Json {
    v.map_or(Json::Null, |s| json!(s * 1000.0))
}

fn totals_json(t: &Totals, seconds: f64) -> Json {
    json!({
        "bytes_client_to_server": t.bytes_client_to_server,
        "bytes_server_to_client": t.bytes_server_to_client,
        "throughput_bytes_per_second": t.bytes() as f64 / seconds,
        "packets": t.packets,
        "retransmits": t.retransmits,
        "retransmit_ratio": t.retransmit_ratio(),
        "rtt_p50_ms": ms(t.rtt_quantile(0.5)),
        "rtt_p99_ms": ms(t.rtt_quantile(0.99)),
        "connections_opened": t.opened,
        "connections_closed": t.closed,
        "connections_failed": t.failed,
        "failed_by_error_type": t.failed_by_type,
        "resets": t.resets,
    })
}

fn row_json(e: &Edge, seconds: f64) -> Json {
    let mut j = totals_json(&e.totals, seconds);
    j["client"] = json!(e.client);
    j["server"] = json!(e.server);
    j["client_unresolved"] = json!(e.client_unresolved);
    j["server_unresolved"] = json!(e.server_unresolved);
    j
}

/// The map's colour metrics: (value, 0 ok / 1 elevated / 2 bad).
fn colour(metric: &str, t: &Totals, ui: &Ui) -> (f64, u8) {
    match metric {
        "rtt" => {
            let v = t.rtt_quantile(0.5).unwrap_or(0.0) * 1000.0;
            (v, if v > 100.0 { 2 } else { u8::from(v > 20.0) })
        }
        "failed" => (t.failed as f64, if t.failed > 0 { 2 } else { 0 }),
        "resets" => (t.resets as f64, if t.resets > 0 { 2 } else { 0 }),
        _ => {
            let v = t.retransmit_ratio();
            let th = ui.config.health.retransmit_ratio;
            (v, if v > th { 2 } else { u8::from(v > th / 2.0) })
        }
    }
}

const COLOURS: [&str; 3] = ["#2e7d32", "#f9a825", "#c62828"];

/// The server side's key when a request names none: the Map groups both
/// ends by service, Analytics and the time series name the server as its
/// client calls it.
const MAP_SERVER_KEY: &str = resource::SERVICE_NAME;
const ANALYTICS_SERVER_KEY: &str = flowscope_model::names::attr::PEER_SERVICE_NAME;

fn map(ui: &Ui, st: &Store, p: &Params) -> Result<Json, Bad> {
    let sel = selection(p, st, MAP_SERVER_KEY)?;
    let metric = p.get("metric").unwrap_or("retransmit_ratio");
    if !["retransmit_ratio", "rtt", "failed", "resets"].contains(&metric) {
        return Err(bad(
            "metric",
            format!("`{metric}` is not one of retransmit_ratio, rtt, failed, resets"),
        ));
    }
    let mut edges = query::edges(st, &sel, false);
    edges.truncate(MAX_ROWS);
    let seconds = covered_seconds(st, sel.from, sel.to);
    // node -> (sent, received, unresolved, worst colour level, colour value)
    let mut nodes: std::collections::BTreeMap<&str, (u64, u64, bool, u8, f64)> =
        std::collections::BTreeMap::new();
    let max_bytes = edges
        .iter()
        .map(|e| e.totals.bytes())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out_edges = Vec::new();
    for e in &edges {
        let t = &e.totals;
        let (v, level) = colour(metric, t, ui);
        for (name, sent, recv, unresolved) in [
            (
                e.client.as_str(),
                t.bytes_client_to_server,
                t.bytes_server_to_client,
                e.client_unresolved,
            ),
            (
                e.server.as_str(),
                t.bytes_server_to_client,
                t.bytes_client_to_server,
                e.server_unresolved,
            ),
        ] {
            let n = nodes.entry(name).or_insert((0, 0, unresolved, 0, 0.0));
            n.0 += sent;
            n.1 += recv;
            if level > n.3 || v > n.4 {
                n.3 = n.3.max(level);
                n.4 = n.4.max(v);
            }
        }
        let mut j = row_json(e, seconds);
        j["id"] = json!(format!("{} -> {}", e.client, e.server));
        j["source"] = json!(e.client);
        j["target"] = json!(e.server);
        j["mainstat"] = json!(t.bytes());
        j["secondarystat"] = json!(v);
        j["color"] = json!(COLOURS[level as usize]);
        j["thickness"] = json!(1.0 + 9.0 * t.bytes() as f64 / max_bytes as f64);
        out_edges.push(j);
    }
    let out_nodes: Vec<Json> = nodes
        .iter()
        .map(|(name, (sent, recv, unresolved, level, v))| {
            json!({
                "id": name,
                "title": name,
                "subtitle": if *unresolved { "unresolved" } else { "" },
                "mainstat": sent + recv,
                "secondarystat": v,
                "color": COLOURS[*level as usize],
                "bytes_sent": sent,
                "bytes_received": recv,
                "unresolved": unresolved,
            })
        })
        .collect();
    Ok(json!({
        "group": sel.client_key,
        "metric": metric,
        "from_ms": sel.from / MS,
        "to_ms": sel.to / MS,
        "nodes": out_nodes,
        "edges": out_edges,
    }))
}

fn analytics_rows(st: &Store, p: &Params) -> Result<(Selection, Vec<Edge>, f64), Bad> {
    let sel = selection(p, st, ANALYTICS_SERVER_KEY)?;
    let mut rows = query::edges(st, &sel, false);
    rows.truncate(MAX_ROWS);
    let seconds = covered_seconds(st, sel.from, sel.to);
    Ok((sel, rows, seconds))
}

fn analytics(st: &Store, p: &Params) -> Result<Json, Bad> {
    let (sel, rows, seconds) = analytics_rows(st, p)?;
    Ok(json!({
        "client_key": sel.client_key,
        "server_key": sel.server_key,
        "from_ms": sel.from / MS,
        "to_ms": sel.to / MS,
        "seconds": seconds,
        "rows": rows.iter().map(|e| row_json(e, seconds)).collect::<Vec<_>>(),
    }))
}

/// A CSV field: quoted when needed; a leading `= + - @` is prefixed with
/// `'` so that a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn analytics_csv(st: &Store, p: &Params) -> Result<String, Bad> {
    let (sel, rows, seconds) = analytics_rows(st, p)?;
    let mut out = format!(
        "client {},server {},bytes_client_to_server,bytes_server_to_client,throughput_bytes_per_second,\
         retransmits,retransmit_ratio,rtt_p50_ms,rtt_p99_ms,connections_opened,connections_closed,\
         connections_failed,resets\n",
        csv_field(&sel.client_key),
        csv_field(&sel.server_key)
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{:.3}", v * 1000.0));
    for e in &rows {
        let t = &e.totals;
        let _ = writeln!(
            out,
            "{},{},{},{},{:.1},{},{:.6},{},{},{},{},{},{}",
            csv_field(&e.client),
            csv_field(&e.server),
            t.bytes_client_to_server,
            t.bytes_server_to_client,
            t.bytes() as f64 / seconds,
            t.retransmits,
            t.retransmit_ratio(),
            opt(t.rtt_quantile(0.5)),
            opt(t.rtt_quantile(0.99)),
            t.opened,
            t.closed,
            t.failed,
            t.resets
        );
    }
    Ok(out)
}

fn timeseries(st: &Store, p: &Params) -> Result<Json, Bad> {
    let sel = selection(p, st, ANALYTICS_SERVER_KEY)?;
    let edges = query::edges(st, &sel, true);
    let buckets = if let Some(node) = p.get("node") {
        query::merged_buckets(
            edges
                .iter()
                .filter(|e| e.client == node || e.server == node),
        )
    } else {
        let client = p
            .get("client")
            .ok_or_else(|| bad("client", "give client and server, or node"))?;
        let server = p
            .get("server")
            .ok_or_else(|| bad("server", "give client and server, or node"))?;
        query::merged_buckets(
            edges
                .iter()
                .filter(|e| e.client == client && e.server == server),
        )
    };
    let points: Vec<Json> = buckets
        .iter()
        .map(|(t, b)| {
            let mut j = totals_json(b, 1.0);
            j["t_ms"] = json!(t / MS);
            j
        })
        .collect();
    Ok(json!({"from_ms": sel.from / MS, "to_ms": sel.to / MS, "points": points}))
}

fn keys(ui: &Ui, st: &Store) -> Json {
    json!({
        "keys": st.keys().collect::<Vec<_>>(),
        "suggested": query::SUGGESTED_KEYS,
        "defaults": {
            "group": resource::SERVICE_NAME,
            "client_key": resource::SERVICE_NAME,
            "server_key": ANALYTICS_SERVER_KEY,
        },
        "status": status(ui, st),
    })
}

fn status(ui: &Ui, st: &Store) -> Json {
    let heap = flowscope_model::memory::heap();
    json!({
        "latest_ms": st.latest() / MS,
        "oldest_ms": if st.oldest() == u64::MAX { 0 } else { st.oldest() / MS },
        "series": st.series_count(),
        "slots": st.slot_count(),
        "max_series": ui.config.max_series,
        "dropped_points": st.dropped(),
        "retention_seconds": ui.config.retention.as_secs(),
        "full_resolution_seconds": ui.config.full_resolution.as_secs(),
        // The agent's heap (glibc's `mallinfo2`): in use by its data, and
        // held from the system; a soak tells fragmentation from a growing
        // structure by the two.
        "heap": {
            "in_use_bytes": heap.in_use,
            "held_bytes": heap.held,
        },
        // Requests and connections this server refused, by reason.
        "refused": ui
            .refused()
            .into_iter()
            .map(|(k, n)| (k.to_owned(), Json::from(n)))
            .collect::<serde_json::Map<String, Json>>(),
    })
}

fn health(ui: &Ui, st: &Store, p: &Params) -> Result<Json, Bad> {
    let (from, to) = time_range(p, st)?;
    let cidr = match p.get("cidr") {
        Some(c) => Some(c.parse::<Cidr>().map_err(|e| bad("cidr", e))?),
        None => None,
    };
    let h = &ui.config.health;
    let findings = query::health(st, from, to, cidr, h);
    Ok(json!({
        "from_ms": from / MS,
        "to_ms": to / MS,
        "thresholds": {
            "retransmit_ratio": h.retransmit_ratio,
            "min_packets": h.min_packets,
            "path_loss_ratio": h.path_loss_ratio,
            "min_failures": h.min_failures,
            "baseline_ratio": h.baseline_ratio,
            "baseline_min_count": h.baseline_min_count,
            "churn_connections_per_second": h.churn_connections_per_second,
            "churn_short_ratio": h.churn_short_ratio,
        },
        // The baseline spans the rises were compared with (docs/health.md).
        "baselines": super::baseline::held_spans(st, from, to)
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>(),
        "findings": findings,
    }))
}

/// The Paths page's selection: time range, `filter` (key=value on the
/// Resource, a test attribute or a tag) and `cidr` (on `server.address`).
fn path_selection(p: &Params, st: &Store) -> Result<super::paths::PathSelection, Bad> {
    let (from, to) = time_range(p, st)?;
    let mut filters = Vec::new();
    for f in p.all("filter") {
        let Some((k, v)) = f.split_once('=') else {
            return Err(bad("filter", format!("`{f}` is not key=value")));
        };
        let k = k.trim();
        if !st.has_key(k) {
            return Err(bad("filter", format!("unknown key `{k}` (see /api/keys)")));
        }
        filters.push((k.to_string(), v.trim().to_string()));
    }
    let cidr = match p.get("cidr") {
        Some(c) => Some(c.parse::<Cidr>().map_err(|e| bad("cidr", e))?),
        None => None,
    };
    Ok(super::paths::PathSelection {
        from,
        to,
        filters,
        cidr,
    })
}

/// `/api/paths`: every Network Path test of the range.
fn paths(st: &Store, p: &Params) -> Result<Json, Bad> {
    let sel = path_selection(p, st)?;
    let mut tests = super::paths::tests(st, &sel);
    tests.truncate(MAX_ROWS);
    Ok(json!({
        "from_ms": sel.from / MS,
        "to_ms": sel.to / MS,
        "tests": tests,
    }))
}

/// `/api/path?id=...`: one test's route, history and runs.
fn path_detail(st: &Store, p: &Params) -> Result<Json, Bad> {
    let sel = path_selection(p, st)?;
    let id = p
        .get("id")
        .ok_or_else(|| bad("id", "give the test's id (from /api/paths)"))?;
    let d = super::paths::detail(st, &sel, id).ok_or_else(|| {
        bad(
            "id",
            format!("no path test `{id}` in this time range (see /api/paths)"),
        )
    })?;
    let mut j = json!(d);
    j["from_ms"] = json!(sel.from / MS);
    j["to_ms"] = json!(sel.to / MS);
    Ok(j)
}

/// Answers `/api/<rest>`: from the agent's own store, or in fleet mode from
/// a store of the storage's aggregated answer (the same computation).
pub fn answer(ui: &Ui, rest: &str, p: &Params) -> Reply {
    if let Some(f) = &ui.fleet {
        return match fleet_store(f, rest, p) {
            Ok(st) => {
                let reply = answer_from(ui, &st, rest, p);
                f.free_later(st);
                reply
            }
            Err(e) => {
                tracing::warn!(api = rest, "fleet query: {e}");
                let mut r = Reply::error(e.status(), e.parameter(), &e.to_string());
                // Counted as the local store's over-budget query is.
                if matches!(e, super::fleet::FleetError::TooLarge { .. }) {
                    r.refused = Some(flowscope_model::internal_events::RefuseReason::TooLarge);
                }
                r
            }
        };
    }
    let st = ui.store.lock().unwrap_or_else(|e| e.into_inner());
    answer_from(ui, &st, rest, p)
}

/// The default span of a fleet request without `range` or `from`.
const FLEET_DEFAULT_SPAN: u64 = 3600 * SECOND;

/// Loads what a fleet request reads. Its parameters are checked again,
/// with the usual messages, when the answer is computed.
fn fleet_store(
    f: &super::fleet::Fleet,
    rest: &str,
    p: &Params,
) -> Result<Store, super::fleet::FleetError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // A bad range is answered by the page's own check, with its message,
    // once the (default) hour is loaded.
    let (from, to) = range_ending(p, now, FLEET_DEFAULT_SPAN)
        .unwrap_or((now.saturating_sub(FLEET_DEFAULT_SPAN), now));
    let mut keys: Vec<String> = ["group", "client_key", "server_key"]
        .iter()
        .filter_map(|k| p.get(k))
        .map(str::to_string)
        .collect();
    keys.extend(
        p.all("filter")
            .filter_map(|f| f.split_once('='))
            .map(|(k, _)| k.trim().to_string()),
    );
    // Time series: about 120 points, at least 10 s apart, whole seconds.
    let step = (rest == "timeseries").then(|| ((to - from) / 120 / SECOND).max(10) * SECOND);
    let need = match rest {
        "keys" | "status" => super::fleet::Need::Keys,
        "health" => super::fleet::Need::Health,
        "paths" | "path" => super::fleet::Need::Paths,
        _ => super::fleet::Need::Dependencies,
    };
    // The Map and Analytics show their MAX_ROWS busiest dependencies, in
    // the selection their own parameters make.
    let default_server = match rest {
        "map" => Some(MAP_SERVER_KEY),
        "analytics" | "analytics.csv" => Some(ANALYTICS_SERVER_KEY),
        _ => None,
    };
    let select = |st: &Store| selection(p, st, default_server?).ok();
    let shown = super::fleet::Shown {
        selection: &select,
        limit: MAX_ROWS,
    };
    let shown = default_server.map(|_| &shown);
    f.store(need, super::fleet::Range { from, to }, &keys, step, shown)
}

fn answer_from(ui: &Ui, st: &Store, rest: &str, p: &Params) -> Reply {
    // A query over more stored slots than the budget is refused before it
    // runs (a bad range is left to the query's own check).
    if !matches!(rest, "keys" | "status")
        && let Ok((from, to)) = time_range(p, st)
    {
        let slots = st.slots_in(from, to);
        if slots > ui.config.max_query_slots {
            let mut r = Reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "range",
                &format!(
                    "the query would read {slots} stored slots, more than max_query_slots ({}): \
                     narrow the time range",
                    ui.config.max_query_slots
                ),
            );
            r.refused = Some(flowscope_model::internal_events::RefuseReason::TooLarge);
            return r;
        }
    }
    let json = |r: Result<Json, Bad>| match r {
        Ok(j) => Reply::json(StatusCode::OK, j.to_string()),
        Err(b) => Reply::error(StatusCode::BAD_REQUEST, b.parameter, &b.message),
    };
    match rest {
        "keys" => json(Ok(keys(ui, st))),
        "status" => json(Ok(status(ui, st))),
        "map" => json(map(ui, st, p)),
        "analytics" => json(analytics(st, p)),
        "timeseries" => json(timeseries(st, p)),
        "health" => json(health(ui, st, p)),
        "paths" => json(paths(st, p)),
        "path" => json(path_detail(st, p)),
        "analytics.csv" => match analytics_csv(st, p) {
            Ok(csv) => {
                let mut r = Reply::json(StatusCode::OK, csv);
                r.ctype = "text/csv; charset=utf-8";
                r
            }
            Err(b) => Reply::error(StatusCode::BAD_REQUEST, b.parameter, &b.message),
        },
        _ => Reply::error(
            StatusCode::NOT_FOUND,
            "path",
            "unknown API: keys, status, map, analytics, analytics.csv, timeseries, health, \
             paths, path",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode() {
        let p = Params::parse("filter=service.name%3Dweb&filter=a%3Db+c&cidr=10.0.0.0%2F8&x=%zz");
        assert_eq!(
            p.all("filter").collect::<Vec<_>>(),
            vec!["service.name=web", "a=b c"]
        );
        assert_eq!(p.get("cidr"), Some("10.0.0.0/8"));
        assert_eq!(p.get("x"), Some("%zz"));
        assert_eq!(parse_span("15m"), Some(900 * SECOND));
        assert_eq!(parse_span("15"), None);
        assert_eq!(parse_span("m"), None);
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
