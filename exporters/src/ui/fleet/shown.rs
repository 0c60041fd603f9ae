//! Only what a page shows (module documentation, "Only what a page
//! shows"): which series the rest of the Map's and Analytics' metrics are
//! read for, once the bytes' answer has said which dependencies they show.

use flowscope_model::Role;

#[cfg(test)]
use super::load::fill;
use super::*;
use crate::ui::query::{self, NONE, Selection};

/// The dependencies a page shows: the `limit` with the most bytes of a
/// selection, as [`query::edges`] ranks them (Map, Analytics).
pub struct Shown<'a> {
    /// The request's selection, read against a store of the bytes' answer
    /// (which has the keys the page checks its parameters with); `None`
    /// for parameters the page refuses, which then reads everything and
    /// answers the error itself.
    pub selection: &'a dyn Fn(&Store) -> Option<Selection>,
    pub limit: usize,
}

/// The longest matcher the second phase asks: VictoriaMetrics refuses a
/// query over 16 KiB (`-search.maxQueryLen`), and the aggregation around
/// the matcher takes about 300 bytes. Past it the rest is read whole.
const MAX_MATCHER_BYTES: usize = 15 * 1024;

/// One flow role's side of the shown dependencies: every series of that
/// role in a shown dependency has its local side there, and the local
/// side is read from one label ([`query::local_key`]).
#[derive(Debug)]
pub(super) struct Side {
    role: Role,
    /// The group key this role's local side is.
    key: String,
    /// The label the key's local side is read from; `None` when no label
    /// of the answer carries it (a peer key, or a key the storage lacks),
    /// so that every local side is `(none)`.
    label: Option<String>,
    /// The values this side has among the shown dependencies, `""` for
    /// `(none)` (no label).
    names: BTreeSet<String>,
}

/// Which series the second phase reads: one [`Side`] per role.
#[derive(Debug)]
pub(super) struct Plan {
    sides: [Side; 2],
}

/// What the second phase reads.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Narrow {
    /// Everything, as without a page's rows: the page shows every
    /// dependency with bytes (those without any come after them), or
    /// narrowing would leave at least half of the series.
    All,
    /// The series one of these matcher lists selects (disjoint: one per
    /// flow role; none when no series can belong to a shown dependency).
    Parts(Vec<String>),
}

impl Plan {
    /// The plan for the dependencies `shown` shows of `st` (a store of
    /// the bytes' answer alone). `label_of` names the one label a key is
    /// read from: `Some(None)` when no label carries it, `None` when more
    /// than one might (then everything is read).
    ///
    /// `None` (read everything) unless the page shows fewer dependencies
    /// than have bytes: its `limit`-th has bytes, so that every dependency
    /// the other metrics alone would add (without bytes) ranks after it.
    pub(super) fn of(
        st: &Store,
        sel: &Selection,
        limit: usize,
        label_of: impl Fn(&str) -> Option<Option<String>>,
    ) -> Option<Plan> {
        let edges = query::edges(st, sel, false);
        let last = edges.get(limit.checked_sub(1)?)?;
        if last.totals.bytes() == 0 {
            return None;
        }
        let shown = &edges[..limit];
        let side = |role: Role, key: &str| -> Option<Side> {
            let label = match query::local_key(key) {
                Some(local) => label_of(local)?,
                None => None,
            };
            let mut names = BTreeSet::new();
            for e in shown {
                let name = match role {
                    Role::Client => &e.client,
                    Role::Server => &e.server,
                };
                if name == NONE {
                    names.insert(String::new());
                }
                names.insert(name.clone());
            }
            Some(Side {
                role,
                key: key.to_string(),
                label,
                names,
            })
        };
        Some(Plan {
            sides: [
                side(Role::Client, &sel.client_key)?,
                side(Role::Server, &sel.server_key)?,
            ],
        })
    }

    /// The labels whose values in the storage [`Plan::narrow`] wants.
    pub(super) fn labels(&self) -> impl Iterator<Item = &str> {
        self.sides.iter().filter_map(|s| s.label.as_deref())
    }

    /// What the second phase reads, given each label's values in the
    /// storage over the range (`values`; any superset will do): a side's
    /// names that no series has are left out of its matcher (the
    /// addresses of unresolved servers, when the label is `service_name`).
    /// Counted on the bytes' series of `st`: narrowing that would still
    /// read half of them or more is not worth a matcher.
    pub(super) fn narrow(
        &self,
        st: &Store,
        sel: &Selection,
        values: &HashMap<String, BTreeSet<String>>,
    ) -> Narrow {
        // Per side: the local values its matcher selects.
        let selected: Vec<BTreeSet<&str>> = self
            .sides
            .iter()
            .map(|s| {
                let known = s.label.as_ref().and_then(|l| values.get(l));
                s.names
                    .iter()
                    .filter(|n| n.is_empty() || known.is_some_and(|k| k.contains(*n)))
                    .map(String::as_str)
                    .collect()
            })
            .collect();
        let (mut all, mut read) = (0usize, 0usize);
        for ((res, _, attrs), _) in st.series_values(sel.from, sel.to, |(_, m, _)| *m == FLOW_IO) {
            all += 1;
            let role = attrs.get_str(attr::FLOW_ROLE);
            let Some((side, values)) = self
                .sides
                .iter()
                .zip(&selected)
                .find(|(s, _)| Some(s.role.as_str()) == role)
            else {
                continue;
            };
            let local = query::local_value(res, attrs, &side.key).unwrap_or_default();
            read += usize::from(values.contains(local.as_str()));
        }
        if read * 2 > all {
            return Narrow::All;
        }
        let mut parts = Vec::new();
        for (side, values) in self.sides.iter().zip(&selected) {
            if values.is_empty() {
                continue;
            }
            let role = format!(
                "{}={}",
                sanitize(attr::FLOW_ROLE, false),
                quoted(side.role.as_str())
            );
            let part = match &side.label {
                Some(label) => and(&role, &one_of(label, values.iter().copied())),
                None => role,
            };
            if part.len() > MAX_MATCHER_BYTES {
                return Narrow::All;
            }
            parts.push(part);
        }
        Narrow::Parts(parts)
    }
}

impl Fleet {
    /// What the second phase of a page with `shown` rows reads, decided on
    /// the page's store `st` holding the bytes' answer alone: the page's
    /// dependencies ranked in it, and the storage asked for the values of
    /// the label each side is read from (`by`: the labels the queries sum
    /// by).
    pub(super) async fn narrowing(
        &self,
        st: &Store,
        shown: &Shown<'_>,
        by: &BTreeSet<String>,
        range: Range,
    ) -> Result<Narrow, FleetError> {
        let Some(sel) = (shown.selection)(st) else {
            return Ok(Narrow::All);
        };
        let label_of = |key: &str| {
            let mut found = by.iter().filter(|l| self.key_of(l) == key);
            match (found.next(), found.next()) {
                (None, _) => Some(None),
                (Some(l), None) => Some(Some(l.clone())),
                _ => None,
            }
        };
        let Some(plan) = Plan::of(st, &sel, shown.limit, label_of) else {
            return Ok(Narrow::All);
        };
        // Over an hour more than the range: a superset of the values of
        // every series the queries can read (a storage may look back
        // before the window for a counter's first value).
        let window = [
            ("start", secs(range.from.saturating_sub(3600 * NS))),
            ("end", secs(range.to)),
        ];
        let mut values = HashMap::new();
        for l in plan.labels() {
            if !values.contains_key(l) {
                let v: Vec<String> = self
                    .get(&format!("/api/v1/label/{l}/values"), &window)
                    .await?;
                values.insert(l.to_string(), v.into_iter().collect());
            }
        }
        Ok(plan.narrow(st, &sel, &values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_model::metrics::{FLOW_PACKETS, TCP_FAILED, TCP_RTT};

    /// The text a PromQL double-quoted string stands for.
    fn unquote(s: &str) -> String {
        let inner = s
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap();
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next().unwrap()),
                '"' => panic!("unescaped quote in {s}"),
                c => out.push(c),
            }
        }
        out
    }

    /// Whether a list of matchers as the second phase writes them
    /// (`a="x",b=~"y|z"`) selects a series, evaluated as Prometheus does:
    /// a regex anchored at both ends, an absent label as `""`.
    fn selects(matchers: &str, labels: &[(String, String)]) -> bool {
        let mut rest = matchers;
        while !rest.is_empty() {
            let op = rest.find('=').unwrap();
            let name = &rest[..op];
            let (regex, after) = match rest[op + 1..].strip_prefix('~') {
                Some(a) => (true, a),
                None => (false, &rest[op + 1..]),
            };
            // The closing quote: the first one not escaped.
            let mut end = 1;
            let b = after.as_bytes();
            while b[end] != b'"' {
                end += if b[end] == b'\\' { 2 } else { 1 };
            }
            let value = unquote(&after[..=end]);
            rest = after[end + 1..].trim_start_matches(',');
            let have = labels
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str());
            let ok = if regex {
                regex::Regex::new(&format!("^(?:{value})$"))
                    .unwrap()
                    .is_match(have)
            } else {
                have == value
            };
            if !ok {
                return false;
            }
        }
        true
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut l: Vec<(String, String)> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        l
    }

    #[test]
    fn a_matcher_selects_exactly_its_values() {
        let values = ["a.b", "x|y", "q\"\\z", "(none)", "", "tab\tnew\nline", "é*"];
        let m = one_of("service_name", values.iter().copied());
        assert_eq!(
            m,
            r#"service_name=~"a\\.b|x\\|y|q\"\\\\z|\\(none\\)||tab\\x{9}new\\x{a}line|é\\*""#
        );
        assert_eq!(
            one_of("l", ["a.b", "x|y", "q\"\\z"]),
            r#"l=~"a\\.b|x\\|y|q\"\\\\z""#
        );
        assert_eq!(one_of("l", ["tab\t"]), r#"l=~"tab\\x{9}""#);
        for v in values {
            assert!(
                selects(&m, &labels(&[("service_name", v)])),
                "{v:?} not selected by {m}"
            );
        }
        for other in [
            "axb",
            "x",
            "y",
            "q\"z",
            "none",
            "tab new line",
            "éé",
            "a.bc",
        ] {
            assert!(
                !selects(&m, &labels(&[("service_name", other)])),
                "{other:?} selected by {m}"
            );
        }
        // `""` selects the series without the label, and only with it.
        assert!(selects(&m, &labels(&[("host_name", "n1")])));
        assert!(!selects(
            &one_of("service_name", ["a"]),
            &labels(&[("host_name", "n1")])
        ));
        // No control character survives into the PromQL string.
        assert!(!m.chars().any(char::is_control), "{m}");
    }

    const T: u64 = 3600 * NS;

    /// A small fleet in which the shortcut applies: a sample per series of
    /// every metric the Map reads, as the storage would answer them.
    fn fleet_samples() -> Vec<(MetricId, Vec<Sample>)> {
        let l = |k: &str| sanitize(k, false);
        let (svc, host, role) = (
            l(resource::SERVICE_NAME),
            l(resource::HOST_NAME),
            l(attr::FLOW_ROLE),
        );
        let (local, lport, peer, pport) = (
            l(attr::LOCAL_ADDRESS),
            l(attr::LOCAL_PORT),
            l(attr::PEER_ADDRESS),
            l(attr::PEER_PORT),
        );
        let (dir, err) = (l(attr::IO_DIRECTION), l(attr::ERROR_TYPE));
        let mut out: HashMap<MetricId, Vec<Sample>> = HashMap::new();
        let mut add = |m: MetricId, pairs: &[(&str, &str)], v: f64| {
            out.entry(m)
                .or_default()
                .push((Labels(labels(pairs)), T, v));
        };
        // Six servers (`api-0` ... `api-5`), each reporting a quarter of
        // its clients; forty clients, the names of the busiest needing
        // escapes, one without a service name.
        let clients: Vec<String> = (0..40)
            .map(|c| match c {
                39 => String::new(),
                38 => "c.38|x".to_string(),
                37 => "c\"37\\".to_string(),
                c => format!("c-{c}"),
            })
            .collect();
        for (c, name) in clients.iter().enumerate() {
            let caddr = format!("10.1.0.{c}");
            for k in [c % 6, (c + 1) % 6] {
                let saddr = format!("10.0.0.{k}");
                let server = format!("api-{k}");
                let bytes = (1000 * (c + 1) + 10 * k) as f64;
                let client = [
                    (svc.as_str(), name.as_str()),
                    (host.as_str(), "n-c"),
                    (role.as_str(), "client"),
                    (local.as_str(), caddr.as_str()),
                    (peer.as_str(), saddr.as_str()),
                    (pport.as_str(), "80"),
                ];
                let srv = [
                    (svc.as_str(), server.as_str()),
                    (host.as_str(), "n-s"),
                    (role.as_str(), "server"),
                    (local.as_str(), saddr.as_str()),
                    (lport.as_str(), "80"),
                    (peer.as_str(), caddr.as_str()),
                ];
                for (d, n) in [("transmit", bytes), ("receive", bytes / 4.0)] {
                    let mut client_d = client.to_vec();
                    client_d.push((dir.as_str(), d));
                    let mut srv_d = srv.to_vec();
                    srv_d.push((dir.as_str(), d));
                    add(FLOW_IO, &client_d, n);
                    add(FLOW_PACKETS, &client_d, n / 100.0);
                    if c % 4 == 0 {
                        add(FLOW_IO, &srv_d, n);
                        add(FLOW_PACKETS, &srv_d, n / 100.0);
                    }
                }
                add(TCP_OPENED, &client, (c + k) as f64);
                for (i, le) in ["0.001", "0.01", "+Inf"].iter().enumerate() {
                    let mut b = client.to_vec();
                    b.push(("le", le));
                    add(TCP_RTT, &b, ((c + k) * (i + 1)) as f64);
                }
            }
            // Refused connects to a server's port nobody serves, and to a
            // served port: series no bytes' series has the labels of.
            let caddr = format!("10.1.0.{c}");
            for (port, addr) in [("81", "10.0.0.1"), ("80", "10.0.0.2")] {
                add(
                    TCP_FAILED,
                    &[
                        (svc.as_str(), name.as_str()),
                        (role.as_str(), "client"),
                        (local.as_str(), caddr.as_str()),
                        (peer.as_str(), addr),
                        (pport.as_str(), port),
                        (err.as_str(), "refused"),
                    ],
                    (c + 1) as f64,
                );
            }
        }
        // A client nobody monitors, busy: its dependency is shown through
        // the server's report alone (the server side's matcher).
        for (d, n) in [("receive", 190_000.0), ("transmit", 1_000.0)] {
            let pairs = [
                (svc.as_str(), "api-2"),
                (role.as_str(), "server"),
                (local.as_str(), "10.0.0.2"),
                (lport.as_str(), "80"),
                (peer.as_str(), "203.0.113.9"),
                (dir.as_str(), d),
            ];
            add(FLOW_IO, &pairs, n);
            add(FLOW_PACKETS, &pairs, n / 100.0);
        }
        let mut out: Vec<(MetricId, Vec<Sample>)> = out.into_iter().collect();
        // The bytes first, as `wanted()` lists them.
        out.sort_by_key(|(m, _)| *m != FLOW_IO);
        out
    }

    fn sel(server_key: &str) -> Selection {
        Selection {
            from: 0,
            to: u64::MAX,
            client_key: resource::SERVICE_NAME.to_string(),
            server_key: server_key.to_string(),
            filters: vec![],
            cidr: None,
            hide_unresolved: false,
        }
    }

    /// The shown rows from the two phases are those from reading
    /// everything, for the Map's and Analytics' default groupings, with
    /// less read.
    #[test]
    fn the_shown_rows_are_those_of_reading_everything() {
        let fleet = Fleet::new("http://127.0.0.1:9", Duration::from_secs(1), 1 << 20).unwrap();
        let samples = fleet_samples();
        let labels: Vec<String> = samples
            .iter()
            .flat_map(|(_, s)| {
                s.iter()
                    .flat_map(|(l, _, _)| l.0.iter().map(|(k, _)| k.clone()))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut values: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (_, s) in &samples {
            for (l, _, _) in s {
                for (k, v) in &l.0 {
                    values.entry(k.clone()).or_default().insert(v.clone());
                }
            }
        }
        let by: BTreeSet<String> = FLOW_LABELS.iter().map(|k| sanitize(k, false)).collect();
        let total: usize = samples.iter().map(|(_, s)| s.len()).sum();
        let limit = 8;
        for server_key in [resource::SERVICE_NAME, attr::PEER_SERVICE_NAME] {
            let sel = sel(server_key);
            let rows = |st: &Store| {
                let e = query::edges(st, &sel, false);
                format!("{:?}", &e[..limit.min(e.len())])
            };
            let answer = |m: MetricId, s: Vec<Sample>| fleet.answer(m, s, T).unwrap();
            // Everything at once.
            let mut all = fleet.empty_store(T, T, &labels);
            let answers = samples.iter().map(|(m, s)| answer(*m, s.clone())).collect();
            fill(&mut all, answers, Default::default());
            // The bytes, then the rest as the plan's matchers select it.
            // The page's store, the bytes first.
            let bytes = answer(FLOW_IO, samples[0].1.clone());
            let mut two = fleet.empty_store(T, T, &labels);
            let known = fill(&mut two, vec![bytes], Default::default());
            let ranked = &two;
            let label_of = |key: &str| {
                let found: Vec<&String> = by.iter().filter(|l| fleet.key_of(l) == key).collect();
                Some(found.first().map(|l| l.to_string()))
            };
            let plan = Plan::of(ranked, &sel, limit, label_of).unwrap();
            let Narrow::Parts(parts) = plan.narrow(ranked, &sel, &values) else {
                panic!("{server_key}: everything read: {plan:?}");
            };
            assert_eq!(parts.len(), 2, "{parts:?}");
            let mut answers = vec![];
            let mut read = samples[0].1.len();
            for (m, s) in samples.iter().skip(1) {
                let s: Vec<Sample> = s
                    .iter()
                    .filter(|(l, _, _)| parts.iter().any(|p| selects(p, &l.0)))
                    .cloned()
                    .collect();
                read += s.len();
                answers.push(answer(*m, s));
            }
            fill(&mut two, answers, known);
            assert!(
                read * 10 < total * 8,
                "{server_key}: read {read} of {total}"
            );
            assert!(query::edges(&all, &sel, false).len() > limit);
            assert_eq!(rows(&two), rows(&all), "{server_key}");
        }
    }

    /// A page whose last row has no bytes, or that shows every dependency,
    /// reads everything: the dependencies of the other metrics alone
    /// could be among its rows.
    #[test]
    fn everything_is_read_when_rows_without_bytes_are_shown() {
        let fleet = Fleet::new("http://127.0.0.1:9", Duration::from_secs(1), 1 << 20).unwrap();
        let samples = fleet_samples();
        let labels = vec![sanitize(resource::SERVICE_NAME, false)];
        let mut ranked = fleet.empty_store(T, T, &labels);
        fill(
            &mut ranked,
            vec![fleet.answer(FLOW_IO, samples[0].1.clone(), T).unwrap()],
            Default::default(),
        );
        let sel = sel(resource::SERVICE_NAME);
        let n = query::edges(&ranked, &sel, false).len();
        let label_of = |_: &str| Some(Some("service_name".to_string()));
        assert!(Plan::of(&ranked, &sel, n, label_of).is_some());
        assert!(Plan::of(&ranked, &sel, n + 1, label_of).is_none());
        // Matchers that would select more than half the bytes' series.
        let plan = Plan::of(&ranked, &sel, n - 1, label_of).unwrap();
        let values = HashMap::from([(
            "service_name".to_string(),
            (0..40)
                .map(|c| format!("c-{c}"))
                .chain((0..6).map(|k| format!("api-{k}")))
                .chain(["c.38|x".to_string(), "c\"37\\".to_string()])
                .collect(),
        )]);
        assert_eq!(plan.narrow(&ranked, &sel, &values), Narrow::All);
    }
}
