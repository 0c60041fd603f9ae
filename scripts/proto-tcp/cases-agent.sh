#!/usr/bin/env bash
# cases-agent.sh LABEL...: for each build, starts its agent, runs the seven cases (inside netns p2cases, on its lo), stops it.
set -u
BINS=${BINS:-/work/bins}   # LABEL directories, each with flowscope and a COMMIT file
T=/tmp/p2cases; mkdir -p $T
printf 'receivers:\n  ebpf:\n    collection_interval: 10s\nexporters:\n  file:\n    path: %s\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n' $T/m.jsonl > $T/agent.yaml
ip netns add p2cases 2>/dev/null; ip -n p2cases link set lo up
for l in "$@"; do
  RUST_LOG=info $BINS/$l/flowscope run --config $T/agent.yaml > /dev/null 2> $T/agent-$l.log & pid=$!
  for _ in $(seq 300); do grep -q running $T/agent-$l.log && break; sleep 0.1; done
  echo "== cases $l ($(cat $BINS/$l/COMMIT | paste -sd' ')) $(date -u +%T)"
  ip netns exec p2cases python3 "$(dirname "$0")"/cases.py
  kill -TERM $pid; wait $pid
done
ip netns del p2cases
