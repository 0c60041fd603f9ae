#!/usr/bin/env python3
"""Writes an OpenMetrics file of a simulated fleet for scripts/bench-fleet.sh:
NODES nodes x 2,000 series each, one sample every STEP seconds for the last
HOURS hours, named and labelled as the agents' exporters translate the
contract (docs/telemetry.md, "Fleet storage names").

Each node has 100 client -> server dependencies (its services call
services of the next node), 20 series each: bytes and packets both ways,
opened, closed, retransmits, and the RTT histogram (10 bounds + +Inf, sum,
count). Counters grow by fixed amounts, so totals are known.

Usage: fleet-series.py NODES HOURS STEP END_UNIX > fleet.om
"""

import sys

BOUNDS = ["0.0001", "0.0005", "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"]
DEPS = 100


def main() -> None:
    nodes, hours, step, end = (int(a) for a in sys.argv[1:5])
    start = end - hours * 3600
    times = list(range(start + step, end + 1, step))
    out = sys.stdout
    families = {}

    def series(name, labels, per_step):
        if name.startswith("flowscope_tcp_rtt_seconds"):
            family, kind = "flowscope_tcp_rtt_seconds", "histogram"
        else:
            family, kind = name[: -len("_total")], "counter"
        families.setdefault((family, kind), []).append((name, labels, per_step))

    for n in range(nodes):
        nxt = (n + 1) % nodes
        for d in range(DEPS):
            base = (
                f'service_name="svc-{n}-{d % 20}",host_name="node-{n}",'
                f'flowscope_flow_role="client",network_transport="tcp",'
                f'network_local_address="10.{n // 250}.{n % 250}.{d % 20 + 1}",'
                f'network_peer_address="10.{nxt // 250}.{nxt % 250}.{d % 50 + 100}",'
                f'network_peer_port="{8000 + d % 5}",job="fleet",instance="node-{n}"'
            )
            for direction, amount in (("transmit", 1000), ("receive", 300)):
                lab = f'{base},network_io_direction="{direction}"'
                series("network_flow_io_bytes_total", lab, amount)
                series("flowscope_flow_packets_total", lab, amount // 100)
            series("flowscope_tcp_connection_opened_total", base, 2)
            series("flowscope_tcp_connection_closed_total", base, 2)
            series("flowscope_tcp_retransmits_total", base, 1)
            for i, le in enumerate(BOUNDS):
                series("flowscope_tcp_rtt_seconds_bucket", f'{base},le="{le}"', min(i, 4))
            series("flowscope_tcp_rtt_seconds_sum", base, 0)
            series("flowscope_tcp_rtt_seconds_count", base, 4)

    for (family, kind), members in families.items():
        out.write(f"# TYPE {family} {kind}\n")
        # OpenMetrics wants a family's samples together, in time order per series.
        for name, labels, per_step in members:
            for k, t in enumerate(times, 1):
                out.write(f"{name}{{{labels}}} {per_step * k} {t}\n")
    out.write("# EOF\n")


if __name__ == "__main__":
    main()
