//! The storage's JSON answers (`vector`, `matrix`) as labelled samples.
//!
//! The answers are read straight into these types as they are parsed: an
//! answer of 110,000 series (the RTT buckets at 100 simulated nodes, 25 MB)
//! held as a `serde_json::Value` tree first, then copied into label maps,
//! took a third of the UI's time for a fleet Map request (#18).

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// A series' labels, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Labels(pub Vec<(String, String)>);

impl Labels {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of label names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut v: Vec<(String, String)> = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, val)) = map.next_entry::<String, String>()? {
                    v.push((k, val));
                }
                // Prometheus sends them sorted; anything else is sorted here.
                if !v.is_sorted_by(|a, b| a.0 <= b.0) {
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                }
                Ok(Labels(v))
            }
        }
        d.deserialize_map(LabelsVisitor)
    }
}

/// A sample as the query API writes it: `[<unix seconds>, "<value>"]`.
#[derive(Deserialize)]
struct Pair(f64, String);

impl Pair {
    fn sample(&self) -> Option<(u64, f64)> {
        let v: f64 = self.1.parse().ok()?;
        (v.is_finite() && self.0.is_finite() && self.0 >= 0.0)
            .then_some(((self.0 * 1e9).round() as u64, v))
    }
}

/// One series of a `vector` or `matrix` result.
#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: Labels,
    value: Option<Pair>,
    #[serde(default)]
    values: Vec<Pair>,
}

/// The `data` of a `/api/v1/query` or `/api/v1/query_range` answer.
#[derive(Deserialize)]
pub(super) struct QueryData {
    #[serde(default)]
    result: Vec<Series>,
}

/// The envelope of every answer of the query API.
#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    pub status: Option<String>,
    pub data: Option<T>,
    #[serde(rename = "errorType", default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

pub(super) type Sample = (Labels, u64, f64);

impl QueryData {
    /// An instant vector's samples, all stamped `at`.
    pub fn vector(self, at: u64) -> Vec<Sample> {
        self.result
            .into_iter()
            .filter_map(|s| {
                let (_, v) = s.value?.sample()?;
                Some((s.metric, at, v))
            })
            .collect()
    }

    /// A range query's samples.
    pub fn matrix(self) -> Vec<Sample> {
        let mut out = Vec::new();
        for s in self.result {
            for pair in &s.values {
                if let Some((t, v)) = pair.sample() {
                    out.push((s.metric.clone(), t, v));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_into_samples() {
        let data: Envelope<QueryData> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"le":"+Inf","a":"x"},"value":[1796629394.184,"7"]},
                {"metric":{},"value":[1796629394.184,"NaN"]}]}}"#,
        )
        .unwrap();
        let s = data.data.unwrap().vector(5);
        assert_eq!(s.len(), 1, "the NaN sample is left out");
        assert_eq!(
            s[0].0,
            Labels(vec![("a".into(), "x".into()), ("le".into(), "+Inf".into())])
        );
        assert_eq!((s[0].1, s[0].2), (5, 7.0));
        let m: QueryData = serde_json::from_str(
            r#"{"resultType":"matrix","result":[{"metric":{"b":"1"},
                "values":[[10,"1"],[20.5,"2"]]}]}"#,
        )
        .unwrap();
        let s = m.matrix();
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].1, s[1].2), (20_500_000_000, 2.0));
        assert_eq!(s[1].0.get("b"), Some("1"));
        // Not a list of series: an error naming what was expected.
        let bad = serde_json::from_str::<QueryData>(r#"{"result":[1,"2"]}"#);
        assert!(bad.is_err());
    }
}
