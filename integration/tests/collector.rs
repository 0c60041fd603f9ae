//! Collector-shaped configurations (issue 25): a corpus that either
//! validates and runs or fails with the documented message, the
//! `health_check` and `file_storage` extensions at work, `resource` and
//! `attributes` on real traffic, and the `memory_limiter` refusing new
//! flows.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use flowscope_integration::{Agent, NetPair, built_binary, sum, traffic};

const WAIT: Duration = Duration::from_secs(40);

/// `flowscope validate` on `yaml` with `envs`: (success, stderr).
fn validate(yaml: &str, envs: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(built_binary("flowscope"))
        .args(["validate", "--config"])
        .arg(&path)
        .envs(envs.iter().copied())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.success(), err)
}

/// The shape every Collector metrics tutorial starts from (the issue's).
const TUTORIAL: &str = r#"receivers: {ebpf: {}}
processors:
  batch: {timeout: 5s}
  memory_limiter: {check_interval: 1s, limit_mib: 200}
exporters:
  otlp: {endpoint: "${env:OTLP_ENDPOINT:-localhost:4317}", tls: {insecure: true}}
extensions:
  health_check: {}
service:
  extensions: [health_check]
  pipelines:
    metrics: {receivers: [ebpf], processors: [memory_limiter, batch], exporters: [otlp]}
"#;

/// A gateway-style agent: a persistent queue in a `file_storage`.
const GATEWAY: &str = r#"receivers:
  ebpf:
    collection_interval: 1s
processors:
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
    spike_limit_percentage: 25
  resource:
    attributes:
      - {key: deployment.environment.name, value: "${env:ENVIRONMENT:-lab}", action: upsert}
  batch:
    send_batch_size: 10000
    timeout: 10s
exporters:
  otlphttp/gateway:
    endpoint: "http://${env:GATEWAY:-127.0.0.1:9}"
    sending_queue:
      enabled: true
      storage: file_storage/queue
    retry_on_failure: {enabled: true, initial_interval: 1s}
extensions:
  health_check: {endpoint: "${env:HEALTH:-127.0.0.1:13133}", path: /health/status}
  file_storage/queue:
    directory: "${env:QUEUE_DIR:-/var/lib/otelcol/file_storage}"
    timeout: 1s
  pprof: {endpoint: "localhost:1777"}
  zpages: {}
service:
  extensions: [health_check, file_storage/queue, pprof, zpages]
  pipelines:
    metrics:
      receivers: [ebpf]
      processors: [memory_limiter, resource, batch]
      exporters: [otlphttp/gateway]
"#;

/// A Kubernetes DaemonSet's config as the Collector's Helm chart writes it.
const KUBERNETES: &str = r#"receivers:
  ebpf: {}
processors:
  memory_limiter: {check_interval: 5s, limit_percentage: 80, spike_limit_percentage: 25}
  resourcedetection:
    detectors: [env, system, ec2, gcp, azure]
    timeout: 2s
    override: false
  k8sattributes:
    extract:
      metadata: [k8s.namespace.name, k8s.pod.name]
  batch: {}
exporters:
  otlp: {endpoint: "otel-gateway:4317"}
service:
  pipelines:
    metrics:
      receivers: [ebpf]
      processors: [memory_limiter, resourcedetection, k8sattributes, batch]
      exporters: [otlp]
"#;

#[test]
fn the_tutorial_config_validates_with_one_warning_for_batch() {
    let (ok, err) = validate(TUTORIAL, &[]);
    assert!(ok, "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("processors.batch: accepted and changes nothing"),
        "{err}"
    );
}

#[test]
fn the_gateway_config_validates_and_names_what_it_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().display().to_string();
    let (ok, err) = validate(GATEWAY, &[("QUEUE_DIR", &q)]);
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "extensions.pprof is accepted and does nothing: pprof serves the Go runtime's profiles"
        ),
        "{err}"
    );
    assert!(
        err.contains("extensions.zpages is accepted and does nothing"),
        "{err}"
    );
    assert!(
        err.contains("exporters.otlphttp/gateway.sending_queue.enabled")
            && err.contains("extensions.file_storage/queue.timeout"),
        "{err}"
    );
}

#[test]
fn the_kubernetes_config_fails_pointing_at_the_kubernetes_processor() {
    let (ok, err) = validate(KUBERNETES, &[]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: FILE:10:5: processors.k8sattributes: flowscope does not run `k8sattributes`: its \
         `kubernetes` processor adds the pod, namespace, node and workload of both ends of \
         every flow (from the kubelet and the API server); replace `k8sattributes` with \
         `kubernetes: {}` here and in the pipeline (see docs/kubernetes.md)"
    );
    // As the message says: then it loads.
    let fixed = KUBERNETES
        .replace(
            "  k8sattributes:\n    extract:\n      metadata: [k8s.namespace.name, k8s.pod.name]\n",
            "  kubernetes: {}\n",
        )
        .replace("k8sattributes, batch", "kubernetes, batch");
    let (ok, err) = validate(&fixed, &[]);
    assert!(ok, "{err}");
}

#[test]
fn unknown_extensions_and_dangling_references_name_what_is_known() {
    for (yaml, want) in [
        (
            TUTORIAL.replace("health_check: {}", "oauth2client: {}"),
            "FILE:8:17: extensions.oauth2client: unknown extension type `oauth2client`; known \
             extension types: health_check, file_storage, pprof, zpages",
        ),
        (
            TUTORIAL.replace("extensions: [health_check]", "extensions: [health_check/x]"),
            "FILE:10:16: service.extensions[0]: extension `health_check/x` is not defined under \
             `extensions` (defined extensions: health_check)",
        ),
    ] {
        let (ok, err) = validate(&yaml, &[]);
        assert!(!ok);
        assert_eq!(err.trim(), format!("error: {want}"));
    }
}

/// One HTTP/1.1 GET; (status line, body).
fn get(addr: &str, path: &str, host: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_gateway_config_runs_health_check_answers_and_the_queue_persists_in_file_storage() {
    let dir = tempfile::tempdir().unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let q = dir.path().display().to_string();
    // Nothing listens on the gateway's port: batches wait in the queue.
    let gateway = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start_env(
        GATEWAY,
        &[],
        &[
            ("QUEUE_DIR", &q),
            ("HEALTH", &health),
            ("GATEWAY", &gateway),
        ],
    )
    .unwrap();
    // The health answer of --healthz, at the extension's path.
    let (status, body) = get(&health, "/health/status", "127.0.0.1");
    assert!(
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 503"),
        "{status}"
    );
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["exporters"][0]["exporter"], "otlphttp/gateway");
    let (status, body) = get(&health, "/healthz", "127.0.0.1");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_eq!(body, "not found: try /health/status\n");
    // The shared server's Host check.
    let (status, _) = get(&health, "/health/status", "attacker.example");
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");

    // The queue is in the extension's directory, in the exporter's own
    // subdirectory, and holds batches while the gateway is down.
    let queue = dir.path().join("exporter_otlphttp_gateway");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let files = std::fs::read_dir(&queue)
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0);
        if files > 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no batch queued in {}",
            queue.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Unhealthy now: the exporter has failed.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(&health, "/health/status", "localhost");
        if status.starts_with("HTTP/1.1 503") {
            let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
            assert_eq!(v["status"], "degraded");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
}

#[test]
fn resource_upsert_and_attributes_delete_give_exact_bytes_per_merged_series() {
    let net = NetPair::new().unwrap();
    let n = net.n;
    let config = format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         processors:\n\
         \x20 filter/pair:\n    include:\n      - cidrs: [198.18.{n}.0/24]\n\
         \x20 resource:\n    attributes:\n      - {{key: deployment.environment.name, value: lab, action: upsert}}\n\
         \x20 attributes:\n    actions:\n      - {{key: network.peer.port, action: delete}}\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [filter/pair, resource, attributes]\n      exporters: [file]\n"
    );
    let agent = Agent::start_with(&config).unwrap();
    let server = net.a_v4();
    // Two connections to two ports of one peer: two series, one once the
    // port is deleted. Each client lingers a second after its exchange, so
    // that the agent reads its /proc while it runs: a run that exited
    // first is named by its 15-byte comm (`flowscope-traff`) when no
    // earlier run of the program was read, and the two would be two
    // services (seen once in a full test run).
    let linger = [("FLOWSCOPE_TRAFFIC_LINGER_MS", "1000")];
    net.tcp_exchange(&format!("{server}:5601"), 31337, 100, &linger)
        .unwrap();
    net.tcp_exchange(&format!("{server}:5602"), 4242, 200, &linger)
        .unwrap();
    let client_tx = [
        ("flowscope.flow.role", "client"),
        ("network.peer.address", server.as_str()),
        ("network.io.direction", "transmit"),
    ];
    agent.wait_for("both connections' bytes", WAIT, |p| {
        (sum(p, "network.flow.io", &client_tx) >= 31337.0 + 4242.0).then_some(())
    });
    let points = agent.points();
    let merged: Vec<_> = points
        .iter()
        .filter(|p| {
            p.metric == "network.flow.io" && client_tx.iter().all(|(k, v)| p.attr(k) == Some(*v))
        })
        .collect();
    assert_eq!(
        merged.iter().map(|p| p.value).sum::<f64>(),
        31337.0 + 4242.0
    );
    for p in &merged {
        assert_eq!(p.attr("network.peer.port"), None, "{p:?}");
        assert_eq!(
            p.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("lab"),
            "{p:?}"
        );
    }
    // One point per interval: the two connections are one series.
    let mut times: Vec<u64> = merged.iter().map(|p| p.time).collect();
    times.sort_unstable();
    let before = times.len();
    times.dedup();
    assert_eq!(
        times.len(),
        before,
        "two points in one interval: {merged:#?}"
    );
    // The received side too.
    let client_rx = [
        ("flowscope.flow.role", "client"),
        ("network.peer.address", server.as_str()),
        ("network.io.direction", "receive"),
    ];
    assert_eq!(sum(&points, "network.flow.io", &client_rx), 300.0);
}

#[test]
fn memory_limiter_above_its_limit_refuses_new_flows_and_counts_them() {
    let net = NetPair::new().unwrap();
    let n = net.n;
    // 1 MiB: the agent's heap is above it from the first check (the hard
    // limit), so every new flow is refused.
    let config = "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         processors:\n  memory_limiter: {check_interval: 100ms, limit_mib: 1}\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [memory_limiter]\n      exporters: [file]\n";
    let agent = Agent::start_with(config).unwrap();
    let log = agent.dir.path().join("agent.log");
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("above the hard limit")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no hard-limit warning"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 200 distinct peers, one datagram each.
    let t = traffic();
    net.run(
        &net.b,
        &[],
        &[&t, "udp-spray", &format!("198.18.{n}.20"), "200", "9999"],
    )
    .unwrap();
    let lost = [
        ("flowscope.source", "ebpf.udp"),
        ("flowscope.reason", "memory_limit"),
    ];
    let refused = agent.wait_for("200 refusals", WAIT, |p| {
        let n = sum(p, "flowscope.events.lost", &lost);
        (n >= 200.0).then_some(n)
    });
    eprintln!("memory_limit refusals: {refused}");
    // None of them became a flow.
    let prefix = format!("198.18.{n}.");
    let leaked: Vec<_> = agent
        .points()
        .into_iter()
        .filter(|p| {
            p.metric == "network.flow.io"
                && p.attr("network.peer.address")
                    .is_some_and(|a| a.starts_with(&prefix))
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}

mod otlp {
    //! Two OTLP receivers counting one self-metric: gRPC (tonic) and HTTP
    //! (one request per connection, protobuf, uncompressed).

    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    use prost::Message;

    /// Every request received, and the `User-Agent` of each metrics
    /// request.
    #[derive(Clone, Default)]
    pub struct Received(
        Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
        Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
        Arc<Mutex<Vec<String>>>,
    );

    impl Received {
        /// The `User-Agent`s the metrics requests came with.
        pub fn metric_agents(&self) -> Vec<String> {
            self.2.lock().unwrap().clone()
        }

        /// Log records whose body is `body`, and whether all were on a
        /// Resource with `service.name=flowscope`.
        pub fn logs(&self, body: &str) -> (usize, bool) {
            let mut n = 0;
            let mut own = true;
            for req in self.1.lock().unwrap().iter() {
                for rl in &req.resource_logs {
                    let service = rl.resource.as_ref().is_some_and(|r| {
                        r.attributes.iter().any(|kv| {
                            kv.key == "service.name" && value(kv.value.as_ref()) == "flowscope"
                        })
                    });
                    for sl in &rl.scope_logs {
                        for r in &sl.log_records {
                            if value(r.body.as_ref()) == body {
                                n += 1;
                                own &= service;
                            }
                        }
                    }
                }
            }
            (n, own)
        }

        /// Sum of the integer sum points of `metric` whose attributes
        /// include every pair of `filter`, and whether every such point was
        /// on a Resource with `service.name=flowscope`.
        pub fn sum(&self, metric: &str, filter: &[(&str, &str)]) -> (i64, bool) {
            let mut total = 0;
            let mut own = true;
            for req in self.0.lock().unwrap().iter() {
                for rm in &req.resource_metrics {
                    let service = rm.resource.as_ref().is_some_and(|r| {
                        r.attributes.iter().any(|kv| {
                            kv.key == "service.name" && value(kv.value.as_ref()) == "flowscope"
                        })
                    });
                    for sm in &rm.scope_metrics {
                        for m in sm.metrics.iter().filter(|m| m.name == metric) {
                            let Some(metric::Data::Sum(s)) = &m.data else {
                                continue;
                            };
                            for dp in &s.data_points {
                                let matches = filter.iter().all(|(k, v)| {
                                    dp.attributes
                                        .iter()
                                        .any(|kv| kv.key == *k && value(kv.value.as_ref()) == *v)
                                });
                                if matches {
                                    own &= service;
                                    if let Some(number_data_point::Value::AsInt(n)) = dp.value {
                                        total += n;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (total, own)
        }
    }

    fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        match v.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            _ => String::new(),
        }
    }

    struct Grpc(Received);

    #[tonic::async_trait]
    impl LogsService for Grpc {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            self.0.1.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Grpc {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let agent = request
                .metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.0.2.lock().unwrap().push(agent);
            self.0.0.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    /// A gRPC receiver on 127.0.0.1; returns its port. Runs on its own
    /// runtime thread for the life of the test process.
    pub fn grpc(rx: Received) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(MetricsServiceServer::new(Grpc(rx.clone())))
                    .add_service(LogsServiceServer::new(Grpc(rx)))
                    .serve_with_incoming(incoming)
                    .await;
            });
        });
        port
    }

    /// An OTLP/HTTP receiver on 127.0.0.1 (`POST /v1/metrics`); returns
    /// its port.
    pub fn http(rx: Received) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0;
                let mut line = String::new();
                let mut logs = false;
                let mut agent = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if l.starts_with("POST /v1/logs") {
                        logs = true;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        } else if k.eq_ignore_ascii_case("user-agent") {
                            agent = v.trim().to_owned();
                        }
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                if logs {
                    if let Ok(req) = ExportLogsServiceRequest::decode(body.as_slice()) {
                        rx.1.lock().unwrap().push(req);
                    }
                } else if let Ok(req) = ExportMetricsServiceRequest::decode(body.as_slice()) {
                    rx.2.lock().unwrap().push(agent);
                    rx.0.lock().unwrap().push(req);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        port
    }
}

#[test]
fn service_telemetry_sends_the_agents_own_metrics_and_logs_over_grpc_and_http() {
    let (grpc, http) = (otlp::Received::default(), otlp::Received::default());
    let grpc_port = otlp::grpc(grpc.clone());
    let http_port = otlp::http(http.clone());
    let health = format!("127.0.0.1:{}", free_port());
    // Nothing listens here: that reader's sends fail, and are counted.
    let closed = free_port();
    let config = format!(
        "receivers:\n  ebpf:\n    collection_interval: 1s\n\
         exporters:\n  file:\n    path: OUTPUT\n\
         extensions:\n  health_check: {{endpoint: \"{health}\"}}\n\
         service:\n  extensions: [health_check]\n  telemetry:\n    logs:\n      level: info\n      processors:\n\
         \x20       - batch:\n            schedule_delay: 200\n            exporter:\n              otlp: {{protocol: grpc, endpoint: \"http://127.0.0.1:{grpc_port}\", insecure: true}}\n\
         \x20       - batch:\n            schedule_delay: 200\n            exporter:\n              otlp: {{protocol: http/protobuf, endpoint: \"http://127.0.0.1:{http_port}/v1/logs\"}}\n    metrics:\n      level: normal\n      readers:\n\
         \x20       - periodic:\n            interval: 500\n            exporter:\n              otlp: {{protocol: grpc, endpoint: \"http://127.0.0.1:{grpc_port}\", insecure: true, compression: none}}\n\
         \x20       - periodic:\n            interval: 500\n            exporter:\n              otlp: {{protocol: http/protobuf, endpoint: \"http://127.0.0.1:{http_port}/v1/metrics\", compression: none}}\n\
         \x20       - periodic:\n            interval: 300\n            exporter:\n              otlp: {{protocol: http/protobuf, endpoint: \"http://127.0.0.1:{closed}/v1/metrics\", timeout: 1000}}\n\
         \x20 pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n"
    );
    let agent = Agent::start_with(&config).unwrap();
    // Exactly 7 refusals the agent counts: requests with a foreign Host.
    for _ in 0..7 {
        let (status, _) = get(&health, "/", "attacker.example");
        assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    }
    let refused = [
        ("flowscope.source", "healthz"),
        ("flowscope.reason", "forbidden_host"),
    ];
    for (what, rx) in [("gRPC", &grpc), ("HTTP", &http)] {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (n, own) = rx.sum("flowscope.server.refused", &refused);
            if n >= 7 {
                assert_eq!(n, 7, "{what}");
                assert!(own, "{what}: not on the agent's Resource");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {n} of 7");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Sent by the OpenTelemetry SDK's own OTLP exporter, not by one of
    // flowscope's: every metrics request carries its User-Agent.
    for (what, rx) in [("gRPC", &grpc), ("HTTP", &http)] {
        let agents = rx.metric_agents();
        assert!(
            !agents.is_empty()
                && agents
                    .iter()
                    .all(|a| a.contains("OTel-OTLP-Exporter-Rust/")),
            "{what}: {agents:?}"
        );
    }
    // Logs: the line the health_check extension logs once at start,
    // exactly once at each endpoint.
    for (what, rx) in [("gRPC", &grpc), ("HTTP", &http)] {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (n, own) = rx.logs("health_check serving");
            if n >= 1 {
                assert_eq!(n, 1, "{what}");
                assert!(own, "{what}: not on the agent's Resource");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: no log record"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The pipelines still carry them too, once.
    agent.wait_for("the refusals in the pipeline", WAIT, |p| {
        (sum(p, "flowscope.server.refused", &refused) >= 7.0).then_some(())
    });
    assert_eq!(
        sum(&agent.points(), "flowscope.server.refused", &refused),
        7.0
    );
    // Each reader's sends are counted as an exporter's.
    for (name, kind) in [
        (
            "otlp/service.telemetry.metrics.readers[0]",
            "otlp_grpc_metric_exporter",
        ),
        (
            "otlp/service.telemetry.metrics.readers[1]",
            "otlp_http_metric_exporter",
        ),
    ] {
        let at = [("otel.component.name", name), ("otel.component.type", kind)];
        agent.wait_for("the readers' sends counted", WAIT, |p| {
            (sum(p, "flowscope.exporter.sent", &at) >= 1.0).then_some(())
        });
    }
    // The reader with no receiver: its points are counted as failed,
    // none as sent.
    let at = [
        (
            "otel.component.name",
            "otlp/service.telemetry.metrics.readers[2]",
        ),
        ("otel.component.type", "otlp_http_metric_exporter"),
    ];
    agent.wait_for("the failed sends counted", WAIT, |p| {
        (sum(p, "flowscope.exporter.failed", &at) >= 1.0).then_some(())
    });
    assert_eq!(sum(&agent.points(), "flowscope.exporter.sent", &at), 0.0);
}

/// The heaps the agent's `memory_limiter` logged (debug), in order.
fn heaps(agent: &Agent) -> Vec<u64> {
    std::fs::read_to_string(agent.dir.path().join("agent.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("heap measured"))
        .filter_map(|l| {
            // Without the terminal colour codes the log may carry.
            let mut plain = String::new();
            let mut escape = false;
            for c in l.chars() {
                match (escape, c) {
                    (false, '\u{1b}') => escape = true,
                    (true, 'm') => escape = false,
                    (false, c) => plain.push(c),
                    (true, _) => {}
                }
            }
            let v = plain.split("heap_bytes=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

#[test]
fn memory_limiter_driven_over_its_soft_limit_by_new_peers_refuses_and_counts_them() {
    const PEERS: u32 = 50_000;
    let limiter = |limit: u64, spike: u64| {
        format!(
            "receivers:\n  ebpf:\n    collection_interval: 1s\n    max_tracked_flows: 262144\n\
             processors:\n  memory_limiter: {{check_interval: 50ms, limit_mib: {limit}, spike_limit_mib: {spike}}}\n\
             \x20 aggregate: {{max_series: 200000}}\n\
             exporters:\n  file:\n    path: OUTPUT\n\
             service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [memory_limiter, aggregate]\n      exporters: [file]\n"
        )
    };
    let debug = [(
        "RUST_LOG",
        "info,flowscope_processors::memory_limiter=debug",
    )];
    // The agent's heap at rest, measured by a first agent with a limit it
    // never reaches.
    let baseline = {
        let agent = Agent::start_env(&limiter(1 << 20, 1), &[], &debug).unwrap();
        agent.wait_for("a few intervals", WAIT, |p| {
            (p.iter()
                .filter(|p| p.metric == "flowscope.flows.tracked")
                .count()
                >= 3)
                .then_some(())
        });
        (
            heaps(&agent).into_iter().max().unwrap(),
            agent.peak_rss().unwrap(),
        )
    };
    let (baseline, baseline_rss) = baseline;
    // Soft limit 4 MiB above that, hard limit 32 MiB above.
    let mib = 1 << 20;
    let limit = baseline / mib + 32;
    let agent = Agent::start_env(&limiter(limit, 28), &[], &debug).unwrap();
    let soft = (limit - 28) * mib;
    let net = NetPair::new().unwrap();
    net.run(
        &net.b,
        &[],
        &["ip", "route", "add", "198.19.0.0/16", "via", &net.a_v4()],
    )
    .unwrap();
    let t = traffic();
    net.run(
        &net.b,
        &[],
        &[&t, "udp-spray", "198.19.0.1", &PEERS.to_string(), "9999"],
    )
    .unwrap();
    let lost = [
        ("flowscope.source", "ebpf.udp"),
        ("flowscope.reason", "memory_limit"),
    ];
    let count = |p: &[flowscope_integration::Point]| {
        let refused = sum(p, "flowscope.events.lost", &lost) as u64;
        let exported: std::collections::BTreeSet<&str> = p
            .iter()
            .filter(|p| p.metric == "network.flow.io")
            .filter_map(|p| p.attr("network.peer.address"))
            .filter(|a| a.starts_with("198.19."))
            .collect();
        (refused, exported.len() as u64)
    };
    // Every peer is either a series or a counted refusal (other UDP
    // traffic on the host may add refusals of its own).
    let (refused, exported) = agent.wait_for("every peer tracked or refused", WAIT, |p| {
        let (refused, exported) = count(p);
        (refused + exported >= u64::from(PEERS)).then_some((refused, exported))
    });
    let seen = heaps(&agent);
    let peak = seen.iter().copied().max().unwrap_or(0);
    let peak_rss = agent.peak_rss().unwrap();
    eprintln!(
        "baseline heap {baseline} B, soft limit {soft} B, hard {} B, peak heap {peak} B; \
         baseline peak RSS {baseline_rss} B, peak RSS {peak_rss} B; \
         {exported} peers tracked, {refused} refused",
        limit * mib
    );
    // It started below the soft limit; the room each check gave ran out
    // (the heap need not cross the soft limit for that), and new peers
    // were refused from there.
    assert!(seen[0] < soft, "{} >= {soft}", seen[0]);
    assert!(refused > 0 && exported > 0 && exported < u64::from(PEERS));
    // Bounded: the burst of 50,000 new peers arrives within one read of
    // the kernel maps, and the room each check gives keeps what it adds
    // near the soft limit: the heap, as measured at each check and at each
    // pipeline's busiest moment, never reached the hard limit (before the
    // room it reached about 150 MB). Resident memory is printed, not
    // asserted: it also holds what the allocator keeps after frees, and the
    // other tests of this binary run beside it (their traffic reaches both
    // agents), which moved it by 8 to 59 MiB over the first agent's.
    assert!(peak < limit * mib, "peak heap {peak} B");
}
