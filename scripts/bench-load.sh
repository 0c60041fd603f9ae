#!/usr/bin/env bash
# Load benchmark: agent CPU and memory while the host makes many short TCP
# connections, against the same load with the agent off.
#
# Two network namespaces joined by a veth pair (198.19.254.1 and .2, inside
# 198.18.0.0/15; nothing leaves them). For each rate, `flowscope-load`
# opens that many connections per second from one namespace to an echo
# server in the other (connect, send BYTES, read them back, close), for
# SECONDS:
#   off: the agent is not running; host CPU from /proc/stat;
#   on:  `flowscope run` (ebpf receiver, 10 s interval, file exporter only)
#        runs; also agent CPU (utime+stime from /proc/PID/stat over the
#        window) and RSS (VmRSS sampled every 250 ms, VmHWM at the end).
#        The kernel side's cost is measured too: the script turns on
#        kernel.bpf_stats_enabled for its runs (restored on exit) and reads
#        each of the agent's eBPF programs' run_time_ns / run_cnt (found
#        through the agent's bpf-prog fds in /proc/PID/fdinfo) before and
#        after the window: ns per run, runs per connection and ns per
#        connection (both ends of every connection are on this host). The
#        kernel's run_time_ns times the programs themselves, so other work
#        on the machine does not inflate it (cache and TLB pressure aside).
#        The maps' memory (memlock in the map fds' fdinfo, what
#        `bpftool map show` calls bytes_memlock) is read at the end of the
#        window and added to the agent's RSS.
#        With --floor, `flowscope-floor` (receiver/src/bin) attaches
#        programs that return at once to exactly the hooks the agent uses
#        (same program types, same tracepoints, same cgroup hooks; see
#        receiver-ebpf/src/bin/floor.rs) for the same window: their
#        run_time_ns is what calling any program there costs, measured in
#        the same run, and the agent's figure is also given as a multiple
#        of it. The floor includes an empty program on the drop program's
#        hook (tp_btf/kfree_skb; left out with --drops off), and both
#        figures come twice: all programs, and the flow programs alone
#        (all but kfree_skb; columns flow_us, flfl_us, flow_x), with the
#        drop program's ns per run (drop_ns). Both sets run on every event, so each pays the other's
#        cache effects alike; compare figures within one run only (the same
#        programs have cost twice as much on one host of this VM as on
#        another).
# Results: target/bench/load.json and a summary in target/bench/load.txt
# (or in --out DIR). This measures; it asserts nothing.
#
# usage: scripts/bench-load.sh [--seconds N] [--rates "1000 10000"] [--bytes N] [--no-build]
#                              [--bin DIR] [--out DIR] [--agent-only] [--udp]
#                              [--floor] [--hooks btf|tracepoint] [--drops on|off]
#   --drops off   the agent without its kernel-drop program (ebpf.drops.enabled:
#                 false), to compare the agent's cost with drops on and off
#                 back to back.
#   --bin DIR     run the flowscope and flowscope-load binaries in DIR (e.g. another
#                 worktree's target/release, to compare two builds back to back);
#                 implies --no-build. The JSON names DIR's git commit.
#   --agent-only  skip the runs without the agent.
#   --udp         UDP instead of TCP: each "connection" is one exchange, a
#                 datagram sent with sendto() on an unconnected socket and
#                 its echo read back with recvfrom() (`flowscope-load
#                 udp-client`), so per-connection figures are per exchange
#                 (two datagrams, each sent and received on this host).
#   --floor       also attach the empty programs (above) in the runs with the
#                 agent and report them beside the agent's, with the ratios
#                 (all programs, and the flow programs alone).
#   --hooks H     btf (default: the agent's choice, BTF-typed raw tracepoints
#                 where the kernel takes them) or tracepoint (the classic
#                 fallback, FLOWSCOPE_EBPF_HOOKS=tracepoint; the floor uses
#                 the same set).
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
source "$(dirname "$0")/bench-common.sh"
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_EACH=20
RATES="1000 10000"
BYTES=100
BUILD=1
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$ROOT/target/bench
MODES="off on"
DROPS=on
KIND=
FLOOR=0
HOOKS=btf
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --bytes) BYTES=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --bin) BIN=$(cd "$2" && pwd); BUILD=0; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --agent-only) MODES=on; shift ;;
    --udp) KIND=udp-; shift ;;
    --drops) DROPS=$2; shift 2 ;;
    --floor) FLOOR=1; shift ;;
    --hooks)
      case "$2" in
        btf|tracepoint) HOOKS=$2 ;;
        *) echo "bench-load.sh: --hooks takes btf or tracepoint, not $2" >&2; exit 2 ;;
      esac
      shift 2 ;;
    *) echo "bench-load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

mkdir -p "$OUT"
COMMIT=$(bench_commit)
if [ "$BUILD" = 1 ]; then
  scripts/bootstrap.sh
  cargo build --release --bin flowscope
  cargo build --release -p flowscope-integration --bin flowscope-load
  [ "$FLOOR" = 1 ] && cargo build --release -p flowscope-receiver --bin flowscope-floor
fi
BINS="flowscope flowscope-load"
[ "$FLOOR" = 1 ] && BINS="$BINS flowscope-floor"
if [ "$HOOKS" = tracepoint ]; then
  export FLOWSCOPE_EBPF_HOOKS=tracepoint
fi
for b in $BINS; do
  [ -x "$BIN/$b" ] || { echo "bench-load.sh: $BIN/$b is missing (run without --no-build)" >&2; exit 1; }
done

CNS=fsbench-c-$$
SNS=fsbench-s-$$
CIP=198.19.254.1
SIP=198.19.254.2
PORT=7000
TMP=$(mktemp -d /tmp/fsbench.XXXXXX)
AGENT_PID=
SERVER_PID=
SAMPLER_PID=
FLOOR_PID=
BPF_STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo)

cleanup() { bench_cleanup "$SAMPLER_PID" "$FLOOR_PID" "$AGENT_PID" "$SERVER_PID"; }
trap cleanup EXIT INT TERM

bench_pair "$CNS" "$SNS" "$CIP" "$SIP" "fsb$$"


# Per-program run statistics cost two clock reads per run while on; only
# this script's window needs them.
if [ -n "$BPF_STATS_WAS" ]; then
  sysctl -qw kernel.bpf_stats_enabled=1
fi

# One line per eBPF program the agent holds: id run_time_ns run_cnt name
# instructions (after the verifier's rewrites, `bpftool prog dump xlated`)
# (a program is reached through its own fd or a link's fd; each counted
# once). Names come from bpftool (15 characters, the kernel's limit) when
# it is installed (scripts/bootstrap.sh), else the id stands in.
prog_stats() {
  local pid=$1 ids id fd
  ids=$(for fd in /proc/"$pid"/fdinfo/*; do
          awk '/^prog_id:/ { print $2 }' "$fd" 2>/dev/null || true
        done | sort -un)
  for id in $ids; do
    if command -v bpftool > /dev/null 2>&1; then
      bpftool prog show id "$id" --json 2>/dev/null \
        | jq -r '"\(.id) \(.run_time_ns // 0) \(.run_cnt // 0) \(.name // "?") \((.bytes_xlated // 0) / 8 | floor)"'
    fi
  done
}

# Memory of the agent's eBPF maps: "name bytes" per map (fdinfo memlock,
# which since Linux 6.4 is each map's own account of what it uses).
map_mem() {
  local pid=$1 fd ids id
  ids=$(for fd in /proc/"$pid"/fdinfo/*; do
          awk '/^map_id:/ { print $2 }' "$fd" 2>/dev/null || true
        done | sort -un)
  for id in $ids; do
    bpftool map show id "$id" --json 2>/dev/null | jq -r '"\(.name // "?") \(.bytes_memlock // 0)"'
  done
}

# Busy and total jiffies of all CPUs (busy excludes idle and iowait).
host_cpu() {
  awk '/^cpu / { t = $2+$3+$4+$5+$6+$7+$8+$9; print t - $5 - $6, t }' /proc/stat
}


# Sum of a metric's data points in the agent's output; with a peer-address
# prefix, only points whose network.peer.address starts with it. Needs jq;
# prints null without it.
metric_sum() {
  local name=$1 prefix=${2:-}
  if ! command -v jq > /dev/null 2>&1 || [ ! -s "$TMP/metrics.jsonl" ]; then
    echo null
    return
  fi
  jq -s --arg n "$name" --arg p "$prefix" '
    [ .[] | .resourceMetrics[]? | .scopeMetrics[]? | .metrics[]?
      | select(.name == $n) | (.sum // .gauge) | .dataPoints[]?
      | select($p == "" or any(.attributes[]?; .key == "network.peer.address"
                                and (.value.stringValue // "" | startswith($p))))
      | ((.asInt // .asDouble // 0) | tonumber) ] | add // 0' "$TMP/metrics.jsonl"
}

# Starts flowscope-floor with the agent's set of hooks; sets FLOOR_PID.
floor_start() {
  local drops=
  [ "$DROPS" = off ] && drops=--no-drops
  "$BIN/flowscope-floor" "$HOOKS" $drops > "$TMP/floor.out" 2> "$TMP/floor.err" &
  FLOOR_PID=$!
  bench_await "$FLOOR_PID" "$TMP/floor" attached "bench-load.sh: flowscope-floor"
}

floor_stop() {
  bench_stop "$FLOOR_PID"
  FLOOR_PID=
}

# kernel_stats BEFORE AFTER CONNECTIONS WINDOW: JSON of the programs' deltas
# (prog_stats lines before and after the window). Besides the total, the
# flow programs alone ("flow_": all but the drop program, whose name ends
# in kfree_skb, the agent's and the floor's) and the drop program's runs.
kernel_stats() {
  join -j 1 <(sort "$1") <(sort "$2") | awk -v n="$3" -v w="$4" '
    BEGIN { printf "{\"programs\":["; first = 1 }
    { ns = $6 - $2; runs = $7 - $3; name = $8
      tns += ns; truns += runs
      if (name ~ /kfree_skb$/) { dns += ns; druns += runs }
      printf "%s{\"id\":%s,\"name\":\"%s\",\"xlated_insns\":%d,\"runs\":%d,\"run_time_ns\":%d,\"ns_per_run\":%.1f,\"runs_per_connection\":%.2f,\"ns_per_connection\":%.1f}", \
        (first ? "" : ","), $1, name, $9, runs, ns, runs ? ns / runs : 0, n ? runs / n : 0, n ? ns / n : 0
      first = 0 }
    END { printf "],\"connections\":%d,\"run_time_ns\":%d,\"runs\":%d,\"us_per_connection\":%.3f,\"cpu_pct_of_one_core\":%.2f,", \
        n, tns, truns, n ? tns / n / 1000 : 0, w ? 100 * tns / 1e9 / w : 0
      printf "\"flow_run_time_ns\":%d,\"flow_us_per_connection\":%.3f,\"drops_runs\":%d,\"drops_run_time_ns\":%d,\"drops_ns_per_run\":%.1f}", \
        tns - dns, n ? (tns - dns) / n / 1000 : 0, druns, dns, druns ? dns / druns : 0 }'
}

# kernel_table JSON: the per-program lines of the summary.
kernel_table() {
  printf '  %-16s %6s %12s %10s %12s %12s\n' program insns runs ns/run runs/conn ns/conn
  echo "$1" | jq -r '.programs[] | "  \(.name) \(.xlated_insns) \(.runs) \(.ns_per_run) \(.runs_per_connection) \(.ns_per_connection)"' \
    | awk '{ printf "  %-16s %6d %12d %10.1f %12.2f %12.1f\n", $1, $2, $3, $4, $5, $6 }'
  echo "$1" | jq -r '"  total: \(.us_per_connection) us per connection, \(.cpu_pct_of_one_core) % of one core; flow programs (all but kfree_skb): \(.flow_us_per_connection) us per connection"'
}

RUNS=()
SUMMARY=()

measure() {
  local rate=$1 mode=$2
  load_server_start bench-load.sh "$KIND"
  local agent_json=null
  if [ "$mode" = on ]; then
    agent_start bench-load.sh 10s running "drops: {enabled: $([ "$DROPS" = off ] && echo false || echo true)}"
    sleep 1
    : > "$TMP/rss"
    (while kill -0 "$AGENT_PID" 2>/dev/null; do
       awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT_PID/status" >> "$TMP/rss" 2>/dev/null || true
       sleep 0.25
     done) &
    SAMPLER_PID=$!
    [ "$FLOOR" = 1 ] && floor_start
  fi
  local loadavg srv0 srv1
  loadavg=$(cut -d' ' -f1 /proc/loadavg)
  read -r busy0 total0 < <(host_cpu)
  local t0 ticks0=0
  t0=$(date +%s.%N)
  [ "$mode" = on ] && ticks0=$(proc_ticks "$AGENT_PID") && prog_stats "$AGENT_PID" > "$TMP/prog0"
  [ -n "$FLOOR_PID" ] && prog_stats "$FLOOR_PID" > "$TMP/floor0"
  srv0=$(proc_ticks "$SERVER_PID")
  local load
  load=$(ip netns exec "$CNS" "$BIN/flowscope-load" "${KIND}client" "$SIP:$PORT" "$rate" "$SECONDS_EACH" "$BYTES")
  read -r busy1 total1 < <(host_cpu)
  local t1 ticks1=0
  t1=$(date +%s.%N)
  [ "$mode" = on ] && ticks1=$(proc_ticks "$AGENT_PID") && prog_stats "$AGENT_PID" > "$TMP/prog1"
  [ -n "$FLOOR_PID" ] && prog_stats "$FLOOR_PID" > "$TMP/floor1" && floor_stop
  srv1=$(proc_ticks "$SERVER_PID")
  local window host_pct host_cores load_cpu
  window=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  host_pct=$(awk -v b="$((busy1 - busy0))" -v t="$((total1 - total0))" 'BEGIN { printf "%.1f", 100 * b / t }')
  # CPU of the load itself: the client's own (getrusage) plus the server's.
  # The eBPF programs run in these processes' syscalls, so the difference
  # between agent on and off includes the kernel side's cost.
  load_cpu=$(awk -v c="$(echo "$load" | sed 's/.*"cpu_seconds":\([0-9.]*\).*/\1/')" -v d="$((srv1 - srv0))" \
    -v w="$window" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", 100 * (c + d / hz) / w }')
  host_cores=$(awk -v b="$((busy1 - busy0))" -v w="$window" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", b / hz / w }')
  if [ "$mode" = on ]; then
    local agent_pct hwm rss_avg rss_peak
    agent_pct=$(awk -v d="$((ticks1 - ticks0))" -v w="$window" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", 100 * d / hz / w }')
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
    map_mem "$AGENT_PID" > "$TMP/maps"
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    read -r rss_avg rss_peak < <(awk '{ s += $1; if ($1 > m) m = $1; n++ } END { if (n) printf "%d %d\n", s / n, m; else print "0 0" }' "$TMP/rss")
    agent_stop
    local closed lost received
    closed=$(metric_sum flowscope.tcp.connection.closed 198.19.254.)
    lost=$(metric_sum flowscope.events.lost)
    received=$(metric_sum flowscope.events.received)
    # Kernel side: per program, the deltas over the window.
    local completed kernel_json maps_json maps_kib mem_kib
    completed=$(echo "$load" | sed 's/.*"completed":\([0-9]*\).*/\1/')
    kernel_json=$(kernel_stats "$TMP/prog0" "$TMP/prog1" "$completed" "$window")
    local floor_json=null ratio=null flow_ratio=null floor_us=- floor_flow_us=-
    if [ "$FLOOR" = 1 ]; then
      floor_json=$(kernel_stats "$TMP/floor0" "$TMP/floor1" "$completed" "$window")
      floor_us=$(echo "$floor_json" | jq -r '.us_per_connection')
      floor_flow_us=$(echo "$floor_json" | jq -r '.flow_us_per_connection')
      ratio=$(echo "$kernel_json $floor_json" | jq -rs 'if .[1].run_time_ns > 0 then (.[0].run_time_ns / .[1].run_time_ns * 100 | round / 100) else null end')
      flow_ratio=$(echo "$kernel_json $floor_json" | jq -rs 'if .[1].flow_run_time_ns > 0 then (.[0].flow_run_time_ns / .[1].flow_run_time_ns * 100 | round / 100) else null end')
    fi
    maps_json=$(awk 'BEGIN { printf "["; first = 1 }
      { printf "%s{\"name\":\"%s\",\"bytes_memlock\":%d}", (first ? "" : ","), $1, $2; first = 0 }
      END { printf "]" }' "$TMP/maps")
    maps_kib=$(awk '{ s += $2 } END { printf "%d", s / 1024 }' "$TMP/maps")
    mem_kib=$((rss_avg + maps_kib))
    {
      echo "rate $rate/s, agent on ($HOOKS hooks): eBPF programs over the window ($completed connections)"
      kernel_table "$kernel_json"
      if [ "$FLOOR" = 1 ]; then
        echo "  floor (empty programs on the same hooks, same window):"
        kernel_table "$floor_json" | sed 's/^/  /'
        echo "  agent / floor: $ratio x all programs, $flow_ratio x flow programs"
      fi
      printf '  maps: %s KiB (' "$maps_kib"
      awk '{ printf "%s%s %d KiB", (NR > 1 ? ", " : ""), $1, $2 / 1024 }' "$TMP/maps"
      printf '); agent RSS avg %s KiB; RSS + maps %s KiB\n' "$rss_avg" "$mem_kib"
    } >> "$TMP/kernel.txt"
    agent_json=$(printf '{"cpu_pct_of_one_core":%s,"rss_kib_avg":%s,"rss_kib_peak_sampled":%s,"rss_kib_hwm":%s,"maps_kib":%s,"rss_avg_plus_maps_kib":%s,"maps":%s,"kernel":%s,"floor":%s,"agent_to_floor":%s,"flow_agent_to_floor":%s,"tcp_closed_reported":%s,"events_received":%s,"events_lost":%s}' \
      "$agent_pct" "$rss_avg" "$rss_peak" "$hwm" "$maps_kib" "$mem_kib" "$maps_json" "$kernel_json" "$floor_json" "$ratio" "$flow_ratio" "$closed" "$received" "$lost")
    SUMMARY+=("$(printf '%-6s %-4s %9s %7s %7s%% %7s%% %6s%% %9s %9s %9s %8s %8s %6s %8s %8s %6s %8s %6s' "$rate" on \
      "$(echo "$load" | sed 's/.*"achieved_rate":\([0-9.]*\).*/\1/')" \
      "$(echo "$load" | sed 's/.*"failed":\([0-9]*\).*/\1/')" "$host_pct" "$load_cpu" "$agent_pct" "$rss_avg" "$hwm" "$maps_kib" \
      "$(echo "$kernel_json" | jq -r '.us_per_connection')" "$floor_us" "$ratio" \
      "$(echo "$kernel_json" | jq -r '.flow_us_per_connection')" "$floor_flow_us" "$flow_ratio" \
      "$(echo "$kernel_json" | jq -r 'if .drops_runs > 0 then .drops_ns_per_run else "-" end')" "$loadavg")")
  else
    SUMMARY+=("$(printf '%-6s %-4s %9s %7s %7s%% %7s%% %7s %9s %9s %9s %8s %8s %6s %8s %8s %6s %8s %6s' "$rate" off \
      "$(echo "$load" | sed 's/.*"achieved_rate":\([0-9.]*\).*/\1/')" \
      "$(echo "$load" | sed 's/.*"failed":\([0-9]*\).*/\1/')" "$host_pct" "$load_cpu" - - - - - - - - - - - "$loadavg")")
  fi
  load_server_stop
  RUNS+=("$(printf '{"rate":%s,"agent":"%s","window_seconds":%s,"host_cpu_pct_of_all_cpus":%s,"host_busy_cores":%s,"load_cpu_pct_of_one_core":%s,"loadavg_1m_before":%s,"load":%s,"agent_stats":%s}' \
    "$rate" "$mode" "$window" "$host_pct" "$host_cores" "$load_cpu" "$loadavg" "$load" "$agent_json")")
}

: > "$TMP/kernel.txt"
for rate in $RATES; do
  for mode in $MODES; do
    measure "$rate" "$mode"
  done
done

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
  printf '{"benchmark":"scripts/bench-load.sh","date":"%s","kernel":"%s","cpus":%s,"cpu_model":"%s",' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -r)" "$(nproc)" "$CPU_MODEL"
  printf '"commit":"%s","transport":"%s","hooks":"%s","seconds_each":%s,"bytes_each_way":%s,"runs":[' \
    "$COMMIT" "$([ -n "$KIND" ] && echo udp || echo tcp)" "$HOOKS" "$SECONDS_EACH" "$BYTES"
  (IFS=,; printf '%s' "${RUNS[*]}")
  printf ']}\n'
} > "$OUT/load.json"

{
  echo "flowscope load benchmark, $(date -u +%Y-%m-%d), kernel $(uname -r), $(nproc) CPUs ($CPU_MODEL)"
  echo "build $COMMIT ($BIN); $SECONDS_EACH s per run, $BYTES bytes each way per connection"
  [ -n "$KIND" ] && echo "UDP: a \"connection\" is one exchange (a datagram each way, sendto/recvfrom on unconnected sockets)"
  echo "host: busy % of all CPUs (/proc/stat); load: client+server CPU, % of one core; agent: % of one core"
  echo "ebpf: the agent's eBPF programs' run_time_ns per connection (both ends), microseconds"
  echo "floor: the same for empty programs on the same hooks in the same window (--floor); x: ebpf / floor"
  echo "flow_us, flfl_us, flow_x: the same for the flow programs alone (all but kfree_skb); drop_ns: the agent's kfree_skb ns per run"
  printf '%-6s %-4s %9s %7s %8s %8s %7s %9s %9s %9s %8s %8s %6s %8s %8s %6s %8s %6s\n' rate/s agent achieved failed host load agent rss_avg rss_hwm maps ebpf_us floor_us x flow_us flfl_us flow_x drop_ns loadavg
  printf '%s\n' "${SUMMARY[@]}"
  echo "(rss and maps in KiB; details: $OUT/load.json)"
  cat "$TMP/kernel.txt"
} | tee "$OUT/load.txt"
