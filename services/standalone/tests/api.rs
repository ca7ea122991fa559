//! The chat suite against the standalone server, in-process on port 0 with its own data dir.

use shared::shutdown::{ShutdownTrigger, channel};

struct Standalone {
    url: String,
    trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

impl chatmesh_e2e::Deployment for Standalone {
    fn base_url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

async fn spawn() -> Standalone {
    shared::telemetry::init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = chatmesh::Config::embedded(dir.path());
    config.count_flush_schedule = "* * * * * *".to_owned();
    let server = chatmesh::start(&config).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = channel();
    tokio::spawn(server.serve(listener, shutdown));
    Standalone { url, trigger, _dir: dir }
}

chatmesh_e2e::chat_suite_tests!(spawn);
