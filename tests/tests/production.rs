//! The chat HTTP suite with chat-write and chat-read (API, consumer, cron) as separate
//! processes on MySQL / MariaDB, Redis and RabbitMQ. Skipped with a printed reason unless
//! `DATABASE_URL`, `REDIS_URL` and `AMQP_URL` are set.
//!
//! chat-write runs on one worker thread here (`CHATMESH_WORKER_THREADS=1`: server, counters and
//! publisher on one thread); the fault and gateway tests run it with the default, one per core.

use chatmesh_e2e::split::SplitChat;

async fn spawn() -> Option<SplitChat> {
    SplitChat::start("chat suite on production backends", &[("CHATMESH_WORKER_THREADS", "1")]).await
}

chatmesh_e2e::chat_suite_tests!(optional spawn);

/// Four-byte characters (10,000 emoji) and NUL bytes in a message are stored in MySQL and read
/// back exactly, or refused with a 4xx; never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_and_nul_bytes_round_trip_through_mysql() {
    use chatmesh_e2e::Deployment;
    let Some(split) = spawn().await else { return };
    let api = split.api();
    let token = api.create_application("four-byte characters").await;
    let chat = api.create_chat(&token, "room").await;
    let emoji: String = ['😀', '🦀', '𝄞', '🀄'].iter().cycle().take(10_000).collect();
    for content in [emoji.as_str(), "a\u{0}b\u{0}", "mixed 😀 and \u{0} and ascii"] {
        let path = format!("/api/applications/{token}/chats/{chat}/messages");
        let created = api.post(&path, &serde_json::json!({ "message_content": content })).await;
        if created.status.is_client_error() {
            assert!(!created.error_code().is_empty(), "a JSON error: {}", created.text);
            continue;
        }
        assert_eq!(created.status, 201, "{}", created.text);
        let number = created.body["message_number"].as_i64().expect("message number");
        let read = api.get_eventually(&format!("{path}/{number}")).await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["message_content"].as_str(), Some(content), "read back exactly from MySQL");
    }
}

// The live stream on the production backends: the consumer logs each change as it commits and
// notifies over RabbitMQ; the API process's stream wakes and reads MySQL.
chatmesh_e2e::stream_suite_tests!(optional spawn);
