//! Fault tests against the real servers, with chat-write and chat-read as separate processes:
//! the consumer killed and restarted, RabbitMQ restarted, Redis flushed, a poison command parked
//! in the dead-letter queue and replayed, and the consumer's store cut off and given back. Each
//! ends by checking that every 201 was persisted exactly once, with the content it was
//! acknowledged with, and that numbers are unique (and, after the consumer's kill, that search
//! finds every one of them). The tests take turns: they restart shared servers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chatmesh_e2e::acknowledged::{AckedMessage, all_messages, read_back_messages};
use chatmesh_e2e::faults::{chat_read, chat_under_load, wait_for};
use chatmesh_e2e::split::SplitChat;
use chatmesh_e2e::{Api, Deployment};
use serde_json::json;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every acknowledged message is persisted, once, with its content.
async fn assert_all_persisted(api: &Api, token: &str, chat: i64, acknowledged: &HashMap<i64, String>) {
    let acked: Vec<AckedMessage> = acknowledged
        .iter()
        .map(|(number, content)| AckedMessage { chat, number: *number, content: content.clone() })
        .collect();
    read_back_messages(api, token, &acked, Duration::from_secs(120)).await.assert_complete();
}

/// Every acknowledged message is found by search, by its own last word, and nothing else is.
async fn assert_all_searchable(api: &Api, token: &str, chat: i64, acknowledged: &HashMap<i64, String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (number, content) in acknowledged {
        let word = content.rsplit(' ').next().expect("a last word");
        let path = format!("/api/applications/{token}/chats/{chat}/search?q={word}");
        loop {
            let reply = api.get(&path).await;
            let hits: Vec<i64> = reply
                .body
                .as_array()
                .map(|hits| hits.iter().filter_map(|hit| hit["number"].as_i64()).collect())
                .unwrap_or_default();
            if hits == [*number] {
                break;
            }
            assert!(Instant::now() < deadline, "search for {word:?} found {hits:?}, not message {number}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn setup(api: &Api) -> (String, i64) {
    let token = api.create_application("faults").await;
    let chat = api.create_chat(&token, "room").await;
    (token, chat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_killed_mid_stream_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(mut mesh) = SplitChat::start("consumer_killed_mid_stream", &[]).await else { return };
    let (api, token, chat, load) = chat_under_load(&mesh, "faults", "writes before the kill", 100).await;
    mesh.consumer.kill().await;
    let at_kill = load.acknowledged_count();
    wait_for("writes while the consumer is down", Duration::from_secs(30), || {
        load.acknowledged_count() > at_kill + 100
    })
    .await;
    mesh.consumer = mesh.start_like("chat-read", &["--api", "false", "--cron", "false"]).await;
    let at_restart = load.acknowledged_count();
    wait_for("writes after the restart", Duration::from_secs(30), || load.acknowledged_count() > at_restart + 100)
        .await;
    let (acknowledged, _) = load.stop().await;
    assert_all_persisted(&api, &token, chat, &acknowledged).await;
    // What the killed consumer had persisted but not committed to the index yet is indexed
    // from the store by the one that replaced it.
    assert_all_searchable(&api, &token, chat, &acknowledged).await;
}

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl").args(args).status().expect("run rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restart_gives_503_then_recovers_and_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(mesh) = SplitChat::start("rabbitmq_restart", &[]).await else { return };
    let (api, token, chat, load) = chat_under_load(&mesh, "faults", "writes before the restart", 100).await;
    rabbitmqctl(&["stop_app"]);
    let unavailable = load.unavailable.clone();
    wait_for("503s while RabbitMQ is down", Duration::from_secs(30), || unavailable.load(Ordering::Relaxed) > 5).await;
    // A chat created while the broker is down spends its number but is never confirmed.
    let lost_chat = api.post(&format!("/api/applications/{token}/chats"), &json!({"chat_name": "unconfirmed"})).await;
    assert_eq!(lost_chat.status, 503, "{:?}", lost_chat.body);
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let at_start = load.acknowledged_count();
    wait_for("201s after RabbitMQ is back", Duration::from_secs(60), || load.acknowledged_count() > at_start + 100)
        .await;
    let (acknowledged, unavailable) = load.stop().await;
    assert!(unavailable > 0, "chat-write answered 503 while the broker was down");
    assert_all_persisted(&api, &token, chat, &acknowledged).await;
    // No message is accepted for the chat whose create answered 503: it would never be stored.
    let next_chat = api.create_chat(&token, "after the restart").await;
    assert_eq!(next_chat, chat + 2, "the unconfirmed create spent chat number {}", chat + 1);
    let orphan =
        api.post(&format!("/api/applications/{token}/chats/{}", chat + 1), &json!({"message_content": "x"})).await;
    assert_eq!(orphan.status, 404, "a message for the unconfirmed chat: {:?}", orphan.body);
    assert_eq!(api.get(&format!("/api/applications/{token}/chats/{}", chat + 1)).await.status, 404);
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_mid_stream_never_reuses_a_number() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(mesh) = SplitChat::start("redis_flushall", &[]).await else { return };
    let (api, token, chat, load) = chat_under_load(&mesh, "faults", "writes before the flush", 300).await;
    let redis_url = std::env::var("REDIS_URL").unwrap();
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL").query_async::<()>(&mut redis).await.unwrap();
    let max_before = *load.acknowledged.lock().unwrap().keys().max().unwrap();
    let at_flush = load.acknowledged_count();
    wait_for("writes after the flush", Duration::from_secs(30), || load.acknowledged_count() > at_flush + 100).await;
    let (acknowledged, _) = load.stop().await;
    assert!(acknowledged.keys().any(|n| *n > max_before), "numbering continues above the old maximum");
    assert_all_persisted(&api, &token, chat, &acknowledged).await;
    // Chat numbers continue too: never a number already handed out, and at most one
    // reservation block skipped (the price of never asking the store per number).
    let next_chat = api.create_chat(&token, "after the flush").await;
    let block = shared::backends::counters::redis::RESERVATION_BLOCK;
    assert!(next_chat > chat && next_chat <= chat + 1 + block, "chat {next_chat} follows chat {chat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_command_is_dead_lettered_and_replayed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(mesh) = SplitChat::start("poison_command", &[("CHATMESH_CONSUMER_MAX_ATTEMPTS", "3")]).await else {
        return;
    };
    let api = mesh.api();
    let (token, chat) = setup(&api).await;
    // A message for chat 2 published before chat 2 exists: the consumer cannot persist it,
    // retries, then parks it.
    let namespace = mesh.env.iter().find(|(k, _)| k == "CHATMESH_NAMESPACE").unwrap().1.clone();
    let database_url = mesh.env.iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1.clone();
    let db = shared::backends::sql::Database::connect(&database_url).await.unwrap();
    let application_id = chat::schema::application_id(&db, &token).await.unwrap().expect("application");
    let poison = json!({
        "type": "create_message", "application_id": application_id, "chat_number": chat + 1,
        "message_number": 1, "content": "early bird", "created_at": 0
    });
    let queue = shared::backends::queue::RabbitQueue::connect(&std::env::var("AMQP_URL").unwrap()).await.unwrap();
    let queue_name = format!("{namespace}.chat.commands");
    shared::backends::queue::Queue::publish(&queue, &queue_name, poison.to_string().into()).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = chat_read(&mesh, &["dead-letters"]);
        if out.contains("early bird") || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(listed.contains("early bird"), "the poison command is listed as a dead letter: {listed}");
    assert!(listed.contains("chat not persisted yet"), "with its reason: {listed}");

    // Once its chat exists, replaying the dead letter persists it.
    assert_eq!(api.create_chat(&token, "late chat").await, chat + 1);
    let replayed = chat_read(&mesh, &["replay-dead-letters"]);
    assert!(replayed.contains("replayed 1 dead letters"), "{replayed}");
    let message = api.get_eventually(&format!("/api/applications/{token}/chats/{}/messages/1", chat + 1)).await;
    assert_eq!(message.body["message_content"], "early bird");
    assert!(!chat_read(&mesh, &["dead-letters"]).contains("early bird"), "the dead-letter queue is empty again");
}

/// A TCP relay in front of MariaDB that can cut every connection through it (a network
/// outage between the consumer and the store) and let them through again.
struct Relay {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if *watch.borrow() {
                    continue; // refused: dropped at once
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { addr, cut }
    }

    fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// The consumer loses its store mid-stream (every connection cut, new ones refused) and gets it
/// back: it recovers by itself, without a restart, and every 201 is persisted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_under_the_consumer_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(mut mesh) = SplitChat::start("store_outage_under_the_consumer", &[]).await else { return };
    let database_url = mesh.env.iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1.clone();
    let mut url = reqwest::Url::parse(&database_url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(3306));
    let relay = Relay::start(target).await;
    url.set_host(Some(&relay.addr.ip().to_string())).unwrap();
    url.set_port(Some(relay.addr.port())).unwrap();
    mesh.consumer.kill().await;
    mesh.consumer =
        mesh.start_with("chat-read", &["--api", "false", "--cron", "false"], &[("DATABASE_URL", url.as_str())]).await;
    let consumer_pid = mesh.consumer.pid();

    let (api, token, chat, load) = chat_under_load(&mesh, "faults", "writes before the outage", 100).await;
    relay.cut(true);
    let at_cut = load.acknowledged_count();
    wait_for("writes during the outage", Duration::from_secs(30), || load.acknowledged_count() > at_cut + 200).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let persisted_during = all_messages(&api, &token, chat).await.len();
    relay.cut(false);
    let restored = Instant::now();
    let at_restore = load.acknowledged_count();
    wait_for("writes after the outage", Duration::from_secs(30), || load.acknowledged_count() > at_restore + 100).await;
    let (acknowledged, _) = load.stop().await;
    assert!(
        persisted_during < at_restore,
        "the outage held the consumer up: {persisted_during} of {at_restore} acknowledged were persisted during it"
    );
    assert_all_persisted(&api, &token, chat, &acknowledged).await;
    eprintln!(
        "store outage: {} creates acknowledged, {persisted_during} of the first {at_restore} persisted during the \
         outage, all persisted {:?} after it ended",
        acknowledged.len(),
        restored.elapsed()
    );
    assert_eq!(mesh.consumer.pid(), consumer_pid, "the same consumer process recovered");
    assert!(consumer_pid.is_some_and(chatmesh_e2e::processes::pid_alive), "the consumer is still running");
}

/// A create cut off by a SIGKILL of chat-write at some point of its life, then retried with its
/// `Idempotency-Key` against the restarted chat-write until a 201, is stored exactly once: the
/// kill may land before the key is claimed, after, after the number is drawn or after the
/// command is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_after_chat_write_is_killed_creates_one_message() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(mut mesh) = SplitChat::start("idempotent retry across a kill", &[]).await else { return };
    let (token, chat) = setup(&mesh.api()).await;
    mesh.api().get_eventually(&format!("/api/applications/{token}/chats/{chat}")).await;
    let path = format!("/api/applications/{token}/chats/{chat}/messages");
    let mut answered = HashMap::new();
    for round in 0..6u64 {
        let (key, content) = (format!("kill-{round}"), format!("cut off in round {round}"));
        let send = |api: Api| {
            let (key, url) = (key.clone(), api.url_for(&reqwest::Method::POST, &path));
            let body = json!({ "message_content": content });
            async move { api.http.post(url).header("Idempotency-Key", key).json(&body).send().await }
        };
        let first = tokio::spawn(send(mesh.api()));
        tokio::time::sleep(Duration::from_millis(round * 4)).await;
        mesh.write.kill().await;
        let _cut_off = first.await;
        mesh.write = mesh.start_like("chat-write", &[]).await;
        // A 409 means the killed request's claim is still young: retry, as a client would.
        let deadline = Instant::now() + Duration::from_secs(60);
        let number = loop {
            let reply = send(mesh.api()).await.expect("the retry reaches chat-write");
            let status = reply.status();
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            match status.as_u16() {
                201 => break body["message_number"].as_i64().expect("a number"),
                409 | 503 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
                other => panic!("round {round}: {other} {body}"),
            }
        };
        answered.insert(number, content);
    }
    let api = mesh.api();
    assert_all_persisted(&api, &token, chat, &answered).await;
    let stored = all_messages(&api, &token, chat).await;
    let mut copies: HashMap<&String, usize> = HashMap::new();
    for content in stored.values() {
        *copies.entry(content).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(stored.len(), answered.len(), "nothing but the retried creates: {stored:?}");
}
