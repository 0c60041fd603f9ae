#!/usr/bin/env bash
# Soak: runs the agent for a long time under steady, varied load and shows
# whether anything it holds keeps growing (memory, file descriptors,
# threads, the kernel maps' memory).
#
# Two network namespaces joined by a veth pair (198.19.253.1 and .2, inside
# 198.18.0.0/15; nothing leaves them). The agent runs the default
# pipeline's components with NAT resolution, DNS capture, the UI (its
# store's retention shortened to --retention, and its full resolution to
# --full-resolution, 2 minutes, so that it fills within the soak and must
# then stay flat; `--retention 1h --full-resolution 10m` is the default
# configuration's UI), the Prometheus exporter and a rotating
# file exporter. With --no-ui, as the Kubernetes DaemonSet runs it: no UI
# and no file exporter (only /metrics is read; no heap columns). The load, for --minutes:
#   - `flowscope-load` opens --rate short TCP connections per second
#     (connect, 100 bytes each way, close) to an echo server;
#   - every 20 s, one UDP datagram to each of --peers new addresses
#     (198.18.0.0/16 routed into the server namespace, which drops them;
#     the next block each time, cycling through the /16), so the
#     connection table keeps meeting new peers it must later forget;
#   - every second, one of the UI's Map, Analytics and Health APIs or the
#     Prometheus exporter's /metrics is read (each every 4 s).
# Every --every seconds the agent's VmRSS, open descriptors, threads, CPU
# ticks, the memlock of its eBPF maps, its heap (in use and held, from the
# UI's /api/status) and the UI store's series are sampled into
# target/soak/samples.csv. The summary (target/soak/summary.txt) compares
# the median RSS of the soak's second quarter (once the UI store is full)
# with its last quarter, and fits a line through the second half: a
# growth of more than --max-growth percent between the two quarters, more
# than 4 descriptors (HTTP clients come and go), or any thread or map
# growth, is reported as GROWS and the script exits 1.
#
#
# The fault suite (off with --no-faults): the agent also exports over
# OTLP/HTTP, with a persistent queue, to `flowscope-otlp-sink`, which syncs
# every request it acknowledges to a log; the sink is SIGKILLed and
# restarted every --kill-sink-every seconds (down 3 s each time). After
# the soak's minutes the agent itself is SIGKILLed under the load and
# started again with the same configuration and queue, and the load goes
# on for 2 more minutes. Then the load's completed connections are
# compared with the closed client connections the sink received, once
# each: the difference is what the kill cost, reported with the seconds
# between the killed agent's last exported interval and the restarted
# agent's start; the sink's unique points and the `flowscope.events.lost`
# the agents reported are in the summary too.
#
# usage: scripts/soak.sh [--minutes N] [--rate N] [--peers N] [--every S]
#                        [--retention DUR] [--full-resolution DUR] [--no-ui]
#                        [--max-growth PCT] [--no-build]
#                        [--bin DIR] [--out DIR] [--kill-sink-every S]
#                        [--no-faults]
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
FULL_RES=2m
UI=1
MAX_GROWTH=5
BUILD=1
FAULTS=1
KILL_SINK_EVERY=300
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$ROOT/target/soak
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --every) EVERY=$2; shift 2 ;;
    --retention) RETENTION=$2; shift 2 ;;
    --full-resolution) FULL_RES=$2; shift 2 ;;
    --no-ui) UI=0; shift ;;
    --max-growth) MAX_GROWTH=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --bin) BIN=$(cd "$2" && pwd); BUILD=0; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --kill-sink-every) KILL_SINK_EVERY=$2; shift 2 ;;
    --no-faults) FAULTS=0; shift ;;
    *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$BUILD" = 1 ]; then
  scripts/bootstrap.sh
  cargo build --release --bin flowscope
  cargo build --release -p flowscope-integration --bin flowscope-load --bin flowscope-traffic \
    --bin flowscope-otlp-sink
fi
for b in flowscope flowscope-load flowscope-traffic flowscope-otlp-sink; do
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
SINK_PORT=18890
TMP=$(mktemp -d /tmp/fssoak.XXXXXX)
# The agent's pinned kernel counters (the restarted agent counts what the
# killed one had not delivered); removed at the end.
PINS=/sys/fs/bpf/flowscope-soak-$$
AGENT_PID=
SERVER_PID=
LOAD_PID=
UDP_PID=
KILLER_PID=
mkdir -p "$OUT"

sink_pid() { cat "$TMP/sink.pid" 2>/dev/null || true; }
cleanup() {
  bench_cleanup "$LOAD_PID" "$UDP_PID" "$KILLER_PID" "$AGENT_PID" "$SERVER_PID" "$(sink_pid)"
  rm -rf "$PINS"
}
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
    pin_directory: $PINS
  dns:
    collection_interval: 10s
processors:
  peer: {}
  locality: {}
exporters:
  prometheus:
    endpoint: 127.0.0.1:$PROM_PORT
EOF
EXPORTERS="prometheus"
if [ "$UI" = 1 ]; then
  EXPORTERS="file, ui, $EXPORTERS"
  cat >> "$TMP/agent.yaml" <<EOF
  file:
    path: $TMP/metrics.jsonl
    rotation: {max_megabytes: 20, max_backups: 1}
  ui:
    endpoint: 127.0.0.1:$UI_PORT
    retention: $RETENTION
    full_resolution: $FULL_RES
EOF
else
  RETENTION="off (--no-ui)"
fi
if [ "$FAULTS" = 1 ]; then
  EXPORTERS="$EXPORTERS, otlphttp"
  cat >> "$TMP/agent.yaml" <<EOF
  otlphttp:
    metrics_endpoint: http://127.0.0.1:$SINK_PORT/v1/metrics
    compression: none
    sending_queue: {storage: $TMP/queue}
EOF
fi
cat >> "$TMP/agent.yaml" <<EOF
service:
  pipelines:
    metrics:
      receivers: [ebpf, dns]
      processors: [peer, locality]
      exporters: [$EXPORTERS]
EOF

# The sink, (re)started in the background; its pid in $TMP/sink.pid.
sink_start() {
  "$BIN/flowscope-otlp-sink" serve "127.0.0.1:$SINK_PORT" "$TMP/sink.log" "$PORT" \
    > /dev/null 2>> "$TMP/sink.err" &
  echo $! > "$TMP/sink.pid"
}
sink_summary() { "$BIN/flowscope-otlp-sink" summary "$TMP/sink.log" 2>/dev/null; }
# Starts the agent and waits for its "running" line (a restart appends to
# the same log).
agent_start() {
  local runs
  runs=$(grep -c "running" "$TMP/agent.log" 2>/dev/null || true)
  RUST_LOG=info "$BIN/flowscope" run --config "$TMP/agent.yaml" > /dev/null 2>> "$TMP/agent.log" &
  AGENT_PID=$!
  for _ in $(seq 600); do
    [ "$(grep -c "running" "$TMP/agent.log" 2>/dev/null || true)" -gt "${runs:-0}" ] && return 0
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$TMP/agent.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "soak.sh: the agent did not start" >&2
  exit 1
}
if [ "$FAULTS" = 1 ]; then sink_start; fi
agent_start

load_server_start soak.sh

END=$(( $(date +%s) + MINUTES * 60 ))
# With the faults the load goes on 2 minutes past the soak, across the
# agent's SIGKILL and restart.
EXTRA=0
if [ "$FAULTS" = 1 ]; then EXTRA=120; fi
ip netns exec "$CNS" "$BIN/flowscope-load" client "$SIP:$PORT" "$RATE" $((MINUTES * 60 + EXTRA)) 100 \
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
if [ "$FAULTS" = 1 ]; then
  (
    while sleep "$KILL_SINK_EVERY"; do
      kill -9 "$(sink_pid)" 2>/dev/null || true
      wait "$(sink_pid)" 2>/dev/null || true
      echo "$(date +%s) sink killed" >> "$TMP/faults.log"
      sleep 3
      sink_start
    done
  ) &
  KILLER_PID=$!
fi

memlock() {
  local sum=0 f
  for f in /proc/"$AGENT_PID"/fdinfo/*; do
    v=$(awk '/^memlock:/ { print $2 }' "$f" 2>/dev/null || true)
    [ -n "$v" ] && sum=$((sum + v))
  done
  echo "$sum"
}

echo "seconds,rss_kb,fds,threads,cpu_ticks,maps_memlock_bytes,heap_in_use_kb,heap_held_kb,ui_series" > "$OUT/samples.csv"
# The heap (in use by the agent's data, and held from the system) and the
# UI store's series, from /api/status: RSS that grows while the heap in use
# stays flat is the allocator keeping freed memory, not data.
ui_status() {
  [ "$UI" = 1 ] || { echo ",,"; return; }
  curl -sf -m 10 "http://127.0.0.1:$UI_PORT/api/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
h = s["heap"]
print(h["in_use_bytes"] // 1024, h["held_bytes"] // 1024, s["series"], sep=",")' || echo ",,"
}
START=$(date +%s)
reads=0
next_sample=0
while [ "$(date +%s)" -lt "$END" ]; do
  kill -0 "$AGENT_PID" 2>/dev/null || { echo "soak.sh: the agent stopped" >&2; tail -20 "$TMP/agent.log" >&2; exit 1; }
  now=$(date +%s)
  case $(( UI == 1 ? reads % 4 : 3 )) in
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
    echo "$((now - START)),$rss,$fds,$threads,$(proc_ticks "$AGENT_PID"),$(memlock),$(ui_status)" >> "$OUT/samples.csv"
    next_sample=$((now + EVERY))
  fi
  sleep 1
done
HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
FAULT_LINE="fault suite: off (--no-faults)"
if [ "$FAULTS" = 1 ]; then
  kill -9 "$AGENT_PID"
  killed=$(date +%s)
  wait "$AGENT_PID" 2>/dev/null || true
  agent_start
  attached=$(date +%s)
fi
wait "$LOAD_PID" || true
LOAD_PID=
# The agent's own loss counters as its Prometheus exporter shows them
# (none when nothing was lost or self-telemetry is not routed there).
LOST=$(curl -sf "http://127.0.0.1:$PROM_PORT/metrics" | awk '/^flowscope_events_lost/ && $2 > 0' \
  | sed 's/^flowscope_events_lost[a-z_]*//' | tr '\n' ' ' || true)

if [ "$FAULTS" = 1 ]; then
  kill "$KILLER_PID" 2>/dev/null || true
  wait "$KILLER_PID" 2>/dev/null || true
  KILLER_PID=
  kill -0 "$(sink_pid)" 2>/dev/null || sink_start
  # SIGTERM: the agent sends its last interval and stops; one more agent
  # drains what its queue kept; done when the sink's count of closed
  # connections has not moved for 30 s (three intervals).
  kill "$AGENT_PID"
  wait "$AGENT_PID" 2>/dev/null || true
  agent_start
  closed_now() { sink_summary | python3 -c 'import json,sys; print(json.load(sys.stdin)["closed"])' 2>/dev/null || echo none; }
  last=$(closed_now) same=0
  while [ "$same" -lt 15 ]; do
    sleep 2
    now=$(closed_now)
    if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; last=$now; fi
  done
  last=$(sink_summary)
  completed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("completed", 0))' "$TMP/load.json" 2>/dev/null || echo 0)
  kills=$(grep -c 'sink killed' "$TMP/faults.log" 2>/dev/null || true)
  FAULT_LINE=$(python3 - "$last" "$completed" "$RATE" "$killed" "$attached" "${kills:-0}" <<'PY'
import json, sys
s, completed, rate, killed, attached, kills = sys.argv[1:]
s = json.loads(s)
completed, rate = int(completed), float(rate)
missing = completed - s["closed"]
print(f"fault suite: sink SIGKILLed {kills} times; {s['requests']} requests received once "
      f"({s['repeated']} sent again after a kill), {s['points']} points; "
      f"{s['closed']} of {completed} connections counted at the sink, {missing} missing "
      f"({missing / rate:.1f} s of load; the restarted agent was running {int(attached) - int(killed)} s "
      f"after the SIGKILL; counted by it: {s['lost'].get('ebpf.tcp/agent_restart', 0)} connection ends, "
      f"two per connection: client and server are both on this host); flowscope.events.lost reported: "
      f"{', '.join(f'{k} {v}' for k, v in s['lost'].items()) or 'none'}")
PY
)
fi

python3 - "$OUT/samples.csv" "$MAX_GROWTH" "$COMMIT" "$MINUTES" "$RATE/s, $PEERS new peers per 20" "$RETENTION" "$HWM" "$TMP/load.json" "$LOST" "$FAULT_LINE" > "$OUT/summary.txt" <<'PY'
import csv, json, statistics, sys
path, max_growth, commit, minutes, rate, retention, hwm, load, lost, faults = sys.argv[1:]
# A sample whose /api/status read failed has empty heap columns: those
# columns leave it out.
rows = [dict((k, float(v)) for k, v in r.items() if v != "") for r in csv.DictReader(open(path))]
n = len(rows)
q = max(n // 4, 1)
second, last = rows[q:2 * q], rows[-q:]
half = rows[n // 2:]
def med(rs, k): return statistics.median([r[k] for r in rs if k in r] or [0.0])
def slope(rs, k):
    xs = [r["seconds"] for r in rs if k in r]; ys = [r[k] for r in rs if k in r]
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
# The maps' memlock steps by a few hundred bytes from sample to sample
# (small maps held for a moment), so a median can move with no growth:
# the maps grow when the last quarter's median is above every value of
# the second quarter.
map_grow = med(last, "maps_memlock_bytes") - max([r["maps_memlock_bytes"] for r in second if "maps_memlock_bytes" in r] or [0.0])
cpu = (rows[-1]["cpu_ticks"] - rows[0]["cpu_ticks"]) / 100.0 / max(rows[-1]["seconds"] - rows[0]["seconds"], 1)
# A few descriptors come and go with the HTTP clients being served.
verdict = "FLAT" if grow <= float(max_growth) and fd_grow <= 4 and th_grow <= 0 and map_grow <= 0 else "GROWS"
print(f"soak of commit {commit}: {minutes} min, {rate} s, UI retention {retention}, {n} samples; {done}")
print(f"RSS median 2nd quarter {med(second, 'rss_kb') / 1024:.1f} MiB, last quarter {med(last, 'rss_kb') / 1024:.1f} MiB ({grow:+.1f} %), peak (VmHWM) {int(hwm) / 1024:.1f} MiB")
print(f"RSS trend over the second half: {slope(half, 'rss_kb') * 3600 / 1024:+.2f} MiB/hour")
print(f"heap in use {med(second, 'heap_in_use_kb') / 1024:.1f} -> {med(last, 'heap_in_use_kb') / 1024:.1f} MiB "
      f"({slope(half, 'heap_in_use_kb') * 3600 / 1024:+.2f} MiB/hour), held from the system "
      f"{med(second, 'heap_held_kb') / 1024:.1f} -> {med(last, 'heap_held_kb') / 1024:.1f} MiB "
      f"({slope(half, 'heap_held_kb') * 3600 / 1024:+.2f} MiB/hour); UI store series "
      f"{med(second, 'ui_series'):.0f} -> {med(last, 'ui_series'):.0f}")
print(f"descriptors {med(second, 'fds'):.0f} -> {med(last, 'fds'):.0f}, threads {med(second, 'threads'):.0f} -> {med(last, 'threads'):.0f}, "
      f"eBPF maps {med(second, 'maps_memlock_bytes') / 1048576:.1f} -> {med(last, 'maps_memlock_bytes') / 1048576:.1f} MiB")
print(f"agent CPU {100 * cpu:.1f} % of a core on average")
print(f"flowscope_events_lost at the end: {lost.strip() or 'none'}")
print(faults)
print(f"verdict: {verdict} (allowed: RSS growth {max_growth} %, 4 descriptors; no thread growth; eBPF maps no higher than the 2nd quarter's highest)")
PY
cat "$OUT/summary.txt"
grep -q "verdict: FLAT" "$OUT/summary.txt"
