# Shared by the benchmark scripts (sourced, not run): the two-namespace
# veth pair they load, and a process's CPU ticks.

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
