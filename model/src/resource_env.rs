//! `OTEL_RESOURCE_ATTRIBUTES`: the one parser of its value, used for the
//! agent's own Resource (context.rs), the `resourcedetection` processor's
//! `env` detector and the service a monitored process declares in its
//! environment (receiver/src/process.rs).
//!
//! The value is `key=value` pairs separated by commas, surrounding spaces
//! trimmed, values percent-decoded (W3C Baggage octets, as the OpenTelemetry
//! SDK specification says; see [`crate::percent`]).

use crate::percent::decode_lossy as decode;

/// A pair the parser skips, as the specification lets an SDK do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped<'a> {
    /// A pair without `=`.
    NoEquals(&'a str),
    /// A pair with an empty key.
    NoKey(&'a str),
}

/// One pair: its trimmed key and its trimmed value, still encoded.
pub type Pair<'a> = (&'a str, &'a str);

/// The pairs of `s` in order (a key may repeat), with those skipped.
pub fn pairs(s: &str) -> impl Iterator<Item = Result<Pair<'_>, Skipped<'_>>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or(Skipped::NoEquals(pair))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(Skipped::NoKey(pair));
            }
            Ok((k, v.trim()))
        })
}

/// The agent's own attributes: every pair decoded, a later key replacing an
/// earlier one; a skipped pair is logged.
pub fn parse(s: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in pairs(s) {
        let (k, v) = match pair {
            Ok(kv) => kv,
            Err(Skipped::NoEquals(pair)) => {
                tracing::warn!(
                    pair,
                    "OTEL_RESOURCE_ATTRIBUTES: ignoring a pair without `=`"
                );
                continue;
            }
            Err(Skipped::NoKey(pair)) => {
                tracing::warn!(
                    pair,
                    "OTEL_RESOURCE_ATTRIBUTES: ignoring a pair without a key"
                );
                continue;
            }
        };
        out.retain(|(old, _)| old != k);
        out.push((k.to_owned(), decode(v)));
    }
    out
}

/// The first non-empty value of `key` in another process's value, decoded;
/// skipped pairs are not logged (the process is not the agent's to fix).
pub fn value(s: &str, key: &str) -> Option<String> {
    pairs(s)
        .flatten()
        .find(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_the_first_non_empty_one() {
        let s = "bad, service.name= ,service.name=res%20svc,service.name=later";
        assert_eq!(value(s, "service.name").as_deref(), Some("res svc"));
        assert_eq!(value(s, "service.version"), None);
    }
}
