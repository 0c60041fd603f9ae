//! Reading the pages' metrics from the storage: one aggregated query per
//! metric, the baseline spans, and the answers turned into the store's
//! points.

use flowscope_model::attr::Key;

use super::*;

impl Fleet {
    /// One metric's aggregated samples, of the series one of `parts` (lists
    /// of matchers selecting disjoint series; `[""]`: all) selects.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch(
        &self,
        metric: MetricId,
        by: &BTreeSet<String>,
        from_rules: bool,
        increase: Increase,
        range: Range,
        step: Option<u64>,
        parts: &[String],
    ) -> Result<Vec<Sample>, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        let queries = shards(metric)
            .iter()
            .flat_map(|shard| parts.iter().map(move |part| and(shard, part)));
        let answers = futures_util::future::try_join_all(queries.map(|matchers| async move {
            match step {
                None => {
                    let q = if from_rules {
                        rule_query(metric, by, span, &matchers)
                    } else {
                        expr_shard(metric, by, span, 0, &matchers, increase)
                    };
                    let data: QueryData = self
                        .call("/api/v1/query", &[("query", q), ("time", secs(range.to))])
                        .await?;
                    Ok(data.vector(range.to))
                }
                Some(step) => {
                    let q = expr_shard(metric, by, step, 0, &matchers, increase);
                    self.query_range(q, range, step).await
                }
            }
        }))
        .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// A range query's samples: one per `step` after `range.from`, up to
    /// `range.to`.
    pub(super) async fn query_range(
        &self,
        q: String,
        range: Range,
        step: u64,
    ) -> Result<Vec<Sample>, FleetError> {
        let data: QueryData = self
            .call(
                "/api/v1/query_range",
                &[
                    ("query", q),
                    ("start", secs(range.from + step)),
                    ("end", secs(range.to)),
                    ("step", secs(step)),
                ],
            )
            .await?;
        Ok(data.matrix())
    }

    /// The baseline metrics' samples over the two baseline spans of
    /// `range` ([`crate::ui::baseline::held_spans`]): the same increase as the
    /// range's, shifted back with PromQL `offset` (one span, one day), and
    /// stamped with the baseline span's end, so that the Health store holds
    /// them where the single-node store would.
    ///
    /// A span is held when the storage had any flow series in the hour
    /// before it started (an agent was writing then): its samples, and the
    /// start of the earliest held span ([`Store::hold_from`]). A span
    /// without a held start is not compared with.
    pub(super) async fn fetch_baselines(
        &self,
        range: Range,
        by_of: &(dyn Fn(&[&str]) -> BTreeSet<String> + Sync),
        increase: Increase,
    ) -> Result<(Vec<(MetricId, Vec<Sample>)>, Option<u64>), FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        let mut metrics: Vec<MetricId> = Vec::new();
        for m in crate::ui::baseline::METRICS.iter().flat_map(|b| b.reads) {
            if !metrics.contains(m) {
                metrics.push(*m);
            }
        }
        let mut held = None;
        for offset in [span, crate::ui::baseline::DAY_NS] {
            let q = format!(
                "count(last_over_time({}[1h] offset {}s))",
                prom_name(FLOW_IO),
                (offset + span) / NS
            );
            let data: QueryData = self
                .call("/api/v1/query", &[("query", q), ("time", secs(range.to))])
                .await?;
            if !data.vector(range.to).is_empty() {
                let start = range.from.saturating_sub(offset);
                held = Some(held.map_or(start, |h: u64| h.min(start)));
            }
        }
        let Some(held) = held else {
            return Ok((Vec::new(), None));
        };
        let mut asks = Vec::new();
        for offset in [span, crate::ui::baseline::DAY_NS] {
            if range.from.saturating_sub(offset) < held {
                continue;
            }
            for m in &metrics {
                let base = wanted()
                    .into_iter()
                    .find(|(w, _)| w == m)
                    .map_or(FLOW_LABELS, |(_, b)| b);
                asks.push((
                    *m,
                    expr_offset(*m, &by_of(base), span, offset, increase),
                    offset,
                ));
            }
        }
        let answers = futures_util::future::try_join_all(asks.into_iter().map(|(m, q, offset)| {
            let at = range.to.saturating_sub(offset);
            async move {
                let data: QueryData = self
                    .call("/api/v1/query", &[("query", q), ("time", secs(range.to))])
                    .await?;
                Ok::<_, FleetError>((m, data.vector(at)))
            }
        }))
        .await?;
        let answers = answers.into_iter().filter(|(_, r)| !r.is_empty()).collect();
        Ok((answers, Some(held)))
    }

    pub(super) async fn load(
        &self,
        need: Need,
        range: Range,
        extra_keys: &[String],
        step: Option<u64>,
        shown: Option<&Shown<'_>>,
    ) -> Result<Store, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        // Health also holds the baseline spans: the span before and the
        // same span a day earlier (module documentation, "Baselines").
        let kept = if need == Need::Health && step.is_none() {
            2 * span + crate::ui::baseline::DAY_NS
        } else {
            span
        };
        let labels = self.label_names(range).await?;
        let mut st = self.empty_store(kept, span, &labels);
        let present: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
        // Only labels the storage has: a user's key that no series carries
        // never reaches PromQL.
        let extra: Vec<String> = extra_keys
            .iter()
            .map(|k| sanitize(k, false))
            .filter(|l| present.contains(l.as_str()))
            .collect();
        let by_of = |base: &[&str]| -> BTreeSet<String> {
            let mut by: BTreeSet<String> = base.iter().map(|k| sanitize(k, false)).collect();
            by.extend(extra.iter().cloned());
            by
        };
        let flow_labels: BTreeSet<String> =
            FLOW_LABELS.iter().map(|k| sanitize(k, false)).collect();
        // The rules carry only the flow labels: a request grouping by
        // anything else reads the raw series.
        let mut rules =
            self.rules && step.is_none() && extra.iter().all(|l| flow_labels.contains(l));
        let wanted: Vec<(MetricId, &'static [&'static str])> = wanted()
            .into_iter()
            .filter(|(m, _)| need.reads(*m))
            .collect();
        if wanted.is_empty() {
            return Ok(st);
        }
        let increase = self.increase().await?;
        // Everything at once, with Health's route changes and baseline
        // spans: the storage answers them in parallel. Each answer is made
        // into points as it arrives, while the storage still works on the
        // others. The metrics the rules cover are read from them when
        // `rules`; `wanted()` lists the bytes first, and their points go
        // into the store first.
        let width = step.unwrap_or(span);
        let ask =
            |m: MetricId, base: &'static [&'static str], from_rules: bool, parts: &[String]| {
                let by = by_of(base);
                let parts = parts.to_vec();
                async move {
                    let samples = self
                        .fetch(m, &by, from_rules, increase, range, step, &parts)
                        .await?;
                    self.answer(m, samples, width)
                }
            };
        // A page that shows only its busiest dependencies (Map, Analytics)
        // asks the bytes first, and the rest only for the dependencies it
        // shows (module documentation, "Only what a page shows").
        let all = [String::new()];
        let mut parts: Vec<String> = all.to_vec();
        // When the bytes are asked first: the directory of each timestamp
        // (the rest is named by the bytes' one, as when read together), and
        // how many series they had.
        let mut known = std::collections::BTreeMap::new();
        let mut bytes_first = None;
        if let Some(shown) = shown.filter(|_| need == Need::Dependencies && step.is_none()) {
            let halves = DIRECTION_SHARDS.map(String::from);
            let alone: &[String] = match increase {
                Increase::Joined => &halves,
                Increase::Pure => &all,
            };
            let mut bytes = ask(FLOW_IO, FLOW_LABELS, rules, alone).await?;
            if rules && bytes.series == 0 {
                bytes = ask(FLOW_IO, FLOW_LABELS, false, alone).await?;
                rules = false;
            }
            bytes_first = Some(bytes.series);
            known = fill(&mut st, vec![bytes], known);
            let narrow = self
                .narrowing(&st, shown, &by_of(FLOW_LABELS), range)
                .await?;
            tracing::debug!(?narrow, "fleet view: what the second phase reads");
            if let Narrow::Parts(p) = narrow {
                parts = p;
            }
        }
        let reads = futures_util::future::try_join_all(
            wanted
                .iter()
                .filter(|(m, _)| bytes_first.is_none() || *m != FLOW_IO)
                .map(|&(m, base)| ask(m, base, rules && RULE_METRICS.contains(&m), &parts)),
        );
        let routes = async {
            match need {
                Need::Health => {
                    let r = self.route_changes(range, increase).await?;
                    self.answer(PATH_ROUTE_CHANGES, r, width).map(Some)
                }
                _ => Ok(None),
            }
        };
        let baselines = async {
            if kept > span {
                self.fetch_baselines(range, &by_of, increase).await
            } else {
                Ok((Vec::new(), None))
            }
        };
        let (mut answers, routes, (baselines, held_from)) =
            futures_util::future::try_join3(reads, routes, baselines).await?;
        // Nothing from the rules in the range for the first flow metric the
        // page reads (the bytes, or Health's packets): the rules are not
        // loaded, so the metrics they cover again, from the raw series; the
        // others' answers stand. A query of a name the storage does not
        // hold costs it nothing.
        let probe = wanted
            .iter()
            .map(|(m, _)| *m)
            .find(|m| RULE_METRICS.contains(m));
        if rules
            && answers
                .iter()
                .any(|a| Some(a.metric) == probe && a.series == 0)
        {
            let raw = futures_util::future::try_join_all(
                wanted
                    .iter()
                    .filter(|(m, _)| RULE_METRICS.contains(m))
                    .map(|&(m, base)| ask(m, base, false, &all)),
            )
            .await?;
            for r in raw {
                if let Some(slot) = answers.iter_mut().find(|a| a.metric == r.metric) {
                    *slot = r;
                }
            }
        }
        answers.extend(routes);
        for (m, r) in baselines {
            answers.push(self.answer(m, r, width)?);
        }
        let series = answers.iter().map(|a| a.series).sum::<usize>() + bytes_first.unwrap_or(0);
        if series > self.max_series {
            return Err(FleetError::TooLarge {
                series,
                limit: self.max_series,
            });
        }
        fill(&mut st, answers, known);
        if let Some(start) = held_from {
            st.hold_from(start);
        }
        Ok(st)
    }

    /// A store for a request's answers: `kept` ns at full resolution (a
    /// rollup to whole minutes would move a baseline slot's end into the
    /// range), `span` by default, with every key of the storage's `labels`.
    pub(super) fn empty_store(&self, kept: u64, span: u64, labels: &[String]) -> Store {
        let mut st = Store::new(kept, kept, self.max_series.max(1)).with_default_span(span);
        for l in labels {
            if !NOT_KEYS.contains(&l.as_str()) {
                st.add_key(&self.key_of(l));
            }
        }
        st
    }

    /// One metric's answer made into points, refused when it alone holds
    /// more than `max_series` series (before any point is made of it).
    pub(super) fn answer(
        &self,
        metric: MetricId,
        samples: Vec<Sample>,
        width: u64,
    ) -> Result<Answer, FleetError> {
        let series = samples.len();
        if series > self.max_series {
            return Err(FleetError::TooLarge {
                series,
                limit: self.max_series,
            });
        }
        let mut batches = std::collections::BTreeMap::new();
        self.points(metric, samples, width, &mut batches);
        Ok(Answer {
            metric,
            series,
            batches,
        })
    }

    /// Turns answered samples into points of `metric`, one batch per
    /// timestamp; histogram buckets (`le`) fold into one point per series.
    pub(super) fn points(
        &self,
        metric: MetricId,
        samples: Vec<Sample>,
        width: u64,
        batches: &mut std::collections::BTreeMap<u64, MetricBatch>,
    ) {
        // (timestamp, series labels without `le`) -> (le, cumulative count).
        type Buckets = HashMap<(u64, Vec<(String, String)>), Vec<(f64, f64)>>;
        let mut hists: Buckets = HashMap::new();
        let mut split = Split::new(self);
        for (labels, t, v) in samples {
            if metric.kind() == Kind::Histogram {
                let le = labels.get("le").and_then(parse_le);
                let Some(le) = le else { continue };
                // Sorted already: the rest of the labels name the series.
                let mut key = labels.0;
                key.retain(|(k, _)| k != "le" && k != "__name__");
                hists.entry((t, key)).or_default().push((le, v));
                continue;
            }
            let value = match metric.kind() {
                Kind::Gauge => PointValue::Double(v),
                _ => PointValue::Int(v.max(0.0).round() as u64),
            };
            let (resource, attrs) = split.split(&labels.0);
            push(batches, t, width, metric, resource, attrs, value);
        }
        for ((t, labels), mut buckets) in hists {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let Some(h) = histogram(&buckets) else {
                continue;
            };
            let (resource, attrs) = split.split(&labels);
            push(
                batches,
                t,
                width,
                metric,
                resource,
                attrs,
                PointValue::Histogram(h),
            );
        }
    }
}

/// Labels made into a point's Resource and attributes (keys restored), for
/// one answer: each label's key, each distinct value's text and each
/// distinct Resource are made once and shared by every point that has
/// them. An answer's series repeat a few names, hosts and ports many times
/// (a Map at 100 simulated nodes: 80,000 points of 2,000 workloads), and
/// making two strings per label and a Resource per point was most of
/// "making points", a fifth of the UI's time for a Map (#18).
pub(super) struct Split<'a> {
    fleet: &'a Fleet,
    /// label -> (key, whether the Resource holds it); `None`: not a key.
    keys: HashMap<String, Option<(Key, bool)>>,
    values: flowscope_model::intern::Strings,
    resources: HashMap<Vec<(Key, Arc<str>)>, Arc<Attrs>>,
}

impl<'a> Split<'a> {
    pub(super) fn new(fleet: &'a Fleet) -> Self {
        Split {
            fleet,
            keys: HashMap::new(),
            values: Default::default(),
            resources: HashMap::new(),
        }
    }

    /// Labels -> (Resource, attributes); `__name__`, `job`, `instance`,
    /// `le` and empty values left out.
    pub(super) fn split(&mut self, labels: &[(String, String)]) -> (Arc<Attrs>, Attrs) {
        let mut res: Vec<(Key, Arc<str>)> = Vec::new();
        let mut attrs = Attrs::new();
        for (l, v) in labels {
            if v.is_empty() {
                continue;
            }
            let key = match self.keys.get(l.as_str()) {
                Some(k) => k.clone(),
                None => {
                    let k = (!NOT_KEYS.contains(&l.as_str())).then(|| {
                        let key = self.fleet.key_of(l);
                        let resource = is_resource_key(&key);
                        (Key::from(key.as_ref()), resource)
                    });
                    self.keys.insert(l.clone(), k.clone());
                    k
                }
            };
            let Some((key, resource)) = key else { continue };
            let value = self.values.get(v);
            if resource {
                res.push((key, value));
            } else {
                attrs.set(key, value);
            }
        }
        let resource = match self.resources.get(&res) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(res.iter().cloned().collect::<Attrs>());
                self.resources.insert(res, r.clone());
                r
            }
        };
        (resource, attrs)
    }
}

/// Puts answers into a store: their points of each timestamp together,
/// named by the directory `known` has for that timestamp, else by one of
/// their own ([`Directory::of`]; `wanted()` lists the bytes first). Returns
/// the directories used.
pub(super) fn fill(
    st: &mut Store,
    answers: Vec<Answer>,
    mut known: std::collections::BTreeMap<u64, Directory>,
) -> std::collections::BTreeMap<u64, Directory> {
    let mut batches: std::collections::BTreeMap<u64, MetricBatch> =
        std::collections::BTreeMap::new();
    for (t, b) in answers.into_iter().flat_map(|a| a.batches) {
        match batches.entry(t) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(b);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                e.get_mut().points.extend(b.points)
            }
        }
    }
    for (t, mut b) in batches {
        let directory = known.entry(t).or_insert_with(|| Directory::of(&b.points));
        directory.name(&mut b.points);
        st.insert(&b);
    }
    known
}

/// One metric's answer as points: how many samples it held, and their
/// points by timestamp.
pub(super) struct Answer {
    metric: MetricId,
    series: usize,
    pub(super) batches: std::collections::BTreeMap<u64, MetricBatch>,
}

pub(super) fn push(
    batches: &mut std::collections::BTreeMap<u64, MetricBatch>,
    t: u64,
    width: u64,
    metric: MetricId,
    resource: Arc<Attrs>,
    attrs: Attrs,
    value: PointValue,
) {
    batches
        .entry(t)
        .or_insert_with(|| MetricBatch::new(t.saturating_sub(width), t))
        .points
        .push(Point {
            resource,
            metric,
            attrs,
            value,
        });
}

/// Cumulative `(le, count)` pairs, sorted, to a histogram (`+Inf` last).
pub(super) fn histogram(buckets: &[(f64, f64)]) -> Option<Histogram> {
    let (_, total) = *buckets.last()?;
    let bounds: Vec<f64> = buckets
        .iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .collect();
    let mut h = Histogram::new(Arc::from(bounds));
    let mut before = 0u64;
    for (i, (_, cum)) in buckets.iter().enumerate() {
        let cum = cum.max(0.0).round() as u64;
        if let Some(c) = h.counts.get_mut(i) {
            *c = cum.saturating_sub(before);
        }
        before = before.max(cum);
    }
    h.count = total.max(0.0).round() as u64;
    if h.count == 0 {
        return None;
    }
    // No min or max is stored: quantiles are not clamped (min > max).
    h.min = f64::INFINITY;
    h.max = f64::NEG_INFINITY;
    Some(h)
}

pub(super) fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}
