#!/usr/bin/env bash
# Builds and runs the agent. Without arguments it runs the embedded default
# config: every TCP/UDP flow on this host, as a live table on the terminal
# and as OTLP JSON lines in ./flowscope-metrics.jsonl, and serves the web UI
# at http://127.0.0.1:8686/. No backend needed.
# Any arguments go to `flowscope run` (e.g. --config my.yaml).
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --locked --bin flowscope
if [ $# -eq 0 ]; then
  # The default config's `ui` exporter.
  echo "flowscope: Network Map, Analytics and Health at http://127.0.0.1:8686/" >&2
fi
exec ./target/release/flowscope run "$@"
