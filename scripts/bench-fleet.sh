#!/usr/bin/env bash
# The fleet view's query times: NODES simulated nodes x 2,000 series each
# (scripts/fleet-series.py, an hour of samples, backfilled into a fresh
# Prometheus with promtool), then `flowscope ui --prometheus` asked for the
# Map, Analytics and Health APIs over the last hour, ROUNDS times each;
# prints p50 and p95 per API, first over the raw series, then with the
# recording rules of deploy/prometheus/flowscope-fleet-rules.yaml
# backfilled over the same hour (promtool tsdb create-blocks-from rules).
#
# --engine victoriametrics does the same with VictoriaMetrics: the series
# imported through its Prometheus text import, the rules replayed by
# vmalert (-replay.timeFrom/-replay.timeTo; its range queries step by
# -datasource.queryStep, 5m unless set to the rules' 1m), its rollup cache
# off so that every round is computed. Either way the script checks that
# the rules' bytes over the hour are the raw series' exact increase.
# Nothing leaves loopback.
#
# Usage: scripts/bench-fleet.sh [--nodes 100] [--rounds 20] [--step 60]
#        [--max-series 1000000] [--engine prometheus|victoriametrics]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh

nodes=100 rounds=20 step=60 max_series=1000000 engine=prometheus
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --step) step=$2; shift 2 ;;
    --max-series) max_series=$2; shift 2 ;;
    --engine) engine=$2; shift 2 ;;
    *) echo "bench-fleet: unknown argument $1" >&2; exit 2 ;;
  esac
done

case "$engine" in
  prometheus) needs="prometheus promtool" ;;
  victoriametrics) needs="victoria-metrics vmalert" ;;
  *) echo "bench-fleet: --engine is prometheus or victoriametrics, not $engine" >&2; exit 2 ;;
esac
for tool in $needs; do
  command -v "$tool" >/dev/null || {
    echo "bench-fleet: needs $tool (scripts/bootstrap.sh --test)" >&2
    exit 1
  }
done
cargo build --release --locked --bin flowscope >/dev/null
BIN=target/release/flowscope
TMP=$(mktemp -d)
cleanup() {
  [ -n "${UI_PID:-}" ] && kill "$UI_PID" 2>/dev/null || true
  [ -n "${STORE_PID:-}" ] && kill "$STORE_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT


# The newest sample a minute ago, so the last hour is all history.
end=$(( $(date +%s) - 60 ))
sport=$(free_port)
# Waits until the storage is idle: after a start Prometheus compacts the
# backfilled blocks (the rules' blocks overlap the raw block's hour, which
# it merges), VictoriaMetrics merges the imported parts, and requests
# measured during that share the two cores with it.
settle() { wait_idle "$STORE_PID" bench-fleet; }
wait_ready() {
  for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$sport/$1" >/dev/null && return 0
    sleep 0.1
  done
  echo "bench-fleet: $engine did not start" >&2
  exit 1
}
prom_start() {
  prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/data" \
    --storage.tsdb.retention.time=30d --web.listen-address="127.0.0.1:$sport" \
    >>"$TMP/prometheus.log" 2>&1 &
  STORE_PID=$!
  wait_ready -/ready
}

echo "bench-fleet: generating $nodes nodes x 2000 series, 1 h at ${step}s" >&2
if [ "$engine" = prometheus ]; then
  python3 scripts/fleet-series.py "$nodes" 1 "$step" "$end" > "$TMP/fleet.om"
  mkdir -p "$TMP/data"
  promtool tsdb create-blocks-from openmetrics "$TMP/fleet.om" "$TMP/data" >/dev/null
  rm -f "$TMP/fleet.om"
  printf 'global:\n  scrape_interval: 1h\n' > "$TMP/prometheus.yml"
  prom_start
else
  victoria-metrics -storageDataPath="$TMP/data" -httpListenAddr="127.0.0.1:$sport" \
    -retentionPeriod=30d -search.disableCache -search.maxUniqueTimeseries="$max_series" -search.maxSeries="$max_series" \
    -maxInsertRequestSize=1073741824 \
    >>"$TMP/victoria-metrics.log" 2>&1 &
  STORE_PID=$!
  wait_ready health
  # Prometheus text wants milliseconds; streamed, as the file is GBs.
  python3 scripts/fleet-series.py "$nodes" 1 "$step" "$end" |
    sed -E '/^#/d; s/ ([0-9]+)$/ \1000/' |
    curl -sf -X POST -T - "http://127.0.0.1:$sport/api/v1/import/prometheus"
  curl -sf "http://127.0.0.1:$sport/internal/force_flush" >/dev/null
fi
settle
series=$(curl -s "http://127.0.0.1:$sport/api/v1/query" \
  --data-urlencode 'query=count({__name__=~"network_flow_io_bytes_total|flowscope_.*"})' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')
echo "bench-fleet: $engine holds $series series" >&2

uport=$(free_port)
"$BIN" ui --prometheus "http://127.0.0.1:$sport" --endpoint "127.0.0.1:$uport" \
  --max-series "$max_series" --query-timeout 60 >"$TMP/ui.log" 2>&1 &
UI_PID=$!
for _ in $(seq 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$uport/map" && break
  sleep 0.1
done

measure() {
  local label=$1
  for api in map analytics health; do
    times=()
    status=0
    for _ in $(seq "$rounds"); do
      out=$(curl -s -o "$TMP/answer.json" -w '%{http_code} %{time_total}' \
        "http://127.0.0.1:$uport/api/$api?range=1h")
      status=${out% *}
      times+=("${out#* }")
    done
    rows=$(python3 -c 'import json,sys
j=json.load(open(sys.argv[1]))
print(len(j.get("rows", j.get("edges", j.get("findings", [])))))' "$TMP/answer.json" 2>/dev/null || echo "-")
    printf '%s\n' "${times[@]}" | sort -g | awk -v api="$api" -v st="$status" -v rows="$rows" -v label="$label" \
      '{ t[NR] = $1 } END { p50 = t[int((NR + 1) * 0.5)]; i95 = int(NR * 0.95 + 0.999); if (i95 > NR) i95 = NR; printf "%s\t%s\t%s\t%s\t%s\t%s\n", label, api, p50, t[i95], st, rows }'
  done
}

printf 'series\tapi\tp50_s\tp95_s\tstatus\trows\n'
measure raw

# The recording rules over the same hour, then the same requests.
echo "bench-fleet: backfilling the recording rules" >&2
if [ "$engine" = prometheus ]; then
  promtool tsdb create-blocks-from rules --start "$(( end - 3600 ))" --end "$(( end + 60 ))" \
    --url "http://127.0.0.1:$sport" --output-dir "$TMP/rules-data" \
    deploy/prometheus/flowscope-fleet-rules.yaml >/dev/null
  kill "$STORE_PID"; wait "$STORE_PID" 2>/dev/null || true
  mv "$TMP"/rules-data/*/ "$TMP/data/"
  prom_start
else
  vmalert -rule=deploy/prometheus/flowscope-fleet-rules.yaml \
    -datasource.url="http://127.0.0.1:$sport" -remoteWrite.url="http://127.0.0.1:$sport" \
    -replay.timeFrom="$(date -u -d "@$(( end - 3600 ))" +%Y-%m-%dT%H:%M:%SZ)" \
    -replay.timeTo="$(date -u -d "@$end" +%Y-%m-%dT%H:%M:%SZ)" \
    -datasource.queryStep=1m -replay.disableProgressBar -remoteWrite.maxQueueSize=10000000 \
    >>"$TMP/vmalert.log" 2>&1 || {
    tail -3 "$TMP/vmalert.log" >&2
    exit 1
  }
  # A write that failed five times is dropped, and vmalert goes on.
  if grep -q 'dropping' "$TMP/vmalert.log"; then
    grep -m3 'failed' "$TMP/vmalert.log" >&2
    exit 1
  fi
  curl -sf "http://127.0.0.1:$sport/internal/force_flush" >/dev/null
fi
settle
rules=$(curl -s "http://127.0.0.1:$sport/api/v1/series" \
  --data-urlencode 'match[]={__name__=~"flowscope:.*"}' \
  --data-urlencode "start=$(( end - 3600 ))" --data-urlencode "end=$(( end + 60 ))" |
  python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
echo "bench-fleet: $engine holds $rules recording rule series" >&2
total() {
  curl -s "http://127.0.0.1:$sport/api/v1/query" --data-urlencode "query=$2" \
    --data-urlencode "time=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)'
}
# A rule evaluated at minute t records the minute before it, and the
# engines put their evaluations anywhere in the minute: the rules' sum is
# read a minute after the last sample, over a minute more.
x=network_flow_io_bytes_total
raw_bytes=$(total "$end" "sum(((last_over_time($x[1h]) - $x offset 1h) >= 0) or last_over_time($x[1h]))")
rule_bytes=$(total "$(( end + 60 ))" "sum(sum_over_time(flowscope:$x:increase1m[3660s]))")
if [ "$raw_bytes" != "$rule_bytes" ]; then
  echo "bench-fleet: the rules hold $rule_bytes bytes over the hour, the raw series $raw_bytes" >&2
  exit 1
fi
measure rules
