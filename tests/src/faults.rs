//! What the fault tests share: writers that record every 201 with its content, and the checks
//! that read them back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::Api;
use crate::split::SplitChat;

/// Writers creating messages in one chat until stopped. A writer panics when a number comes
/// back twice, or on any answer but 201 and 503.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Every acknowledged message, by number, with the content it was sent with.
    pub acknowledged: Arc<Mutex<HashMap<i64, String>>>,
    /// How many creates answered 503.
    pub unavailable: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(api: &Api, token: &str, chat: i64, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(HashMap::new()));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (api, token) = (api.clone(), token.to_owned());
                let (stop, acknowledged, unavailable) = (stop.clone(), acknowledged.clone(), unavailable.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        // The last word is the message's own: search finds it and nothing else.
                        let content = format!("writer {w} message {i} w{w}m{i}z");
                        let url =
                            api.url_for(&reqwest::Method::POST, &format!("/api/applications/{token}/chats/{chat}"));
                        let sent = api.http.post(url).json(&json!({ "message_content": content })).send().await;
                        match sent {
                            Ok(response) if response.status() == 201 => {
                                let body: serde_json::Value = response.json().await.expect("201 body");
                                let number = body["message_number"].as_i64().expect("number");
                                let previous = acknowledged.lock().unwrap().insert(number, content);
                                assert!(previous.is_none(), "number {number} was handed out twice");
                            }
                            Ok(response) if response.status() == 503 => {
                                unavailable.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Ok(response) => panic!("unexpected {}: {:?}", response.status(), response.text().await),
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                })
            })
            .collect();
        Load { stop, acknowledged, unavailable, tasks }
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    pub fn unavailable_count(&self) -> usize {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// Stops the writers; every acknowledged message, and how many creates answered 503.
    pub async fn stop(self) -> (HashMap<i64, String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer");
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        (acknowledged, self.unavailable.load(Ordering::Relaxed))
    }
}

/// Waits until `done` holds, failing the test after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of `deployment` and a new chat of a new application named `application` under the
/// eight writers of a [`Load`], once more than `writes` of their creates were acknowledged
/// (`what` names that wait).
pub async fn chat_under_load(
    deployment: &impl crate::Deployment,
    application: &str,
    what: &str,
    writes: usize,
) -> (Api, String, i64, Load) {
    let api = deployment.api();
    let token = api.create_application(application).await;
    let chat = api.create_chat(&token, "room").await;
    let load = Load::start(&api, &token, chat, 8);
    wait_for(what, Duration::from_secs(30), || load.acknowledged_count() > writes).await;
    (api, token, chat, load)
}

/// Every message of a chat as the read API lists it, by number (a page that fails ends the
/// listing early).
pub async fn all_messages(api: &Api, token: &str, chat: i64) -> HashMap<i64, String> {
    let mut messages = HashMap::new();
    let mut after = 0;
    loop {
        let page = api.get(&format!("/api/applications/{token}/chats/{chat}/messages?limit=100&after={after}")).await;
        let items = page.body.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return messages;
        }
        for item in items {
            after = item["message_number"].as_i64().unwrap();
            let previous = messages.insert(after, item["message_content"].as_str().unwrap().to_owned());
            assert!(previous.is_none(), "message {after} listed twice");
        }
    }
}

/// The acknowledged messages not persisted with their content within `limit`, each with what
/// the store holds under its number, if anything.
pub async fn lost(
    api: &Api,
    token: &str,
    chat: i64,
    acknowledged: &HashMap<i64, String>,
    limit: Duration,
) -> Vec<(i64, Option<String>)> {
    let deadline = Instant::now() + limit;
    let persisted = loop {
        let persisted = all_messages(api, token, chat).await;
        if acknowledged.keys().all(|n| persisted.contains_key(n)) || Instant::now() > deadline {
            break persisted;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut lost: Vec<_> = acknowledged
        .iter()
        .filter(|(number, content)| persisted.get(number) != Some(content))
        .map(|(number, _)| (*number, persisted.get(number).cloned()))
        .collect();
    lost.sort();
    lost
}

/// Runs `chat-read` with `args` as a command (`dead-letters`, `replay-dead-letters`) in the
/// deployment's environment; its standard output. Fails after a minute rather than hang.
pub fn chat_read(mesh: &SplitChat, args: &[&str]) -> String {
    let child = std::process::Command::new(crate::harness::binary("chat-read"))
        .args(args)
        .envs(mesh.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run chat-read");
    let pid = child.id();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let Ok(output) = outcome.recv_timeout(Duration::from_secs(60)) else {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("chat-read {args:?} did not finish within a minute");
    };
    let output = output.expect("chat-read output");
    assert!(output.status.success(), "chat-read {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
