#!/usr/bin/env bash
# Kernel cost of the drop program (tp_btf/kfree_skb, issue 21), per run,
# from the kernel's own bpf_stats: on a load that drops nothing (a TCP bulk
# transfer and a burst of short TCP connections between two namespaces)
# and on a drop load (UDP datagrams a firewall rule drops).
#
#   scripts/bench-drops.sh [--datagrams N] [--bytes N] [--conns N]
#
# Needs root, ip, nft, bpftool and the debug build (cargo build --bins).
# Prints one line per load: runs, run_time_ns, ns per run. Restores
# kernel.bpf_stats_enabled. Addresses: 198.18.251.0/24 only.
set -euo pipefail
DATAGRAMS=200000 BYTES=500000000 CONNS=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --datagrams) DATAGRAMS=$2; shift 2;;
    --bytes) BYTES=$2; shift 2;;
    --conns) CONNS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
T=$BIN/flowscope-traffic
A=fsdropa$$ B=fsdropb$$
WORK=$(mktemp -d)
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  [ -n "${AGENT:-}" ] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  ip netns del $A 2>/dev/null || true
  ip netns del $B 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add va$$ type veth peer name vb$$
ip link set va$$ netns $A; ip link set vb$$ netns $B
ip -n $A addr add 198.18.251.1/24 dev va$$; ip -n $B addr add 198.18.251.2/24 dev vb$$
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set va$$ up; ip -n $B link set vb$$ up

cat > "$WORK/cfg.yaml" <<YAML
receivers:
  ebpf:
    collection_interval: 1s
exporters:
  file:
    path: $WORK/out.jsonl
service:
  pipelines:
    metrics:
      receivers: [ebpf]
      exporters: [file]
YAML
RUST_LOG=info "$BIN/flowscope" run --config "$WORK/cfg.yaml" 2>"$WORK/agent.log" &
AGENT=$!
for _ in $(seq 1 600); do grep -q running "$WORK/agent.log" && break; sleep 0.1; done
grep -q "drop program attached" "$WORK/agent.log" || { cat "$WORK/agent.log"; exit 1; }
sysctl -qw kernel.bpf_stats_enabled=1
ID=$(bpftool prog show -j | jq -r '[.[] | select(.name == "kfree_skb" and .type == "tracing")] | last | .id')
stats() { bpftool prog show id "$ID" -j | jq -r '"\(.run_cnt // 0) \(.run_time_ns // 0)"'; }
report() { # label before after
  read -r c0 t0 <<<"$2"; read -r c1 t1 <<<"$3"
  local runs=$((c1 - c0)) ns=$((t1 - t0))
  if [ "$runs" -gt 0 ]; then per=$((ns / runs)); else per=-; fi
  echo "$1: runs=$runs run_time_ns=$ns ns_per_run=$per"
}

# No drops: a bulk transfer and short connections, all delivered.
s0=$(stats)
ip netns exec $A "$T" tcp-server 198.18.251.1:7201 "$BYTES" 1000 > /dev/null &
S=$!
sleep 0.3
ip netns exec $B "$T" tcp-client 198.18.251.1:7201 "$BYTES" 1000
wait $S
ip netns exec $A "$T" tcp-serve-each 198.18.251.1:7202 "$CONNS" 100 100 > /dev/null &
S=$!
sleep 0.3
ip netns exec $B "$T" tcp-client-each 198.18.251.1:7202 "$CONNS" 100 > /dev/null
wait $S
s1=$(stats)
report "no drops ($BYTES bytes + $CONNS connections over TCP)" "$s0" "$s1"
sleep 2.5
# What the host dropped meanwhile (other processes' traffic included).
reasons() {
  python3 - "$WORK/out.jsonl" <<'PY'
import json, sys, collections
c = collections.Counter()
for line in open(sys.argv[1]):
    try: req = json.loads(line)
    except ValueError: continue
    for rm in req.get("resourceMetrics", []):
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                if m["name"] not in ("flowscope.flow.drops", "flowscope.host.drops", "flowscope.events.lost"): continue
                for dp in m["sum"]["dataPoints"]:
                    a = {kv["key"]: kv["value"].get("stringValue") for kv in dp["attributes"]}
                    if m["name"] == "flowscope.events.lost":
                        if a.get("flowscope.source") != "ebpf.drops": continue
                        c[("lost", a.get("flowscope.reason"))] += int(dp["asInt"])
                        continue
                    c[(m["name"].split(".")[1], a.get("flowscope.drop.reason"))] += int(dp["asInt"])
print("  counted so far:", dict(c.most_common(8)))
PY
}
reasons

# Drops: every datagram to 7203 is dropped by a firewall rule.
ip netns exec $A nft 'table inet fsb { chain input { type filter hook input priority 0; udp dport 7203 counter drop; }; }'
s0=$(stats)
ip netns exec $B "$T" udp-client 198.18.251.1:7203 "$DATAGRAMS" 64 0
s1=$(stats)
report "drops ($DATAGRAMS UDP datagrams, NETFILTER_DROP)" "$s0" "$s1"
ip netns exec $A nft list table inet fsb | grep -o 'packets [0-9]*'
sleep 2.5
reasons
