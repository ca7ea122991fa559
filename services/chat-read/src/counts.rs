//! The count flush: writes `chats_count` and `messages_count` for the parents touched since the
//! last run (and forgets idempotency keys past their 24 h). A chat's messages are its exact
//! live count and an application's chats are counted from the rows, so counts never exceed
//! what is persisted, and a flush repeated after a crash, or beside another replica's slow
//! one, gives the same answer.
//!
//! The touched sets live in the counters backend. When it may have lost them (Redis restarted,
//! failed over or was flushed: its generation changed), the next flush recounts every parent
//! instead, without a process restart.

use std::time::Duration;

use shared::backends::BackendResult;
use shared::backends::sql::{Database, placeholders};
use shared::shutdown::Shutdown;

use crate::ChatRead;

/// Every minute, at second 0, like the seed's cron.
pub const DEFAULT_SCHEDULE: &str = "0 * * * * *";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub applications: usize,
    pub chats: usize,
    /// Another replica held the lock.
    pub skipped: bool,
}

/// How long a flush holds its lock. A flush that runs longer is not a problem: a second
/// replica may then flush beside it, and each member is forgotten only by the flush that
/// counted it.
pub const LOCK_TTL: Duration = Duration::from_secs(55);

/// One replica's count flushes: its lock holder name and the counters generation its last
/// full recount saw.
pub struct CountFlush {
    holder: String,
    generation: tokio::sync::Mutex<Option<String>>,
}

impl CountFlush {
    /// A flusher whose counts are right for the counters `generation` (read before a full
    /// recount), or `None` to recount everything at its first flush.
    pub fn new(generation: Option<String>) -> Self {
        let holder = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        Self { holder, generation: tokio::sync::Mutex::new(generation) }
    }

    /// Flushes the touched parents, holding the flush lock so one replica does it at a time.
    pub async fn flush(&self, state: &ChatRead) -> BackendResult<FlushReport> {
        let report = self.flush_under_lock(state).await;
        let outcome = match &report {
            Ok(report) if report.skipped => "skipped",
            Ok(_) => "flushed",
            Err(_) => "failed",
        };
        shared::metrics::record_cron_run("count_flush", outcome);
        report
    }

    async fn flush_under_lock(&self, state: &ChatRead) -> BackendResult<FlushReport> {
        let lock = state.keys.count_flush_lock();
        if !state.counters.try_lock(&lock, &self.holder, LOCK_TTL).await? {
            return Ok(FlushReport { skipped: true, ..FlushReport::default() });
        }
        let outcome = self.flush_locked(state).await;
        state.counters.unlock(&lock, &self.holder).await?;
        outcome
    }

    async fn flush_locked(&self, state: &ChatRead) -> BackendResult<FlushReport> {
        let mut seen = self.generation.lock().await;
        let generation = state.counters.generation().await?;
        if seen.as_deref() != Some(generation.as_str()) {
            // Touched sets from before may be gone: count everything. A parent touched from
            // now on is in the new generation's sets.
            tracing::warn!(%generation, "the counters backend is new or lost its data; recounting every parent");
            recount_all(&state.db).await?;
            *seen = Some(generation);
        }
        let chats = flush_set(state, &state.keys.touched_chats(), "chats", "messages_count", MESSAGES_COUNT).await?;
        let applications =
            flush_set(state, &state.keys.touched_applications(), "applications", "chats_count", CHATS_COUNT).await?;
        forget_expired_keys(&state.db).await?;
        Ok(FlushReport { applications, chats, skipped: false })
    }
}

/// Deletes the idempotency keys of creates claimed more than 24 h ago (a retry then is a new
/// create), so the table holds a day of keys, not every key ever sent.
async fn forget_expired_keys(db: &Database) -> BackendResult<()> {
    let expired = shared::now_millis() - 24 * 3600 * 1000;
    sqlx::query("DELETE FROM idempotency_keys WHERE claimed_at < ?").bind(expired).execute(db.pool()).await?;
    Ok(())
}

/// A chat's messages: its live count, kept exact by the transactions that insert and delete
/// them (see [`crate::reads`]). Counting the rows here instead would take shared locks on them
/// (MySQL reads an UPDATE's subquery with locks) while the consumer's inserts hold the chat's
/// row: a deadlock at every flush of a busy chat.
const MESSAGES_COUNT: &str = "live_count";
/// An application's chats, counted from the rows (chats are never deleted, and their inserts
/// lock nothing the flush holds).
const CHATS_COUNT: &str = "(SELECT COUNT(*) FROM chats WHERE chats.application_id = applications.id)";

/// Sets `column` of the members of the touched `set` (rows of `table`) to `count`; returns how
/// many.
async fn flush_set(state: &ChatRead, set: &str, table: &str, column: &str, count: &str) -> BackendResult<usize> {
    let members = state.counters.take_touched(set).await?;
    let ids: Vec<i64> = members.iter().filter_map(|m| m.parse().ok()).collect();
    for chunk in ids.chunks(500) {
        let sql = format!("UPDATE {table} SET {column} = {count} WHERE id IN ({})", placeholders(chunk.len()));
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(state.db.pool()).await?;
    }
    state.counters.finish_touched(set, &members).await?;
    Ok(ids.len())
}

/// Recounts every parent.
pub async fn recount_all(db: &Database) -> BackendResult<()> {
    sqlx::query(&format!("UPDATE chats SET messages_count = {MESSAGES_COUNT}")).execute(db.pool()).await?;
    sqlx::query(&format!("UPDATE applications SET chats_count = {CHATS_COUNT}")).execute(db.pool()).await?;
    Ok(())
}

/// Recounts every parent (run at start, since touched sets may not survive a restart);
/// returns the counters generation the counts are right for, to hand to [`run`].
pub async fn recount_at_start(state: &ChatRead) -> BackendResult<String> {
    let generation = state.counters.generation().await?;
    recount_all(&state.db).await?;
    Ok(generation)
}

/// Runs [`CountFlush::flush`] on `schedule` (six-field cron, seconds first) until `shutdown`;
/// `generation` is what [`recount_at_start`] returned.
pub async fn run(state: ChatRead, schedule: String, generation: String, shutdown: Shutdown) -> anyhow::Result<()> {
    let flusher = std::sync::Arc::new(CountFlush::new(Some(generation)));
    let job = move || {
        let state = state.clone();
        let flusher = flusher.clone();
        async move {
            match flusher.flush(&state).await {
                Ok(report) if report.skipped => {
                    tracing::debug!("count flush skipped: another replica holds the lock")
                }
                Ok(report) => {
                    if report.applications + report.chats > 0 {
                        tracing::info!(applications = report.applications, chats = report.chats, "counts flushed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "count flush failed; the parents stay touched for the next run")
                }
            }
        }
    };
    shared::schedule::run("count flush", &schedule, job, shutdown).await
}
