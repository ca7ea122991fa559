//! SQLite, the embedded SQL store: what the engine needs that MySQL does not.
//!
//! Connections use WAL, so readers run beside the one writer, and `synchronous = FULL`, so a
//! commit is durable before it returns, which is what a 2xx promises. SQLite's result codes
//! say whose fault a failure is ([`error_class`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;

use super::{ErrorClass, pool_options};

/// Every connection's settings, the pool's and [`open_direct`]'s alike.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
                       PRAGMA foreign_keys = ON; PRAGMA cache_size = -2000;";

/// A pool on `url` (`sqlite://...`).
///
/// Each connection's page cache is 2 MB (`cache_size = -2000`, SQLite's own default, stated so
/// it is chosen): the 8 connections hold at most 16 MB of pages, and the kernel's page cache
/// keeps the rest of a hot file at no cost to the server's own memory. The lookups of the chat
/// API walk a few B-tree pages each, which that covers.
///
/// A connection is not pinged when taken from the pool (sqlx's default): a connection to a
/// file in this process cannot drop, and the ping is a round trip to the connection's thread
/// before every statement or transaction, on the path of every create's batch.
///
/// Returns the pool, and its file where [`open_direct`] opens the same database
/// ([`plain_file`]).
pub(super) async fn connect(url: &str) -> Result<(AnyPool, Option<PathBuf>), sqlx::Error> {
    let file = plain_file(url)?;
    let pool = pool_options(8, Duration::from_secs(10), PRAGMAS).test_before_acquire(false).connect(url).await?;
    Ok((pool, file))
}

/// The file of `url` where it is one opened read-write with the default VFS: not an in-memory
/// database (whose name sqlx makes up), nor one opened read-only, immutable or through another
/// VFS, which [`open_direct`] would open otherwise.
fn plain_file(url: &str) -> Result<Option<PathBuf>, sqlx::Error> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    // The parameters sqlx reads: `mode`, `cache`, `immutable` and `vfs`.
    let (database, parameters) = url.split_once('?').unwrap_or((url, ""));
    let plain = !database.ends_with(":memory:")
        && parameters.split('&').filter(|pair| !pair.is_empty()).all(|pair| match pair.split_once('=') {
            Some(("mode", mode)) => mode == "rw" || mode == "rwc",
            Some(("cache", _)) => true,
            _ => false,
        });
    Ok(plain.then(|| options.get_filename().to_owned()))
}

/// A connection to the SQLite `file` for the calling thread alone, with the pool's settings.
///
/// A pooled connection runs each statement on a thread of its own: every statement is a
/// round trip to that thread, and under load each wake-up waits for a core. A thread that runs
/// a short transaction on every step (the consumer's batch of creates) runs it on this
/// connection itself, with no wake-up between its statements. Its commits are as durable as
/// the pool's (`synchronous = FULL`).
pub fn open_direct(file: &Path) -> rusqlite::Result<rusqlite::Connection> {
    // One thread uses it at a time (it is not `Sync`), so SQLite's own mutex is not needed.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = rusqlite::Connection::open_with_flags(file, flags)?;
    connection.execute_batch(PRAGMAS)?;
    Ok(connection)
}

/// [`error_class`] of a failure on an [`open_direct`] connection: anything that is not a
/// result code of the engine (a type mismatch, a closed connection) is the store's.
pub fn direct_error_class(error: &rusqlite::Error) -> ErrorClass {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => error_class(failure.extended_code),
        _ => ErrorClass::Store,
    }
}

/// SQLite result codes (primary or extended) that are the store's fault.
pub fn error_class(code: i32) -> ErrorClass {
    // The primary code is the low byte of an extended one.
    match code & 0xff {
        // SQLITE_BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, CORRUPT, FULL, CANTOPEN,
        // PROTOCOL, NOTADB.
        5 | 6 | 7 | 8 | 9 | 10 | 11 | 13 | 14 | 15 | 26 => ErrorClass::Store,
        _ => ErrorClass::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::sql::{Database, error_class as class_of};

    #[test]
    fn sqlite_codes_of_the_store_are_retried_and_data_errors_counted() {
        // Primary and extended codes: BUSY, BUSY_SNAPSHOT, LOCKED, READONLY, READONLY_DBMOVED,
        // IOERR, IOERR_FSYNC, FULL, CANTOPEN, NOMEM, INTERRUPT.
        for code in [5, 517, 6, 8, 1032, 10, 1034, 13, 14, 7, 9] {
            assert_eq!(error_class(code), ErrorClass::Store, "code {code}");
        }
        // CONSTRAINT, CONSTRAINT_UNIQUE, CONSTRAINT_FOREIGNKEY, TOOBIG, MISMATCH, generic ERROR.
        for code in [19, 2067, 787, 18, 20, 1] {
            assert_eq!(error_class(code), ErrorClass::Data, "code {code}");
        }
    }

    /// Real SQLite failures, classified from what the driver returns.
    #[tokio::test]
    async fn real_sqlite_failures_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(dir.path(), "classes.db").await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)").execute(db.pool()).await.unwrap();
        sqlx::query("INSERT INTO t (id) VALUES (1)").execute(db.pool()).await.unwrap();
        let duplicate = sqlx::query("INSERT INTO t (id) VALUES (1)").execute(db.pool()).await.unwrap_err();
        assert_eq!(class_of(&duplicate), ErrorClass::Data, "{duplicate}");

        // Another connection holds the write lock; this one does not wait for it.
        use sqlx::ConnectOptions;
        let path = dir.path().join("classes.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::ZERO);
        let mut holder = options.connect().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
        let mut other = options.connect().await.unwrap();
        let busy = sqlx::query("INSERT INTO t (id) VALUES (2)").execute(&mut other).await.unwrap_err();
        assert_eq!(class_of(&busy), ErrorClass::Store, "{busy}");
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

        let read_only = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
        let mut reader = read_only.connect().await.unwrap();
        let refused = sqlx::query("INSERT INTO t (id) VALUES (3)").execute(&mut reader).await.unwrap_err();
        assert_eq!(class_of(&refused), ErrorClass::Store, "{refused}");
    }

    /// Only a file opened read-write with the default VFS is one [`open_direct`] opens too.
    #[test]
    fn only_a_plain_file_is_offered_to_an_own_connection() {
        let plain = |url: &str| plain_file(url).unwrap();
        assert_eq!(plain("sqlite:///data/chatmesh.db?mode=rwc"), Some(PathBuf::from("/data/chatmesh.db")));
        assert_eq!(plain("sqlite://chatmesh.db"), Some(PathBuf::from("chatmesh.db")));
        for other in [
            "sqlite::memory:",
            "sqlite://chatmesh.db?mode=memory",
            "sqlite://chatmesh.db?mode=ro",
            "sqlite://chatmesh.db?immutable=true",
            "sqlite://chatmesh.db?mode=rwc&vfs=unix-dotfile",
        ] {
            assert_eq!(plain(other), None, "{other}");
        }
    }

    /// A connection of one's own writes the pool's file with the pool's durability, and its
    /// failures are classified as the pool's are.
    #[tokio::test]
    async fn an_own_connection_shares_the_pools_file_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(dir.path(), "own.db").await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)").execute(db.pool()).await.unwrap();
        let own = open_direct(db.sqlite_file().expect("a file")).unwrap();
        let journal: String = own.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(journal, "wal");
        let synchronous: i64 = own.query_row("PRAGMA synchronous", [], |row| row.get(0)).unwrap();
        assert_eq!(synchronous, 2, "FULL: a commit is durable when it returns");

        own.execute("INSERT INTO t (id) VALUES (1)", []).unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(db.pool()).await.unwrap();
        assert_eq!(seen, 1, "the pool reads what the own connection committed");
        let duplicate = own.execute("INSERT INTO t (id) VALUES (1)", []).unwrap_err();
        assert_eq!(direct_error_class(&duplicate), ErrorClass::Data, "{duplicate}");

        let mut holder = db.pool().acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *holder).await.unwrap();
        own.execute_batch("PRAGMA busy_timeout = 0").unwrap();
        let busy = own.execute("INSERT INTO t (id) VALUES (2)", []).unwrap_err();
        assert_eq!(direct_error_class(&busy), ErrorClass::Store, "{busy}");
        sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
    }
}
