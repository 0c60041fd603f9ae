//! The deployment files, checked without a cluster or a running systemd
//! (issue 13): the Prometheus rules with promtool's checker and unit tests,
//! the kustomize base and overlays rendered by `kubectl kustomize` and
//! validated against the Kubernetes 1.31 schemas (kubernetes-validate,
//! strict: unknown fields fail), their configs by `flowscope validate`, the
//! systemd unit by `systemd-analyze verify`, scripts/install.sh into a
//! scratch root, and the capability list of the DaemonSet, the unit and
//! docs/security.md against the one the agent checks at start.

mod deploy_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use deploy_support::*;
use flowscope_integration::built_binary;
use flowscope_receiver::capabilities::CAPABILITIES;

const OVERLAYS: [&str; 4] = ["base", "overlays/endpoint", "overlays/tls", "overlays/ui"];

fn kubernetes_validate() -> PathBuf {
    let venv = std::env::var("FLOWSCOPE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/flowscope/tools")
        });
    let bin = venv.join("bin/kubernetes-validate");
    assert!(
        bin.exists(),
        "{} is missing: scripts/bootstrap.sh --test installs kubernetes-validate (PyPI) into that venv",
        bin.display()
    );
    bin
}

/// Runs kubernetes-validate --strict on `yaml`; Ok(output) or Err(output).
fn validate(yaml: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "-k", "1.31.0"])
        .arg(&file)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn prometheus_rules_check_and_pass_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let hint = "promtool comes with Debian's prometheus package (scripts/bootstrap.sh --test)";
    let out = run(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(dir.join("flowscope-rules.yaml")),
        hint,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 24 rules found"), "{text}");
    // The fleet view's recording rules (docs/fleet.md).
    let out = run(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(dir.join("flowscope-fleet-rules.yaml")),
        hint,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 8 rules found"), "{text}");
    let mut tests: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    tests.sort();
    assert_eq!(tests.len(), 8, "{tests:?}");
    let out = run(
        Command::new("promtool")
            .args(["test", "rules"])
            .args(&tests)
            .current_dir(dir.join("tests")),
        hint,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("SUCCESS").count(), 8, "{text}");
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it() {
    // Each alert of the rules file is expected to fire in some test case.
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/flowscope-rules.yaml")).unwrap();
    let alerts: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    let mut tested = String::new();
    for f in [
        "network.yaml",
        "path.yaml",
        "route.yaml",
        "certificate.yaml",
        "drops.yaml",
        "agent.yaml",
        "baseline.yaml",
    ] {
        tested += &std::fs::read_to_string(repo().join("deploy/prometheus/tests").join(f)).unwrap();
    }
    for a in &alerts {
        // An alert_rule_test whose exp_alerts is not empty.
        let fires = tested.split("alertname: ").skip(1).any(|rest| {
            rest.starts_with(&format!("{a}\n")) && !rest.lines().nth(1).unwrap_or("").contains("[]")
        });
        assert!(fires, "no promtool test makes {a} fire");
    }
    assert_eq!(alerts.len(), 24);
}

#[test]
fn kustomize_renders_valid_objects_and_configs() {
    let flowscope = built_binary("flowscope");
    for dir in OVERLAYS {
        let yaml = kustomize(&repo().join("deploy/kubernetes").join(dir));
        if let Err(e) = validate(&yaml) {
            panic!("{dir}: kubernetes-validate rejected the rendered objects:\n{e}");
        }
        let objs = objects(&yaml);
        let kinds: BTreeSet<String> = objs
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect();
        for k in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
        ] {
            assert!(kinds.contains(k), "{dir}: no {k} in {kinds:?}");
        }
        // The agent accepts the config it would get.
        let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        let name = cm["metadata"]["name"].as_str().unwrap();
        let config = cm["data"]["flowscope.yaml"]
            .as_str()
            .expect("flowscope.yaml in the ConfigMap");
        let ds = object(&objs, "DaemonSet", "flowscope");
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "config")
                .unwrap()["configMap"]["name"],
            name,
            "{dir}: the DaemonSet mounts the generated ConfigMap"
        );
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("flowscope.yaml");
        // validate reads the TLS files: give it a self-signed certificate
        // (as CA and client certificate) where the Secret would be mounted.
        let config_here = if config.contains("/etc/flowscope/tls/") {
            run(
                Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-nodes",
                    ])
                    .args([
                        "-subj",
                        "/CN=flowscope",
                        "-days",
                        "1",
                        "-keyout",
                        "tls.key",
                        "-out",
                        "tls.crt",
                    ])
                    .current_dir(tmp.path()),
                "openssl (scripts/bootstrap.sh --test)",
            );
            std::fs::copy(tmp.path().join("tls.crt"), tmp.path().join("ca.crt")).unwrap();
            config.replace("/etc/flowscope/tls/", &format!("{}/", tmp.path().display()))
        } else {
            config.to_string()
        };
        std::fs::write(&file, config_here).unwrap();
        let env = &spec["containers"][0]["env"];
        let endpoint = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "FLOWSCOPE_OTLP_ENDPOINT")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
        let out = Command::new(&flowscope)
            .args(["validate", "--config"])
            .arg(&file)
            .env("FLOWSCOPE_OTLP_ENDPOINT", &endpoint)
            .env("POD_IP", "198.18.0.1")
            .env("FLOWSCOPE_UI_TOKEN", "t")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{dir}: flowscope validate: {err}");
        match dir {
            "overlays/endpoint" => {
                assert_eq!(
                    endpoint,
                    "http://collector.monitoring.svc.cluster.local:4317"
                )
            }
            "overlays/tls" => {
                assert!(endpoint.starts_with("https://"), "{endpoint}");
                assert!(
                    config.contains("ca_file: /etc/flowscope/tls/ca.crt"),
                    "{config}"
                );
                let vols = spec["volumes"].as_array().unwrap();
                assert!(
                    vols.iter()
                        .any(|v| v["secret"]["secretName"] == "flowscope-otlp-tls")
                );
            }
            "overlays/ui" => {
                let svc = object(&objs, "Service", "flowscope-ui");
                assert_eq!(svc["spec"]["ports"][0]["port"], 8686);
                assert!(config.contains("exporters: [otlp, ui]"), "{config}");
            }
            _ => assert_eq!(endpoint, "http://otel-collector.observability.svc:4317"),
        }
    }
}

#[test]
fn fleet_ui_deployment_is_valid_and_unprivileged() {
    let yaml = kustomize(&repo().join("deploy/kubernetes/fleet-ui"));
    if let Err(e) = validate(&yaml) {
        panic!("fleet-ui: kubernetes-validate rejected the rendered objects:\n{e}");
    }
    let objs = objects(&yaml);
    let d = object(&objs, "Deployment", "flowscope-fleet-ui");
    let spec = &d["spec"]["template"]["spec"];
    // The fleet view reads storage over HTTP: no host namespace, no root,
    // no capability.
    for k in ["hostPID", "hostNetwork"] {
        assert!(spec[k].is_null() || spec[k] == false, "{k}: {spec}");
    }
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args[0], "ui", "{args:?}");
    assert!(
        args.iter().any(|a| a.starts_with("--prometheus=")),
        "{args:?}"
    );
    let svc = object(&objs, "Service", "flowscope-fleet-ui");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8687);
    // The binary accepts exactly these arguments (its --help parses them).
    let out = Command::new(built_binary("flowscope"))
        .args(["ui", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(help.contains(flag), "flowscope ui has no {flag}: {help}");
    }
}

#[test]
fn schema_validation_rejects_an_unknown_field() {
    // The validator is strict: a misspelt field fails (so the test above
    // can fail).
    let yaml = kustomize(&repo().join("deploy/kubernetes/base"));
    let broken = yaml.replacen("hostPID: true", "hostPID: true\n      hostPIDs: true", 1);
    assert_ne!(broken, yaml);
    let err = validate(&broken).expect_err("an unknown field must fail validation");
    assert!(err.contains("hostPIDs"), "{err}");
}

#[test]
fn daemonset_has_the_agents_capabilities_and_mounts() {
    for dir in OVERLAYS {
        let objs = objects(&kustomize(&repo().join("deploy/kubernetes").join(dir)));
        let ds = object(&objs, "DaemonSet", "flowscope");
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["hostPID"], true, "{dir}");
        assert_eq!(spec["hostNetwork"], true, "{dir}");
        let c = &spec["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false, "{dir}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{dir}"
        );
        let mut add: Vec<String> = sc["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        add.sort();
        assert_eq!(
            add,
            code_caps_short(),
            "{dir}: DaemonSet capabilities vs receiver/src/capabilities.rs"
        );
        let mounts: BTreeSet<&str> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        for m in [
            "/sys/kernel/btf",
            "/sys/kernel/tracing",
            "/sys/fs/cgroup",
            "/run/netns",
            "/etc/flowscope",
            "/var/lib/flowscope",
            "/sys/fs/bpf",
        ] {
            assert!(mounts.contains(m), "{dir}: {m} not mounted: {mounts:?}");
        }
        let env: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(env.contains(&"OTEL_RESOURCE_ATTRIBUTES"), "{dir}");
        assert_eq!(c["resources"]["limits"]["memory"], "768Mi");
    }
}

/// The capabilities a `Key=CAP_A CAP_B` line of the unit names, sorted.
fn unit_caps(unit: &str, key: &str) -> Vec<String> {
    let mut v: Vec<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn systemd_unit_has_the_agents_capabilities_and_verifies() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/flowscope.service")).unwrap();
    assert_eq!(unit_caps(&unit, "CapabilityBoundingSet"), code_caps());
    assert_eq!(unit_caps(&unit, "AmbientCapabilities"), code_caps());
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/flowscope -/sys/fs/bpf/flowscope",
        "ExecStartPre=-+/bin/mkdir -p /sys/fs/bpf/flowscope",
    ] {
        assert!(unit.lines().any(|l| l == key), "{key} missing");
    }
    // systemd-analyze verify wants the ExecStart binary to exist: point it
    // at the one built for these tests.
    let flowscope = built_binary("flowscope");
    let dir = tempfile::tempdir().unwrap();
    let verify = |text: &str| -> String {
        let path = dir.path().join("flowscope.service");
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd package; scripts/bootstrap.sh --test)");
        format!(
            "{}{}{}",
            if out.status.success() { "" } else { "failed\n" },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let local = unit.replace("/usr/local/bin/flowscope", &flowscope.display().to_string());
    assert_eq!(
        verify(&local).trim(),
        "",
        "systemd-analyze verify complained"
    );
    // It does complain about a misspelt key (so the check above can fail).
    let typo = local.replace("ProtectSystem=strict", "ProtectSytem=strict");
    assert!(
        verify(&typo).contains("Unknown key"),
        "a misspelt key went unnoticed"
    );
}

#[test]
fn install_script_installs_binary_unit_and_config() {
    let root = tempfile::tempdir().unwrap();
    let flowscope = built_binary("flowscope");
    run(
        Command::new(repo().join("scripts/install.sh"))
            .arg("--root")
            .arg(root.path())
            .env("FLOWSCOPE_BIN", &flowscope),
        "scripts/install.sh",
    );
    let p = |s: &str| root.path().join(s);
    assert_eq!(
        std::fs::read(p("usr/local/bin/flowscope")).unwrap(),
        std::fs::read(&flowscope).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(p("etc/systemd/system/flowscope.service")).unwrap(),
        std::fs::read_to_string(repo().join("deploy/systemd/flowscope.service")).unwrap()
    );
    run(
        Command::new(&flowscope)
            .args(["validate", "--config"])
            .arg(p("etc/flowscope/flowscope.yaml")),
        "the installed config",
    );
    // The service pins its counters where the unit lets it write.
    let installed = std::fs::read_to_string(p("etc/flowscope/flowscope.yaml")).unwrap();
    assert!(
        installed
            .lines()
            .any(|l| l == "    pin_directory: /sys/fs/bpf/flowscope"),
        "the installed config does not set pin_directory"
    );
    // The embedded default, which `scripts/run.sh` uses, does not pin.
    let default = Command::new(&flowscope)
        .arg("default-config")
        .output()
        .unwrap();
    let default = String::from_utf8(default.stdout).unwrap();
    assert!(default.contains("    # pin_directory: /sys/fs/bpf/flowscope\n"));
    // A second run keeps the config in place.
    std::fs::write(p("etc/flowscope/flowscope.yaml"), "# mine\n").unwrap();
    run(
        Command::new(repo().join("scripts/install.sh"))
            .arg("--root")
            .arg(root.path())
            .env("FLOWSCOPE_BIN", &flowscope),
        "scripts/install.sh",
    );
    assert_eq!(
        std::fs::read_to_string(p("etc/flowscope/flowscope.yaml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn security_doc_explains_every_capability() {
    let doc = std::fs::read_to_string(repo().join("docs/security.md")).unwrap();
    for c in CAPABILITIES {
        assert!(
            doc.contains(&format!("### {}", c.name)),
            "docs/security.md has no section for {}",
            c.name
        );
    }
    let containerfile =
        std::fs::read_to_string(repo().join("deploy/container/Containerfile")).unwrap();
    let line = containerfile
        .lines()
        .find(|l| l.contains("--cap-add="))
        .expect("the Containerfile's example names the capabilities");
    let mut caps: Vec<String> = line
        .split("--cap-add=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    caps.sort();
    assert_eq!(caps, code_caps_short());
}

#[test]
fn startup_check_names_every_missing_capability_at_once() {
    flowscope_integration::require_root();
    // The agent as root but without CAP_NET_RAW and CAP_SYS_PTRACE in its
    // bounding set (as a unit or pod missing them would run it): one error
    // naming both, before anything is loaded.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("flowscope.yaml");
    std::fs::write(
        &cfg,
        "receivers:\n  ebpf: {}\n  dns: {}\n\
         exporters:\n  console: {}\n\
         service:\n  pipelines:\n    metrics:\n      receivers: [ebpf, dns]\n      exporters: [console]\n",
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-net_raw,-sys_ptrace",
            "--inh-caps=-all",
            "--",
        ])
        .arg(built_binary("flowscope"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("flowscope lacks CAP_NET_RAW, CAP_SYS_PTRACE (effective capabilities "),
        "{err}"
    );
    assert!(err.contains("docs/security.md"), "{err}");
}
