//! The events tables, written for SQLite and MySQL. Timestamps are BIGINT milliseconds.
//!
//! - `event_sessions`, `events`, `event_errors`, `event_schemas`: seed 001. `seq` orders rows
//!   for keyset pages and keeps InnoDB's clustered key sequential; clients see the UUID `id`.
//! - `user_events`, `user_countries`: seed 003. `(session_id, event)` is the key, so a
//!   duplicate start or end is ignored and a session is complete once both rows exist.

use shared::backends::sql::Migration;

macro_rules! pageview_schema {
    () => {
        r#"{"type":"object","required":["host","path"],"properties":{"host":{"type":"string","minLength":1},"path":{"type":"string","minLength":1}}}"#
    };
}

macro_rules! cta_click_schema {
    () => {
        r#"{"type":"object","required":["host","path","element"],"properties":{"host":{"type":"string","minLength":1},"path":{"type":"string","minLength":1},"element":{"type":"string","minLength":1}}}"#
    };
}

macro_rules! form_submit_schema {
    () => {
        r#"{"type":"object","required":["host","path","form"],"properties":{"host":{"type":"string","minLength":1},"path":{"type":"string","minLength":1},"form":{"type":"object"}}}"#
    };
}

/// The schemas shipped with the service, registered by the first migration (so one an operator
/// replaces or deletes stays that way); more are registered through `/schemas/`.
pub const BUILT_IN_SCHEMAS: [(&str, &str, &str); 3] = [
    ("page interaction", "pageview", pageview_schema!()),
    ("page interaction", "cta click", cta_click_schema!()),
    ("form interaction", "submit", form_submit_schema!()),
];

const INSERT_BUILT_IN_SCHEMAS: &str = concat!(
    "INSERT INTO event_schemas (category, name, schema_json, created_at, updated_at) VALUES ",
    "('page interaction', 'pageview', '",
    pageview_schema!(),
    "', 0, 0), ('page interaction', 'cta click', '",
    cta_click_schema!(),
    "', 0, 0), ('form interaction', 'submit', '",
    form_submit_schema!(),
    "', 0, 0)"
);

macro_rules! mysql_table {
    ($body:literal) => {
        concat!($body, " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
    };
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions, events, errors, schemas",
        sqlite: &[
            "CREATE TABLE event_sessions (seq INTEGER PRIMARY KEY, id VARCHAR(36) NOT NULL UNIQUE, \
             created_at BIGINT NOT NULL)",
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, id VARCHAR(36) NOT NULL UNIQUE, \
             session_id VARCHAR(36) NOT NULL, category VARCHAR(200) NOT NULL, name VARCHAR(200) NOT NULL, \
             data TEXT NOT NULL, ts BIGINT NOT NULL, client_event_id VARCHAR(200), received_at BIGINT NOT NULL, \
             updated_at BIGINT NOT NULL, version BIGINT NOT NULL)",
            "CREATE INDEX events_session_ts ON events (session_id, ts)",
            "CREATE INDEX events_type_ts ON events (category, name, ts)",
            "CREATE INDEX events_ts ON events (ts)",
            "CREATE TABLE event_errors (seq INTEGER PRIMARY KEY, id VARCHAR(36) NOT NULL UNIQUE, \
             session_id VARCHAR(200), payload TEXT NOT NULL, reasons TEXT NOT NULL, received_at BIGINT NOT NULL, \
             created_at BIGINT NOT NULL)",
            "CREATE INDEX event_errors_session ON event_errors (session_id)",
            "CREATE TABLE event_schemas (category VARCHAR(200) NOT NULL, name VARCHAR(200) NOT NULL, \
             schema_json TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
             PRIMARY KEY (category, name))",
            INSERT_BUILT_IN_SCHEMAS,
        ],
        mysql: &[
            mysql_table!(
                "CREATE TABLE IF NOT EXISTS event_sessions (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 id VARCHAR(36) NOT NULL, created_at BIGINT NOT NULL, UNIQUE KEY event_sessions_id (id))"
            ),
            mysql_table!(
                "CREATE TABLE IF NOT EXISTS events (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 id VARCHAR(36) NOT NULL, session_id VARCHAR(36) NOT NULL, category VARCHAR(200) NOT NULL, \
                 name VARCHAR(200) NOT NULL, data MEDIUMTEXT NOT NULL, ts BIGINT NOT NULL, \
                 client_event_id VARCHAR(200) NULL, received_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
                 version BIGINT NOT NULL, UNIQUE KEY events_id (id), KEY events_session_ts (session_id, ts), \
                 KEY events_type_ts (category, name, ts), KEY events_ts (ts))"
            ),
            mysql_table!(
                "CREATE TABLE IF NOT EXISTS event_errors (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 id VARCHAR(36) NOT NULL, session_id VARCHAR(200) NULL, payload MEDIUMTEXT NOT NULL, \
                 reasons MEDIUMTEXT NOT NULL, received_at BIGINT NOT NULL, created_at BIGINT NOT NULL, \
                 UNIQUE KEY event_errors_id (id), KEY event_errors_session (session_id))"
            ),
            mysql_table!(
                "CREATE TABLE IF NOT EXISTS event_schemas (category VARCHAR(200) NOT NULL, \
                 name VARCHAR(200) NOT NULL, schema_json MEDIUMTEXT NOT NULL, created_at BIGINT NOT NULL, \
                 updated_at BIGINT NOT NULL, PRIMARY KEY (category, name))"
            ),
            INSERT_BUILT_IN_SCHEMAS,
        ],
    },
    Migration {
        version: 2,
        name: "user session events",
        sqlite: &[
            "CREATE TABLE user_events (session_id VARCHAR(128) NOT NULL, event VARCHAR(5) NOT NULL, \
             user_id VARCHAR(128) NOT NULL, country VARCHAR(64), ts BIGINT NOT NULL, received_at BIGINT NOT NULL, \
             PRIMARY KEY (session_id, event)) WITHOUT ROWID",
            "CREATE INDEX user_events_user ON user_events (user_id, event, ts)",
            "CREATE INDEX user_events_time ON user_events (event, ts)",
            "CREATE INDEX user_events_received ON user_events (received_at)",
            "CREATE TABLE user_countries (country VARCHAR(64) NOT NULL PRIMARY KEY, first_seen BIGINT NOT NULL) \
             WITHOUT ROWID",
        ],
        mysql: &[
            mysql_table!(
                "CREATE TABLE IF NOT EXISTS user_events (session_id VARCHAR(128) NOT NULL, event VARCHAR(5) NOT NULL, \
                 user_id VARCHAR(128) NOT NULL, country VARCHAR(64) NULL, ts BIGINT NOT NULL, \
                 received_at BIGINT NOT NULL, PRIMARY KEY (session_id, event), \
                 KEY user_events_user (user_id, event, ts), KEY user_events_time (event, ts), \
                 KEY user_events_received (received_at))"
            ),
            mysql_table!(
                "CREATE TABLE IF NOT EXISTS user_countries (country VARCHAR(64) NOT NULL PRIMARY KEY, \
                 first_seen BIGINT NOT NULL)"
            ),
        ],
    },
];

#[cfg(test)]
mod tests {
    #[test]
    fn built_in_schemas_are_json_objects() {
        for (_, _, schema) in super::BUILT_IN_SCHEMAS {
            assert!(serde_json::from_str::<serde_json::Value>(schema).unwrap().is_object());
        }
        assert!(!super::INSERT_BUILT_IN_SCHEMAS.contains("\\'"));
    }

    #[test]
    fn mysql_tables_are_utf8mb4_binary() {
        for migration in super::MIGRATIONS {
            for statement in migration.mysql.iter().filter(|s| s.starts_with("CREATE TABLE")) {
                assert!(
                    statement.ends_with("ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
                    "{statement}"
                );
            }
        }
    }
}
