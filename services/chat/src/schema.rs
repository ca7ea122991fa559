//! The chat tables, the names under one namespace, and the lookups both chat services make.

use shared::backends::BackendResult;
use shared::backends::sql::{Database, Migration};
use sqlx::Row;

/// The chat schema. Internal ids stay inside the store; clients see tokens and numbers.
/// Message text is TEXT on MySQL (read with [`shared::backends::sql::text`]): MariaDB copies a
/// VARCHAR(10000) column's whole declared width for each inserted row.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "applications, chats, messages",
        sqlite: &[
            "CREATE TABLE applications (id INTEGER PRIMARY KEY AUTOINCREMENT, token VARCHAR(64) NOT NULL UNIQUE, \
         name VARCHAR(255) NOT NULL, chats_count BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL)",
            "CREATE TABLE chats (id INTEGER PRIMARY KEY AUTOINCREMENT, application_id BIGINT NOT NULL \
         REFERENCES applications (id), number BIGINT NOT NULL, name VARCHAR(255) NOT NULL, \
         messages_count BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
         UNIQUE (application_id, number))",
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id BIGINT NOT NULL REFERENCES chats (id), \
         number BIGINT NOT NULL, content TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
         UNIQUE (chat_id, number))",
        ],
        mysql: &[
            "CREATE TABLE IF NOT EXISTS applications (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         token VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL, chats_count BIGINT NOT NULL DEFAULT 0, \
         created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, UNIQUE KEY applications_token (token)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS chats (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         application_id BIGINT NOT NULL, number BIGINT NOT NULL, name VARCHAR(255) NOT NULL, \
         messages_count BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
         UNIQUE KEY chats_parent_number (application_id, number), \
         CONSTRAINT chats_application FOREIGN KEY (application_id) REFERENCES applications (id)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS messages (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         chat_id BIGINT NOT NULL, number BIGINT NOT NULL, \
         content VARCHAR(10000) NOT NULL, created_at BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL, UNIQUE KEY messages_parent_number (chat_id, number), \
         CONSTRAINT messages_chat FOREIGN KEY (chat_id) REFERENCES chats (id)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    },
    Migration {
        version: 2,
        name: "chat numbers whose create the queue did not confirm",
        sqlite: &["CREATE TABLE unconfirmed_chats (application_id BIGINT NOT NULL, number BIGINT NOT NULL, \
                   created_at BIGINT NOT NULL, PRIMARY KEY (application_id, number))"],
        mysql: &["CREATE TABLE IF NOT EXISTS unconfirmed_chats (application_id BIGINT NOT NULL, \
                  number BIGINT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (application_id, number)) \
                  ENGINE=InnoDB"],
    },
    Migration {
        version: 3,
        name: "message text as TEXT",
        sqlite: &[],
        // MariaDB copies a VARCHAR's whole declared width (40,000 bytes in utf8mb4) through its
        // row buffer for each row; TEXT is stored the same way on disk without that copy, which
        // the consumer's multi-row statements pay once per row.
        mysql: &["ALTER TABLE messages MODIFY content TEXT NOT NULL"],
    },
    Migration {
        version: 4,
        name: "the change log of the live stream",
        // Every change of a chat takes the next numbers of its `last_change` in the transaction
        // that writes it: the chat's row stays locked until the commit, so within a chat changes
        // commit in the order of their numbers and a reader of `seq > cursor` never skips one
        // committed late. A message's create is its row (`created_seq`); every other change is
        // a row of `chat_changes` (`kind`: 2 message edited, 3 chat renamed, 4 message deleted).
        sqlite: &[
            "ALTER TABLE chats ADD COLUMN last_change BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE messages ADD COLUMN created_seq BIGINT NOT NULL DEFAULT 0",
            "CREATE INDEX messages_chat_seq ON messages (chat_id, created_seq)",
            "CREATE TABLE chat_changes (chat_id BIGINT NOT NULL, seq BIGINT NOT NULL, kind SMALLINT NOT NULL, \
             number BIGINT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (chat_id, seq))",
        ],
        mysql: &[
            "ALTER TABLE chats ADD COLUMN last_change BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE messages ADD COLUMN created_seq BIGINT NOT NULL DEFAULT 0, \
             ADD KEY messages_chat_seq (chat_id, created_seq)",
            "CREATE TABLE IF NOT EXISTS chat_changes (chat_id BIGINT NOT NULL, seq BIGINT NOT NULL, \
             kind SMALLINT NOT NULL, number BIGINT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (chat_id, seq)) \
             ENGINE=InnoDB",
        ],
    },
    Migration {
        version: 5,
        name: "deleted messages as tombstones",
        // A deleted message keeps its row (so its number is never handed out again, and a late
        // redelivery of its create is recognised) with `deleted_at` set; reads, search and
        // counts leave it out.
        sqlite: &["ALTER TABLE messages ADD COLUMN deleted_at BIGINT"],
        mysql: &["ALTER TABLE messages ADD COLUMN deleted_at BIGINT NULL"],
    },
    Migration {
        version: 6,
        name: "read positions and exact live counts",
        // `live_count`: the chat's stored, undeleted messages, kept exact in the transactions
        // that insert and delete them. A read position keeps `live_through`, the live messages
        // numbered up to it, kept exact the same way: unread = live_count - live_through, two
        // columns read whatever the chat's size.
        sqlite: &[
            "ALTER TABLE chats ADD COLUMN live_count BIGINT NOT NULL DEFAULT 0",
            "UPDATE chats SET live_count = \
             (SELECT COUNT(*) FROM messages WHERE messages.chat_id = chats.id AND messages.deleted_at IS NULL)",
            "CREATE TABLE read_positions (chat_id BIGINT NOT NULL, user_id VARCHAR(255) NOT NULL, \
             last_read BIGINT NOT NULL, live_through BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
             PRIMARY KEY (chat_id, user_id))",
            "CREATE INDEX read_positions_chat_last_read ON read_positions (chat_id, last_read)",
        ],
        mysql: &[
            "ALTER TABLE chats ADD COLUMN live_count BIGINT NOT NULL DEFAULT 0",
            "UPDATE chats SET live_count = \
             (SELECT COUNT(*) FROM messages WHERE messages.chat_id = chats.id AND messages.deleted_at IS NULL)",
            "CREATE TABLE IF NOT EXISTS read_positions (chat_id BIGINT NOT NULL, \
             user_id VARCHAR(255) NOT NULL, last_read BIGINT NOT NULL, live_through BIGINT NOT NULL, \
             updated_at BIGINT NOT NULL, PRIMARY KEY (chat_id, user_id), \
             KEY read_positions_chat_last_read (chat_id, last_read)) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    },
    Migration {
        version: 7,
        name: "idempotency keys of creates",
        // One row per (application, Idempotency-Key): what the request was (`fingerprint`), the
        // number it drew and the time its 201 gives (`number` NULL until drawn), whether its
        // command is queued, and when it was claimed (a claim past 24 h is free again). Kept in
        // the store, so a key survives whatever happens to the counters' Redis.
        sqlite: &[
            "CREATE TABLE idempotency_keys (application_id BIGINT NOT NULL, idem_key VARCHAR(255) NOT NULL, \
             fingerprint VARCHAR(64) NOT NULL, number BIGINT NOT NULL, created_at BIGINT NOT NULL, \
             claimed_at BIGINT NOT NULL, PRIMARY KEY (application_id, idem_key))",
            "CREATE INDEX idempotency_keys_claimed ON idempotency_keys (claimed_at)",
        ],
        mysql: &["CREATE TABLE IF NOT EXISTS idempotency_keys (application_id BIGINT NOT NULL, \
                  idem_key VARCHAR(255) NOT NULL, fingerprint VARCHAR(64) NOT NULL, number BIGINT NOT NULL, \
                  created_at BIGINT NOT NULL, claimed_at BIGINT NOT NULL, \
                  PRIMARY KEY (application_id, idem_key), KEY idempotency_keys_claimed (claimed_at)) \
                  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
    },
];

/// Counter keys, set names and queue names, all under one namespace.
#[derive(Clone, Debug)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned() }
    }

    pub fn chat_counter(&self, application_id: i64) -> String {
        format!("{}:counter:chats:{application_id}", self.namespace)
    }

    pub fn message_counter(&self, application_id: i64, chat_number: i64) -> String {
        format!("{}:counter:messages:{application_id}:{chat_number}", self.namespace)
    }

    /// The queue of chat commands.
    pub fn command_queue(&self) -> String {
        format!("{}.chat.commands", self.namespace)
    }

    /// Applications whose `chats_count` needs a flush.
    pub fn touched_applications(&self) -> String {
        format!("{}:touched:applications", self.namespace)
    }

    /// Chats whose `messages_count` needs a flush.
    pub fn touched_chats(&self) -> String {
        format!("{}:touched:chats", self.namespace)
    }

    /// Taken by the first DELETE of a message whose create is still queued: a second DELETE
    /// meanwhile is a 404, as after the delete is applied.
    pub fn pending_delete(&self, application_id: i64, chat_number: i64, message_number: i64) -> String {
        format!("{}:deleting:{application_id}:{chat_number}:{message_number}", self.namespace)
    }

    pub fn count_flush_lock(&self) -> String {
        format!("{}:lock:count-flush", self.namespace)
    }

    /// The notification topic of committed chat changes (the live stream's wake-up calls).
    pub fn change_topic(&self) -> String {
        format!("{}.chat.changes", self.namespace)
    }
}

/// The search scope of a chat: internal, never shown to clients.
pub fn search_scope(application_id: i64, chat_number: i64) -> String {
    format!("{application_id}:{chat_number}")
}

/// The internal id of the application with `token`, if it exists.
pub async fn application_id(db: &Database, token: &str) -> BackendResult<Option<i64>> {
    let row = sqlx::query("SELECT id FROM applications WHERE token = ?").bind(token).fetch_optional(db.pool()).await?;
    Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
}

/// The internal id of chat `chat_number` of an application, if it is persisted.
pub async fn chat_id(db: &Database, application_id: i64, chat_number: i64) -> BackendResult<Option<i64>> {
    let row = sqlx::query("SELECT id FROM chats WHERE application_id = ? AND number = ?")
        .bind(application_id)
        .bind(chat_number)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
}
