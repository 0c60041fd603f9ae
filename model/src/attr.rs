//! Attribute sets: the keys that identify a Resource or a series.
//!
//! An [`Attrs`] is kept sorted by key so that two sets with the same pairs
//! compare and hash equal whatever order they were built in; aggregation
//! groups series by it.

use std::fmt;
use std::sync::Arc;

/// One attribute value. OTLP allows more kinds; the contract only uses these.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Str(Arc<str>),
    Int(i64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(Arc::from(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Arc::from(s))
    }
}
impl From<Arc<str>> for Value {
    fn from(s: Arc<str>) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u16> for Value {
    fn from(i: u16) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// Attribute key. Contract keys are `'static`; user CIDR tags are built at
/// run time, hence the `Arc`.
pub type Key = Arc<str>;

/// A sorted, duplicate-free set of attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attrs(Vec<(Key, Value)>);

impl Attrs {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn set(&mut self, key: impl Into<Key>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self
            .0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref()))
        {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// Builder form of [`Attrs::set`].
    pub fn with(mut self, key: impl Into<Key>, value: impl Into<Value>) -> Self {
        self.set(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The value of `key` when it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0.remove(i).1)
    }

    /// Keeps only the pairs for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Key>, V: Into<Value>> FromIterator<(K, V)> for Attrs {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut attrs = Attrs::new();
        for (k, v) in iter {
            attrs.set(k, v);
        }
        attrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_insertion_does_not_matter() {
        let a = Attrs::new().with("b", 1i64).with("a", "x");
        let b = Attrs::new().with("a", "x").with("b", 1i64);
        assert_eq!(a, b);
        assert_eq!(a.get_str("a"), Some("x"));
        assert_eq!(a.get("b"), Some(&Value::Int(1)));
    }

    #[test]
    fn set_replaces() {
        let mut a = Attrs::new().with("k", "old");
        a.set("k", "new");
        assert_eq!(a.len(), 1);
        assert_eq!(a.get_str("k"), Some("new"));
        assert_eq!(a.remove("k"), Some(Value::from("new")));
        assert!(a.is_empty());
    }
}
