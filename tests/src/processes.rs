//! Runs chatmesh binaries as child processes for end-to-end and fault tests.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::binary;

/// A running chatmesh process; killed when dropped.
pub struct Service {
    pub name: String,
    pub url: String,
    child: Child,
}

impl Service {
    /// Starts `binary` with `args` and `envs`, listening on an ephemeral port, and waits for
    /// its "listening on" line.
    pub async fn start(binary_name: &str, args: &[&str], envs: &[(&str, &str)]) -> Service {
        Self::spawn(binary_name, args, envs, &[], Duration::from_secs(60)).await
    }

    /// [`Service::start`] allowing `timeout` before the "listening on" line: for a start that
    /// first has much to do (indexing a store filled behind the server's back).
    pub async fn start_within(binary_name: &str, args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Service {
        Self::spawn(binary_name, args, envs, &[], timeout).await
    }

    /// [`Service::start`] without the backend URLs this process was given, so every port the
    /// service opens is embedded (under `CHATMESH_DATA_DIR`).
    pub async fn start_embedded(binary_name: &str, args: &[&str], envs: &[(&str, &str)]) -> Service {
        Self::spawn(binary_name, args, envs, &shared::config::BACKEND_URL_VARS, Duration::from_secs(60)).await
    }

    async fn spawn(
        binary_name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        removed: &[&str],
        timeout: Duration,
    ) -> Service {
        let mut command = Command::new(binary(binary_name));
        for name in removed {
            command.env_remove(name);
        }
        command
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", std::env::var("CHATMESH_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {binary_name}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once(" listening on ") {
                    return url.to_owned();
                }
            }
            panic!("{binary_name} exited before listening");
        })
        .await
        .unwrap_or_else(|_| panic!("{binary_name} did not listen within {timeout:?}"));
        // Keep draining stdout (where logs go) so the child never blocks on a full pipe;
        // echoed to stderr when CHATMESH_TEST_LOG asks for logs.
        let echo = std::env::var_os("CHATMESH_TEST_LOG").is_some();
        let label = format!("{binary_name} {}", args.join(" "));
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("[{label}] {line}");
                }
            }
        });
        Service { name: binary_name.to_owned(), url, child }
    }

    /// SIGKILL, no goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Whether `pid` still runs (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}
