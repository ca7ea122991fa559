//! What chat-write keeps beside the chat tables' shared lookups ([`chat::schema`]): the
//! caches in front of them, the chat numbers whose create the queue did not confirm, and the
//! seeds of the counters.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;
use shared::backends::BackendResult;
use shared::backends::sql::{Database, optional_i64};

/// Token to application id, filled as tokens are resolved.
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<String, i64>>);

impl TokenCache {
    const CAPACITY: usize = 100_000;

    pub fn get(&self, token: &str) -> Option<i64> {
        self.0.lock().expect("token cache poisoned").get(token).copied()
    }

    pub fn insert(&self, token: &str, id: i64) {
        let mut map = self.0.lock().expect("token cache poisoned");
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(token.to_owned(), id);
    }
}

/// Chats known to exist, as `(application id, chat number)`. Chats are never deleted, so a
/// chat once seen (persisted, or numbered by the chat counter) stays valid for good.
#[derive(Default)]
pub struct KnownChats(Mutex<HashSet<(i64, i64)>>);

impl KnownChats {
    const CAPACITY: usize = 1_000_000;

    pub fn contains(&self, application_id: i64, chat_number: i64) -> bool {
        self.0.lock().expect("chat cache poisoned").contains(&(application_id, chat_number))
    }

    pub fn insert(&self, application_id: i64, chat_number: i64) {
        let mut set = self.0.lock().expect("chat cache poisoned");
        if set.len() >= Self::CAPACITY {
            set.clear();
        }
        set.insert((application_id, chat_number));
    }
}

/// Records that the create of chat `chat_number` answered 503: its number was drawn, but the
/// queue did not confirm the command, so the chat may never be persisted and no message may be
/// accepted for it on the strength of the counter alone.
pub async fn mark_unconfirmed_chat(db: &Database, application_id: i64, chat_number: i64) -> BackendResult<()> {
    let sql =
        format!("{} INTO unconfirmed_chats (application_id, number, created_at) VALUES (?, ?, ?)", db.insert_ignore());
    sqlx::query(&sql).bind(application_id).bind(chat_number).bind(shared::now_millis()).execute(db.pool()).await?;
    Ok(())
}

/// Forgets the mark of [`mark_unconfirmed_chat`]: a retry of the create queued its command.
pub async fn clear_unconfirmed_chat(db: &Database, application_id: i64, chat_number: i64) -> BackendResult<()> {
    sqlx::query("DELETE FROM unconfirmed_chats WHERE application_id = ? AND number = ?")
        .bind(application_id)
        .bind(chat_number)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Whether the create of chat `chat_number` answered 503 (see [`mark_unconfirmed_chat`]).
pub async fn is_unconfirmed_chat(db: &Database, application_id: i64, chat_number: i64) -> BackendResult<bool> {
    let row = sqlx::query("SELECT 1 FROM unconfirmed_chats WHERE application_id = ? AND number = ?")
        .bind(application_id)
        .bind(chat_number)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// A counter's seed: the highest number already held for it.
pub trait SeedFn: Fn() -> BoxFuture<'static, BackendResult<i64>> + Send + Sync {}

impl<F: Fn() -> BoxFuture<'static, BackendResult<i64>> + Send + Sync> SeedFn for F {}

/// Seeds the chat counter of an application from the highest persisted chat number, or
/// `queued` (the highest one a queued command holds) if higher.
pub fn seed_chat_counter(db: &Database, application_id: i64, queued: i64) -> impl SeedFn {
    let db = db.clone();
    move || {
        let db = db.clone();
        async move {
            let row = sqlx::query("SELECT MAX(number) FROM chats WHERE application_id = ?")
                .bind(application_id)
                .fetch_one(db.pool())
                .await?;
            Ok(optional_i64(&row, 0)?.unwrap_or(0).max(queued))
        }
        .boxed()
    }
}

/// Seeds the message counter of a chat from the highest persisted message number, or
/// `queued` (the highest one a queued command holds) if higher.
pub fn seed_message_counter(db: &Database, application_id: i64, chat_number: i64, queued: i64) -> impl SeedFn {
    let db = db.clone();
    move || {
        let db = db.clone();
        async move {
            let row = sqlx::query(
                // The chat's id first, so MAX is one index lookup (a join reads every row of the chat).
                "SELECT MAX(number) FROM messages \
                 WHERE chat_id = (SELECT id FROM chats WHERE application_id = ? AND number = ?)",
            )
            .bind(application_id)
            .bind(chat_number)
            .fetch_one(db.pool())
            .await?;
            Ok(optional_i64(&row, 0)?.unwrap_or(0).max(queued))
        }
        .boxed()
    }
}
