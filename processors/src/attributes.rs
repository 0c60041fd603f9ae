//! The Collector's `resource` and `attributes` processors: a list of
//! actions applied in order to every point's Resource (`resource`) or
//! attributes (`attributes`).
//!
//! They run on points, after aggregation and before the cardinality limits
//! (see [`crate::chain`]). Two series that an action makes equal (a
//! `delete` of the attribute that told them apart, an `update` to a common
//! value) merge there into one point, as the `aggregate` processor merges
//! flows: sums add, histograms merge bucket by bucket, gauges add or pool
//! as their kind says, so totals stay exact and the merged series takes one
//! cardinality slot.
//!
//! Values follow the Collector: `hash` is the lowercase hex SHA-256 of the
//! value's text; `extract` sets one attribute per named group of `pattern`
//! that matched the string value of `key`; `from_attribute` copies a value
//! of the same set, and sets nothing when that attribute is absent.

use std::collections::HashMap;
use std::sync::Arc;

use flowscope_model::{Attrs, Point, Value};
use flowscope_otel_config::processors::{
    AttrValue, AttributeAction, ConvertTo, KeyMatch, ValueSource,
};
use regex::Regex;

/// Why an action list could not be compiled (a `pattern` that loading
/// accepted but this build's regex engine refuses: not expected).
#[derive(Debug, thiserror::Error)]
#[error("action #{index}: `pattern` is not a valid regex")]
pub struct ActionsError {
    pub index: usize,
    #[source]
    pub source: regex::Error,
}

enum Source {
    Value(Value),
    Attribute(Arc<str>),
}

enum Keys {
    Exact(Arc<str>),
    Pattern(Option<Arc<str>>, Regex),
}

enum Action {
    Insert(Arc<str>, Source),
    Update(Arc<str>, Source),
    Upsert(Arc<str>, Source),
    Delete(Keys),
    Hash(Keys),
    Extract(Arc<str>, Regex),
    Convert(Arc<str>, ConvertTo),
}

/// A compiled action list.
pub struct Actions(Vec<Action>);

fn value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::from(s.as_str()),
        AttrValue::Int(i) => Value::Int(*i),
        AttrValue::Bool(b) => Value::Bool(*b),
    }
}

fn source(s: &ValueSource) -> Source {
    match s {
        ValueSource::Value(v) => Source::Value(value(v)),
        ValueSource::Attribute(a) => Source::Attribute(Arc::from(a.as_str())),
    }
}

impl Actions {
    /// Compiles the configured actions.
    ///
    /// # Errors
    /// [`ActionsError`] for a pattern the regex engine refuses.
    pub fn new(actions: &[AttributeAction]) -> Result<Actions, ActionsError> {
        let re =
            |index: usize, p: &str| Regex::new(p).map_err(|source| ActionsError { index, source });
        let keys = |index: usize, k: &KeyMatch| -> Result<Keys, ActionsError> {
            let key = k.key.as_deref().map(Arc::from);
            Ok(match (&k.pattern, key) {
                (Some(p), key) => Keys::Pattern(key, re(index, p)?),
                (None, Some(key)) => Keys::Exact(key),
                // Loading requires one of them.
                (None, None) => Keys::Pattern(None, re(index, "$^")?),
            })
        };
        let mut out = Vec::with_capacity(actions.len());
        for (i, a) in actions.iter().enumerate() {
            out.push(match a {
                AttributeAction::Insert { key, from } => {
                    Action::Insert(Arc::from(key.as_str()), source(from))
                }
                AttributeAction::Update { key, from } => {
                    Action::Update(Arc::from(key.as_str()), source(from))
                }
                AttributeAction::Upsert { key, from } => {
                    Action::Upsert(Arc::from(key.as_str()), source(from))
                }
                AttributeAction::Delete { keys: k } => Action::Delete(keys(i, k)?),
                AttributeAction::Hash { keys: k } => Action::Hash(keys(i, k)?),
                AttributeAction::Extract { key, pattern } => {
                    Action::Extract(Arc::from(key.as_str()), re(i, pattern)?)
                }
                AttributeAction::Convert { key, to } => {
                    Action::Convert(Arc::from(key.as_str()), *to)
                }
            });
        }
        Ok(Actions(out))
    }

    /// Applies every action, in order, to `attrs`.
    pub fn apply(&self, attrs: &mut Attrs) {
        for a in &self.0 {
            match a {
                Action::Insert(k, s) => {
                    if attrs.get(k).is_none()
                        && let Some(v) = resolve(s, attrs)
                    {
                        attrs.set(k.clone(), v);
                    }
                }
                Action::Update(k, s) => {
                    if attrs.get(k).is_some()
                        && let Some(v) = resolve(s, attrs)
                    {
                        attrs.set(k.clone(), v);
                    }
                }
                Action::Upsert(k, s) => {
                    if let Some(v) = resolve(s, attrs) {
                        attrs.set(k.clone(), v);
                    }
                }
                Action::Delete(Keys::Exact(k)) => {
                    attrs.remove(k);
                }
                Action::Delete(Keys::Pattern(k, re)) => {
                    attrs.retain(|key, _| k.as_deref() != Some(key) && !re.is_match(key));
                }
                Action::Hash(keys) => {
                    let hit: Vec<(Arc<str>, Value)> = attrs
                        .iter()
                        .filter(|(key, _)| matches_keys(keys, key))
                        .map(|(key, v)| (Arc::from(key), Value::from(sha256_hex(&v.to_string()))))
                        .collect();
                    for (k, v) in hit {
                        attrs.set(k, v);
                    }
                }
                Action::Extract(k, re) => {
                    let Some(text) = attrs.get_str(k).map(str::to_owned) else {
                        continue;
                    };
                    let Some(caps) = re.captures(&text) else {
                        continue;
                    };
                    for name in re.capture_names().flatten() {
                        if let Some(m) = caps.name(name) {
                            attrs.set(name, m.as_str());
                        }
                    }
                }
                Action::Convert(k, to) => {
                    let converted = match (attrs.get(k), to) {
                        (Some(Value::Str(s)), ConvertTo::Int) => {
                            s.trim().parse::<i64>().ok().map(Value::Int)
                        }
                        (Some(Value::Bool(b)), ConvertTo::Int) => Some(Value::Int(i64::from(*b))),
                        (Some(v @ (Value::Int(_) | Value::Bool(_))), ConvertTo::String) => {
                            Some(Value::from(v.to_string()))
                        }
                        _ => None,
                    };
                    if let Some(v) = converted {
                        attrs.set(k.clone(), v);
                    }
                }
            }
        }
    }
}

fn matches_keys(keys: &Keys, key: &str) -> bool {
    match keys {
        Keys::Exact(k) => k.as_ref() == key,
        Keys::Pattern(k, re) => k.as_deref() == Some(key) || re.is_match(key),
    }
}

fn resolve(s: &Source, attrs: &Attrs) -> Option<Value> {
    match s {
        Source::Value(v) => Some(v.clone()),
        Source::Attribute(a) => attrs.get(a).cloned(),
    }
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Which part of a point a stage changes.
pub(crate) enum Target {
    Resource,
    Attributes,
}

/// A `resource` or `attributes` processor in a chain.
pub(crate) struct PointStage {
    target: Target,
    actions: Actions,
}

impl PointStage {
    pub(crate) fn new(target: Target, actions: Actions) -> Self {
        PointStage { target, actions }
    }

    /// Applies the actions to every point. A Resource shared by many points
    /// is changed once and stays shared.
    pub(crate) fn apply(&self, points: &mut [Point]) {
        match self.target {
            Target::Attributes => {
                for p in points {
                    self.actions.apply(&mut p.attrs);
                }
            }
            Target::Resource => {
                // By the original's address; the originals are held by
                // `done` so no address is reused while it is in use.
                let mut done: HashMap<usize, (Arc<Attrs>, Arc<Attrs>)> = HashMap::new();
                let mut interned: HashMap<Arc<Attrs>, Arc<Attrs>> = HashMap::new();
                for p in points {
                    let addr = Arc::as_ptr(&p.resource) as usize;
                    if let Some((_, changed)) = done.get(&addr) {
                        p.resource = changed.clone();
                        continue;
                    }
                    let mut attrs = (*p.resource).clone();
                    self.actions.apply(&mut attrs);
                    let changed = if attrs == *p.resource {
                        p.resource.clone()
                    } else {
                        let a = Arc::new(attrs);
                        interned.entry(a.clone()).or_insert(a).clone()
                    };
                    let original = std::mem::replace(&mut p.resource, changed.clone());
                    done.insert(addr, (original, changed));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_otel_config::processors::AttributeAction;

    fn actions(yaml: &str) -> Actions {
        let list: Vec<AttributeAction> = serde_saphyr::from_str(yaml).unwrap();
        Actions::new(&list).unwrap()
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        pairs.iter().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn each_action_does_what_the_collector_documents() {
        let a = actions(
            "- {key: env, value: prod, action: insert}\n\
             - {key: region, value: eu, action: insert}\n\
             - {key: tier, value: db, action: update}\n\
             - {key: missing, value: x, action: update}\n\
             - {key: copy, from_attribute: host, action: upsert}\n\
             - {key: nothing, from_attribute: absent, action: upsert}\n\
             - {key: secret, action: hash}\n\
             - {key: url, pattern: \"^(?P<scheme>[a-z]+)://(?P<domain>[^/]+)\", action: extract}\n\
             - {pattern: \"^tmp\\\\.\", action: delete}\n\
             - {key: port, converted_type: int, action: convert}",
        );
        let mut x = attrs(&[
            ("region", "us"),
            ("tier", "web"),
            ("host", "h1"),
            ("secret", "abc"),
            ("url", "https://example.com/x"),
            ("tmp.a", "1"),
            ("tmp.b", "2"),
            ("port", "443"),
        ]);
        a.apply(&mut x);
        let mut want = attrs(&[
            ("env", "prod"),
            ("region", "us"),
            ("tier", "db"),
            ("host", "h1"),
            ("copy", "h1"),
            // sha256("abc")
            (
                "secret",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            ("url", "https://example.com/x"),
            ("scheme", "https"),
            ("domain", "example.com"),
        ]);
        want.set("port", 443_i64);
        assert_eq!(x, want);
    }
}
