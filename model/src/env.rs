//! Environment lookups as values. Code that reads variables (`OTEL_*`,
//! `KUBERNETES_SERVICE_HOST`, ...) takes `&dyn Fn(&str) -> Option<String>`
//! instead of calling `std::env::var`, so tests pass a fixed environment
//! ([`fixed`]) and never touch the process's own.

/// The process's environment.
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// An environment holding exactly `vars`.
pub fn fixed(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_holds_exactly_its_pairs() {
        let env = super::fixed(&[("A", "1"), ("B", "")]);
        assert_eq!(env("A").as_deref(), Some("1"));
        assert_eq!(env("B").as_deref(), Some(""));
        assert_eq!(env("PATH"), None);
    }
}
