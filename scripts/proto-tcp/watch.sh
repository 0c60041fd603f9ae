#!/usr/bin/env bash
# Dumps the summed PROTO_SUMS slots every 0.2 s while a map of that name exists;
# each line: unix time and the 9 slot sums. Output to $1.
out=$1; : > "$out"
while :; do
  j=$(bpftool map dump name PROTO_SUMS -j 2>/dev/null) || { sleep 0.2; continue; }
  [ -n "$j" ] && [ "$j" != "[]" ] && echo "$(date +%s.%N) $(echo "$j" | jq -r '[.[] | {k: .key, s: ([.values[].value] | add)}] | sort_by(.k) | map(.s|tostring) | join(" ")')" >> "$out"
  sleep 0.5
done
