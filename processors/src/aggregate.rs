//! Aggregation: flows grouped by a chosen set of Resource keys and flow
//! attributes, then turned into the contract's points.
//!
//! Grouping works on flows, not points: each flow's Resource and attributes
//! are projected onto the kept keys, flows with equal projections merge their
//! [`FlowStats`] ([`FlowStats::merge`]: sums add, histograms merge, the
//! `active` gauges add because two open connections are two, RTT variance
//! pools as a mean), and each group becomes points once through
//! [`flow_points`]. Attributes a point gets from the metric itself
//! (`network.io.direction`, `error.type`) are never dropped, so transmit and
//! receive never mix. Without a `group_by` every key is kept, which gives
//! exactly `flow_points` over every flow followed by
//! [`MetricBatch::coalesce`].
//!
//! [`MetricBatch::coalesce`]: flowscope_model::MetricBatch::coalesce
//! [`FlowStats`]: flowscope_model::FlowStats
//! [`FlowStats::merge`]: flowscope_model::FlowStats::merge

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use flowscope_model::metrics::{FLOW_COST, flow_points, max_points};
use flowscope_model::{Attrs, Flow, Point, PointValue};

/// Which keys of a set survive grouping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySet {
    /// Every key is kept.
    All,
    /// Only these keys. A key ending in `*` keeps every key starting with
    /// what comes before it (`flowscope.peer.tag.*`).
    Only {
        exact: Vec<Arc<str>>,
        prefixes: Vec<Arc<str>>,
    },
}

impl KeySet {
    /// A set from configured key names.
    pub fn only<S: AsRef<str>>(keys: &[S]) -> Self {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for k in keys {
            let k = k.as_ref();
            match k.strip_suffix('*') {
                Some(p) => prefixes.push(Arc::from(p)),
                None => exact.push(Arc::from(k)),
            }
        }
        exact.sort();
        exact.dedup();
        KeySet::Only { exact, prefixes }
    }

    pub fn keeps(&self, key: &str) -> bool {
        match self {
            KeySet::All => true,
            KeySet::Only { exact, prefixes } => {
                exact.binary_search_by(|k| k.as_ref().cmp(key)).is_ok()
                    || prefixes.iter().any(|p| key.starts_with(p.as_ref()))
            }
        }
    }

    fn project(&self, attrs: &mut Attrs) {
        if !matches!(self, KeySet::All) {
            attrs.retain(|k, _| self.keeps(k));
        }
    }
}

/// The grouping of one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupBy {
    pub resource: KeySet,
    pub attributes: KeySet,
}

impl GroupBy {
    /// Keeps every key: the contract's full detail.
    pub fn all() -> Self {
        GroupBy {
            resource: KeySet::All,
            attributes: KeySet::All,
        }
    }

    fn drops_transport(&self) -> bool {
        !self
            .attributes
            .keeps(flowscope_model::names::attr::NETWORK_TRANSPORT)
    }
}

struct Group {
    /// The first flow of the group, carrying the projected Resource and
    /// attributes and the merged stats.
    flow: Flow,
    cost_usd: f64,
}

/// Groups one interval's flows. Built fresh for every batch by the chain.
pub(crate) struct Grouper<'a> {
    by: &'a GroupBy,
    state: DefaultHashBuilder,
    /// Indices into `groups` with their hash of (transport, Resource,
    /// attributes), kept so that growing the table rehashes no set.
    index: HashTable<(u64, usize)>,
    groups: Vec<Group>,
    /// Projected Resources by the address of the original `Arc`; the
    /// original is kept so its address cannot be reused within the batch.
    resources: HashMap<usize, (Arc<Attrs>, Arc<Attrs>)>,
    /// Interned projections, so equal Resources share one `Arc`.
    interned: HashMap<Arc<Attrs>, Arc<Attrs>>,
}

impl<'a> Grouper<'a> {
    /// A grouper for up to `flows` flows without growing.
    pub(crate) fn new(by: &'a GroupBy, flows: usize) -> Self {
        Grouper {
            by,
            state: DefaultHashBuilder::default(),
            index: HashTable::with_capacity(flows),
            groups: Vec::with_capacity(flows),
            resources: HashMap::new(),
            interned: HashMap::new(),
        }
    }

    fn project_resource(&mut self, res: &Arc<Attrs>) -> Arc<Attrs> {
        let addr = Arc::as_ptr(res) as usize;
        if let Some((_, projected)) = self.resources.get(&addr) {
            return projected.clone();
        }
        let projected = if matches!(self.by.resource, KeySet::All) {
            res.clone()
        } else {
            let mut a = (**res).clone();
            self.by.resource.project(&mut a);
            Arc::new(a)
        };
        let projected = self
            .interned
            .entry(projected.clone())
            .or_insert(projected)
            .clone();
        self.resources
            .insert(addr, (res.clone(), projected.clone()));
        projected
    }

    /// Adds one flow (and its cost, 0 when none) to its group.
    pub(crate) fn add(&mut self, mut flow: Flow, cost_usd: f64) {
        let resource = self.project_resource(&flow.resource);
        self.by.attributes.project(&mut flow.attrs);
        // Projected Resources are interned: within the batch, equal ones
        // are one `Arc`, so its address stands for its pairs.
        let hash = self
            .state
            .hash_one((flow.transport, Arc::as_ptr(&resource), &flow.attrs));
        let groups = &mut self.groups;
        let found = self.index.find(hash, |&(h, i)| {
            let g = &groups[i].flow;
            h == hash
                && g.transport == flow.transport
                && Arc::ptr_eq(&g.resource, &resource)
                && g.attrs == flow.attrs
        });
        match found {
            Some(&(_, i)) => {
                let g = &mut groups[i];
                g.flow.stats.merge(&flow.stats);
                g.cost_usd += cost_usd;
            }
            None => {
                flow.resource = resource;
                let i = groups.len();
                groups.push(Group { flow, cost_usd });
                self.index.insert_unique(hash, (hash, i), |&(h, _)| h);
            }
        }
    }

    /// The groups' points, in the order their first flow arrived.
    pub(crate) fn finish(self, out: &mut Vec<Point>) {
        let start = out.len();
        // Room for every point, so that the vector is never copied.
        let most = |g: &Group| max_points(&g.flow) + usize::from(g.cost_usd > 0.0);
        out.reserve(self.groups.iter().map(most).sum());
        let drops_transport = self.by.drops_transport();
        for g in self.groups {
            let cost = (g.cost_usd > 0.0).then(|| Point {
                resource: g.flow.resource.clone(),
                metric: FLOW_COST,
                attrs: g.flow.attrs.clone(),
                value: PointValue::Double(g.cost_usd),
            });
            flow_points(g.flow, out);
            out.extend(cost);
        }
        // Groups that differ only in transport share their byte and packet
        // series once `network.transport` is dropped: merge those.
        if drops_transport {
            let mut tail = flowscope_model::MetricBatch {
                points: out.split_off(start),
                ..Default::default()
            };
            tail.coalesce();
            out.append(&mut tail.points);
        }
    }
}
