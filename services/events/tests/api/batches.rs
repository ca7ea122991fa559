//! `POST /events/batch`: up to 500 events / 1 MB, 202 with per-item acceptance.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{pageview, pairs, reasons, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_accepted_item_by_item() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let batch = json!([
        pageview(&session, "2021-06-15 00:00:00"),
        {"session": {"id": session}, "category": "page interaction", "name": "pageview", "data": {}, "timestamp": "2021-06-15"},
        pageview(&session, "2021-06-15 00:00:01"),
        pageview("9ab1b579-7021-4e0c-8ea1-2ac9f52f3058", "2021-06-15 00:00:02"),
        "not an event",
    ]);
    let answer = app.post("/events/batch", &batch).await.expect(StatusCode::ACCEPTED);
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(3), Some(2)));
    let items = answer["items"].as_array().unwrap();
    let statuses: Vec<&str> = items.iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted", "accepted", "rejected"]);
    assert_eq!(reasons(&items[1]), pairs(&[("data_empty", "/data")]));
    assert_eq!(reasons(&items[4]), pairs(&[("not_an_object", "")]));
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["index"], index);
    }

    app.drain().await;
    let id = |index: usize| items[index]["id"].as_str().unwrap().to_owned();
    for stored in [0, 2] {
        assert_eq!(app.get(&format!("/events/{}/", id(stored))).await.status, StatusCode::OK);
    }
    // Rejected items become error records under their ids; so does the item whose session the
    // consumer did not find.
    for (index, expected) in [
        (1, pairs(&[("data_empty", "/data")])),
        (3, pairs(&[("session_unknown", "/session/id")])),
        (4, pairs(&[("not_an_object", "")])),
    ] {
        let error = app.get(&format!("/errors/{}/", id(index))).await.expect(StatusCode::OK);
        assert_eq!(reasons(&error), expected);
        assert_eq!(error["payload"], batch[index]);
        assert_eq!(app.get(&format!("/events/{}/", id(index))).await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limits_are_500_events_and_1_mb() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let full: Vec<Value> =
        (0..500).map(|n| pageview(&session, &format!("2021-06-15 00:{:02}:{:02}", n / 60, n % 60))).collect();
    let answer = app.post("/events/batch", &Value::Array(full.clone())).await.expect(StatusCode::ACCEPTED);
    assert_eq!(answer["accepted"], 500);
    let report = app.drain().await;
    assert_eq!(report.stored, 500);

    let mut over = full.clone();
    over.push(pageview(&session, "2021-06-15"));
    assert_eq!(
        app.post("/events/batch", &Value::Array(over)).await.expect_status_code(StatusCode::PAYLOAD_TOO_LARGE),
        "PAYLOAD_TOO_LARGE"
    );
    let big: Vec<Value> = (0..10)
        .map(|_| json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"blob": "x".repeat(110_000)}, "timestamp": "2021-06-15"}))
        .collect();
    let body = serde_json::to_vec(&big).unwrap();
    assert!(body.len() > 1024 * 1024);
    assert_eq!(
        app.post_raw("/events/batch", Some("application/json"), body)
            .await
            .expect_status_code(StatusCode::PAYLOAD_TOO_LARGE),
        "PAYLOAD_TOO_LARGE"
    );
    // A body near 1 MB but under it is fine (the single-event limit does not apply here).
    let near: Vec<Value> = (0..9)
        .map(|_| json!({"session": {"id": session}, "category": "c", "name": "n", "data": {"blob": "x".repeat(110_000)}, "timestamp": "2021-06-15"}))
        .collect();
    assert_eq!(app.post("/events/batch", &Value::Array(near)).await.expect(StatusCode::ACCEPTED)["accepted"], 9);
    // The refused batches queued nothing: only the nine are stored.
    let report = app.drain().await;
    assert_eq!((report.stored, report.rejected), (9, 0));

    for (body, status) in [
        ("[]", StatusCode::UNPROCESSABLE_ENTITY),
        ("{\"events\": []}", StatusCode::UNPROCESSABLE_ENTITY),
        ("[{]", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(app.post_raw("/events/batch", Some("application/json"), body).await.status, status, "{body}");
    }
    assert_eq!(app.post_raw("/events/batch", Some("text/csv"), "a,b").await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.get("/events/batch").await.expect_status_code(StatusCode::METHOD_NOT_ALLOWED), "METHOD_NOT_ALLOWED");
    assert_eq!(app.drain().await.messages, 0, "no refused request queued anything");
    let (stored, _) = app.all_pages("/events/?limit=500").await;
    assert_eq!(stored.len(), 509);
}
