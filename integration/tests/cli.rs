//! The command line: config validation errors name the key path and the
//! line; the embedded default is valid.

use std::process::Command;

use flowscope_integration::built_binary;

fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(built_binary("flowscope"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "receivers:
  ebpf:
    collection_interval: 5s
exporters:
  file:
    path: /tmp/x.jsonl
service:
  pipelines:
    metrics:
      receivers: [ebpf]
      exporters: [file]
";

#[test]
fn unknown_key_names_path_and_line() {
    let (ok, err) = validate(&GOOD.replace(
        "collection_interval: 5s",
        "collection_interval: 5s\n    colection: 1",
    ));
    assert!(!ok);
    assert!(err.contains("bad.yaml:4:"), "{err}");
    assert!(err.contains("receivers.ebpf"), "{err}");
    assert!(err.contains("colection"), "{err}");
}

#[test]
fn bad_type_names_path_and_line() {
    let (ok, err) = validate(&GOOD.replace(
        "path: /tmp/x.jsonl",
        "path: /tmp/x.jsonl\n    rotation:\n      max_megabytes: lots",
    ));
    assert!(!ok);
    assert!(err.contains("bad.yaml:8:"), "{err}");
    assert!(
        err.contains("exporters.file.rotation.max_megabytes"),
        "{err}"
    );
}

#[test]
fn good_config_and_embedded_default_validate() {
    let (ok, err) = validate(GOOD);
    assert!(ok, "{err}");
    let out = Command::new(built_binary("flowscope"))
        .arg("default-config")
        .output()
        .unwrap();
    let default = String::from_utf8_lossy(&out.stdout).into_owned();
    let (ok, err) = validate(&default);
    assert!(ok, "{err}");
    let out = Command::new(built_binary("flowscope"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("flowscope "));
}

#[test]
fn missing_privileges_give_one_clear_error() {
    flowscope_integration::require_root();
    // Drop to nobody, without capabilities: loading must fail up front,
    // naming what is missing, and exit non-zero.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(built_binary("flowscope"))
        .args(["run"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn healthz_reports_each_exporter() {
    use std::io::{Read, Write};
    // A free loopback port, released just before the agent binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = "receivers:\n  ebpf:\n    collection_interval: 1s\n\
                  exporters:\n  file:\n    path: OUTPUT\n\
                  service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [file]\n";
    let agent = flowscope_integration::Agent::start_args(config, &["--healthz", &addr]).unwrap();
    // After one delivered interval the file exporter reports delivering.
    agent.wait_for(
        "a first interval",
        std::time::Duration::from_secs(30),
        |p| (!p.is_empty()).then_some(()),
    );
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["exporters"][0]["exporter"], "file");
    assert_eq!(v["exporters"][0]["delivering"], true);
}

/// `flowscope validate` with `env` set: (success, stdout, stderr).
fn validate_env(yaml: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(built_binary("flowscope"))
        .args(["validate", "--config"])
        .arg(&path)
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const COLLECTOR: &str = "receivers:
  ebpf:
exporters:
  otlp_grpc/gateway:
    endpoint: ${OTLP_ENDPOINT}
    sending_queue:
      enabled: true
      num_consumers: 4
      queue_size: 50
service:
  pipelines:
    metrics:
      receivers: [ebpf]
      exporters: [otlp_grpc/gateway]
";

#[test]
fn validate_takes_a_collector_config_with_one_warning() {
    let (ok, out, err) = validate_env(COLLECTOR, &[("OTLP_ENDPOINT", "gw.example:4317")]);
    assert!(ok, "{err}");
    assert!(
        out.ends_with(": valid (1 receivers, 0 processors, 1 exporters, 1 pipelines)\n"),
        "{out}"
    );
    assert_eq!(
        err.matches("Collector settings accepted and ignored")
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(
            "exporters.otlp_grpc/gateway.sending_queue.enabled, \
             exporters.otlp_grpc/gateway.sending_queue.num_consumers"
        ),
        "{err}"
    );
}

#[test]
fn validate_refuses_what_run_would_refuse() {
    // A malformed endpoint, with its line and key.
    let (ok, _, err) = validate_env(COLLECTOR, &[("OTLP_ENDPOINT", "http://[::1")]);
    assert!(!ok);
    assert!(
        err.contains(
            "collector.yaml:5:15: exporters.otlp_grpc/gateway.endpoint: `http://[::1` is not a \
             valid URL"
        ),
        "{err}"
    );
    // The OTLP protocol variable asking for HTTP on a gRPC exporter.
    let (ok, _, err) = validate_env(
        COLLECTOR,
        &[
            ("OTLP_ENDPOINT", "gw.example:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains(
            "collector.yaml:4:3: exporters.otlp_grpc/gateway: `OTEL_EXPORTER_OTLP_PROTOCOL`=\
             `http/protobuf` asks for OTLP/HTTP"
        ) && err.contains("use an `otlp_http` (or `otlphttp`) exporter"),
        "{err}"
    );
    // A CA file named by the environment that does not exist.
    let (ok, _, err) = validate_env(
        COLLECTOR,
        &[
            ("OTLP_ENDPOINT", "gw.example:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains(
            "exporters.otlp_grpc/gateway: `OTEL_EXPORTER_OTLP_CERTIFICATE` names \
             `/nonexistent/ca.pem`, which cannot be read: No such file or directory"
        ),
        "{err}"
    );
    // A storage extension that is not defined.
    let (ok, _, err) = validate_env(
        &COLLECTOR.replace("num_consumers: 4", "storage: file_storage"),
        &[("OTLP_ENDPOINT", "gw.example:4317")],
    );
    assert!(!ok);
    assert!(
        err.contains(
            "collector.yaml:8:16: exporters.otlp_grpc/gateway.sending_queue.storage: \
             storage extension `file_storage` is not defined under `extensions`"
        ),
        "{err}"
    );
    // A peer processor's range file that is not the format it claims.
    let dir = tempfile::tempdir().unwrap();
    let ranges = dir.path().join("ip-ranges.json");
    std::fs::write(&ranges, "{\"prefixes\": 7}").unwrap();
    let yaml = format!(
        "receivers:\n  ebpf:\nprocessors:\n  peer:\n    aws_ip_ranges: {}\nexporters:\n  console:\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [peer]\n      exporters: [console]\n",
        ranges.display()
    );
    let (ok, _, err) = validate_env(&yaml, &[]);
    assert!(!ok);
    assert!(
        err.contains("collector.yaml:4:3: processors.peer.aws_ip_ranges: `")
            && err.contains("not valid"),
        "{err}"
    );
}
