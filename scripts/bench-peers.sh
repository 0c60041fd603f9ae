#!/usr/bin/env bash
# Peer benchmark: the same short-TCP-connection load as scripts/bench-load.sh
# with nothing watching, then flowscope, softflowd and pmacctd, back to back.
#
# Two network namespaces joined by a veth pair (198.19.254.1 and .2, inside
# 198.18.0.0/15; nothing leaves them). `flowscope-load` opens RATE
# connections per second for SECONDS from the client namespace to an echo
# server in the other (connect, send BYTES, read them back, close), once per
# tool:
#   none:      nothing runs;
#   flowscope: `flowscope run` (ebpf receiver, 10 s interval, file exporter);
#              its eBPF programs' run_time_ns (kernel.bpf_stats_enabled)
#              counts as its kernel-side CPU, beside its process's stime;
#   softflowd: Debian's softflowd capturing on the server's veth (libpcap,
#              AF_PACKET), exporting NetFlow v9 to nfdump's nfcapd in the
#              same namespace; flow timeouts shortened (tcp.fin, tcp.rst
#              1 s, expiry checked every second) and 200,000 flows allowed
#              so that closed connections are exported during the run (its
#              own statistics go to OUT/softflowd-statistics.txt);
#   pmacctd:   Debian's pmacctd capturing on the same veth, aggregating by
#              5-tuple into its print plugin (CSV every 5 s).
# Per tool: user and kernel CPU of its processes (utime, stime over the
# window, children included) per connection, the load's own CPU (client
# getrusage + server), the load's connect-to-close latency p50/p99, the
# tool's memory (VmHWM of its processes; flowscope: RSS plus its eBPF maps)
# and how many of the connections it counted:
#   flowscope: flowscope.tcp.connection.closed of the sockets whose peer is
#              in the pair, halved (both ends of a connection are here);
#   softflowd: NetFlow records client -> server port PORT that nfdump reads;
#   pmacctd:   CSV rows client -> server port PORT (its 5-tuple aggregate:
#              a client port reused within one print interval is one row).
# The AF_PACKET copies softflowd and pmacctd need are made in the load's
# own syscalls and softirqs, so they show in the load's CPU, not the
# tool's. Results: target/bench/peers.json and target/bench/peers.txt (or
# --out DIR). This measures; it asserts nothing.
#
# usage: scripts/bench-peers.sh [--seconds N] [--rate N] [--bytes N] [--rounds N]
#                               [--tools "none flowscope softflowd pmacctd"]
#                               [--no-build] [--bin DIR] [--out DIR]
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
source "$(dirname "$0")/bench-common.sh"
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_EACH=20
RATE=10000
BYTES=100
ROUNDS=1
TOOLS="none flowscope softflowd pmacctd"
BUILD=1
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$ROOT/target/bench
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --bytes) BYTES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --bin) BIN=$(cd "$2" && pwd); BUILD=0; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "bench-peers.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

mkdir -p "$OUT"
COMMIT=$(bench_commit)
if [ "$BUILD" = 1 ]; then
  scripts/bootstrap.sh
  cargo build --release --bin flowscope
  cargo build --release -p flowscope-integration --bin flowscope-load
fi
for b in flowscope flowscope-load; do
  [ -x "$BIN/$b" ] || { echo "bench-peers.sh: $BIN/$b is missing (run without --no-build)" >&2; exit 1; }
done
# The peers, from Debian's packages (nfdump brings nfcapd).
missing=
command -v softflowd > /dev/null || missing="$missing softflowd"
command -v pmacctd > /dev/null || missing="$missing pmacct"
command -v nfcapd > /dev/null || missing="$missing nfdump"
command -v jq > /dev/null || missing="$missing jq"
command -v bpftool > /dev/null || missing="$missing bpftool"
if [ -n "$missing" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi

CNS=fspeer-c-$$
SNS=fspeer-s-$$
TAG=fsp$$
CIP=198.19.254.1
SIP=198.19.254.2
PORT=7000
NF_PORT=2055
TMP=$(mktemp -d /tmp/fspeers.XXXXXX)
SERVER_PID=
AGENT_PID=
TOOL_PIDS=
BPF_STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo)

cleanup() { bench_cleanup $TOOL_PIDS "$AGENT_PID" "$SERVER_PID"; }
trap cleanup EXIT INT TERM

bench_pair "$CNS" "$SNS" "$CIP" "$SIP" "$TAG"
IFACE=$TAG-s
if [ -n "$BPF_STATS_WAS" ]; then
  sysctl -qw kernel.bpf_stats_enabled=1
fi


# The processes of a tool: the given pids and their children (pmacctd runs
# its plugin as a child).
tool_pids() {
  local p
  for p in "$@"; do
    echo "$p"
    cat /proc/"$p"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true
  done | sort -un
}

# "utime stime" in clock ticks summed over pids, children that exited and
# were waited for included (cutime, cstime).
ticks_of() {
  local p
  for p in "$@"; do
    sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $14, $13 + $15 }' || true
  done | awk '{ u += $1; s += $2 } END { printf "%d %d\n", u, s }'
}

# Peak RSS (VmHWM, KiB) summed over pids.
hwm_of() {
  local p
  for p in "$@"; do
    awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true
  done | awk '{ s += $1 } END { printf "%d\n", s }'
}

# eBPF run time (ns) of the programs a process holds, summed.
bpf_ns_of() {
  local pid=$1 fd ids id total=0 ns
  ids=$(for fd in /proc/"$pid"/fdinfo/*; do
          awk '/^prog_id:/ { print $2 }' "$fd" 2>/dev/null || true
        done | sort -un)
  for id in $ids; do
    ns=$(bpftool prog show id "$id" --json 2>/dev/null | jq -r '.run_time_ns // 0')
    total=$((total + ns))
  done
  echo "$total"
}

# Memory of a process's eBPF maps (bytes_memlock), KiB.
maps_kib_of() {
  local pid=$1 fd ids id
  ids=$(for fd in /proc/"$pid"/fdinfo/*; do
          awk '/^map_id:/ { print $2 }' "$fd" 2>/dev/null || true
        done | sort -un)
  for id in $ids; do
    bpftool map show id "$id" --json 2>/dev/null | jq -r '.bytes_memlock // 0'
  done | awk '{ s += $1 } END { printf "%d\n", s / 1024 }'
}

start_tool() {
  local tool=$1
  TOOL_PIDS=
  case "$tool" in
    none) ;;
    flowscope)
      agent_start bench-peers.sh 10s running
      TOOL_PIDS=$AGENT_PID
      AGENT_PID=
      ;;
    softflowd)
      mkdir -p "$TMP/nf"
      rm -rf "$TMP/nf"/*
      ip netns exec "$SNS" nfcapd -w "$TMP/nf" -b 127.0.0.1 -p "$NF_PORT" -t 3600 \
        > "$TMP/nfcapd.log" 2>&1 &
      local nf=$!
      ip netns exec "$SNS" softflowd -d -i "$IFACE" -n "127.0.0.1:$NF_PORT" -v 9 \
        -m 200000 -t tcp.fin=1 -t tcp.rst=1 -t maxlife=30 -t expint=1 -c "$TMP/softflowd.ctl" \
        > "$TMP/softflowd.log" 2>&1 &
      TOOL_PIDS="$! $nf"
      ;;
    pmacctd)
      mkdir -p "$TMP/pm"
      rm -rf "$TMP/pm"/*
      {
        echo "daemonize: false"
        echo "pcap_interface: $IFACE"
        echo "aggregate: src_host, dst_host, src_port, dst_port, proto"
        echo "plugins: print"
        echo "print_output: csv"
        echo "print_refresh_time: 5"
        echo "print_output_file: $TMP/pm/flows-%s.csv"
      } > "$TMP/pmacctd.conf"
      ip netns exec "$SNS" pmacctd -f "$TMP/pmacctd.conf" > "$TMP/pmacctd.log" 2>&1 &
      TOOL_PIDS=$!
      ;;
  esac
  # Let capture sockets open and the agent settle before the window.
  [ "$tool" = none ] || sleep 2
}

# Stops the tool (each writes what it holds on a clean stop), waits until
# every one of its processes is gone, and sets COUNTED to how many
# connections it counted. Runs in this shell, not a subshell: `wait` only
# waits for this shell's own children.
stop_tool() {
  local tool=$1 p all
  all=$(tool_pids $TOOL_PIDS)
  case "$tool" in
    none) COUNTED=null; return ;;
    flowscope)
      AGENT_PID=$TOOL_PIDS
      agent_stop
      ;;
    softflowd)
      # Its own account (flows seen and exported, packets the capture
      # dropped) for the record, then `shutdown`: expire and export every
      # flow, and exit.
      ip netns exec "$SNS" softflowctl -c "$TMP/softflowd.ctl" statistics \
        > "$OUT/softflowd-statistics.txt" 2>&1 || true
      ip netns exec "$SNS" softflowctl -c "$TMP/softflowd.ctl" shutdown > /dev/null 2>&1 || true
      set -- $TOOL_PIDS
      for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
      kill -INT "$1" 2>/dev/null || true
      wait "$1" 2>/dev/null || true
      sleep 1
      kill -TERM "$2" 2>/dev/null || true
      wait "$2" 2>/dev/null || true
      ;;
    pmacctd)
      # SIGINT: the print plugin writes its cache out before exiting.
      kill -INT $TOOL_PIDS 2>/dev/null || true
      for p in $TOOL_PIDS; do wait "$p" 2>/dev/null || true; done
      ;;
  esac
  for p in $all; do
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  done
  TOOL_PIDS=
  COUNTED=$(case "$tool" in
    flowscope)
      # Both ends of every connection are on this host and each socket
      # closes once: half the closed sockets whose peer is in the pair.
      jq -s --arg p "${SIP%.*}." '
        [ .[] | .resourceMetrics[]? | .scopeMetrics[]? | .metrics[]?
          | select(.name == "flowscope.tcp.connection.closed") | .sum.dataPoints[]?
          | select(any(.attributes[]?; .key == "network.peer.address"
                                       and (.value.stringValue // "" | startswith($p))))
          | ((.asInt // .asDouble // 0) | tonumber) ] | (add // 0) / 2 | floor' "$TMP/metrics.jsonl"
      ;;
    softflowd)
      nfdump -R "$TMP/nf" -q -o "fmt:%sa %da %dp" "proto tcp and src ip $CIP and dst port $PORT" 2>/dev/null \
        | grep -c "$CIP" || true
      ;;
    pmacctd)
      cat "$TMP/pm"/*.csv 2>/dev/null | grep -c "^$CIP,$SIP,[0-9]*,$PORT," || true
      ;;
  esac)
}

RUNS=()
SUMMARY=()

measure() {
  local tool=$1 round=$2
  load_server_start bench-peers.sh
  start_tool "$tool"
  local pids t0 t1 srv0 srv1 u0 s0 u1 s1 bpf0=0 bpf1=0 hwm=0 maps=0
  pids=$(tool_pids $TOOL_PIDS)
  t0=$(date +%s.%N)
  read -r u0 s0 < <(ticks_of $pids)
  [ "$tool" = flowscope ] && bpf0=$(bpf_ns_of "$TOOL_PIDS")
  srv0=$(proc_ticks "$SERVER_PID")
  local load
  load=$(ip netns exec "$CNS" "$BIN/flowscope-load" client "$SIP:$PORT" "$RATE" "$SECONDS_EACH" "$BYTES")
  t1=$(date +%s.%N)
  pids=$(tool_pids $TOOL_PIDS)
  read -r u1 s1 < <(ticks_of $pids)
  if [ "$tool" = flowscope ]; then
    if [ "$(sysctl -n kernel.bpf_stats_enabled)" != 1 ]; then
      echo "bench-peers.sh: warning: another process turned kernel.bpf_stats_enabled off during the window; flowscope's eBPF figure is short" >&2
    fi
    bpf1=$(bpf_ns_of "$TOOL_PIDS")
    maps=$(maps_kib_of "$TOOL_PIDS")
  fi
  srv1=$(proc_ticks "$SERVER_PID")
  [ -n "$pids" ] && hwm=$(hwm_of $pids)
  local counted
  stop_tool "$tool"
  counted=$COUNTED
  load_server_stop
  local window completed load_cpu user_us kern_us bpf_us mem_kib
  window=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  completed=$(echo "$load" | jq -r .completed)
  load_cpu=$(awk -v c="$(echo "$load" | jq -r .cpu_seconds)" -v d="$((srv1 - srv0))" \
    -v w="$window" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", 100 * (c + d / hz) / w }')
  user_us=$(awk -v t="$((u1 - u0))" -v n="$completed" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", n ? 1e6 * t / hz / n : 0 }')
  bpf_us=$(awk -v t="$((bpf1 - bpf0))" -v n="$completed" 'BEGIN { printf "%.2f", n ? t / 1e3 / n : 0 }')
  kern_us=$(awk -v t="$((s1 - s0))" -v b="$bpf_us" -v n="$completed" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (n ? 1e6 * t / hz / n : 0) + b }')
  mem_kib=$((hwm + maps))
  RUNS+=("$(printf '{"tool":"%s","round":%s,"window_seconds":%s,"load":%s,"load_cpu_pct_of_one_core":%s,"tool_user_ticks":%s,"tool_system_ticks":%s,"ebpf_run_time_ns":%s,"user_us_per_connection":%s,"kernel_us_per_connection":%s,"ebpf_us_per_connection":%s,"memory_kib":%s,"maps_kib":%s,"connections_counted":%s}' \
    "$tool" "$round" "$window" "$load" "$load_cpu" "$((u1 - u0))" "$((s1 - s0))" "$((bpf1 - bpf0))" "$user_us" "$kern_us" "$bpf_us" "$mem_kib" "$maps" "$counted")")
  SUMMARY+=("$(printf '| %s | %s | %s | %s | %s %% | %s / %s | %s | %s |' \
    "$tool" "$(echo "$load" | jq -r .completed)" \
    "$([ "$tool" = none ] && echo - || echo "$user_us")" \
    "$([ "$tool" = none ] && echo - || echo "$kern_us$([ "$tool" = flowscope ] && echo " (eBPF $bpf_us)")")" \
    "$load_cpu" "$(echo "$load" | jq -r .latency_us_p50)" "$(echo "$load" | jq -r .latency_us_p99)" \
    "$([ "$tool" = none ] && echo - || awk -v k="$mem_kib" 'BEGIN { printf "%.1f MiB", k / 1024 }')" \
    "$([ "$tool" = none ] && echo - || echo "$counted")")")
}

for round in $(seq "$ROUNDS"); do
  for tool in $TOOLS; do
    measure "$tool" "$round"
  done
done

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
  printf '{"benchmark":"scripts/bench-peers.sh","date":"%s","kernel":"%s","cpus":%s,"cpu_model":"%s",' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -r)" "$(nproc)" "$CPU_MODEL"
  printf '"commit":"%s","rate":%s,"seconds_each":%s,"bytes_each_way":%s,"versions":{"softflowd":"%s","pmacctd":"%s","nfdump":"%s"},"runs":[' \
    "$COMMIT" "$RATE" "$SECONDS_EACH" "$BYTES" \
    "$(dpkg-query -W -f '${Version}' softflowd 2>/dev/null)" "$(dpkg-query -W -f '${Version}' pmacct 2>/dev/null)" \
    "$(dpkg-query -W -f '${Version}' nfdump 2>/dev/null)"
  (IFS=,; printf '%s' "${RUNS[*]}")
  printf ']}\n'
} > "$OUT/peers.json"

{
  echo "flowscope beside softflowd and pmacctd, $(date -u +%Y-%m-%d), kernel $(uname -r), $(nproc) CPUs ($CPU_MODEL)"
  echo "build $COMMIT; $RATE connections/s asked, $SECONDS_EACH s per tool, $BYTES bytes each way"
  echo "user/kernel: the tool's processes' utime/stime per connection, us (flowscope's kernel side adds its eBPF run time);"
  echo "load: client+server CPU, % of one core; latency: connect to close, us; memory: VmHWM (+ eBPF maps)"
  echo
  echo "| tool | connections | user us/conn | kernel us/conn | load CPU | latency p50 / p99 us | memory | connections counted |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${SUMMARY[@]}"
  echo "(details: $OUT/peers.json)"
} | tee "$OUT/peers.txt"
