//! Shared by the browser tests (ui.rs, fleet.rs): headless Chromium behind
//! chromedriver, and what they read off the pages.
#![allow(dead_code)] // each test binary uses its own part

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// How long a page may take to load its data.
pub const PAGE_WAIT: Duration = Duration::from_secs(60);

/// A child process killed on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn screenshots_dir() -> PathBuf {
    // target/<profile>/deps/<test> -> target/ui-screenshots
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium behind chromedriver, with a fresh profile.
pub async fn browser() -> (Kill, tempfile::TempDir, Client) {
    let port = free_port();
    let driver = Kill(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/bootstrap.sh --test installs chromium-driver)"),
    );
    let deadline = Instant::now() + PAGE_WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000",
                // Resolve no name but the agent's: the browser sends nothing
                // beyond loopback.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps);
    let client = builder
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with headless Chromium");
    (driver, profile, client)
}

/// Every page has the shared time-range control, showing the range of
/// the URL (`range=1h`), with `options`.
pub async fn range_control(c: &Client, options: &[&str]) {
    let got = js(
        c,
        "const s = document.querySelector('#range'); \
         return [s.value, [...s.options].map(o => o.value)]",
    )
    .await;
    assert_eq!(got, json!(["1h", options]));
}

pub async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect(script)
}

/// Waits until the page finished its `n`th load of API data.
pub async fn loaded(c: &Client, n: u64) {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let v = js(c, "return Number(document.body.dataset.loads || 0)").await;
        if v.as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "the page did not load its data");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

pub async fn map_graph(c: &Client) -> (Vec<String>, Vec<(String, String)>) {
    let nodes = js(c, "return flowscopeMap.nodes().map(n => n.data('label'))").await;
    let edges = js(
        c,
        "return flowscopeMap.edges().map(e => [e.data('source'), e.data('target')])",
    )
    .await;
    (
        serde_json::from_value(nodes).unwrap(),
        serde_json::from_value(edges).unwrap(),
    )
}

pub async fn table_rows(c: &Client) -> Vec<(String, String)> {
    let v = js(
        c,
        "return [...document.querySelectorAll('#rows tbody tr[data-client]')].map(r => \
         [r.querySelector('td[data-col=client]').textContent, r.querySelector('td[data-col=server]').textContent])",
    )
    .await;
    serde_json::from_value(v).unwrap()
}
