#!/usr/bin/env bash
# Runs every test: unit tests, the end-to-end tests against the real kernel
# (eBPF, network namespaces, real DNS/HTTP/Prometheus peers), and a bounded
# fuzzing run of every parser of outside input. Installs what is missing first.
# CI (.ci/run) calls exactly this.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
# A test run builds everything once: incremental caches would only cost
# disk (they were a third of the target directory).
export CARGO_INCREMENTAL=0
# The end-to-end tests start the agent and the traffic generator binaries.
# (Default members only: the eBPF crate builds for the bpf target, through
# receiver/build.rs.)
cargo build --locked --bins
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# Fuzzing: the DNS packet path, the longest-standing target, for a minute;
# the other parsers of outside input for 20 s each (scripts/fuzz.sh runs
# them longer).
scripts/fuzz.sh "${FLOWSCOPE_FUZZ_SECONDS:-60}" dns_packet
scripts/fuzz.sh "${FLOWSCOPE_FUZZ_SECONDS_OTHERS:-20}" conntrack_netlink k8s_json config_loader ui_params
# Closing lines: each failed test with its test binary (CI keeps only the
# tail of the output), then one line over every test binary's result.
awk '/^ *Running / { bin = $2 }
     /^test .* \.\.\. FAILED$/ { printf "FAILED: %s %s\n", bin, $2 }
     /^---- .* stdout ----$/ { cur = $2 }
     /panicked at / && cur != "" { line = $0; getline why; printf "  %s: %s %s\n", cur, line, why; cur = "" }
     /^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
