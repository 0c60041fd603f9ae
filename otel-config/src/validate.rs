//! The value checks the area files share, as serde `deserialize_with`
//! functions (and the plain rules behind some of them, for checks after
//! loading). A rule is written once here; its message is part of the
//! config's error output, so each keeps the wording users already see.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::de::duration;

/// A count of at least 1.
pub(crate) fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(d)?;
    check_at_least_one(value).map_err(de::Error::custom)?;
    Ok(value)
}

/// A number of at least 1.
pub(crate) fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = u64::deserialize(d)?;
    if value == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(value)
}

/// A finite number above 0.
pub(crate) fn positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !value.is_finite() || value <= 0.0 {
        return Err(de::Error::custom("must be a number above 0"));
    }
    Ok(value)
}

/// A duration above zero.
pub(crate) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value.is_zero() {
        return Err(de::Error::custom("must be positive"));
    }
    Ok(value)
}

/// The rule of [`positive_usize`], for checks after loading.
pub(crate) fn check_at_least_one(value: usize) -> Result<(), String> {
    if value == 0 {
        return Err("must be at least 1".into());
    }
    Ok(())
}

/// An integer setting `key` within `lo..=hi`, with the error naming both.
pub(crate) fn int_in<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    lo: u64,
    hi: u64,
) -> Result<u64, D::Error> {
    let value = u64::deserialize(d)?;
    if value < lo || value > hi {
        return Err(de::Error::custom(format_args!(
            "{key} {value} must be between {lo} and {hi}"
        )));
    }
    Ok(value)
}

/// A duration of at least 1s (processor settings' wording).
pub(crate) fn at_least_a_second<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = duration(d)?;
    if v < Duration::from_secs(1) {
        return Err(de::Error::custom("must be at least 1s"));
    }
    Ok(v)
}

/// A duration of at least 1s, the value in the message (receiver settings'
/// wording).
pub(crate) fn at_least_1s<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = duration(d)?;
    if value < Duration::from_secs(1) {
        return Err(de::Error::custom(format_args!(
            "{value:?} is below the minimum of 1s"
        )));
    }
    Ok(value)
}

/// A path that is not empty.
pub(crate) fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let value = PathBuf::deserialize(d)?;
    if value.as_os_str().is_empty() {
        return Err(de::Error::custom("path must not be empty"));
    }
    Ok(value)
}
