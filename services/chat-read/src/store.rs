//! The SQL of chat-read: reads and updates for the API, batched writes for the consumer.

use shared::backends::BackendResult;
use shared::backends::sql::{Database, placeholders, statement, text};
use sqlx::Row;
use sqlx::any::AnyRow;

use chat::model::{ApplicationView, ChatView, MessageView};

use crate::ChatRead;
use crate::changes::{self, Kind};

/// A keyset page request: at most `limit` rows after or before a cursor.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub limit: i64,
    pub after: Option<i64>,
    pub before: Option<i64>,
}

impl Page {
    /// `WHERE` fragment on `column`, `ORDER BY` direction, and the bound cursors. With both,
    /// the page holds the rows strictly between them, read forwards.
    fn clause(&self, column: &str) -> (String, &'static str, Vec<i64>) {
        match (self.after, self.before) {
            (Some(after), Some(before)) => (format!("AND {column} > ? AND {column} < ?"), "ASC", vec![after, before]),
            (Some(after), None) => (format!("AND {column} > ?"), "ASC", vec![after]),
            (None, Some(before)) => (format!("AND {column} < ?"), "DESC", vec![before]),
            (None, None) => (String::new(), "ASC", Vec::new()),
        }
    }

    /// Rows come back ascending whichever way the page was read.
    fn finish<T>(&self, mut rows: Vec<T>) -> Vec<T> {
        if self.after.is_none() && self.before.is_some() {
            rows.reverse();
        }
        rows
    }

    /// Runs the page query that `sql` builds from [`Page::clause`]'s fragment and direction on
    /// `column`, binding `parent` (the owning row's id, when there is one), the cursors and the
    /// limit, and maps its rows ascending.
    async fn fetch<T>(
        &self,
        db: &Database,
        column: &str,
        parent: Option<i64>,
        sql: impl FnOnce(&str, &str) -> String,
        map: impl Fn(&AnyRow) -> BackendResult<T>,
    ) -> BackendResult<Vec<T>> {
        let (cursor, order, bounds) = self.clause(column);
        let sql = sql(&cursor, order);
        let mut query = sqlx::query(&sql);
        for bound in parent.into_iter().chain(bounds) {
            query = query.bind(bound);
        }
        let rows = query.bind(self.limit).fetch_all(db.pool()).await?;
        Ok(self.finish(rows.iter().map(map).collect::<BackendResult<Vec<_>>>()?))
    }
}

fn application(row: &AnyRow) -> BackendResult<ApplicationView> {
    Ok(ApplicationView::new(
        row.try_get("token")?,
        row.try_get("name")?,
        row.try_get("chats_count")?,
        row.try_get("created_at")?,
        row.try_get("updated_at")?,
    ))
}

pub async fn insert_application(db: &Database, token: &str, name: &str, now: i64) -> BackendResult<ApplicationView> {
    let sql = "INSERT INTO applications (token, name, chats_count, created_at, updated_at) VALUES (?, ?, 0, ?, ?)";
    statement(sql, &[&token, &name, &now, &now]).execute(db.pool()).await?;
    Ok(ApplicationView::new(token.to_owned(), name.to_owned(), 0, now, now))
}

pub async fn get_application(db: &Database, token: &str) -> BackendResult<Option<(i64, ApplicationView)>> {
    let row =
        sqlx::query("SELECT id, token, name, chats_count, created_at, updated_at FROM applications WHERE token = ?")
            .bind(token)
            .fetch_optional(db.pool())
            .await?;
    row.map(|row| Ok((row.try_get("id")?, application(&row)?))).transpose()
}

/// Applications in creation order; the cursor is the internal id of the cursor token's row.
pub async fn list_applications(db: &Database, page: Page) -> BackendResult<Vec<ApplicationView>> {
    let sql = |cursor: &str, order: &str| {
        format!(
            "SELECT token, name, chats_count, created_at, updated_at FROM applications WHERE 1 = 1 {cursor} \
             ORDER BY id {order} LIMIT ?"
        )
    };
    page.fetch(db, "id", None, sql, application).await
}

pub async fn rename_application(db: &Database, id: i64, name: &str, now: i64) -> BackendResult<()> {
    statement("UPDATE applications SET name = ?, updated_at = ? WHERE id = ?", &[&name, &now, &id])
        .execute(db.pool())
        .await?;
    Ok(())
}

fn chat(row: &AnyRow, token: &str) -> BackendResult<ChatView> {
    Ok(ChatView::new(
        token.to_owned(),
        row.try_get("number")?,
        row.try_get("name")?,
        row.try_get("messages_count")?,
        row.try_get("created_at")?,
        row.try_get("updated_at")?,
    ))
}

pub async fn get_chat(
    db: &Database,
    application_id: i64,
    token: &str,
    number: i64,
) -> BackendResult<Option<(i64, ChatView)>> {
    let sql = "SELECT id, number, name, messages_count, created_at, updated_at FROM chats \
               WHERE application_id = ? AND number = ?";
    let row = numbered_row(db, sql, application_id, number).await?;
    row.map(|row| Ok((row.try_get("id")?, chat(&row, token)?))).transpose()
}

pub async fn list_chats(db: &Database, application_id: i64, token: &str, page: Page) -> BackendResult<Vec<ChatView>> {
    let sql = |cursor: &str, order: &str| {
        format!(
            "SELECT number, name, messages_count, created_at, updated_at FROM chats WHERE application_id = ? {cursor} \
             ORDER BY number {order} LIMIT ?"
        )
    };
    page.fetch(db, "number", Some(application_id), sql, |row| chat(row, token)).await
}

/// Renames a chat, logging the change for the live stream (`chat.updated`).
pub async fn rename_chat(state: &ChatRead, chat_id: i64, name: &str, now: i64) -> BackendResult<()> {
    let update =
        sqlx::query("UPDATE chats SET name = ?, updated_at = ? WHERE id = ?").bind(name).bind(now).bind(chat_id);
    changes::record(state, chat_id, Kind::ChatUpdated, 0, update, Vec::new()).await?;
    Ok(())
}

fn message(row: &AnyRow, token: &str, chat_number: i64) -> BackendResult<MessageView> {
    Ok(MessageView::new(
        token.to_owned(),
        chat_number,
        row.try_get("number")?,
        text(row, 1)?.unwrap_or_default(),
        row.try_get("created_at")?,
        row.try_get("updated_at")?,
    ))
}

pub async fn get_message(
    db: &Database,
    chat_id: i64,
    token: &str,
    chat_number: i64,
    number: i64,
) -> BackendResult<Option<MessageView>> {
    let sql = "SELECT number, content, created_at, updated_at FROM messages \
               WHERE chat_id = ? AND number = ? AND deleted_at IS NULL";
    let row = numbered_row(db, sql, chat_id, number).await?;
    row.map(|row| message(&row, token, chat_number)).transpose()
}

/// The row `sql` selects by its parent's id and its number (its two parameters), if any.
async fn numbered_row(db: &Database, sql: &str, parent_id: i64, number: i64) -> BackendResult<Option<AnyRow>> {
    Ok(sqlx::query(sql).bind(parent_id).bind(number).fetch_optional(db.pool()).await?)
}

pub async fn list_messages(
    db: &Database,
    chat_id: i64,
    token: &str,
    chat_number: i64,
    page: Page,
) -> BackendResult<Vec<MessageView>> {
    let sql = |cursor: &str, order: &str| {
        format!(
            "SELECT number, content, created_at, updated_at FROM messages \
             WHERE chat_id = ? AND deleted_at IS NULL {cursor} ORDER BY number {order} LIMIT ?"
        )
    };
    page.fetch(db, "number", Some(chat_id), sql, |row| message(row, token, chat_number)).await
}

/// Edits a message, logging the change for the live stream (`message.updated`); false when the
/// chat has no such message.
pub async fn update_message(
    state: &ChatRead,
    chat_id: i64,
    number: i64,
    content: &str,
    now: i64,
) -> BackendResult<bool> {
    let update = sqlx::query(
        "UPDATE messages SET content = ?, updated_at = ? WHERE chat_id = ? AND number = ? AND deleted_at IS NULL",
    )
    .bind(content)
    .bind(now)
    .bind(chat_id)
    .bind(number);
    Ok(changes::record(state, chat_id, Kind::MessageUpdated, number, update, Vec::new()).await?.is_some())
}

/// The ids of the chats of an application among `numbers`, by number.
pub async fn chat_ids(
    db: &Database,
    application_id: i64,
    numbers: &[i64],
) -> BackendResult<std::collections::HashMap<i64, i64>> {
    let rows = rows_among(db, "SELECT id, number FROM chats WHERE application_id = ?", application_id, numbers).await?;
    rows.iter().map(|row| Ok((row.try_get(1)?, row.try_get(0)?))).collect()
}

/// The highest message number the store holds for a chat (deleted ones included): where its
/// counter starts when it must be seeded.
pub async fn highest_message_number(db: &Database, application_id: i64, chat_number: i64) -> BackendResult<i64> {
    let row = sqlx::query(
        "SELECT MAX(number) FROM messages WHERE chat_id = (SELECT id FROM chats WHERE application_id = ? AND number = ?)",
    )
    .bind(application_id)
    .bind(chat_number)
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
}

/// Whether message `number` of chat `chat_id` is stored, and if so whether it is deleted.
pub async fn message_deleted(db: &Database, chat_id: i64, number: i64) -> BackendResult<Option<bool>> {
    let sql = "SELECT deleted_at FROM messages WHERE chat_id = ? AND number = ?";
    let row = numbered_row(db, sql, chat_id, number).await?;
    Ok(row.map(|row| row.try_get::<Option<i64>, _>(0)).transpose()?.map(|deleted| deleted.is_some()))
}

/// Deletes a stored message (a tombstone: the row stays, its number is never reused), logging
/// the change for the live stream (`message.deleted`); false when the chat has no such message
/// or it is deleted already.
pub async fn delete_message(state: &ChatRead, chat_id: i64, number: i64, now: i64) -> BackendResult<bool> {
    let update = sqlx::query(
        "UPDATE messages SET deleted_at = ?, updated_at = ? WHERE chat_id = ? AND number = ? AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(now)
    .bind(chat_id)
    .bind(number);
    // One live message fewer in the chat, and for every read position at or above it.
    let counts = vec![
        sqlx::query("UPDATE chats SET live_count = live_count - 1 WHERE id = ?").bind(chat_id),
        sqlx::query("UPDATE read_positions SET live_through = live_through - 1 WHERE chat_id = ? AND last_read >= ?")
            .bind(chat_id)
            .bind(number),
    ];
    Ok(changes::record(state, chat_id, Kind::MessageDeleted, number, update, counts).await?.is_some())
}

/// Message numbers and their current text, for (re)indexing what the store holds.
/// `(id, number, content)` of the messages of `chat_id` with `numbers`, as the store holds them.
pub async fn message_texts(db: &Database, chat_id: i64, numbers: &[i64]) -> BackendResult<Vec<(i64, i64, String)>> {
    // A deleted message is indexed without text: no query finds it.
    let select =
        "SELECT id, number, CASE WHEN deleted_at IS NULL THEN content ELSE '' END FROM messages WHERE chat_id = ?";
    let rows = rows_among(db, select, chat_id, numbers).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, text(row, 2)?.unwrap_or_default()))).collect()
}

/// The rows `select` (of one `parent`, whose id it binds first) finds among `numbers`, asked
/// 500 numbers a statement.
async fn rows_among(db: &Database, select: &str, parent: i64, numbers: &[i64]) -> BackendResult<Vec<AnyRow>> {
    let mut rows = Vec::with_capacity(numbers.len());
    for chunk in numbers.chunks(500) {
        let sql = format!("{select} AND number IN ({})", placeholders(chunk.len()));
        let mut query = sqlx::query(&sql).bind(parent);
        for number in chunk {
            query = query.bind(*number);
        }
        rows.extend(query.fetch_all(db.pool()).await?);
    }
    Ok(rows)
}

/// One page of every message with its search scope, in id order after `after_id`:
/// `(id, application id, chat number, message number, content)`.
pub async fn messages_for_reindex(
    db: &Database,
    after_id: i64,
    limit: i64,
) -> BackendResult<Vec<(i64, i64, i64, i64, String)>> {
    let rows = sqlx::query(
        "SELECT m.id, c.application_id, c.number, m.number, CASE WHEN m.deleted_at IS NULL THEN m.content ELSE '' END \
         FROM messages m \
         JOIN chats c ON c.id = m.chat_id WHERE m.id > ? ORDER BY m.id LIMIT ?",
    )
    .bind(after_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, text(r, 4)?.unwrap_or_default())))
        .collect()
}

/// A row already stored under a (parent, number) a create command names, to tell a redelivery
/// of that command from another command given the same number.
#[derive(Clone, Debug)]
pub struct StoredRow {
    /// A message's content or a chat's name.
    pub text: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl StoredRow {
    /// Whether the row is what a create of `text` at `created_at` wrote: the same creation time,
    /// and the same text unless the row was edited since.
    pub fn written_by(&self, text: &str, created_at: i64) -> bool {
        self.created_at == created_at && (self.text == text || self.updated_at != self.created_at)
    }
}

/// The stored messages of chat `chat_id` among `numbers`, by number.
pub async fn stored_messages(
    db: &Database,
    chat_id: i64,
    numbers: &[i64],
) -> BackendResult<std::collections::HashMap<i64, StoredRow>> {
    stored_rows(db, "SELECT number, content, created_at, updated_at FROM messages WHERE chat_id = ?", chat_id, numbers)
        .await
}

/// The stored chats of application `application_id` among `numbers`, by number.
pub async fn stored_chats(
    db: &Database,
    application_id: i64,
    numbers: &[i64],
) -> BackendResult<std::collections::HashMap<i64, StoredRow>> {
    let select = "SELECT number, name, created_at, updated_at FROM chats WHERE application_id = ?";
    stored_rows(db, select, application_id, numbers).await
}

/// The rows `select` (number, text, created at, updated at of one parent) finds among
/// `numbers`, by number.
async fn stored_rows(
    db: &Database,
    select: &str,
    parent: i64,
    numbers: &[i64],
) -> BackendResult<std::collections::HashMap<i64, StoredRow>> {
    let rows = rows_among(db, select, parent, numbers).await?;
    rows.iter()
        .map(|row| {
            let stored = StoredRow {
                text: text(row, 1)?.unwrap_or_default(),
                created_at: row.try_get(2)?,
                updated_at: row.try_get(3)?,
            };
            Ok((row.try_get(0)?, stored))
        })
        .collect()
}
