//! The process-mode mesh, started by the same `deploy/mesh` script ops use, on free ports with
//! its own run dir, databases and namespace; purged (stopped, databases dropped) on drop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::{bin_dir, free_port, repo_root};

/// Which backends the mesh runs on.
#[derive(Clone, Debug)]
pub enum MeshBackends {
    /// MySQL / MariaDB, Redis and RabbitMQ at these URLs; the mesh makes its own databases
    /// (named `chatmesh_test_*`, which `.ci/run` sweeps) and namespace.
    Production { database_url: String, redis_url: String, amqp_url: String },
    /// SQLite and the on-disk queue shared through the run dir: one chat-write, one chat-read.
    Embedded,
}

impl MeshBackends {
    /// Production when `DATABASE_URL`, `REDIS_URL` and `AMQP_URL` are all set, else embedded.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (var("DATABASE_URL"), var("REDIS_URL"), var("AMQP_URL")) {
            (Some(database_url), Some(redis_url), Some(amqp_url)) => {
                Self::Production { database_url, redis_url, amqp_url }
            }
            _ => Self::Embedded,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MeshOptions {
    pub backends: MeshBackends,
    pub chat_write_replicas: usize,
    /// `chat-read --stream` processes, the chat-stream pool.
    pub stream_replicas: usize,
    /// Six-field cron of the count flush.
    pub count_flush_schedule: String,
    /// Besides chat, the services to run when built (`MESH_SERVICES`); `None`: the script's
    /// default (segments and events).
    pub services: Option<String>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            backends: MeshBackends::from_env(),
            chat_write_replicas: 2,
            stream_replicas: 1,
            count_flush_schedule: "* * * * * *".into(),
            services: None,
        }
    }
}

/// A running mesh.
pub struct ProcessMesh {
    pub url: String,
    pub admin_url: String,
    /// The operator's token every process got (`CHATMESH_ADMIN_TOKEN`).
    pub admin_token: String,
    pub run_dir: PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl ProcessMesh {
    /// `deploy/mesh start`; panics with the script's output when it fails.
    pub fn start(options: &MeshOptions) -> Self {
        let dir = tempfile::Builder::new().prefix("chatmesh-mesh-").tempdir().expect("temp dir");
        let run_dir = dir.path().join("run");
        let port = free_port();
        let admin_port = free_port();
        let suffix = format!("{:012x}", rand_u64() >> 16);
        let admin_token = crate::random_token("admin");
        let mut env: Vec<(String, String)> = vec![
            ("MESH_PORT".into(), port.to_string()),
            ("MESH_ADMIN_PORT".into(), admin_port.to_string()),
            ("MESH_RUN_DIR".into(), run_dir.display().to_string()),
            ("MESH_BIN_DIR".into(), bin_dir().display().to_string()),
            ("MESH_DB_PREFIX".into(), format!("chatmesh_test_{suffix}")),
            ("CHATMESH_NAMESPACE".into(), format!("chatmesh-test-{suffix}")),
            ("CHAT_WRITE_REPLICAS".into(), options.chat_write_replicas.to_string()),
            ("STREAM_REPLICAS".into(), options.stream_replicas.to_string()),
            ("CHATMESH_COUNT_FLUSH_SCHEDULE".into(), options.count_flush_schedule.clone()),
            ("CHATMESH_ADMIN_TOKEN".into(), admin_token.clone()),
        ];
        if let Some(services) = &options.services {
            env.push(("MESH_SERVICES".into(), services.clone()));
        }
        match &options.backends {
            MeshBackends::Production { database_url, redis_url, amqp_url } => {
                env.push(("MESH_BACKENDS".into(), "production".into()));
                env.push(("DATABASE_URL".into(), database_url.clone()));
                env.push(("REDIS_URL".into(), redis_url.clone()));
                env.push(("AMQP_URL".into(), amqp_url.clone()));
            }
            MeshBackends::Embedded => env.push(("MESH_BACKENDS".into(), "embedded".into())),
        }
        let output = script(&env).arg("start").output().expect("run deploy/mesh start");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "deploy/mesh start failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert!(url.starts_with("http://"), "deploy/mesh start printed {stdout:?}");
        Self { url, admin_url: format!("http://127.0.0.1:{admin_port}"), admin_token, run_dir, env, _dir: dir }
    }

    /// The pid `deploy/mesh` recorded for `name` (e.g. `chat-write-1`).
    pub fn pid(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string(self.run_dir.join("pids").join(format!("{name}.pid"))).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// Every recorded process: name → pid.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        let Ok(entries) = std::fs::read_dir(self.run_dir.join("pids")) else { return BTreeMap::new() };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().strip_suffix(".pid")?.to_owned();
                let pid = self.pid(&name)?;
                Some((name, pid))
            })
            .collect()
    }

    /// The upstreams file the script wrote: pool → addresses.
    pub fn upstreams(&self) -> BTreeMap<String, Vec<String>> {
        let text = std::fs::read_to_string(self.run_dir.join("upstreams.toml")).unwrap_or_default();
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (pool, list) = line.split_once('=')?;
                // A one-line TOML array of strings, `["a", "b"]`, reads as JSON too.
                Some((pool.trim().to_owned(), serde_json::from_str(list.trim()).ok()?))
            })
            .collect()
    }

    /// A service's log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.run_dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The gateway's metric series `name{labels}` exactly as rendered.
    pub fn metric(&self, series: &str) -> Option<f64> {
        crate::harness::metric(&self.admin_url, series)
    }

    /// `deploy/mesh stop`; returns its output.
    pub fn stop(&self) -> std::process::Output {
        script(&self.env).arg("stop").output().expect("run deploy/mesh stop")
    }
}

impl Drop for ProcessMesh {
    fn drop(&mut self) {
        let _ = script(&self.env).arg("purge").output();
    }
}

fn script(env: &[(String, String)]) -> Command {
    let mut command = Command::new(repo_root().join("deploy/mesh"));
    command.current_dir(repo_root());
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "AMQP_URL",
        "ELASTICSEARCH_URL",
        "GATEWAY_CONFIG",
        "MESH_SERVICES",
        "MESH_HOST",
        "CHAT_READ_REPLICAS",
        "CONSUMERS",
        "STREAM_REPLICAS",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos(),
    );
    hasher.finish()
}

impl crate::Deployment for ProcessMesh {
    fn base_url(&self) -> String {
        self.url.clone()
    }

    fn admin_token(&self) -> Option<String> {
        Some(self.admin_token.clone())
    }
}
