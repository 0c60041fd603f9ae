//! Feeds arbitrary text to the configuration loader (YAML, `${env:...}`
//! substitution, every component's settings and their checks). Any panic
//! is a bug; bad input must be an error naming where it is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "FUZZ").then(|| "4317".to_string());
    if let Err(e) = flowscope_otel_config::load_str_with_env(text, "fuzz.yaml", &env) {
        // The message is built (Display) without panicking.
        let _ = e.to_string();
    }
});
