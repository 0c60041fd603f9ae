//! The Paths page and Health's route changes over the storage: every
//! Network Path series per test and hop.

use super::*;

/// Keys of the Paths page's series besides those the other pages know.
pub(super) const PATH_VIEW_KEYS: &[&str] = &[
    path::SERVER_PORT,
    path::PROTOCOL,
    path::TEST,
    path::HOP_INDEX,
    path::HOP_ADDRESS,
    path::HOP_NAME,
    path::HOP_AS_NUMBER,
    path::HOP_AS_NAME,
];

/// The Network Path metrics, each read per test (and hop) for the Paths
/// page: all but the TLS checks, which the Health page reads with their
/// certificate's labels.
pub(super) fn path_metrics() -> impl Iterator<Item = MetricId> {
    PATH_METRICS
        .into_iter()
        .filter(|m| *m != PATH_TLS_TIME_LEFT && *m != PATH_TLS_CHECK_FAILED)
}

/// The PromQL of a Network Path metric per `step_ns` window: like
/// [`expr`], but summed `without (instance, job)`, so every label of a test
/// (its Resource labels and the user's tags included) is kept whatever it
/// is named.
pub fn path_expr(metric: MetricId, step_ns: u64, increase: Increase) -> String {
    let name = prom_name(metric);
    let window = Window::new(step_ns, 0);
    match metric.kind() {
        Kind::Gauge | Kind::UpDownCounter => {
            format!("max without (instance, job) ({})", window.last(&name))
        }
        _ => format!(
            "sum without (instance, job) ({})",
            window.increase(&name, increase)
        ),
    }
}

impl Fleet {
    /// The Paths page's store: every Network Path series per test and hop,
    /// one slot per `step` (default: the range in 240 steps, at least
    /// 10 s), so that each slot holds the runs of its step and the route
    /// history can be read from the hop series as on one node.
    pub(super) async fn load_paths(
        &self,
        range: Range,
        step: Option<u64>,
    ) -> Result<Store, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        let step = step.unwrap_or_else(|| (span / 240 / NS).max(10) * NS);
        let mut st = Store::new(span, span, self.max_series.max(1));
        let increase = self.increase().await?;
        let answers = futures_util::future::try_join_all(path_metrics().map(|m| {
            let q = path_expr(m, step, increase);
            async move { Ok::<_, FleetError>((m, self.query_range(q, range, step).await?)) }
        }))
        .await?;
        let series: usize = answers
            .iter()
            .map(|(_, r)| {
                r.iter()
                    .map(|(l, _, _)| {
                        let mut k: Vec<_> = l.iter().filter(|(k, _)| *k != "le").collect();
                        k.sort();
                        k
                    })
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .sum();
        if series > self.max_series {
            return Err(FleetError::TooLarge {
                series,
                limit: self.max_series,
            });
        }
        let mut batches: std::collections::BTreeMap<u64, MetricBatch> =
            std::collections::BTreeMap::new();
        for (m, samples) in answers {
            for (labels, _, _) in &samples {
                for l in labels.names() {
                    if !NOT_KEYS.contains(&l) {
                        st.add_key(&self.key_of(l));
                    }
                }
            }
            self.points(m, samples, step, &mut batches);
        }
        for (_, b) in batches {
            st.insert(&b);
        }
        Ok(st)
    }
}

impl Fleet {
    /// Each test's route changes over `range` (one instant query, summed
    /// `without (instance, job)` as the Paths page reads them), for
    /// Health's "Route changed" finding.
    pub(super) async fn route_changes(
        &self,
        range: Range,
        increase: Increase,
    ) -> Result<Vec<Sample>, FleetError> {
        let span = range.to.saturating_sub(range.from).max(NS);
        let m = PATH_ROUTE_CHANGES;
        let data: QueryData = self
            .call(
                "/api/v1/query",
                &[
                    ("query", path_expr(m, span, increase)),
                    ("time", secs(range.to)),
                ],
            )
            .await?;
        Ok(data.vector(range.to))
    }
}
