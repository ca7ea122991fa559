//! The embedded queue adapter: a SQLite file under the data dir, so a machine with nothing
//! installed still has a queue whose publish survives a crash (the publish is committed with
//! `synchronous = FULL` before it returns).
//!
//! Every write (publish, ack, retry, dead-letter) goes through one writer task that commits
//! whatever is waiting in one transaction, so concurrent publishers share each fsync instead of
//! each waiting for SQLite's one write lock.
//!
//! In a single-process deployment the queue also has a direct path ([`Queue::hand_over`]): a
//! command handed over goes to this process's consumer in memory, never touching the file. Its
//! durability is the consumer's: the sender is answered `true` only when the consumer acks it,
//! which it does after its store commit, so the store is that command's durable log. Anything
//! else (a retry, a dead letter, a subscription dropped with it in hand, a crash) leaves the
//! sender answered `false` or unanswered, and a caller that answers its client only after
//! `true` or a file publish never acknowledges a command that is in neither.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{DeadLetter, Delivery, Queue, Subscription};
use crate::backends::{BackendError, BackendResult};

/// The embedded queue: a SQLite file under the data dir, written by one writer task.
#[derive(Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    ops: mpsc::Sender<Op>,
    ready: Notify,
    in_flight: Mutex<HashSet<i64>>,
    /// When set, a publish also waits (up to this long) until its command is acked, so a
    /// single-process deployment reads its own writes. The command is durable either way.
    wait_for_processing: Option<Duration>,
    /// Notification topics of this process, each an in-process broadcast.
    topics: Mutex<HashMap<String, tokio::sync::broadcast::Sender<Bytes>>>,
    /// Commands handed over in memory, by queue; `None` without a direct path (another process
    /// may consume the file).
    direct: Option<Mutex<HashMap<String, Direct>>>,
    /// The next direct delivery's id (above every id of the file: see [`DIRECT_IDS`]).
    next_direct: AtomicU64,
    /// Changes that may have made a command of the file ready, counted: publishes, replays and
    /// deliveries released. A subscription that found nothing ready in the file since the last
    /// of them need not read it again for a batch of direct deliveries (see [`FILE_POLL`]).
    file_changes: AtomicU64,
}

impl Inner {
    fn file_changed(&self) {
        self.file_changes.fetch_add(1, Ordering::SeqCst);
    }
}

/// How often a subscription reads the file at least, also while direct deliveries keep it
/// busy: a retry becomes ready when its delay is up, which nothing announces.
const FILE_POLL: Duration = Duration::from_millis(100);

/// Longest wait of a small direct batch for the rest of the senders of the batch before it.
const LINGER: Duration = Duration::from_millis(2);

/// A queue's direct path: how many subscriptions this process has on it, and the commands
/// handed over and not taken yet, each with where to answer whether it was acked.
#[derive(Default)]
struct Direct {
    consumers: usize,
    waiting: VecDeque<(Bytes, oneshot::Sender<bool>)>,
    /// Wakes this queue's subscriptions alone (a create must not wake the consumers of every
    /// other queue to look at the file).
    ready: Arc<Notify>,
}

/// Direct deliveries have ids from here up; the file's row ids stay far below.
const DIRECT_IDS: u64 = 1 << 62;

type Reply<T> = oneshot::Sender<BackendResult<T>>;

enum Op {
    Publish { queue: String, payload: Bytes, reply: Reply<Option<oneshot::Receiver<()>>> },
    Ack { ids: Vec<i64>, reply: Reply<()> },
    Retry { id: i64, delay: Duration, reply: Reply<()> },
    DeadLetter { id: i64, reason: String, reply: Reply<()> },
    Replay { queue: String, reply: Reply<usize> },
}

impl EmbeddedQueue {
    /// Opens (creating it if needed) the queue file `queue.db` under `dir`.
    pub async fn open(dir: &Path, wait_for_processing: Option<Duration>) -> BackendResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| BackendError::Other(format!("data dir {}: {e}", dir.display())))?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(dir.join("queue.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // No ping before each use (sqlx's default): a file's connection in this process
        // cannot drop, and the ping is a round trip to its thread on every publish and ack.
        let pool = SqlitePoolOptions::new().max_connections(4).test_before_acquire(false).connect_with(options).await?;
        for statement in [
            "CREATE TABLE IF NOT EXISTS queue_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             queue TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, \
             visible_at INTEGER NOT NULL, enqueued_at INTEGER NOT NULL)",
            "CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, visible_at, id)",
            "CREATE TABLE IF NOT EXISTS queue_dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             queue TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL, \
             failed_at INTEGER NOT NULL)",
        ] {
            sqlx::query(statement).execute(&pool).await?;
        }
        let (ops, rx) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            pool,
            ops,
            ready: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            wait_for_processing,
            topics: Mutex::default(),
            direct: wait_for_processing.map(|_| Mutex::default()),
            next_direct: AtomicU64::new(DIRECT_IDS),
            file_changes: AtomicU64::new(0),
        });
        tokio::spawn(writer(Arc::downgrade(&inner), inner.pool.clone(), rx));
        Ok(Self { inner })
    }

    async fn send<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> BackendResult<T> {
        send(&self.inner, op).await
    }
}

async fn send<T>(inner: &Inner, op: impl FnOnce(Reply<T>) -> Op) -> BackendResult<T> {
    let (reply, answer) = oneshot::channel();
    inner.ops.send(op(reply)).await.map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

fn stopped() -> BackendError {
    BackendError::Unavailable("embedded queue writer stopped".into())
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn publish(&self, queue: &str, payload: Bytes) -> BackendResult<()> {
        let processed = self.send(|reply| Op::Publish { queue: queue.to_owned(), payload, reply }).await;
        crate::metrics::record_publish(queue, processed.is_ok());
        let processed = processed?;
        if let (Some(processed), Some(limit)) = (processed, self.inner.wait_for_processing) {
            let _durable_even_if_not_processed_yet = tokio::time::timeout(limit, processed).await;
        }
        Ok(())
    }

    async fn subscribe(&self, queue: &str) -> BackendResult<Box<dyn Subscription>> {
        let direct_ready = self.inner.direct.as_ref().map(|direct| {
            let mut lines = direct.lock().expect("direct lock poisoned");
            let line = lines.entry(queue.to_owned()).or_default();
            line.consumers += 1;
            line.ready.clone()
        });
        Ok(Box::new(EmbeddedSubscription {
            inner: self.inner.clone(),
            queue: queue.to_owned(),
            held: HashSet::new(),
            held_direct: HashMap::new(),
            file_read_empty: None,
            last_direct: 0,
            direct_ready,
        }))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> BackendResult<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, queue, payload, attempts, reason, failed_at FROM queue_dead_letters \
             WHERE queue = ? ORDER BY id LIMIT ?",
        )
        .bind(queue)
        .bind(limit as i64)
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get::<i64, _>(0)? as u64,
                    queue: row.try_get(1)?,
                    payload: String::from_utf8_lossy(&row.try_get::<Vec<u8>, _>(2)?).into_owned(),
                    attempts: row.try_get::<i64, _>(3)? as u32,
                    reason: row.try_get(4)?,
                    failed_at: row.try_get(5)?,
                })
            })
            .collect()
    }

    async fn replay_dead_letters(&self, queue: &str) -> BackendResult<usize> {
        self.send(|reply| Op::Replay { queue: queue.to_owned(), reply }).await
    }

    async fn depth(&self, queue: &str) -> BackendResult<u64> {
        let depth: i64 = sqlx::query("SELECT COUNT(*) FROM queue_messages WHERE queue = ?")
            .bind(queue)
            .fetch_one(&self.inner.pool)
            .await?
            .try_get(0)?;
        Ok(depth as u64)
    }

    async fn held_payloads(&self, queue: &str) -> BackendResult<Option<Vec<Bytes>>> {
        let rows = sqlx::query(
            "SELECT payload FROM queue_messages WHERE queue = ? \
             UNION ALL SELECT payload FROM queue_dead_letters WHERE queue = ?",
        )
        .bind(queue)
        .bind(queue)
        .fetch_all(&self.inner.pool)
        .await?;
        let payloads = rows
            .iter()
            .map(|row| Ok(Bytes::from(row.try_get::<Vec<u8>, _>(0)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(payloads))
    }

    async fn ping(&self) -> BackendResult<()> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    async fn hand_over(&self, queue: &str, payload: Bytes) -> bool {
        let Some(direct) = &self.inner.direct else { return false };
        let (reply, acked) = oneshot::channel();
        {
            let mut lines = direct.lock().expect("direct lock poisoned");
            match lines.get_mut(queue) {
                Some(line) if line.consumers > 0 => {
                    line.waiting.push_back((payload, reply));
                    line.ready.notify_waiters();
                }
                _ => return false,
            }
        }
        // A dropped answer (the subscription went away with it) is a `false`.
        let acked = acked.await.unwrap_or(false);
        if acked {
            crate::metrics::record_handed_over(queue);
        }
        acked
    }

    /// One process holds the embedded queue, so its listeners are all in this process.
    async fn notify(&self, topic: &str, payload: Bytes) -> BackendResult<()> {
        let topics = self.inner.topics.lock().expect("topics lock poisoned");
        if let Some(sender) = topics.get(topic) {
            // No receiver left is no error: nobody listens now.
            let _ = sender.send(payload);
        }
        Ok(())
    }

    async fn listen(&self, topic: &str) -> BackendResult<tokio::sync::broadcast::Receiver<Bytes>> {
        let mut topics = self.inner.topics.lock().expect("topics lock poisoned");
        let sender =
            topics.entry(topic.to_owned()).or_insert_with(|| tokio::sync::broadcast::channel(super::LISTEN_BUFFER).0);
        Ok(sender.subscribe())
    }
}

struct EmbeddedSubscription {
    inner: Arc<Inner>,
    queue: String,
    /// Deliveries handed out and not yet settled; released if the subscription is dropped.
    held: HashSet<i64>,
    /// Direct deliveries handed out and not yet settled, with their senders' answers (dropped
    /// with the subscription: `false`, so their senders publish them to the file).
    held_direct: HashMap<u64, oneshot::Sender<bool>>,
    /// The count of file changes when this subscription last read the file and found nothing
    /// to take, and when that was.
    file_read_empty: Option<(u64, Instant)>,
    /// How many direct deliveries the last batch with any took.
    last_direct: usize,
    /// Wakes this subscription when a command is handed over; `None` without a direct path.
    direct_ready: Option<Arc<Notify>>,
}

impl EmbeddedSubscription {
    fn release(&mut self, ids: &[i64]) {
        let mut in_flight = self.inner.in_flight.lock().expect("in-flight lock poisoned");
        for id in ids {
            self.held.remove(id);
            in_flight.remove(id);
        }
        self.inner.file_changed();
    }

    /// Whether the file is known to hold nothing to take: this subscription read it empty
    /// less than [`FILE_POLL`] ago, and nothing changed it since.
    fn file_known_empty(&self) -> bool {
        self.file_read_empty.is_some_and(|(changes, at)| {
            changes == self.inner.file_changes.load(Ordering::SeqCst) && at.elapsed() < FILE_POLL
        })
    }

    /// Up to `max` commands handed over in memory.
    fn take_direct(&mut self, max: usize) -> Vec<Delivery> {
        let Some(direct) = &self.inner.direct else { return Vec::new() };
        let mut lines = direct.lock().expect("direct lock poisoned");
        let Some(line) = lines.get_mut(&self.queue) else { return Vec::new() };
        let taken = line.waiting.len().min(max);
        line.waiting
            .drain(..taken)
            .map(|(payload, reply)| {
                let id = self.inner.next_direct.fetch_add(1, Ordering::Relaxed);
                self.held_direct.insert(id, reply);
                Delivery { id, payload, attempts: 0 }
            })
            .collect()
    }

    /// Waits up to [`LINGER`] for more hand-overs to join `batch`, until it is as large as the
    /// last direct batch. The senders answered with that batch are on their way back with their
    /// next commands: a batch of the first few alone would cost a store commit of its own, and
    /// the rest would wait for it.
    async fn linger(&mut self, batch: &mut Vec<Delivery>, max: usize, ready: &Notify) {
        let until = tokio::time::Instant::now() + LINGER;
        let want = self.last_direct.min(max);
        while batch.len() < want {
            let notified = ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            batch.extend(self.take_direct(max - batch.len()));
            if batch.len() >= want || tokio::time::timeout_at(until, notified).await.is_err() {
                break;
            }
        }
    }

    /// Answers the sender of a direct delivery; `false` for any other id.
    fn settle_direct(&mut self, id: u64, acked: bool) -> bool {
        match self.held_direct.remove(&id) {
            Some(reply) => {
                let _ = reply.send(acked);
                true
            }
            None => false,
        }
    }
}

impl Drop for EmbeddedSubscription {
    fn drop(&mut self) {
        let held: Vec<i64> = self.held.drain().collect();
        let mut in_flight = self.inner.in_flight.lock().expect("in-flight lock poisoned");
        for id in held {
            in_flight.remove(&id);
        }
        drop(in_flight);
        self.inner.file_changed();
        if let Some(direct) = &self.inner.direct {
            let mut lines = direct.lock().expect("direct lock poisoned");
            if let Some(line) = lines.get_mut(&self.queue) {
                line.consumers -= 1;
                if line.consumers == 0 {
                    // Nobody here takes them now: their senders publish them to the file.
                    line.waiting.clear();
                }
            }
        }
        self.inner.ready.notify_waiters();
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> BackendResult<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let inner = self.inner.clone();
        let direct_ready = self.direct_ready.clone();
        let never = Notify::new();
        loop {
            let notified = inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Without a direct path, a Notify nobody wakes.
            let handed_over = direct_ready.as_deref().unwrap_or(&never).notified();
            tokio::pin!(handed_over);
            handed_over.as_mut().enable();

            let mut batch = self.take_direct(max);
            if let Some(ready) = direct_ready.as_deref()
                && !batch.is_empty()
                && batch.len() < self.last_direct / 4
            {
                self.linger(&mut batch, max, ready).await;
            }
            if !batch.is_empty() {
                self.last_direct = batch.len();
            }
            if batch.len() == max || !batch.is_empty() && self.file_known_empty() {
                // Direct deliveries, and a file read would find nothing: one query fewer on
                // the path of every batch of creates.
                return Ok(batch);
            }
            let changes = self.inner.file_changes.load(Ordering::SeqCst);
            let max = max - batch.len();
            let skip = self.inner.in_flight.lock().expect("in-flight lock poisoned").len();
            let rows = sqlx::query(
                "SELECT id, payload, attempts FROM queue_messages WHERE queue = ? AND visible_at <= ? \
                 ORDER BY id LIMIT ?",
            )
            .bind(&self.queue)
            .bind(crate::now_millis())
            .bind((max + skip) as i64)
            .fetch_all(&self.inner.pool)
            .await?;
            let direct = batch.len();
            {
                let mut in_flight = self.inner.in_flight.lock().expect("in-flight lock poisoned");
                for row in rows {
                    let id: i64 = row.try_get(0)?;
                    if batch.len() - direct == max || !in_flight.insert(id) {
                        continue;
                    }
                    self.held.insert(id);
                    batch.push(Delivery {
                        id: id as u64,
                        payload: Bytes::from(row.try_get::<Vec<u8>, _>(1)?),
                        attempts: row.try_get::<i64, _>(2)? as u32,
                    });
                }
            }
            self.file_read_empty = (batch.len() == direct).then(|| (changes, Instant::now()));
            if !batch.is_empty() {
                return Ok(batch);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(batch);
            }
            // Delayed retries become visible without a notification: poll for them too.
            let nap = (deadline - now).min(FILE_POLL);
            tokio::select! {
                _ = notified => {}
                _ = handed_over => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&mut self, ids: &[u64]) -> BackendResult<()> {
        let acked = ids.len();
        let ids: Vec<i64> = ids.iter().filter(|&&id| !self.settle_direct(id, true)).map(|&id| id as i64).collect();
        if !ids.is_empty() {
            send(&self.inner, |reply| Op::Ack { ids: ids.clone(), reply }).await?;
            self.release(&ids);
        }
        crate::metrics::record_settled(&self.queue, "ack", acked);
        Ok(())
    }

    /// A direct delivery is given back to its sender, which publishes it to the file (where
    /// it is retried like any other).
    async fn retry(&mut self, id: u64, delay: Duration) -> BackendResult<()> {
        if self.settle_direct(id, false) {
            return Ok(());
        }
        send(&self.inner, |reply| Op::Retry { id: id as i64, delay, reply }).await?;
        self.release(&[id as i64]);
        crate::metrics::record_settled(&self.queue, "retry", 1);
        Ok(())
    }

    /// A direct delivery is given back to its sender, which publishes it to the file (where
    /// the consumer parks it again if it fails again).
    async fn dead_letter(&mut self, id: u64, reason: &str) -> BackendResult<()> {
        if self.settle_direct(id, false) {
            return Ok(());
        }
        send(&self.inner, |reply| Op::DeadLetter { id: id as i64, reason: reason.to_owned(), reply }).await?;
        self.release(&[id as i64]);
        crate::metrics::record_settled(&self.queue, "dead_letter", 1);
        Ok(())
    }
}

/// The one writer: takes every op waiting, commits them in one transaction, then answers.
async fn writer(inner: std::sync::Weak<Inner>, pool: SqlitePool, mut rx: mpsc::Receiver<Op>) {
    let mut waiters: HashMap<i64, oneshot::Sender<()>> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < 2048 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        match apply(&pool, &ops).await {
            Ok(outcomes) => {
                let mut wake_consumers = false;
                for (op, outcome) in ops.into_iter().zip(outcomes) {
                    match (op, outcome) {
                        (Op::Publish { reply, .. }, Outcome::Published(id)) => {
                            wake_consumers = true;
                            let (done, processed) = oneshot::channel();
                            waiters.insert(id, done);
                            let _ = reply.send(Ok(Some(processed)));
                        }
                        (Op::Ack { ids, reply }, _) => {
                            for id in ids {
                                if let Some(done) = waiters.remove(&id) {
                                    let _ = done.send(());
                                }
                            }
                            let _ = reply.send(Ok(()));
                        }
                        (Op::DeadLetter { id, reply, .. }, _) => {
                            if let Some(done) = waiters.remove(&id) {
                                let _ = done.send(());
                            }
                            let _ = reply.send(Ok(()));
                        }
                        (Op::Retry { reply, .. }, _) => {
                            let _ = reply.send(Ok(()));
                        }
                        (Op::Replay { reply, .. }, Outcome::Replayed(count)) => {
                            wake_consumers |= count > 0;
                            let _ = reply.send(Ok(count));
                        }
                        (op, _) => answer_error(op, "unexpected queue outcome".into()),
                    }
                }
                // A publisher that stopped waiting leaves a closed waiter behind: drop those.
                if waiters.len() > 100_000 {
                    waiters.retain(|_, done| !done.is_closed());
                }
                if wake_consumers && let Some(inner) = inner.upgrade() {
                    inner.file_changed();
                    inner.ready.notify_waiters();
                }
            }
            Err(error) => {
                tracing::error!(%error, "embedded queue write failed");
                let message = error.to_string();
                for op in ops {
                    answer_error(op, message.clone());
                }
            }
        }
    }
}

enum Outcome {
    Published(i64),
    Done,
    Replayed(usize),
}

fn answer_error(op: Op, message: String) {
    let error = || BackendError::Unavailable(format!("embedded queue: {message}"));
    match op {
        Op::Publish { reply, .. } => drop(reply.send(Err(error()))),
        Op::Ack { reply, .. } | Op::Retry { reply, .. } | Op::DeadLetter { reply, .. } => {
            drop(reply.send(Err(error())))
        }
        Op::Replay { reply, .. } => drop(reply.send(Err(error()))),
    }
}

async fn apply(pool: &SqlitePool, ops: &[Op]) -> Result<Vec<Outcome>, sqlx::Error> {
    let now = crate::now_millis();
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let outcome = match op {
            Op::Publish { queue, payload, .. } => {
                let done = sqlx::query(
                    "INSERT INTO queue_messages (queue, payload, attempts, visible_at, enqueued_at) VALUES (?, ?, 0, ?, ?)",
                )
                .bind(queue)
                .bind(payload.as_ref())
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Outcome::Published(done.last_insert_rowid())
            }
            Op::Ack { ids, .. } => {
                for id in ids {
                    sqlx::query("DELETE FROM queue_messages WHERE id = ?").bind(id).execute(&mut *tx).await?;
                }
                Outcome::Done
            }
            Op::Retry { id, delay, .. } => {
                sqlx::query("UPDATE queue_messages SET attempts = attempts + 1, visible_at = ? WHERE id = ?")
                    .bind(now + delay.as_millis() as i64)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Outcome::Done
            }
            Op::DeadLetter { id, reason, .. } => {
                let copy = sqlx::query(
                    "INSERT INTO queue_dead_letters (queue, payload, attempts, reason, failed_at) \
                     SELECT queue, payload, attempts + 1, ?, ? FROM queue_messages WHERE id = ?",
                )
                .bind(reason)
                .bind(now);
                move_rows(&mut tx, copy, "DELETE FROM queue_messages WHERE id = ?", id).await?;
                Outcome::Done
            }
            Op::Replay { queue, .. } => {
                let copy = sqlx::query(
                    "INSERT INTO queue_messages (queue, payload, attempts, visible_at, enqueued_at) \
                     SELECT queue, payload, 0, ?, ? FROM queue_dead_letters WHERE queue = ? ORDER BY id",
                )
                .bind(now)
                .bind(now);
                let moved = move_rows(&mut tx, copy, "DELETE FROM queue_dead_letters WHERE queue = ?", queue).await?;
                Outcome::Replayed(moved as usize)
            }
        };
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Copies rows with `copy` (an `INSERT … SELECT` whose last parameter, still unbound, is
/// `key`), then deletes them with `delete` (whose one parameter is `key`): a move from one
/// table to another. How many rows moved.
async fn move_rows<'q, K>(
    conn: &mut SqliteConnection,
    copy: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    delete: &'q str,
    key: K,
) -> Result<u64, sqlx::Error>
where
    K: 'q + Copy + Send + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    let moved = copy.bind(key).execute(&mut *conn).await?.rows_affected();
    sqlx::query(delete).bind(key).execute(conn).await?;
    Ok(moved)
}
