//! Numbering that comes back older than what was handed out, and the promise that holds anyway
//! (DESIGN.md, "What a 201 promises, whatever fails"): no number is handed out twice and every
//! 201 reads back with its content.
//!
//! - Redis restored from an older snapshot under load, behind the gateway of the process mesh
//!   (`deploy/mesh` on MariaDB and RabbitMQ, with a Redis of the test's own).
//! - The embedded chat-write killed and started again while the commands it acknowledged
//!   still wait in the queue (chat-read stopped), as `deploy/mesh` runs it with
//!   `MESH_BACKENDS=embedded`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatmesh_e2e::Api;
use chatmesh_e2e::acknowledged::{
    AckedChat, AckedMessage, all_messages, assert_none_handed_out_twice, chat_numbers_handed_out_twice,
    message_numbers_handed_out_twice, read_back_chats, read_back_messages,
};
use chatmesh_e2e::mesh::{MeshBackends, MeshOptions, ProcessMesh};
use chatmesh_e2e::redis_server::RedisServer;
use chatmesh_e2e::split::EmbeddedChat;
use serde_json::{Value, json};

/// The stages of a fault, to say when each 201 came.
const STAGES: [&str; 3] = ["before the snapshot", "between the snapshot and the rollback", "after the rollback"];

/// What the writers saw.
#[derive(Default)]
struct Seen {
    chats: Vec<AckedChat>,
    messages: Vec<AckedMessage>,
    created_per_stage: [usize; 3],
    unavailable: usize,
    /// Answers other than 201 and 503.
    unexpected: Vec<String>,
}

/// Writers creating messages in the application's chats, and now and then a chat (which later
/// messages go to as well), until stopped. Contents and names are unique to each request.
struct Writers {
    stop: Arc<AtomicBool>,
    stage: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(api: &Api, token: &str, chats: Vec<AckedChat>, writers: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let stage = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen { chats, ..Seen::default() }));
        let tasks = (0..writers)
            .map(|w| {
                let (api, token) = (api.clone(), token.to_owned());
                let (stop, stage, seen) = (stop.clone(), stage.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut i = 0_usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let new_chat = i.is_multiple_of(8);
                        let (path, body) = if new_chat {
                            let name = format!("writer {w} chat {i} w{w}c{i}z");
                            (format!("/api/applications/{token}/chats"), json!({ "chat_name": name }))
                        } else {
                            let chat = {
                                let seen = seen.lock().unwrap();
                                seen.chats[(i * 31 + w) % seen.chats.len()].number
                            };
                            let content = format!("writer {w} message {i} w{w}m{i}z");
                            (format!("/api/applications/{token}/chats/{chat}"), json!({ "message_content": content }))
                        };
                        let sent = api.http.post(api.url(&path)).json(&body).send().await;
                        let (status, text) = match sent {
                            Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
                            Err(_) => (0, String::new()),
                        };
                        if status == 201 {
                            let body: Value = serde_json::from_str(&text).expect("a 201 body");
                            let mut seen = seen.lock().unwrap();
                            if new_chat {
                                seen.chats.push(AckedChat::from_body(&body).expect("a chat 201"));
                            } else {
                                seen.messages.push(AckedMessage::from_body(&body).expect("a message 201"));
                            }
                            seen.created_per_stage[stage.load(Ordering::Relaxed)] += 1;
                            continue;
                        }
                        match status {
                            // 0: the request got no answer.
                            0 | 503 => seen.lock().unwrap().unavailable += 1,
                            _ => seen.lock().unwrap().unexpected.push(format!("POST {path}: {status} {text}")),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .collect();
        Writers { stop, stage, seen, tasks }
    }

    fn created(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.created_per_stage.iter().sum()
    }

    fn enter_stage(&self, stage: usize) {
        self.stage.store(stage, Ordering::Relaxed);
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis is shut down without saving under load and started again from a snapshot taken four
/// seconds earlier: the counters it gives back are older than numbers already acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_from_an_older_snapshot_reuses_no_number_and_loses_nothing() {
    let test = "redis_restored_from_an_older_snapshot";
    let (Some(database_url), Some(amqp_url)) =
        (shared::testing::backend_url("DATABASE_URL", test), shared::testing::backend_url("AMQP_URL", test))
    else {
        return;
    };
    let Some(mut redis) = RedisServer::start(test) else { return };
    let options = MeshOptions {
        backends: MeshBackends::Production { database_url, redis_url: redis.url(), amqp_url },
        services: Some(String::new()),
        ..MeshOptions::default()
    };
    let mesh = tokio::task::spawn_blocking(move || ProcessMesh::start(&options)).await.expect("mesh start");
    let api = Api::new(&mesh.url);
    let token = api.create_application("rollback").await;
    let mut chats = Vec::new();
    for name in ["first room", "second room", "third room"] {
        chats.push(AckedChat { number: api.create_chat(&token, name).await, name: name.to_owned() });
    }

    let writers = Writers::start(&api, &token, chats, 8);
    wait_for("300 creates before the snapshot", Duration::from_secs(60), || writers.created() >= 300).await;
    let snapshot = tokio::task::block_in_place(|| redis.snapshot());
    writers.enter_stage(1);
    let at_snapshot = writers.created();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let at_rollback = writers.created();
    let keys_after_restart = tokio::task::block_in_place(|| {
        redis.shutdown_nosave();
        redis.restart_from(&snapshot);
        redis.dbsize()
    });
    writers.enter_stage(2);
    let restarted = Instant::now();
    wait_for("300 creates and 6 s after the rollback", Duration::from_secs(60), || {
        writers.created() >= at_rollback + 300 && restarted.elapsed() >= Duration::from_secs(6)
    })
    .await;
    let seen = writers.stop().await;

    let reused_messages = message_numbers_handed_out_twice(&seen.messages);
    let reused_chats = chat_numbers_handed_out_twice(&seen.chats);
    let messages_back = read_back_messages(&api, &token, &seen.messages, Duration::from_secs(90)).await;
    let chats_back = read_back_chats(&api, &token, &seen.chats, Duration::from_secs(30)).await;
    let per_stage: Vec<String> =
        STAGES.iter().zip(seen.created_per_stage).map(|(stage, n)| format!("{n} {stage}")).collect();
    eprintln!(
        "{test}: {} messages and {} chats acknowledged ({}), {} creates unavailable, {keys_after_restart} keys \
         in the restored Redis; numbers handed out twice: {} message numbers, {} chat numbers; {messages_back}; \
         {chats_back}",
        seen.messages.len(),
        seen.chats.len(),
        per_stage.join(", "),
        seen.unavailable,
        reused_messages.len(),
        reused_chats.len(),
    );
    assert!(at_rollback > at_snapshot, "creates went on between the snapshot and the rollback");
    assert!(
        seen.unexpected.is_empty(),
        "answers other than 201 or 503: {:?}",
        &seen.unexpected[..5.min(seen.unexpected.len())]
    );
    assert_none_handed_out_twice("(chat, message number) pairs", &reused_messages);
    assert_none_handed_out_twice("chat numbers", &reused_chats);
    messages_back.assert_complete();
    chats_back.assert_complete();
}

/// POSTs `count` messages one after another; each must answer 201.
async fn post_messages(api: &Api, token: &str, chat: i64, label: &str, count: usize) -> Vec<AckedMessage> {
    let mut acked = Vec::new();
    for i in 0..count {
        let content = format!("{label} {i} {label}{i}z").replace(' ', "-");
        let reply =
            api.post(&format!("/api/applications/{token}/chats/{chat}"), &json!({ "message_content": content })).await;
        assert_eq!(reply.status, 201, "{label}, message {i}: {}", reply.text);
        acked.push(AckedMessage::from_body(&reply.body).expect("a message 201"));
    }
    acked
}

/// The embedded chat-write numbers from in-process counters. Killed and started again while the
/// 100 messages it acknowledged wait in the queue (chat-read is down, so none is stored), it
/// must not number the next 100 from the store alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_chat_write_restarted_with_commands_queued_reuses_no_number() {
    let test = "embedded_chat_write_restarted_with_commands_queued";
    let services = EmbeddedChat::new();
    let mut read = services.start_read().await;
    let mut write = services.start_write().await;
    let api = Api::split(&read.url, &write.url);
    let token = api.create_application("queued").await;
    let chat = api.create_chat(&token, "room").await;
    let stored = api.get_eventually(&format!("/api/applications/{token}/chats/{chat}")).await;
    assert_eq!(stored.status, 200, "the chat is stored before chat-read stops: {}", stored.text);

    read.kill().await;
    let mut acked = post_messages(&api, &token, chat, "before the restart", 100).await;
    write.kill().await;
    write = services.start_write().await;
    let api = Api::split(&read.url, &write.url);
    acked.extend(post_messages(&api, &token, chat, "after the restart", 100).await);
    read = services.start_read().await;
    let api = Api::split(&read.url, &write.url);

    let reused = message_numbers_handed_out_twice(&acked);
    let back = read_back_messages(&api, &token, &acked, Duration::from_secs(60)).await;
    let stored = all_messages(&api, &token, chat).await.len();
    eprintln!(
        "{test}: {} messages acknowledged, {} numbers handed out twice, {stored} stored; {back}",
        acked.len(),
        reused.len()
    );
    assert_none_handed_out_twice("message numbers", &reused);
    back.assert_complete();
    assert_eq!(stored, 200, "exactly the acknowledged messages are stored");
}
