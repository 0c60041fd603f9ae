//! Shared copies of repeated strings.
//!
//! Parsers that read many records naming the same few things (cloud
//! services in a range file, label values in a storage's answer) keep one
//! `Arc<str>` per distinct text and hand out clones, so a value repeated a
//! hundred thousand times is one allocation.

use std::collections::HashSet;
use std::sync::Arc;

/// One `Arc<str>` per distinct string seen. Lives as long as the parse
/// that fills it; dropping it frees only what no record still shares.
#[derive(Debug, Default)]
pub struct Strings(HashSet<Arc<str>>);

impl Strings {
    /// The shared copy of `s`, made on first sight.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    /// Distinct strings held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_allocation() {
        let mut s = Strings::default();
        let a = s.get("api");
        let b = s.get(&String::from("api"));
        let c = s.get("db");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((&*a, &*c, s.len()), ("api", "db", 2));
    }
}
