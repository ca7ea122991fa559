//! `chatmesh-gateway-bench`: requests/s and latency of a trivial route (`GET /healthz`) and of
//! message create, three ways in one run against the same chat-write process: directly, through
//! the gateway, and through nginx (Debian's package, installed with apt-get when missing)
//! configured for the same upstream with keep-alive.
//!
//!   cargo build --workspace --release
//!   target/release/chatmesh-gateway-bench
//!
//! The upstream is chat-write with chat-read (its consumer) on the embedded backends, or on
//! MySQL / Redis / RabbitMQ with `--production` (URLs from `DATABASE_URL`, `REDIS_URL`,
//! `AMQP_URL`). Targets are measured in alternating rounds so drift (a growing store, a warm
//! cache) spreads evenly over them. The load generator is a closed loop of keep-alive
//! connections on one thread.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatmesh_e2e::harness::{ChildProcess, binary, free_port, repo_root, spawn_listening, write_upstreams};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(name = "chatmesh-gateway-bench")]
struct Cli {
    /// Seconds of measurement per target and round
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds over the three targets (their order alternates)
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrent keep-alive connections of the load generator
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Gateway worker threads (2, as deploy/gateway.toml runs it)
    #[arg(long, default_value_t = 2)]
    gateway_threads: usize,
    /// nginx worker processes (as many as the gateway has threads)
    #[arg(long, default_value_t = 2)]
    nginx_workers: usize,
    /// Run the upstream on MySQL / Redis / RabbitMQ (DATABASE_URL, REDIS_URL, AMQP_URL)
    #[arg(long)]
    production: bool,
    /// Override a `[server]` setting of the gateway config (e.g. work_stealing=false); repeatable
    #[arg(long = "gateway-set", value_name = "KEY=VALUE")]
    gateway_settings: Vec<String>,
    /// Write an access log line per request (gateway and nginx alike)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    access_log: bool,
    /// Only these routes: healthz, create
    #[arg(long, value_delimiter = ',', default_value = "healthz,create")]
    routes: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::Builder::new().prefix("chatmesh-gateway-bench-").tempdir()?;
    let upstream = Upstream::start(dir.path(), cli.production)?;
    let gateway = start_gateway(dir.path(), &upstream, cli.gateway_threads, cli.access_log, &cli.gateway_settings)?;
    let nginx = Nginx::start(dir.path(), &upstream.write_addr, cli.nginx_workers, cli.access_log)?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (token, chat) = runtime.block_on(upstream.create_chat())?;
    let targets =
        [("direct", upstream.write_addr.clone()), ("gateway", gateway.1.clone()), ("nginx", nginx.addr.clone())];
    println!(
        "upstream: chat-write {} on {} backends; gateway threads {}; nginx workers {}; {} connections, {} x {} s per target",
        upstream.write_addr,
        if cli.production { "production" } else { "embedded" },
        cli.gateway_threads,
        cli.nginx_workers,
        cli.connections,
        cli.rounds,
        cli.seconds
    );
    let body = r#"{"message_content":"benchmark message with a few words to index"}"#;
    let routes: Vec<(&str, String)> = [
        ("GET /healthz", "healthz", "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n".to_owned()),
        (
            "POST message",
            "create",
            format!(
                "POST /api/applications/{token}/chats/{chat}/messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        ),
    ]
    .into_iter()
    .filter(|(_, key, _)| cli.routes.iter().any(|r| r == key))
    .map(|(label, _, request)| (label, request))
    .collect();

    println!(
        "\n{:<14} {:<8} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "route", "target", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for (label, request) in &routes {
        // Warm every path (connections, caches) before measuring.
        for (_, addr) in &targets {
            runtime.block_on(run_load(addr, request.as_bytes(), cli.connections, Duration::from_secs(1)));
        }
        let mut results: Vec<Measured> = targets.iter().map(|_| Measured::default()).collect();
        for round in 0..cli.rounds {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                let measured = runtime.block_on(run_load(
                    &targets[index].1,
                    request.as_bytes(),
                    cli.connections,
                    Duration::from_secs(cli.seconds),
                ));
                results[index].merge(measured);
            }
        }
        for ((name, _), measured) in targets.iter().zip(&results) {
            println!(
                "{label:<14} {name:<8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                measured.rps(),
                measured.quantile_ms(0.5),
                measured.quantile_ms(0.99),
                measured.quantile_ms(1.0),
                measured.errors
            );
        }
        let (direct, through, nginx) = (&results[0], &results[1], &results[2]);
        println!(
            "{label:<14} gateway/direct {:.2}, gateway/nginx {:.2} (req/s); p99 gateway {:.2} ms vs nginx {:.2} ms",
            through.rps() / direct.rps(),
            through.rps() / nginx.rps(),
            through.quantile_ms(0.99),
            nginx.quantile_ms(0.99)
        );
        std::io::stdout().flush()?;
    }
    drop(nginx);
    drop(gateway);
    drop(upstream);
    Ok(())
}

/// chat-write (the measured upstream) and chat-read (applications, and the consumer that
/// drains what chat-write queues).
struct Upstream {
    write_addr: String,
    read_addr: String,
    _processes: Vec<ChildProcess>,
}

impl Upstream {
    fn start(dir: &Path, production: bool) -> anyhow::Result<Self> {
        let data = dir.join("data");
        let configure = |command: &mut Command| {
            command.env("CHATMESH_DATA_DIR", &data).env("RUST_LOG", "warn").env("CHATMESH_NAMESPACE", "gateway-bench");
            if !production {
                for var in ["DATABASE_URL", "REDIS_URL", "AMQP_URL", "ELASTICSEARCH_URL"] {
                    command.env_remove(var);
                }
            }
        };
        let mut read = Command::new(binary("chat-read"));
        read.args(["--listen", "127.0.0.1:0"]);
        configure(&mut read);
        let (read_process, read_addr) = spawn_listening("chat-read", read);
        wait_http(&format!("http://{read_addr}/healthz"))?;
        let mut write = Command::new(binary("chat-write"));
        write.args(["--listen", "127.0.0.1:0"]);
        configure(&mut write);
        let (write_process, write_addr) = spawn_listening("chat-write", write);
        wait_http(&format!("http://{write_addr}/healthz"))?;
        Ok(Self { write_addr, read_addr, _processes: vec![read_process, write_process] })
    }

    /// An application (through chat-read) and a chat (through chat-write) to post messages to.
    async fn create_chat(&self) -> anyhow::Result<(String, i64)> {
        let read = chatmesh_e2e::Api::new(&format!("http://{}", self.read_addr));
        let token = read.create_application("gateway bench").await;
        let write = chatmesh_e2e::Api::new(&format!("http://{}", self.write_addr));
        let chat = write.create_chat(&token, "bench").await;
        Ok((token, chat))
    }
}

/// The gateway with the deployed config, except that `/healthz` is routed to chat-write (the
/// gateway's own liveness moves aside) so the trivial route is proxied like the others.
fn start_gateway(
    dir: &Path,
    upstream: &Upstream,
    threads: usize,
    access_log: bool,
    settings: &[String],
) -> anyhow::Result<(ChildProcess, String)> {
    let mut deployed = std::fs::read_to_string(repo_root().join("deploy/gateway.toml"))?;
    for setting in settings {
        let (key, value) =
            setting.split_once('=').ok_or_else(|| anyhow::anyhow!("--gateway-set {setting}: KEY=VALUE"))?;
        let line = deployed
            .lines()
            .find(|line| line.split('=').next().is_some_and(|k| k.trim() == key))
            .ok_or_else(|| anyhow::anyhow!("deploy/gateway.toml has no {key}"))?
            .to_owned();
        deployed = deployed.replace(&line, &format!("{key} = {value}"));
    }
    let config = deployed
        .replace("health_path = \"/healthz\"", "health_path = \"/-/gateway/healthz\"")
        .replace("access_log = true", &format!("access_log = {access_log}"))
        + "\n[[routes]]\npool = \"chat-write\"\nmethods = [\"GET\"]\npaths = [\"/healthz\"]\n";
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config)?;
    let upstreams = dir.join("upstreams.toml");
    let none: Vec<String> = Vec::new();
    write_upstreams(
        &upstreams,
        &[
            ("chat-write", vec![upstream.write_addr.clone()]),
            ("chat-read", vec![upstream.read_addr.clone()]),
            ("chat-stream", none.clone()),
            ("segments", none.clone()),
            ("events", none),
        ],
    );
    let port = free_port();
    let admin = free_port();
    let log = std::fs::File::create(dir.join("gateway.log"))?;
    let child = Command::new(binary("gateway"))
        .arg("--config")
        .arg(&config_path)
        .arg("--upstreams-file")
        .arg(&upstreams)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--threads", &threads.to_string()])
        .env_remove("CHATMESH_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let process = ChildProcess { name: "gateway".into(), child, log: Some(dir.join("gateway.log")) };
    wait_http(&format!("http://127.0.0.1:{admin}/readyz"))?;
    Ok((process, format!("127.0.0.1:{port}")))
}

/// nginx as a reverse proxy to chat-write with an upstream keep-alive pool, logging each
/// request like the gateway does.
struct Nginx {
    addr: String,
    process: ChildProcess,
}

impl Nginx {
    fn start(dir: &Path, upstream: &str, workers: usize, access_log: bool) -> anyhow::Result<Self> {
        let nginx = nginx_binary()?;
        let root = dir.join("nginx");
        std::fs::create_dir_all(root.join("temp"))?;
        let port = free_port();
        let root_text = root.display();
        let user = if is_root() { "user root;" } else { "" };
        let access_log = if access_log { format!("{}/access.log", root.display()) } else { "off".to_owned() };
        let config = format!(
            "{user}
worker_processes {workers};
daemon off;
pid {root_text}/nginx.pid;
error_log {root_text}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {access_log};
    client_body_temp_path {root_text}/temp/body;
    proxy_temp_path {root_text}/temp/proxy;
    fastcgi_temp_path {root_text}/temp/fastcgi;
    uwsgi_temp_path {root_text}/temp/uwsgi;
    scgi_temp_path {root_text}/temp/scgi;
    client_max_body_size 1m;
    upstream chat_write {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://chat_write;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id always;
        }}
    }}
}}
"
        );
        let config_path = root.join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let process = ChildProcess { name: "nginx".into(), child, log: Some(root.join("error.log")) };
        wait_http(&format!("http://127.0.0.1:{port}/healthz"))?;
        Ok(Self { addr: format!("127.0.0.1:{port}"), process })
    }
}

impl Drop for Nginx {
    /// SIGQUIT to the master so its workers go too (a SIGKILLed master orphans them).
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-QUIT", &self.process.pid().to_string()]).status();
        self.process.wait_exit(Duration::from_secs(5));
    }
}

/// Debian's nginx, installed with apt-get when missing.
fn nginx_binary() -> anyhow::Result<PathBuf> {
    let installed = PathBuf::from("/usr/sbin/nginx");
    if installed.is_file() {
        return Ok(installed);
    }
    eprintln!("nginx is missing: apt-get install -y nginx");
    let install = || Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "nginx"]).status();
    if !install().is_ok_and(|s| s.success()) {
        Command::new("apt-get").arg("update").status()?;
        anyhow::ensure!(install()?.success(), "apt-get install nginx failed");
    }
    anyhow::ensure!(installed.is_file(), "no {} after installing nginx", installed.display());
    // The package starts a system nginx on port 80; the bench runs its own.
    let _ = Command::new("nginx").args(["-s", "stop"]).status();
    Ok(installed)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn wait_http(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if chatmesh_e2e::harness::http_get(url).is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{url} did not answer")
}

/// What one target answered over one or more measured periods.
struct Measured {
    latency_us: Histogram<u64>,
    requests: u64,
    errors: u64,
    elapsed: Duration,
}

impl Default for Measured {
    fn default() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
        }
    }
}

impl Measured {
    fn merge(&mut self, other: Measured) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }

    #[allow(clippy::cast_precision_loss)] // request counts are far below 2^52
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    #[allow(clippy::cast_precision_loss)]
    fn quantile_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// `connections` closed loops sending `request` to `addr` for `duration`; counts 2xx as
/// requests and anything else (or a broken connection) as an error.
async fn run_load(addr: &str, request: &[u8], connections: usize, duration: Duration) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let request: Arc<[u8]> = request.into();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (stop, request, addr) = (stop.clone(), request.clone(), addr.to_owned());
        tasks.push(tokio::spawn(async move { connection_loop(&addr, &request, &stop).await }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut measured = Measured::default();
    for task in tasks {
        measured.merge(task.await.expect("load task"));
    }
    measured.elapsed = started.elapsed();
    measured
}

async fn connection_loop(addr: &str, request: &[u8], stop: &AtomicBool) -> Measured {
    let mut measured = Measured::default();
    let mut buf = Vec::with_capacity(8192);
    let mut stream: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let socket = match stream.as_mut() {
            Some(socket) => socket,
            None => match TcpStream::connect(addr).await {
                Ok(socket) => {
                    let _ = socket.set_nodelay(true);
                    stream.insert(socket)
                }
                Err(_) => {
                    measured.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let outcome = exchange(socket, request, &mut buf).await;
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        match outcome {
            Ok((status, keep_alive)) => {
                if (200..300).contains(&status) {
                    measured.requests += 1;
                    let _ = measured.latency_us.record(micros);
                } else {
                    measured.errors += 1;
                }
                if !keep_alive {
                    stream = None;
                }
            }
            Err(_) => {
                measured.errors += 1;
                stream = None;
            }
        }
    }
    measured
}

/// Writes one request and reads one response: (status, whether the connection stays open).
async fn exchange(socket: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    socket.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_more(socket, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(std::io::Error::other)?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut keep_alive = true;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        while !buf[head_end..].windows(5).any(|w| w == b"0\r\n\r\n") {
            read_more(socket, buf).await?;
        }
    } else {
        while buf.len() < head_end + content_length {
            read_more(socket, buf).await?;
        }
    }
    Ok((status, keep_alive))
}

async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    let read = socket.read(&mut chunk).await?;
    if read == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..read]);
    Ok(())
}
