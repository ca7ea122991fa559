//! The gateway and stub upstreams as child processes, for the gateway tests and benchmark.
//! Every child is killed when its handle drops, so a failing test leaves nothing running.
//!
//! Workspace binaries are taken from `CHATMESH_BIN_DIR` when set; otherwise from the profile
//! directory of the running test, after one `cargo build --workspace --bins` per test process
//! (`cargo test` builds only the binaries of the package under test).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the workspace's binaries are, built and up to date.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHATMESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--workspace", "--bins", "--quiet"]).current_dir(repo_root());
        // Into the target dir this executable was built in (whatever CARGO_TARGET_DIR says
        // now), so the binaries taken from `dir` are the ones just built.
        if let Some(target) = dir.parent() {
            build.arg("--target-dir").arg(target);
        }
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for the workspace binaries");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
    dir
}

/// The path of a workspace binary.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is missing (set CHATMESH_BIN_DIR, or build the workspace)", path.display());
    path
}

/// Whether a workspace binary has been built.
pub fn has_binary(name: &str) -> bool {
    bin_dir().join(name).is_file()
}

/// The repository root (holds `deploy/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// A port free right now on 127.0.0.1, for processes that cannot report the one they bound.
///
/// Taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768.. by
/// default): every process here that listens on port 0 or connects out gets an ephemeral
/// port, so one of those could take a port picked from that range between this call and the
/// bind it is meant for (a stub or service started before the gateway did, now and then).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static PICKS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    for _ in 0..200 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(PICKS.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        let port = low + u16::try_from(hasher.finish() % u64::from(high - low)).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// A child process, killed (SIGKILL) on drop unless it already exited.
pub struct ChildProcess {
    pub name: String,
    pub child: Child,
    /// Where its stdout and stderr go, when captured to a file.
    pub log: Option<PathBuf>,
}

impl ChildProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "HUP", "KILL") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {}", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// The captured log so far.
    pub fn log_text(&self) -> String {
        self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `command` with stdout piped, waits (up to a minute) for the line
/// `... listening on http://ADDR` and returns ADDR; the rest of stdout is drained in the
/// background.
pub fn spawn_listening(name: &str, mut command: Command) -> (ChildProcess, String) {
    command.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (listening, address) = std::sync::mpsc::channel();
    // A blocking read cannot time out: a thread reads, and the wait for its answer can.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        let mut found = false;
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            if !found && let Some(rest) = line.split("listening on http://").nth(1) {
                found = true;
                let _ = listening.send(rest.trim().to_owned());
            }
            line.clear();
        }
    });
    match address.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => (ChildProcess { name: name.to_owned(), child, log: None }, addr),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait();
            panic!("{name} exited before listening: {status:?}");
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not print its listening address within a minute");
        }
    }
}

/// A stub upstream (`chatmesh-stub`) answering with `X-Served-By: name`.
pub struct Stub {
    pub process: ChildProcess,
    pub addr: String,
}

impl Stub {
    /// Starts a stub on a free port (or `listen`); `drop` makes it close connections unanswered.
    pub fn start(stub_binary: &Path, name: &str, listen: Option<&str>, drop: bool) -> Self {
        let mut command = Command::new(stub_binary);
        command.args(["--name", name, "--listen", listen.unwrap_or("127.0.0.1:0")]);
        if drop {
            command.arg("--drop");
        }
        let (process, addr) = spawn_listening(name, command);
        Self { process, addr }
    }
}

/// A gateway process on free ports with the given config and upstreams file.
pub struct GatewayProcess {
    pub process: ChildProcess,
    pub url: String,
    pub admin_url: String,
    pub upstreams_file: PathBuf,
    /// The admin token it was started with (`CHATMESH_ADMIN_TOKEN`), which `POST /reload` needs.
    pub admin_token: Option<String>,
}

impl GatewayProcess {
    /// Starts `gateway --config config --upstreams-file <dir>/upstreams.toml` with `pools`
    /// written to that file; logs go to `<dir>/gateway.log`. Returns once the admin port
    /// answers.
    pub fn start(dir: &Path, config: &Path, pools: &[(&str, Vec<String>)]) -> Self {
        Self::start_with_admin_token(dir, config, pools, Some(&crate::random_token("gateway-admin")))
    }

    /// [`GatewayProcess::start`] with this admin token, or none.
    pub fn start_with_admin_token(
        dir: &Path,
        config: &Path,
        pools: &[(&str, Vec<String>)],
        admin_token: Option<&str>,
    ) -> Self {
        let upstreams_file = dir.join("upstreams.toml");
        write_upstreams(&upstreams_file, pools);
        let (port, admin_port) = (free_port(), free_port());
        let log = dir.join("gateway.log");
        let file = std::fs::File::create(&log).expect("gateway log");
        let mut command = Command::new(binary("gateway"));
        command
            .arg("--config")
            .arg(config)
            .arg("--upstreams-file")
            .arg(&upstreams_file)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .env("RUST_LOG", "info")
            .env_remove("CHATMESH_LOG_FORMAT")
            .env_remove("CHATMESH_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        if let Some(token) = admin_token {
            command.env("CHATMESH_ADMIN_TOKEN", token);
        }
        let child = command.spawn().expect("spawn gateway");
        let mut process = ChildProcess { name: "gateway".to_owned(), child, log: Some(log) };
        let admin_url = format!("http://127.0.0.1:{admin_port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http_ok(&format!("{admin_url}/healthz")) {
            assert!(process.is_running(), "gateway exited: {}", process.log_text());
            assert!(Instant::now() < deadline, "gateway admin port never answered: {}", process.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        let admin_token = admin_token.map(str::to_owned);
        Self { process, url: format!("http://127.0.0.1:{port}"), admin_url, upstreams_file, admin_token }
    }

    /// Waits until the gateway reports exactly these upstreams of `pool` healthy.
    pub fn wait_healthy(&self, pool: &str, expected: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        loop {
            let healthy = self.healthy_upstreams(pool);
            if healthy == want {
                return;
            }
            assert!(Instant::now() < deadline, "{pool}: healthy {healthy:?}, waiting for {want:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The healthy members of `pool`, sorted, from the admin port's `/upstreams`.
    pub fn healthy_upstreams(&self, pool: &str) -> Vec<String> {
        let body = http_get(&format!("{}/upstreams", self.admin_url)).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut healthy: Vec<String> = value[pool]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter(|m| m["healthy"] == true)
                    .filter_map(|m| m["addr"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        healthy.sort();
        healthy
    }

    /// The value of one metric series on the admin port (`name{labels}` exactly as rendered).
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.admin_url, series)
    }
}

/// One series of the gateway's `/metrics` at `admin_url` (`name{labels}` exactly as rendered).
pub fn metric(admin_url: &str, series: &str) -> Option<f64> {
    let text = http_get(&format!("{admin_url}/metrics"))?;
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Writes an upstreams file: `pool = ["addr", ...]` per line.
pub fn write_upstreams(path: &Path, pools: &[(&str, Vec<String>)]) {
    let text: String = pools
        .iter()
        .map(|(pool, addrs)| {
            let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
            format!("{pool} = [{}]\n", list.join(", "))
        })
        .collect();
    std::fs::write(path, text).expect("write upstreams file");
}

/// A blocking GET with a short timeout, for polling (no runtime needed); the body of a 2xx.
pub fn http_get(url: &str) -> Option<String> {
    let (status, body) = http_get_status(url)?;
    (200..300).contains(&status).then_some(body)
}

fn http_ok(url: &str) -> bool {
    http_get_status(url).is_some_and(|(status, _)| (200..300).contains(&status))
}

/// A minimal HTTP/1.1 GET over std's TcpStream: (status, body).
pub fn http_get_status(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr: std::net::SocketAddr = authority.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}
