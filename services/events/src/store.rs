//! The SQL of the eye: sessions, events and error records. Plain functions over the
//! [`Database`] port; every statement is written once with `?` placeholders for both dialects.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use shared::backends::BackendResult;
use shared::backends::sql::{Database, Dialect, placeholders};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::model::{Reason, ValidEvent};

/// Rows per multi-row INSERT: well under both drivers' placeholder limits.
const ROWS_PER_INSERT: usize = 200;

/// Takes turns at writing. SQLite has one writer at a time anyway: waiting for a turn here is a
/// cheap async wait (while the waiter validates its next batch, or serves requests), where
/// waiting inside SQLite is its busy handler sleeping in growing steps. On MySQL writers run
/// side by side and the gate is not used.
#[derive(Clone, Default)]
pub struct WriteGate(Arc<tokio::sync::Mutex<()>>);

/// A write transaction holding its turn at the [`WriteGate`] until it commits or drops.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// Opens a write transaction (waiting for this process's turn on SQLite). On SQLite its
/// connection also gets a 32 MiB page cache (SQLite's default is 2 MiB): once the indexes
/// outgrow the cache, every insert otherwise re-reads index pages from the OS, which costs more
/// than the insert itself. The setting stays with the pooled connection.
pub async fn begin_write(db: &Database, gate: &WriteGate) -> Result<WriteTx, sqlx::Error> {
    let turn = match db.dialect() {
        Dialect::Sqlite => Some(gate.0.clone().lock_owned().await),
        Dialect::MySql => None,
    };
    let mut tx = db.pool().begin().await?;
    if db.dialect() == Dialect::Sqlite {
        sqlx::query("PRAGMA cache_size = -32768").execute(&mut *tx).await?;
    }
    Ok(WriteTx { tx, _turn: turn })
}

/// A nullable text column, as MySQL (blobs to the `Any` driver) or SQLite (text) reports it.
pub use shared::backends::sql::text as optional_text;

/// A text column that is never NULL (see [`optional_text`]).
pub fn text(row: &AnyRow, index: usize) -> Result<String, sqlx::Error> {
    optional_text(row, index)?
        .ok_or_else(|| sqlx::Error::ColumnDecode { index: index.to_string(), source: "unexpected NULL".into() })
}

// ---- sessions ----

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub seq: i64,
    pub id: String,
    pub created_at: i64,
}

fn session_row(row: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow { seq: row.try_get(0)?, id: text(row, 1)?, created_at: row.try_get(2)? })
}

pub async fn create_session(db: &Database, id: &str, now: i64) -> BackendResult<()> {
    sqlx::query("INSERT INTO event_sessions (id, created_at) VALUES (?, ?)")
        .bind(id)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(())
}

pub async fn get_session(db: &Database, id: &str) -> BackendResult<Option<SessionRow>> {
    let row = sqlx::query("SELECT seq, id, created_at FROM event_sessions WHERE id = ?")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.as_ref().map(session_row).transpose()?)
}

/// Sessions in creation order after the cursor `after` (a `seq`).
pub async fn list_sessions(db: &Database, after: Option<i64>, limit: i64) -> BackendResult<Vec<SessionRow>> {
    let rows = sqlx::query("SELECT seq, id, created_at FROM event_sessions WHERE seq > ? ORDER BY seq LIMIT ?")
        .bind(after.unwrap_or(i64::MIN))
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
}

/// Which of `ids` are sessions in the store.
pub async fn existing_sessions(conn: &mut AnyConnection, ids: &[&str]) -> BackendResult<HashSet<String>> {
    let mut found = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let sql = format!("SELECT id FROM event_sessions WHERE id IN ({})", placeholders(chunk.len()));
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.insert(text(&row, 0)?);
        }
    }
    Ok(found)
}

// ---- events ----

/// A stored event: the valid event, and what the store keeps about it.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub event: ValidEvent,
    pub received_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

const EVENT_COLUMNS: &str =
    "seq, id, session_id, category, name, data, ts, client_event_id, received_at, updated_at, version";

fn event_row(row: &AnyRow) -> Result<EventRow, sqlx::Error> {
    let data = text(row, 5)?;
    let event = ValidEvent {
        session_id: text(row, 2)?,
        category: text(row, 3)?,
        name: text(row, 4)?,
        data: RawValue::from_string(data)
            .map_err(|e| sqlx::Error::ColumnDecode { index: "data".into(), source: Box::new(e) })?,
        timestamp: row.try_get(6)?,
        client_event_id: optional_text(row, 7)?,
    };
    Ok(EventRow {
        seq: row.try_get(0)?,
        id: text(row, 1)?,
        event,
        received_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
        version: row.try_get(10)?,
    })
}

/// A valid event on its way into the store.
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event: &'a ValidEvent,
    pub received_at: i64,
}

/// Inserts `events`, skipping ids already stored (a redelivery, or a client retry carrying the
/// same client event id); returns how many were new.
pub async fn insert_events(
    conn: &mut AnyConnection,
    insert_ignore: &str,
    events: &[NewEvent<'_>],
) -> BackendResult<u64> {
    let insert = |rows: usize| {
        format!(
            "{insert_ignore} INTO events (id, session_id, category, name, data, ts, client_event_id, received_at, \
             updated_at, version) VALUES {}",
            vec![format!("({}, 1)", placeholders(9)); rows].join(", ")
        )
    };
    insert_chunked(conn, events, ROWS_PER_INSERT, insert, |query, new| {
        bind_event(query.bind(new.id), new.event)
            .bind(new.event.client_event_id.as_deref())
            .bind(new.received_at)
            .bind(new.received_at)
    })
    .await
}

pub async fn get_event(db: &Database, id: &str) -> BackendResult<Option<EventRow>> {
    by_id(db, &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?"), id, event_row).await
}

/// The filters and page of `GET /events/`.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub session: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub timestamp_gte: Option<i64>,
    pub timestamp_lte: Option<i64>,
    /// Keyset cursor: the `(timestamp, seq)` of the last row of the previous page.
    pub after: Option<(i64, i64)>,
    pub limit: i64,
}

/// Events matching `filter`, ordered by timestamp (then arrival).
pub async fn list_events(db: &Database, filter: &EventFilter) -> BackendResult<Vec<EventRow>> {
    // In the order the values are bound below.
    let conditions: Vec<&str> = [
        (filter.session.is_some(), "session_id = ?"),
        (filter.category.is_some(), "category = ?"),
        (filter.name.is_some(), "name = ?"),
        (filter.timestamp_gte.is_some(), "ts >= ?"),
        (filter.timestamp_lte.is_some(), "ts <= ?"),
        (filter.after.is_some(), "(ts > ? OR (ts = ? AND seq > ?))"),
    ]
    .into_iter()
    .filter_map(|(applies, condition)| applies.then_some(condition))
    .collect();
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events {} {} ORDER BY ts, seq LIMIT ?",
        if conditions.is_empty() { "" } else { "WHERE" },
        conditions.join(" AND ")
    );
    let mut query = sqlx::query(&sql);
    for text in [&filter.session, &filter.category, &filter.name].into_iter().flatten() {
        query = query.bind(text.as_str());
    }
    for bound in [filter.timestamp_gte, filter.timestamp_lte].into_iter().flatten() {
        query = query.bind(bound);
    }
    if let Some((ts, seq)) = filter.after {
        query = query.bind(ts).bind(ts).bind(seq);
    }
    let rows = query.bind(filter.limit).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(event_row).collect::<Result<_, _>>()?)
}

/// Replaces the fields of event `id` if it is still at `version`; false when it changed (or
/// went) meanwhile.
pub async fn update_event(db: &Database, id: &str, version: i64, event: &ValidEvent, now: i64) -> BackendResult<bool> {
    let sql = "UPDATE events SET session_id = ?, category = ?, name = ?, data = ?, ts = ?, updated_at = ?, \
               version = version + 1 WHERE id = ? AND version = ?";
    let done = bind_event(sqlx::query(sql), event).bind(now).bind(id).bind(version).execute(db.pool()).await?;
    Ok(done.rows_affected() > 0)
}

pub async fn delete_event(db: &Database, id: &str) -> BackendResult<bool> {
    let done = sqlx::query("DELETE FROM events WHERE id = ?").bind(id).execute(db.pool()).await?;
    Ok(done.rows_affected() > 0)
}

// ---- errors ----

#[derive(Clone, Debug)]
pub struct ErrorRow {
    pub seq: i64,
    pub id: String,
    pub session_id: Option<String>,
    pub payload: String,
    pub reasons: Vec<Reason>,
    pub received_at: i64,
    pub created_at: i64,
}

const ERROR_COLUMNS: &str = "seq, id, session_id, payload, reasons, received_at, created_at";

fn error_row(row: &AnyRow) -> Result<ErrorRow, sqlx::Error> {
    let reasons = text(row, 4)?;
    Ok(ErrorRow {
        seq: row.try_get(0)?,
        id: text(row, 1)?,
        session_id: optional_text(row, 2)?,
        payload: text(row, 3)?,
        reasons: serde_json::from_str(&reasons)
            .map_err(|e| sqlx::Error::ColumnDecode { index: "reasons".into(), source: Box::new(e) })?,
        received_at: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

/// An error record on its way into the store.
pub struct NewError<'a> {
    pub id: &'a str,
    pub session_id: Option<&'a str>,
    pub payload: &'a str,
    pub reasons: &'a [Reason],
    pub received_at: i64,
}

/// Inserts error records, skipping ids already stored (redelivery); returns how many were new.
pub async fn insert_errors(
    conn: &mut AnyConnection,
    insert_ignore: &str,
    errors: &[NewError<'_>],
    now: i64,
) -> BackendResult<u64> {
    let insert = |rows: usize| {
        format!(
            "{insert_ignore} INTO event_errors (id, session_id, payload, reasons, received_at, created_at) VALUES {}",
            vec![format!("({})", placeholders(6)); rows].join(", ")
        )
    };
    insert_chunked(conn, errors, ROWS_PER_INSERT, insert, |query, error| {
        let session_id = error.session_id.map(|id| id.chars().take(200).collect::<String>());
        query
            .bind(error.id)
            .bind(session_id)
            .bind(error.payload)
            .bind(serde_json::to_string(error.reasons).unwrap_or_else(|_| "[]".to_owned()))
            .bind(error.received_at)
            .bind(now)
    })
    .await
}

/// The row `sql` selects by the id `id`, mapped by `map`.
async fn by_id<T>(
    db: &Database,
    sql: &str,
    id: &str,
    map: fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> BackendResult<Option<T>> {
    let row = sqlx::query(sql).bind(id).fetch_optional(db.pool()).await?;
    Ok(row.as_ref().map(map).transpose()?)
}

/// Binds the columns of `event` an update may change, in the order
/// `(session_id, category, name, data, ts)`: four texts, then the timestamp.
fn bind_event<'q>(query: AnyQuery<'q>, event: &'q ValidEvent) -> AnyQuery<'q> {
    let texts = [event.session_id.as_str(), event.category.as_str(), event.name.as_str(), event.data.get()];
    texts.into_iter().fold(query, |query, text| query.bind(text)).bind(event.timestamp)
}

/// A query on any SQL backend, as the store builds them.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Inserts `rows`, `per_statement` of them a statement: `insert(n)` is the statement for n rows
/// and `bind` binds one row. Returns how many rows were new (an ignored duplicate is not).
pub async fn insert_chunked<T>(
    conn: &mut AnyConnection,
    rows: &[T],
    per_statement: usize,
    insert: impl Fn(usize) -> String,
    bind: impl for<'q> Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> BackendResult<u64> {
    let mut inserted = 0;
    for chunk in rows.chunks(per_statement) {
        let sql = insert(chunk.len());
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = bind(query, row);
        }
        inserted += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted)
}

pub async fn get_error(db: &Database, id: &str) -> BackendResult<Option<ErrorRow>> {
    by_id(db, &format!("SELECT {ERROR_COLUMNS} FROM event_errors WHERE id = ?"), id, error_row).await
}

/// Error records in arrival order after the cursor `after` (a `seq`), optionally of one session.
pub async fn list_errors(
    db: &Database,
    session: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> BackendResult<Vec<ErrorRow>> {
    let sql = format!(
        "SELECT {ERROR_COLUMNS} FROM event_errors WHERE seq > ? {} ORDER BY seq LIMIT ?",
        if session.is_some() { "AND session_id = ?" } else { "" }
    );
    let mut query = sqlx::query(&sql).bind(after.unwrap_or(i64::MIN));
    if let Some(session) = session {
        query = query.bind(session);
    }
    let rows = query.bind(limit).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(error_row).collect::<Result<_, _>>()?)
}
