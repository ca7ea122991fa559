//! MySQL / MariaDB, the production SQL store: what the engine needs that SQLite does not.
//!
//! Connections run in strict mode with utf8mb4, so a value the column cannot hold is an error
//! rather than silently cut or converted. The server's error numbers say whose fault a failure
//! is ([`error_class`]).

use std::time::Duration;

use sqlx::AnyPool;

use super::{ErrorClass, pool_options};

/// A pool on `url` (`mysql://` or `mariadb://`).
pub(super) async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    let url = url.replacen("mariadb:", "mysql:", 1);
    pool_options(
        16,
        Duration::from_secs(5),
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', NAMES utf8mb4",
    )
    .connect(&url)
    .await
}

/// MySQL / MariaDB server error numbers that are the store's fault.
pub fn error_class(number: u16) -> ErrorClass {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(error_class(number), ErrorClass::Store, "{number}: {what}");
        }
        for (number, what) in [
            (1062, "duplicate key"),
            (1452, "foreign key"),
            (1048, "null in a not-null column"),
            (1406, "data too long"),
            (1366, "incorrect string value"),
            (1264, "out of range"),
        ] {
            assert_eq!(error_class(number), ErrorClass::Data, "{number}: {what}");
        }
    }
}
