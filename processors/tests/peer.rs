//! Peer naming: shipped AWS and GCP ranges, an Azure service tags file,
//! CIDR tags, named services, same-host processes, and reloads.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use flowscope_model::names::attr;
use flowscope_model::{Context, Flow, Role, Transport};

/// The flow attributes after the `peer` processor of `yaml` saw a client
/// flow to `peer`.
fn enrich(chain: &mut flowscope_processors::Chain, peer: &str) -> flowscope_model::Attrs {
    let local = if peer.starts_with('[') {
        "[fd00::1]:40000"
    } else {
        "198.18.0.1:40000"
    };
    let f = with_bytes(
        flow(&resource("app"), Transport::Tcp, Role::Client, local, peer),
        1,
        0,
    );
    let out = chain.process(batch(vec![f]));
    let p: Vec<_> = out.points_named("network.flow.io").collect();
    assert_eq!(p.len(), 1);
    let mut a = p[0].attrs.clone();
    a.remove(attr::IO_DIRECTION);
    a
}

fn cloud(a: &flowscope_model::Attrs) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        a.get_str(attr::PEER_CLOUD_PROVIDER),
        a.get_str(attr::PEER_CLOUD_REGION),
        a.get_str(attr::PEER_CLOUD_SERVICE),
    )
}

#[test]
fn shipped_aws_and_gcp_ranges_longest_prefix_wins() {
    let mut chain = chain_from_yaml("  peer:", &["peer"]);
    // 140.179.36.208/28 S3 inside 140.179.0.0/16 AMAZON, both cn-north-1.
    let a = enrich(&mut chain, "140.179.36.210:443");
    assert_eq!(cloud(&a), (Some("aws"), Some("cn-north-1"), Some("S3")));
    assert_eq!(a.get_str(attr::PEER_SERVICE_NAME), Some("S3"));
    // Outside the /28 only the /16 matches, listed as AMAZON and EC2: EC2 is
    // the more specific listing, but still no particular service.
    let a = enrich(&mut chain, "140.179.1.1:443");
    assert_eq!(cloud(&a), (Some("aws"), Some("cn-north-1"), Some("EC2")));
    assert_eq!(a.get_str(attr::PEER_SERVICE_NAME), None);
    // 3.5.140.0/22 is listed as AMAZON, EC2 and S3: the named service wins.
    let a = enrich(&mut chain, "3.5.140.7:443");
    assert_eq!(cloud(&a), (Some("aws"), Some("ap-northeast-2"), Some("S3")));
    // 64.252.81.0/24 (EC2, sa-east-1) inside 64.252.64.0/18 (CloudFront, GLOBAL).
    let a = enrich(&mut chain, "64.252.81.5:443");
    assert_eq!(cloud(&a), (Some("aws"), Some("sa-east-1"), Some("EC2")));
    // IPv6: 2600:9000:a310::/48 S3 (GLOBAL: no region) inside an AMAZON /40.
    let a = enrich(&mut chain, "[2600:9000:a310::1]:443");
    assert_eq!(cloud(&a), (Some("aws"), None, Some("S3")));
    // GCP, IPv4 and IPv6.
    let a = enrich(&mut chain, "34.1.208.9:443");
    assert_eq!(
        cloud(&a),
        (Some("gcp"), Some("africa-south1"), Some("Google Cloud"))
    );
    let a = enrich(&mut chain, "[2600:1900:8000::7]:443");
    assert_eq!(
        cloud(&a),
        (Some("gcp"), Some("africa-south1"), Some("Google Cloud"))
    );
    // An IPv4-mapped IPv6 peer is looked up as IPv4.
    let a = enrich(&mut chain, "[::ffff:140.179.36.210]:443");
    assert_eq!(cloud(&a), (Some("aws"), Some("cn-north-1"), Some("S3")));
    // Not a cloud address.
    let a = enrich(&mut chain, "198.18.9.9:443");
    assert_eq!(cloud(&a), (None, None, None));
}

const AZURE: &str = r#"{
  "changeNumber": 1, "cloud": "Public",
  "values": [
    {"name": "AzureCloud.westeurope", "id": "AzureCloud.westeurope",
     "properties": {"region": "westeurope", "platform": "Azure", "systemService": "",
                    "addressPrefixes": ["20.50.0.0/16", "2603:1020::/40"]}},
    {"name": "Storage.WestEurope", "id": "Storage.WestEurope",
     "properties": {"region": "westeurope", "platform": "Azure", "systemService": "AzureStorage",
                    "addressPrefixes": ["20.50.64.0/20"]}},
    {"name": "Storage", "id": "Storage",
     "properties": {"region": "", "platform": "Azure", "systemService": "AzureStorage",
                    "addressPrefixes": ["20.50.64.0/20", "2603:1020:5::/48"]}}
  ]
}"#;

#[test]
fn azure_service_tags_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ServiceTags_Public.json");
    std::fs::write(&path, AZURE).expect("write");
    let yaml = format!(
        "  peer:\n    builtin_ranges: false\n    azure_service_tags: {}",
        path.display()
    );
    let mut chain = chain_from_yaml(&yaml, &["peer"]);
    // The regional Storage listing wins over the global one for the same /20,
    // and the /20 over the AzureCloud /16.
    let a = enrich(&mut chain, "20.50.70.1:443");
    assert_eq!(
        cloud(&a),
        (Some("azure"), Some("westeurope"), Some("AzureStorage"))
    );
    assert_eq!(a.get_str(attr::PEER_SERVICE_NAME), Some("AzureStorage"));
    let a = enrich(&mut chain, "20.50.1.1:443");
    assert_eq!(
        cloud(&a),
        (Some("azure"), Some("westeurope"), Some("AzureCloud"))
    );
    let a = enrich(&mut chain, "[2603:1020:5::9]:443");
    assert_eq!(cloud(&a), (Some("azure"), None, Some("AzureStorage")));
    // builtin_ranges: false leaves AWS out.
    let a = enrich(&mut chain, "140.179.36.210:443");
    assert_eq!(cloud(&a), (None, None, None));
}

#[test]
fn a_bad_ranges_file_fails_the_build_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ip-ranges.json");
    std::fs::write(
        &path,
        "{\"prefixes\": [{\"ip_prefix\": \"1.2.3.0/33\", \"region\": \"x\", \"service\": \"S3\"}]}",
    )
    .expect("write");
    let text = format!(
        "receivers:\n  ebpf:\nprocessors:\n  peer:\n    aws_ip_ranges: {}\nexporters:\n  console:\nservice:\n  pipelines:\n    metrics:\n      receivers: [ebpf]\n      processors: [peer]\n      exporters: [console]\n",
        path.display()
    );
    let loaded =
        flowscope_otel_config::load_str_with_env(&text, "t.yaml", &|_| None).expect("config");
    let id: flowscope_otel_config::ComponentId = "peer".parse().expect("id");
    let err =
        match flowscope_processors::build(&id, &loaded.config.processors[&id], &Context::default())
        {
            Ok(_) => panic!("a bad file must fail the build"),
            Err(e) => e,
        };
    let mut chain = vec![err.to_string()];
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let text = chain.join(": ");
    assert!(
        text.starts_with("processor `peer`: cannot load its cloud range files"),
        "{text}"
    );
    assert!(
        text.contains(&path.display().to_string()) && text.contains("`1.2.3.0/33` is not a CIDR"),
        "{text}"
    );
}

#[test]
fn named_files_are_reloaded_when_they_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ip-ranges.json");
    let file = |region: &str| {
        format!(
            "{{\"prefixes\": [{{\"ip_prefix\": \"203.0.113.0/24\", \"region\": \"{region}\", \"service\": \"S3\"}}], \"ipv6_prefixes\": []}}"
        )
    };
    std::fs::write(&path, file("eu-west-1")).expect("write");
    let yaml = format!(
        "  peer:\n    aws_ip_ranges: {}\n    reload_interval: 20ms",
        path.display()
    );
    let mut chain = chain_from_yaml(&yaml, &["peer"]);
    let a = enrich(&mut chain, "203.0.113.5:443");
    assert_eq!(cloud(&a), (Some("aws"), Some("eu-west-1"), Some("S3")));
    // The named AWS file replaces the shipped one; GCP stays built in.
    assert_eq!(
        cloud(&enrich(&mut chain, "140.179.36.210:443")),
        (None, None, None)
    );
    assert_eq!(cloud(&enrich(&mut chain, "34.1.208.9:443")).0, Some("gcp"));

    // A different size makes the change visible even within one mtime tick.
    std::fs::write(&path, file("ap-southeast-2")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = enrich(&mut chain, "203.0.113.5:443");
        if cloud(&a).1 == Some("ap-southeast-2") {
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {a:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn cidr_tags_and_named_services_longest_network_wins() {
    let yaml = "  peer:
    builtin_ranges: false
    tags:
      - cidrs: [198.18.0.0/15, \"fd00::/8\"]
        tags: {env: lab, team: net}
      - cidrs: [198.18.7.0/24]
        tags: {team: storage}
    services:
      - name: postgres
        cidrs: [198.18.7.0/24]
        ports: [5432]
      - name: storage-node
        cidrs: [198.18.7.7]
      - name: anything-in-lab
        cidrs: [198.18.0.0/15]";
    let mut chain = chain_from_yaml(yaml, &["peer"]);
    let a = enrich(&mut chain, "198.18.7.9:5432");
    assert_eq!(a.get_str("flowscope.peer.tag.env"), Some("lab"));
    assert_eq!(a.get_str("flowscope.peer.tag.team"), Some("storage"));
    assert_eq!(a.get_str(attr::PEER_SERVICE_NAME), Some("postgres"));
    let a = enrich(&mut chain, "198.18.7.9:80");
    assert_eq!(a.get_str(attr::PEER_SERVICE_NAME), Some("anything-in-lab"));
    let a = enrich(&mut chain, "198.18.7.7:5432");
    assert_eq!(a.get_str(attr::PEER_SERVICE_NAME), Some("storage-node"));
    let a = enrich(&mut chain, "198.18.1.1:80");
    assert_eq!(a.get_str("flowscope.peer.tag.team"), Some("net"));
    let a = enrich(&mut chain, "[fd00::5]:80");
    assert_eq!(a.get_str("flowscope.peer.tag.env"), Some("lab"));
    let a = enrich(&mut chain, "127.0.0.1:80");
    assert_eq!(a.get_str("flowscope.peer.tag.env"), None);
    assert_eq!(a.get_str(attr::PEER_SERVICE_NAME), None);
}

fn pair(res_client: &str, res_server: &str, netns: u32) -> Vec<Flow> {
    let mut c = flow(
        &resource(res_client),
        Transport::Tcp,
        Role::Client,
        "198.18.0.1:40000",
        "198.18.0.2:5432",
    );
    let mut s = flow(
        &resource(res_server),
        Transport::Tcp,
        Role::Server,
        "198.18.0.2:5432",
        "198.18.0.1:40000",
    );
    c.stats.bytes_tx = 5;
    s.stats.bytes_rx = 5;
    c.netns = netns;
    s.netns = netns + 1;
    vec![c, s]
}

#[test]
fn a_peer_on_the_same_host_gets_its_service_name() {
    let ctx = Context::default();
    let local = ctx.local_services.clone();
    let mut chain = chains_from_yaml(
        "  peer:\n    builtin_ranges: false",
        &[("metrics", &["peer"])],
        &ctx,
    )
    .remove(0);
    // Both ends of one connection in one batch: each names the other.
    let out = chain.process(batch(pair("checkout", "db", 7)));
    let names: Vec<(Option<&str>, Option<&str>)> = out
        .points_named("network.flow.io")
        .map(|p| {
            (
                p.resource.get_str("service.name"),
                p.attrs.get_str(attr::PEER_SERVICE_NAME),
            )
        })
        .collect();
    assert!(names.contains(&(Some("checkout"), Some("db"))), "{names:?}");
    assert!(names.contains(&(Some("db"), Some("checkout"))), "{names:?}");

    // The listener is remembered: a later client flow alone is named.
    let c = with_bytes(
        flow(
            &resource("billing"),
            Transport::Tcp,
            Role::Client,
            "198.18.0.1:40001",
            "198.18.0.2:5432",
        ),
        1,
        0,
    );
    let out = chain.process(batch(vec![c]));
    assert_eq!(
        attr_of(&out.points, "network.flow.io", attr::PEER_SERVICE_NAME).as_deref(),
        Some("db")
    );
    // UDP to the same port is another socket.
    let u = with_bytes(
        flow(
            &resource("billing"),
            Transport::Udp,
            Role::Client,
            "198.18.0.1:40001",
            "198.18.0.2:5432",
        ),
        1,
        0,
    );
    let out = chain.process(batch(vec![u]));
    assert_eq!(
        attr_of(&out.points, "network.flow.io", attr::PEER_SERVICE_NAME),
        None
    );

    // What the receiver inserts: a wildcard listener on this host's address.
    local.insert(
        Transport::Udp,
        "0.0.0.0:53".parse::<SocketAddr>().expect("addr"),
        0,
        "dnsd",
    );
    let u = with_bytes(
        flow(
            &resource("billing"),
            Transport::Udp,
            Role::Client,
            "198.18.0.1:40002",
            "198.18.0.2:53",
        ),
        1,
        0,
    );
    let out = chain.process(batch(vec![u]));
    assert_eq!(
        attr_of(&out.points, "network.flow.io", attr::PEER_SERVICE_NAME).as_deref(),
        Some("dnsd")
    );
    // A wildcard does not name a peer that is not an address of this host.
    let u = with_bytes(
        flow(
            &resource("billing"),
            Transport::Udp,
            Role::Client,
            "198.18.0.1:40002",
            "198.18.3.3:53",
        ),
        1,
        0,
    );
    let out = chain.process(batch(vec![u]));
    assert_eq!(
        attr_of(&out.points, "network.flow.io", attr::PEER_SERVICE_NAME),
        None
    );
}

#[test]
fn loopback_listeners_are_per_network_namespace() {
    let ctx = Context::default();
    let local = ctx.local_services.clone();
    let mut chain = chains_from_yaml(
        "  peer:\n    builtin_ranges: false",
        &[("metrics", &["peer"])],
        &ctx,
    )
    .remove(0);
    local.insert(
        Transport::Tcp,
        "127.0.0.1:6379".parse::<SocketAddr>().expect("addr"),
        11,
        "redis-a",
    );
    local.insert(
        Transport::Tcp,
        "127.0.0.1:6379".parse::<SocketAddr>().expect("addr"),
        22,
        "redis-b",
    );
    for (ns, want) in [(11, "redis-a"), (22, "redis-b")] {
        let mut c = with_bytes(
            flow(
                &resource("app"),
                Transport::Tcp,
                Role::Client,
                "127.0.0.1:40000",
                "127.0.0.1:6379",
            ),
            1,
            0,
        );
        c.netns = ns;
        let out = chain.process(batch(vec![c]));
        assert_eq!(
            attr_of(&out.points, "network.flow.io", attr::PEER_SERVICE_NAME).as_deref(),
            Some(want)
        );
    }
}

/// The DNS receiver and the `peer` processor share nothing but the agent's
/// context: a name written into `ctx.peer_names` (as the receiver does) is
/// what the processor puts on the flow, per network namespace and only
/// while the entry lives.
#[test]
fn the_peer_domain_comes_from_the_contexts_name_cache() {
    let ctx = Context::default();
    let mut chain = chains_from_yaml(
        "  peer:\n    builtin_ranges: false",
        &[("metrics", &["peer"])],
        &ctx,
    )
    .remove(0);
    let to = |peer: &str, netns: u32| {
        let mut f = with_bytes(
            flow(
                &resource("app"),
                Transport::Tcp,
                Role::Client,
                "198.18.0.1:40000",
                peer,
            ),
            100,
            0,
        );
        f.netns = netns;
        f
    };
    let ip = "198.18.0.9".parse().expect("ip");
    let expires = ctx.peer_names.now_ns() + 60_000_000_000;
    ctx.peer_names
        .insert(4026531840, ip, "db.lab.test".into(), expires, 16);
    let out = chain.process(batch(vec![
        to("198.18.0.9:5432", 4026531840),
        to("198.18.0.9:5433", 7),
        to("198.18.0.10:5432", 4026531840),
    ]));
    let mut named: Vec<(String, Option<String>)> = out
        .points_named("network.flow.io")
        .map(|p| {
            (
                p.attrs
                    .get(attr::PEER_PORT)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
                    + "@"
                    + p.attrs.get_str(attr::PEER_ADDRESS).unwrap_or(""),
                p.attrs.get_str(attr::PEER_DOMAIN).map(str::to_owned),
            )
        })
        .collect();
    named.sort();
    named.dedup();
    assert_eq!(
        named,
        vec![
            ("5432@198.18.0.10".to_owned(), None),
            ("5432@198.18.0.9".to_owned(), Some("db.lab.test".to_owned())),
            ("5433@198.18.0.9".to_owned(), None),
        ]
    );
}
