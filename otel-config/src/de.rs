//! Serde helpers shared by the area files: the component-map visitor that
//! dispatches each entry to its area's seed by component type, the
//! unknown-type error, and value parsers (durations, bucket bounds).
//!
//! Everything here runs inside the single serde pass over the YAML, so an
//! error raised here gets the line and column of the value being read and
//! the key path that leads to it.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::ComponentId;

/// One section of components (`receivers`, ...): its name in messages, its
/// config enum, and the seed that reads one component's settings given its
/// id (the area files define the seeds; lib.rs implements this trait).
pub(crate) trait Area {
    /// Singular, for messages: `receiver`.
    const NAME: &'static str;
    /// The area's config enum.
    type Config;
    /// Reads one component's settings, dispatching on `id.kind`.
    type Seed<'a>: for<'de> DeserializeSeed<'de, Value = Self::Config>;
    /// The seed for the component `id`.
    fn seed(id: &ComponentId) -> Self::Seed<'_>;
}

/// Deserializes a `type[/name] -> config` mapping, reading each value with
/// the area's seed for its id. A missing or null section is an empty map.
pub(crate) fn component_map<'de, D, A>(
    deserializer: D,
) -> Result<IndexMap<ComponentId, A::Config>, D::Error>
where
    D: Deserializer<'de>,
    A: Area,
{
    struct MapVisitor<A>(PhantomData<fn() -> A>);

    impl<'de, A: Area> Visitor<'de> for MapVisitor<A> {
        type Value = IndexMap<ComponentId, A::Config>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a mapping of {} ids (`type` or `type/name`) to their settings",
                A::NAME
            )
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut out = IndexMap::new();
            while let Some(id) = map.next_key::<ComponentId>()? {
                if out.contains_key(&id) {
                    return Err(de::Error::custom(format_args!(
                        "{} `{id}` is defined twice",
                        A::NAME
                    )));
                }
                let value = map.next_value_seed(A::seed(&id))?;
                out.insert(id, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(MapVisitor::<A>(PhantomData))
}

/// Reads one component's settings. An empty value (`console:`) means "all
/// defaults", as in the Collector; anything else must be a mapping that
/// `T` accepts (`T` has `deny_unknown_fields`).
pub(crate) fn component_body<'de, T, D>(deserializer: D) -> Result<T, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    match Option::<T>::deserialize(deserializer)? {
        Some(value) => Ok(value),
        None => {
            let empty = de::value::MapDeserializer::<_, de::value::Error>::new(
                std::iter::empty::<(&str, &str)>(),
            );
            T::deserialize(empty).map_err(de::Error::custom)
        }
    }
}

/// Consumes a component's value and fails with "unknown <area> type", listing
/// the known types. The error is raised when the value starts, so it points
/// at the component.
pub(crate) fn unknown_kind<'de, D, T>(
    deserializer: D,
    area: &'static str,
    kind: &str,
    known: &[&str],
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let message = format!(
        "unknown {area} type `{kind}`; known {area} types: {}",
        known.join(", ")
    );
    refuse_kind(deserializer, &message)
}

/// Consumes a component's value and fails with `message`, raised when the
/// value starts so that it points at the component (a Collector component
/// type flowscope knows and refuses, saying what to write instead).
pub(crate) fn refuse_kind<'de, D, T>(deserializer: D, message: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Reject<'a> {
        message: &'a str,
    }

    macro_rules! reject {
        ($($name:ident($($arg:ty)?)),* $(,)?) => {$(
            fn $name<E: de::Error>(self $(, _: $arg)?) -> Result<(), E> {
                Err(E::custom(self.message))
            }
        )*};
    }

    impl<'de> Visitor<'de> for Reject<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.message)
        }

        reject!(
            visit_bool(bool),
            visit_i64(i64),
            visit_u64(u64),
            visit_f64(f64),
            visit_str(&str),
            visit_unit(),
            visit_none(),
        );

        fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
            Err(de::Error::custom(self.message))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(de::Error::custom(self.message))
        }

        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(de::Error::custom(self.message))
        }
    }

    deserializer.deserialize_any(Reject { message })?;
    // A visitor that always fails never gets here; keep the error regardless.
    Err(de::Error::custom(message))
}

/// Parses a Go-style duration string (`10s`, `500ms`, `1m30s`).
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        de::Error::custom(format_args!(
            "invalid duration `{text}`: {e} (write e.g. `10s`, `500ms`, `1m30s`)"
        ))
    })
}

/// Histogram bucket bounds in seconds: at least one, all finite and
/// non-negative, strictly increasing.
pub(crate) fn bucket_bounds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<f64>, D::Error> {
    let bounds = Vec::<f64>::deserialize(deserializer)?;
    check_bounds(&bounds).map_err(de::Error::custom)?;
    Ok(bounds)
}

/// The rule behind [`bucket_bounds`], kept apart so it can be tested alone.
pub(crate) fn check_bounds(bounds: &[f64]) -> Result<(), String> {
    if bounds.is_empty() {
        return Err("at least one bucket bound is required".to_owned());
    }
    for (i, b) in bounds.iter().enumerate() {
        if !b.is_finite() || *b < 0.0 {
            return Err(format!(
                "bucket bound #{i} ({b}) must be a finite, non-negative number of seconds"
            ));
        }
    }
    for (i, pair) in bounds.windows(2).enumerate() {
        if pair[1] <= pair[0] {
            return Err(format!(
                "bucket bounds must be strictly increasing: bound #{} ({}) is not greater than bound #{i} ({})",
                i + 1,
                pair[1],
                pair[0]
            ));
        }
    }
    Ok(())
}
