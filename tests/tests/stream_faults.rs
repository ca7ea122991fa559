//! The live stream under faults, on the production backends (MariaDB, Redis, RabbitMQ):
//! subscribers on two stream replicas (`chat-read --stream`) while messages are created and
//! edited, the consumer SIGKILLed and restarted, then one stream replica SIGKILLed with its
//! clients reconnecting to the other from their last event id. Every 201 and every edit
//! reaches every subscriber exactly once, in cursor order, and each subscriber's view of the
//! chat ends as the store holds it. Skipped with a printed reason unless `DATABASE_URL`,
//! `REDIS_URL` and `AMQP_URL` are set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatmesh_e2e::Deployment;
use chatmesh_e2e::faults::{Load, wait_for};
use chatmesh_e2e::split::SplitChat;
use chatmesh_e2e::stream::{Sse, SseEvent, application_with_chat, chat_stream_path};
use serde_json::json;

/// A client following one chat through whichever replica answers, from the last id it got.
struct Subscriber {
    events: Arc<Mutex<Vec<SseEvent>>>,
    /// Times its stream ended and it connected again.
    reconnects: Arc<AtomicUsize>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Starts following `path` on `replicas[first]` (then the next one whenever that fails),
    /// replaying the chat from its first message.
    fn start(replicas: Arc<Mutex<Vec<String>>>, path: String, first: usize) -> Subscriber {
        let events: Arc<Mutex<Vec<SseEvent>>> = Arc::default();
        let reconnects = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (events, reconnects, connected, stop) =
                (events.clone(), reconnects.clone(), connected.clone(), stop.clone());
            tokio::spawn(async move {
                let mut attempt = first;
                while !stop.load(Ordering::Relaxed) {
                    let url = {
                        let replicas = replicas.lock().unwrap();
                        format!("{}{path}", replicas[attempt % replicas.len()])
                    };
                    let last = events.lock().unwrap().last().and_then(|event| event.id.clone());
                    let url = if last.is_none() { format!("{url}?after=0") } else { url };
                    let Some(mut stream) = Sse::try_open(&url, last.as_deref()).await else {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if connected.swap(true, Ordering::SeqCst) {
                        reconnects.fetch_add(1, Ordering::SeqCst);
                    }
                    while !stop.load(Ordering::Relaxed) {
                        match stream.next(Duration::from_millis(200)).await {
                            Some(event) => events.lock().unwrap().push(event),
                            None if stream.ended => break,
                            None => {}
                        }
                    }
                }
            })
        };
        Subscriber { events, reconnects, connected, stop, task }
    }

    async fn stop(self) -> (Vec<SseEvent>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("subscriber");
        let events = self.events.lock().unwrap().clone();
        (events, self.reconnects.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_reaches_every_subscriber_once_through_kills() {
    let Some(mut mesh) = SplitChat::start("stream faults", &[("CHATMESH_STREAM_POLL_MS", "500")]).await else { return };
    let mut doomed = mesh.start_like("chat-read", &["--stream"]).await;
    let survivor = mesh.start_like("chat-read", &["--stream"]).await;
    let replicas = Arc::new(Mutex::new(vec![doomed.url.clone(), survivor.url.clone()]));
    let api = mesh.api();
    let (token, chat) = application_with_chat(&api, "stream faults").await;
    let path = chat_stream_path(&token, chat, "");
    // Two subscribers on each replica.
    let subscribers: Vec<Subscriber> =
        (0..4).map(|i| Subscriber::start(replicas.clone(), path.clone(), i % 2)).collect();
    wait_for("every subscriber connected", Duration::from_secs(30), || {
        subscribers.iter().all(|s| s.connected.load(Ordering::SeqCst))
    })
    .await;

    let load = Load::start(&api, &token, chat, 4);
    // Edits of acknowledged messages beside the creates: every 200 is an edit the stream owes.
    let edits: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let editing = Arc::new(AtomicBool::new(true));
    let editor = {
        let (api, token, acknowledged, edits, editing) =
            (api.clone(), token.clone(), load.acknowledged.clone(), edits.clone(), editing.clone());
        tokio::spawn(async move {
            let mut round = 0u64;
            while editing.load(Ordering::Relaxed) {
                round += 1;
                let numbers: Vec<i64> = acknowledged.lock().unwrap().keys().copied().collect();
                if let Some(&number) = numbers.get((round as usize * 7919) % numbers.len().max(1)) {
                    let content = format!("edit {round} of {number}");
                    let path = format!("/api/applications/{token}/chats/{chat}/messages/{number}");
                    let reply =
                        api.send(reqwest::Method::PUT, &path, Some(&json!({ "message_content": content }))).await;
                    // A 404 is a message not stored yet (its create is still queued).
                    if reply.status == 200 {
                        edits.lock().unwrap().push((number, content));
                    } else {
                        assert_eq!(reply.status, 404, "edit of {number}: {}", reply.text);
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let acked_past = |count: usize| {
        let load = &load;
        move || load.acknowledged_count() > count
    };
    wait_for("writes before the consumer's kill", Duration::from_secs(30), acked_past(100)).await;
    mesh.consumer.kill().await;
    let at_kill = load.acknowledged_count();
    wait_for("writes while the consumer is down", Duration::from_secs(30), acked_past(at_kill + 100)).await;
    mesh.consumer = mesh.start_like("chat-read", &["--api", "false", "--cron", "false"]).await;
    let at_restart = load.acknowledged_count();
    wait_for("writes after the consumer's restart", Duration::from_secs(30), acked_past(at_restart + 100)).await;
    doomed.kill().await;
    let at_replica_kill = load.acknowledged_count();
    wait_for("writes after a replica's kill", Duration::from_secs(30), acked_past(at_replica_kill + 100)).await;
    let (acknowledged, _) = load.stop().await;
    // On a fast machine the phases above take a second: edit on until there are some to owe.
    wait_for("edits", Duration::from_secs(60), || edits.lock().unwrap().len() >= 20).await;
    editing.store(false, Ordering::Relaxed);
    editor.await.expect("editor");
    let edits = edits.lock().unwrap().clone();
    assert!(edits.len() > 10, "edits were made ({})", edits.len());

    // The store, once it holds every acknowledged message.
    let list = format!("/api/applications/{token}/chats/{chat}/messages");
    let deadline = Instant::now() + Duration::from_secs(120);
    let stored = loop {
        let stored: HashMap<i64, String> =
            chatmesh_e2e::acknowledged::all_messages(&api, &token, chat).await.into_iter().collect();
        if acknowledged.keys().all(|number| stored.contains_key(number)) {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "{list}: the store holds {} of {} messages",
            stored.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Every subscriber, once it has the last change.
    let mut edits_of: HashMap<i64, usize> = HashMap::new();
    for (number, _) in &edits {
        *edits_of.entry(*number).or_default() += 1;
    }
    let owed = acknowledged.len() + edits.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while subscribers.iter().any(|s| s.events.lock().unwrap().len() < owed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little longer, for anything sent twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let (events, reconnects) = subscriber.stop().await;
        let mut created: HashMap<i64, usize> = HashMap::new();
        let mut updated: HashMap<i64, usize> = HashMap::new();
        let mut view: HashMap<i64, String> = HashMap::new();
        let mut last_log_id = 0i64;
        for event in &events {
            let number = event.message_number().unwrap_or_else(|| panic!("subscriber {index}: {event:?}"));
            let content = event.data["message_content"].as_str().unwrap_or_default().to_owned();
            match event.event.as_str() {
                "message.created" => *created.entry(number).or_default() += 1,
                "message.updated" => *updated.entry(number).or_default() += 1,
                other => panic!("subscriber {index}: unexpected {other}: {event:?}"),
            }
            view.insert(number, content);
            // Change cursors increase; a replay's cursors (`head.number`) come only first.
            if let Some(id) = event.id.as_deref().and_then(|id| id.parse::<i64>().ok()) {
                assert!(id > last_log_id, "subscriber {index}: cursor {id} after {last_log_id}");
                last_log_id = id;
            }
        }
        let twice: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "subscriber {index}: creates delivered twice: {twice:?}");
        let missing: Vec<_> = acknowledged.keys().filter(|n| !created.contains_key(n)).collect();
        assert!(
            missing.is_empty(),
            "subscriber {index}: {} acknowledged creates never came: {missing:?}",
            missing.len()
        );
        assert_eq!(created.len(), acknowledged.len(), "subscriber {index}: creates of unacknowledged numbers");
        assert_eq!(updated, edits_of, "subscriber {index}: each edit once");
        assert_eq!(view, stored, "subscriber {index}: its view of the chat is the store's");
        if index % 2 == 0 {
            assert!(reconnects >= 1, "subscriber {index} was on the killed replica and reconnected");
        }
        println!("subscriber {index}: {} events, {reconnects} reconnects", events.len());
    }
    drop(survivor);
}
