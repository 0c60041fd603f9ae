#!/usr/bin/env bash
# cases-agent.sh [FLOWSCOPE]: starts the agent (default: this tree's
# target/debug/flowscope), runs the seven byte cases of cases.py inside
# netns p2cases on its lo, stops the agent (SIGTERM flushes the last
# interval) and checks each case's bytes in the agent's output.
# FLOWSCOPE_EBPF_HOOKS=tracepoint checks the classic set.
set -eu
BIN=${1:-$(dirname "$0")/../../target/debug/flowscope}
T=$(mktemp -d /tmp/p2cases.XXXXXX)
printf 'receivers:\n  ebpf:\n    collection_interval: 1s\nexporters:\n  file:\n    path: %s\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n' $T/m.jsonl > $T/agent.yaml
ip netns add p2cases; trap 'ip netns del p2cases' EXIT
ip -n p2cases link set lo up
RUST_LOG=info "$BIN" run --config $T/agent.yaml > /dev/null 2> $T/agent.log & pid=$!
for _ in $(seq 300); do grep -q running $T/agent.log && break; sleep 0.1; done
echo "== cases $(date -u +%T) ${FLOWSCOPE_EBPF_HOOKS:-btf}"
ip netns exec p2cases python3 "$(dirname "$0")"/cases.py run $T/expect.json
kill -TERM $pid; wait $pid
python3 "$(dirname "$0")"/cases.py check $T/expect.json $T/m.jsonl
