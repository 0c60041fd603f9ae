//! Loader tests: whole files in, typed config or exact error messages out.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::exporters::{ConsoleExporterConfig, FileExporterConfig, Rotation};
use crate::receivers::{EbpfReceiverConfig, ResourceGranularity};

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Loaded, ConfigError> {
    load_str_with_env(text, "config.yaml", &no_env)
}

fn err(text: &str) -> String {
    match load(text) {
        Ok(loaded) => panic!("expected an error, got {loaded:?}"),
        Err(e) => e.to_string(),
    }
}

/// The `ebpf` settings (other receiver types get added to the enum later).
fn ebpf(config: &ReceiverConfig) -> &EbpfReceiverConfig {
    match config {
        ReceiverConfig::Ebpf(ebpf) => ebpf,
        #[allow(unreachable_patterns)]
        other => panic!("expected an ebpf receiver, got {other:?}"),
    }
}

fn id(s: &str) -> ComponentId {
    s.parse().unwrap()
}

/// A valid pipeline section, so tests can vary the components above it.
const SERVICE: &str = "service:
  pipelines:
    metrics:
      receivers: [ebpf]
      exporters: [console]
";

#[test]
fn default_config_loads_with_documented_values() {
    let loaded = default_config();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = &loaded.config;
    assert_eq!(
        c.receivers.get(&id("ebpf")),
        Some(&ReceiverConfig::Ebpf(EbpfReceiverConfig::default()))
    );
    let ebpf = ebpf(&c.receivers[0]);
    assert_eq!(ebpf.collection_interval, Duration::from_secs(10));
    assert_eq!(ebpf.max_tracked_flows, 65_536);
    assert_eq!(ebpf.ring_buffer_bytes, 4_194_304);
    assert_eq!(
        c.exporters.get(&id("console")),
        Some(&ExporterConfig::Console(ConsoleExporterConfig {
            max_rows: 20
        }))
    );
    assert_eq!(
        c.exporters.get(&id("file")),
        Some(&ExporterConfig::File(FileExporterConfig {
            path: PathBuf::from("flowscope-metrics.jsonl"),
            rotation: Rotation {
                max_megabytes: 100,
                max_backups: 3
            },
        }))
    );
    assert_eq!(
        c.receivers.get(&id("dns")),
        Some(&ReceiverConfig::Dns(
            crate::receivers::DnsReceiverConfig::default()
        ))
    );
    let kinds: Vec<&str> = c.processors.values().map(|p| p.kind()).collect();
    assert_eq!(kinds, vec!["peer", "locality"]);
    let pipelines: Vec<_> = c.service.pipelines.iter().collect();
    assert_eq!(
        pipelines,
        vec![(
            &"metrics".parse::<PipelineId>().unwrap(),
            &Pipeline {
                receivers: vec![id("ebpf"), id("dns")],
                processors: vec![id("peer"), id("locality")],
                exporters: vec![id("console"), id("file"), id("ui")],
            }
        )]
    );
    assert_eq!(
        c.exporters.get(&id("ui")),
        Some(&ExporterConfig::Ui(
            crate::exporters::UiExporterConfig::default()
        ))
    );
}

#[test]
fn a_relative_pin_directory_is_refused() {
    let text = format!(
        "receivers:
  ebpf:
    pin_directory: flowscope
exporters:
  console:
{SERVICE}"
    );
    let e = err(&text);
    assert!(
        e.starts_with("config.yaml:")
            && e.contains("receivers.ebpf")
            && e.contains("pin_directory flowscope is not an absolute path"),
        "{e}"
    );
}

#[test]
fn command_line_needs_process_granularity() {
    let text = format!(
        "receivers:
  ebpf:
    include_command_line: true
exporters:
  console:
{SERVICE}"
    );
    let e = err(&text);
    assert!(
        e.contains("receivers.ebpf")
            && e.contains("include_command_line: true needs resource_granularity: process"),
        "{e}"
    );
}

#[test]
fn ebpf_receiver_reads_every_field() {
    let loaded = load(&format!(
        "receivers:
  ebpf:
    collection_interval: 1m30s
    max_tracked_flows: 1000
    ring_buffer_bytes: 4096
    tcp: false
    udp: true
    resource_granularity: process
    include_command_line: true
    rtt_buckets: [0.001, 0.01]
    duration_buckets: [1, 60]
    pin_directory: /sys/fs/bpf/flowscope
exporters:
  console:
{SERVICE}"
    ))
    .unwrap();
    assert_eq!(
        loaded.config.receivers[&id("ebpf")],
        ReceiverConfig::Ebpf(EbpfReceiverConfig {
            collection_interval: Duration::from_secs(90),
            max_tracked_flows: 1000,
            ring_buffer_bytes: 4096,
            tcp: false,
            udp: true,
            resource_granularity: ResourceGranularity::Process,
            include_command_line: true,
            rtt_buckets: vec![0.001, 0.01],
            duration_buckets: vec![1.0, 60.0],
            nat: Default::default(),
            drops: Default::default(),
            pin_directory: Some("/sys/fs/bpf/flowscope".into()),
        })
    );
    // `console:` with no value means all defaults, as in the Collector.
    assert_eq!(
        loaded.config.exporters[&id("console")],
        ExporterConfig::Console(ConsoleExporterConfig { max_rows: 20 })
    );
}

#[test]
fn unknown_key_names_path_line_and_column() {
    let text = format!(
        "receivers:
  ebpf:
    collection_interval: 10s
    colection_interval: 5s
exporters:
  console:
{SERVICE}"
    );
    assert_eq!(
        err(&text),
        "config.yaml:4:5: receivers.ebpf.colection_interval: unknown field `colection_interval`, \
         expected one of collection_interval, max_tracked_flows, ring_buffer_bytes, tcp, udp, \
         resource_granularity, include_command_line, rtt_buckets, duration_buckets, nat, drops, pin_directory"
    );
    let e = load(&text).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::Parse { ref path, at: Location { line: Some(4), column: Some(5), .. }, .. }
            if path == "receivers.ebpf.colection_interval"
    ));
}

#[test]
fn unknown_keys_are_rejected_at_every_level() {
    let e = err("receivers:\n  ebpf:\nconnectors: {}\n");
    assert_eq!(
        e,
        "config.yaml:3:1: connectors: unknown field `connectors`, expected one of receivers, \
         processors, exporters, extensions, service"
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  console:\n{SERVICE}      exporter: [console]\n"
    ));
    assert_eq!(
        e,
        "config.yaml:10:7: service.pipelines.metrics.exporter: unknown field `exporter`, \
         expected one of receivers, processors, exporters"
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  file/out:\n    path: x\n    rotation:\n      max_mb: 5\n{SERVICE}"
    ));
    assert_eq!(
        e,
        "config.yaml:7:7: exporters.file/out.rotation.max_mb: unknown field `max_mb`, \
         expected one of max_megabytes, max_backups"
    );
}

#[test]
fn bad_type_names_path_line_column_and_found_text() {
    let text = format!(
        "receivers:
  ebpf:
exporters:
  console:
  file/out:
    path: /tmp/x.jsonl
    rotation:
      max_megabytes: \"x\"
{SERVICE}"
    );
    assert_eq!(
        err(&text),
        "config.yaml:8:22: exporters.file/out.rotation.max_megabytes: invalid type: string \"x\", expected u64"
    );
    let e = err(&format!(
        "receivers:\n  ebpf: {{tcp: maybe}}\nexporters:\n  console:\n{SERVICE}"
    ));
    assert_eq!(
        e,
        "config.yaml:2:15: receivers.ebpf.tcp: invalid type: string \"maybe\", expected a boolean (true or false)"
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\n    rtt_buckets: [0.1, fast]\nexporters:\n  console:\n{SERVICE}"
    ));
    assert_eq!(
        e,
        "config.yaml:3:24: receivers.ebpf.rtt_buckets[1]: invalid type: string \"fast\", expected floating point"
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\n    ring_buffer_bytes: -1\nexporters:\n  console:\n{SERVICE}"
    ));
    assert_eq!(
        e,
        "config.yaml:3:24: receivers.ebpf.ring_buffer_bytes: invalid value: -1, expected u32"
    );
}

#[test]
fn out_of_range_values_are_rejected_where_they_are() {
    let cases = [
        (
            "collection_interval: 500ms",
            "config.yaml:3:26: receivers.ebpf.collection_interval: collection_interval 500ms is below the minimum of 1s",
        ),
        (
            "collection_interval: 10",
            "config.yaml:3:26: receivers.ebpf.collection_interval: invalid duration `10`: time unit needed, for example 10sec or 10ms (write e.g. `10s`, `500ms`, `1m30s`)",
        ),
        (
            "max_tracked_flows: 0",
            "config.yaml:3:24: receivers.ebpf.max_tracked_flows: max_tracked_flows must be between 1 and 4294967295 (a kernel map's size)",
        ),
        (
            "max_tracked_flows: 4294967296",
            "config.yaml:3:24: receivers.ebpf.max_tracked_flows: max_tracked_flows must be between 1 and 4294967295 (a kernel map's size)",
        ),
        (
            "ring_buffer_bytes: 6000",
            "config.yaml:3:24: receivers.ebpf.ring_buffer_bytes: ring_buffer_bytes 6000 must be a power of two and at least 4096 (e.g. 65536, 1048576)",
        ),
        (
            "ring_buffer_bytes: 2048",
            "config.yaml:3:24: receivers.ebpf.ring_buffer_bytes: ring_buffer_bytes 2048 must be a power of two and at least 4096 (e.g. 65536, 1048576)",
        ),
        (
            "rtt_buckets: [0.1, 0.1]",
            "config.yaml:3:18: receivers.ebpf.rtt_buckets: bucket bounds must be strictly increasing: bound #1 (0.1) is not greater than bound #0 (0.1)",
        ),
        (
            "duration_buckets: []",
            "config.yaml:3:23: receivers.ebpf.duration_buckets: at least one bucket bound is required",
        ),
        (
            "duration_buckets: [-1, 2]",
            "config.yaml:3:23: receivers.ebpf.duration_buckets: bucket bound #0 (-1) must be a finite, non-negative number of seconds",
        ),
        (
            "resource_granularity: pod",
            "config.yaml:3:27: receivers.ebpf.resource_granularity: unknown variant `pod`, expected one of service, process",
        ),
    ];
    for (line, expected) in cases {
        let text = format!("receivers:\n  ebpf:\n    {line}\nexporters:\n  console:\n{SERVICE}");
        assert_eq!(err(&text), expected, "for `{line}`");
    }
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  console: {{max_rows: 0}}\n{SERVICE}"
    ));
    assert_eq!(
        e,
        "config.yaml:4:23: exporters.console.max_rows: must be at least 1"
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  console:\n  file:\n{SERVICE}"
    ));
    assert_eq!(e, "config.yaml:5:7: exporters.file: missing field `path`");
}

#[test]
fn unknown_component_type_lists_known_types() {
    let e = err(&format!(
        "receivers:\n  ebpf:\n  nosuch/in: {{brokers: [a]}}\nexporters:\n  console:\n{SERVICE}"
    ));
    assert_eq!(
        e,
        format!(
            "config.yaml:3:14: receivers.nosuch/in: unknown receiver type `nosuch`; known receiver types: {}",
            ReceiverConfig::KINDS.join(", ")
        )
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  console:\n  nosuch:\n{SERVICE}"
    ));
    assert_eq!(
        e,
        format!(
            "config.yaml:5:9: exporters.nosuch: unknown exporter type `nosuch`; known exporter types: {}",
            ExporterConfig::KINDS.join(", ")
        )
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\nprocessors:\n  nosuch:\nexporters:\n  console:\n{SERVICE}"
    ));
    assert_eq!(
        e,
        format!(
            "config.yaml:4:9: processors.nosuch: unknown processor type `nosuch`; known processor types: {}",
            ProcessorConfig::KINDS.join(", ")
        )
    );
}

#[test]
fn bad_component_ids_are_rejected() {
    assert_eq!(
        err("receivers:\n  ebpf/:\n"),
        "config.yaml:2:3: receivers.ebpf/: `ebpf/` has an empty name after `/`; expected `type` or `type/name`"
    );
    assert_eq!(
        err("receivers:\n  ebpf:\n  ebpf:\n"),
        "config.yaml:3:3: receivers: duplicate key `ebpf`"
    );
}

#[test]
fn env_substitution_with_value_and_default() {
    let env = |name: &str| match name {
        "FLOWS" => Some("1234".to_owned()),
        "OUT" => Some("/tmp/out.jsonl".to_owned()),
        _ => None,
    };
    let text = format!(
        "receivers:
  ebpf:
    max_tracked_flows: ${{env:FLOWS}}
    collection_interval: ${{env:INTERVAL:-30s}}
exporters:
  console:
  file:
    path: ${{env:OUT}}
{SERVICE}"
    );
    let loaded = load_str_with_env(&text, "config.yaml", &env).unwrap();
    let ebpf = ebpf(&loaded.config.receivers[&id("ebpf")]);
    assert_eq!(ebpf.max_tracked_flows, 1234);
    assert_eq!(ebpf.collection_interval, Duration::from_secs(30));
    let Some(ExporterConfig::File(file)) = loaded.config.exporters.get(&id("file")) else {
        panic!("no file exporter");
    };
    assert_eq!(file.path, PathBuf::from("/tmp/out.jsonl"));
    // `file` is defined but not in the pipeline.
    assert_eq!(
        loaded.warnings,
        vec!["config.yaml: exporters.file is defined but no pipeline uses it; it will not run"]
    );
}

#[test]
fn unset_variable_names_the_variable_and_line() {
    let text = format!(
        "receivers:\n  ebpf:\nexporters:\n  console:\n  file:\n    path: ${{env:FLOWSCOPE_OUT}}\n{SERVICE}"
    );
    let e = load(&text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.yaml:6:11: environment variable `FLOWSCOPE_OUT` is not set (referenced as \
         ${env:FLOWSCOPE_OUT}; set it or give a default: ${env:FLOWSCOPE_OUT:-value})"
    );
    assert!(matches!(e, ConfigError::UnsetVariable { ref var, .. } if var == "FLOWSCOPE_OUT"));
}

#[test]
fn errors_after_a_substitution_point_at_the_text_as_written() {
    // `${env:N}` (8 chars) becomes `abc` or `12`; the column is the
    // reference's or, after it, the column as written, and the message
    // shows the substituted value.
    let env = |name: &str| (name == "N").then(|| "abc".to_owned());
    let text = format!(
        "receivers:\n  ebpf: {{max_tracked_flows: ${{env:N}}, tcp: 7}}\nexporters:\n  console:\n{SERVICE}"
    );
    assert_eq!(
        load_str_with_env(&text, "config.yaml", &env)
            .unwrap_err()
            .to_string(),
        "config.yaml:2:29: receivers.ebpf.max_tracked_flows: invalid type: string \"abc\", expected u64"
    );
    let env = |name: &str| (name == "N").then(|| "12".to_owned());
    assert_eq!(
        load_str_with_env(&text, "config.yaml", &env)
            .unwrap_err()
            .to_string(),
        "config.yaml:2:44: receivers.ebpf.tcp: invalid value: 7, expected a boolean (true or false)"
    );
}

#[test]
fn dollar_dollar_is_a_literal_dollar() {
    let text = format!(
        "receivers:\n  ebpf:\nexporters:\n  console:\n  file:\n    path: /tmp/a$${{env:HOME}}$$b.jsonl\n{SERVICE}"
    );
    let loaded = load(&text).unwrap();
    let Some(ExporterConfig::File(file)) = loaded.config.exporters.get(&id("file")) else {
        panic!("no file exporter");
    };
    assert_eq!(file.path, PathBuf::from("/tmp/a${env:HOME}$b.jsonl"));
}

#[test]
fn missing_pipeline_reference_names_pipeline_and_id() {
    let e = err("receivers:
  ebpf:
exporters:
  console:
service:
  pipelines:
    metrics/main:
      receivers: [ebpf]
      exporters: [console, file/out]
");
    assert_eq!(
        e,
        "config.yaml:9:28: service.pipelines.metrics/main.exporters[1]: exporter `file/out` is \
         not defined under `exporters` (defined exporters: console)"
    );
    let e = err("receivers:
  ebpf:
exporters:
  console:
service:
  pipelines:
    metrics:
      receivers: [ebpf]
      processors: [aggregate]
      exporters: [console]
");
    assert_eq!(
        e,
        "config.yaml:9:20: service.pipelines.metrics.processors[0]: processor `aggregate` is not \
         defined under `processors` (no processors are defined)"
    );
}

#[test]
fn pipelines_need_receivers_exporters_and_the_metrics_signal() {
    let base = "receivers:\n  ebpf:\nexporters:\n  console:\nservice:\n  pipelines:\n";
    assert_eq!(
        err(&format!("{base}    metrics:\n      receivers: [ebpf]\n")),
        "config.yaml:8:7: service.pipelines.metrics: pipeline `metrics` has no exporters; list at \
         least one under `exporters`"
    );
    assert_eq!(
        err(&format!(
            "{base}    metrics:\n      receivers: []\n      exporters: [console]\n"
        )),
        "config.yaml:8:7: service.pipelines.metrics: pipeline `metrics` has no receivers; list at \
         least one under `receivers`"
    );
    assert_eq!(
        err(&format!("{base}    traces:\n      receivers: [ebpf]\n")),
        "config.yaml:7:5: service.pipelines.traces: pipeline `traces`: flowscope only produces \
         metrics; use `metrics` or `metrics/<name>`"
    );
    assert_eq!(
        err(&format!("{base}    {{}}\n")),
        "config.yaml:7:5: service.pipelines: at least one pipeline is required, e.g. `metrics: \
         {receivers: [ebpf], exporters: [console]}`"
    );
    assert_eq!(
        err(&format!(
            "{base}    metrics:\n      receivers: [ebpf, ebpf]\n      exporters: [console]\n"
        )),
        "config.yaml:8:25: service.pipelines.metrics.receivers[1]: receiver `ebpf` is listed twice"
    );
    assert_eq!(
        err("receivers:\n  ebpf:\n"),
        "config.yaml:1:1: missing field `service`"
    );
    assert_eq!(
        err("# nothing here\n\n"),
        "config.yaml:3:1: the configuration is empty; it needs `receivers`, `exporters` and \
         `service.pipelines` (see docs/configuration.md)"
    );
}

#[test]
fn several_pipelines_and_unused_components() {
    let loaded = load(
        "receivers:
  ebpf:
  ebpf/spare:
exporters:
  console:
  file/a: {path: a.jsonl}
  file/b: {path: b.jsonl}
service:
  pipelines:
    metrics/one:
      receivers: [ebpf]
      exporters: [file/a]
    metrics/two:
      receivers: [ebpf]
      exporters: [console, file/a]
",
    )
    .unwrap();
    let names: Vec<String> = loaded
        .config
        .service
        .pipelines
        .keys()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["metrics/one", "metrics/two"]);
    assert_eq!(
        loaded.warnings,
        [
            "config.yaml: receivers.ebpf/spare is defined but no pipeline uses it; it will not run",
            "config.yaml: exporters.file/b is defined but no pipeline uses it; it will not run",
        ]
    );
}

#[test]
fn load_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flowscope.yaml");
    std::fs::write(&path, "receivers:\n  ebpf:\n    bogus: 1\n").unwrap();
    let e = load_file(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3:5: receivers.ebpf.bogus: unknown field `bogus`, expected one of \
             collection_interval, max_tracked_flows, ring_buffer_bytes, tcp, udp, \
             resource_granularity, include_command_line, rtt_buckets, duration_buckets, nat, drops, pin_directory",
            path.display()
        )
    );
    std::fs::write(&path, DEFAULT_CONFIG).unwrap();
    let loaded = load_file(&path).unwrap();
    assert_eq!(loaded.config, default_config().config);
    assert_eq!(loaded.warnings, default_config().warnings);

    let missing = dir.path().join("missing.yaml");
    let e = load_file(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: cannot read the configuration file", missing.display())
    );
    let source = std::error::Error::source(&e).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.contains("No such file")));
}

#[test]
fn ui_tls_needs_a_readable_certificate_and_key() {
    let svc = SERVICE.replace("[console]", "[ui]");
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  ui:\n    tls: {{cert_file: /nonexistent/ui.pem}}\n{svc}"
    ));
    assert_eq!(
        e,
        "config.yaml:5:22: exporters.ui.tls.cert_file: cannot read `/nonexistent/ui.pem`: No such file or directory (os error 2)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ui.pem");
    std::fs::write(&cert, "not PEM").unwrap();
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  ui:\n    tls: {{cert_file: {}}}\n{svc}",
        cert.display()
    ));
    assert!(
        e.ends_with(&format!(
            "exporters.ui.tls.cert_file: `{}`: no PEM certificate (`-----BEGIN CERTIFICATE-----`) found",
            cert.display()
        )),
        "{e}"
    );
    let e = err(&format!(
        "receivers:\n  ebpf:\nexporters:\n  ui:\n    tls: {{}}\n{svc}"
    ));
    assert_eq!(
        e,
        "config.yaml:5:10: exporters.ui.tls: serving HTTPS needs both `cert_file` and `key_file` (PEM files)"
    );
}
