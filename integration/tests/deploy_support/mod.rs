//! Shared by the deploy tests: the repository's paths and the tools they
//! run (each failing with what to install when missing).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowscope_receiver::capabilities::CAPABILITIES;

/// The repository's root (the workspace).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs `cmd`, failing with its output unless it succeeds; `hint` says
/// how to install it when it is missing.
pub fn run(cmd: &mut Command, hint: &str) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}; {hint}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The capabilities of the code's list, without `CAP_`, sorted.
pub fn code_caps_short() -> Vec<String> {
    let mut v: Vec<String> = CAPABILITIES.iter().map(|c| c.short().to_string()).collect();
    v.sort();
    v
}

/// The capabilities of the code's list, with `CAP_`, sorted.
pub fn code_caps() -> Vec<String> {
    let mut v: Vec<String> = CAPABILITIES.iter().map(|c| c.name.to_string()).collect();
    v.sort();
    v
}

/// `kubectl kustomize DIR`, with a clear failure where kubectl is missing.
pub fn kustomize(dir: &Path) -> String {
    let out = run(
        Command::new("kubectl").arg("kustomize").arg(dir),
        "kubectl (v1.32, which bundles kustomize) is needed to render deploy/kubernetes; no registry here serves it, install it by hand",
    );
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

/// The rendered objects as JSON values.
pub fn objects(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .unwrap_or_else(|e| panic!("rendered manifests are not YAML: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The object of `kind` named `name`.
pub fn object<'a>(objs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}
