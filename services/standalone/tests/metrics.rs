//! `/metrics` after real traffic: request counts per matched route and status, publish
//! confirms, consumer acks, counter seeding, search latency, count-flush runs, queue depth.

use std::time::Duration;

use serde_json::{Value, json};

/// Sum of every sample of `family` whose labels contain all of `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.strip_prefix(family).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let server = chatmesh::testing::spawn(|config| config.count_flush_schedule = "* * * * * *".to_owned()).await;
    let base = &server.url;
    let http = reqwest::Client::new();

    let before = scrape(&http, base).await;
    let route = "route=\"/api/applications/{token}/chats\"";

    let post = |path: String, body: Value| {
        let request = http.post(format!("{base}{path}")).json(&body);
        async move { request.send().await.unwrap() }
    };
    let app: Value =
        post("/api/applications".into(), json!({"application_name": "metrics"})).await.json().await.unwrap();
    let token = app["application_token"].as_str().unwrap();
    for _ in 0..3 {
        let chat = post(format!("/api/applications/{token}/chats"), json!({"chat_name": "general"})).await;
        assert_eq!(chat.status(), 201);
    }
    let message =
        post(format!("/api/applications/{token}/chats/1/messages"), json!({"message_content": "hello metrics"})).await;
    assert_eq!(message.status(), 201);
    let missing = http.get(format!("{base}/api/applications/{token}/chats/999")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let hits = http.get(format!("{base}/api/applications/{token}/chats/1/search?q=hello")).send().await.unwrap();
    assert_eq!(hits.status(), 200);

    // Four commands (three chats, one message) are acked by the consumer; the every-second count flush runs beside the API.
    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&http, base).await;
        if sample(&after, "chatmesh_queue_settled_total", &["outcome=\"ack\""]) >= 4.0
            && sample(&after, "chatmesh_cron_runs_total", &["outcome=\"flushed\""]) >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let moved = |family: &str, labels: &[&str]| sample(&after, family, labels) - sample(&before, family, labels);
    assert_eq!(moved("chatmesh_http_requests_total", &["method=\"POST\"", route, "status=\"201\""]), 3.0, "{after}");
    assert_eq!(
        moved(
            "chatmesh_http_requests_total",
            &["method=\"GET\"", "route=\"/api/applications/{token}/chats/{chat_number}\"", "status=\"404\""]
        ),
        1.0,
        "{after}"
    );
    assert!(!after.contains("chats/999"), "raw paths never become labels");
    assert_eq!(
        moved("chatmesh_http_request_duration_seconds_count", &["method=\"POST\"", route, "status=\"201\""]),
        3.0
    );
    // The chats go through the queue file; the message goes straight to the consumer.
    assert!(moved("chatmesh_queue_publish_total", &["result=\"confirmed\""]) >= 3.0, "{after}");
    assert!(moved("chatmesh_queue_publish_total", &["result=\"handed_over\""]) >= 1.0, "{after}");
    assert!(moved("chatmesh_queue_settled_total", &["outcome=\"ack\""]) >= 4.0, "{after}");
    assert!(moved("chatmesh_counter_seeds_total", &[]) >= 2.0, "{after}");
    assert_eq!(moved("chatmesh_search_duration_seconds_count", &["result=\"ok\""]), 1.0, "{after}");
    assert!(moved("chatmesh_cron_runs_total", &["job=\"count_flush\"", "outcome=\"flushed\""]) >= 1.0, "{after}");
    assert!(after.contains("chatmesh_queue_depth{queue=\""), "{after}");
    drop(server);
}
