//! The count flush: writes `chats_count` and `messages_count` for the parents touched since the
//! last run. Counts are recomputed from the rows (`COUNT(*)`), so they never exceed what is
//! persisted, and a flush repeated after a crash gives the same answer.

use std::time::Duration;

use shared::backends::BackendResult;
use shared::backends::sql::{Database, placeholders};
use shared::shutdown::Shutdown;
use tokio_cron_scheduler::{Job, JobScheduler};

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

/// Flushes the touched parents, holding the flush lock so one replica does it at a time.
pub async fn flush(state: &ChatRead, holder: &str) -> BackendResult<FlushReport> {
    let report = flush_under_lock(state, holder).await;
    let outcome = match &report {
        Ok(report) if report.skipped => "skipped",
        Ok(_) => "flushed",
        Err(_) => "failed",
    };
    shared::metrics::record_cron_run("count_flush", outcome);
    report
}

async fn flush_under_lock(state: &ChatRead, holder: &str) -> BackendResult<FlushReport> {
    let lock = state.keys.count_flush_lock();
    if !state.counters.try_lock(&lock, holder, Duration::from_secs(55)).await? {
        return Ok(FlushReport { skipped: true, ..FlushReport::default() });
    }
    let outcome = flush_locked(state).await;
    state.counters.unlock(&lock, holder).await?;
    outcome
}

async fn flush_locked(state: &ChatRead) -> BackendResult<FlushReport> {
    let chats_set = state.keys.touched_chats();
    let chats = ids(state.counters.take_touched(&chats_set).await?);
    update_counts(&state.db, "chats", "messages_count", "messages", "chat_id", &chats).await?;
    state.counters.finish_touched(&chats_set).await?;

    let apps_set = state.keys.touched_applications();
    let applications = ids(state.counters.take_touched(&apps_set).await?);
    update_counts(&state.db, "applications", "chats_count", "chats", "application_id", &applications).await?;
    state.counters.finish_touched(&apps_set).await?;
    Ok(FlushReport { applications: applications.len(), chats: chats.len(), skipped: false })
}

fn ids(members: Vec<String>) -> Vec<i64> {
    members.iter().filter_map(|m| m.parse().ok()).collect()
}

async fn update_counts(
    db: &Database,
    table: &str,
    column: &str,
    child: &str,
    foreign_key: &str,
    ids: &[i64],
) -> BackendResult<()> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE {table} SET {column} = (SELECT COUNT(*) FROM {child} WHERE {child}.{foreign_key} = {table}.id) \
             WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(db.pool()).await?;
    }
    Ok(())
}

/// Recounts every parent: run at start, since touched sets may not survive a restart.
pub async fn recount_all(db: &Database) -> BackendResult<()> {
    sqlx::query("UPDATE chats SET messages_count = (SELECT COUNT(*) FROM messages WHERE messages.chat_id = chats.id)")
        .execute(db.pool())
        .await?;
    sqlx::query("UPDATE applications SET chats_count = (SELECT COUNT(*) FROM chats WHERE chats.application_id = applications.id)")
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Runs [`flush`] on `schedule` (six-field cron, seconds first) until `shutdown`.
pub async fn run(state: ChatRead, schedule: String, shutdown: Shutdown) -> anyhow::Result<()> {
    let holder = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let mut scheduler = JobScheduler::new().await?;
    let job_state = state.clone();
    scheduler
        .add(Job::new_async(schedule.as_str(), move |_id, _scheduler| {
            let state = job_state.clone();
            let holder = holder.clone();
            Box::pin(async move {
                match flush(&state, &holder).await {
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
            })
        })?)
        .await?;
    scheduler.start().await?;
    tracing::info!(%schedule, "count flush scheduled");
    shutdown.wait().await;
    scheduler.shutdown().await?;
    Ok(())
}
