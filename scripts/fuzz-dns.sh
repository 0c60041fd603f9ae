#!/usr/bin/env bash
# Fuzzes the DNS packet path (parser, IP/UDP/TCP decoding, TCP reassembly,
# matching engine) for a bounded time. Seeds: receiver/fuzz/corpus/dns_packet
# (the hostile corpus the normal tests replay); new inputs go to a temporary
# directory, so the committed corpus stays as it is. A crash leaves its input
# in receiver/fuzz/artifacts/dns_packet/ and fails the script.
#
# Usage: scripts/fuzz-dns.sh [SECONDS]   (default 60)
# Needs the nightly toolchain (scripts/bootstrap.sh) and cargo-fuzz, which
# is installed here when missing.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
log() { printf 'fuzz-dns: %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$root/receiver/fuzz"
log "running dns_packet for ${seconds}s"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/fuzz}" \
  cargo +nightly fuzz run --fuzz-dir . dns_packet "$work" corpus/dns_packet -- \
  -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048
log "no crash in ${seconds}s"
