//! Retention: user events older than the retention period (a year by default) are deleted by
//! a daily job, the way the seed's Cassandra rows expired through their TTL. Age is counted
//! from when an event was received (as a TTL does), or from its own `ts` when configured so.
//! The job reads the service's [`Clock`](shared::clock::Clock), so tests move time instead of
//! waiting for it.

use serde::{Deserialize, Serialize};
use shared::backends::BackendResult;
use shared::backends::sql::Dialect;
use shared::shutdown::Shutdown;

use crate::Events;

/// Every day at 03:30:00 (six-field cron, seconds first).
pub const DEFAULT_SCHEDULE: &str = "0 30 3 * * *";
/// Rows deleted per statement, so the job never holds a long write lock.
const DELETE_CHUNK: i64 = 5_000;
const DAY_MILLIS: i64 = 86_400_000;

/// What an event's age is counted from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionBasis {
    /// When the service received it (the seed's TTL).
    #[default]
    Received,
    /// The event's own `ts`.
    EventTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionReport {
    /// Events older than this (milliseconds since the epoch) were deleted.
    pub cutoff: i64,
    pub deleted: u64,
}

/// Deletes the user events older than the retention period, in chunks.
pub async fn run_once(state: &Events) -> BackendResult<RetentionReport> {
    let settings = &state.settings;
    let cutoff = state.clock.now_millis() - i64::from(settings.retention_days) * DAY_MILLIS;
    let column = match settings.retention_basis {
        RetentionBasis::Received => "received_at",
        RetentionBasis::EventTime => "ts",
    };
    let sql = match state.db.dialect() {
        Dialect::MySql => format!("DELETE FROM user_events WHERE {column} < ? LIMIT {DELETE_CHUNK}"),
        Dialect::Sqlite => format!(
            "DELETE FROM user_events WHERE (session_id, event) IN \
             (SELECT session_id, event FROM user_events WHERE {column} < ? LIMIT {DELETE_CHUNK})"
        ),
    };
    let mut deleted = 0;
    loop {
        let done = sqlx::query(&sql).bind(cutoff).execute(state.db.pool()).await?;
        deleted += done.rows_affected();
        if done.rows_affected() < DELETE_CHUNK as u64 {
            return Ok(RetentionReport { cutoff, deleted });
        }
    }
}

/// Runs [`run_once`] on `schedule` (six-field cron, seconds first) until `shutdown`.
pub async fn run(state: Events, schedule: String, shutdown: Shutdown) -> anyhow::Result<()> {
    let job = move || {
        let state = state.clone();
        async move {
            match run_once(&state).await {
                Ok(report) => tracing::info!(deleted = report.deleted, cutoff = report.cutoff, "retention ran"),
                Err(error) => tracing::warn!(%error, "retention failed; the next run deletes what this one left"),
            }
        }
    };
    shared::schedule::run("retention", &schedule, job, shutdown).await
}
