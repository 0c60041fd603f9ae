//! Client/server dependencies: every flow series of a range, resolved to
//! its client and server side by the selection's keys (see the sides in
//! [`super`]), summed per pair.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use flowscope_model::names::attr;
use flowscope_model::{Attrs, MetricId};

use super::totals::{Field, is_flow_metric};
use super::{
    NONE, Selection, Totals, UNKNOWN, client_is_local, local_is_client, local_value, remote_value,
};
use crate::ui::store::{SeriesKey, Slot, Store, Values};

/// One client/server dependency.
#[derive(Clone, Debug, Default)]
pub struct Edge {
    pub client: String,
    pub server: String,
    pub client_unresolved: bool,
    pub server_unresolved: bool,
    /// Whether a flow metric's series is part of it: false for an edge
    /// that only an `extra` metric of [`edges_reading`] made, which
    /// [`edges`] would not have.
    pub flow: bool,
    pub totals: Totals,
    /// Per bucket end (unix ns), when asked for.
    pub buckets: BTreeMap<u64, Totals>,
}

fn resolve(res: &Attrs, attrs: &Attrs, key: &str, local: bool) -> (String, /* unresolved */ bool) {
    if local {
        match local_value(res, attrs, key) {
            Some(v) => (v, false),
            None => (NONE.to_string(), false),
        }
    } else {
        match remote_value(res, attrs, key) {
            Some(v) => (v, false),
            None => match attrs.get(attr::PEER_ADDRESS) {
                Some(a) => (a.to_string(), true),
                None => (UNKNOWN.to_string(), true),
            },
        }
    }
}

/// A series' part of a range: its slots (per-interval buckets wanted), or
/// only what it adds up to.
enum SeriesSlots<'a> {
    Slots(Box<dyn Iterator<Item = &'a Slot> + 'a>),
    Values(Values<'a>),
}

/// The dependencies of `sel`, busiest first; with `buckets`, each with its
/// numbers per interval (or minute, past the full-resolution span).
pub fn edges(store: &Store, sel: &Selection, buckets: bool) -> Vec<Edge> {
    edges_reading(store, sel, buckets, &[])
}

/// [`edges`], reading the metrics in `extra` as well (the connection
/// durations, which only the churn finding needs).
pub fn edges_reading(
    store: &Store,
    sel: &Selection,
    buckets: bool,
    extra: &[MetricId],
) -> Vec<Edge> {
    let reads = |m: &MetricId| is_flow_metric(m) || extra.contains(m);
    let mut edges: HashMap<(String, String), Edge> = HashMap::new();
    // Everything but the values is decided once per series, not per slot;
    // without buckets, a series the range covers whole adds its kept total
    // (one value) instead of each of its slots.
    let series: Box<dyn Iterator<Item = (&SeriesKey, SeriesSlots<'_>)>> = if buckets {
        Box::new(
            store
                .series_slots(sel.from, sel.to, |(_, m, _)| reads(m))
                .map(|(k, s)| (k, SeriesSlots::Slots(Box::new(s)))),
        )
    } else {
        Box::new(
            store
                .series_values(sel.from, sel.to, |(_, m, _)| reads(m))
                .map(|(k, v)| (k, SeriesSlots::Values(v))),
        )
    };
    for ((res, m, attrs), slots) in series {
        if !reads(m) {
            continue;
        }
        let Some(local_client) = local_is_client(attrs) else {
            continue;
        };
        if !local_client && client_is_local(attrs) {
            continue;
        }
        if let Some(c) = &sel.cidr {
            let inside = attrs
                .get_str(attr::PEER_ADDRESS)
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|ip| c.contains(ip));
            if !inside {
                continue;
            }
        }
        let side = |key: &str, client: bool| resolve(res, attrs, key, client == local_client);
        let keep = sel.filters.iter().all(|(k, v)| {
            // A filter on a key holds when either side has that value.
            let (c, cu) = side(k, true);
            let (s, su) = side(k, false);
            (!cu && &c == v) || (!su && &s == v)
        });
        if !keep {
            continue;
        }
        let (client, cu) = side(&sel.client_key, true);
        let (server, su) = side(&sel.server_key, false);
        if sel.hide_unresolved && (cu || su) {
            continue;
        }
        let field = Field::of(m, attrs, local_client);
        let e = edges
            .entry((client.clone(), server.clone()))
            .or_insert_with(|| Edge {
                client,
                server,
                client_unresolved: cu,
                server_unresolved: su,
                ..Default::default()
            });
        e.flow |= is_flow_metric(m);
        match slots {
            SeriesSlots::Values(values) => {
                for v in values {
                    e.totals.add(&field, v);
                }
            }
            SeriesSlots::Slots(slots) => {
                for slot in slots {
                    e.totals.add(&field, &slot.value);
                    e.buckets
                        .entry(slot.end)
                        .or_default()
                        .add(&field, &slot.value);
                }
            }
        }
    }
    let mut out: Vec<Edge> = edges.into_values().collect();
    out.sort_by(|a, b| {
        b.totals
            .bytes()
            .cmp(&a.totals.bytes())
            .then_with(|| (&a.client, &a.server).cmp(&(&b.client, &b.server)))
    });
    out
}

/// Sums edges' buckets into one series.
pub fn merged_buckets<'a>(edges: impl Iterator<Item = &'a Edge>) -> BTreeMap<u64, Totals> {
    let mut out: BTreeMap<u64, Totals> = BTreeMap::new();
    for e in edges {
        for (t, b) in &e.buckets {
            out.entry(*t).or_default().merge(b);
        }
    }
    out
}
