#!/usr/bin/env bash
# Two builds of the fleet view compared back to back: one Prometheus and
# one VictoriaMetrics, each holding the same NODES simulated nodes (100
# unless set: 200,000 series; scripts/fleet-series.py, one hour), and four
# `flowscope ui --prometheus` (each build over each engine) asked for the
# same fixed hour (`from`/`to`) in turn, after one warm-up request each,
# ROUNDS times per API. Prints one row per request (wall time by curl, the
# storage's and the UI's CPU from /proc, the answer's size and hash: the
# two builds' answers should be the same bytes) and then the p50, p95 and
# median CPU per API, engine and build. Run it alone on the machine.
#
# Usage: scripts/bench-fleet-ab.sh BIN_A BIN_B ROUNDS API...
#   e.g. scripts/bench-fleet-ab.sh old/flowscope target/release/flowscope 7 health map
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=$3; shift 3; APIS=("$@")
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
for tool in prometheus promtool victoria-metrics; do
  command -v "$tool" >/dev/null || { echo "bench-fleet-ab: needs $tool (scripts/bootstrap.sh --test)" >&2; exit 1; }
done
TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
end=$(( $(date +%s) - 60 ))
from=$(( end - 3600 ))
pp=$(free_port); vp=$(free_port)
python3 scripts/fleet-series.py "${NODES:-100}" 1 60 "$end" > "$TMP/fleet.om"
mkdir -p "$TMP/pdata" "$TMP/vdata"
promtool tsdb create-blocks-from openmetrics "$TMP/fleet.om" "$TMP/pdata" >/dev/null
printf 'global:\n  scrape_interval: 1h\n' > "$TMP/prometheus.yml"
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/pdata" \
  --storage.tsdb.retention.time=30d --web.listen-address="127.0.0.1:$pp" >"$TMP/prom.log" 2>&1 &
PROM=$!; pids+=($PROM)
victoria-metrics -storageDataPath="$TMP/vdata" -httpListenAddr="127.0.0.1:$vp" -retentionPeriod=30d \
  -search.disableCache -search.maxUniqueTimeseries=1000000 -maxInsertRequestSize=1073741824 >"$TMP/vm.log" 2>&1 &
VM=$!; pids+=($VM)
until curl -sf "http://127.0.0.1:$vp/health" >/dev/null; do sleep 0.2; done
sed -E '/^#/d; s/ ([0-9]+)$/ \1000/' "$TMP/fleet.om" | curl -sf -X POST -T - "http://127.0.0.1:$vp/api/v1/import/prometheus"
curl -sf "http://127.0.0.1:$vp/internal/force_flush" >/dev/null
rm -f "$TMP/fleet.om"
until curl -sf "http://127.0.0.1:$pp/-/ready" >/dev/null; do sleep 0.2; done
wait_idle $PROM bench-fleet-ab; wait_idle $VM bench-fleet-ab
declare -A UIPORT UIPID STPID
for eng in prom vm; do
  for build in A B; do
    bin=${!build}
    port=$(free_port)
    sp=$pp; [ $eng = vm ] && sp=$vp
    "$bin" ui --prometheus "http://127.0.0.1:$sp" --endpoint "127.0.0.1:$port" --max-series 1000000 --query-timeout 60 >"$TMP/ui-$eng-$build.log" 2>&1 &
    UIPID[$eng$build]=$!; pids+=($!)
    UIPORT[$eng$build]=$port
  done
done
STPID[prom]=$PROM; STPID[vm]=$VM
for k in "${!UIPORT[@]}"; do until curl -sf -o /dev/null "http://127.0.0.1:${UIPORT[$k]}/map"; do sleep 0.1; done; done
exec 3>&1 1>"$TMP/rows.tsv"
printf 'engine\tbuild\tapi\tround\twall_s\tstorage_cpu_s\tui_cpu_s\tbytes\tsha\n'
for api in "${APIS[@]}"; do
  q="/api/$api?from=$from&to=$end"
  for eng in prom vm; do for build in A B; do curl -s -o /dev/null "http://127.0.0.1:${UIPORT[$eng$build]}$q"; done; done
  for r in $(seq "$ROUNDS"); do
    for eng in prom vm; do for build in A B; do
      k=$eng$build
      s0=$(proc_ticks ${STPID[$eng]}); u0=$(proc_ticks ${UIPID[$k]})
      out=$(curl -s -o "$TMP/ans" -w '%{time_total}' "http://127.0.0.1:${UIPORT[$k]}$q")
      s1=$(proc_ticks ${STPID[$eng]}); u1=$(proc_ticks ${UIPID[$k]})
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $eng $build $api $r "$out" \
        "$(awk -v a="$s0" -v b="$s1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')" \
        "$(awk -v a="$u0" -v b="$u1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')" \
        "$(stat -c %s "$TMP/ans")" "$(sha256sum "$TMP/ans" | cut -c1-12)"
    done; done
  done
done
exec 1>&3
cat "$TMP/rows.tsv"
echo
python3 - "$TMP/rows.tsv" <<'PY'
import collections, math, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
g = collections.defaultdict(list)
for eng, build, api, _, wall, st, ui, size, sha in rows:
    g[(api, eng, build)].append((float(wall), float(st), float(ui), size + " " + sha))
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, math.ceil(p * len(v)) - 1)]
print("api\tengine\tbuild\tp50_s\tp95_s\tstorage_cpu_s\tui_cpu_s\tanswers")
for (api, eng, build), v in sorted(g.items()):
    w = [x[0] for x in v]
    # Every round of both builds should give the same bytes.
    both = {x[3] for b in ("A", "B") for x in g[(api, eng, b)]}
    print(f"{api}\t{eng}\t{build}\t{q(w, .5):.2f}\t{q(w, .95):.2f}\t"
          f"{statistics.median(x[1] for x in v):.2f}\t{statistics.median(x[2] for x in v):.2f}\t"
          + ("same in every round of both builds" if len(both) == 1 else f"{len(both)} different answers"))
PY
