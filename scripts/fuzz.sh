#!/usr/bin/env bash
# Fuzzes every parser of outside input for a bounded time each:
#   dns_packet         (receiver/fuzz) DNS parser, IP/UDP/TCP decoding, TCP
#                      reassembly, the matching engine
#   conntrack_netlink  (fuzz/) conntrack netlink datagrams
#   k8s_json           (fuzz/) Kubernetes list and watch JSON, kubelet pods
#   config_loader      (fuzz/) the YAML configuration loader
#   ui_params          (fuzz/) the UI API's paths and query parameters
# Seeds: <fuzz dir>/corpus/<target> (replayed first); new inputs go to a
# temporary directory, so the committed corpus stays as it is. A crash
# leaves its input in <fuzz dir>/artifacts/<target>/ and fails the script;
# turn it into a regression test beside the parser.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS per target (default 60); TARGETs default to all of them.
# Needs the nightly toolchain (scripts/bootstrap.sh) and cargo-fuzz, which
# is installed here when missing.
set -euo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
log() { printf 'fuzz: %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# target -> fuzz dir, maximum input length
declare -A dir=(
  [dns_packet]=receiver/fuzz [conntrack_netlink]=fuzz [k8s_json]=fuzz
  [config_loader]=fuzz [ui_params]=fuzz
)
declare -A max_len=(
  [dns_packet]=8192 [conntrack_netlink]=8192 [k8s_json]=16384
  [config_loader]=8192 [ui_params]=1024
)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dns_packet conntrack_netlink k8s_json config_loader ui_params)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for t in "${targets[@]}"; do
  d="${dir[$t]:-}"
  [ -n "$d" ] || { log "unknown target $t (known: ${!dir[*]})"; exit 2; }
  mkdir -p "$work/$t" "$root/$d/corpus/$t"
  log "running $t for ${seconds}s"
  (cd "$root/$d" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/fuzz}" \
    cargo +nightly fuzz run --fuzz-dir . "$t" "$work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048)
  log "$t: no crash in ${seconds}s"
done
