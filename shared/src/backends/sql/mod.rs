//! The SQL store port: one pool over SQLite (embedded) or MySQL / MariaDB (production), with a
//! dialect for the few statements the two spell differently, and a migration runner that lets
//! each service own its tables.
//!
//! Queries are written once with `?` placeholders, which both drivers accept; timestamps are
//! stored as BIGINT milliseconds so no date type differs between the two. What each engine
//! does its own way (its connection settings, which failures are the store's) lives in
//! [`mysql`] and [`sqlite`]; both are always built, since every service keeps its tables in
//! one of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor, Row};

use super::{BackendError, BackendResult};

pub mod mysql;
pub mod sqlite;

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
    /// The file of a SQLite store, for a connection of one's own ([`sqlite::open_direct`]);
    /// `None` where that would not open the same database (in memory, read-only, another VFS).
    sqlite_file: Option<PathBuf>,
}

impl Database {
    /// Connects to `url` (`mysql://...` or `sqlite://...`).
    pub async fn connect(url: &str) -> BackendResult<Self> {
        sqlx::any::install_default_drivers();
        if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Ok(Self { pool: mysql::connect(url).await?, dialect: Dialect::MySql, sqlite_file: None })
        } else if url.starts_with("sqlite:") {
            let (pool, sqlite_file) = sqlite::connect(url).await?;
            Ok(Self { pool, dialect: Dialect::Sqlite, sqlite_file })
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

    /// The file of a SQLite store that a connection of one's own may open (`None` on MySQL).
    pub fn sqlite_file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
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

/// Pool options for an engine: every new connection first runs `setup` (its session settings).
fn pool_options(max_connections: u32, acquire_timeout: Duration, setup: &'static str) -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(acquire_timeout).after_connect(
        move |conn, _meta| {
            Box::pin(async move {
                conn.execute(setup).await?;
                Ok(())
            })
        },
    )
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
    if let Some(server) = database.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql::error_class(server.number());
    }
    if database.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code = database.code().and_then(|code| code.parse::<i32>().ok()).unwrap_or(0);
        return sqlite::error_class(code);
    }
    ErrorClass::Data
}

/// A value a statement binds: an integer (or NULL) or a text.
pub trait Value: Sync {
    fn bind_to<'q>(&'q self, query: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>>;
}

impl Value for i64 {
    fn bind_to<'q>(&'q self, query: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        query.bind(*self)
    }
}

impl Value for Option<i64> {
    fn bind_to<'q>(&'q self, query: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        query.bind(*self)
    }
}

impl Value for &str {
    fn bind_to<'q>(&'q self, query: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        query.bind(*self)
    }
}

impl Value for String {
    fn bind_to<'q>(&'q self, query: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        query.bind(self.as_str())
    }
}

/// `sql` with `values` bound to its placeholders, in order.
pub fn statement<'q>(sql: &'q str, values: &[&'q dyn Value]) -> Query<'q, Any, AnyArguments<'q>> {
    values.iter().fold(sqlx::query(sql), |query, value| value.bind_to(query))
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
    fn errors_that_are_not_the_servers_answer_are_the_stores() {
        assert_eq!(error_class(&sqlx::Error::PoolTimedOut), ErrorClass::Store);
        assert_eq!(error_class(&sqlx::Error::PoolClosed), ErrorClass::Store);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_class(&sqlx::Error::Io(refused)), ErrorClass::Store);
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(0), "");
        assert_eq!(placeholders(3), "?, ?, ?");
    }
}
