//! The SQL store port: one pool over SQLite (embedded) or MySQL / MariaDB (production), with a
//! dialect for the few statements the two spell differently, and a migration runner that lets
//! each service own its tables.
//!
//! Queries are written once with `?` placeholders, which both drivers accept; timestamps are
//! stored as BIGINT milliseconds so no date type differs between the two.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use super::{BackendError, BackendResult};

/// Which SQL the store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
}

/// A schema change, written for both dialects.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static [&'static str],
    pub mysql: &'static [&'static str],
}

/// A text column of `row`: the Any driver reports MySQL's TEXT types as BLOB, so their bytes
/// are read and checked as UTF-8 when a string does not decode.
pub fn text(row: &AnyRow, index: usize) -> Result<Option<String>, sqlx::Error> {
    match row.try_get::<Option<String>, _>(index) {
        Ok(text) => Ok(text),
        Err(sqlx::Error::ColumnDecode { .. }) => match row.try_get::<Option<Vec<u8>>, _>(index)? {
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| sqlx::Error::ColumnDecode { index: index.to_string(), source: Box::new(e) }),
            None => Ok(None),
        },
        Err(other) => Err(other),
    }
}

/// The SQL store: a pooled connection to SQLite or MySQL.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

impl Database {
    /// Connects to `url` (`mysql://...` or `sqlite://...`).
    pub async fn connect(url: &str) -> BackendResult<Self> {
        sqlx::any::install_default_drivers();
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(
                            "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', NAMES utf8mb4",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await?;
            Ok(Self { pool, dialect: Dialect::MySql })
        } else if url.starts_with("sqlite:") {
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // WAL lets readers run beside the one writer; FULL makes a commit
                        // durable before it returns, which is what a 2xx promises.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            Ok(Self { pool, dialect: Dialect::Sqlite })
        } else {
            Err(BackendError::Other(format!("unsupported database url scheme: {}", redact(url))))
        }
    }

    /// Opens (creating it if needed) the SQLite file `name` under `dir`.
    pub async fn open_sqlite(dir: &Path, name: &str) -> BackendResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| BackendError::Other(format!("data dir {}: {e}", dir.display())))?;
        let path = dir.join(name);
        Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The statement prefix that inserts and silently skips rows whose unique key exists.
    pub fn insert_ignore(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "INSERT OR IGNORE",
            Dialect::MySql => "INSERT IGNORE",
        }
    }

    /// Answers when the database answers a trivial query.
    pub async fn ping(&self) -> BackendResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies the migrations of `service` not applied yet, in version order. Safe to run from
    /// several processes at once: MySQL serialises them with a named lock, SQLite with its
    /// write lock.
    pub async fn migrate(&self, service: &str, migrations: &[Migration]) -> BackendResult<()> {
        let mut conn = self.pool.acquire().await?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS chatmesh_migrations (service VARCHAR(64) NOT NULL, \
             version BIGINT NOT NULL, name VARCHAR(200) NOT NULL, applied_at BIGINT NOT NULL, \
             PRIMARY KEY (service, version))",
        )
        .await?;
        match self.dialect {
            Dialect::MySql => {
                // MySQL commits DDL implicitly, so a named lock is what keeps two processes
                // from interleaving their migrations.
                let got: i64 = sqlx::query("SELECT COALESCE(GET_LOCK('chatmesh_migrate', 60), 0)")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
                if got != 1 {
                    return Err(BackendError::Unavailable("could not take the migration lock".into()));
                }
                let outcome = apply_pending(&mut conn, self.dialect, service, migrations).await;
                sqlx::query("SELECT RELEASE_LOCK('chatmesh_migrate')").execute(&mut *conn).await?;
                outcome
            }
            Dialect::Sqlite => {
                // SQLite runs DDL transactionally: one IMMEDIATE transaction takes the write
                // lock before reading what is applied, so concurrent migrators queue up.
                conn.execute("BEGIN IMMEDIATE").await?;
                match apply_pending(&mut conn, self.dialect, service, migrations).await {
                    Ok(()) => {
                        conn.execute("COMMIT").await?;
                        Ok(())
                    }
                    Err(error) => {
                        let _ = conn.execute("ROLLBACK").await;
                        Err(error)
                    }
                }
            }
        }
    }
}

async fn apply_pending(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    dialect: Dialect,
    service: &str,
    migrations: &[Migration],
) -> BackendResult<()> {
    let mut sorted: Vec<_> = migrations.iter().collect();
    sorted.sort_by_key(|m| m.version);
    for migration in sorted {
        let applied = sqlx::query("SELECT COUNT(*) FROM chatmesh_migrations WHERE service = ? AND version = ?")
            .bind(service)
            .bind(migration.version)
            .fetch_one(&mut **conn)
            .await?
            .try_get::<i64, _>(0)?;
        if applied > 0 {
            continue;
        }
        let statements = match dialect {
            Dialect::Sqlite => migration.sqlite,
            Dialect::MySql => migration.mysql,
        };
        for statement in statements {
            conn.execute(*statement).await?;
        }
        sqlx::query("INSERT INTO chatmesh_migrations (service, version, name, applied_at) VALUES (?, ?, ?, ?)")
            .bind(service)
            .bind(migration.version)
            .bind(migration.name)
            .bind(crate::now_millis())
            .execute(&mut **conn)
            .await?;
        tracing::info!(service, version = migration.version, name = migration.name, "migration applied");
    }
    Ok(())
}

/// Reads an optional i64 column that may come back as NULL (e.g. `MAX` over no rows).
pub fn optional_i64(row: &AnyRow, index: usize) -> BackendResult<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(index)?)
}

/// `?, ?, ?` with `n` placeholders.
pub fn placeholders(n: usize) -> String {
    let mut out = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('?');
    }
    out
}

/// A URL with its password replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Whose fault a failed statement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The statement's data (a constraint, a value out of range, text the column cannot hold):
    /// the same statement fails again, so it counts against a command's attempts.
    Data,
    /// The store (down, unreachable, read-only, full, locked, shutting down, out of
    /// connections): the same statement succeeds once the store is back, so it is retried
    /// without limit and never dead-lettered.
    Store,
}

/// Classifies a failed statement by the server's own error number (MySQL / MariaDB) or result
/// code (SQLite); anything that is not an answer from the server (I/O, pool, TLS, protocol) is
/// the store's.
pub fn error_class(error: &sqlx::Error) -> ErrorClass {
    let sqlx::Error::Database(database) = error else { return ErrorClass::Store };
    if let Some(mysql) = database.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql_error_class(mysql.number());
    }
    if database.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code = database.code().and_then(|code| code.parse::<i32>().ok()).unwrap_or(0);
        return sqlite_error_class(code);
    }
    ErrorClass::Data
}

/// MySQL / MariaDB server error numbers that are the store's fault.
pub fn mysql_error_class(number: u16) -> ErrorClass {
    match number {
        // Locks: lock wait timeout, deadlock, too many concurrent transactions, XA deadlock.
        1205 | 1213 | 1637 | 1614
        // Read-only: --read-only, a read-only transaction, innodb read-only mode.
        | 1290 | 1792 | 1836
        // Full or out of resources: disk full, table full, out of memory, out of resources,
        // error from the storage engine or on write, commit / rollback failed.
        | 1021 | 1114 | 1037 | 1038 | 1041 | 1030 | 3 | 1180 | 1181
        // Shutting down or connection cut: shutdown in progress, normal shutdown, aborted
        // connection, connection killed, query interrupted, statement timeouts.
        | 1053 | 1077 | 1079 | 1152 | 1927 | 1317 | 1969 | 3024
        // Out of connections.
        | 1040 | 1203 | 1226
        // Not set up (yet): unknown database or table, access denied.
        | 1049 | 1146 | 1044 | 1045 | 1142 => ErrorClass::Store,
        _ => ErrorClass::Data,
    }
}

/// SQLite result codes (primary or extended) that are the store's fault.
pub fn sqlite_error_class(code: i32) -> ErrorClass {
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

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("mysql://root:secret@localhost/db"), "mysql://root:***@localhost/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn mysql_errors_of_the_store_are_retried_and_data_errors_counted() {
        for (number, what) in [
            (1205, "lock wait timeout"),
            (1213, "deadlock"),
            (1290, "read-only server"),
            (1792, "read-only transaction"),
            (1836, "read-only mode"),
            (1021, "disk full"),
            (1114, "table full"),
            (1041, "out of resources"),
            (1053, "server shutting down"),
            (1927, "connection killed"),
            (1969, "statement timeout"),
            (1040, "too many connections"),
            (1146, "table missing"),
        ] {
            assert_eq!(mysql_error_class(number), ErrorClass::Store, "{number}: {what}");
        }
        for (number, what) in [
            (1062, "duplicate key"),
            (1452, "foreign key"),
            (1048, "null in a not-null column"),
            (1406, "data too long"),
            (1366, "incorrect string value"),
            (1264, "out of range"),
        ] {
            assert_eq!(mysql_error_class(number), ErrorClass::Data, "{number}: {what}");
        }
    }

    #[test]
    fn sqlite_codes_of_the_store_are_retried_and_data_errors_counted() {
        // Primary and extended codes: BUSY, BUSY_SNAPSHOT, LOCKED, READONLY, READONLY_DBMOVED,
        // IOERR, IOERR_FSYNC, FULL, CANTOPEN, NOMEM, INTERRUPT.
        for code in [5, 517, 6, 8, 1032, 10, 1034, 13, 14, 7, 9] {
            assert_eq!(sqlite_error_class(code), ErrorClass::Store, "code {code}");
        }
        // CONSTRAINT, CONSTRAINT_UNIQUE, CONSTRAINT_FOREIGNKEY, TOOBIG, MISMATCH, generic ERROR.
        for code in [19, 2067, 787, 18, 20, 1] {
            assert_eq!(sqlite_error_class(code), ErrorClass::Data, "code {code}");
        }
    }

    #[test]
    fn errors_that_are_not_the_servers_answer_are_the_stores() {
        assert_eq!(error_class(&sqlx::Error::PoolTimedOut), ErrorClass::Store);
        assert_eq!(error_class(&sqlx::Error::PoolClosed), ErrorClass::Store);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_class(&sqlx::Error::Io(refused)), ErrorClass::Store);
    }

    /// Real SQLite failures, classified from what the driver returns.
    #[tokio::test]
    async fn real_sqlite_failures_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(dir.path(), "classes.db").await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)").execute(db.pool()).await.unwrap();
        sqlx::query("INSERT INTO t (id) VALUES (1)").execute(db.pool()).await.unwrap();
        let duplicate = sqlx::query("INSERT INTO t (id) VALUES (1)").execute(db.pool()).await.unwrap_err();
        assert_eq!(error_class(&duplicate), ErrorClass::Data, "{duplicate}");

        // Another connection holds the write lock; this one does not wait for it.
        use sqlx::ConnectOptions;
        let path = dir.path().join("classes.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::ZERO);
        let mut holder = options.connect().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
        let mut other = options.connect().await.unwrap();
        let busy = sqlx::query("INSERT INTO t (id) VALUES (2)").execute(&mut other).await.unwrap_err();
        assert_eq!(error_class(&busy), ErrorClass::Store, "{busy}");
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

        let read_only = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
        let mut reader = read_only.connect().await.unwrap();
        let refused = sqlx::query("INSERT INTO t (id) VALUES (3)").execute(&mut reader).await.unwrap_err();
        assert_eq!(error_class(&refused), ErrorClass::Store, "{refused}");
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(0), "");
        assert_eq!(placeholders(3), "?, ?, ?");
    }
}
