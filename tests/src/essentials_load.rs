//! `chatmesh-bench essentials`: what the chat client essentials cost, on the standalone server.
//!
//! - **Idempotent creates**: message creates each with an `Idempotency-Key` of its own against
//!   plain creates, same clients, same server, one after the other.
//! - **Unread counts at a million messages**: `GET .../unread` and `GET .../chats?user_id=` on a
//!   chat of 1,000,000 messages against the same on a chat of 10. The million are written
//!   straight into the stopped server's SQLite file (labelled as such: it is a fixture, not a
//!   measurement of creates), then the server starts on it, a read position is put in the
//!   middle, and one message of the big chat is deleted, so both counts the answer keeps exact
//!   have moved.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::Api;
use crate::load::{self, LoadReport};
use crate::processes::Service;

/// Runs both measurements with `clients` for `seconds` each; `messages` in the big chat.
pub async fn run(clients: usize, seconds: u64, messages: i64) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().display().to_string();
    let args = ["--data-dir", data_dir.as_str()];
    let start = || Service::start_embedded("chatmesh", &args, &[("RUST_LOG", "warn")]);
    let server = start().await;
    let api = Api::new(&server.url);
    let token = api.create_application("essentials").await;
    let chat = api.create_chat(&token, "creates").await;
    let duration = Duration::from_secs(seconds);
    println!("standalone chatmesh at {}, {clients} clients, {seconds} s a run", server.url);

    let plain = creates(&api, &token, chat, clients, duration, false).await;
    println!("POST message, plain              {plain}");
    let keyed = creates(&api, &token, chat, clients, duration, true).await;
    println!("POST message, Idempotency-Key    {keyed}");
    println!("idempotent create / plain create: {:.1}%", 100.0 * keyed.rps() / plain.rps());

    let small = api.create_chat(&token, "ten messages").await;
    for i in 1..=10 {
        api.create_message(&token, small, &format!("small {i}")).await;
    }
    let big = api.create_chat(&token, "a million messages").await;
    drop(server);
    let filled = Instant::now();
    let content = |number: i64| format!("message {number}");
    crate::fixture::fill_directly(&data.path().join("chatmesh.db"), &token, big, messages, content).await?;
    println!(
        "wrote {messages} messages straight into the store in {:.1} s (a fixture, not the create path)",
        filled.elapsed().as_secs_f64()
    );
    let server = start().await;
    let api = Api::new(&server.url);
    let half = messages / 2;
    for (chat, position) in [(small, 5), (big, half)] {
        let body = json!({ "user_id": "reader", "message_number": position });
        let marked =
            api.send(reqwest::Method::PUT, &format!("/api/applications/{token}/chats/{chat}/read"), Some(&body)).await;
        anyhow::ensure!(marked.status == 200, "read position: {}", marked.text);
        let deleted = api
            .send(reqwest::Method::DELETE, &format!("/api/applications/{token}/chats/{chat}/messages/2"), None)
            .await;
        anyhow::ensure!(deleted.status == 204, "delete: {}", deleted.text);
    }
    let expected = messages - half;
    let unread = api.get(&format!("/api/applications/{token}/chats/{big}/unread?user_id=reader")).await;
    anyhow::ensure!(unread.body["unread"] == expected, "unread at {messages}: {} (expected {expected})", unread.text);

    let queries = 2_000;
    let at_small =
        latencies(&api, &format!("/api/applications/{token}/chats/{small}/unread?user_id=reader"), queries).await;
    let at_big =
        latencies(&api, &format!("/api/applications/{token}/chats/{big}/unread?user_id=reader"), queries).await;
    let list = latencies(&api, &format!("/api/applications/{token}/chats?user_id=reader"), queries).await;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("GET unread, chat of 10           p50 {:.3} ms  p99 {:.3} ms", ms(&at_small, 0.5), ms(&at_small, 0.99));
    println!("GET unread, chat of {messages}   p50 {:.3} ms  p99 {:.3} ms", ms(&at_big, 0.5), ms(&at_big, 0.99));
    println!("GET chats?user_id= (4 chats)     p50 {:.3} ms  p99 {:.3} ms", ms(&list, 0.5), ms(&list, 0.99));
    println!(
        "unread p50 at {messages} messages / at 10 messages: {:.1}%",
        100.0 * at_big.value_at_quantile(0.5) as f64 / at_small.value_at_quantile(0.5).max(1) as f64
    );
    Ok(())
}

/// Creates messages from `clients` loops for `duration`, each with a key of its own when
/// `keyed`.
async fn creates(api: &Api, token: &str, chat: i64, clients: usize, duration: Duration, keyed: bool) -> LoadReport {
    let url = api.url_for(&reqwest::Method::POST, &format!("/api/applications/{token}/chats/{chat}/messages"));
    let (http, prefix) = (api.http.clone(), crate::random_token("key"));
    load::run(clients, duration, move |i| {
        let mut request = http.post(url.clone()).json(&json!({ "message_content": format!("message {i}") }));
        if keyed {
            request = request.header("Idempotency-Key", format!("{prefix}-{i}"));
        }
        async move { request.send().await.is_ok_and(|r| r.status() == 201) }
    })
    .await
}

/// Latencies of `count` sequential GETs of `path`, in microseconds.
async fn latencies(api: &Api, path: &str, count: usize) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for _ in 0..count {
        let sent = Instant::now();
        let reply = api.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        histogram.saturating_record(sent.elapsed().as_micros() as u64);
    }
    histogram
}
