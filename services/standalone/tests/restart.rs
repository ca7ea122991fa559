//! The `chatmesh` binary killed (SIGKILL) mid-stream and started again on the same data dir:
//! no number was handed out twice, every acknowledged write reads back exactly once with its
//! content, and numbering continues without reuse.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmesh_e2e::Api;
use chatmesh_e2e::acknowledged::{AckedMessage, message_numbers_handed_out_twice, read_back_messages};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `chatmesh` on the embedded backends under `dir`: the backend URLs of the environment (which
/// `.ci/run` sets) are not passed on, or two tests would share one database and queue.
async fn start(dir: &std::path::Path) -> (Child, Api) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatmesh"));
    for name in shared::config::BACKEND_URL_VARS {
        command.env_remove(name);
    }
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chatmesh");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("chatmesh listening on ") {
                return url.to_owned();
            }
        }
        panic!("chatmesh exited before listening");
    })
    .await
    .expect("chatmesh starts within a minute");
    (child, Api::new(&url))
}

async fn all_message_numbers(api: &Api, token: &str, chat: i64) -> Vec<i64> {
    let mut numbers = Vec::new();
    let mut after = 0;
    loop {
        let page = api.get(&format!("/api/applications/{token}/chats/{chat}/messages?limit=100&after={after}")).await;
        let items = page.body.as_array().expect("a list").clone();
        if items.is_empty() {
            return numbers;
        }
        for item in items {
            after = item["message_number"].as_i64().unwrap();
            numbers.push(after);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_sigkill_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, api) = start(dir.path()).await;
    let token = api.create_application("durable").await;
    let chat = api.create_chat(&token, "room").await;
    assert_eq!(api.create_message(&token, chat, "the first words").await, 1);

    // Writers create messages until the server dies under them.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (api, token, acknowledged) = (api.clone(), token.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let sent = api
                        .http
                        .post(api.url(&format!("/api/applications/{token}/chats/{chat}")))
                        .json(&json!({ "message_content": format!("writer {w} message {i} tag{w}x{i}") }))
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    if response.status() != 201 {
                        return;
                    }
                    let Ok(body) = response.json::<serde_json::Value>().await else { return };
                    acknowledged.lock().unwrap().push(AckedMessage::from_body(&body).expect("a message 201"));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().await.unwrap();
    for writer in writers {
        // Each request has the client's timeout: the writers end with the server.
        tokio::time::timeout(Duration::from_secs(60), writer).await.expect("writers end").unwrap();
    }
    let mut acknowledged: Vec<AckedMessage> = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 20, "the writers got going before the kill: {}", acknowledged.len());
    acknowledged.push(AckedMessage { chat, number: 1, content: "the first words".to_owned() });
    let twice = message_numbers_handed_out_twice(&acknowledged);
    assert!(twice.is_empty(), "numbers handed out twice: {twice:?}");

    let (_server, api) = start(dir.path()).await;
    let persisted = all_message_numbers(&api, &token, chat).await;
    let unique: HashSet<i64> = persisted.iter().copied().collect();
    assert_eq!(unique.len(), persisted.len(), "no message is persisted twice");
    // Embedded, a 201 means stored: every one reads back at once after the restart.
    read_back_messages(&api, &token, &acknowledged, Duration::ZERO).await.assert_complete();
    eprintln!("sigkill: {} messages acknowledged, all read back with their content", acknowledged.len());
    let max = *persisted.iter().max().unwrap();
    let room = api.get(&format!("/api/applications/{token}/chats/{chat}")).await;
    assert_eq!(room.body["messages_count"], persisted.len(), "counts are recounted at start");

    let next = api.create_message(&token, chat, "after the restart").await;
    assert!(next > max, "numbering continues above {max}, got {next}");
    assert_eq!(api.create_chat(&token, "second room").await, chat + 1, "chat numbering continues too");
    let hits = api.get(&format!("/api/applications/{token}/chats/{chat}/search?q=first")).await;
    assert_eq!(hits.body[0]["number"], 1, "the index survived: {}", hits.text);
    // Messages indexed but not yet committed to the index at the kill are indexed again from
    // the store at start: every persisted message is found by its own tag.
    let mut missing = Vec::new();
    let mut after = 1;
    loop {
        let page = api.get(&format!("/api/applications/{token}/chats/{chat}/messages?limit=100&after={after}")).await;
        let items = page.body.as_array().expect("a list").clone();
        let Some(last) = items.last() else { break };
        after = last["message_number"].as_i64().unwrap();
        for item in items {
            let number = item["message_number"].as_i64().unwrap();
            let content = item["message_content"].as_str().unwrap();
            let Some(tag) = content.split(' ').find(|word| word.starts_with("tag")) else { continue };
            let hits = api.get(&format!("/api/applications/{token}/chats/{chat}/search?q={tag}&limit=100")).await;
            let found = hits.body.as_array().expect("hits").iter().any(|hit| hit["number"] == number);
            if !found {
                missing.push(number);
            }
        }
    }
    assert!(missing.is_empty(), "persisted messages missing from the index after the kill: {missing:?}");
    let app = api.get(&format!("/api/applications/{token}")).await;
    assert_eq!(app.body["application_name"], "durable");
}

/// A live-stream subscriber across a SIGKILL of the server: it reconnects to the restarted
/// server with its last event id and ends with every stored message exactly once, those
/// acknowledged before the kill and those created after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_across_a_sigkill_and_misses_nothing() {
    use chatmesh_e2e::stream::{Sse, chat_stream_path};
    let dir = tempfile::tempdir().unwrap();
    let (mut server, api) = start(dir.path()).await;
    let token = api.create_application("followed").await;
    let chat = api.create_chat(&token, "room").await;
    let path = chat_stream_path(&token, chat, "");
    let mut stream = Sse::open(&api.url(&format!("{path}?after=0")), None).await;

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (api, token) = (api.clone(), token.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let url = api.url(&format!("/api/applications/{token}/chats/{chat}"));
                    let body = json!({ "message_content": format!("writer {w} message {i}") });
                    match api.http.post(url).json(&body).send().await {
                        Ok(response) if response.status() == 201 => {}
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let mut events = Vec::new();
    while events.len() < 50 {
        events.push(stream.next(Duration::from_secs(20)).await.expect("events before the kill"));
    }
    server.kill().await.unwrap();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(60), writer).await.expect("writers end").unwrap();
    }
    // What was sent before the connection broke.
    while let Some(event) = stream.next(Duration::from_secs(2)).await {
        events.push(event);
    }

    let (_server, api) = start(dir.path()).await;
    let last = events.last().and_then(|event| event.id.clone()).expect("an event id");
    let mut resumed = Sse::open(&api.url(&path), Some(&last)).await;
    for i in 0..5 {
        api.create_message(&token, chat, &format!("after the restart {i}")).await;
    }
    let stored = all_message_numbers(&api, &token, chat).await;
    while events.len() < stored.len() {
        match resumed.next(Duration::from_secs(20)).await {
            Some(event) => events.push(event),
            None => break,
        }
    }
    while let Some(event) = resumed.next(Duration::from_millis(500)).await {
        events.push(event);
    }
    let mut delivered: Vec<i64> = events
        .iter()
        .map(|event| {
            assert_eq!(event.event, "message.created", "{event:?}");
            event.message_number().expect("a message number")
        })
        .collect();
    delivered.sort_unstable();
    assert_eq!(delivered, stored, "every stored message once, none twice, across the kill");
    eprintln!("stream across sigkill: {} messages delivered once each", delivered.len());
}
