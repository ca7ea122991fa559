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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("mysql://root:secret@localhost/db"), "mysql://root:***@localhost/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(0), "");
        assert_eq!(placeholders(3), "?, ?, ?");
    }
}
