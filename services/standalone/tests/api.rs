//! The chat suite against the standalone server, in-process on port 0 with its own data dir.

use shared::shutdown::{ShutdownTrigger, channel};

struct Standalone {
    url: String,
    admin_token: String,
    trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

impl chatmesh_e2e::Deployment for Standalone {
    fn base_url(&self) -> String {
        self.url.clone()
    }

    fn admin_token(&self) -> Option<String> {
        Some(self.admin_token.clone())
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
    let admin_token = chatmesh_e2e::random_token("admin");
    config.segments.admin_token = Some(admin_token.clone());
    let server = chatmesh::start(&config).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = channel();
    tokio::spawn(server.serve(listener, shutdown));
    Standalone { url, admin_token, trigger, _dir: dir }
}

chatmesh_e2e::chat_suite_tests!(spawn);

/// Embedded mode reads its own writes: a message is found by search as soon as its create
/// answered, without waiting for the index's periodic commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_a_message_as_soon_as_its_create_answered() {
    use chatmesh_e2e::Deployment;
    let server = spawn().await;
    let api = server.api();
    let token = api.create_application("read your writes").await;
    let chat = api.create_chat(&token, "room").await;
    for round in 0..20 {
        let word = format!("fresh{round}word");
        let number = api.create_message(&token, chat, &format!("just sent {word}")).await;
        let hits = api.get(&format!("/api/applications/{token}/chats/{chat}/search?q={word}")).await;
        assert_eq!(hits.status, 200);
        let found: Vec<i64> = hits.body.as_array().unwrap().iter().map(|h| h["number"].as_i64().unwrap()).collect();
        assert_eq!(found, [number], "round {round}: the message just created is found");
    }
}
