//! The consumer against real stores (SQLite always, MariaDB where `DATABASE_URL` is set): two
//! acknowledged commands given one number are never silently merged, and a redelivery stays
//! harmless.

use chat_read::ChatRead;
use chat_read::consumer::{Consumer, ConsumerConfig};
use chat::commands::Command;
use shared::config::BackendConfig;

/// A chat-read over the store of `database_url` (SQLite under a temp dir when `None`), with the
/// embedded queue and index.
async fn state(database_url: Option<String>, dir: &tempfile::TempDir) -> ChatRead {
    let config = BackendConfig {
        data_dir: dir.path().to_owned(),
        database_url,
        namespace: shared::testing::fresh_namespace("consumer"),
        ..BackendConfig::default()
    };
    let backends = shared::backends::Backends::connect(&config, false).await.unwrap();
    let search = shared::backends::open_search(&config, true).await.unwrap();
    let state = ChatRead::new(backends.db, backends.counters, backends.queue, search, &config.namespace);
    state.migrate().await.unwrap();
    state
}

fn conflicts() -> u64 {
    let text = shared::metrics::metrics().render();
    text.lines()
        .filter(|line| line.starts_with("chatmesh_consumer_conflicts_total{kind=\"message\"}"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn a_second_command_with_a_taken_number_is_parked_not_dropped(state: ChatRead) {
    let application =
        chat_read::store::insert_application(&state.db, "token-conflict-test-0001", "app", 1).await.unwrap();
    let application_id = chat::schema::application_id(&state.db, &application.application_token)
        .await
        .unwrap()
        .expect("application");
    let queue = state.keys.command_queue();
    let publish = |command: Command| {
        let state = state.clone();
        let queue = queue.clone();
        async move { state.queue.publish(&queue, command.encode()).await.unwrap() }
    };
    let message = |number: i64, content: &str, created_at: i64| Command::CreateMessage {
        application_id,
        chat_number: 1,
        message_number: number,
        content: content.to_owned(),
        created_at,
    };
    publish(Command::CreateChat { application_id, chat_number: 1, chat_name: "room".into(), created_at: 10 }).await;
    publish(message(1, "the first message", 20)).await;
    publish(message(2, "another message", 21)).await;
    let before = conflicts();
    let mut consumer = Consumer::new(state.clone(), ConsumerConfig::default()).await.unwrap();
    consumer.drain().await.unwrap();

    // The same number again: a redelivery of the first command, then a different message
    // given number 1 (as a counter that came back older would), in one batch.
    publish(message(1, "the first message", 20)).await;
    publish(message(1, "a second message given the same number", 35)).await;
    publish(Command::CreateChat { application_id, chat_number: 1, chat_name: "another room".into(), created_at: 40 })
        .await;
    let report = consumer.drain().await.unwrap();
    assert_eq!(report.dead_lettered, 2, "the two conflicting commands are parked: {report:?}");
    assert_eq!(report.persisted, 1, "the redelivery is harmless: {report:?}");

    let chat = chat_read::store::get_chat(&state.db, application_id, &application.application_token, 1)
        .await
        .unwrap()
        .expect("chat 1");
    assert_eq!(chat.1.chat_name, "room", "the first chat stays");
    let first = chat_read::store::get_message(&state.db, chat.0, &application.application_token, 1, 1)
        .await
        .unwrap()
        .expect("message 1");
    assert_eq!(first.message_content, "the first message", "the first message stays");

    let letters = state.queue.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let parked = letters.iter().find(|l| l.payload.contains("a second message given the same number"));
    let parked = parked.expect("the second message is in the dead-letter queue, not dropped");
    assert!(parked.reason.starts_with("conflict"), "with the reason: {}", parked.reason);
    assert!(letters.iter().any(|l| l.payload.contains("another room") && l.reason.starts_with("conflict")));
    assert!(conflicts() > before, "chatmesh_consumer_conflicts_total counts it");
}

#[tokio::test]
async fn sqlite_parks_a_second_command_with_a_taken_number() {
    let dir = tempfile::tempdir().unwrap();
    a_second_command_with_a_taken_number_is_parked_not_dropped(state(None, &dir).await).await;
}

#[tokio::test]
async fn mysql_parks_a_second_command_with_a_taken_number() {
    let Some(url) = shared::testing::backend_url("DATABASE_URL", "mysql_parks_a_second_command_with_a_taken_number")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = shared::testing::fresh_mysql_database(&url).await;
    a_second_command_with_a_taken_number_is_parked_not_dropped(state(Some(url), &dir).await).await;
}
