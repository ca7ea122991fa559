//! What the gateway tests share: the routes of DESIGN.md, configs derived from the deployed
//! one, a load generator that records when each request started and how it ended.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatmesh_e2e::harness::{GatewayProcess, Stub, repo_root};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every route of DESIGN.md with the pool that must serve it. `{app}`, `{chat}` and `{msg}`
/// are filled in by the caller.
pub const DESIGN_ROUTES: &[(&str, &str, &str)] = &[
    // chat: creates go to chat-write, everything else of /api/applications to chat-read
    ("POST", "/api/applications", "chat-read"),
    ("GET", "/api/applications", "chat-read"),
    ("GET", "/api/applications/{app}", "chat-read"),
    ("PUT", "/api/applications/{app}", "chat-read"),
    ("PATCH", "/api/applications/{app}", "chat-read"),
    ("POST", "/api/applications/{app}/chats", "chat-write"),
    ("GET", "/api/applications/{app}/chats", "chat-read"),
    ("GET", "/api/applications/{app}/chats/{chat}", "chat-read"),
    ("PUT", "/api/applications/{app}/chats/{chat}", "chat-read"),
    ("PATCH", "/api/applications/{app}/chats/{chat}", "chat-read"),
    ("POST", "/api/applications/{app}/chats/{chat}", "chat-write"),
    ("POST", "/api/applications/{app}/chats/{chat}/messages", "chat-write"),
    ("GET", "/api/applications/{app}/chats/{chat}/messages", "chat-read"),
    ("GET", "/api/applications/{app}/chats/{chat}/messages/{msg}", "chat-read"),
    ("PUT", "/api/applications/{app}/chats/{chat}/messages/{msg}", "chat-read"),
    ("PATCH", "/api/applications/{app}/chats/{chat}/messages/{msg}", "chat-read"),
    ("GET", "/api/applications/{app}/chats/{chat}/search?q=hello", "chat-read"),
    // live streams and the chat page: chat-read processes in the stream role
    ("GET", "/api/applications/{app}/chats/{chat}/stream", "chat-stream"),
    ("GET", "/api/applications/{app}/stream", "chat-stream"),
    ("GET", "/chat", "chat-stream"),
    // segments, legacy routes (seed 000)
    ("GET", "/segments", "segments"),
    ("POST", "/segments", "segments"),
    ("GET", "/segments/some-slug", "segments"),
    ("DELETE", "/segments/some-slug", "segments"),
    ("POST", "/segments/users", "segments"),
    ("GET", "/segments/users/7", "segments"),
    ("GET", "/segments/users/7/history?from=2024-01-01&to=2024-02-01", "segments"),
    ("GET", "/history/report.csv", "segments"),
    // segments, /api/v1 (seed 002)
    ("GET", "/api/v1/segments", "segments"),
    ("POST", "/api/v1/segments", "segments"),
    ("GET", "/api/v1/segments/1", "segments"),
    ("PATCH", "/api/v1/segments/1", "segments"),
    ("DELETE", "/api/v1/segments/1", "segments"),
    ("POST", "/api/v1/segments/evaluate", "segments"),
    ("GET", "/api/v1/flags", "segments"),
    ("GET", "/api/v1/decisions", "segments"),
    // events (seeds 001 and 003)
    ("POST", "/sessions/", "events"),
    ("GET", "/sessions/", "events"),
    ("POST", "/events/", "events"),
    ("GET", "/events/?session=1", "events"),
    ("GET", "/events/1/", "events"),
    ("PUT", "/events/1/", "events"),
    ("PATCH", "/events/1/", "events"),
    ("DELETE", "/events/1/", "events"),
    ("GET", "/errors/", "events"),
    ("GET", "/errors/1/", "events"),
    ("POST", "/user/batches", "events"),
    ("GET", "/user/last-events?days=7", "events"),
    ("GET", "/user/last-sessions-user?user_id=1", "events"),
];

/// The pools of `deploy/gateway.toml`.
pub const POOLS: [&str; 5] = ["chat-write", "chat-read", "chat-stream", "segments", "events"];

pub fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method")
}

/// `deploy/gateway.toml` with some `key = value` lines replaced, written under `dir`.
pub fn config_with(dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let original = std::fs::read_to_string(repo_root().join("deploy/gateway.toml")).expect("deploy/gateway.toml");
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    for (key, value) in replacements {
        let line = lines
            .iter_mut()
            .find(|line| line.split('=').next().is_some_and(|k| k.trim() == *key))
            .unwrap_or_else(|| panic!("deploy/gateway.toml has no {key}"));
        *line = format!("{key} = {value}");
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, lines.join("\n")).expect("write config");
    path
}

/// The deployed config with fast health checks, for tests that wait on them.
pub fn fast_config(dir: &Path) -> PathBuf {
    fast_config_with(dir, &[])
}

/// [`fast_config`] with `settings` replaced as well.
pub fn fast_config_with(dir: &Path, settings: &[(&str, &str)]) -> PathBuf {
    let mut replacements = vec![("interval_ms", "100"), ("timeout_ms", "100")];
    replacements.extend_from_slice(settings);
    config_with(dir, &replacements)
}

pub fn stub_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chatmesh-stub"))
}

/// A stub upstream answering as `name`.
pub fn stub(name: &str) -> Stub {
    Stub::start(&stub_binary(), name, None, false)
}

/// A gateway on `config` with one pool set to `members` and the others empty, once the members
/// are healthy.
pub fn gateway(dir: &Path, config: &Path, pool: &str, members: &[&Stub]) -> GatewayProcess {
    let mut pools: Vec<(&str, Vec<String>)> = POOLS.iter().map(|p| (*p, Vec::new())).collect();
    for entry in &mut pools {
        if entry.0 == pool {
            entry.1 = members.iter().map(|s| s.addr.clone()).collect();
        }
    }
    let gateway = GatewayProcess::start(dir, config, &pools);
    gateway.wait_healthy(pool, &members.iter().map(|s| s.addr.as_str()).collect::<Vec<_>>());
    gateway
}

/// A gateway on the fast config with `settings`, whose chat-read pool is one stub named
/// chat-read; the stub comes first.
pub fn chat_read_gateway(dir: &Path, settings: &[(&str, &str)]) -> (Stub, GatewayProcess) {
    let upstream = stub("chat-read");
    let gateway = gateway(dir, &fast_config_with(dir, settings), "chat-read", &[&upstream]);
    (upstream, gateway)
}

/// Two gateways whose chat-read pool is `upstream`, each in its own folder under `dir`: the
/// first with its express lane, the second with pingora-proxy alone.
pub fn express_and_pingora(dir: &Path, upstream: &Stub) -> [GatewayProcess; 2] {
    ["true", "false"].map(|express| {
        let dir = dir.join(if express == "true" { "express" } else { "pingora" });
        std::fs::create_dir_all(&dir).expect("gateway folder");
        gateway(&dir, &fast_config_with(&dir, &[("express", express)]), "chat-read", &[upstream])
    })
}

/// Waits (5 s at most) until the gateway, whose metrics `metric` reads, has marked `upstream`
/// of `pool` out. Returns when it noticed, the series counting the requests sent to the
/// upstream, and that count when it noticed.
pub async fn wait_marked_out(
    metric: impl Fn(&str) -> Option<f64>,
    pool: &str,
    upstream: &str,
) -> (Instant, String, f64) {
    let series = format!("{{pool=\"{pool}\",upstream=\"{upstream}\"}}");
    let healthy = format!("gateway_upstream_healthy{series}");
    let requests = format!("gateway_upstream_requests_total{series}");
    let noticed = wait_until(Duration::from_secs(5), || metric(&healthy) == Some(0.0)).await;
    let noticed = noticed.unwrap_or_else(|| panic!("the gateway never marked {upstream} of {pool} out"));
    let sent_when_noticed = metric(&requests).expect("the upstream's request count");
    (noticed, requests, sent_when_noticed)
}

/// Writes `raw` on a new connection to `addr`, then reads every response until the connection
/// closes or goes quiet (1.5 s): their statuses, and the whole text.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> (Vec<u16>, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The gateway may close before a large request is all written.
    let _closed_early = stream.write_all(raw).await;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(read)) => received.extend_from_slice(&buf[..read]),
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12).and_then(|s| s.parse().ok()))
        .collect();
    (statuses, text)
}

/// The address of `gateway`'s public listener.
pub fn addr(gateway: &GatewayProcess) -> SocketAddr {
    gateway.url.trim_start_matches("http://").parse().expect("gateway address")
}

/// A client that never reuses a connection the gateway may have closed in between.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// One request of a load run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub started: Instant,
    pub finished: Instant,
    /// The status, or `None` for a transport error.
    pub status: Option<u16>,
    pub body: String,
}

/// Sends `send(client, i)` from `concurrency` loops until `stop` is set; returns every outcome.
pub async fn load<F, Fut>(concurrency: usize, stop: Arc<AtomicBool>, send: F) -> Vec<Outcome>
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>> + Send,
{
    let send = Arc::new(send);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (send, stop) = (send.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = match send(client.clone(), i).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        (Some(status), response.text().await.unwrap_or_default())
                    }
                    Err(error) => (None, error.to_string()),
                };
                outcomes.push(Outcome { started, finished: Instant::now(), status, body });
                i += 1;
            }
            outcomes
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all
}

/// Polls `check` every 10 ms for up to `timeout`; returns the instant it first held.
pub async fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub use chatmesh_e2e::processes::pid_alive;
