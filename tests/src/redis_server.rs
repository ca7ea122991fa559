//! A `redis-server` of a test's own, on a free port with its own data dir, for the faults the
//! machine's shared Redis must never suffer: a restart from an older snapshot. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// A running `redis-server` without persistence of its own (`--save ""`, no AOF): its data
/// dir holds only the snapshots a test asks for.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server, or answers `None` (after printing why) when `redis-server` is not
    /// installed, unless `CHATMESH_REQUIRE_BACKENDS` names `REDIS_URL`.
    pub fn start(test: &str) -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                !shared::testing::is_required("REDIS_URL"),
                "{test}: redis-server is not installed and {} names REDIS_URL",
                shared::testing::REQUIRE_FLAG
            );
            eprintln!("SKIPPED {test}: redis-server is not installed (it starts a Redis of its own)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("chatmesh-redis-").tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("redis data dir");
        let mut server = Self { port: free_port(), dir, child: None };
        server.spawn();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Where the server writes `dump.rdb`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already runs");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(self.data_dir())
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(redis::Value::SimpleString(pong)) = self.command(&["PING"]) {
                assert_eq!(pong, "PONG");
                return;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "redis-server exited ({exited:?}): {}", self.log());
            assert!(Instant::now() < deadline, "redis-server did not answer PING within 10 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command on a fresh connection, with timeouts so a hung server fails the test.
    pub fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
        connection.set_read_timeout(Some(Duration::from_secs(10)))?;
        connection.set_write_timeout(Some(Duration::from_secs(10)))?;
        redis::cmd(args[0]).arg(&args[1..]).query(&mut connection)
    }

    /// `SAVE`, then a copy of the snapshot it wrote, kept apart from the data dir.
    pub fn snapshot(&self) -> PathBuf {
        self.command(&["SAVE"]).unwrap_or_else(|e| panic!("SAVE: {e}"));
        let copy = self.dir.path().join(format!("snapshot-{}.rdb", rand_suffix()));
        std::fs::copy(self.data_dir().join("dump.rdb"), &copy).expect("copy dump.rdb aside");
        copy
    }

    /// `SHUTDOWN NOSAVE`: the server exits without writing what it holds.
    pub fn shutdown_nosave(&mut self) {
        // The server closes the connection instead of answering.
        let _ = self.command(&["SHUTDOWN", "NOSAVE"]);
        let mut child = self.child.take().expect("redis-server runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("redis-server status").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not exit within 10 s of SHUTDOWN NOSAVE: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and data dir, loading `snapshot`.
    pub fn restart_from(&mut self, snapshot: &Path) {
        std::fs::copy(snapshot, self.data_dir().join("dump.rdb")).expect("put the snapshot back");
        self.spawn();
    }

    /// The number of keys the server holds.
    pub fn dbsize(&self) -> i64 {
        match self.command(&["DBSIZE"]) {
            Ok(redis::Value::Int(keys)) => keys,
            other => panic!("DBSIZE answered {other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos()
}
