//! The port conformance suites against every embedded adapter.

use std::sync::Arc;
use std::time::Duration;

use shared::backends::counters::{MemoryCounters, RedisCounters};
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

/// A single-process queue hands commands to a consumer in memory: the sender hears `true` only
/// from an ack, and `false` (to publish it to the file) from anything else.
#[tokio::test]
async fn embedded_queue_hands_commands_straight_to_a_consumer_here() {
    use bytes::Bytes;
    use shared::backends::queue::Queue;
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(EmbeddedQueue::open(dir.path(), Some(Duration::from_secs(5))).await.unwrap());
    let hand_over = |payload: &'static [u8]| {
        let queue = queue.clone();
        tokio::spawn(async move { queue.hand_over("q", Bytes::from_static(payload)).await })
    };
    // A publish waits (up to 5 s) for its command to be processed in a single-process queue:
    // published in a task, returned once the command is in the file, awaited once consumed.
    #[allow(clippy::async_yields_async)]
    let publish = async |payload: &'static [u8]| {
        let task = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.publish("q", Bytes::from_static(payload)).await })
        };
        while queue.depth("q").await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task
    };
    assert!(!hand_over(b"nobody").await.unwrap(), "nobody consumes the queue in this process");

    let mut sub = queue.subscribe("q").await.unwrap();
    let filed = publish(b"filed").await;
    let acked = hand_over(b"direct");
    let mut batch = Vec::new();
    while batch.len() < 2 {
        batch.extend(sub.next_batch(10, Duration::from_secs(5)).await.unwrap());
    }
    let mut payloads: Vec<&[u8]> = batch.iter().map(|d| &d.payload[..]).collect();
    payloads.sort();
    assert_eq!(payloads, [&b"direct"[..], &b"filed"[..]], "the consumer takes from memory and from the file");
    sub.ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>()).await.unwrap();
    assert!(acked.await.unwrap(), "an ack answers the sender true");
    filed.await.unwrap().unwrap();
    assert_eq!(queue.depth("q").await.unwrap(), 0, "the command handed over never reached the file");

    // A batch of direct deliveries reads the file only when it may have changed: a publish
    // since the last read is taken with the next batch.
    let first = hand_over(b"first");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batch = sub.next_batch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.iter().map(|d| &d.payload[..]).collect::<Vec<_>>(), [&b"first"[..]]);
    sub.ack(&[batch[0].id]).await.unwrap();
    assert!(first.await.unwrap());
    let filed = publish(b"filed again").await;
    let second = hand_over(b"second");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batch = sub.next_batch(10, Duration::from_secs(5)).await.unwrap();
    let mut payloads: Vec<&[u8]> = batch.iter().map(|d| &d.payload[..]).collect();
    payloads.sort();
    assert_eq!(payloads, [&b"filed again"[..], &b"second"[..]], "the publish is read beside the direct delivery");
    sub.ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>()).await.unwrap();
    assert!(second.await.unwrap());
    filed.await.unwrap().unwrap();

    let retried = hand_over(b"retried");
    let delivery = sub.next_batch(10, Duration::from_secs(5)).await.unwrap().remove(0);
    sub.retry(delivery.id, Duration::ZERO).await.unwrap();
    assert!(!retried.await.unwrap(), "a retry gives the command back to its sender");

    let parked = hand_over(b"parked");
    let delivery = sub.next_batch(10, Duration::from_secs(5)).await.unwrap().remove(0);
    sub.dead_letter(delivery.id, "test").await.unwrap();
    assert!(!parked.await.unwrap(), "a dead letter gives the command back to its sender");
    assert!(queue.dead_letters("q", 10).await.unwrap().is_empty(), "its sender decides where it goes");

    let held = hand_over(b"held");
    assert_eq!(sub.next_batch(10, Duration::from_secs(5)).await.unwrap().len(), 1);
    drop(sub);
    assert!(!held.await.unwrap(), "a subscription dropped with it in hand gives it back");
    assert!(!hand_over(b"gone").await.unwrap(), "no subscription left");

    let shared_dir = tempfile::tempdir().unwrap();
    let shared_file = EmbeddedQueue::open(shared_dir.path(), None).await.unwrap();
    let _sub = shared_file.subscribe("q").await.unwrap();
    assert!(
        !shared_file.hand_over("q", Bytes::from_static(b"x")).await,
        "a queue file other processes may consume has no direct path"
    );
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

/// Redis counters at `REDIS_URL` under a fresh namespace, seeding from an empty SQLite store.
struct RedisFixture {
    url: String,
    namespace: String,
    counters: RedisCounters,
    _store_dir: tempfile::TempDir,
}

/// The [`RedisFixture`] of `test`, its namespace `prefix_…`; `None` (the test skipped) where
/// `REDIS_URL` is not set.
async fn redis_counters(test: &str, prefix: &str) -> Option<RedisFixture> {
    let url = shared::testing::backend_url("REDIS_URL", test)?;
    let store_dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(store_dir.path(), "store.db").await.unwrap();
    let namespace = shared::testing::fresh_namespace(prefix);
    let counters = RedisCounters::connect(&url, db, &namespace).await.unwrap();
    Some(RedisFixture { url, namespace, counters, _store_dir: store_dir })
}

#[tokio::test]
async fn redis_counters_pass_the_counters_suite() {
    let Some(redis) = redis_counters("redis_counters_pass_the_counters_suite", "conformance").await else {
        return;
    };
    conformance::counters_suite(Arc::new(redis.counters)).await;
}

#[tokio::test]
async fn redis_counters_never_reuse_numbers_after_redis_loses_its_keys() {
    use shared::backends::counters::Counters;
    let Some(RedisFixture { url, namespace, counters, _store_dir }) =
        redis_counters("redis_counters_never_reuse_numbers", "reuse").await
    else {
        return;
    };
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
    let queue = shared::backends::queue::RabbitQueue::connect(&url).await.unwrap();
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
    let queue = shared::backends::queue::RabbitQueue::connect(&url).await.unwrap();
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
    let elastic = shared::backends::search::ElasticIndex::connect(&url, &index).await.unwrap();
    conformance::search_suite(Arc::new(elastic)).await;
}

/// A redis-server of the test's own on a free port, with its data dir.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(dir: tempfile::TempDir, port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, dir, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query_async(&mut connection).await
    }

    /// Stops without saving and starts again from the snapshot `rdb` on the same port.
    async fn restart_from(mut self, rdb: &[u8]) -> OwnRedis {
        let _ = self.command(&["SHUTDOWN", "NOSAVE"]).await;
        let _ = self.child.wait();
        std::fs::write(self.dir.path().join("dump.rdb"), rdb).unwrap();
        let (dir, port) = (std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()), self.port);
        OwnRedis::start(dir, port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis comes back older (restarted from a snapshot taken before numbers were handed out):
/// the counters see a server they were not seeded on, seed again above the durable
/// reservation, and hand out no number twice.
#[tokio::test]
async fn redis_counters_never_reuse_numbers_after_redis_comes_back_older() {
    use shared::backends::counters::Counters;
    // Runs where a Redis server is (its own is started from the same redis-server binary).
    if shared::testing::backend_url("REDIS_URL", "redis_counters_never_reuse_numbers_after_redis_comes_back_older")
        .is_none()
    {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = OwnRedis::start(tempfile::tempdir().unwrap(), port);
    let store_dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(store_dir.path(), "store.db").await.unwrap();
    let namespace = shared::testing::fresh_namespace("rollback");
    let counters =
        shared::backends::counters::RedisCounters::connect(&redis.url(), db.clone(), &namespace).await.unwrap();
    // The store never sees these numbers (as if their commands were still queued).
    let empty_store = || futures::FutureExt::boxed(async { Ok(0) });
    let key = format!("{namespace}:counter");
    let mut issued = std::collections::HashSet::new();
    for _ in 0..100 {
        assert!(issued.insert(counters.next(&key, &empty_store).await.unwrap()));
    }
    redis.command(&["SAVE"]).await.unwrap();
    let snapshot = std::fs::read(redis.dir.path().join("dump.rdb")).unwrap();
    // More numbers after the snapshot, some within the cached reservation and some past it.
    for _ in 0..300 {
        assert!(issued.insert(counters.next(&key, &empty_store).await.unwrap()));
    }
    let generation = counters.generation().await.unwrap();
    let redis = redis.restart_from(&snapshot).await;
    let highest = *issued.iter().max().unwrap();
    let mut after = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while after.len() < 50 {
        assert!(std::time::Instant::now() < deadline, "the counters did not recover after the restart");
        match counters.next(&key, &empty_store).await {
            Ok(number) => after.push(number),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await, // reconnecting
        }
    }
    for number in &after {
        assert!(*number > highest, "{number} handed out again after the rollback (highest before: {highest})");
        assert!(issued.insert(*number), "{number} handed out twice");
    }
    let issued_now = counters.issued(&key, &empty_store).await.unwrap();
    assert!(issued_now.floor >= highest, "numbers at or below {} are not vouched for", issued_now.floor);
    assert_ne!(counters.generation().await.unwrap(), generation, "the restart is a new generation");
    drop(redis);
}

/// Real MySQL failures: a lock wait timeout is the store's, a duplicate key the data's.
#[tokio::test]
async fn mysql_failures_are_classified_by_error_number() {
    use shared::backends::sql::{ErrorClass, error_class};
    let Some(url) = shared::testing::backend_url("DATABASE_URL", "mysql_failures_are_classified_by_error_number")
    else {
        return;
    };
    let db = Database::connect(&shared::testing::fresh_mysql_database(&url).await).await.unwrap();
    sqlx::query("CREATE TABLE classes (id BIGINT PRIMARY KEY) ENGINE=InnoDB").execute(db.pool()).await.unwrap();
    sqlx::query("INSERT INTO classes (id) VALUES (1)").execute(db.pool()).await.unwrap();
    let duplicate = sqlx::query("INSERT INTO classes (id) VALUES (1)").execute(db.pool()).await.unwrap_err();
    assert_eq!(error_class(&duplicate), ErrorClass::Data, "{duplicate}");

    let mut holder = db.pool().acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *holder).await.unwrap();
    sqlx::query("UPDATE classes SET id = 1 WHERE id = 1").execute(&mut *holder).await.unwrap();
    let mut waiter = db.pool().acquire().await.unwrap();
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 1").execute(&mut *waiter).await.unwrap();
    let timeout = sqlx::query("UPDATE classes SET id = 1 WHERE id = 1").execute(&mut *waiter).await.unwrap_err();
    assert_eq!(error_class(&timeout), ErrorClass::Store, "{timeout}");
    sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
}
