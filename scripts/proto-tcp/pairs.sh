#!/usr/bin/env bash
# Runs bench-load for each "label:dir" argument in order, under the caller's lock;
# HOOKS env (btf|tracepoint), OUTROOT env.
set -u
cd "$(dirname "$0")/../.."
for spec in "$@"; do
  label=${spec%%:*}; dir=${spec#*:}
  out=$OUTROOT/$label-$(date -u +%H%M%S)
  mkdir -p "$out"
  echo "== $label start $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  scripts/bench-load.sh --floor --rates 10000 --seconds 20 --agent-only --hooks "${HOOKS:-btf}" --bin "$dir" --out "$out" > "$out/log" 2>&1
  echo "== $label end $(date -u +%T) rc=$?"
done
