//! The storage's JSON answers (`vector`, `matrix`) as labelled samples.

use super::*;

pub(super) fn str_of(j: &Json, k: &str) -> String {
    j.get(k).and_then(Json::as_str).unwrap_or("").to_string()
}

pub(super) type Sample = (HashMap<String, String>, u64, f64);

pub(super) fn labels_of(series: &Json) -> HashMap<String, String> {
    series
        .get("metric")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn sample(pair: &Json) -> Option<(u64, f64)> {
    let a = pair.as_array()?;
    let t = a.first()?.as_f64()?;
    let v: f64 = a.get(1)?.as_str()?.parse().ok()?;
    v.is_finite().then_some(((t * 1e9).round() as u64, v))
}

/// An instant vector's samples, all stamped `at`.
pub(super) fn vector(data: &Json, at: u64) -> Vec<Sample> {
    let Some(result) = data.get("result").and_then(Json::as_array) else {
        return Vec::new();
    };
    result
        .iter()
        .filter_map(|s| {
            let (_, v) = sample(s.get("value")?)?;
            Some((labels_of(s), at, v))
        })
        .collect()
}

/// A range query's samples.
pub(super) fn matrix(data: &Json) -> Vec<Sample> {
    let Some(result) = data.get("result").and_then(Json::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in result {
        let labels = labels_of(s);
        for pair in s
            .get("values")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some((t, v)) = sample(pair) {
                out.push((labels.clone(), t, v));
            }
        }
    }
    out
}
