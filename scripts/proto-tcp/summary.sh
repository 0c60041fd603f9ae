#!/usr/bin/env bash
# One line per run directory: label, commit, end time, loadavg, per-program ns/run runs/conn, totals.
for d in "$@"; do
  j=$d/load.json
  jq -r --arg d "$(basename $d)" '
    .commit as $c | .hooks as $h | .runs[0] as $r |
    ($r.agent_stats.kernel.programs | map(select(.runs > 0)) | map("\(.name)=\(.ns_per_run)ns x\(.runs_per_connection)") | join(" ")) as $p |
    ($r.agent_stats.floor.programs | map(select(.runs > 0)) | map("\(.name)=\(.ns_per_run)") | join(" ")) as $f |
    "\($d) \($c) \($h) load=\($r.loadavg_1m_before) conns=\($r.load.completed) failed=\($r.load.failed) | \($p) | flow_us=\($r.agent_stats.kernel.flow_us_per_connection) floor_flow_us=\($r.agent_stats.floor.flow_us_per_connection) flow_x=\($r.agent_stats.flow_agent_to_floor) all_us=\($r.agent_stats.kernel.us_per_connection) floor_all=\($r.agent_stats.floor.us_per_connection) x=\($r.agent_stats.agent_to_floor) drop_ns=\($r.agent_stats.kernel.drops_ns_per_run) ev/conn=\(($r.agent_stats.events_received / $r.load.completed * 1000 | round) / 1000) closed=\($r.agent_stats.tcp_closed_reported) lost=\($r.agent_stats.events_lost) | floor: \($f)"' "$j"
  ls -la --time-style=+%T $j | awk '{print "  json written", $6}'
done
