//! What a step persists is what the API answers: chats, messages, their times and search.

use reqwest::Method;
use serde_json::json;

use crate::harness::{CREATED_AT, Harness, chat, message, on_every_store};

async fn a_step_persists_what_was_queued(mut harness: Harness) {
    let (token, app) = harness.application().await;
    harness.publish(&chat(app, 1, "general")).await;
    harness.publish(&message(app, 1, 1, "hello from the queue")).await;
    harness.publish(&message(app, 1, 2, "a second message")).await;

    let report = harness.step().await;
    assert_eq!((report.persisted, report.retried, report.dead_lettered), (3, 0, 0), "{report:?}");

    let chat = harness.get(&format!("/api/applications/{token}/chats/1")).await;
    assert_eq!(chat.status, 200, "{}", chat.text);
    assert_eq!(chat.body["chat_name"], "general");
    assert_eq!(chat.body["created_at"], shared::rfc3339_millis(CREATED_AT), "the time the 201 answered with");
    let messages = harness.get(&format!("/api/applications/{token}/chats/1/messages")).await;
    let contents: Vec<&str> =
        messages.body.as_array().unwrap().iter().map(|m| m["message_content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["hello from the queue", "a second message"]);
    let hits = harness.get(&format!("/api/applications/{token}/chats/1/search?q=queue")).await;
    assert_eq!(hits.body, json!([{"number": 1, "content": "hello from the queue"}]), "searchable at once");

    let nothing = harness.step().await;
    assert_eq!(nothing, Default::default(), "every command was acked: none comes back");
}

on_every_store!(
    sqlite_a_step_persists_what_was_queued,
    sqlite_pooled_a_step_persists_what_was_queued,
    mysql_a_step_persists_what_was_queued,
    a_step_persists_what_was_queued
);

/// A message queued before its chat is persisted waits, unseen, and is stored once the chat is.
#[tokio::test]
async fn a_message_waits_for_its_chat() {
    let mut harness = Harness::sqlite().await;
    let (token, app) = harness.application().await;
    harness.publish(&message(app, 1, 1, "early")).await;
    let report = harness.step().await;
    assert_eq!((report.persisted, report.retried), (0, 1), "{report:?}");
    assert_eq!(harness.get(&format!("/api/applications/{token}/chats/1/messages/1")).await.status, 404);

    harness.publish(&chat(app, 1, "late")).await;
    let report = harness.step_until(|total| total.persisted == 2).await;
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    let early = harness.get(&format!("/api/applications/{token}/chats/1/messages/1")).await;
    assert_eq!(early.status, 200, "{}", early.text);
    assert_eq!(early.body["message_content"], "early");
    assert!(harness.dead_letters().await.is_empty());
}

/// A create delivered again after the message was edited through the API changes nothing: the
/// API and search keep the edit.
async fn a_redelivered_create_keeps_a_later_edit(mut harness: Harness) {
    let (token, app) = harness.application().await;
    harness.publish(&chat(app, 1, "room")).await;
    harness.publish(&message(app, 1, 1, "original wording")).await;
    assert_eq!(harness.step().await.persisted, 2);
    let path = format!("/api/applications/{token}/chats/1/messages/1");
    let edited = harness.api.send(Method::PUT, &path, Some(&json!({"message_content": "edited wording"}))).await;
    assert_eq!(edited.status, 200, "{}", edited.text);

    harness.publish(&message(app, 1, 1, "original wording")).await;
    let report = harness.step().await;
    assert_eq!((report.persisted, report.dead_lettered), (1, 0), "a redelivery is harmless: {report:?}");

    assert_eq!(harness.get(&path).await.body["message_content"], "edited wording");
    let search = format!("/api/applications/{token}/chats/1/search?q=");
    let found = harness.get(&format!("{search}edited")).await;
    assert_eq!(found.body, json!([{"number": 1, "content": "edited wording"}]));
    assert_eq!(harness.get(&format!("{search}original")).await.body, json!([]), "the old text is not found again");
}

on_every_store!(
    sqlite_a_redelivered_create_keeps_a_later_edit,
    sqlite_pooled_a_redelivered_create_keeps_a_later_edit,
    mysql_a_redelivered_create_keeps_a_later_edit,
    a_redelivered_create_keeps_a_later_edit
);

/// A delete queued before its message is stored waits for it, then leaves a tombstone: the
/// message is not shown, listed or searched, and a delete delivered again changes nothing.
async fn a_queued_delete_waits_for_its_message(mut harness: Harness) {
    let (token, app) = harness.application().await;
    harness.publish(&chat(app, 1, "general")).await;
    harness.step_until(|total| total.persisted == 1).await;
    let delete = chat::commands::Command::DeleteMessage {
        application_id: app,
        chat_number: 1,
        message_number: 2,
        deleted_at: CREATED_AT + 5,
    };
    harness.publish(&delete).await;
    let report = harness.step().await;
    assert_eq!((report.persisted, report.retried), (0, 1), "the delete waits for its message: {report:?}");

    harness.publish(&message(app, 1, 1, "stays")).await;
    harness.publish(&message(app, 1, 2, "goes zebra")).await;
    let report = harness.step_until(|total| total.persisted == 3).await;
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(harness.get(&format!("/api/applications/{token}/chats/1/messages/2")).await.status, 404);
    let listed = harness.get(&format!("/api/applications/{token}/chats/1/messages")).await;
    let numbers: Vec<i64> =
        listed.body.as_array().unwrap().iter().map(|m| m["message_number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1]);
    let hits = harness.get(&format!("/api/applications/{token}/chats/1/search?q=zebra")).await;
    assert_eq!(hits.body, json!([]), "a deleted message is not found");

    harness.publish(&delete).await;
    let report = harness.step().await;
    assert_eq!((report.persisted, report.retried, report.dead_lettered), (1, 0, 0), "{report:?}");
    assert!(harness.dead_letters().await.is_empty());
}

on_every_store!(
    sqlite_a_queued_delete_waits_for_its_message,
    sqlite_pooled_a_queued_delete_waits_for_its_message,
    mysql_a_queued_delete_waits_for_its_message,
    a_queued_delete_waits_for_its_message
);

/// A message stored after a reader moved past its number (its create was still queued) counts
/// under that reader's position: not unread for them, unread for a reader below it.
async fn a_message_stored_under_a_read_position_is_read(mut harness: Harness) {
    let (token, app) = harness.application().await;
    harness.publish(&chat(app, 1, "room")).await;
    harness.publish(&message(app, 1, 1, "one")).await;
    harness.publish(&message(app, 1, 2, "two")).await;
    assert_eq!(harness.step_until(|total| total.persisted == 3).await.dead_lettered, 0);

    // Numbers 3 and 4 handed out, as chat-write does for two creates whose commands are queued.
    let db = harness.state.db.clone();
    let seed = move || {
        use futures::FutureExt;
        let db = db.clone();
        async move { chat_read::store::highest_message_number(&db, app, 1).await }.boxed()
    };
    let key = harness.state.keys.message_counter(app, 1);
    for expected in [3, 4] {
        assert_eq!(harness.state.counters.next(&key, &seed).await.unwrap(), expected);
    }
    let base = format!("/api/applications/{token}/chats/1");
    let body = |user: &str, number: i64| json!({"user_id": user, "message_number": number});
    let ann = harness.api.send(Method::PUT, &format!("{base}/read"), Some(&body("ann", 4))).await;
    assert_eq!((ann.status.as_u16(), ann.body["unread"].as_i64()), (200, Some(0)), "{}", ann.text);
    let bob = harness.api.send(Method::PUT, &format!("{base}/read"), Some(&body("bob", 2))).await;
    assert_eq!((bob.status.as_u16(), bob.body["unread"].as_i64()), (200, Some(0)), "{}", bob.text);

    harness.publish(&message(app, 1, 3, "three")).await;
    harness.publish(&message(app, 1, 4, "four")).await;
    assert_eq!(harness.step_until(|total| total.persisted == 2).await.dead_lettered, 0);
    for (user, unread, why) in [
        ("ann", 0, "stored under ann's position: read"),
        ("bob", 2, "above bob's position: unread"),
        ("carl", 4, "no position: every message"),
    ] {
        let reply = harness.get(&format!("{base}/unread?user_id={user}")).await;
        assert_eq!(reply.body["unread"], unread, "{why}: {}", reply.text);
    }
}

on_every_store!(
    sqlite_a_message_stored_under_a_read_position_is_read,
    sqlite_pooled_a_message_stored_under_a_read_position_is_read,
    mysql_a_message_stored_under_a_read_position_is_read,
    a_message_stored_under_a_read_position_is_read
);
