#!/usr/bin/env bash
# NAT resolution benchmark: the share of NATed connections whose flows name
# the real peer, and the agent's CPU, at 1,000 and 10,000 connections per
# second through a DNATed "Service" address.
#
# Two network namespaces joined by a veth pair (198.19.253.1 and .2, inside
# 198.18.0.0/15; nothing leaves them). The client's namespace DNATs the
# Service 198.19.253.100:80 to the echo server at 198.19.253.2:7000 in its
# OUTPUT hook (kube-proxy's shape for a host-network client). For each rate,
# `flowscope-load` opens that many connections per second to the Service
# for SECONDS, with the agent (ebpf receiver, 5 s interval, file exporter)
# in one of three modes:
#   events: NAT resolution from conntrack's NEW/DESTROY events (default);
#   dump:   `nat.events: false`, a full dump every 2 s instead;
#   off:    `nat.enabled: false` (the CPU baseline).
# Resolution rate = client connections closed with flowscope.peer.nat.address
# = the Service, over all client connections closed towards the Service or
# the echo server. Agent CPU = utime+stime of the agent over the window.
# TIME_WAIT is shortened to 10 s in the client namespace so conntrack holds
# ~100,000 entries at 10,000/s instead of 1.2 million.
# Results: target/bench/nat.txt (one line per run). Measures, asserts nothing.
#
# usage: scripts/bench-nat.sh [--seconds N] [--rates "1000 10000"] [--modes "events dump off"] [--no-build]
#                             [--bin DIR]   (the flowscope and flowscope-load of another build)
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
source "$(dirname "$0")/bench-common.sh"
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_EACH=10
RATES="1000 10000"
MODES="events dump off"
BUILD=1
BIN_ARG=
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --bin) BIN_ARG=$(cd "$2" && pwd); BUILD=0; shift 2 ;;
    *) echo "bench-nat.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

BIN=${BIN_ARG:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=$ROOT/target/bench
mkdir -p "$OUT"
if [ "$BUILD" = 1 ]; then
  cargo build --release --bin flowscope
  cargo build --release -p flowscope-integration --bin flowscope-load
fi

CNS=fsnat-c-$$
SNS=fsnat-s-$$
CIP=198.19.253.1
SIP=198.19.253.2
SVC=198.19.253.100
PORT=7000
TMP=$(mktemp -d /tmp/fsnat.XXXXXX)
AGENT_PID=
SERVER_PID=

cleanup() { bench_cleanup "$AGENT_PID" "$SERVER_PID"; }
trap cleanup EXIT INT TERM

bench_pair "$CNS" "$SNS" "$CIP" "$SIP" "fsn$$"
# TIME_WAIT entries of conntrack last 10 s, not 2 minutes (see the top).
ip netns exec "$CNS" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=10
ip netns exec "$CNS" nft "table ip fsnat {
  chain endpoint { meta l4proto tcp dnat to $SIP:$PORT; }
  chain services { ip daddr $SVC tcp dport 80 goto endpoint; }
  chain out { type nat hook output priority -100; policy accept; jump services; }
}"


ip netns exec "$SNS" "$BIN/flowscope-load" server "$SIP:$PORT" 4 > "$TMP/server.out" 2> "$TMP/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$TMP/server.out" 2>/dev/null && break; sleep 0.05; done

# The agent with NAT resolution in MODE: events, dump, or off; ready once
# conntrack is followed (or, when off, running).
start_agent() {
  case "$1" in
    events) agent_start bench-nat.sh 5s "conntrack followed" "nat: {}" ;;
    dump) agent_start bench-nat.sh 5s "conntrack followed" "nat: {events: false}" ;;
    off) agent_start bench-nat.sh 5s running "nat: {enabled: false}" ;;
  esac
}

# Client connections closed: resolved (nat address = Service), unresolved
# (peer = Service), and nat_unresolved counts.
count() {
  python3 - "$TMP/metrics.jsonl" "$SVC" <<'EOF'
import json, sys
path, svc = sys.argv[1], sys.argv[2]
res = unres = lost = 0
for line in open(path):
    try: req = json.loads(line)
    except ValueError: continue
    for rm in req.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for m in sm.get("metrics", []):
                for dp in (m.get("sum") or {}).get("dataPoints", []):
                    a = {kv["key"]: list(kv["value"].values())[0] for kv in dp.get("attributes", [])}
                    v = int(dp.get("asInt", 0))
                    if m["name"] == "flowscope.tcp.connection.closed" and a.get("flowscope.flow.role") == "client":
                        if a.get("flowscope.peer.nat.address") == svc: res += v
                        elif a.get("network.peer.address") == svc: unres += v
                    if m["name"] == "flowscope.events.lost" and "nat_unresolved" in a.values():
                        lost += v
print(res, unres, lost)
EOF
}

for rate in $RATES; do
  for mode in $MODES; do
    start_agent "$mode"
    sleep 1
    t0=$(date +%s.%N); a0=$(proc_ticks "$AGENT_PID")
    load=$(ip netns exec "$CNS" "$BIN/flowscope-load" client "$SVC:80" "$rate" "$SECONDS_EACH" 100)
    t1=$(date +%s.%N); a1=$(proc_ticks "$AGENT_PID")
    sleep 6
    agent_stop
    read -r res unres lost < <(count)
    cpu=$(awk -v d="$((a1 - a0))" -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", 100 * d / hz / (b - a) }')
    done_n=$(echo "$load" | sed 's/.*"completed":\([0-9]*\).*/\1/')
    share=$(awk -v r="$res" -v u="$unres" 'BEGIN { if (r + u) printf "%.4f", r / (r + u); else print "-" }')
    line="rate=$rate mode=$mode completed=$done_n resolved=$res unresolved=$unres nat_unresolved_counted=$lost share=$share agent_cpu_pct=$cpu bin=$BIN"
    echo "$line"
    echo "$line" >> "$OUT/nat.txt"
  done
done
