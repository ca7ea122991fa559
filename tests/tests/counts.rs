//! The count flush on the production backends: counts never exceed the rows persisted, even
//! read while writes pour in, and a Redis that lost the touched sets (and everything else of
//! this deployment) is recounted by the running cron, without a restart.

use std::time::{Duration, Instant};

use chatmesh_e2e::Deployment;
use chatmesh_e2e::split::SplitChat;

fn env(mesh: &SplitChat, name: &str) -> String {
    mesh.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).expect(name)
}

async fn messages_count(api: &chatmesh_e2e::Api, token: &str, chat: i64) -> i64 {
    api.get(&format!("/api/applications/{token}/chats/{chat}")).await.body["messages_count"].as_i64().unwrap()
}

async fn persisted(api: &chatmesh_e2e::Api, token: &str, chat: i64) -> i64 {
    let (mut after, mut count) = (0, 0);
    loop {
        let page = api.get(&format!("/api/applications/{token}/chats/{chat}/messages?limit=100&after={after}")).await;
        let items = page.body.as_array().cloned().unwrap_or_default();
        let Some(last) = items.last() else { return count };
        after = last["message_number"].as_i64().unwrap();
        count += items.len() as i64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_never_exceed_rows_and_survive_lost_touched_sets() {
    let Some(mesh) = SplitChat::start("counts_never_exceed_rows_and_survive_lost_touched_sets", &[]).await else {
        return;
    };
    let started = Instant::now();
    let api = mesh.api();
    let token = api.create_application("counts").await;
    let chat = api.create_chat(&token, "room").await;
    // A chat is readable once the consumer has stored it, a moment after its 201.
    let chat_path = format!("/api/applications/{token}/chats/{chat}");
    assert_eq!(api.get_eventually(&chat_path).await.status, 200, "the chat is stored");

    // Writers keep creating while the count is read: it never passes what a later read lists.
    let writer = {
        let (api, token) = (api.clone(), token.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                api.create_message(&token, chat, &format!("message {i}")).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = 0;
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the writers did not finish");
        let count = messages_count(&api, &token, chat).await;
        let rows = persisted(&api, &token, chat).await;
        assert!(count <= rows, "messages_count {count} exceeds the {rows} messages persisted");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.await.unwrap();
    eprintln!("counts: writes done at {:?}", started.elapsed());
    let converged = api.eventually(&chat_path, |r| r.body["messages_count"] == 150).await;
    assert_eq!(converged.body["messages_count"], 150, "the count converges to the rows");
    eprintln!("counts: converged at {:?}", started.elapsed());

    // Hold the flush lock so the running cron cannot count the next messages, then lose every
    // key of this deployment (touched sets, lock, generation marker), as a Redis restarted
    // without them would.
    let namespace = env(&mesh, "CHATMESH_NAMESPACE");
    let client = redis::Client::open(env(&mesh, "REDIS_URL").as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let lock = format!("{namespace}:lock:count-flush");
    redis::cmd("SET").arg(&lock).arg("someone-else").arg("PX").arg(60_000).query_async::<()>(&mut redis).await.unwrap();
    for i in 0..30 {
        api.create_message(&token, chat, &format!("late message {i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while persisted(&api, &token, chat).await < 180 {
        assert!(Instant::now() < deadline, "the late messages were not persisted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("counts: late messages persisted at {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(messages_count(&api, &token, chat).await, 150, "the held lock kept the cron from counting");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{namespace}:*")).query_async(&mut redis).await.unwrap();
    redis::cmd("DEL").arg(&keys).query_async::<i64>(&mut redis).await.unwrap();

    let recounted = api.eventually(&chat_path, |r| r.body["messages_count"] == 180).await;
    assert_eq!(recounted.body["messages_count"], 180, "the running cron recounts after the loss");
    eprintln!(
        "counts: {samples} reads under load, none above the rows; recounted after the keys were lost ({:?} in all)",
        started.elapsed()
    );
    drop(mesh);
}
