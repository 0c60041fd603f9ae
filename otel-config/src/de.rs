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

/// Deserializes a `type[/name] -> config` mapping, asking `seed(&id)` for
/// the seed that reads each value. A missing or null section is an empty map.
pub(crate) fn component_map<'de, D, S, F>(
    deserializer: D,
    area: &'static str,
    seed: F,
) -> Result<IndexMap<ComponentId, S::Value>, D::Error>
where
    D: Deserializer<'de>,
    S: DeserializeSeed<'de>,
    F: Fn(&ComponentId) -> S,
{
    struct MapVisitor<F, S> {
        area: &'static str,
        seed: F,
        marker: PhantomData<fn() -> S>,
    }

    impl<'de, F, S> Visitor<'de> for MapVisitor<F, S>
    where
        S: DeserializeSeed<'de>,
        F: Fn(&ComponentId) -> S,
    {
        type Value = IndexMap<ComponentId, S::Value>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a mapping of {} ids (`type` or `type/name`) to their settings",
                self.area
            )
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = IndexMap::new();
            while let Some(id) = map.next_key::<ComponentId>()? {
                if out.contains_key(&id) {
                    return Err(de::Error::custom(format_args!(
                        "{} `{id}` is defined twice",
                        self.area
                    )));
                }
                let value = map.next_value_seed((self.seed)(&id))?;
                out.insert(id, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(MapVisitor {
        area,
        seed,
        marker: PhantomData,
    })
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

    let message = format!(
        "unknown {area} type `{kind}`; known {area} types: {}",
        known.join(", ")
    );
    deserializer.deserialize_any(Reject { message: &message })?;
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
