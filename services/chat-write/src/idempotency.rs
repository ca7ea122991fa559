//! `Idempotency-Key` on the creates: a retry with the same key for the same application answers
//! the original 201 (same number, same body) and never creates a second chat or message,
//! whether the first request finished, failed after drawing its number, or is still running.
//!
//! A key is claimed in the store before a number is drawn, so concurrent requests with one key
//! draw one number between them. The number and the 201's time are recorded before the command
//! is published, so a request that dies after drawing leaves what its retry needs: the retry
//! publishes the same command again (the consumer takes an identical create as a redelivery)
//! and answers the same 201. A retry that finds the first request still running waits for it
//! (up to [`WAIT`]), then answers its 201; a first request gone silent before drawing for
//! [`STALE`] is taken over; one that cannot be waited for any longer gets 409. The same key with
//! another request is a 422. Keys are kept in the store (SQLite or MySQL), so they survive
//! whatever happens to the counters' Redis; a claim is free again after [`TTL`].

use std::time::Duration;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use shared::backends::BackendResult;
use shared::backends::sql::Database;
use shared::{ApiError, ErrorCode};
use sqlx::Row;

/// How long a key holds.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a retry waits for the request that holds its key.
pub const WAIT: Duration = Duration::from_secs(5);
/// A claim this old without a number belongs to a request that died before drawing it.
pub const STALE: Duration = Duration::from_secs(10);
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

/// What a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: it draws the number.
    Ours,
    /// The key holds another request.
    Mismatch,
    /// The request holding the key drew `number`; its command is queued when `published`.
    Drawn { number: i64, created_at: i64, published: bool, claimed_at: i64 },
    /// The request holding the key has not drawn its number yet.
    Pending { claimed_at: i64 },
}

/// Claims `key` for a request with `fingerprint`, or says what holds it.
pub async fn claim(db: &Database, application_id: i64, key: &str, fingerprint: &str, now: i64) -> BackendResult<Claim> {
    let sql = format!(
        "{} INTO idempotency_keys (application_id, idem_key, fingerprint, number, created_at, published, claimed_at) \
         VALUES (?, ?, ?, NULL, 0, 0, ?)",
        db.insert_ignore()
    );
    let inserted =
        sqlx::query(&sql).bind(application_id).bind(key).bind(fingerprint).bind(now).execute(db.pool()).await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Ours);
    }
    let row = sqlx::query(
        "SELECT fingerprint, number, created_at, published, claimed_at FROM idempotency_keys \
         WHERE application_id = ? AND idem_key = ?",
    )
    .bind(application_id)
    .bind(key)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Box::pin(claim(db, application_id, key, fingerprint, now)).await };
    let claimed_at: i64 = row.try_get(4)?;
    if claimed_at < now - TTL.as_millis() as i64 {
        // Expired: free it (unless another request just did) and claim again.
        sqlx::query("DELETE FROM idempotency_keys WHERE application_id = ? AND idem_key = ? AND claimed_at = ?")
            .bind(application_id)
            .bind(key)
            .bind(claimed_at)
            .execute(db.pool())
            .await?;
        return Box::pin(claim(db, application_id, key, fingerprint, now)).await;
    }
    if row.try_get::<String, _>(0)? != fingerprint {
        return Ok(Claim::Mismatch);
    }
    Ok(match row.try_get::<Option<i64>, _>(1)? {
        Some(number) => {
            Claim::Drawn { number, created_at: row.try_get(2)?, published: row.try_get::<i64, _>(3)? != 0, claimed_at }
        }
        None => Claim::Pending { claimed_at },
    })
}

/// Takes over a claim whose request died before drawing (still at `claimed_at`, no number).
pub async fn take_over(
    db: &Database,
    application_id: i64,
    key: &str,
    claimed_at: i64,
    now: i64,
) -> BackendResult<bool> {
    let taken = sqlx::query(
        "UPDATE idempotency_keys SET claimed_at = ? WHERE application_id = ? AND idem_key = ? AND claimed_at = ? \
         AND number IS NULL",
    )
    .bind(now)
    .bind(application_id)
    .bind(key)
    .bind(claimed_at)
    .execute(db.pool())
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// Records the number the key's request drew and its 201's time, before its command is
/// published.
pub async fn drawn(db: &Database, application_id: i64, key: &str, number: i64, created_at: i64) -> BackendResult<()> {
    sqlx::query("UPDATE idempotency_keys SET number = ?, created_at = ? WHERE application_id = ? AND idem_key = ?")
        .bind(number)
        .bind(created_at)
        .bind(application_id)
        .bind(key)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Records that the key's command is queued.
pub async fn published(db: &Database, application_id: i64, key: &str) -> BackendResult<()> {
    sqlx::query("UPDATE idempotency_keys SET published = 1 WHERE application_id = ? AND idem_key = ?")
        .bind(application_id)
        .bind(key)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// 409 for a retry whose first request is still running after [`WAIT`].
pub fn in_progress() -> ApiError {
    ApiError::new(ErrorCode::Conflict, "a request with this Idempotency-Key is still in progress; retry later")
}

/// 422 for a key reused with another request.
pub fn mismatch() -> ApiError {
    ApiError::validation("this Idempotency-Key was used for a different request")
}
