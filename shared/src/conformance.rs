//! One conformance suite per backend port. Each suite is a plain async function taking an
//! adapter, so the embedded adapters (always) and the production ones (when their URL is set)
//! run exactly the same checks. `unique` keeps runs against a shared server apart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use sqlx::Row;

use crate::backends::counters::Counters;
use crate::backends::queue::{Delivery, Queue};
use crate::backends::search::{SearchDoc, SearchIndex};
use crate::backends::sql::{Database, Migration};

/// A short random suffix for table, key and queue names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

/// The first column of the one row `query` answers.
async fn scalar<'q, T>(db: &Database, query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    query.fetch_one(db.pool()).await.unwrap().try_get(0).unwrap()
}

/// The SQL store: migrations apply once, unique keys hold, `insert_ignore` skips duplicates,
/// transactions roll back, and several processes may migrate at once.
pub async fn sql_suite(db: &Database) {
    let table = unique("conformance");
    let create: &'static str = Box::leak(
        format!("CREATE TABLE {table} (id BIGINT NOT NULL, parent BIGINT NOT NULL, body VARCHAR(100) NOT NULL, PRIMARY KEY (id), UNIQUE (parent, body))")
            .into_boxed_str(),
    );
    let statements: &'static [&'static str] = Box::leak(vec![create].into_boxed_slice());
    let migrations = [Migration { version: 1, name: "create", sqlite: statements, mysql: statements }];
    let service: &'static str = Box::leak(table.clone().into_boxed_str());

    let (a, b) = tokio::join!(db.migrate(service, &migrations), db.migrate(service, &migrations));
    a.expect("first concurrent migration");
    b.expect("second concurrent migration");
    db.migrate(service, &migrations).await.expect("migrating again is a no-op");

    let insert = format!("{} INTO {table} (id, parent, body) VALUES (?, ?, ?), (?, ?, ?)", db.insert_ignore());
    for _ in 0..2 {
        sqlx::query(&insert)
            .bind(1_i64)
            .bind(7_i64)
            .bind("a")
            .bind(2_i64)
            .bind(7_i64)
            .bind("b")
            .execute(db.pool())
            .await
            .expect("insert ignoring duplicates");
    }
    let count: i64 = scalar(db, sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))).await;
    assert_eq!(count, 2, "insert_ignore must skip rows whose key exists");

    let duplicate =
        sqlx::query(&format!("INSERT INTO {table} (id, parent, body) VALUES (3, 7, 'a')")).execute(db.pool()).await;
    let error = duplicate.expect_err("a plain insert violating a unique key fails");
    assert!(
        error.as_database_error().is_some_and(|e| e.is_unique_violation()),
        "unique violation is reported as such: {error}"
    );

    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {table} (id, parent, body) VALUES (4, 8, 'c')")).execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    let max: Option<i64> =
        scalar(db, sqlx::query(&format!("SELECT MAX(id) FROM {table} WHERE parent = ?")).bind(8_i64)).await;
    assert_eq!(max, None, "a rolled-back row is gone and MAX over no rows is NULL");

    let unicode = "héllo 👋 wörld";
    sqlx::query(&format!("INSERT INTO {table} (id, parent, body) VALUES (5, 9, ?)"))
        .bind(unicode)
        .execute(db.pool())
        .await
        .unwrap();
    let back: String = scalar(db, sqlx::query(&format!("SELECT body FROM {table} WHERE id = 5"))).await;
    assert_eq!(back, unicode, "text round-trips, emoji included");

    db.ping().await.expect("ping");
    sqlx::query(&format!("DROP TABLE {table}")).execute(db.pool()).await.unwrap();
}

/// Counters: seeded once from the store, unique and gap-free under concurrency, touched sets
/// that lose nothing touched during a flush, and an exclusive expiring lock.
pub async fn counters_suite(counters: Arc<dyn Counters>) {
    let key = unique("counter");
    let seeds = Arc::new(AtomicUsize::new(0));
    let seed_calls = seeds.clone();
    let seed = move || {
        seed_calls.fetch_add(1, Ordering::SeqCst);
        async { Ok(41) }.boxed()
    };
    let numbers = futures::future::join_all((0..100).map(|_| counters.next(&key, &seed))).await;
    let numbers: HashSet<i64> = numbers.into_iter().map(|n| n.expect("next")).collect();
    assert_eq!(numbers, (42..142).collect::<HashSet<_>>(), "100 concurrent numbers are exactly seed+1..seed+100");
    assert_eq!(seeds.load(Ordering::SeqCst), 1, "a missing key is seeded once (single flight)");
    assert_eq!(counters.issued(&key, &seed).await.unwrap().last, 141);

    // Requests whose clients go away part-way (some while their number is being drawn) strand
    // nobody: every other request is answered, and no number is handed out twice.
    let key = unique("counter");
    let mut seen = HashSet::new();
    for pause_micros in [0, 50, 200, 1_000, 5_000] {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (counters, key) = (counters.clone(), key.clone());
                tokio::spawn(async move { counters.next(&key, &|| async { Ok(0) }.boxed()).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_micros(pause_micros)).await;
        for task in tasks.iter().step_by(3) {
            task.abort();
        }
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(10), task).await.expect("no request is stranded") {
                Ok(number) => assert!(seen.insert(number.expect("next")), "a number was handed out twice"),
                Err(error) => assert!(error.is_cancelled()),
            }
        }
    }
    let last = counters.next(&key, &|| async { Ok(0) }.boxed()).await.unwrap();
    assert!(seen.iter().all(|&n| n < last), "numbering goes on above every number handed out");

    let other = unique("counter");
    let zero = || async { Ok(0) }.boxed();
    assert_eq!(counters.issued(&other, &zero).await.unwrap().last, 0, "an unused key starts at its seed");
    assert_eq!(counters.next(&other, &zero).await.unwrap(), 1, "keys are independent");

    let set = unique("touched");
    counters.touch(&set, &["a".into(), "b".into()]).await.unwrap();
    counters.touch(&set, &["a".into()]).await.unwrap();
    let mut first: Vec<String> = counters.take_touched(&set).await.unwrap();
    first.sort();
    assert_eq!(first, ["a", "b"], "touched members are a set");
    counters.touch(&set, &["c".into()]).await.unwrap();
    let mut again = counters.take_touched(&set).await.unwrap();
    again.sort();
    assert_eq!(again, ["a", "b", "c"], "an unfinished flush hands its members out again, with the new ones");
    counters.finish_touched(&set, &again).await.unwrap();
    counters.touch(&set, &["d".into()]).await.unwrap();
    assert_eq!(
        counters.take_touched(&set).await.unwrap(),
        ["d"],
        "a member touched during a flush is kept for the next"
    );
    // Two flushes overlap (the first outlived its lock): each forgets only what it counted.
    let slow = counters.take_touched(&set).await.unwrap();
    counters.touch(&set, &["e".into()]).await.unwrap();
    let mut fast = counters.take_touched(&set).await.unwrap();
    fast.sort();
    assert_eq!(fast, ["d", "e"], "a second flush takes what the first has not finished, and the new");
    counters.finish_touched(&set, &slow).await.unwrap();
    assert_eq!(
        counters.take_touched(&set).await.unwrap(),
        ["e"],
        "the first flush's finish does not drop what only the second one took"
    );
    counters.finish_touched(&set, &["e".to_owned()]).await.unwrap();
    assert!(counters.take_touched(&set).await.unwrap().is_empty());
    counters.finish_touched(&set, &[]).await.unwrap();
    let generation = counters.generation().await.unwrap();
    assert_eq!(counters.generation().await.unwrap(), generation, "the generation holds while nothing is lost");

    let lock = unique("lock");
    assert!(counters.try_lock(&lock, "one", Duration::from_secs(30)).await.unwrap());
    assert!(!counters.try_lock(&lock, "two", Duration::from_secs(30)).await.unwrap(), "the lock is exclusive");
    counters.unlock(&lock, "two").await.unwrap();
    assert!(!counters.try_lock(&lock, "two", Duration::from_secs(30)).await.unwrap(), "only the holder unlocks");
    counters.unlock(&lock, "one").await.unwrap();
    assert!(
        counters.try_lock(&lock, "two", Duration::from_millis(300)).await.unwrap(),
        "unlocked, another may take it"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(counters.try_lock(&lock, "three", Duration::from_secs(30)).await.unwrap(), "an expired lock is free");
    counters.unlock(&lock, "three").await.unwrap();

    counters.ping().await.expect("ping");
}

/// How long a queue suite loop waits for the deliveries it expects before it fails.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

/// The queue: every published command is delivered, an unacked one comes back, a retried one
/// comes back later with its attempt counted, dead letters are listed and replayed.
pub async fn queue_suite(queue: Arc<dyn Queue>) {
    let name = unique("conformance");
    let published: HashSet<String> = (0..200).map(|i| format!("command-{i}")).collect();
    publish_concurrently(queue.as_ref(), &name, published.iter()).await;
    // Concurrent publishes may share one stored message (group commit): the depth counts
    // stored messages.
    let depth = queue.depth(&name).await.unwrap();
    assert!((1..=200).contains(&depth), "depth {depth}");

    // Two subscriptions share the queue; together they see each command once.
    let mut one = queue.subscribe(&name).await.unwrap();
    let mut two = queue.subscribe(&name).await.unwrap();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while seen.len() < 200 {
        assert!(Instant::now() < deadline, "only {} of 200 commands delivered in {DELIVERY_DEADLINE:?}", seen.len());
        for sub in [&mut one, &mut two] {
            let batch = sub.next_batch(50, Duration::from_secs(5)).await.unwrap();
            let ids: Vec<u64> = batch.iter().map(|d| d.id).collect();
            for delivery in batch {
                assert_eq!(delivery.attempts, 0);
                assert!(seen.insert(String::from_utf8(delivery.payload.to_vec()).unwrap()), "delivered twice");
            }
            sub.ack(&ids).await.unwrap();
        }
    }
    assert_eq!(seen, published);
    assert!(one.next_batch(10, Duration::from_millis(200)).await.unwrap().is_empty(), "acked commands are gone");
    assert!(two.next_batch(10, Duration::from_millis(200)).await.unwrap().is_empty(), "acked commands are gone");
    assert_eq!(queue.depth(&name).await.unwrap(), 0);

    // An unacked delivery comes back when its subscriber goes away.
    drop(two);
    queue.publish(&name, Bytes::from_static(b"unacked")).await.unwrap();
    let batch = one.next_batch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.len(), 1);
    drop(one);
    let mut two = queue.subscribe(&name).await.unwrap();
    let batch = two.next_batch(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(batch.len(), 1, "an unacked command is delivered again");
    assert_eq!(&batch[0].payload[..], b"unacked");

    // A retry comes back after its delay with its attempt counted.
    two.retry(batch[0].id, Duration::from_millis(300)).await.unwrap();
    assert!(two.next_batch(10, Duration::from_millis(50)).await.unwrap().is_empty(), "not before its delay");
    let batch = two.next_batch(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].attempts, 1);

    // A dead letter is listed, then replayed with its attempts reset.
    two.dead_letter(batch[0].id, "poison for the test").await.unwrap();
    assert!(two.next_batch(10, Duration::from_millis(300)).await.unwrap().is_empty());
    let dead = queue.dead_letters(&name, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, "unacked");
    assert_eq!(dead[0].reason, "poison for the test");
    assert_eq!(queue.replay_dead_letters(&name).await.unwrap(), 1);
    assert!(queue.dead_letters(&name, 10).await.unwrap().is_empty());
    let batch = two.next_batch(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(&batch[0].payload[..], b"unacked");
    assert_eq!(batch[0].attempts, 0);
    two.ack(&[batch[0].id]).await.unwrap();

    // Acking part of a batch settles exactly that part: the rest is delivered again.
    let partial = unique("conformance");
    for payload in ["first", "second", "third"] {
        queue.publish(&partial, Bytes::from(payload)).await.unwrap();
    }
    let mut sub = queue.subscribe(&partial).await.unwrap();
    let mut batch = Vec::new();
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while batch.len() < 3 {
        assert!(Instant::now() < deadline, "only {} of 3 commands delivered in {DELIVERY_DEADLINE:?}", batch.len());
        batch.extend(sub.next_batch(3, Duration::from_secs(5)).await.unwrap());
    }
    let later: Vec<u64> = batch.iter().filter(|d| &d.payload[..] != b"first").map(|d| d.id).collect();
    assert_eq!(later.len(), 2);
    sub.ack(&later).await.unwrap();
    drop(sub);
    let mut sub = queue.subscribe(&partial).await.unwrap();
    let again = sub.next_batch(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.iter().map(|d| &d.payload[..]).collect::<Vec<_>>(), [b"first"], "only the unacked one");
    sub.ack(&[again[0].id]).await.unwrap();

    // Commands published together (possibly in one stored message) are delivered one by one;
    // a subscriber that goes away with some unsettled gets every unsettled one again, and
    // retrying one of them settles it on its own.
    let together = unique("conformance");
    let payloads: Vec<String> = (0..64).map(|i| format!("together-{i}")).collect();
    publish_concurrently(queue.as_ref(), &together, payloads.iter()).await;
    let mut sub = queue.subscribe(&together).await.unwrap();
    let mut batch = Vec::new();
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while batch.len() < 64 {
        assert!(Instant::now() < deadline, "only {} of 64 commands delivered in {DELIVERY_DEADLINE:?}", batch.len());
        let more = sub.next_batch(10, Duration::from_secs(5)).await.unwrap();
        assert!(!more.is_empty() && more.len() <= 10, "batches hold one to `max` commands");
        batch.extend(more);
    }
    let mut delivered: Vec<String> = batch.iter().map(|d| String::from_utf8(d.payload.to_vec()).unwrap()).collect();
    delivered.sort();
    let mut expected = payloads.clone();
    expected.sort();
    assert_eq!(delivered, expected, "each command delivered once, on its own");
    let (tens, others): (Vec<&Delivery>, Vec<&Delivery>) = batch.iter().partition(|d| d.payload.ends_with(b"0"));
    sub.ack(&others.iter().map(|d| d.id).collect::<Vec<_>>()).await.unwrap();
    let unsettled: HashSet<String> = tens.iter().map(|d| String::from_utf8(d.payload.to_vec()).unwrap()).collect();
    drop(sub);
    let mut sub = queue.subscribe(&together).await.unwrap();
    let mut again = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let more = sub.next_batch(100, Duration::from_millis(500)).await.unwrap();
        if more.is_empty() && unsettled.iter().all(|p| again.contains_key(p)) {
            break;
        }
        for delivery in more {
            again.insert(String::from_utf8(delivery.payload.to_vec()).unwrap(), delivery);
        }
    }
    let missing: Vec<&String> = unsettled.iter().filter(|p| !again.contains_key(*p)).collect();
    assert!(missing.is_empty(), "unsettled commands not delivered again within 15 s: {missing:?}");
    let (retried, rest): (Vec<Delivery>, Vec<Delivery>) =
        again.into_values().partition(|d| &d.payload[..] == b"together-10");
    sub.retry(retried[0].id, Duration::from_millis(200)).await.unwrap();
    sub.ack(&rest.iter().map(|d| d.id).collect::<Vec<_>>()).await.unwrap();
    let back = sub.next_batch(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(back.len(), 1, "only the retried command comes back");
    assert_eq!((&back[0].payload[..], back[0].attempts), (&b"together-10"[..], 1));
    sub.ack(&[back[0].id]).await.unwrap();
    drop(sub);
    let mut sub = queue.subscribe(&together).await.unwrap();
    assert!(sub.next_batch(10, Duration::from_millis(500)).await.unwrap().is_empty(), "all settled");

    // Notifications reach every listener of their topic, from the moment it listens, and only
    // those of that topic; with nobody listening, a notification is dropped, not an error.
    let topic = unique("conformance.changes");
    queue.notify(&topic, Bytes::from_static(b"before anyone listens")).await.expect("notify without listeners");
    let mut first = queue.listen(&topic).await.unwrap();
    let mut second = queue.listen(&topic).await.unwrap();
    let mut elsewhere = queue.listen(&unique("conformance.other")).await.unwrap();
    for i in 0..3 {
        queue.notify(&topic, Bytes::from(format!("change {i}"))).await.unwrap();
    }
    for listener in [&mut first, &mut second] {
        for i in 0..3 {
            let got = tokio::time::timeout(DELIVERY_DEADLINE, listener.recv()).await.expect("a notification").unwrap();
            assert_eq!(got, Bytes::from(format!("change {i}")), "in order, none before listening");
        }
    }
    let stray = tokio::time::timeout(Duration::from_millis(300), elsewhere.recv()).await;
    assert!(stray.is_err(), "another topic's listener hears nothing: {stray:?}");

    queue.ping().await.expect("ping");
}

/// Publishes every payload to `name` at once (so an adapter may commit them together).
async fn publish_concurrently(queue: &dyn Queue, name: &str, payloads: impl Iterator<Item = &String>) {
    futures::future::join_all(payloads.map(|p| queue.publish(name, Bytes::from(p.clone()))))
        .await
        .into_iter()
        .for_each(|r| r.expect("publish"));
}

/// Search: case-insensitive, prefix matching, every term required, scoped, ranked (whole
/// words first, then newest), updates replace the old text.
pub async fn search_suite(index: Arc<dyn SearchIndex>) {
    let scope = unique("chat");
    let other = unique("chat");
    let doc =
        |scope: &str, number, content: &str| SearchDoc { scope: scope.to_owned(), number, content: content.to_owned() };
    index
        .upsert(vec![
            doc(&scope, 1, "Hello world"),
            doc(&scope, 2, "hello there"),
            doc(&scope, 3, "Helicopter parenting"),
            doc(&scope, 4, "nothing to see"),
            doc(&scope, 5, "HELLO again"),
            doc(&other, 1, "hello from another chat"),
        ])
        .await
        .expect("upsert");

    let numbers =
        |hits: Vec<crate::backends::search::SearchHit>| hits.into_iter().map(|h| h.number).collect::<Vec<_>>();
    let hits = index.search(&scope, "HeLLo", 10).await.unwrap();
    assert_eq!(numbers(hits.clone()), [5, 2, 1], "case-insensitive, scoped, equal scores newest first");
    assert_eq!(hits[2].content, "Hello world", "hits carry the stored text");
    let mut prefix = numbers(index.search(&scope, "hel", 10).await.unwrap());
    prefix.sort();
    assert_eq!(prefix, [1, 2, 3, 5], "a term matches words it is a prefix of");
    assert_eq!(numbers(index.search(&scope, "hello wor", 10).await.unwrap()), [1], "every term must match");
    assert!(index.search(&scope, "ello", 10).await.unwrap().is_empty(), "no infix matches");
    assert!(index.search(&scope, "...", 10).await.unwrap().is_empty(), "a query without words finds nothing");
    assert_eq!(numbers(index.search(&scope, "hel", 2).await.unwrap()).len(), 2, "limit holds");

    index.upsert(vec![doc(&scope, 6, "the hello"), doc(&scope, 7, "hellos")]).await.unwrap();
    let ranked = numbers(index.search(&scope, "hello", 10).await.unwrap());
    assert_eq!(ranked.last(), Some(&7), "a whole-word match ranks above a prefix-only match: {ranked:?}");

    index.upsert(vec![doc(&scope, 1, "goodbye moon")]).await.unwrap();
    assert!(!numbers(index.search(&scope, "world", 10).await.unwrap()).contains(&1), "old words stop matching");
    assert_eq!(numbers(index.search(&scope, "goodb", 10).await.unwrap()), [1], "new words match");
    index.upsert(vec![doc(&scope, 1, "goodbye moon")]).await.unwrap();
    assert_eq!(index.search(&scope, "moon", 10).await.unwrap().len(), 1, "indexing twice leaves one document");

    // Staged documents become searchable by themselves within moments; a flush makes them durable.
    index.stage(vec![doc(&scope, 8, "staged zebra")], 8).await.expect("stage");
    let deadline = Instant::now() + Duration::from_secs(10);
    while numbers(index.search(&scope, "zeb", 10).await.unwrap()) != [8] {
        assert!(Instant::now() < deadline, "a staged document becomes searchable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    index.flush().await.expect("flush");

    // A new message staged as such is found like any other, and a later update still replaces it.
    index.stage_new(vec![doc(&scope, 9, "brand new yak")], 9).await.expect("stage new");
    index.flush().await.expect("flush");
    assert_eq!(numbers(index.search(&scope, "yak", 10).await.unwrap()), [9], "a new document is searchable");
    index.upsert(vec![doc(&scope, 9, "edited yak")]).await.unwrap();
    let hits = index.search(&scope, "yak", 10).await.unwrap();
    assert_eq!(hits.len(), 1, "an update replaces a document staged as new");
    assert_eq!(hits[0].content, "edited yak");

    // Words longer than the indexed prefixes: a longer query term must still begin a word.
    index
        .upsert(vec![
            doc(&scope, 10, "internationalization rocks"),
            doc(&scope, 11, "internationalizationalism quirks"),
            doc(&scope, 12, "ΜΟΥΣΙΚΗ τώρα"),
        ])
        .await
        .unwrap();
    assert!(index.search(&scope, "internationalizationxyz", 10).await.unwrap().is_empty(), "no word begins so");
    assert_eq!(
        numbers(index.search(&scope, "internationalizationalism", 10).await.unwrap()),
        [11],
        "a long whole word"
    );
    assert_eq!(numbers(index.search(&scope, "INTERNATIONALIZATIONAL", 10).await.unwrap()), [11], "a long prefix");
    let mut both = numbers(index.search(&scope, "internationalization", 10).await.unwrap());
    both.sort();
    assert_eq!(both, [10, 11], "a 20-character term matches both");
    assert_eq!(numbers(index.search(&scope, "ΜΟΥΣ", 10).await.unwrap()), [12], "a capital prefix ending in sigma");
    assert_eq!(numbers(index.search(&scope, "μουσικη", 10).await.unwrap()), [12], "lowercase finds capitals");

    index.ping().await.expect("ping");
}
