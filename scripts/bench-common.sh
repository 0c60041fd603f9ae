# Shared by the benchmark scripts (sourced, not run): the two-namespace
# veth pair they load, a process's CPU ticks, a free loopback port and the
# wait for a server to go idle.

# bench_pair CLIENT_NS SERVER_NS CLIENT_IP SERVER_IP TAG: two network
# namespaces joined by a veth pair (interfaces TAG-c and TAG-s, /24
# addresses), loopback up, with per-namespace sysctls so 10,000 closes/s
# do not run the client out of ports (its side holds TIME_WAIT) and
# bursts are not dropped at the listener. Nothing outside them changes.
bench_pair() {
  local cns=$1 sns=$2 cip=$3 sip=$4 tag=$5
  ip netns add "$cns"
  ip netns add "$sns"
  ip link add "$tag-c" type veth peer name "$tag-s"
  ip link set "$tag-c" netns "$cns"
  ip link set "$tag-s" netns "$sns"
  ip -n "$cns" addr add "$cip/24" dev "$tag-c"
  ip -n "$sns" addr add "$sip/24" dev "$tag-s"
  for ns in "$cns" "$sns"; do ip -n "$ns" link set lo up; done
  ip -n "$cns" link set "$tag-c" up
  ip -n "$sns" link set "$tag-s" up
  ip netns exec "$cns" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
  ip netns exec "$sns" sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
}

CLK_TCK=$(getconf CLK_TCK)

# utime+stime of a process, in clock ticks (fields after the comm).
proc_ticks() {
  sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_idle PID NAME: returns once the process used under 0.1 s of CPU in
# 2 s (a storage compacting or merging what was just loaded shares the
# cores with whatever is measured next); after 10 minutes says so, naming
# NAME (the calling script), and returns.
wait_idle() {
  local before after
  for _ in $(seq 300); do
    before=$(proc_ticks "$1")
    sleep 2
    after=$(proc_ticks "$1")
    [ $(( (after - before) * 10 )) -lt "$CLK_TCK" ] && return 0
  done
  echo "$2: process $1 stayed busy for 10 minutes; measuring anyway" >&2
}

# agent_start NAME INTERVAL READY [RECEIVER_LINE]: runs $BIN/flowscope with
# the ebpf receiver (collection_interval INTERVAL, plus RECEIVER_LINE, e.g.
# "nat: {}") and a file exporter to $TMP/metrics.jsonl, logging to
# $TMP/agent.log; returns once the log matches the extended regex READY,
# or exits naming NAME (the calling script) with the log if the agent
# stops or 60 s pass. Sets AGENT_PID.
agent_start() {
  local name=$1 interval=$2 ready=$3 extra=${4:-}
  {
    printf 'receivers:\n  ebpf:\n    collection_interval: %s\n' "$interval"
    [ -n "$extra" ] && printf '    %s\n' "$extra"
    printf 'exporters:\n  file:\n    path: %s\n' "$TMP/metrics.jsonl"
    printf 'service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n'
  } > "$TMP/agent.yaml"
  rm -f "$TMP/metrics.jsonl"
  RUST_LOG=info "$BIN/flowscope" run --config "$TMP/agent.yaml" > /dev/null 2> "$TMP/agent.log" &
  AGENT_PID=$!
  for _ in $(seq 600); do
    grep -Eq "$ready" "$TMP/agent.log" 2>/dev/null && return 0
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name: agent did not start:" >&2
  cat "$TMP/agent.log" >&2
  exit 1
}

# agent_stop: SIGTERM (the agent flushes its last interval), then waits.
agent_stop() {
  kill -TERM "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
  AGENT_PID=
}

# load_server_start NAME [KIND]: the echo server of `flowscope-load`
# (KIND "udp-" for the UDP one) in $SNS at $SIP:$PORT, 4 threads, output in
# $TMP/server.*; returns once it listens, or exits naming NAME (the calling
# script). Sets SERVER_PID.
load_server_start() {
  local name=$1 kind=${2:-}
  ip netns exec "$SNS" "$BIN/flowscope-load" "${kind}server" "$SIP:$PORT" 4 > "$TMP/server.out" 2> "$TMP/server.err" &
  SERVER_PID=$!
  bench_await "$SERVER_PID" "$TMP/server" listening "$name: the server"
}

# load_server_stop: stops the server load_server_start started.
load_server_stop() {
  bench_stop "$SERVER_PID"
  SERVER_PID=
}

# bench_await PID BASE WORD WHAT: waits up to 10 s for process PID to print
# WORD into BASE.out; if it does not (or dies first), says so with BASE.err
# and exits.
bench_await() {
  local pid=$1 base=$2 word=$3 what=$4
  for _ in $(seq 200); do
    grep -q "$word" "$base.out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$what did not start: $(cat "$base.err" 2>/dev/null)" >&2
  exit 1
}

# bench_stop PID: stops a process this script started (none: nothing).
bench_stop() {
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# bench_cleanup PID...: what every benchmark's exit trap does: stops the
# given processes (empty arguments are skipped), puts
# kernel.bpf_stats_enabled back when the script saved it in BPF_STATS_WAS,
# and deletes the two namespaces ($CNS, $SNS) and $TMP.
bench_cleanup() {
  local p
  for p in "$@"; do
    bench_stop "$p"
  done
  if [ -n "${BPF_STATS_WAS:-}" ]; then
    sysctl -qw kernel.bpf_stats_enabled="$BPF_STATS_WAS" || true
  fi
  ip netns del "$CNS" 2>/dev/null || true
  ip netns del "$SNS" 2>/dev/null || true
  rm -rf "$TMP"
}

# bench_commit: the git commit of the binaries in $BIN (the worktree they
# were built in), with "+dirty" when that tree has uncommitted changes, or
# "unknown".
bench_commit() {
  local c
  c=$(git -C "$BIN" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ "$c" != unknown ] && ! git -C "$BIN" diff --quiet HEAD 2>/dev/null; then
    c="$c+dirty"
  fi
  echo "$c"
}
