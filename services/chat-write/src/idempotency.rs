//! `Idempotency-Key` on the creates: a retry with the same key for the same application answers
//! the original 201 (same number, same body) and never creates a second chat or message,
//! whether the first request finished, failed after drawing its number, or is still running.
//!
//! The key's record (the request's fingerprint, the number it drew, its 201's time) is written
//! to the store before the command is published, in one write: a retry that finds it
//! publishes the same command again (the consumer takes an identical create as a redelivery,
//! so there is never a second chat or message) and answers the same 201, whether the first
//! request finished, failed or died after drawing. Retries in one process wait for the request
//! that holds their key ([`InFlight`]), so a storm of them draws one number; a retry on another
//! replica while the first runs draws a number of its own, loses the write of the record to
//! the first, and answers the first's 201 (its number is skipped, never used). The same key
//! with another request is a 422. Keys are kept in the store (SQLite or MySQL), so they survive
//! whatever happens to the counters' Redis; a key is free again after [`TTL`].

use std::time::Duration;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use shared::ApiError;
use shared::backends::BackendResult;
use shared::backends::sql::Database;
use sqlx::Row;

/// How long a key holds.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest key taken.
const MAX_KEY_CHARS: usize = 255;

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII characters, else 400.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// What identifies a request under a key: its kind, parent and validated text.
pub fn fingerprint(kind: &str, parent: i64, text: &str) -> String {
    let digest = Sha256::new()
        .chain_update(kind)
        .chain_update([0])
        .chain_update(parent.to_string())
        .chain_update([0])
        .chain_update(text)
        .finalize();
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What a key holds: the request's fingerprint, its number and its 201's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub fingerprint: String,
    pub number: i64,
    pub created_at: i64,
}

/// The live record of `key` (one written less than [`TTL`] ago); an expired one is deleted.
pub async fn lookup(db: &Database, application_id: i64, key: &str, now: i64) -> BackendResult<Option<Record>> {
    let row = sqlx::query(
        "SELECT fingerprint, number, created_at, claimed_at FROM idempotency_keys WHERE application_id = ? AND idem_key = ?",
    )
    .bind(application_id)
    .bind(key)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let claimed_at: i64 = row.try_get(3)?;
    if claimed_at < now - TTL.as_millis() as i64 {
        sqlx::query("DELETE FROM idempotency_keys WHERE application_id = ? AND idem_key = ? AND claimed_at = ?")
            .bind(application_id)
            .bind(key)
            .bind(claimed_at)
            .execute(db.pool())
            .await?;
        return Ok(None);
    }
    Ok(Some(Record { fingerprint: row.try_get(0)?, number: row.try_get(1)?, created_at: row.try_get(2)? }))
}

/// Writes `record` under `key` unless another request did first; true when this one did.
pub async fn record(db: &Database, application_id: i64, key: &str, record: &Record, now: i64) -> BackendResult<bool> {
    let sql = format!(
        "{} INTO idempotency_keys (application_id, idem_key, fingerprint, number, created_at, claimed_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
        db.insert_ignore()
    );
    let inserted = sqlx::query(&sql)
        .bind(application_id)
        .bind(key)
        .bind(record.fingerprint.as_str())
        .bind(record.number)
        .bind(record.created_at)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The keys in flight in this process: a request holds its key's lock from its lookup to its
/// answer, so concurrent retries here wait for the first and find its record. It also
/// remembers the keys whose command this process queued lately, so their retries here answer
/// without queueing it again.
#[derive(Default)]
pub struct InFlight {
    keys: std::sync::Mutex<std::collections::HashMap<KeyOf, KeyLock>>,
    queued: std::sync::Mutex<std::collections::HashSet<KeyOf>>,
}

/// An application's id and one of its keys.
type KeyOf = (i64, String);
/// What the requests with one key take turns on.
type KeyLock = std::sync::Arc<tokio::sync::Mutex<()>>;

/// Keys remembered as queued at most (the memory starts over when full; a retry of a key
/// forgotten queues its command again, which is harmless).
const REMEMBERED: usize = 10_000;

impl InFlight {
    /// Remembers that the command of `key` is queued.
    pub fn queued(&self, application_id: i64, key: &str) {
        let mut queued = self.queued.lock().expect("queued keys poisoned");
        if queued.len() >= REMEMBERED {
            queued.clear();
        }
        queued.insert((application_id, key.to_owned()));
    }

    /// Whether this process queued the command of `key` lately.
    pub fn was_queued(&self, application_id: i64, key: &str) -> bool {
        self.queued.lock().expect("queued keys poisoned").contains(&(application_id, key.to_owned()))
    }

    /// Waits for the other requests with this key in this process, then holds it.
    pub async fn hold(&self, application_id: i64, key: &str) -> Held<'_> {
        let lock = {
            let mut keys = self.keys.lock().expect("in-flight keys poisoned");
            keys.entry((application_id, key.to_owned())).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        Held { keys: self, application_id, key: key.to_owned(), lock, _guard: guard }
    }
}

/// A key held by one request; forgotten once no request holds or waits for it.
pub struct Held<'a> {
    keys: &'a InFlight,
    application_id: i64,
    key: String,
    lock: KeyLock,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut keys = self.keys.keys.lock().expect("in-flight keys poisoned");
        // The map's copy, this one and the guard's: nobody else holds or waits.
        if std::sync::Arc::strong_count(&self.lock) <= 3 {
            keys.remove(&(self.application_id, std::mem::take(&mut self.key)));
        }
    }
}

/// 422 for a key reused with another request.
pub fn mismatch() -> ApiError {
    ApiError::validation("this Idempotency-Key was used for a different request")
}
