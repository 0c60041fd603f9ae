#!/usr/bin/env bash
# Cost of one read of the open-socket iterator (receiver/src/open_tcp,
# issue 24) with N connections open in one network namespace (2N sockets,
# 127.0.0.1 only), from receiver/examples/open_tcp_cost.rs: wall and CPU
# time per read, and the iter/tcp program's own run time from the
# kernel's bpf_stats (bpftool).
#
#   scripts/bench-open-tcp.sh [--conns N] [--rounds R]
#
# Needs root, ip and bpftool; builds the example in release mode first
# (run the build under the shared lock, the measurement under the
# exclusive one, see docs/benchmarks.md). Restores
# kernel.bpf_stats_enabled.
set -euo pipefail
CONNS=10000 ROUNDS=20
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) CONNS=$2; shift 2;;
    --rounds) ROUNDS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/open_tcp_cost
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release -p flowscope-receiver --example open_tcp_cost" >&2; exit 2; }
NS=fsotcp$$ EMPTY=fsotcpe$$
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  ip netns del $NS 2>/dev/null || true
  ip netns del $EMPTY 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"
}
trap cleanup EXIT
ip netns add $NS; ip netns add $EMPTY
ip -n $NS link set lo up
sysctl -qw kernel.bpf_stats_enabled=1
echo "kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ)"
echo "tcp_ehash_entries $(sysctl -n net.ipv4.tcp_ehash_entries)"
echo "host_tcp_sockets $(ss -Htan | wc -l)"
ip netns exec $NS "$BIN" "$CONNS" "$ROUNDS" /run/netns/$EMPTY
echo "end $(date -u +%FT%TZ)"
