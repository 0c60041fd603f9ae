#!/usr/bin/env bash
# Kernel cost of the DNS receiver per lookup (issue 22): runs
# receiver/examples/dns_load (a client namespace making paced lookups to a
# responder namespace while the DNS receiver captures both) and reads the
# run_time_ns / run_cnt of the receiver's own eBPF programs (found through
# the example's file descriptors, /proc/PID/fdinfo prog_id, then
# `bpftool prog show id N`) with kernel.bpf_stats_enabled=1, which it
# turns on for the runs and restores on exit.
#
#   scripts/bench-dns-owner.sh [--before-commit C] [--rate 2000] [--seconds 10] [--rounds 2] [--no-build]
#
# --no-build runs the binaries the last run left in target/bench-base.
#
# With --before-commit, commit C's dns_load is built too (from `git
# archive` into target/bench-base) and the two builds run back to back:
# before, after, before, after... (both binaries are kept in
# target/bench-base).
# The "after" build also runs `--sockets fresh` (a new socket per lookup)
# and `--port 5300` (sends the owner program must look at and leave).
# Needs root, ip, bpftool, jq. Results: target/bench/dns-owner.txt and .json.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
before=""
rate=2000
seconds=10
rounds=2
nobuild=""
while [ $# -gt 0 ]; do
  case "$1" in
    --before-commit) before=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-build) nobuild=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for tool in ip bpftool jq; do
  command -v "$tool" >/dev/null || { echo "needs $tool (scripts/bootstrap.sh)" >&2; exit 1; }
done

out=$root/target/bench
mkdir -p "$out"
# The before build has a target dir of its own: cargo keys the
# workspace's crates by their path relative to the workspace and checks
# freshness against the sources it last built, so a shared target dir
# would take one build's artifacts for the other's.
mkdir -p "$root/target/bench-base"
if [ -z "$nobuild" ]; then
  cargo build --release -p flowscope-receiver --example dns_load
  cp "$root/target/release/examples/dns_load" "$root/target/bench-base/dns_load-after"
fi
after_bin=$root/target/bench-base/dns_load-after
after_rev=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo "+dirty")
before_bin=""
if [ -n "$before" ]; then
  base=$root/target/bench-base
  if [ -z "$nobuild" ]; then
    rm -rf "$base/src"
    mkdir -p "$base/src"
    git archive "$before" | tar -x -C "$base/src"
    (cd "$base/src" && CARGO_TARGET_DIR=$base/target cargo build --release -p flowscope-receiver --example dns_load)
    cp "$base/target/release/examples/dns_load" "$base/dns_load-before"
  fi
  before_bin=$base/dns_load-before
  before_rev=$(git rev-parse --short "$before")
fi

old_stats=$(sysctl -n kernel.bpf_stats_enabled)
trap 'sysctl -qw kernel.bpf_stats_enabled=$old_stats' EXIT
sysctl -qw kernel.bpf_stats_enabled=1

# Prints "name run_cnt run_time_ns" for every program process $1 holds.
prog_stats() {
  local pid=$1 ids
  ids=$(grep -h '^prog_id:' /proc/"$pid"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u)
  for id in $ids; do
    bpftool prog show id "$id" -j 2>/dev/null |
      jq -r '"\(.name) \(.run_cnt // 0) \(.run_time_ns // 0)"'
  done
}

results=$out/dns-owner.jsonl
: >"$results"
# run LABEL REV BIN ARGS...: one run; the last statistics read before the
# example exits are its totals (it idles for half a second after its load).
run() {
  local label=$1 rev=$2 bin=$3
  shift 3
  local json=$out/dns-owner-run.json stats=$out/dns-owner-stats.txt
  : >"$stats"
  "$bin" --rate "$rate" --seconds "$seconds" --out "$json" "$@" >/dev/null &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local snap
    snap=$(prog_stats "$pid" | grep -v '^null ' || true)
    # A snapshot taken while the example exits may miss programs.
    if [ -n "$snap" ] && [ "$(printf '%s\n' "$snap" | wc -l)" -ge "$(wc -l <"$stats")" ]; then
      printf '%s\n' "$snap" >"$stats"
    fi
    sleep 0.2
  done
  wait "$pid"
  jq -c --arg lab "$label" --arg rev "$rev" --arg args "$*" \
    --rawfile stats "$stats" '
    . as $r
    | ($stats | split("\n") | map(select(length > 0) | split(" ")
        | {name: .[0], runs: (.[1] | tonumber), ns: (.[2] | tonumber)})) as $p
    | {"label": $lab, rev: $rev, args: $args,
       lookups: $r.lookups_sent, matched: $r.lookups_matched_by_agent,
       capture_cpu_percent: $r.capture_thread_cpu_percent_of_one_core,
       capture_cpu_us_per_lookup: (1e6 * $r.capture_thread_cpu_seconds / ($r.lookups_sent | if . == 0 then 1 else . end)),
       programs: ($p | map({name, runs, ns,
         ns_per_run: (if .runs > 0 then (.ns / .runs | floor) else 0 end),
         runs_per_lookup: (.runs / $r.lookups_sent * 100 | round / 100)})),
       kernel_ns_per_lookup: (($p | map(.ns) | add // 0) / $r.lookups_sent | floor)}' \
    "$json" >>"$results"
  tail -n1 "$results" | jq -r '"\(.label) \(.rev) \(.args): \(.lookups) lookups, kernel \(.kernel_ns_per_lookup) ns/lookup, capture thread \(.capture_cpu_us_per_lookup | floor) us/lookup; " + (.programs | map("\(.name) \(.runs_per_lookup)x\(.ns_per_run)ns") | join(", "))'
}

for _ in $(seq "$rounds"); do
  if [ -n "$before_bin" ]; then
    run before "$before_rev" "$before_bin"
  fi
  run after "$after_rev" "$after_bin"
done
run after "$after_rev" "$after_bin" --sockets fresh
run after "$after_rev" "$after_bin" --port 5300

jq -s . "$results" >"$out/dns-owner.json"
jq -r '.[] | "\(.label)\t\(.rev)\t\(.args)\t\(.lookups)\t\(.kernel_ns_per_lookup)\t\(.capture_cpu_us_per_lookup | . * 10 | floor / 10)\t" + (.programs | map("\(.name)=\(.runs_per_lookup)x\(.ns_per_run)") | join(" "))' \
  "$out/dns-owner.json" | column -t -s $'\t' -N label,rev,args,lookups,kernel_ns/lookup,capture_us/lookup,programs \
  | tee "$out/dns-owner.txt"
