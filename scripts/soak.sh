#!/usr/bin/env bash
# Soak: runs the agent for a long time under steady, varied load and shows
# whether anything it holds keeps growing (memory, file descriptors,
# threads, the kernel maps' memory).
#
# Two network namespaces joined by a veth pair (198.19.253.1 and .2, inside
# 198.18.0.0/15; nothing leaves them). The agent runs the default
# pipeline's components with NAT resolution, DNS capture, the UI (its
# store's retention shortened to --retention, and its full resolution to
# 2 minutes, so that it fills within the soak and must then stay flat), the Prometheus exporter and a rotating
# file exporter. The load, for --minutes:
#   - `flowscope-load` opens --rate short TCP connections per second
#     (connect, 100 bytes each way, close) to an echo server;
#   - every 20 s, one UDP datagram to each of --peers new addresses
#     (198.18.0.0/16 routed into the server namespace, which drops them;
#     the next block each time, cycling through the /16), so the
#     connection table keeps meeting new peers it must later forget;
#   - every second, one of the UI's Map, Analytics and Health APIs or the
#     Prometheus exporter's /metrics is read (each every 4 s).
# Every --every seconds the agent's VmRSS, open descriptors, threads, CPU
# ticks and the memlock of its eBPF maps are sampled into
# target/soak/samples.csv. The summary (target/soak/summary.txt) compares
# the median RSS of the soak's second quarter (once the UI store is full)
# with its last quarter, and fits a line through the second half: a
# growth of more than --max-growth percent between the two quarters, more
# than 4 descriptors (HTTP clients come and go), or any thread or map
# growth, is reported as GROWS and the script exits 1.
#
# usage: scripts/soak.sh [--minutes N] [--rate N] [--peers N] [--every S]
#                        [--retention DUR] [--max-growth PCT] [--no-build]
#                        [--bin DIR] [--out DIR]
# Defaults: 60 minutes, 5,000 conn/s, 1,000 new peers every 20 s (180,000
# in an hour, every address of the /16 seen several times), a sample every
# 15 s, retention 5m, 5 % growth allowed. docs/reliability.md holds the
# figures of a run.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
source "$(dirname "$0")/bench-common.sh"
cd "$(dirname "$0")/.."
ROOT=$PWD

MINUTES=60
RATE=5000
PEERS=1000
EVERY=15
RETENTION=5m
MAX_GROWTH=5
BUILD=1
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$ROOT/target/soak
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --every) EVERY=$2; shift 2 ;;
    --retention) RETENTION=$2; shift 2 ;;
    --max-growth) MAX_GROWTH=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --bin) BIN=$(cd "$2" && pwd); BUILD=0; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$BUILD" = 1 ]; then
  scripts/bootstrap.sh
  cargo build --release --bin flowscope
  cargo build --release -p flowscope-integration --bin flowscope-load --bin flowscope-traffic
fi
for b in flowscope flowscope-load flowscope-traffic; do
  [ -x "$BIN/$b" ] || { echo "soak.sh: $BIN/$b is missing (run without --no-build)" >&2; exit 1; }
done
COMMIT=$(bench_commit)

CNS=fssoak-c-$$
SNS=fssoak-s-$$
CIP=198.19.253.1
SIP=198.19.253.2
PORT=7001
UI_PORT=18686
PROM_PORT=18889
TMP=$(mktemp -d /tmp/fssoak.XXXXXX)
AGENT_PID=
SERVER_PID=
LOAD_PID=
UDP_PID=
mkdir -p "$OUT"

cleanup() { bench_cleanup "$LOAD_PID" "$UDP_PID" "$AGENT_PID" "$SERVER_PID"; }
trap cleanup EXIT INT TERM

bench_pair "$CNS" "$SNS" "$CIP" "$SIP" "fss$$"
# New peers: the client routes 198.18.0.0/16 into the server namespace,
# which drops what it does not own (no answer, no reply traffic).
ip -n "$CNS" route add 198.18.0.0/16 via "$SIP"

cat > "$TMP/agent.yaml" <<EOF
receivers:
  ebpf:
    collection_interval: 10s
    nat: {enabled: true}
  dns:
    collection_interval: 10s
processors:
  peer: {}
  locality: {}
exporters:
  file:
    path: $TMP/metrics.jsonl
    rotation: {max_megabytes: 20, max_backups: 1}
  ui:
    endpoint: 127.0.0.1:$UI_PORT
    retention: $RETENTION
    full_resolution: 2m
  prometheus:
    endpoint: 127.0.0.1:$PROM_PORT
service:
  pipelines:
    metrics:
      receivers: [ebpf, dns]
      processors: [peer, locality]
      exporters: [file, ui, prometheus]
EOF
RUST_LOG=info "$BIN/flowscope" run --config "$TMP/agent.yaml" > /dev/null 2> "$TMP/agent.log" &
AGENT_PID=$!
for _ in $(seq 600); do
  grep -q "running" "$TMP/agent.log" 2>/dev/null && break
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$TMP/agent.log" >&2; exit 1; }
  sleep 0.1
done

load_server_start soak.sh

END=$(( $(date +%s) + MINUTES * 60 ))
ip netns exec "$CNS" "$BIN/flowscope-load" client "$SIP:$PORT" "$RATE" $((MINUTES * 60)) 100 \
  > "$TMP/load.json" 2> "$TMP/load.err" &
LOAD_PID=$!
(
  first=0
  while [ "$(date +%s)" -lt "$END" ]; do
    ip netns exec "$CNS" "$BIN/flowscope-traffic" udp-spray \
      "198.18.$((first / 256 % 255)).$((first % 256))" "$PEERS" 9999 > /dev/null 2>&1 || true
    first=$(( (first + PEERS) % 64000 ))
    sleep 20
  done
) &
UDP_PID=$!

memlock() {
  local sum=0 f
  for f in /proc/"$AGENT_PID"/fdinfo/*; do
    v=$(awk '/^memlock:/ { print $2 }' "$f" 2>/dev/null || true)
    [ -n "$v" ] && sum=$((sum + v))
  done
  echo "$sum"
}

echo "seconds,rss_kb,fds,threads,cpu_ticks,maps_memlock_bytes" > "$OUT/samples.csv"
START=$(date +%s)
reads=0
next_sample=0
while [ "$(date +%s)" -lt "$END" ]; do
  kill -0 "$AGENT_PID" 2>/dev/null || { echo "soak.sh: the agent stopped" >&2; tail -20 "$TMP/agent.log" >&2; exit 1; }
  now=$(date +%s)
  case $((reads % 4)) in
    0) url="http://127.0.0.1:$UI_PORT/api/map?range=1h" ;;
    1) url="http://127.0.0.1:$UI_PORT/api/analytics?range=1h" ;;
    2) url="http://127.0.0.1:$UI_PORT/api/health?range=1h" ;;
    *) url="http://127.0.0.1:$PROM_PORT/metrics" ;;
  esac
  curl -sf -m 10 -o /dev/null "$url" || true
  reads=$((reads + 1))
  if [ "$now" -ge "$next_sample" ]; then
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT_PID/status")
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$AGENT_PID/status")
    fds=$(ls "/proc/$AGENT_PID/fd" | wc -l)
    echo "$((now - START)),$rss,$fds,$threads,$(proc_ticks "$AGENT_PID"),$(memlock)" >> "$OUT/samples.csv"
    next_sample=$((now + EVERY))
  fi
  sleep 1
done
wait "$LOAD_PID" || true
LOAD_PID=
HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
# The agent's own loss counters as its Prometheus exporter shows them
# (none when nothing was lost or self-telemetry is not routed there).
LOST=$(curl -sf "http://127.0.0.1:$PROM_PORT/metrics" | awk '/^flowscope_events_lost/ && $2 > 0' \
  | sed 's/^flowscope_events_lost[a-z_]*//' | tr '\n' ' ' || true)

python3 - "$OUT/samples.csv" "$MAX_GROWTH" "$COMMIT" "$MINUTES" "$RATE/s, $PEERS new peers per 20" "$RETENTION" "$HWM" "$TMP/load.json" "$LOST" > "$OUT/summary.txt" <<'PY'
import csv, json, statistics, sys
path, max_growth, commit, minutes, rate, retention, hwm, load, lost = sys.argv[1:]
rows = [dict((k, float(v)) for k, v in r.items()) for r in csv.DictReader(open(path))]
n = len(rows)
q = max(n // 4, 1)
second, last = rows[q:2 * q], rows[-q:]
half = rows[n // 2:]
def med(rs, k): return statistics.median(r[k] for r in rs)
def slope(rs, k):
    xs = [r["seconds"] for r in rs]; ys = [r[k] for r in rs]
    if len(xs) < 2: return 0.0
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den
try:
    l = json.load(open(load))
    done = f"{l.get('completed')} connections completed, {l.get('failed')} failed"
except Exception:
    done = "load result unreadable"
grow = 100.0 * (med(last, "rss_kb") - med(second, "rss_kb")) / med(second, "rss_kb")
fd_grow = med(last, "fds") - med(second, "fds")
th_grow = med(last, "threads") - med(second, "threads")
map_grow = med(last, "maps_memlock_bytes") - med(second, "maps_memlock_bytes")
cpu = (rows[-1]["cpu_ticks"] - rows[0]["cpu_ticks"]) / 100.0 / max(rows[-1]["seconds"] - rows[0]["seconds"], 1)
# A few descriptors come and go with the HTTP clients being served.
verdict = "FLAT" if grow <= float(max_growth) and fd_grow <= 4 and th_grow <= 0 and map_grow <= 0 else "GROWS"
print(f"soak of commit {commit}: {minutes} min, {rate} s, UI retention {retention}, {n} samples; {done}")
print(f"RSS median 2nd quarter {med(second, 'rss_kb') / 1024:.1f} MiB, last quarter {med(last, 'rss_kb') / 1024:.1f} MiB ({grow:+.1f} %), peak (VmHWM) {int(hwm) / 1024:.1f} MiB")
print(f"RSS trend over the second half: {slope(half, 'rss_kb') * 3600 / 1024:+.2f} MiB/hour")
print(f"descriptors {med(second, 'fds'):.0f} -> {med(last, 'fds'):.0f}, threads {med(second, 'threads'):.0f} -> {med(last, 'threads'):.0f}, "
      f"eBPF maps {med(second, 'maps_memlock_bytes') / 1048576:.1f} -> {med(last, 'maps_memlock_bytes') / 1048576:.1f} MiB")
print(f"agent CPU {100 * cpu:.1f} % of a core on average")
print(f"flowscope_events_lost at the end: {lost.strip() or 'none'}")
print(f"verdict: {verdict} (allowed: RSS growth {max_growth} %, 4 descriptors; no thread or map growth)")
PY
cat "$OUT/summary.txt"
grep -q "verdict: FLAT" "$OUT/summary.txt"
