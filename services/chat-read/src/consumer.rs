//! The consumer: persists the commands chat-write queued.
//!
//! One step takes a batch off the queue and writes it: chats first, then the messages whose
//! chat is persisted (in the store or earlier in the batch), each statement a multi-row
//! `INSERT IGNORE` committed on its own (on MySQL a batch's message statements run two at a
//! time, on their own connections). Only once every write of the batch is committed are its
//! messages handed to the indexer and the batch acked, so a crash at any point means the batch
//! is delivered again, and redelivery is harmless: inserts skip rows whose `(parent, number)`
//! exists and search documents have deterministic ids.
//!
//! A skipped row is never taken on trust: when a statement inserts fewer rows than it was
//! given, the rows already stored under those numbers are read back. One written by the same
//! command (its creation time and text) is a redelivery; any other is a conflict — two
//! acknowledged commands given one number — logged at error level with both sides, counted in
//! `chatmesh_consumer_conflicts_total` and parked in the dead-letter queue with that reason,
//! never dropped.
//!
//! Indexing runs beside the loop, in order, on its own task: the next batch is written while
//! the last one is indexed, each message with the text the store holds when it is indexed (so
//! a redelivered create never overwrites a later edit). A batch whose messages were all
//! inserted by it, on an index this process alone writes, is indexed with the text it inserted
//! and without looking for an older copy: an edit made since is queued behind it and indexed
//! from the store after it. A batch of new messages need not be
//! indexed before its ack when the index records how far it is durable (tantivy: a consumer
//! starting after a crash indexes every stored message above that from the store). Every other
//! batch waits until its index update is durable before it is acked: one with an edit, one
//! with rows that already existed (their ids may lie below the durable mark), and every batch
//! when the index keeps no such mark (Elasticsearch).
//!
//! A step that fails for a reason other than its data (the store is down) gives its deliveries
//! back to the queue, which delivers them again after a pause.
//!
//! A message whose chat is not persisted yet waits (retried with backoff); a command that
//! cannot be decoded, or keeps failing for its data, goes to the dead-letter queue for ops to
//! inspect and replay. A store that is down, read-only, full, locked or shutting down is not
//! the command's fault ([`ErrorClass::Store`]): the batch is held and retried without limit and
//! without counting attempts, and [`StoreStatus`] makes `/readyz` say so meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chat::commands::Command;
use chat::schema::search_scope;
use shared::backends::queue::{Delivery, Subscription};
use shared::backends::search::SearchDoc;
use shared::backends::sql::{Database, Dialect, ErrorClass, placeholders};
use shared::backends::{BackendError, BackendResult};
use shared::shutdown::Shutdown;
use shared::watermark::Watermark;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::{ChatRead, store};

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Most commands taken off the queue in one step (each INSERT statement commits on its own).
    pub batch_size: usize,
    /// Attempts before a command that keeps failing goes to the dead-letter queue.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, capped at 30 s.
    pub retry_base: Duration,
}

impl Default for ConsumerConfig {
    /// A batch of [`CONCURRENT_STATEMENTS`] full INSERT statements, written at once on MySQL:
    /// one statement at a time leaves MySQL waiting on each commit, so a backlog drains faster
    /// when a batch fills every statement in flight (`docs/benchmarks.md` has the figures).
    fn default() -> Self {
        Self {
            batch_size: STATEMENT_ROWS * CONCURRENT_STATEMENTS,
            max_attempts: 8,
            retry_base: Duration::from_millis(250),
        }
    }
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    pub persisted: usize,
    pub retried: usize,
    pub dead_lettered: usize,
}

/// Whether the consumer's last step failed, and why: `/readyz` reports it, so a consumer held
/// up by its store (retrying without limit) is visible.
#[derive(Debug, Default)]
pub struct StoreStatus(std::sync::Mutex<Option<String>>);

impl StoreStatus {
    fn failing(&self, error: &BackendError) {
        *self.0.lock().expect("store status poisoned") = Some(error.to_string());
    }

    fn working(&self) {
        let mut status = self.0.lock().expect("store status poisoned");
        if status.take().is_some() {
            tracing::info!("consumer writing to the store again");
        }
    }

    /// `Err` with the last failure while the consumer cannot write.
    pub fn check(&self) -> Result<(), String> {
        match &*self.0.lock().expect("store status poisoned") {
            Some(error) => Err(format!("consumer cannot write: {error}")),
            None => Ok(()),
        }
    }
}

pub struct Consumer {
    state: ChatRead,
    queue: QueueSide,
    store: StoreSide,
}

/// The consumer's side of the store beyond its pool.
#[derive(Default)]
struct StoreSide {
    /// Chat ids by (application id, chat number): they never change once persisted.
    chat_ids: ChatIds,
    /// A SQLite connection of the consumer's own, for the batch transactions of new messages
    /// ([`Consumer::with_own_connection`]).
    own: Option<crate::direct::OwnConnection>,
}

/// Rows of one INSERT statement at most, and their text's bytes.
const STATEMENT_ROWS: usize = 1_000;
const STATEMENT_BYTES: usize = 4 * 1024 * 1024;
/// A batch's message statements in flight at once on MySQL.
const CONCURRENT_STATEMENTS: usize = 2;
/// Chat ids remembered at most (the cache starts over when full).
const CACHED_CHATS: usize = 100_000;
/// Batches waiting for the indexer before the loop waits for it.
const INDEX_QUEUE: usize = 4;
/// Longest wait for a batch's index update before the step fails (and its deliveries go back).
const INDEX_WAIT: Duration = Duration::from_secs(30);
/// Longest wait at shutdown for the indexer to finish what it was handed.
const INDEX_DRAIN: Duration = Duration::from_secs(10);

struct Decoded {
    delivery: Delivery,
    command: Command,
}

impl Consumer {
    /// Subscribes to the command queue, after indexing the messages a previous run persisted
    /// but had not made durable in the search index yet.
    pub async fn new(state: ChatRead, config: ConsumerConfig) -> BackendResult<Self> {
        let watermark = if state.search.writable() { state.search.indexed_watermark().await? } else { None };
        let index_catches_up = watermark.is_some();
        if let Some(watermark) = watermark {
            let caught_up = crate::index_from(&state, watermark).await?;
            if caught_up > 0 {
                tracing::info!(caught_up, watermark, "messages persisted after the index's last commit indexed");
            }
        }
        let subscription = state.queue.subscribe(&state.keys.command_queue()).await?;
        let indexer = Indexer::start(state.clone());
        let queue = QueueSide { subscription, config, indexer, index_catches_up };
        Ok(Self { state, queue, store: StoreSide::default() })
    }

    /// On a SQLite store, runs each batch transaction of new messages on a connection of the
    /// consumer's own, on the thread that runs the consumer, rather than on a pooled
    /// connection's thread: its statements then wait on no other thread (see
    /// [`crate::direct`]). The transaction blocks the thread it runs on, for up to the store's
    /// busy timeout while another connection writes: for a consumer with a thread of its own
    /// (the standalone server's), or one that runs while nothing else on its thread writes
    /// (the start-up drain, tests that step it).
    pub fn with_own_connection(mut self) -> BackendResult<Self> {
        self.store.own = crate::direct::OwnConnection::open(&self.state.db)?;
        Ok(self)
    }

    /// Runs batches until `shutdown`, finishing those in hand.
    ///
    /// While the queue holds a backlog (a full batch came off it), two batches are in hand at
    /// once: while one is written to the store, the one written before it is handed to the
    /// indexer, its parents touched and its deliveries acked, and the next one is taken off
    /// the queue. Writes stay in order (a batch is written only once the one before it is
    /// committed, so a message finds the chat created just before it) and so do index jobs and
    /// acks; each batch is still acked only after its own commit. When the consumer keeps up
    /// (a batch came off less than full), batches run one after the other, so each gathers
    /// what arrived meanwhile instead of splitting it into more, smaller statements.
    pub async fn run(mut self, shutdown: Shutdown) {
        tracing::info!(queue = %self.state.keys.command_queue(), "chat consumer started");
        let mut failures = 0u32;
        // Taken and decoded, to be written next; written, to be settled next.
        let mut taken: Option<Taken> = None;
        let mut written: Option<Written> = None;
        loop {
            let stopping = shutdown.is_triggered();
            if stopping && taken.is_none() && written.is_none() {
                break;
            }
            let writing_now = taken.is_some();
            let backlog = taken.as_ref().is_some_and(|batch| batch.size() >= self.queue.config.batch_size);
            let Self { state, queue, store } = &mut self;
            let writing = async {
                match taken.take() {
                    Some(batch) => write(state, store, batch).await.map(Some),
                    None => Ok(None),
                }
            };
            let settle_and_take = async {
                if let Some(batch) = written.take() {
                    queue.settle(state, batch).await?;
                }
                let wait = match (writing_now, backlog) {
                    _ if stopping => return Ok(None),
                    // Nothing else in hand: wait for the next delivery.
                    (false, _) => IDLE_WAIT,
                    // Take only what has arrived already, beside the write.
                    (true, true) => Duration::ZERO,
                    // Keeping up: take the next batch once this one is settled.
                    (true, false) => return Ok(None),
                };
                queue.take(wait).await.map(|batch| batch.filter(|b| !b.decoded.is_empty()))
            };
            let (now_written, now_taken) = tokio::join!(writing, settle_and_take);
            match now_written.and_then(|written| now_taken.map(|taken| (written, taken))) {
                Ok((now_written, now_taken)) => {
                    failures = 0;
                    // Working again once a batch is written, or once there is nothing to write:
                    // a batch only taken after a failure has not reached the store yet.
                    if now_written.is_some() || now_taken.is_none() {
                        self.state.consumer_store.working();
                    }
                    written = now_written;
                    taken = now_taken;
                }
                Err(error) => {
                    // Every batch in hand goes back to the queue with the subscription.
                    (taken, written) = (None, None);
                    self.state.consumer_store.failing(&error);
                    failures += 1;
                    let pause = backoff(Duration::from_millis(200), failures);
                    tracing::warn!(%error, ?pause, "consumer step failed, pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.clone().wait() => {}
                    }
                    self.resubscribe().await;
                }
            }
        }
        self.queue.indexer.stop().await;
        if let Err(error) = self.state.search.flush().await {
            tracing::warn!(%error, "search index flush at shutdown failed; it catches up at the next start");
        }
        tracing::info!("chat consumer stopped");
    }

    /// Gives every unsettled delivery back to the queue (a new subscription replaces this
    /// one), so a batch held by a failed step is delivered again instead of waiting forever.
    async fn resubscribe(&mut self) {
        match self.state.queue.subscribe(&self.state.keys.command_queue()).await {
            Ok(subscription) => self.queue.subscription = subscription,
            Err(error) => tracing::warn!(%error, "cannot subscribe again yet"),
        }
    }

    /// Processes every command queued now, then returns (startup drain, tests).
    pub async fn drain(&mut self) -> BackendResult<StepReport> {
        let mut total = StepReport::default();
        loop {
            let report = self.step(Duration::from_millis(50)).await?;
            if report == StepReport::default() {
                // Everything handed to the indexer is staged (searchable) before returning.
                self.queue.indexer.barrier().await?;
                return Ok(total);
            }
            total.persisted += report.persisted;
            total.retried += report.retried;
            total.dead_lettered += report.dead_lettered;
        }
    }

    /// Takes one batch (waiting up to `wait` for it) and settles every delivery in it.
    pub async fn step(&mut self, wait: Duration) -> BackendResult<StepReport> {
        let Some(batch) = self.queue.take(wait).await? else { return Ok(StepReport::default()) };
        if batch.decoded.is_empty() {
            return Ok(batch.report);
        }
        let batch = write(&self.state, &mut self.store, batch).await?;
        self.queue.settle(&self.state, batch).await
    }
}

/// Longest wait for a delivery when no batch is in hand (how often shutdown is looked at).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// A batch taken off the queue: its decoded commands, and what was dead-lettered undecodable.
struct Taken {
    report: StepReport,
    decoded: Vec<Decoded>,
}

impl Taken {
    /// Deliveries taken, decoded or dead-lettered (a batch of `batch_size` means more were
    /// waiting).
    fn size(&self) -> usize {
        self.decoded.len() + self.report.dead_lettered
    }
}

/// A batch written to the store, to be indexed, touched and acked.
struct Written {
    report: StepReport,
    decoded: Vec<Decoded>,
    outcome: Outcome,
    /// How long the write took.
    persisted: Duration,
}

/// The consumer's side of the queue: taking batches and settling them (the indexer and the
/// touched sets come before the ack).
struct QueueSide {
    subscription: Box<dyn Subscription>,
    config: ConsumerConfig,
    indexer: Indexer,
    /// Whether a batch of new messages may be acked before it is indexed (the index catches up
    /// from the store after a crash); otherwise every batch waits for its index update.
    index_catches_up: bool,
}

/// Writes a batch to the store; a batch the store rejects for its data is written one command
/// at a time, so one bad command does not hold up the rest.
async fn write(state: &ChatRead, store: &mut StoreSide, batch: Taken) -> BackendResult<Written> {
    let Taken { report, decoded } = batch;
    let started = std::time::Instant::now();
    let outcome = match persist(state, store, &decoded).await {
        Ok(outcome) => outcome,
        Err(error) if is_data_error(&error) && decoded.len() > 1 => {
            tracing::warn!(%error, "batch rejected by the store, persisting one by one");
            let mut outcome = Outcome::default();
            for one in decoded.chunks(1) {
                match persist(state, store, one).await {
                    Ok(single) => outcome.merge(single),
                    Err(error) if is_data_error(&error) => outcome.failed.push((one[0].delivery.id, error.to_string())),
                    Err(error) => return Err(error),
                }
            }
            outcome
        }
        Err(error) if is_data_error(&error) => {
            let mut outcome = Outcome::default();
            outcome.failed.push((decoded[0].delivery.id, error.to_string()));
            outcome
        }
        Err(error) => return Err(error),
    };
    crate::changes::announce(state, &outcome.changed);
    Ok(Written { report, decoded, outcome, persisted: started.elapsed() })
}

impl QueueSide {
    /// The next batch (waiting up to `wait` for its first delivery), decoded; `None` when
    /// nothing came. An undecodable command goes to the dead-letter queue at once.
    async fn take(&mut self, wait: Duration) -> BackendResult<Option<Taken>> {
        let batch = self.subscription.next_batch(self.config.batch_size, wait).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        let mut report = StepReport::default();
        let mut decoded = Vec::with_capacity(batch.len());
        for delivery in batch {
            match Command::decode(&delivery.payload) {
                Ok(command) => decoded.push(Decoded { delivery, command }),
                Err(error) => {
                    tracing::error!(%error, delivery = delivery.id, "undecodable command, dead-lettering");
                    self.subscription.dead_letter(delivery.id, &format!("undecodable command: {error}")).await?;
                    report.dead_lettered += 1;
                }
            }
        }
        Ok(Some(Taken { report, decoded }))
    }

    /// Hands a written batch to the indexer, touches its parents, acks what it persisted and
    /// retries (or dead-letters) the rest.
    async fn settle(&mut self, state: &ChatRead, batch: Written) -> BackendResult<StepReport> {
        let Written { mut report, decoded, mut outcome, persisted } = batch;
        let started = std::time::Instant::now();
        let durable = outcome.edits || outcome.existing || !self.index_catches_up;
        // Only new messages, and this process is the index's one writer: the text just
        // inserted is what the store holds, so it need not be read back (an edit made since
        // comes behind this job, as its own index request, which reads the store).
        let messages = std::mem::take(&mut outcome.indexed);
        let job = match (durable, outcome.inserted_watermark) {
            (false, Some(watermark)) if messages.iter().all(|m| m.inserted_text.is_some()) => IndexJob::Inserted {
                messages: messages.into_iter().map(|m| (m.key, m.inserted_text.unwrap_or_default())).collect(),
                watermark,
            },
            _ => IndexJob::FromStore(messages.into_iter().map(|m| m.key).collect()),
        };
        self.indexer.submit(job, durable).await?;
        let indexed = started.elapsed();
        let touched_apps: BTreeSet<String> = outcome.touched_applications.iter().map(i64::to_string).collect();
        let touched_chats: BTreeSet<String> = outcome.touched_chats.iter().map(i64::to_string).collect();
        if !touched_apps.is_empty() {
            let members: Vec<String> = touched_apps.into_iter().collect();
            state.counters.touch(&state.keys.touched_applications(), &members).await?;
        }
        if !touched_chats.is_empty() {
            let members: Vec<String> = touched_chats.into_iter().collect();
            state.counters.touch(&state.keys.touched_chats(), &members).await?;
        }
        // Ack only now: everything above is committed (store, index, touched sets).
        let touched = started.elapsed();
        self.subscription.ack(&outcome.done).await?;
        report.persisted += outcome.done.len();
        tracing::debug!(
            batch = decoded.len(),
            persist_ms = persisted.as_millis() as u64,
            index_ms = indexed.as_millis() as u64,
            touch_ms = (touched - indexed).as_millis() as u64,
            ack_ms = (started.elapsed() - touched).as_millis() as u64,
            "batch settled"
        );

        for (id, reason) in outcome.conflicts {
            self.subscription.dead_letter(id, &reason).await?;
            report.dead_lettered += 1;
        }
        let attempts: HashMap<u64, u32> = decoded.iter().map(|d| (d.delivery.id, d.delivery.attempts)).collect();
        let waiting = outcome.waiting.into_iter().map(|id| (id, "chat not persisted yet".to_owned()));
        for (id, reason) in waiting.chain(outcome.failed) {
            let attempt = attempts.get(&id).copied().unwrap_or(0) + 1;
            if attempt >= self.config.max_attempts {
                tracing::error!(delivery = id, attempt, %reason, "command keeps failing, dead-lettering");
                self.subscription.dead_letter(id, &reason).await?;
                report.dead_lettered += 1;
            } else {
                self.subscription.retry(id, backoff(self.config.retry_base, attempt)).await?;
                report.retried += 1;
            }
        }
        Ok(report)
    }
}

/// (application id, chat number, chat id, message number) of a message.
type MessageKey = (i64, i64, i64, i64);

/// What one batch leaves to index.
enum IndexJob {
    /// Messages indexed with the text the store holds when they are indexed.
    FromStore(Vec<MessageKey>),
    /// Messages this batch inserted, with the text they were inserted with, staged as new
    /// without reading the store; `watermark` is a store id no higher than the highest of them.
    Inserted { messages: Vec<(MessageKey, String)>, watermark: i64 },
}

impl Default for IndexJob {
    fn default() -> Self {
        Self::FromStore(Vec::new())
    }
}

impl IndexJob {
    fn is_empty(&self) -> bool {
        match self {
            Self::FromStore(keys) => keys.is_empty(),
            Self::Inserted { messages, .. } => messages.is_empty(),
        }
    }
}

/// How far this process's indexer is: jobs handed over and jobs staged, counted in order. A
/// create is acknowledged after its job is handed over, so a search in the same process that
/// waits for [`IndexProgress::caught_up`] and then for the index's
/// [`SearchIndex::visible`](shared::backends::search::SearchIndex::visible) finds it.
/// Without an indexer in the process nothing is handed over, so there is nothing to wait for.
#[derive(Debug, Default)]
pub struct IndexProgress {
    handed: std::sync::atomic::AtomicU64,
    staged: Watermark,
}

impl IndexProgress {
    /// The sequence number of a job about to be handed over.
    fn hand_over(&self) -> u64 {
        self.handed.fetch_add(1, Relaxed) + 1
    }

    fn staged(&self, job: u64) {
        self.staged.raise(job);
    }

    /// Returns once every job handed over so far is staged (at most [`CATCH_UP_WAIT`] later).
    pub async fn caught_up(&self) {
        let target = self.handed.load(Relaxed);
        if !self.staged.reached(target, CATCH_UP_WAIT).await {
            tracing::debug!(target, "the indexer is behind; searching what is staged");
        }
    }
}

/// Longest wait in [`IndexProgress::caught_up`].
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// A job, its sequence number, and where to say that it is durable (when asked).
type Handed = (IndexJob, u64, Option<oneshot::Sender<()>>);

/// The indexing task: stages each batch's messages in order, retrying one that fails until it
/// passes (the next batches wait behind it, so the index's durable watermark never passes a
/// message it does not hold).
struct Indexer {
    jobs: Option<mpsc::Sender<Handed>>,
    task: Option<tokio::task::JoinHandle<()>>,
    progress: Arc<IndexProgress>,
}

impl Indexer {
    fn start(state: ChatRead) -> Self {
        let (jobs, mut queue) = mpsc::channel::<Handed>(INDEX_QUEUE);
        let progress = state.index_progress.clone();
        let task = tokio::spawn(async move {
            while let Some((job, sequence, durable)) = queue.recv().await {
                let mut failures = 0u32;
                loop {
                    let outcome = async {
                        stage(&state, &job).await?;
                        state.index_progress.staged(sequence);
                        if durable.is_some() { state.search.flush().await } else { Ok(()) }
                    }
                    .await;
                    match outcome {
                        Ok(()) => break,
                        Err(error) => {
                            failures += 1;
                            let pause = backoff(Duration::from_millis(100), failures);
                            tracing::error!(%error, ?pause, "indexing a persisted batch failed, retrying");
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
                if let Some(durable) = durable {
                    let _ = durable.send(());
                }
            }
        });
        Self { jobs: Some(jobs), task: Some(task), progress }
    }

    /// Hands `job` over; with `durable`, returns once its index update is committed (an error
    /// after [`INDEX_WAIT`]).
    async fn submit(&self, job: IndexJob, durable: bool) -> BackendResult<()> {
        let stopped = || BackendError::Other("the indexer stopped".into());
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        if !durable && job.is_empty() {
            return Ok(());
        }
        let sequence = self.progress.hand_over();
        if durable {
            let (done, committed) = oneshot::channel();
            let wait = async {
                jobs.send((job, sequence, Some(done))).await.map_err(|_| stopped())?;
                committed.await.map_err(|_| stopped())
            };
            tokio::time::timeout(INDEX_WAIT, wait)
                .await
                .unwrap_or_else(|_| Err(BackendError::Search("the index update did not become durable in time".into())))
        } else {
            jobs.send((job, sequence, None)).await.map_err(|_| stopped())
        }
    }

    /// Returns once every job handed over is staged and committed.
    async fn barrier(&self) -> BackendResult<()> {
        self.submit(IndexJob::default(), true).await
    }

    /// Finishes the jobs handed over (for at most [`INDEX_DRAIN`]), then ends the task. What
    /// is cut off is persisted and caught up from the store at the next start.
    async fn stop(&mut self) {
        self.jobs.take();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(INDEX_DRAIN, &mut task).await.is_err()
        {
            tracing::warn!("indexer still busy at shutdown; the rest is indexed from the store at the next start");
            task.abort();
        }
    }
}

/// Stages a batch's messages with the text the store holds now (or, for messages just
/// inserted, the text they were inserted with).
async fn stage(state: &ChatRead, job: &IndexJob) -> BackendResult<()> {
    let keys = match job {
        IndexJob::FromStore(keys) => keys,
        IndexJob::Inserted { messages, watermark } => return stage_inserted(state, messages, *watermark).await,
    };
    let mut by_chat: HashMap<(i64, i64, i64), Vec<i64>> = HashMap::new();
    for &(application_id, chat_number, chat_id, number) in keys {
        by_chat.entry((application_id, chat_number, chat_id)).or_default().push(number);
    }
    let mut docs = Vec::with_capacity(keys.len());
    let mut watermark = 0;
    for ((application_id, chat_number, chat_id), numbers) in by_chat {
        let scope = search_scope(application_id, chat_number);
        for (id, number, content) in store::message_texts(&state.db, chat_id, &numbers).await? {
            watermark = watermark.max(id);
            docs.push(SearchDoc { scope: scope.clone(), number, content });
        }
    }
    state.search.stage(docs, watermark).await
}

/// Stages messages just inserted, with the text they were inserted with, as new documents.
async fn stage_inserted(state: &ChatRead, messages: &[(MessageKey, String)], watermark: i64) -> BackendResult<()> {
    let mut scope: Option<((i64, i64), String)> = None;
    let mut docs = Vec::with_capacity(messages.len());
    for &((application_id, chat_number, _, number), ref content) in messages {
        let key = (application_id, chat_number);
        let scope = match &mut scope {
            Some((last, scope)) if *last == key => scope.clone(),
            _ => scope.insert((key, search_scope(application_id, chat_number))).1.clone(),
        };
        docs.push(SearchDoc { scope, number, content: content.clone() });
    }
    state.search.stage_new(docs, watermark).await
}

/// Chat ids already resolved.
#[derive(Default)]
struct ChatIds(HashMap<(i64, i64), i64>);

impl ChatIds {
    /// Starts over when `more` would pass [`CACHED_CHATS`] (before a lookup, so a batch never
    /// loses what it looked up).
    fn make_room(&mut self, more: usize) {
        if self.0.len() + more > CACHED_CHATS {
            self.0.clear();
        }
    }

    fn remember(&mut self, key: (i64, i64), id: i64) {
        self.0.insert(key, id);
    }
}

/// Consecutive runs of `items` of at most [`STATEMENT_ROWS`] items and about
/// [`STATEMENT_BYTES`] of text (`text` gives an item's).
fn statements<T>(items: &[T], text: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, item) in items.iter().enumerate() {
        let size = text(item);
        if index > start && (index - start == STATEMENT_ROWS || bytes + size > STATEMENT_BYTES) {
            runs.push(&items[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(10)).min(Duration::from_secs(30))
}

/// A store error caused by the data (a constraint, a bad value) rather than the store (down,
/// read-only, full, locked, shutting down): retrying the same command will not help, so it
/// counts against its attempts. Decided by the server's error number or code.
fn is_data_error(error: &BackendError) -> bool {
    match error {
        BackendError::Sql(error) => shared::backends::sql::error_class(error) == ErrorClass::Data,
        BackendError::Sqlite(error) => shared::backends::sql::sqlite::direct_error_class(error) == ErrorClass::Data,
        _ => false,
    }
}

/// A persisted message to index.
struct ToIndex {
    key: MessageKey,
    /// The text it was inserted with, for a message this batch inserted (an edit: `None`).
    inserted_text: Option<String>,
}

#[derive(Default)]
struct Outcome {
    done: Vec<u64>,
    waiting: Vec<u64>,
    failed: Vec<(u64, String)>,
    /// Commands whose (parent, number) the store holds with other content, with the reason.
    conflicts: Vec<(u64, String)>,
    /// Persisted messages to index.
    indexed: Vec<ToIndex>,
    /// Some message of the batch was in the store already (a redelivery).
    existing: bool,
    /// The batch re-indexes an edited message (its index update must be durable before the ack).
    edits: bool,
    /// The highest id the store reported for the batch's message inserts (MySQL: a statement's
    /// first row, SQLite: its last): the id of a message of this batch, so every message at or
    /// below it is indexed once this batch is. `None` when no insert reported one.
    inserted_watermark: Option<i64>,
    touched_applications: Vec<i64>,
    touched_chats: Vec<i64>,
    /// (chat id, last change number) of the chats the batch's inserts logged changes in.
    changed: Vec<(i64, i64)>,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.done.extend(other.done);
        self.waiting.extend(other.waiting);
        self.failed.extend(other.failed);
        self.conflicts.extend(other.conflicts);
        self.indexed.extend(other.indexed);
        self.existing |= other.existing;
        self.edits |= other.edits;
        self.inserted_watermark = self.inserted_watermark.max(other.inserted_watermark);
        self.touched_applications.extend(other.touched_applications);
        self.touched_chats.extend(other.touched_chats);
        self.changed.extend(other.changed);
    }
}

/// Writes a batch: each statement commits on its own (a batch cut short by a crash is
/// delivered again, and its rows already written are skipped).
async fn persist(state: &ChatRead, store: &mut StoreSide, batch: &[Decoded]) -> BackendResult<Outcome> {
    let db = &state.db;
    let StoreSide { chat_ids, own } = store;
    let mut outcome = Outcome::default();

    let chats: Vec<&Decoded> = batch.iter().filter(|d| matches!(d.command, Command::CreateChat { .. })).collect();
    let chat_name = |d: &&Decoded| match &d.command {
        Command::CreateChat { chat_name, .. } => chat_name.len(),
        _ => 0,
    };
    for chunk in statements(&chats, chat_name) {
        let sql = format!(
            "{} INTO chats (application_id, number, name, messages_count, created_at, updated_at) VALUES {}",
            db.insert_ignore(),
            vec!["(?, ?, ?, 0, ?, ?)"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(&sql);
        for decoded in chunk {
            if let Command::CreateChat { application_id, chat_number, chat_name, created_at } = &decoded.command {
                query = query
                    .bind(*application_id)
                    .bind(*chat_number)
                    .bind(chat_name.as_str())
                    .bind(*created_at)
                    .bind(*created_at);
            }
        }
        let inserted = query.execute(db.pool()).await?;
        let skipped = inserted.rows_affected() < chunk.len() as u64;
        let conflicting = if skipped { chat_conflicts(db, chunk).await? } else { HashMap::new() };
        for decoded in chunk {
            if let Command::CreateChat { application_id, .. } = &decoded.command {
                match conflicting.get(&decoded.delivery.id) {
                    Some(reason) => outcome.conflicts.push((decoded.delivery.id, reason.clone())),
                    None => {
                        outcome.touched_applications.push(*application_id);
                        outcome.done.push(decoded.delivery.id);
                    }
                }
            }
        }
    }

    let messages: Vec<&Decoded> = batch
        .iter()
        .filter(|d| {
            matches!(
                d.command,
                Command::CreateMessage { .. } | Command::IndexMessage { .. } | Command::DeleteMessage { .. }
            )
        })
        .collect();
    if messages.is_empty() {
        return Ok(outcome);
    }
    let unknown: BTreeSet<(i64, i64)> = messages
        .iter()
        .filter_map(|d| match &d.command {
            Command::CreateMessage { application_id, chat_number, .. }
            | Command::IndexMessage { application_id, chat_number, .. }
            | Command::DeleteMessage { application_id, chat_number, .. } => Some((*application_id, *chat_number)),
            Command::CreateChat { .. } => None,
        })
        .filter(|key| !chat_ids.0.contains_key(key))
        .collect();
    let unknown: Vec<(i64, i64)> = unknown.into_iter().collect();
    chat_ids.make_room(unknown.len());
    for chunk in unknown.chunks(200) {
        let sql = format!(
            "SELECT id, application_id, number FROM chats WHERE {}",
            vec!["(application_id = ? AND number = ?)"; chunk.len()].join(" OR ")
        );
        let mut query = sqlx::query(&sql);
        for (application_id, chat_number) in chunk {
            query = query.bind(*application_id).bind(*chat_number);
        }
        for row in query.fetch_all(db.pool()).await? {
            chat_ids.remember((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
        }
    }
    let mut ready: Vec<ReadyMessage<'_>> = Vec::with_capacity(messages.len());
    for decoded in &messages {
        if let Command::IndexMessage { application_id, chat_number, message_number } = &decoded.command {
            match chat_ids.0.get(&(*application_id, *chat_number)) {
                Some(&chat_id) => {
                    outcome.done.push(decoded.delivery.id);
                    outcome.edits = true;
                    let key = (*application_id, *chat_number, chat_id, *message_number);
                    outcome.indexed.push(ToIndex { key, inserted_text: None });
                }
                None => outcome.failed.push((decoded.delivery.id, "index request for a chat not in the store".into())),
            }
        }
    }
    for decoded in &messages {
        if let Command::CreateMessage { application_id, chat_number, message_number, content, created_at } =
            &decoded.command
        {
            match chat_ids.0.get(&(*application_id, *chat_number)) {
                Some(&chat_id) => ready.push((
                    decoded.delivery.id,
                    chat_id,
                    *message_number,
                    content.as_str(),
                    *created_at,
                    *application_id,
                    *chat_number,
                )),
                None => outcome.waiting.push(decoded.delivery.id),
            }
        }
    }
    let runs = statements(&ready, |row| row.3.len());
    // On MySQL up to [`CONCURRENT_STATEMENTS`] of a batch's statements run at once, each on its
    // own pooled connection, so the store works on one while the next is sent; SQLite has one
    // writer, so one by one. Every statement is waited for, so none is cut off mid-flight by
    // another's error.
    // Statements on one chat take turns on its row (each takes the chat's change numbers
    // first), so only statements on disjoint chats run at once.
    let in_flight = match db.dialect() {
        Dialect::MySql if chats_disjoint(&runs) => CONCURRENT_STATEMENTS,
        _ => 1,
    };
    let results = match own {
        Some(own) => runs.iter().map(|chunk| own.insert_messages(chunk)).collect(),
        None => {
            use futures::{FutureExt, StreamExt};
            // Boxed, so the stream's future is `Send` for any lifetime the spawn asks about.
            let inserts: Vec<_> = runs.iter().map(|chunk| insert_messages(db, chunk).boxed()).collect();
            futures::stream::iter(inserts).buffered(in_flight).collect::<Vec<_>>().await
        }
    };
    for (chunk, inserted) in runs.into_iter().zip(results) {
        let Inserted { rows: inserted, id, changed } = inserted?;
        outcome.changed.extend(changed);
        let skipped = inserted < chunk.len() as u64;
        outcome.existing |= skipped;
        outcome.inserted_watermark = outcome.inserted_watermark.max(id);
        let conflicting = if skipped { message_conflicts(db, chunk).await? } else { HashMap::new() };
        for &(delivery, chat_id, number, content, _, application_id, chat_number) in chunk {
            if let Some(reason) = conflicting.get(&delivery) {
                outcome.conflicts.push((delivery, reason.clone()));
                continue;
            }
            outcome.done.push(delivery);
            outcome.touched_chats.push(chat_id);
            let key = (application_id, chat_number, chat_id, number);
            outcome.indexed.push(ToIndex { key, inserted_text: Some(content.to_owned()) });
        }
    }
    // Deletes last: a delete queued behind its message's create finds it stored.
    for decoded in &messages {
        if let Command::DeleteMessage { application_id, chat_number, message_number, deleted_at } = &decoded.command {
            let Some(&chat_id) = chat_ids.0.get(&(*application_id, *chat_number)) else {
                outcome.waiting.push(decoded.delivery.id);
                continue;
            };
            match store::message_deleted(db, chat_id, *message_number).await? {
                // Its create is not stored yet: the delete waits for it.
                None => outcome.waiting.push(decoded.delivery.id),
                // Already applied (a redelivery).
                Some(true) => outcome.done.push(decoded.delivery.id),
                Some(false) => {
                    store::delete_message(state, chat_id, *message_number, *deleted_at).await?;
                    outcome.done.push(decoded.delivery.id);
                    outcome.touched_chats.push(chat_id);
                    outcome.edits = true;
                    let key = (*application_id, *chat_number, chat_id, *message_number);
                    outcome.indexed.push(ToIndex { key, inserted_text: None });
                }
            }
        }
    }
    Ok(outcome)
}

/// The messages of `chunk` whose (chat, number) the store holds with a row another command
/// wrote, by delivery, with the reason they are parked for.
async fn message_conflicts(db: &Database, chunk: &[ReadyMessage<'_>]) -> BackendResult<HashMap<u64, String>> {
    let mut by_chat: HashMap<i64, Vec<i64>> = HashMap::new();
    for &(_, chat_id, number, ..) in chunk {
        by_chat.entry(chat_id).or_default().push(number);
    }
    let mut stored = HashMap::new();
    for (chat_id, numbers) in by_chat {
        for (number, row) in store::stored_messages(db, chat_id, &numbers).await? {
            stored.insert((chat_id, number), row);
        }
    }
    let mut conflicts = HashMap::new();
    for &(delivery, chat_id, number, content, created_at, application_id, chat_number) in chunk {
        let Some(row) = stored.get(&(chat_id, number)) else { continue };
        if let Some(reason) = conflict(row, content, created_at, application_id, chat_number, Some(number)) {
            conflicts.insert(delivery, reason);
        }
    }
    Ok(conflicts)
}

/// The chat creates of `chunk` whose (application, number) the store holds with a row another
/// command wrote, by delivery, with the reason they are parked for.
async fn chat_conflicts(db: &Database, chunk: &[&Decoded]) -> BackendResult<HashMap<u64, String>> {
    let mut by_application: HashMap<i64, Vec<i64>> = HashMap::new();
    for decoded in chunk {
        if let Command::CreateChat { application_id, chat_number, .. } = &decoded.command {
            by_application.entry(*application_id).or_default().push(*chat_number);
        }
    }
    let mut stored = HashMap::new();
    for (application_id, numbers) in by_application {
        for (number, row) in store::stored_chats(db, application_id, &numbers).await? {
            stored.insert((application_id, number), row);
        }
    }
    let mut conflicts = HashMap::new();
    for decoded in chunk {
        let Command::CreateChat { application_id, chat_number, chat_name, created_at } = &decoded.command else {
            continue;
        };
        let Some(row) = stored.get(&(*application_id, *chat_number)) else { continue };
        if let Some(reason) = conflict(row, chat_name, *created_at, *application_id, *chat_number, None) {
            conflicts.insert(decoded.delivery.id, reason);
        }
    }
    Ok(conflicts)
}

/// Why a create of a chat (`message_number` none) or a message is parked when the store holds
/// its number with `row`; `None` when `row` is the command's own (a redelivery). A conflict is
/// logged at error level with both sides and counted.
fn conflict(
    row: &store::StoredRow,
    text: &str,
    created_at: i64,
    application_id: i64,
    chat_number: i64,
    message_number: Option<i64>,
) -> Option<String> {
    if row.written_by(text, created_at) {
        return None;
    }
    let (kind, stored) = match message_number {
        Some(number) => ("message", format!("message {number} of chat {chat_number} is stored with other content")),
        None => ("chat", format!("chat {chat_number} is stored with another name")),
    };
    tracing::error!(
        application_id,
        chat_number,
        message_number,
        stored_text = %clip(&row.text),
        stored_created_at = row.created_at,
        command_text = %clip(text),
        command_created_at = created_at,
        "conflict: another {kind} is stored under this number; parking the command in the dead-letter queue"
    );
    shared::metrics::record_consumer_conflict(kind);
    Some(format!("conflict: {stored} (stored at {}, this command at {created_at})", row.created_at))
}

/// At most 200 characters of `text`, for a log line.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// One multi-row `INSERT IGNORE` of `chunk` in a transaction of its own, each row with the next
/// change number of its chat (its place on the live stream, taken first so the chats stay
/// locked to the commit), counted in its chat's live count and read positions.
///
/// Each statement is a round trip to the store, which each batch of creates waits on: the
/// chats' numbers come back with their read positions (on SQLite from the UPDATE itself).
async fn insert_messages(db: &Database, chunk: &[ReadyMessage<'_>]) -> BackendResult<Inserted> {
    let counts = counts_by_chat(chunk);
    let mut tx = db.pool().begin().await?;
    let taken = crate::changes::take_create_numbers(&mut tx, &counts).await?;
    let sql = insert_sql(db.insert_ignore(), chunk.len());
    let mut query = sqlx::query(&sql);
    for (chat_id, number, content, created_at, seq) in numbered(chunk, &counts, &taken) {
        query = query.bind(chat_id).bind(number).bind(content).bind(created_at).bind(created_at).bind(seq);
    }
    let inserted = query.execute(&mut *tx).await?;
    // The Any driver reports no id for SQLite: its connection still knows the last one.
    let id = match (inserted.last_insert_id(), db.dialect()) {
        (None, Dialect::Sqlite) if inserted.rows_affected() > 0 => {
            sqlx::query("SELECT last_insert_rowid()").fetch_one(&mut *tx).await?.try_get::<i64, _>(0).ok()
        }
        (id, _) => id,
    };
    let (rows, highest) = positions_to_count(chunk, &taken);
    crate::reads::count_inserted(&mut tx, &rows, inserted.rows_affected() == chunk.len() as u64, &highest).await?;
    tx.commit().await?;
    Ok(Inserted::new(inserted.rows_affected(), id, taken))
}

/// What inserting a run of messages did: the rows inserted, the store id reported (MySQL: its
/// first row's, SQLite: its last row's), and each chat's last change number taken.
pub(crate) struct Inserted {
    rows: u64,
    id: Option<i64>,
    changed: Vec<(i64, i64)>,
}

impl Inserted {
    pub(crate) fn new(rows: u64, id: Option<i64>, taken: HashMap<i64, (i64, Option<i64>)>) -> Self {
        Self { rows, id, changed: taken.into_iter().map(|(chat, (last, _))| (chat, last)).collect() }
    }
}

/// How many messages of `chunk` go to each chat.
pub(crate) fn counts_by_chat(chunk: &[ReadyMessage<'_>]) -> std::collections::BTreeMap<i64, i64> {
    let mut counts = std::collections::BTreeMap::new();
    for &(_, chat_id, ..) in chunk {
        *counts.entry(chat_id).or_insert(0i64) += 1;
    }
    counts
}

/// The INSERT of `rows` messages (the values of [`numbered`]).
pub(crate) fn insert_sql(insert_ignore: &str, rows: usize) -> String {
    format!(
        "{insert_ignore} INTO messages (chat_id, number, content, created_at, updated_at, created_seq) VALUES {}",
        placeholders_rows(rows)
    )
}

/// Each message of `chunk` as (chat id, number, content, created at, change number): its
/// chat's numbers `taken` (the last of `counts` numbers) go to its messages in order.
pub(crate) fn numbered<'a>(
    chunk: &[ReadyMessage<'a>],
    counts: &std::collections::BTreeMap<i64, i64>,
    taken: &HashMap<i64, (i64, Option<i64>)>,
) -> Vec<(i64, i64, &'a str, i64, i64)> {
    let mut next: HashMap<i64, i64> =
        counts.iter().map(|(chat, count)| (*chat, taken.get(chat).map_or(0, |t| t.0) - count + 1)).collect();
    chunk
        .iter()
        .map(|&(_, chat_id, number, content, created_at, _, _)| {
            let next = next.entry(chat_id).or_default();
            let seq = *next;
            *next += 1;
            (chat_id, number, content, created_at, seq)
        })
        .collect()
}

/// The (chat id, number) of each message of `chunk`, and each chat's highest read position
/// `taken` read, for [`crate::reads::count_inserted`].
pub(crate) fn positions_to_count(
    chunk: &[ReadyMessage<'_>],
    taken: &HashMap<i64, (i64, Option<i64>)>,
) -> (Vec<(i64, i64)>, HashMap<i64, i64>) {
    let rows = chunk.iter().map(|&(_, chat_id, number, ..)| (chat_id, number)).collect();
    let highest = taken.iter().filter_map(|(chat, (_, read))| Some((*chat, (*read)?))).collect();
    (rows, highest)
}

/// Whether no two of `runs` insert into one chat.
fn chats_disjoint(runs: &[&[ReadyMessage<'_>]]) -> bool {
    let mut seen = std::collections::HashSet::new();
    runs.iter().all(|run| {
        let chats: BTreeSet<i64> = run.iter().map(|row| row.1).collect();
        let disjoint = chats.iter().all(|chat| !seen.contains(chat));
        seen.extend(chats);
        disjoint
    })
}

/// A message ready to insert: (delivery, chat id, number, content, created at, application id,
/// chat number).
pub(crate) type ReadyMessage<'a> = (u64, i64, i64, &'a str, i64, i64, i64);

fn placeholders_rows(rows: usize) -> String {
    vec![format!("({})", placeholders(6)); rows].join(", ")
}
