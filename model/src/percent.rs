//! Percent-encoding as the agent uses it, on the `percent-encoding` crate
//! (the servo url project's, already in the tree through the HTTP stack):
//! query values sent (Kubernetes continue tokens, the tests' query strings)
//! and W3C Baggage values read (`OTEL_RESOURCE_ATTRIBUTES` leniently,
//! `OTEL_EXPORTER_OTLP_HEADERS` strictly).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`)
/// is escaped.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` escaped for a URL query value (`a=b+c` -> `a%3Db%2Bc`).
pub fn query_value(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

/// `%XX` escapes decoded; `None` for a malformed escape (`%` not followed
/// by two hex digits) or a value that is not UTF-8 once decoded.
pub fn decode_strict(s: &str) -> Option<String> {
    let escapes_well_formed = s.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_well_formed {
        return None;
    }
    let decoded = percent_decode_str(s).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

/// `%XX` escapes decoded as UTF-8 bytes; a malformed escape stays as
/// written and invalid UTF-8 is replaced.
pub fn decode_lossy(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_refuses_what_lossy_keeps() {
        assert_eq!(decode_strict("k%20ey").as_deref(), Some("k ey"));
        for bad in ["%2", "%zz", "a%", "%FF"] {
            assert_eq!(decode_strict(bad), None, "{bad}");
        }
        assert_eq!(decode_lossy("%zz%2"), "%zz%2");
        assert_eq!(query_value("a=b+c/~"), "a%3Db%2Bc%2F~");
    }
}
