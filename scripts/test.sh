#!/usr/bin/env bash
# Runs every test: unit tests, the end-to-end tests against the real kernel
# (eBPF, network namespaces, real DNS/HTTP/Prometheus peers), and a bounded
# fuzzing run of the DNS packet path. Installs what is missing first.
# CI (.ci/run) calls exactly this.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
# The end-to-end tests start the agent and the traffic generator binaries.
# (Default members only: the eBPF crate builds for the bpf target, through
# receiver/build.rs.)
cargo build --locked --bins
cargo test --locked --no-fail-fast
if [ -x scripts/fuzz-dns.sh ]; then
  scripts/fuzz-dns.sh "${FLOWSCOPE_FUZZ_SECONDS:-60}"
fi
