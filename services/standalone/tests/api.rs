//! The chat suite against the standalone server, in-process on port 0 with its own data dir.

use chatmesh::testing::Standalone;

/// The in-process server as the chat suite drives it.
struct Server(Standalone);

impl chatmesh_e2e::Deployment for Server {
    fn base_url(&self) -> String {
        self.0.url.clone()
    }

    fn admin_token(&self) -> Option<String> {
        self.0.admin_token.clone()
    }
}

async fn spawn() -> Server {
    let server = chatmesh::testing::spawn(|config| {
        config.count_flush_schedule = "* * * * * *".to_owned();
        config.segments.admin_token = Some(chatmesh_e2e::random_token("admin"));
    })
    .await;
    Server(server)
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

/// A thousand concurrent retries of one idempotent create: every one answers the same 201, one
/// message is stored and one number drawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_retries_create_one_message() {
    use chatmesh_e2e::Deployment;
    let server = spawn().await;
    let api = server.api();
    let token = api.create_application("retry storm").await;
    let chat = api.create_chat(&token, "room").await;
    let url = api.url(&format!("/api/applications/{token}/chats/{chat}/messages"));
    let retries = (0..1000).map(|_| {
        let (http, url) = (api.http.clone(), url.clone());
        async move {
            let response = http
                .post(url)
                .header("Idempotency-Key", "storm-1")
                .json(&serde_json::json!({"message_content": "only once"}))
                .send()
                .await
                .expect("a retry");
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    });
    let replies = futures::future::join_all(retries).await;
    let statuses: std::collections::BTreeMap<u16, usize> =
        replies.iter().fold(Default::default(), |mut counts, (status, _)| {
            *counts.entry(*status).or_default() += 1;
            counts
        });
    assert_eq!(statuses, [(201, 1000)].into(), "every retry answered 201");
    assert!(replies.iter().all(|(_, body)| body == &replies[0].1), "the same body each time");
    assert_eq!(replies[0].1["message_number"], 1);
    let listed = api.get(&format!("/api/applications/{token}/chats/{chat}/messages")).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "one message: {}", listed.text);
    assert_eq!(api.create_message(&token, chat, "next").await, 2, "one number was drawn");
}
