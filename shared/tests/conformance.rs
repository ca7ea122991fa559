//! The port conformance suites against every embedded adapter.

use std::sync::Arc;
use std::time::Duration;

use shared::backends::counters::MemoryCounters;
use shared::backends::queue::EmbeddedQueue;
use shared::backends::search::TantivyIndex;
use shared::backends::sql::Database;
use shared::conformance;

#[tokio::test]
async fn sqlite_store_passes_the_sql_suite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(dir.path(), "store.db").await.unwrap();
    conformance::sql_suite(&db).await;
}

#[tokio::test]
async fn memory_counters_pass_the_counters_suite() {
    conformance::counters_suite(Arc::new(MemoryCounters::new())).await;
}

#[tokio::test]
async fn embedded_queue_passes_the_queue_suite() {
    let dir = tempfile::tempdir().unwrap();
    let queue = EmbeddedQueue::open(dir.path(), None).await.unwrap();
    conformance::queue_suite(Arc::new(queue)).await;
}

#[tokio::test]
async fn embedded_queue_keeps_commands_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = EmbeddedQueue::open(dir.path(), None).await.unwrap();
        use shared::backends::queue::Queue;
        queue.publish("q", bytes::Bytes::from_static(b"kept")).await.unwrap();
    }
    use shared::backends::queue::Queue;
    let queue = EmbeddedQueue::open(dir.path(), None).await.unwrap();
    let mut sub = queue.subscribe("q").await.unwrap();
    let batch = sub.next_batch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(&batch[0].payload[..], b"kept");
}

#[tokio::test]
async fn tantivy_index_passes_the_search_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::search_suite(Arc::new(TantivyIndex::open(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn tantivy_index_keeps_documents_across_a_reopen() {
    use shared::backends::search::{SearchDoc, SearchIndex};
    let dir = tempfile::tempdir().unwrap();
    {
        let index = TantivyIndex::open(dir.path()).unwrap();
        index
            .upsert(vec![SearchDoc { scope: "s".into(), number: 1, content: "persisted words".into() }])
            .await
            .unwrap();
    }
    let index = TantivyIndex::open(dir.path()).unwrap();
    assert_eq!(index.search("s", "persist", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn tantivy_index_records_how_far_staged_documents_are_durable() {
    use shared::backends::search::{SearchDoc, SearchIndex};
    let dir = tempfile::tempdir().unwrap();
    let doc = |number, content: &str| SearchDoc { scope: "s".into(), number, content: content.into() };
    {
        let index = TantivyIndex::open(dir.path()).unwrap();
        assert_eq!(index.indexed_watermark().await.unwrap(), Some(0), "a new index has indexed nothing");
        index.stage(vec![doc(1, "first words")], 41).await.unwrap();
        index.flush().await.unwrap();
        assert_eq!(index.indexed_watermark().await.unwrap(), Some(41));
        // An edit is committed at once and keeps the watermark.
        index.upsert(vec![doc(1, "edited words")]).await.unwrap();
        assert_eq!(index.indexed_watermark().await.unwrap(), Some(41));
        // Staged and never flushed: committed when the index closes.
        index.stage(vec![doc(2, "closing words")], 42).await.unwrap();
    }
    let index = TantivyIndex::open(dir.path()).unwrap();
    assert_eq!(index.indexed_watermark().await.unwrap(), Some(42));
    assert_eq!(index.search("s", "edited", 10).await.unwrap().len(), 1);
    assert_eq!(index.search("s", "closing", 10).await.unwrap().len(), 1);
    let read_only = TantivyIndex::open_read_only(dir.path()).unwrap();
    assert_eq!(read_only.indexed_watermark().await.unwrap(), None, "only the writer catches up");
}

#[tokio::test]
async fn mysql_store_passes_the_sql_suite() {
    let Some(url) = shared::testing::backend_url("DATABASE_URL", "mysql_store_passes_the_sql_suite") else {
        return;
    };
    let db = Database::connect(&shared::testing::fresh_mysql_database(&url).await).await.unwrap();
    conformance::sql_suite(&db).await;
}

#[tokio::test]
async fn redis_counters_pass_the_counters_suite() {
    let Some(url) = shared::testing::backend_url("REDIS_URL", "redis_counters_pass_the_counters_suite") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(dir.path(), "store.db").await.unwrap();
    let namespace = shared::testing::fresh_namespace("conformance");
    let counters = shared::backends::redis_counters::RedisCounters::connect(&url, db, &namespace).await.unwrap();
    conformance::counters_suite(Arc::new(counters)).await;
}

#[tokio::test]
async fn redis_counters_never_reuse_numbers_after_redis_loses_its_keys() {
    use shared::backends::counters::Counters;
    let Some(url) = shared::testing::backend_url("REDIS_URL", "redis_counters_never_reuse_numbers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(dir.path(), "store.db").await.unwrap();
    let namespace = shared::testing::fresh_namespace("reuse");
    let counters = shared::backends::redis_counters::RedisCounters::connect(&url, db, &namespace).await.unwrap();
    let key = format!("{namespace}:counter");
    // The store never sees these numbers (as if their commands were still queued).
    let empty_store = || futures::FutureExt::boxed(async { Ok(0) });
    let mut issued = Vec::new();
    for _ in 0..300 {
        issued.push(counters.next(&key, &empty_store).await.unwrap());
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{namespace}:*")).query_async(&mut redis).await.unwrap();
    redis::cmd("DEL").arg(&keys).query_async::<i64>(&mut redis).await.unwrap();
    let after = counters.next(&key, &empty_store).await.unwrap();
    assert!(after > *issued.iter().max().unwrap(), "after losing its keys, {after} must exceed every issued number");
}

#[tokio::test]
async fn rabbitmq_passes_the_queue_suite() {
    let Some(url) = shared::testing::backend_url("AMQP_URL", "rabbitmq_passes_the_queue_suite") else {
        return;
    };
    let queue = shared::backends::rabbitmq::RabbitQueue::connect(&url).await.unwrap();
    conformance::queue_suite(Arc::new(queue)).await;
}

/// A publish no queue takes (its queue deleted behind the adapter's back) is refused, never
/// confirmed; the next one declares the queue again and is kept.
#[tokio::test]
async fn rabbitmq_refuses_a_publish_no_queue_takes() {
    use shared::backends::queue::Queue;
    let Some(url) = shared::testing::backend_url("AMQP_URL", "rabbitmq_refuses_a_publish_no_queue_takes") else {
        return;
    };
    let queue = shared::backends::rabbitmq::RabbitQueue::connect(&url).await.unwrap();
    let name = conformance::unique("conformance");
    queue.publish(&name, "first".into()).await.expect("published to a declared queue");
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(name.as_str().into(), lapin::options::QueueDeleteOptions::default()).await.unwrap();
    let refused = queue.publish(&name, "lost".into()).await;
    assert!(refused.is_err(), "a publish to a deleted queue must not be confirmed");
    queue.publish(&name, "kept".into()).await.expect("the queue is declared again");
    assert_eq!(queue.depth(&name).await.unwrap(), 1, "only the publish after the re-declare is queued");
}

#[tokio::test]
async fn elasticsearch_passes_the_search_suite() {
    let Some(url) = shared::testing::backend_url("ELASTICSEARCH_URL", "elasticsearch_passes_the_search_suite") else {
        return;
    };
    let index = shared::testing::fresh_namespace("conformance");
    let elastic = shared::backends::elastic::ElasticIndex::connect(&url, &index).await.unwrap();
    conformance::search_suite(Arc::new(elastic)).await;
}
