//! The change log of each chat, which the live stream replays.
//!
//! Every change of a chat takes the next numbers of the chat's `last_change` in the same
//! transaction that writes it ([`take_numbers`] runs first, so the chat's row is locked from
//! there to the commit). Two writers of one chat therefore commit in the order of their
//! numbers, whichever process they run in: a reader that has seen number `n` committed has
//! seen every change numbered below it, so reading `seq > cursor` never skips a change that
//! commits late. Numbers may be skipped (a redelivered create takes numbers its rows, already
//! stored, never use); none is used twice.
//!
//! A message's create is its own row (`messages.created_seq`); every other change is a row of
//! `chat_changes`. After the commit the writer [`announce`]s the chats it changed on the
//! queue's notification topic: readers wake and read the log, and a reader that misses a
//! notification finds the change at its next poll.

use std::collections::{BTreeMap, HashMap};

use shared::backends::BackendResult;
use shared::backends::sql::{Database, placeholders, text};
use sqlx::AnyConnection;
use sqlx::Row;

use crate::ChatRead;

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    MessageCreated = 1,
    MessageUpdated = 2,
    ChatUpdated = 3,
    MessageDeleted = 4,
}

impl Kind {
    fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::MessageCreated,
            2 => Self::MessageUpdated,
            3 => Self::ChatUpdated,
            4 => Self::MessageDeleted,
            _ => return None,
        })
    }

    /// The event name on the stream.
    pub fn event(self) -> &'static str {
        match self {
            Self::MessageCreated => "message.created",
            Self::MessageUpdated => "message.updated",
            Self::ChatUpdated => "chat.updated",
            Self::MessageDeleted => "message.deleted",
        }
    }
}

/// Takes `count` change numbers of each chat of `counts` (chat id → count) inside the
/// transaction on `conn`, locking each chat's row until it ends; returns each chat's last
/// number taken. The rows are locked in id order, so two writers never deadlock on them.
/// `creates`: the changes are that many new messages, added to the chat's `live_count` too.
pub async fn take_numbers(
    conn: &mut AnyConnection,
    counts: &BTreeMap<i64, i64>,
    creates: bool,
) -> BackendResult<HashMap<i64, i64>> {
    let taken = take(conn, counts, creates, false).await?;
    Ok(taken.into_iter().map(|(chat, (last, _))| (chat, last)).collect())
}

/// [`take_numbers`] for that many new messages in each chat, with each chat's highest
/// `last_read` of its read positions (`None` without one) read in the same statement, for
/// [`crate::reads::count_inserted`].
pub async fn take_create_numbers(
    conn: &mut AnyConnection,
    counts: &BTreeMap<i64, i64>,
) -> BackendResult<HashMap<i64, (i64, Option<i64>)>> {
    take(conn, counts, true, true).await
}

/// Takes the numbers; returns each chat's last, and with `positions` its highest read position.
/// SQLite returns them from the UPDATE itself (`RETURNING`), one round trip to the store's
/// connection thread where a read-back is two, on the path of every batch of creates; MySQL
/// has no `UPDATE … RETURNING` and reads them back under the locks the UPDATE took.
async fn take(
    conn: &mut AnyConnection,
    counts: &BTreeMap<i64, i64>,
    creates: bool,
    positions: bool,
) -> BackendResult<HashMap<i64, (i64, Option<i64>)>> {
    if counts.is_empty() {
        return Ok(HashMap::new());
    }
    let returning = conn.backend_name() == "SQLite";
    let (update, values) = numbers_statement(counts, creates, positions, returning);
    let mut query = sqlx::query(&update);
    for value in values {
        query = query.bind(value);
    }
    let rows = if returning {
        query.fetch_all(&mut *conn).await?
    } else {
        query.execute(&mut *conn).await?;
        let sql = format!("SELECT {} FROM chats WHERE id IN ({})", numbers_read(positions), placeholders(counts.len()));
        let mut select = sqlx::query(&sql);
        for id in counts.keys() {
            select = select.bind(*id);
        }
        select.fetch_all(&mut *conn).await?
    };
    rows.iter()
        .map(|row| {
            let highest = if positions { row.try_get::<Option<i64>, _>(2)? } else { None };
            Ok((row.try_get(0)?, (row.try_get(1)?, highest)))
        })
        .collect()
}

/// The UPDATE that takes the numbers of `counts` (non-empty), and the values it binds in
/// order; with `returning` it returns each chat's `id, last_change` and, with `positions`, its
/// highest `last_read` (SQLite's `RETURNING`). Shared with the consumer's own SQLite
/// connection ([`crate::direct`]).
pub(crate) fn numbers_statement(
    counts: &BTreeMap<i64, i64>,
    creates: bool,
    positions: bool,
    returning: bool,
) -> (String, Vec<i64>) {
    let cases = vec!["WHEN ? THEN ?"; counts.len()].join(" ");
    let ids = placeholders(counts.len());
    let update = match creates {
        true => format!(
            "UPDATE chats SET last_change = last_change + CASE id {cases} END, \
             live_count = live_count + CASE id {cases} END WHERE id IN ({ids})"
        ),
        false => format!("UPDATE chats SET last_change = last_change + CASE id {cases} END WHERE id IN ({ids})"),
    };
    let update = match returning {
        true => format!("{update} RETURNING {}", numbers_read(positions)),
        false => update,
    };
    let mut values = Vec::with_capacity(counts.len() * if creates { 5 } else { 3 });
    for _ in 0..if creates { 2 } else { 1 } {
        for (id, count) in counts {
            values.extend([*id, *count]);
        }
    }
    values.extend(counts.keys());
    (update, values)
}

/// The columns [`numbers_statement`] reads back: `id, last_change`, and with `positions` the
/// chat's highest read position.
fn numbers_read(positions: bool) -> &'static str {
    match positions {
        true => "id, last_change, (SELECT MAX(last_read) FROM read_positions WHERE read_positions.chat_id = chats.id)",
        false => "id, last_change",
    }
}

/// Writes a change of chat `chat_id` other than a create: `write` (an UPDATE) runs inside the
/// transaction once the change's number is taken; when it changes no row, the transaction is
/// rolled back and `None` returned. Otherwise the change is logged as `kind` of message
/// `number` (0 for the chat itself), `then` runs (what follows from it: counts), and all is
/// committed and announced; returns its number.
pub async fn record<'q>(
    state: &ChatRead,
    chat_id: i64,
    kind: Kind,
    number: i64,
    write: Query<'q>,
    then: Vec<Query<'q>>,
) -> BackendResult<Option<i64>> {
    let mut tx = state.db.pool().begin().await?;
    let seq = take_numbers(&mut tx, &BTreeMap::from([(chat_id, 1)]), false).await?.get(&chat_id).copied();
    let Some(seq) = seq else { return Ok(None) };
    if write.execute(&mut *tx).await?.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    for query in then {
        query.execute(&mut *tx).await?;
    }
    sqlx::query("INSERT INTO chat_changes (chat_id, seq, kind, number, at) VALUES (?, ?, ?, ?, ?)")
        .bind(chat_id)
        .bind(seq)
        .bind(kind as i64)
        .bind(number)
        .bind(shared::now_millis())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    announce(state, &[(chat_id, seq)]);
    Ok(Some(seq))
}

/// A statement with its values bound.
pub type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Tells every stream reader that these chats changed, up to these numbers (after the
/// commit), without waiting: the write it follows is done whatever becomes of it. A
/// notification that cannot be sent (the broker is down) is logged and dropped: readers find
/// the change at their next poll.
pub fn announce(state: &ChatRead, changed: &[(i64, i64)]) {
    if changed.is_empty() {
        return;
    }
    let (queue, topic, payload) = (state.queue.clone(), state.keys.change_topic(), encode(changed));
    tokio::spawn(async move {
        if let Err(error) = queue.notify(&topic, payload).await {
            tracing::debug!(%error, "change notification not sent; stream readers poll for it");
        }
    });
}

/// `chat:seq` pairs, comma-separated.
fn encode(changed: &[(i64, i64)]) -> bytes::Bytes {
    let text: Vec<String> = changed.iter().map(|(chat, seq)| format!("{chat}:{seq}")).collect();
    bytes::Bytes::from(text.join(","))
}

/// The (chat id, last change number) pairs of a notification; what does not parse is skipped.
pub fn decode(payload: &[u8]) -> Vec<(i64, i64)> {
    let Ok(text) = std::str::from_utf8(payload) else { return Vec::new() };
    text.split(',')
        .filter_map(|pair| {
            let (chat, seq) = pair.split_once(':')?;
            Some((chat.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}

/// A logged change, with the message it is about as the store holds it now.
#[derive(Clone, Debug)]
pub struct Change {
    pub seq: i64,
    pub kind: Kind,
    /// The message number (0 for a change of the chat itself).
    pub number: i64,
    /// The message's content, creation and update times; `None` for a chat change, or a
    /// message deleted since (its text is not shown again).
    pub message: Option<(String, i64, i64)>,
}

/// The chat's last change number, if the chat is stored.
pub async fn head(db: &Database, chat_id: i64) -> BackendResult<Option<i64>> {
    let row = sqlx::query("SELECT last_change FROM chats WHERE id = ?").bind(chat_id).fetch_optional(db.pool()).await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// The first `limit` changes of chat `chat_id` numbered above `cursor`, in order, up to the
/// chat's change number read first: every change up to it is committed (a chat's changes commit
/// in the order of their numbers), so the two tables' reads below, made a moment apart, agree.
/// Without that bound, a create committed between them could be passed over by a later edit's
/// number.
pub async fn after(db: &Database, chat_id: i64, cursor: i64, limit: i64) -> BackendResult<Vec<Change>> {
    let Some(upto) = head(db, chat_id).await? else { return Ok(Vec::new()) };
    if upto <= cursor {
        return Ok(Vec::new());
    }
    let range =
        |sql: &'static str| sqlx::query(sql).bind(chat_id).bind(cursor).bind(upto).bind(limit).fetch_all(db.pool());
    let created = range(
        "SELECT created_seq, number, CASE WHEN deleted_at IS NULL THEN content END, created_at, updated_at \
         FROM messages WHERE chat_id = ? AND created_seq > ? AND created_seq <= ? ORDER BY created_seq LIMIT ?",
    )
    .await?;
    let others = range(
        "SELECT c.seq, c.kind, c.number, m.content, m.created_at, m.updated_at FROM chat_changes c \
         LEFT JOIN messages m ON m.chat_id = c.chat_id AND m.number = c.number AND c.kind <> 3 \
         AND m.deleted_at IS NULL \
         WHERE c.chat_id = ? AND c.seq > ? AND c.seq <= ? ORDER BY c.seq LIMIT ?",
    )
    .await?;
    // Each list is complete up to its last row only when it came back full: the merge stops at
    // the lower of those bounds, so a change of the other list beyond it is not skipped.
    let full = |rows: &Vec<sqlx::any::AnyRow>| -> BackendResult<Option<i64>> {
        match rows.last() {
            Some(last) if rows.len() as i64 >= limit => Ok(Some(last.try_get(0)?)),
            _ => Ok(None),
        }
    };
    let bound = match (full(&created)?, full(&others)?) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => i64::MAX,
    };
    let mut changes = Vec::with_capacity(created.len() + others.len());
    for row in &created {
        let message = match text(row, 2)? {
            Some(content) => Some((content, row.try_get(3)?, row.try_get(4)?)),
            None => None,
        };
        changes.push(Change { seq: row.try_get(0)?, kind: Kind::MessageCreated, number: row.try_get(1)?, message });
    }
    for row in &others {
        let Some(kind) = Kind::from_code(row.try_get(1)?) else { continue };
        let message = match text(row, 3)? {
            Some(content) => Some((content, row.try_get(4)?, row.try_get(5)?)),
            None => None,
        };
        changes.push(Change { seq: row.try_get(0)?, kind, number: row.try_get(2)?, message });
    }
    changes.retain(|change| change.seq <= bound);
    changes.sort_by_key(|change| change.seq);
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_round_trip_and_skip_garbage() {
        let payload = encode(&[(3, 17), (12, 4)]);
        assert_eq!(decode(&payload), vec![(3, 17), (12, 4)]);
        assert_eq!(decode(b"3:1,x:2,4,5:6"), vec![(3, 1), (5, 6)]);
        assert!(decode(&[0xff, 0xfe]).is_empty());
    }
}
