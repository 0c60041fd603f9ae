//! Attribute sets: the keys that identify a Resource or a series.
//!
//! An [`Attrs`] is kept sorted by key so that two sets with the same pairs
//! compare and hash equal whatever order they were built in; aggregation
//! groups series by it.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};

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
///
/// The pairs are shared: a clone is one reference count, and a change to a
/// shared set copies it first (copy on write). A flow's attributes are
/// cloned into every point it makes and every series key that holds them,
/// so sharing is what keeps those clones cheap. The empty set holds no
/// allocation.
///
/// Adding a key to a shared set does not copy its pairs either: the new set
/// refers to the shared one and holds only the added pair (a set one pair
/// larger than another, as the direction a point adds to its flow's
/// attributes). Its pairs are those of the shared set with the new one in
/// its sorted place; any later change copies them all into a set of its
/// own. A copy would take a reference count per key and per text value.
///
/// Each set carries a 128-bit fingerprint of its pairs, kept up to date by
/// every change: the sum of a seeded hash of each pair, in two lanes of 64
/// bits with independent seeds. A sum does not depend on the order pairs
/// were added in, and adding or replacing one pair costs one pair's hash,
/// whatever the size of the set: the direction a point adds to its flow's
/// attributes, for example. Hashing a set ([`Hash`]) writes only the
/// fingerprint, and the cardinality limiter knows a series by it. The
/// seeds are random for each process (as a `HashMap`'s are), so no input
/// can be made to collide on purpose; two different sets share a
/// fingerprint with a chance of about 2^-128.
#[derive(Clone, Default)]
pub struct Attrs(Option<Arc<Shared>>);

#[derive(Clone, Default)]
struct Shared {
    fingerprint: Fingerprint,
    pairs: Pairs,
}

#[derive(Clone)]
enum Pairs {
    /// Every pair, sorted by key.
    Own(Vec<(Key, Value)>),
    /// The pairs of `base` (a set of `Own` pairs) and `pair`, whose key
    /// `base` does not have and which sorts at index `at` of its pairs.
    Added {
        base: Arc<Shared>,
        at: usize,
        pair: (Key, Value),
    },
}

impl Default for Pairs {
    fn default() -> Self {
        Pairs::Own(Vec::new())
    }
}

/// A set's fingerprint: two independent 64-bit sums (see [`Attrs`]).
pub type Fingerprint = [u64; 2];

/// The two lanes' seeds, drawn once per process.
static SEEDS: LazyLock<[foldhash::fast::RandomState; 2]> = LazyLock::new(Default::default);

fn pair_hash(key: &str, value: &Value) -> Fingerprint {
    let [a, b] = &*SEEDS;
    [a.hash_one((key, value)), b.hash_one((key, value))]
}

/// Adds a pair to a fingerprint (`sign` 1) or takes it out (`sign` -1).
fn account(fp: &mut Fingerprint, key: &str, value: &Value, sign: i8) {
    let h = pair_hash(key, value);
    for (lane, h) in fp.iter_mut().zip(h) {
        *lane = if sign > 0 {
            lane.wrapping_add(h)
        } else {
            lane.wrapping_sub(h)
        };
    }
}

/// Asks the CPU to bring the cache line at `p` in, without waiting for it:
/// a loop that will read many values not in cache issues their prefetches
/// first, so that the reads overlap instead of waiting in turn. A hint
/// only: it reads nothing and cannot fault (a no-op but on x86-64).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, in every x86-64) dereferences nothing and
    // never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Where `key` is, or would sort, in sorted `pairs`.
fn search(pairs: &[(Key, Value)], key: &str) -> Result<usize, usize> {
    pairs.binary_search_by(|(k, _)| k.as_ref().cmp(key))
}

impl Pairs {
    /// The pairs of a set of its own; none for a set that adds a pair.
    fn own(&self) -> &[(Key, Value)] {
        match self {
            Pairs::Own(pairs) => pairs,
            Pairs::Added { .. } => &[],
        }
    }

    /// The pairs in order, as three runs: the base's pairs before the added
    /// one, the added one, the rest (a set of its own is its first run).
    fn runs(&self) -> [&[(Key, Value)]; 3] {
        match self {
            Pairs::Own(pairs) => [pairs, &[], &[]],
            Pairs::Added { base, at, pair } => {
                let (before, after) = base.pairs.own().split_at(*at);
                [before, std::slice::from_ref(pair), after]
            }
        }
    }
}

impl Attrs {
    pub fn new() -> Self {
        Self(None)
    }

    /// Every pair, in key order.
    fn pairs(&self) -> impl Iterator<Item = &(Key, Value)> + Clone {
        let [a, b, c] = self.0.as_deref().map_or([&[][..]; 3], |s| s.pairs.runs());
        a.iter().chain(b).chain(c)
    }

    /// The set's fingerprint (see [`Attrs`]); `[0, 0]` for the empty set.
    #[inline]
    pub fn fingerprint(&self) -> Fingerprint {
        self.0.as_deref().map_or([0, 0], |s| s.fingerprint)
    }

    /// Asks the CPU to bring the set's fingerprint into cache ahead of a
    /// read of it ([`prefetch`]).
    #[inline]
    pub fn prefetch(&self) {
        if let Some(s) = self.0.as_deref() {
            prefetch(s);
        }
    }

    /// The pairs, to change: copied first into a set of its own when they
    /// are shared or the set adds a pair to another.
    fn pairs_mut(&mut self) -> (&mut Fingerprint, &mut Vec<(Key, Value)>) {
        let shared = Arc::make_mut(self.0.get_or_insert_with(Default::default));
        if let Pairs::Added { .. } = shared.pairs {
            shared.pairs = Pairs::Own(shared.pairs.runs().concat());
        }
        match &mut shared.pairs {
            Pairs::Own(pairs) => (&mut shared.fingerprint, pairs),
            Pairs::Added { .. } => unreachable!("the pairs were copied above"),
        }
    }

    /// Keeps "no pairs" as "no allocation", so that every empty set is
    /// the same value.
    fn normalize(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|s| matches!(&s.pairs, Pairs::Own(p) if p.is_empty()))
        {
            self.0 = None;
        }
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn set(&mut self, key: impl Into<Key>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        // A new key for a shared set of its own: a set that adds it.
        if let Some(shared) = &self.0
            && let Pairs::Own(pairs) = &shared.pairs
            && Arc::strong_count(shared) > 1
            && let Err(at) = search(pairs, &key)
        {
            let mut fingerprint = shared.fingerprint;
            account(&mut fingerprint, &key, &value, 1);
            self.0 = self.0.take().map(|base| {
                Arc::new(Shared {
                    fingerprint,
                    pairs: Pairs::Added {
                        base,
                        at,
                        pair: (key, value),
                    },
                })
            });
            return;
        }
        let (fingerprint, pairs) = self.pairs_mut();
        account(fingerprint, &key, &value, 1);
        match search(pairs, &key) {
            Ok(i) => {
                account(fingerprint, &key, &pairs[i].1, -1);
                pairs[i].1 = value;
            }
            Err(i) => pairs.insert(i, (key, value)),
        }
    }

    /// Builder form of [`Attrs::set`].
    pub fn with(mut self, key: impl Into<Key>, value: impl Into<Value>) -> Self {
        self.set(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let shared = self.0.as_deref()?;
        let pairs = match &shared.pairs {
            Pairs::Own(pairs) => pairs,
            Pairs::Added { pair, .. } if pair.0.as_ref() == key => return Some(&pair.1),
            Pairs::Added { base, .. } => base.pairs.own(),
        };
        search(pairs, key).ok().map(|i| &pairs[i].1)
    }

    /// The value of `key` when it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.get(key)?;
        let (fingerprint, pairs) = self.pairs_mut();
        let i = search(pairs, key).ok()?;
        let (k, v) = pairs.remove(i);
        account(fingerprint, &k, &v, -1);
        self.normalize();
        Some(v)
    }

    /// Keeps only the pairs for which `keep` returns true.
    /// `keep` is called once per pair, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        // Nothing to drop: a shared set stays shared (no copy).
        let Some(first) = self.pairs().position(|(k, v)| !keep(k, v)) else {
            return;
        };
        let (fp, pairs) = self.pairs_mut();
        let mut i = 0;
        pairs.retain(|(k, v)| {
            // Pairs before `first` were kept, `first` dropped: not asked again.
            let kept = match i.cmp(&first) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => false,
                std::cmp::Ordering::Greater => keep(k, v),
            };
            i += 1;
            if !kept {
                account(fp, k, v, -1);
            }
            kept
        });
        self.normalize();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.pairs().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn len(&self) -> usize {
        self.0
            .as_deref()
            .map_or(0, |s| s.pairs.runs().iter().map(|r| r.len()).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether both share one allocation (then they are equal without
    /// comparing a pair).
    fn shares(&self, other: &Attrs) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

// Equality and order are those of the pairs, as if the set were a plain
// `Vec` of them; the fingerprint answers most inequalities at once.
impl PartialEq for Attrs {
    fn eq(&self, other: &Self) -> bool {
        self.shares(other)
            || (self.fingerprint() == other.fingerprint() && self.pairs().eq(other.pairs()))
    }
}
impl Eq for Attrs {}
impl PartialOrd for Attrs {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Attrs {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pairs().cmp(other.pairs())
    }
}
/// Equal sets have equal fingerprints, so writing the fingerprint is a
/// valid hash, and it costs the same for any size of set.
impl std::hash::Hash for Attrs {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b] = self.fingerprint();
        state.write_u64(a);
        state.write_u64(b);
    }
}
impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Attrs")
            .field(&self.pairs().collect::<Vec<_>>())
            .finish()
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
    fn a_change_to_a_shared_set_leaves_the_other_unchanged() {
        let a = Attrs::new().with("a", "x");
        let mut b = a.clone();
        assert!(a.shares(&b));
        b.set("b", 2i64);
        b.retain(|k, _| k != "a");
        assert_eq!(a, Attrs::new().with("a", "x"));
        assert_eq!(b, Attrs::new().with("b", 2i64));
        assert!(!a.shares(&b));
    }

    #[test]
    fn an_emptied_set_equals_and_hashes_as_a_new_one() {
        use std::hash::BuildHasher;
        let mut a = Attrs::new().with("a", "x");
        a.remove("a");
        let state = std::hash::RandomState::new();
        assert_eq!(a, Attrs::new());
        assert!(a.shares(&Attrs::new()));
        assert_eq!(state.hash_one(&a), state.hash_one(Attrs::new()));
        assert_eq!(a.fingerprint(), [0, 0]);
    }

    #[test]
    fn the_fingerprint_follows_the_pairs_however_they_were_made() {
        let a = Attrs::new().with("a", "x").with("b", 1i64).with("c", true);
        let b = Attrs::new()
            .with("c", true)
            .with("a", "old")
            .with("b", 1i64);
        let mut b = b.with("a", "x");
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.set("d", "y");
        assert_ne!(a.fingerprint(), b.fingerprint());
        b.remove("d");
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.retain(|k, _| k != "c");
        let c = Attrs::new().with("b", 1i64).with("a", "x");
        assert_eq!(b.fingerprint(), c.fingerprint());
        assert_eq!(b, c);
        // A value moved to another key is another set.
        let d = Attrs::new().with("a", 1i64).with("b", "x");
        assert_ne!(c.fingerprint(), d.fingerprint());
    }

    #[test]
    fn retain_asks_once_per_pair() {
        let mut a = Attrs::new().with("a", 1i64).with("b", 2i64).with("c", 3i64);
        let mut asked = Vec::new();
        a.retain(|k, _| {
            asked.push(k.to_owned());
            k != "b"
        });
        assert_eq!(asked, ["a", "b", "c"]);
        assert_eq!(a, Attrs::new().with("a", 1i64).with("c", 3i64));
        assert_eq!(
            a.fingerprint(),
            Attrs::new().with("c", 3i64).with("a", 1i64).fingerprint()
        );
    }

    #[test]
    fn a_pair_added_to_a_shared_set_reads_as_a_set_of_its_own() {
        use std::hash::BuildHasher;
        let flow = Attrs::new().with("a", "x").with("c", 3i64);
        let added = flow.clone().with("b", true);
        let own = Attrs::new().with("c", 3i64).with("b", true).with("a", "x");
        assert!(matches!(
            added.0.as_deref().unwrap().pairs,
            Pairs::Added { .. }
        ));
        assert!(matches!(own.0.as_deref().unwrap().pairs, Pairs::Own(_)));
        assert_eq!(added, own);
        assert_eq!(added.cmp(&own), std::cmp::Ordering::Equal);
        assert_eq!(added.fingerprint(), own.fingerprint());
        let state = std::hash::RandomState::new();
        assert_eq!(state.hash_one(&added), state.hash_one(&own));
        assert_eq!(format!("{added:?}"), format!("{own:?}"));
        let keys: Vec<&str> = added.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(added.len(), 3);
        assert_eq!(added.get("b"), Some(&Value::Bool(true)));
        assert_eq!(added.get_str("a"), Some("x"));
        assert_eq!(added.get("d"), None);
        // First and last places, and a pair added to a set that adds one.
        let first = flow.clone().with("0", 0i64);
        assert_eq!(first.iter().next(), Some(("0", &Value::Int(0))));
        let last = flow.clone().with("z", 0i64);
        assert_eq!(last.iter().last(), Some(("z", &Value::Int(0))));
        let both = added.clone().with("d", 4i64);
        assert_eq!(both, own.clone().with("d", 4i64));
        // A key the shared set has is replaced in a copy.
        let replaced = flow.clone().with("a", "y");
        assert_eq!(replaced, Attrs::new().with("a", "y").with("c", 3i64));
        // Changes copy the pairs and leave the shared set as it was.
        let mut changed = added.clone();
        assert_eq!(changed.remove("b"), Some(Value::Bool(true)));
        assert_eq!(changed, flow);
        let mut kept = added.clone();
        kept.retain(|k, _| k != "a");
        assert_eq!(kept, Attrs::new().with("b", true).with("c", 3i64));
        assert_eq!(
            kept.fingerprint(),
            Attrs::new().with("c", 3i64).with("b", true).fingerprint()
        );
        assert_eq!(flow, Attrs::new().with("a", "x").with("c", 3i64));
        assert_eq!(added, own);
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
