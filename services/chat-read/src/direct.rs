//! The consumer's batch transaction of new messages on a SQLite connection of its own.
//!
//! A pooled SQLite connection runs its statements on a thread of its own, so each statement
//! of a batch's transaction is a round trip between the consumer and that thread: two
//! wake-ups, each waiting for a core while the HTTP connections keep both busy. There the
//! transaction of a batch of creates is five such round trips, and every create in the batch
//! waits for all of them. On the consumer's own connection the thread that runs the consumer
//! runs the statements itself, one after the other.
//!
//! The statements are the pooled path's ([`crate::changes::numbers_statement`],
//! [`crate::consumer`]'s INSERT, [`crate::reads::counting_inserted`]), and so are the
//! guarantees: the transaction takes the write lock at its start (`BEGIN IMMEDIATE`), and its
//! commit is durable when it returns (`synchronous = FULL`, the pool's settings). The consumer
//! acks the batch, and so answers its creates, only after that.

use std::collections::HashMap;

use rusqlite::{Connection, TransactionBehavior};
use shared::backends::BackendResult;
use shared::backends::sql::Database;
use shared::backends::sql::sqlite::open_direct;

use crate::consumer::{Inserted, ReadyMessage, counts_by_chat, insert_sql, numbered, positions_to_count};

/// Statements kept prepared: their text changes with a batch's number of rows and chats.
const PREPARED: usize = 100;

/// A SQLite connection of the consumer's own.
pub(crate) struct OwnConnection {
    connection: Connection,
    /// The store's `INSERT OR IGNORE` ([`Database::insert_ignore`]).
    insert_ignore: &'static str,
}

impl OwnConnection {
    /// The connection, on a SQLite store kept in a file; `None` on any other.
    pub(crate) fn open(db: &Database) -> BackendResult<Option<Self>> {
        let Some(file) = db.sqlite_file() else { return Ok(None) };
        let connection = open_direct(file)?;
        connection.set_prepared_statement_cache_capacity(PREPARED);
        Ok(Some(Self { connection, insert_ignore: db.insert_ignore() }))
    }

    /// [`crate::consumer`]'s `insert_messages`, on this connection.
    pub(crate) fn insert_messages(&mut self, chunk: &[ReadyMessage<'_>]) -> BackendResult<Inserted> {
        let counts = counts_by_chat(chunk);
        let tx = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (sql, values) = crate::changes::numbers_statement(&counts, true, true, true);
        let mut taken = HashMap::with_capacity(counts.len());
        {
            let mut update = tx.prepare_cached(&sql)?;
            let mut rows = update.query(rusqlite::params_from_iter(values))?;
            while let Some(row) = rows.next()? {
                taken.insert(row.get::<_, i64>(0)?, (row.get::<_, i64>(1)?, row.get::<_, Option<i64>>(2)?));
            }
        }
        let inserted = {
            let mut insert = tx.prepare_cached(&insert_sql(self.insert_ignore, chunk.len()))?;
            // Six values a row, in the order the pooled path binds them (parameters count from 1).
            for (row, (chat_id, number, content, created_at, seq)) in
                numbered(chunk, &counts, &taken).into_iter().enumerate()
            {
                let at = row * 6;
                insert.raw_bind_parameter(at + 1, chat_id)?;
                insert.raw_bind_parameter(at + 2, number)?;
                insert.raw_bind_parameter(at + 3, content)?;
                insert.raw_bind_parameter(at + 4, created_at)?;
                insert.raw_bind_parameter(at + 5, created_at)?;
                insert.raw_bind_parameter(at + 6, seq)?;
            }
            insert.raw_execute()? as u64
        };
        let id = (inserted > 0).then(|| tx.last_insert_rowid());
        let (rows, highest) = positions_to_count(chunk, &taken);
        for (sql, values) in crate::reads::counting_inserted(&rows, inserted == chunk.len() as u64, &highest) {
            tx.execute(&sql, rusqlite::params_from_iter(values))?;
        }
        tx.commit()?;
        Ok(Inserted::new(inserted, id, taken))
    }
}
