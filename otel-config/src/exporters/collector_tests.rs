//! Configs pasted from an OpenTelemetry Collector: aliases, the Collector
//! keys flowscope ignores (one warning) or refuses (an error saying what to
//! write), and everything `run` would refuse, refused at load with its line.

use std::path::{Path, PathBuf};

use crate::exporters::{ExporterConfig, TlsVersion, is_extension_id};
use crate::{ComponentId, Loaded, load_str_with_env};

/// A config with one exporter `id` whose body (indented 4) is `body`, in the
/// only pipeline; `OTLP_ENDPOINT` is set.
fn with_exporter(id: &str, body: &str) -> String {
    format!(
        "receivers:\n  ebpf:\nexporters:\n  {id}:\n{body}\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [{id}]\n"
    )
}

fn env(name: &str) -> Option<String> {
    match name {
        "OTLP_ENDPOINT" => Some("gateway.example:4317".to_owned()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Loaded, String> {
    load_str_with_env(text, "c.yaml", &env).map_err(|e| e.to_string())
}

fn err(text: &str) -> String {
    match load(text) {
        Ok(l) => panic!("expected an error, got {:?}", l.config.exporters),
        Err(e) => e,
    }
}

fn exporter(loaded: &Loaded, id: &str) -> ExporterConfig {
    let id: ComponentId = id.parse().unwrap();
    loaded.config.exporters[&id].clone()
}

#[test]
fn otlp_grpc_and_otlp_http_are_aliases() {
    let l = load(&with_exporter(
        "otlp_grpc/gateway",
        "    endpoint: ${OTLP_ENDPOINT}",
    ))
    .unwrap();
    let ExporterConfig::Otlp(c) = exporter(&l, "otlp_grpc/gateway") else {
        panic!("otlp_grpc is not otlp")
    };
    assert_eq!(c.endpoint.as_deref(), Some("gateway.example:4317"));
    let l = load(&with_exporter(
        "otlp_http",
        "    endpoint: ${env:MISSING:-https://gw.example:4318}",
    ))
    .unwrap();
    let ExporterConfig::OtlpHttp(c) = exporter(&l, "otlp_http") else {
        panic!("otlp_http is not otlphttp")
    };
    assert_eq!(c.endpoint.as_deref(), Some("https://gw.example:4318"));
    assert_eq!(l.warnings, Vec::<String>::new());
}

#[test]
fn ignored_collector_keys_get_one_warning_naming_them() {
    let l = load(&with_exporter(
        "otlp_grpc/gw",
        "    endpoint: ${OTLP_ENDPOINT}
    balancer_name: round_robin
    tls:
      reload_interval: 1h
    sending_queue:
      enabled: true
      num_consumers: 4
      queue_size: 50
      sizer: requests
      block_on_overflow: false
      batch:
        flush_timeout: 1s",
    ))
    .unwrap();
    assert_eq!(
        l.warnings,
        vec![
            "c.yaml: Collector settings accepted and ignored (they change nothing in flowscope, \
             see \"Coming from the Collector\" in docs/configuration.md): \
             exporters.otlp_grpc/gw.tls.reload_interval, \
             exporters.otlp_grpc/gw.sending_queue.enabled, \
             exporters.otlp_grpc/gw.sending_queue.num_consumers, \
             exporters.otlp_grpc/gw.sending_queue.sizer, \
             exporters.otlp_grpc/gw.sending_queue.block_on_overflow, \
             exporters.otlp_grpc/gw.sending_queue.batch, \
             exporters.otlp_grpc/gw.balancer_name"
                .to_owned()
        ]
    );
    let ExporterConfig::Otlp(c) = exporter(&l, "otlp_grpc/gw") else {
        panic!()
    };
    assert_eq!(c.sending_queue.queue_size, 50);
    assert_eq!(c.sending_queue.storage, None);
}

#[test]
fn a_storage_extension_id_names_a_file_storage_never_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Not defined, of another type, defined but not enabled: errors at
    // the `storage` value that say what to write.
    for (value, extensions, want) in [
        (
            "file_storage",
            String::new(),
            "storage extension `file_storage` is not defined under `extensions`: define it \
             under `extensions` (`file_storage: {directory: /var/lib/flowscope/queue}`) and \
             list it in `service.extensions`"
                .to_owned(),
        ),
        (
            "db_storage",
            String::new(),
            "storage extension `db_storage` is not defined under `extensions`: flowscope's \
             only storage extension is `file_storage`; defined: none"
                .to_owned(),
        ),
        (
            "file_storage/q",
            format!("extensions:\n  file_storage/q: {{directory: {d}}}\n"),
            "storage extension `file_storage/q` is defined but `service.extensions` does not \
             list it; add it there"
                .to_owned(),
        ),
    ] {
        let e = err(&format!(
            "{extensions}{}",
            with_exporter(
                "otlp",
                &format!("    sending_queue:\n      storage: {value}")
            )
        ));
        let line = 6 + extensions.lines().count();
        assert_eq!(
            e,
            format!("c.yaml:{line}:16: exporters.otlp.sending_queue.storage: {want}")
        );
    }
    // Defined and enabled: the exporter's own subdirectory.
    let l = load(&format!(
        "extensions:\n  file_storage/q: {{directory: {d}}}\n{}  extensions: [file_storage/q]\n",
        with_exporter("otlp", "    sending_queue:\n      storage: file_storage/q")
    ))
    .unwrap();
    let ExporterConfig::Otlp(c) = exporter(&l, "otlp") else {
        panic!()
    };
    assert_eq!(
        c.sending_queue.storage,
        Some(dir.path().join("exporter_otlp"))
    );
    assert!(is_extension_id("redis_storage/x"));
    assert!(!is_extension_id("./file_storage"));
    assert!(!is_extension_id("/var/lib/file_storage"));
    assert!(!is_extension_id("queue"));
    assert!(!is_extension_id("file_storage/a/b"));
    // A relative directory that is not an extension id is a path.
    let l = load(&with_exporter(
        "otlp",
        "    sending_queue:\n      storage: flowscope-queue",
    ))
    .unwrap();
    let ExporterConfig::Otlp(c) = exporter(&l, "otlp") else {
        panic!()
    };
    assert_eq!(
        c.sending_queue.storage,
        Some(PathBuf::from("flowscope-queue"))
    );
}

#[test]
fn collector_keys_that_would_change_behaviour_are_errors() {
    let q = |body: &str| {
        err(&with_exporter(
            "otlp",
            &format!("    sending_queue:\n{body}"),
        ))
    };
    assert_eq!(
        q("      enabled: false"),
        "c.yaml:6:16: exporters.otlp.sending_queue.enabled: flowscope cannot turn the queue off: \
         every exporter has one, so a slow backend never stalls the pipeline; remove \
         `enabled: false` (use `queue_size: 1` for the smallest queue)"
    );
    assert_eq!(
        q("      sizer: items"),
        "c.yaml:6:14: exporters.otlp.sending_queue.sizer: `sizer: items` is not supported: \
         flowscope's `queue_size` counts batches (one per collection interval); remove `sizer` \
         and give `queue_size` in batches"
    );
    assert_eq!(
        q("      block_on_overflow: true"),
        "c.yaml:6:26: exporters.otlp.sending_queue.block_on_overflow: `true` is not supported: \
         flowscope never makes the pipeline wait on a backend; when the queue is full the \
         oldest batch is dropped and counted. Remove the key (raise `queue_size` or set \
         `storage` to hold more)"
    );
    let e = err(&with_exporter(
        "otlphttp",
        "    auth:\n      authenticator: oauth2client",
    ));
    assert_eq!(
        e,
        "c.yaml:6:7: exporters.otlphttp.auth: flowscope has no authenticator extensions; send \
         the credential as a header instead, e.g. \
         `headers: {authorization: \"Bearer ${env:TOKEN}\"}`"
    );
}

#[test]
fn bad_endpoints_fail_at_load_with_line_and_key() {
    assert_eq!(
        err(&with_exporter("otlphttp", "    endpoint: \"http://[::1\"")),
        "c.yaml:5:15: exporters.otlphttp.endpoint: `http://[::1` is not a valid URL (invalid \
         authority); write `host:port` or `http(s)://host:port`"
    );
    assert_eq!(
        err(&with_exporter(
            "otlp",
            "    endpoint: unix:///run/otel.sock"
        )),
        "c.yaml:5:15: exporters.otlp.endpoint: `unix:///run/otel.sock`: scheme `unix` is not \
         supported, only `http` and `https`; write `host:port` or `http(s)://host:port`"
    );
    assert_eq!(
        err(&with_exporter(
            "otlphttp",
            "    metrics_endpoint: gw:4318/v1/metrics"
        )),
        "c.yaml:5:23: exporters.otlphttp.metrics_endpoint: `gw:4318/v1/metrics` has no scheme; \
         write `http(s)://host:port`"
    );
    assert_eq!(
        err(&with_exporter("prometheus", "    endpoint: 9464")),
        "c.yaml:5:15: exporters.prometheus.endpoint: `9464` is not an address to listen on \
         (invalid socket address); write `address:port`, e.g. `127.0.0.1:9464` or `[::]:9464`"
    );
}

#[test]
fn bad_headers_fail_at_load() {
    assert_eq!(
        err(&with_exporter(
            "otlp",
            "    headers:\n      \"bad name\": x"
        )),
        "c.yaml:6:7: exporters.otlp.headers: `bad name` is not a valid header name (letters, \
         digits and `!#$%&'*+-.^_`|~`)"
    );
    assert_eq!(
        err(&with_exporter(
            "otlphttp",
            "    headers:\n      x-key: \"a\\nb\""
        )),
        "c.yaml:6:7: exporters.otlphttp.headers: the value of header `x-key` may only hold \
         visible ASCII characters, spaces and tabs"
    );
    assert_eq!(
        err(&with_exporter("otlp", "    headers:\n      trace-bin: x")),
        "c.yaml:6:7: exporters.otlp.headers: `trace-bin`: gRPC metadata ending in `-bin` is \
         binary, which headers cannot carry"
    );
}

struct Pem {
    dir: tempfile::TempDir,
    cert: String,
    key: String,
}

impl Pem {
    fn new() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["gw.example".to_owned()]).unwrap();
        let pem = Pem {
            dir: tempfile::tempdir().unwrap(),
            cert: ck.cert.pem(),
            key: ck.signing_key.serialize_pem(),
        };
        std::fs::write(pem.path("cert.pem"), &pem.cert).unwrap();
        std::fs::write(pem.path("key.pem"), &pem.key).unwrap();
        std::fs::write(pem.path("junk.pem"), "not a certificate\n").unwrap();
        pem
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn indent(pem: &str, by: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

#[test]
fn tls_files_and_inline_pem_are_read_and_parsed_at_load() {
    let p = Pem::new();
    let tls = |body: &str| with_exporter("otlp", &format!("    tls:\n{body}"));
    // Inline PEM, both versions, system pool with a CA.
    let l = load(&tls(&format!(
        "      ca_pem: |\n{}      include_system_ca_certs_pool: true\n      cert_pem: |\n{}      key_pem: |\n{}      min_version: \"1.3\"\n      max_version: \"1.3\"",
        indent(&p.cert, 8),
        indent(&p.cert, 8),
        indent(&p.key, 8)
    )))
    .unwrap();
    let ExporterConfig::Otlp(c) = exporter(&l, "otlp") else {
        panic!()
    };
    assert_eq!(c.tls.ca_pem.as_deref(), Some(p.cert.as_str()));
    assert_eq!(c.tls.key_pem.as_deref(), Some(p.key.as_str()));
    assert!(c.tls.include_system_ca_certs_pool);
    assert_eq!(c.tls.min_version, Some(TlsVersion::V1_3));

    let missing = p.path("missing.pem");
    assert_eq!(
        err(&tls(&format!("      ca_file: {}", missing.display()))),
        format!(
            "c.yaml:6:16: exporters.otlp.tls.ca_file: cannot read `{}`: No such file or \
             directory (os error 2)",
            missing.display()
        )
    );
    let junk = p.path("junk.pem");
    assert_eq!(
        err(&tls(&format!("      ca_file: {}", junk.display()))),
        format!(
            "c.yaml:6:16: exporters.otlp.tls.ca_file: `{}`: no PEM certificate \
             (`-----BEGIN CERTIFICATE-----`) found",
            junk.display()
        )
    );
    // A certificate is not a key.
    assert_eq!(
        err(&tls(&format!(
            "      cert_file: {}\n      key_file: {}",
            p.path("cert.pem").display(),
            p.path("cert.pem").display()
        ))),
        format!(
            "c.yaml:7:17: exporters.otlp.tls.key_file: `{}`: no PEM private key \
             (`-----BEGIN PRIVATE KEY-----`) found",
            p.path("cert.pem").display()
        )
    );
    let e = err(&tls(&format!(
        "      cert_file: {}",
        p.path("cert.pem").display()
    )));
    assert!(
        e.starts_with("c.yaml:")
            && e.contains(
                ": exporters.otlp.tls: a client certificate needs its key: give \
                `cert_file` (or `cert_pem`) together with `key_file` (or `key_pem`)"
            ),
        "{e}"
    );
    assert_eq!(
        err(&tls("      min_version: \"1.1\"")),
        "c.yaml:6:20: exporters.otlp.tls.min_version: TLS 1.1 is not supported (flowscope's TLS \
         library, rustls, implements only 1.2 and 1.3); write \"1.2\" or \"1.3\""
    );
    let e = err(&tls(&format!(
        "      ca_file: {}\n      ca_pem: |\n{}",
        p.path("cert.pem").display(),
        indent(&p.cert, 8)
    )));
    assert!(
        e.contains("exporters.otlp.tls: give either `ca_file` or `ca_pem`, not both"),
        "{e}"
    );
}

#[test]
fn files_and_directories_run_needs_are_checked_at_load() {
    let p = Pem::new();
    let file = p.path("cert.pem");
    assert_eq!(
        err(&with_exporter(
            "otlp",
            &format!("    sending_queue:\n      storage: {}", file.display())
        )),
        format!(
            "c.yaml:6:16: exporters.otlp.sending_queue.storage: `{}` exists and is not a \
             directory",
            file.display()
        )
    );
    let under_file = file.join("q");
    assert_eq!(
        err(&with_exporter(
            "otlp",
            &format!(
                "    sending_queue:\n      storage: {}",
                under_file.display()
            )
        )),
        format!(
            "c.yaml:6:16: exporters.otlp.sending_queue.storage: `{}` cannot be created: `{}` is \
             not a directory",
            under_file.display(),
            file.display()
        )
    );
    let nowhere = p.path("no/such/dir/out.jsonl");
    assert_eq!(
        err(&with_exporter(
            "file",
            &format!("    path: {}", nowhere.display())
        )),
        format!(
            "c.yaml:5:11: exporters.file.path: the directory `{}` of `{}` does not exist",
            nowhere.parent().unwrap().display(),
            nowhere.display()
        )
    );
    let text = format!(
        "receivers:\n  ebpf:\nprocessors:\n  peer:\n    aws_ip_ranges: {}\nexporters:\n  console:\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [peer]\n      exporters: [console]\n",
        p.path("ip-ranges.json").display()
    );
    assert_eq!(
        err(&text),
        format!(
            "c.yaml:5:20: processors.peer.aws_ip_ranges: cannot read `{}`: No such file or \
             directory (os error 2)",
            p.path("ip-ranges.json").display()
        )
    );
}

fn two_exporters(a: &str, b: &str) -> String {
    format!(
        "receivers:\n  ebpf:\nexporters:\n{a}{b}service:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [{}, {}]\n",
        first_id(a),
        first_id(b)
    )
}

fn first_id(block: &str) -> &str {
    block.trim_start().split(':').next().unwrap()
}

#[test]
fn what_two_exporters_cannot_share_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let e = err(&two_exporters(
        &format!(
            "  otlp/a:\n    sending_queue:\n      storage: {}\n",
            q.display()
        ),
        &format!(
            "  otlphttp/b:\n    sending_queue:\n      storage: {}/\n",
            q.display()
        ),
    ));
    assert_eq!(
        e,
        format!(
            "c.yaml:7:3: exporters.otlphttp/b.sending_queue.storage: `{}` is also the queue \
             directory of exporter `otlp/a`; each exporter needs its own",
            q.display()
        )
    );
    let e = err(&two_exporters(
        "  prometheus/a:\n    endpoint: 127.0.0.1:9999\n",
        "  prometheus/b:\n    endpoint: 127.0.0.1:9999\n",
    ));
    assert_eq!(
        e,
        "c.yaml:6:3: exporters.prometheus/b.endpoint: `127.0.0.1:9999` is also the listen \
         address of exporter `prometheus/a`; each exporter needs its own"
    );
}

#[test]
fn two_aggregate_processors_in_one_pipeline_fail_at_load() {
    let e = err(
        "receivers:\n  ebpf:\nprocessors:\n  aggregate/a:\n  aggregate/b:\nexporters:\n  console:\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [aggregate/a, aggregate/b]\n      exporters: [console]\n",
    );
    assert_eq!(
        e,
        "c.yaml:11:7: service.pipelines.metrics: pipeline `metrics` lists 2 aggregate \
         processors (aggregate/a, aggregate/b); a pipeline groups its flows once, so list one"
    );
}

#[test]
fn component_locations_are_kept() {
    let l = load(&with_exporter(
        "otlp_grpc/gw",
        "    endpoint: ${OTLP_ENDPOINT}",
    ))
    .unwrap();
    assert_eq!(
        l.locations["exporters.otlp_grpc/gw"].to_string(),
        "c.yaml:4:3"
    );
    assert_eq!(l.locations["receivers.ebpf"].to_string(), "c.yaml:2:3");
    let _ = Path::new("");
}

#[test]
fn a_flow_table_larger_than_a_kernel_map_fails_at_load() {
    let e = err(
        "receivers:\n  ebpf:\n    max_tracked_flows: 4294967296\nexporters:\n  console:\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      exporters: [console]\n",
    );
    assert_eq!(
        e,
        "c.yaml:3:24: receivers.ebpf.max_tracked_flows: max_tracked_flows must be between 1 \
         and 4294967295 (a kernel map's size)"
    );
}

#[test]
fn prometheusremotewrite_errors_name_line_and_key() {
    let e = err(&with_exporter(
        "prometheusremotewrite",
        "    endpoint: http://127.0.0.1:9090/api/v1/write\n    external_labels:\n      cluster: \"\"",
    ));
    assert!(
        e.starts_with("c.yaml:7:7: exporters.prometheusremotewrite.external_labels: "),
        "{e}"
    );
    assert!(e.contains("the value of `cluster` is empty"), "{e}");
    let e = err(&with_exporter(
        "prometheusremotewrite",
        "    endpoint: 127.0.0.1:9090/api/v1/write",
    ));
    assert!(
        e.starts_with("c.yaml:5:15: exporters.prometheusremotewrite.endpoint: `127.0.0.1:9090/api/v1/write` has no scheme"),
        "{e}"
    );
    let e = err(&with_exporter(
        "prometheusremotewrite",
        "    endpoint: http://x:1/w\n    remote_write_queue:\n      num_consumer: 2",
    ));
    assert!(
        e.contains("exporters.prometheusremotewrite.remote_write_queue")
            && e.contains("num_consumer"),
        "{e}"
    );
}
