//! Commands the consumer cannot persist are parked in the dead-letter queue with a reason,
//! never dropped, and persisted once replayed.

use std::time::Duration;

use chat_read::consumer::ConsumerConfig;

use crate::harness::{Harness, chat, message};

/// An undecodable command is parked at once; the rest of its batch is persisted.
#[tokio::test]
async fn an_undecodable_command_is_parked_at_once() {
    let mut harness = Harness::sqlite().await;
    let (token, app) = harness.application().await;
    harness.publish_raw(b"{\"type\":\"drop_tables\"}".to_vec()).await;
    harness.publish(&chat(app, 1, "still here")).await;

    let report = harness.step().await;
    assert_eq!((report.persisted, report.dead_lettered), (1, 1), "{report:?}");
    let letters = harness.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].payload, "{\"type\":\"drop_tables\"}");
    assert!(letters[0].reason.starts_with("undecodable command"), "{}", letters[0].reason);
    assert_eq!(harness.get(&format!("/api/applications/{token}/chats/1")).await.body["chat_name"], "still here");
}

/// A message whose chat never comes is parked after its attempts; once the chat exists, a
/// replay stores it.
#[tokio::test]
async fn a_message_without_its_chat_is_parked_then_replayed() {
    let config = ConsumerConfig { max_attempts: 2, retry_base: Duration::from_millis(10), ..ConsumerConfig::default() };
    let mut harness = Harness::start(None, config).await;
    let (token, app) = harness.application().await;
    harness.publish(&message(app, 7, 1, "for a chat that is not there")).await;

    let report = harness.step_until(|total| total.dead_lettered == 1).await;
    assert_eq!((report.persisted, report.retried), (0, 1), "one retry, then parked: {report:?}");
    let letters = harness.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, "chat not persisted yet");
    assert!(letters[0].payload.contains("for a chat that is not there"));
    let path = format!("/api/applications/{token}/chats/7/messages/1");
    assert_eq!(harness.get(&path).await.status, 404);

    harness.publish(&chat(app, 7, "seven")).await;
    assert_eq!(harness.step().await.persisted, 1);
    let replayed = harness.state.queue.replay_dead_letters(&harness.state.keys.command_queue()).await.unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(harness.step().await.persisted, 1);
    let stored = harness.get(&path).await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.body["message_content"], "for a chat that is not there");
    assert!(harness.dead_letters().await.is_empty());
}
