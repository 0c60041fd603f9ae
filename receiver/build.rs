//! Builds the eBPF programs in `receiver-ebpf/` for the bpf target with the
//! nightly toolchain (via aya-build) and leaves the objects in OUT_DIR, where
//! `include_bytes_aligned!` picks them up. Needs what scripts/bootstrap.sh
//! installs: nightly with rust-src, and bpf-linker.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR unset")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("receiver/ has no parent directory"))?
        .join("receiver-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "flowscope-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
