//! Read positions and unread counts, exact and read in O(1) whatever the chat's size.
//!
//! A chat keeps `live_count`, its stored and undeleted messages; a read position keeps
//! `live_through`, the live messages numbered up to it. Both are kept exact by the
//! transactions that change them, each holding the chat's row lock: an insert adds to the
//! chat's count and to every position at or above the message (a message stored late, after
//! a reader went past its number), a delete takes away from both, and moving a position counts
//! the live messages it moves over. The unread count is then `live_count - live_through`.

use std::collections::{BTreeMap, HashMap};

use shared::backends::BackendResult;
use shared::backends::sql::{Database, placeholders};
use sqlx::{AnyConnection, Row};

/// After an insert of messages (`(chat id, number)` each) in the transaction on `conn`:
/// every read position at or above an inserted message counts it. `highest` holds each chat's
/// highest `last_read`, read in the transaction (usually every position is below the new
/// messages, and that one look says so). `all_inserted` false (some rows were already stored,
/// a redelivery) recounts the chats' counts and positions instead, from the rows.
pub async fn count_inserted(
    conn: &mut AnyConnection,
    rows: &[(i64, i64)],
    all_inserted: bool,
    highest: &HashMap<i64, i64>,
) -> BackendResult<()> {
    for (sql, values) in counting_inserted(rows, all_inserted, highest) {
        let mut query = sqlx::query(&sql);
        for value in values {
            query = query.bind(value);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The statements [`count_inserted`] runs (usually none), each with the values it binds.
/// Shared with the consumer's own SQLite connection ([`crate::direct`]).
pub(crate) fn counting_inserted(
    rows: &[(i64, i64)],
    all_inserted: bool,
    highest: &HashMap<i64, i64>,
) -> Vec<(String, Vec<i64>)> {
    let mut by_chat: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &(chat_id, number) in rows {
        by_chat.entry(chat_id).or_default().push(number);
    }
    if !all_inserted {
        // Counts the live messages of the chats and of each of their read positions from the
        // rows.
        let chats: Vec<i64> = by_chat.keys().copied().collect();
        let ids = placeholders(chats.len());
        return [
            format!(
                "UPDATE chats SET live_count = (SELECT COUNT(*) FROM messages m \
                 WHERE m.chat_id = chats.id AND m.deleted_at IS NULL) WHERE id IN ({ids})"
            ),
            format!(
                "UPDATE read_positions SET live_through = (SELECT COUNT(*) FROM messages m \
                 WHERE m.chat_id = read_positions.chat_id AND m.number <= read_positions.last_read \
                 AND m.deleted_at IS NULL) WHERE chat_id IN ({ids})"
            ),
        ]
        .into_iter()
        .map(|sql| (sql, chats.clone()))
        .collect();
    }
    let mut statements = Vec::new();
    for (chat_id, numbers) in &by_chat {
        let Some(&top) = highest.get(chat_id) else { continue };
        for &number in numbers.iter().filter(|number| **number <= top) {
            statements.push((
                "UPDATE read_positions SET live_through = live_through + 1 WHERE chat_id = ? AND last_read >= ?"
                    .to_owned(),
                vec![*chat_id, number],
            ));
        }
    }
    statements
}

/// A user's position in a chat: `(last read, unread)`; a user who never read is at 0.
pub async fn unread(db: &Database, chat_id: i64, user_id: &str) -> BackendResult<(i64, i64)> {
    let row = sqlx::query(
        "SELECT c.live_count, r.last_read, r.live_through FROM chats c \
         LEFT JOIN read_positions r ON r.chat_id = c.id AND r.user_id = ? WHERE c.id = ?",
    )
    .bind(user_id)
    .bind(chat_id)
    .fetch_one(db.pool())
    .await?;
    let live: i64 = row.try_get(0)?;
    let last_read: Option<i64> = row.try_get(1)?;
    let through: Option<i64> = row.try_get(2)?;
    Ok((last_read.unwrap_or(0), live - through.unwrap_or(0)))
}

/// The unread count of `user_id` in each chat of `chat_ids`, by chat id.
pub async fn unread_counts(db: &Database, chat_ids: &[i64], user_id: &str) -> BackendResult<HashMap<i64, i64>> {
    if chat_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT c.id, c.live_count - COALESCE(r.live_through, 0) FROM chats c \
         LEFT JOIN read_positions r ON r.chat_id = c.id AND r.user_id = ? WHERE c.id IN ({})",
        placeholders(chat_ids.len())
    );
    let mut query = sqlx::query(&sql).bind(user_id);
    for id in chat_ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// Moves `user_id`'s position in chat `chat_id` forward to `number` (never back); returns the
/// position it ends at and the messages above it.
pub async fn mark_read(db: &Database, chat_id: i64, user_id: &str, number: i64, now: i64) -> BackendResult<(i64, i64)> {
    let mut tx = db.pool().begin().await?;
    // The chat's row lock: inserts and deletes of its messages wait, so the count below holds.
    sqlx::query("UPDATE chats SET live_count = live_count WHERE id = ?").bind(chat_id).execute(&mut *tx).await?;
    let current = sqlx::query("SELECT last_read, live_through FROM read_positions WHERE chat_id = ? AND user_id = ?")
        .bind(chat_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    let (last_read, through) = match &current {
        Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?),
        None => (0, 0),
    };
    if number > last_read || current.is_none() {
        let target = number.max(last_read);
        let moved_over: i64 = sqlx::query(
            "SELECT COUNT(*) FROM messages WHERE chat_id = ? AND number > ? AND number <= ? AND deleted_at IS NULL",
        )
        .bind(chat_id)
        .bind(last_read)
        .bind(target)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let update = sqlx::query(
            "UPDATE read_positions SET last_read = ?, live_through = ?, updated_at = ? WHERE chat_id = ? AND user_id = ?",
        )
        .bind(target)
        .bind(through + moved_over)
        .bind(now)
        .bind(chat_id)
        .bind(user_id);
        if update.execute(&mut *tx).await?.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO read_positions (chat_id, user_id, last_read, live_through, updated_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(chat_id)
            .bind(user_id)
            .bind(target)
            .bind(through + moved_over)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    unread(db, chat_id, user_id).await
}
