#!/usr/bin/env bash
# table.sh RUNDIR (pairs.sh output dirs, LABEL-HHMMSS)...: one markdown row per run, in run order
for d in $(ls -d "$@" | sort -t- -k2); do
  jq -r --arg l "$(basename $d | cut -d- -f1)" --arg t "$(date -u -r $d/load.json +%T)" '.runs[0] as $r | $r.agent_stats as $a |
   ($a.kernel.programs | map({(.name): .}) | add) as $p | ($a.floor.programs | map({(.name): .}) | add) as $f |
   "| \($l) | \($t) | \($p.btf_set_state.ns_per_run) / \($p.btf_set_state.xlated_insns) | \($p.btf_send_length.ns_per_run) | \($p.btf_recv_length.ns_per_run) | \($a.kernel.flow_us_per_connection) | \($a.floor.flow_us_per_connection) | **\($a.flow_agent_to_floor)x** | \($r.load.completed) / \($r.load.failed) |"' $d/load.json
done
