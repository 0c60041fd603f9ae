//! Connections older than the agent (issue 24): a server listening and a
//! connection open before the agent starts are named by their processes
//! once it runs. The kernel side sent no LISTEN or CONNECT record for
//! them; the agent learns their owners from /proc at start-up, with the
//! baseline walk of open sockets (receiver/src/open_tcp/seed.rs).
//!
//! Separate processes for the two ends (`flowscope-traffic`, each with its
//! own `OTEL_SERVICE_NAME`), so the service names prove which process each
//! end was named by: an end the agent could not name carries neither.

use std::time::{Duration, Instant};

use flowscope_integration::{Agent, Held, NetPair, Point, sum, traffic};

const WAIT: Duration = Duration::from_secs(40);
const IO: &str = "network.flow.io";

/// The flows of one end: its role and its peer's address.
fn side<'a>(role: &'a str, peer: &'a str) -> [(&'static str, &'a str); 2] {
    [
        ("flowscope.flow.role", role),
        ("network.peer.address", peer),
    ]
}

fn total(p: &[Point], metric: &str, side: &[(&'static str, &str)], extra: &[(&str, &str)]) -> f64 {
    let mut f: Vec<(&str, &str)> = side.to_vec();
    f.extend_from_slice(extra);
    sum(p, metric, &f)
}

/// The service names of the resources of `metric`'s points of one end.
fn services(p: &[Point], metric: &str, side: &[(&'static str, &str)]) -> Vec<String> {
    let mut names: Vec<String> = p
        .iter()
        .filter(|pt| pt.metric == metric && side.iter().all(|(k, v)| pt.attr(k) == Some(*v)))
        .map(|pt| pt.resource.get("service.name").cloned().unwrap_or_default())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Round one (1,000 up, 2,000 down) before the agent starts, round two
/// (30,000 up, 40,000 down) after, then both close: each end is counted
/// with exactly round two's bytes, under its own process and role, and
/// closes once, with no open counted (it opened before the agent).
#[test]
fn a_connection_older_than_the_agent_is_named_and_counted_from_its_start() {
    let net = NetPair::new().unwrap();
    let t = traffic();
    let (server_ip, client_ip) = (net.a_v4(), net.b_v4());
    let addr = format!("{server_ip}:5401");
    let sizes = ["1000", "2000", "30000", "40000"];
    let mut server = Held::start(
        &net.a,
        "seed-server",
        &[
            &t,
            "tcp-server-twice",
            &addr,
            sizes[0],
            sizes[1],
            sizes[2],
            sizes[3],
        ],
    );
    server.until("listening");
    let mut client = Held::start(
        &net.b,
        "seed-client",
        &[
            &t,
            "tcp-client-gated",
            &addr,
            sizes[0],
            sizes[1],
            sizes[2],
            sizes[3],
        ],
    );
    client.until("ready");

    let agent = Agent::start("1s").unwrap();
    // The join has been given what /proc said once this is logged; round
    // two must not start before the baseline walk.
    let deadline = Instant::now() + WAIT;
    while !agent
        .log_text()
        .contains("named from /proc what predates the agent")
    {
        assert!(
            Instant::now() < deadline,
            "the agent never seeded its join:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    client.say("go");
    client.until("done");
    server.until("done");

    let c = side("client", &server_ip);
    let s = side("server", &client_ip);
    let closed = "flowscope.tcp.connection.closed";
    agent.wait_for("both ends closed", WAIT, |p| {
        (total(p, closed, &c, &[]) >= 1.0 && total(p, closed, &s, &[]) >= 1.0).then_some(())
    });
    // One more interval: anything counted twice would show by then.
    let n = agent.points().len();
    agent.wait_for("another interval", WAIT, |p| (p.len() > n).then_some(()));
    let p = agent.points();
    let tx = [("network.io.direction", "transmit")];
    let rx = [("network.io.direction", "receive")];
    assert_eq!(total(&p, IO, &c, &tx), 30_000.0, "client sent");
    assert_eq!(total(&p, IO, &c, &rx), 40_000.0, "client received");
    assert_eq!(total(&p, IO, &s, &rx), 30_000.0, "server received");
    assert_eq!(total(&p, IO, &s, &tx), 40_000.0, "server sent");
    for end in [&c, &s] {
        assert_eq!(total(&p, closed, end, &[]), 1.0, "{end:?} closed");
        assert_eq!(
            total(&p, "flowscope.tcp.connection.opened", end, &[]),
            0.0,
            "{end:?} opened before the agent"
        );
    }
    assert_eq!(services(&p, IO, &c), vec!["seed-client".to_string()]);
    assert_eq!(services(&p, IO, &s), vec!["seed-server".to_string()]);
    assert_eq!(services(&p, closed, &c), vec!["seed-client".to_string()]);
    assert_eq!(services(&p, closed, &s), vec!["seed-server".to_string()]);
    drop(client);
    drop(server);
}
