//! Errors as one line of text, for logs and internal events.

/// `e` and its sources, joined by ": " (`a: b: c`, as anyhow's `{:#}`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
