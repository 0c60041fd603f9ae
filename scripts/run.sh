#!/usr/bin/env bash
# Builds and runs the agent. Without arguments it runs the embedded default
# config: every TCP/UDP flow on this host, as a live table on the terminal
# and as OTLP JSON lines in ./flowscope-metrics.jsonl. No backend needed.
# Any arguments go to `flowscope run` (e.g. --config my.yaml).
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --locked --bin flowscope
exec ./target/release/flowscope run "$@"
