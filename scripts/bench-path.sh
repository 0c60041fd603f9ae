#!/usr/bin/env bash
# Cost of dynamic Network Path tests to N destinations (default 1000),
# measured in a namespace topology: client -> router1 -> router2 -> server,
# where the server answers for every address of 198.19.200.0/22.
#
# A client in the client namespace sends one UDP datagram to each of N
# addresses; the agent (ebpf + path receivers, dynamic tests on) admits
# them all and tests each once per INTERVAL with ICMP. Measured over
# SECONDS after the first test started: the agent's CPU (utime+stime from
# /proc), its peak and final RSS, and the probes that left the client
# namespace (an nft counter on its output), as probes per second.
#
# Usage: scripts/bench-path.sh [N] [INTERVAL] [SECONDS]   (as root, after
# cargo build --release --bins; PROFILE=debug measures the debug build)
set -euo pipefail
N=${1:-1000}
INTERVAL=${2:-2m}
SECONDS_RUN=${3:-120}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${PROFILE:-release}
BIN=$ROOT/target/$PROFILE/flowscope
TRAFFIC=$ROOT/target/$PROFILE/flowscope-traffic
[ -x "$BIN" ] && [ -x "$TRAFFIC" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
T=bp$$
C=${T}c; A=${T}a; B=${T}b; S=${T}s
WORK=$(mktemp -d)
AGENT=
cleanup() {
    [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
    for ns in $C $A $B $S; do ip netns del "$ns" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && cp "$WORK/agent.log" "$WORK/out.jsonl" /tmp/; rm -rf "$WORK"
}
trap cleanup EXIT

for ns in $C $A $B $S; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv4.icmp_msgs_per_sec=100000
done
for ns in $A $B; do ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1; done
link() { # link L LEFT(.1) RIGHT(.2)
    ip link add "${T}l$1" type veth peer name "${T}r$1"
    ip link set "${T}l$1" netns "$2"; ip link set "${T}r$1" netns "$3"
    ip -n "$2" addr add "198.19.$1.1/24" dev "${T}l$1"; ip -n "$2" link set "${T}l$1" up
    ip -n "$3" addr add "198.19.$1.2/24" dev "${T}r$1"; ip -n "$3" link set "${T}r$1" up
}
link 1 "$A" "$C"; link 2 "$A" "$B"; link 3 "$B" "$S"
ip -n "$C" route add default via 198.19.1.1
ip -n "$A" route add 198.19.3.0/24 via 198.19.2.2
ip -n "$A" route add 198.19.200.0/22 via 198.19.2.2
ip -n "$B" route add 198.19.1.0/24 via 198.19.2.1
ip -n "$B" route add 198.19.200.0/22 via 198.19.3.2
ip -n "$S" route add default via 198.19.3.1
# The server answers for the whole /22 (AnyIP).
ip -n "$S" route add local 198.19.200.0/22 dev lo
ip netns exec "$C" nft "table inet bench { chain out { type filter hook output priority 0; ip daddr 198.19.200.0/22 counter; }; }"

cat > "$WORK/cfg.yaml" <<EOF
receivers:
  ebpf:
    collection_interval: 10s
  path:
    dynamic:
      enabled: true
      interval: $INTERVAL
      max_new_per_minute: $N
      max_destinations: $N
      include_cidrs: [198.19.200.0/22]
exporters:
  file:
    path: $WORK/out.jsonl
service:
  pipelines:
    metrics:
      receivers: [ebpf, path]
      exporters: [file]
EOF
RUST_LOG=info "$BIN" run --config "$WORK/cfg.yaml" 2>"$WORK/agent.log" &
AGENT=$!
# Wait until the eBPF programs are attached (the agent says "running").
for _ in $(seq 1 120); do
    grep -q running "$WORK/agent.log" && break
    sleep 0.5
done
ip netns exec "$C" "$TRAFFIC" udp-spray 198.19.200.1 "$N" 9999
# Wait for the first test to run (admission happens at the next interval).
for _ in $(seq 1 60); do
    grep -q flowscope.path.reachable "$WORK/out.jsonl" 2>/dev/null && break
    sleep 1
done
ticks() { awk '{print $14 + $15}' "/proc/$AGENT/stat"; }
probes() { ip netns exec "$C" nft list table inet bench | awk '/counter/ {print $(NF-2)}'; }
HZ=$(getconf CLK_TCK)
t0=$(ticks); p0=$(probes); s0=$(date +%s.%N)
sleep "$SECONDS_RUN"
t1=$(ticks); p1=$(probes); s1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$AGENT/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$AGENT/status")
read -r runs tested < <(python3 - "$WORK/out.jsonl" <<'EOF'
import sys, json
runs, dests = 0, set()
for line in open(sys.argv[1]):
    try:
        req = json.loads(line)
    except ValueError:
        continue
    for rm in req.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for m in sm.get("metrics", []):
                if m.get("name") != "flowscope.path.reachable":
                    continue
                for dp in m.get("gauge", {}).get("dataPoints", []):
                    runs += 1
                    for kv in dp.get("attributes", []):
                        if kv["key"] == "server.address":
                            dests.add(kv["value"].get("stringValue"))
print(runs, len(dests))
EOF
)
python3 - "$t0" "$t1" "$p0" "$p1" "$s0" "$s1" "$HZ" "$rss" "$hwm" "$runs" "$tested" "$N" "$INTERVAL" <<'EOF'
import sys, json
t0, t1, p0, p1, s0, s1, hz, rss, hwm, runs, tested, n, interval = sys.argv[1:]
wall = float(s1) - float(s0)
print(json.dumps({
    "destinations": int(n),
    "interval": interval,
    "seconds": round(wall, 1),
    "cpu_percent_of_one_core": round(100 * (int(t1) - int(t0)) / int(hz) / wall, 2),
    "probes_per_second": round((int(p1) - int(p0)) / wall, 1),
    "rss_kib": int(rss),
    "peak_rss_kib": int(hwm),
    "runs_reported_total": int(runs),
    "distinct_destinations_tested": int(tested),
}))
EOF
