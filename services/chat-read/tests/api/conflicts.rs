//! Two acknowledged commands given one number are never silently merged: the second is parked
//! with the reason, the first stays what the API answers, and a redelivery stays harmless.

use chat::commands::Command;

use crate::harness::{Harness, on_every_store};

/// `chatmesh_consumer_conflicts_total` for messages.
fn conflicts() -> u64 {
    let text = shared::metrics::metrics().render();
    text.lines()
        .filter(|line| line.starts_with("chatmesh_consumer_conflicts_total{kind=\"message\"}"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn a_second_command_with_a_taken_number_is_parked_not_dropped(mut harness: Harness) {
    let (token, application_id) = harness.application().await;
    let message = |number: i64, content: &str, created_at: i64| Command::CreateMessage {
        application_id,
        chat_number: 1,
        message_number: number,
        content: content.to_owned(),
        created_at,
    };
    harness
        .publish(&Command::CreateChat { application_id, chat_number: 1, chat_name: "room".into(), created_at: 10 })
        .await;
    harness.publish(&message(1, "the first message", 20)).await;
    harness.publish(&message(2, "another message", 21)).await;
    let before = conflicts();
    assert_eq!(harness.step().await.persisted, 3);

    // The same number again: a redelivery of the first command, then a different message
    // given number 1 (as a counter that came back older would), in one batch.
    harness.publish(&message(1, "the first message", 20)).await;
    harness.publish(&message(1, "a second message given the same number", 35)).await;
    let another_room =
        Command::CreateChat { application_id, chat_number: 1, chat_name: "another room".into(), created_at: 40 };
    harness.publish(&another_room).await;
    let report = harness.step().await;
    assert_eq!(report.dead_lettered, 2, "the two conflicting commands are parked: {report:?}");
    assert_eq!(report.persisted, 1, "the redelivery is harmless: {report:?}");

    let chat = harness.get(&format!("/api/applications/{token}/chats/1")).await;
    assert_eq!(chat.body["chat_name"], "room", "the first chat stays");
    let first = harness.get(&format!("/api/applications/{token}/chats/1/messages/1")).await;
    assert_eq!(first.body["message_content"], "the first message", "the first message stays");

    let letters = harness.dead_letters().await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let parked = letters.iter().find(|l| l.payload.contains("a second message given the same number"));
    let parked = parked.expect("the second message is in the dead-letter queue, not dropped");
    assert!(parked.reason.starts_with("conflict"), "with the reason: {}", parked.reason);
    assert!(letters.iter().any(|l| l.payload.contains("another room") && l.reason.starts_with("conflict")));
    assert!(conflicts() > before, "chatmesh_consumer_conflicts_total counts it");
}

on_every_store!(
    sqlite_parks_a_second_command_with_a_taken_number,
    sqlite_pooled_parks_a_second_command_with_a_taken_number,
    mysql_parks_a_second_command_with_a_taken_number,
    a_second_command_with_a_taken_number_is_parked_not_dropped
);
