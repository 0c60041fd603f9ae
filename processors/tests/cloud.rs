//! Cloud detection against fake AWS (IMDSv2 token dance), GCP and Azure
//! metadata servers on 127.0.0.1, and with none reachable.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use flowscope_model::names::resource as res;
use flowscope_model::{Attrs, Context, Role, Transport};
use flowscope_otel_config::processors::{CloudEndpoints, CloudProviderName};
use flowscope_processors::{Builder, Chain};

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
}

type Handler = dyn Fn(&Request) -> (u16, Vec<(&'static str, &'static str)>, String) + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers each request with
/// `handler` and records it. Stops when dropped.
struct Fake {
    port: u16,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    fn start(handler: Box<Handler>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(req) = read_request(&conn) else {
                    continue;
                };
                l.lock().expect("log").push(req.clone());
                let (status, headers, body) = handler(&req);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body.as_bytes());
            }
        });
        Fake { port, log, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Some(Request {
        method,
        target,
        headers,
    })
}

/// A port with nothing listening (bound, then released).
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn aws_fake() -> Fake {
    Fake::start(Box::new(|r: &Request| {
        match (r.method.as_str(), r.target.as_str()) {
            ("PUT", "/latest/api/token")
                if r.headers
                    .contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
            {
                (200, vec![], "tok-123".into())
            }
            ("GET", "/latest/dynamic/instance-identity/document") => {
                if r.headers
                    .get("x-aws-ec2-metadata-token")
                    .map(String::as_str)
                    != Some("tok-123")
                {
                    return (401, vec![], String::new());
                }
                let doc = r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b",
                 "imageId":"ami-1","instanceId":"i-0abc","instanceType":"m5.large","region":"eu-west-1"}"#;
                (200, vec![], doc.into())
            }
            _ => (404, vec![], String::new()),
        }
    }))
}

fn gcp_fake() -> Fake {
    Fake::start(Box::new(|r: &Request| {
        if r.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
            return (403, vec![], String::new());
        }
        let body = match r.target.as_str() {
            "/computeMetadata/v1/instance/zone" => "projects/4242/zones/europe-west4-b",
            "/computeMetadata/v1/project/project-id" => "shop-prod",
            "/computeMetadata/v1/instance/id" => "8811",
            _ => return (404, vec![("Metadata-Flavor", "Google")], String::new()),
        };
        (200, vec![("Metadata-Flavor", "Google")], body.into())
    }))
}

fn azure_fake() -> Fake {
    Fake::start(Box::new(|r: &Request| {
        if r.headers.get("metadata").map(String::as_str) != Some("true")
            || r.target != "/metadata/instance/compute?api-version=2021-02-01"
        {
            return (400, vec![], String::new());
        }
        let body = r#"{"location":"westeurope","zone":"2","subscriptionId":"sub-1","vmId":"vm-9","name":"n"}"#;
        (200, vec![], body.into())
    }))
}

fn cloud_chain(yaml: &str) -> Chain {
    chain_from_yaml(yaml, &["cloud"])
}

fn one_resource(chain: &mut Chain) -> Arc<Attrs> {
    let f = with_bytes(
        flow(
            &resource("app"),
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40000",
            "198.18.0.2:443",
        ),
        1,
        0,
    );
    let out = chain.process(batch(vec![f]));
    out.points[0].resource.clone()
}

/// Processes batches until the Resource carries `cloud.provider`.
fn until_detected(chain: &mut Chain) -> Arc<Attrs> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = one_resource(chain);
        if r.get(res::CLOUD_PROVIDER).is_some() {
            return r;
        }
        assert!(Instant::now() < deadline, "no cloud detected: {r:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cloud_keys(r: &Attrs) -> Vec<(String, String)> {
    r.iter()
        .filter(|(k, _)| k.starts_with("cloud.") || *k == res::HOST_ID)
        .map(|(k, v)| (k.to_owned(), v.to_string()))
        .collect()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn aws_imdsv2_token_then_identity_document() {
    let aws = aws_fake();
    let mut chain = cloud_chain(&format!(
        "  cloud:\n    detectors: [aws]\n    timeout: 2s\n    endpoints: {{aws: \"{}\"}}",
        aws.url()
    ));
    let r = until_detected(&mut chain);
    assert_eq!(
        cloud_keys(&r),
        kv(&[
            ("cloud.account.id", "123456789012"),
            ("cloud.availability_zone", "eu-west-1b"),
            ("cloud.platform", "aws_ec2"),
            ("cloud.provider", "aws"),
            ("cloud.region", "eu-west-1"),
            ("host.id", "i-0abc"),
        ])
    );
    assert_eq!(r.get_str(res::SERVICE_NAME), Some("app"));
    let reqs: Vec<(String, String)> = aws
        .requests()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    assert_eq!(
        reqs,
        [
            ("PUT".to_owned(), "/latest/api/token".to_owned()),
            (
                "GET".to_owned(),
                "/latest/dynamic/instance-identity/document".to_owned()
            )
        ]
    );
    // Two processors with the same settings built for one agent (one
    // builder, two pipelines) share one detection: two more requests, not
    // four.
    let mut both = chains_from_yaml(
        &format!(
            "  cloud:\n    detectors: [aws]\n    timeout: 2s\n    endpoints: {{aws: \"{}\"}}",
            aws.url()
        ),
        &[("metrics/a", &["cloud"]), ("metrics/b", &["cloud"])],
        &Context::default(),
    );
    assert_eq!(cloud_keys(&until_detected(&mut both[0])), cloud_keys(&r));
    assert_eq!(cloud_keys(&until_detected(&mut both[1])), cloud_keys(&r));
    assert_eq!(aws.requests().len(), 4);
}

#[test]
fn gcp_metadata_flavor() {
    let gcp = gcp_fake();
    let mut chain = cloud_chain(&format!(
        "  cloud:\n    detectors: [gcp]\n    endpoints: {{gcp: \"{}\"}}",
        gcp.url()
    ));
    let r = until_detected(&mut chain);
    assert_eq!(
        cloud_keys(&r),
        kv(&[
            ("cloud.account.id", "shop-prod"),
            ("cloud.availability_zone", "europe-west4-b"),
            ("cloud.platform", "gcp_compute_engine"),
            ("cloud.provider", "gcp"),
            ("cloud.region", "europe-west4"),
            ("host.id", "8811"),
        ])
    );
}

#[test]
fn azure_instance_metadata() {
    let azure = azure_fake();
    let mut chain = cloud_chain(&format!(
        "  cloud:\n    detectors: [azure]\n    endpoints: {{azure: \"{}\"}}",
        azure.url()
    ));
    let r = until_detected(&mut chain);
    assert_eq!(
        cloud_keys(&r),
        kv(&[
            ("cloud.account.id", "sub-1"),
            ("cloud.availability_zone", "2"),
            ("cloud.platform", "azure.vm"),
            ("cloud.provider", "azure"),
            ("cloud.region", "westeurope"),
            ("host.id", "vm-9"),
        ])
    );
}

#[test]
fn the_first_configured_provider_that_answers_wins_and_config_overrides() {
    let (aws, gcp) = (aws_fake(), gcp_fake());
    // GCP is asked first; AWS also answers but comes second. The azure
    // endpoint is closed and simply fails.
    let mut chain = cloud_chain(&format!(
        "  cloud:\n    detectors: [azure, gcp, aws]\n    endpoints: {{aws: \"{}\", gcp: \"{}\", azure: \"{}\"}}\n    set: {{availability_zone: europe-west4-c, account_id: override}}",
        aws.url(),
        gcp.url(),
        closed_port()
    ));
    let r = until_detected(&mut chain);
    assert_eq!(r.get_str(res::CLOUD_PROVIDER), Some("gcp"));
    assert_eq!(
        r.get_str(res::CLOUD_AVAILABILITY_ZONE),
        Some("europe-west4-c")
    );
    assert_eq!(r.get_str(res::CLOUD_ACCOUNT_ID), Some("override"));
    assert_eq!(r.get_str(res::CLOUD_REGION), Some("europe-west4"));
}

#[test]
fn with_no_metadata_service_the_pipeline_starts_at_once_with_unknown_location() {
    // A server that accepts and never answers (times out), and two closed
    // ports (refused).
    let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_url = format!("http://{}", hole.local_addr().expect("addr"));
    let (gcp_url, azure_url) = (closed_port(), closed_port());
    let yaml = format!(
        "  cloud:\n    timeout: 300ms\n    endpoints: {{aws: \"{hole_url}\", gcp: \"{gcp_url}\", azure: \"{azure_url}\"}}\n    set: {{region: on-prem-1}}"
    );
    // Behaviour bound, not a speed goal: building the processor and running
    // the first interval must not wait for the metadata services (which here
    // take the full 300 ms timeout to fail). 1 s leaves room for a loaded CI
    // machine; the real cost is microseconds (see docs/benchmarks).
    let t0 = Instant::now();
    let builder = Builder::new(&Context::default());
    let mut chain = chains_from_yaml_with(&yaml, &[("metrics", &["cloud"])], &builder).remove(0);
    let r = one_resource(&mut chain);
    let elapsed = t0.elapsed();
    assert!(elapsed < Duration::from_secs(1), "startup took {elapsed:?}");
    assert_eq!(cloud_keys(&r), kv(&[("cloud.region", "on-prem-1")]));

    // Once every provider has failed (the black hole only after its
    // timeout), flows still carry only the configured value. The detection
    // is shared per settings within a builder, so asking for the same one
    // finds it.
    let endpoints = CloudEndpoints {
        aws: hole_url.clone(),
        gcp: gcp_url,
        azure: azure_url,
    };
    let all = [
        CloudProviderName::Aws,
        CloudProviderName::Gcp,
        CloudProviderName::Azure,
    ];
    let detection = builder
        .detections()
        .detect(&all, &endpoints, Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(10);
    while detection.result().is_none() {
        assert!(Instant::now() < deadline, "detection never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(detection.result(), Some(&None));
    assert_eq!(
        cloud_keys(&one_resource(&mut chain)),
        kv(&[("cloud.region", "on-prem-1")])
    );
    drop(hole);
}
