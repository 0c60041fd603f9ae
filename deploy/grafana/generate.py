#!/usr/bin/env python3
# Writes the Grafana dashboards of this directory (one JSON file each).
# Edit this file, run `python3 deploy/grafana/generate.py`, commit both: the
# JSON files are what users import, this keeps their queries consistent.
# Every expression is evaluated against a real Prometheus by
# integration/tests/deploy_live.rs.
import json, os
OUT = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'host_name=~"$host", service_name=~"$service"'
TX = 'network_io_direction="transmit", '
RX = 'network_io_direction="receive", '
FAILED = 'error_type!="", error_type!="timeout", '
TIMEOUT = 'error_type="timeout", '
DEP = "service_name, flowscope_flow_role, service_peer_name, network_peer_address, network_peer_port"

def inc(metric, sel, rng="$__range"):
    # Growth over the range, counting series that appeared inside it (their
    # first sample is not a reset, and increase() would call it 0).
    return f"({metric}{{{sel}}} - ({metric}{{{sel}}} offset {rng} or {metric}{{{sel}}} * 0))"

def target(expr, ref, instant=False, legend=None, fmt=None):
    t = {"datasource": DS, "refId": ref, "expr": expr}
    if instant:
        t.update({"instant": True, "range": False, "format": fmt or "table"})
    else:
        t.update({"range": True, "instant": False})
        if legend:
            t["legendFormat"] = legend
    return t

class Dash:
    def __init__(self, uid, title, desc):
        self.uid, self.title, self.desc = uid, title, desc
        self.panels, self.y, self.id = [], 0, 1
    def panel(self, kind, title, targets, w=24, h=8, unit=None, desc=None, extra=None):
        x = sum(p["gridPos"]["w"] for p in self.panels if p["gridPos"]["y"] == self.y)
        if x + w > 24:
            self.y += max(p["gridPos"]["h"] for p in self.panels if p["gridPos"]["y"] == self.y)
            x = 0
        p = {"id": self.id, "type": kind, "title": title, "datasource": DS,
             "gridPos": {"x": x, "y": self.y, "w": w, "h": h}, "targets": targets,
             "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
        if unit:
            p["fieldConfig"]["defaults"]["unit"] = unit
        if desc:
            p["description"] = desc
        if extra:
            for k, v in extra.items():
                p[k] = v
        self.id += 1
        self.panels.append(p)
    def save(self, name):
        var = lambda n, label, q: {
            "name": n, "label": label, "type": "query", "datasource": DS,
            "query": {"query": q, "refId": n}, "definition": q,
            "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "refresh": 2, "sort": 1}
        d = {
            "uid": self.uid, "title": self.title, "description": self.desc,
            "tags": ["flowscope"], "timezone": "browser", "schemaVersion": 39,
            "version": 1, "editable": True, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource",
                 "query": "prometheus", "current": {}},
                var("host", "Host", "label_values(host_name)"),
                var("service", "Service", "label_values(network_flow_io_bytes_total, service_name)"),
            ]},
            "links": [{"title": "flowscope", "type": "dashboards", "tags": ["flowscope"], "asDropdown": True}],
            "panels": self.panels,
        }
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")

organize = lambda rename, exclude=("Time",): [{"id": "organize", "options": {
    "excludeByName": {e: True for e in exclude}, "renameByName": rename}}]
# Several instant queries joined into one row per series, then renamed.
merged = lambda rename: [{"id": "merge", "options": {}}] + organize(rename)

# ---- Map
d = Dash("flowscope-map", "flowscope / Network Map",
         "Who talks to whom: local services (client side) and their peers, edges sized by bytes over the range.")
src = f'flowscope_flow_role="client", {SEL}'
bytes_by = lambda by: f'sum by ({by}) {inc("network_flow_io_bytes_total", src)}'
edges = ('label_join(label_replace(label_replace(label_replace('
         f'{bytes_by("service_name, service_peer_name, network_peer_address")}, '
         '"source", "$1", "service_name", "(.*)"), '
         '"target", "$1", "network_peer_address", "(.*)"), '
         '"target", "$1", "service_peer_name", "(.+)"), '
         '"id", " -> ", "source", "target")')
nodes = ('sum by (id) ('
         f'label_replace({bytes_by("service_name")}, "id", "$1", "service_name", "(.*)") '
         'or label_replace(label_replace('
         f'{bytes_by("service_peer_name, network_peer_address")}, '
         '"id", "$1", "network_peer_address", "(.*)"), "id", "$1", "service_peer_name", "(.+)"))')
d.panel("nodeGraph", "Service map", [target(nodes, "nodes", True), target(edges, "edges", True)], h=16,
        desc="Nodes: services and peers (a peer without a known service is its address); edges: client -> server, main stat = bytes both ways over the range.",
        extra={"transformations": organize({"Value #nodes": "mainstat", "Value #edges": "mainstat"},
                                             ("Time", "service_name", "service_peer_name", "network_peer_address"))})
d.panel("table", "Edges", [target(edges, "edges", True)], unit="bytes",
        extra={"transformations": organize({"Value": "bytes"})})
d.save("flowscope-map.json")

# ---- Analytics
d = Dash("flowscope-analytics", "flowscope / Network Analytics",
         "Dependencies (local service, role, peer service, peer address and port): volume, TCP health, failures.")
dsel = SEL
qs = [
    (f'sum by ({DEP}) {inc("network_flow_io_bytes_total", TX + dsel)}', "tx"),
    (f'sum by ({DEP}) {inc("network_flow_io_bytes_total", RX + dsel)}', "rx"),
    (f'sum by ({DEP}) {inc("flowscope_tcp_retransmits_total", dsel)}', "retrans"),
    (f'sum by ({DEP}) {inc("flowscope_tcp_connection_failed_total", dsel)}', "failed"),
    (f'sum by ({DEP}) (rate(flowscope_tcp_rtt_seconds_sum{{{dsel}}}[$__range])) / sum by ({DEP}) (rate(flowscope_tcp_rtt_seconds_count{{{dsel}}}[$__range]))', "rtt"),
]
d.panel("table", "Dependencies", [target(q, r, True) for q, r in qs], h=12,
        desc="One row per dependency over the selected range: bytes sent and received, retransmitted segments, failed connects, mean smoothed RTT.",
        extra={"transformations": merged(
            {"Value #tx": "sent", "Value #rx": "received", "Value #retrans": "retransmits",
             "Value #failed": "failed connects", "Value #rtt": "mean RTT (s)"})})
d.panel("timeseries", "Throughput by dependency (top 10)",
        [target(f'topk(10, sum by (service_name, service_peer_name, network_peer_address, network_io_direction) (rate(network_flow_io_bytes_total{{{dsel}}}[$__rate_interval])))', "A",
                legend="{{service_name}} -> {{service_peer_name}} {{network_peer_address}} {{network_io_direction}}")], w=12, unit="Bps")
d.panel("timeseries", "Throughput by locality",
        [target(f'sum by (flowscope_network_locality, network_io_direction) (rate(network_flow_io_bytes_total{{{dsel}}}[$__rate_interval]))', "A",
                legend="{{flowscope_network_locality}} {{network_io_direction}}")], w=12, unit="Bps")
d.panel("timeseries", "Estimated transfer cost",
        [target(f'sum by (service_name, flowscope_network_locality) (increase(flowscope_flow_cost_total{{{dsel}}}[$__rate_interval]))', "A",
                legend="{{service_name}} {{flowscope_network_locality}}")], w=24, unit="currencyUSD",
        desc="Only with prices configured (docs/costs.md).")
d.save("flowscope-analytics.json")

# ---- TCP
d = Dash("flowscope-tcp", "flowscope / TCP health",
         "Retransmits, round trips, failed connects, resets and connection counts per dependency.")
d.panel("timeseries", "Retransmit ratio",
        [target(f'sum by (service_name, service_peer_name, network_peer_address) (rate(flowscope_tcp_retransmits_total{{{dsel}}}[$__rate_interval])) / sum by (service_name, service_peer_name, network_peer_address) (rate(flowscope_flow_packets_total{{network_transport="tcp", network_io_direction="transmit", {dsel}}}[$__rate_interval]))', "A",
                legend="{{service_name}} -> {{service_peer_name}} {{network_peer_address}}")], w=12, unit="percentunit")
d.panel("timeseries", "RTT p95",
        [target(f'histogram_quantile(0.95, sum by (le, service_name, service_peer_name, network_peer_address) (rate(flowscope_tcp_rtt_seconds_bucket{{{dsel}}}[$__rate_interval])))', "A",
                legend="{{service_name}} -> {{service_peer_name}} {{network_peer_address}}")], w=12, unit="s")
d.panel("table", "Failed connects by error type",
        [target(f'sum by (service_name, network_peer_address, network_peer_port, error_type) {inc("flowscope_tcp_connection_failed_total", dsel)} > 0', "A", True)], w=12,
        extra={"transformations": organize({"Value": "failed"})})
d.panel("timeseries", "Failed connects/s by error type",
        [target(f'sum by (error_type) (rate(flowscope_tcp_connection_failed_total{{{dsel}}}[$__rate_interval]))', "A", legend="{{error_type}}")], w=12, unit="cps")
d.panel("timeseries", "Resets/s",
        [target(f'sum by (service_name, network_peer_address, network_io_direction) (rate(flowscope_tcp_resets_total{{{dsel}}}[$__rate_interval]))', "A",
                legend="{{service_name}} {{network_peer_address}} {{network_io_direction}}")], w=12)
d.panel("timeseries", "Connections opened/s and active",
        [target(f'sum by (service_name) (rate(flowscope_tcp_connection_opened_total{{{dsel}}}[$__rate_interval]))', "A", legend="{{service_name}} opened/s"),
         target(f'sum by (service_name) (flowscope_tcp_connection_active{{{dsel}}})', "B", legend="{{service_name}} active")], w=12)
d.panel("timeseries", "Connection duration p95",
        [target(f'histogram_quantile(0.95, sum by (le, service_name, service_peer_name) (rate(flowscope_tcp_connection_duration_seconds_bucket{{{dsel}}}[$__rate_interval])))', "A",
                legend="{{service_name}} -> {{service_peer_name}}")], w=12, unit="s")
d.panel("timeseries", "RTT variance (jitter)",
        [target(f'max by (service_name, service_peer_name, network_peer_address) (flowscope_tcp_rtt_variance_seconds{{{dsel}}})', "A",
                legend="{{service_name}} -> {{service_peer_name}} {{network_peer_address}}")], w=12, unit="s")
d.panel("timeseries", "Kernel drops/s by reason",
        [target(f'sum by (flowscope_drop_reason) (rate(flowscope_flow_drops_total{{{dsel}}}[$__rate_interval]))', "A", legend="{{flowscope_drop_reason}}"),
         target('sum by (flowscope_drop_reason) (rate(flowscope_host_drops_total{host_name=~"$host"}[$__rate_interval]))', "B", legend="host: {{flowscope_drop_reason}}")], w=12, unit="pps",
        desc="Packets the kernel dropped (skb:kfree_skb), by its drop reason: of monitored flows, and of no flow on the host (docs/drops.md).")
d.panel("table", "Kernel drops by dependency and reason",
        [target(f'sum by (service_name, flowscope_flow_role, service_peer_name, network_peer_address, network_peer_port, network_io_direction, flowscope_drop_reason) {inc("flowscope_flow_drops_total", dsel)} > 0', "A", True)], w=12,
        extra={"transformations": organize({"Value": "packets"})})
d.save("flowscope-tcp.json")

# ---- DNS
d = Dash("flowscope-dns", "flowscope / DNS",
         "Every lookup on the hosts: rate by response code, failures by name, timeouts and latency by server.")
d.panel("timeseries", "Lookups/s by response code",
        [target(f'sum by (flowscope_dns_response_code, error_type) (rate(dns_lookup_duration_seconds_count{{{dsel}}}[$__rate_interval]))', "A",
                legend="{{flowscope_dns_response_code}} {{error_type}}")], w=12)
d.panel("timeseries", "Latency p95 by server",
        [target(f'histogram_quantile(0.95, sum by (le, server_address) (rate(dns_lookup_duration_seconds_bucket{{{dsel}}}[$__rate_interval])))', "A",
                legend="{{server_address}}")], w=12, unit="s")
d.panel("table", "Failed lookups",
        [target(f'sum by (service_name, server_address, dns_question_name, flowscope_dns_response_code) {inc("dns_lookup_duration_seconds_count", FAILED + dsel)} > 0', "A", True)], w=12,
        desc="Lookups answered with an error code (NXDOMAIN, SERVFAIL, REFUSED, ...) over the range.",
        extra={"transformations": organize({"Value": "lookups"})})
d.panel("table", "Timeouts by server",
        [target(f'sum by (service_name, server_address, dns_question_name) {inc("dns_lookup_duration_seconds_count", TIMEOUT + dsel)} > 0', "A", True)], w=12,
        extra={"transformations": organize({"Value": "timeouts"})})
d.save("flowscope-dns.json")

# ---- Paths
psel = 'host_name=~"$host"'
PK = "server_address, server_port, flowscope_path_protocol"
d = Dash("flowscope-paths", "flowscope / Network Path",
         "Scheduled and dynamic path tests: reachability, loss, round trips, jitter and the hops on the way.")
d.panel("table", "Destinations",
        [target(f'min by ({PK}) (flowscope_path_reachable_ratio{{{psel}}})', "reach", True),
         target(f'max by ({PK}) (flowscope_path_hops{{{psel}}})', "hops", True)], w=24,
        extra={"transformations": merged({"Value #reach": "reachable", "Value #hops": "hops"})})
d.panel("timeseries", "Loss",
        [target(f'sum by ({PK}) (rate(flowscope_path_probes_lost_total{{{psel}}}[$__rate_interval])) / sum by ({PK}) (rate(flowscope_path_probes_sent_total{{{psel}}}[$__rate_interval]))', "A",
                legend="{{server_address}}:{{server_port}} {{flowscope_path_protocol}}")], w=12, unit="percentunit")
d.panel("timeseries", "RTT p95",
        [target(f'histogram_quantile(0.95, sum by (le, {PK}) (rate(flowscope_path_rtt_seconds_bucket{{{psel}}}[$__rate_interval])))', "A",
                legend="{{server_address}}:{{server_port}} {{flowscope_path_protocol}}")], w=12, unit="s")
d.panel("timeseries", "Jitter",
        [target(f'max by ({PK}) (flowscope_path_jitter_seconds{{{psel}}})', "A",
                legend="{{server_address}}:{{server_port}} {{flowscope_path_protocol}}")], w=12, unit="s")
d.panel("table", "Hops",
        [target(f'histogram_quantile(0.5, sum by (le, server_address, flowscope_path_hop_index, flowscope_path_hop_address) (rate(flowscope_path_hop_rtt_seconds_bucket{{{psel}}}[$__range])))', "rtt", True),
         target(f'sum by (server_address, flowscope_path_hop_index, flowscope_path_hop_address) (rate(flowscope_path_hop_probes_lost_total{{{psel}}}[$__range])) / sum by (server_address, flowscope_path_hop_index, flowscope_path_hop_address) (rate(flowscope_path_hop_probes_sent_total{{{psel}}}[$__range]))', "loss", True)],
        w=12, extra={"transformations": merged({"Value #rtt": "median RTT (s)", "Value #loss": "loss"})})
d.save("flowscope-paths.json")

# ---- Agent
asel = 'host_name=~"$host"'
d = Dash("flowscope-agent", "flowscope / Agent health",
         "The agents themselves: events in, events lost, what each exporter delivers, queue fill, tracked flows and cardinality overflow.")
d.panel("timeseries", "Events received/s",
        [target(f'sum by (host_name, flowscope_source) (rate(flowscope_events_received_total{{{asel}}}[$__rate_interval]))', "A", legend="{{host_name}} {{flowscope_source}}")], w=12)
d.panel("table", "Events lost",
        [target(f'sum by (host_name, flowscope_source, flowscope_reason) {inc("flowscope_events_lost_total", asel)} > 0', "A", True)], w=12,
        extra={"transformations": organize({"Value": "lost"})})
d.panel("timeseries", "Exported data points/s",
        [target(f'sum by (host_name, otel_component_name) (rate(flowscope_exporter_sent_total{{{asel}}}[$__rate_interval]))', "A", legend="{{host_name}} {{otel_component_name}} sent"),
         target(f'sum by (host_name, otel_component_name, error_type) (rate(flowscope_exporter_failed_total{{{asel}}}[$__rate_interval]))', "B", legend="{{host_name}} {{otel_component_name}} failed {{error_type}}")], w=12)
d.panel("timeseries", "Exporter queue fill",
        [target(f'max by (host_name, otel_component_name) (flowscope_exporter_queue_size{{{asel}}}) / max by (host_name, otel_component_name) (flowscope_exporter_queue_capacity{{{asel}}})', "A",
                legend="{{host_name}} {{otel_component_name}}")], w=12, unit="percentunit")
d.panel("timeseries", "Flows tracked",
        [target(f'sum by (host_name) (flowscope_flows_tracked{{{asel}}})', "A", legend="{{host_name}}")], w=12)
d.panel("table", "Cardinality overflow",
        [target(f'sum by (host_name, flowscope_metric) {inc("flowscope_flows_overflow_total", asel)} > 0', "A", True)], w=12,
        extra={"transformations": organize({"Value": "merged points"})})
d.save("flowscope-agent.json")
print("ok")
