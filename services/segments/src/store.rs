//! The segments tables and every statement the service runs, written once for SQLite and
//! MySQL / MariaDB (`?` placeholders, BIGINT milliseconds, BIGINT 0/1 for booleans).
//!
//! - `segments`: one row per segment ever created; the legacy numeric `id`, the v1 `uuid`,
//!   the slug / key. Deleting is soft (`deleted = 1`); `live_key` equals the key while the
//!   segment is live and is NULL once deleted, so its UNIQUE index lets a key be reused after
//!   a delete while the legacy list still shows the deleted row.
//! - `segment_revision`: one counter bumped by every segment write, so evaluation knows with
//!   one primary-key read whether its compiled snapshot is still current, in any process.
//! - `segment_memberships` / `segment_history`: explicit memberships with their optional
//!   expiry, and the add / remove lines of the CSV report, each with the slug the segment had
//!   when the line was written (a later key change leaves the past alone). An expired
//!   membership is written to the history as a `remove` at its expiry time when it is next
//!   touched (a change of the user's segments, a report, a delete or a key change of the
//!   segment, or the periodic sweep); queries of active segments exclude it before that, from
//!   the moment it expires.
//! - `segment_decisions`, `segment_flags`, `segment_flag_rules`, `segment_api_keys`.

use shared::backends::sql::{Database, Dialect, Migration, placeholders, statement, text};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

pub type SqlResult<T> = Result<T, sqlx::Error>;
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

pub const MIGRATIONS: &[Migration] = &[CREATE_TABLES, HISTORY_SLUGS, REVOCATION_AND_SECRETS, MEMBERSHIP_GENERATION];

/// The tables as first created.
const CREATE_TABLES: Migration = Migration {
    version: 1,
    name: "segments, memberships, history, decisions, flags, api keys",
    sqlite: &[
        "CREATE TABLE segments (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid VARCHAR(36) NOT NULL UNIQUE, \
         seg_key VARCHAR(200) NOT NULL, live_key VARCHAR(200) UNIQUE, name VARCHAR(200) NOT NULL, \
         description TEXT, rule_type VARCHAR(8) NOT NULL, rule_content TEXT, decision_id VARCHAR(36), \
         percent BIGINT, version BIGINT NOT NULL, deleted BIGINT NOT NULL DEFAULT 0, \
         created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, deleted_at BIGINT)",
        "CREATE INDEX segments_key ON segments (seg_key)",
        "CREATE TABLE segment_revision (id BIGINT PRIMARY KEY, revision BIGINT NOT NULL)",
        "INSERT OR IGNORE INTO segment_revision (id, revision) VALUES (1, 0)",
        "CREATE TABLE segment_memberships (user_id VARCHAR(191) NOT NULL, segment_id BIGINT NOT NULL, \
         added_at BIGINT NOT NULL, ordinal BIGINT NOT NULL, expires_at BIGINT, PRIMARY KEY (user_id, segment_id))",
        "CREATE INDEX segment_memberships_segment ON segment_memberships (segment_id)",
        "CREATE INDEX segment_memberships_expiry ON segment_memberships (expires_at)",
        "CREATE TABLE segment_history (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id VARCHAR(191) NOT NULL, \
         segment_id BIGINT NOT NULL, action VARCHAR(8) NOT NULL, at BIGINT NOT NULL)",
        "CREATE INDEX segment_history_user ON segment_history (user_id, at)",
        "CREATE TABLE segment_decisions (uuid VARCHAR(36) PRIMARY KEY, name VARCHAR(200) NOT NULL, \
         decision_name VARCHAR(200) NOT NULL, content TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE TABLE segment_flags (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid VARCHAR(36) NOT NULL UNIQUE, \
         flag_key VARCHAR(200) NOT NULL UNIQUE, name VARCHAR(200) NOT NULL, enabled BIGINT NOT NULL, \
         default_variation BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE TABLE segment_flag_rules (flag_id BIGINT NOT NULL, position BIGINT NOT NULL, \
         segment_id BIGINT NOT NULL, variation BIGINT NOT NULL, PRIMARY KEY (flag_id, position))",
        "CREATE INDEX segment_flag_rules_segment ON segment_flag_rules (segment_id)",
        "CREATE TABLE segment_api_keys (id VARCHAR(36) PRIMARY KEY, name VARCHAR(200) NOT NULL, \
         key_hash VARCHAR(64) NOT NULL UNIQUE, permissions VARCHAR(500) NOT NULL, created_at BIGINT NOT NULL)",
    ],
    mysql: &[
        "CREATE TABLE IF NOT EXISTS segments (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         uuid VARCHAR(36) NOT NULL, seg_key VARCHAR(200) NOT NULL, live_key VARCHAR(200) NULL, \
         name VARCHAR(200) NOT NULL, description TEXT NULL, rule_type VARCHAR(8) NOT NULL, \
         rule_content MEDIUMTEXT NULL, decision_id VARCHAR(36) NULL, percent BIGINT NULL, \
         version BIGINT NOT NULL, deleted BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL, deleted_at BIGINT NULL, UNIQUE KEY segments_uuid (uuid), \
         UNIQUE KEY segments_live_key (live_key), KEY segments_key (seg_key)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS segment_revision (id BIGINT NOT NULL PRIMARY KEY, revision BIGINT NOT NULL) \
         ENGINE=InnoDB",
        "INSERT IGNORE INTO segment_revision (id, revision) VALUES (1, 0)",
        "CREATE TABLE IF NOT EXISTS segment_memberships (user_id VARCHAR(191) NOT NULL, segment_id BIGINT NOT NULL, \
         added_at BIGINT NOT NULL, ordinal BIGINT NOT NULL, expires_at BIGINT NULL, \
         PRIMARY KEY (user_id, segment_id), KEY segment_memberships_segment (segment_id), \
         KEY segment_memberships_expiry (expires_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS segment_history (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         user_id VARCHAR(191) NOT NULL, segment_id BIGINT NOT NULL, action VARCHAR(8) NOT NULL, at BIGINT NOT NULL, \
         KEY segment_history_user (user_id, at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS segment_decisions (uuid VARCHAR(36) NOT NULL PRIMARY KEY, \
         name VARCHAR(200) NOT NULL, decision_name VARCHAR(200) NOT NULL, content MEDIUMTEXT NOT NULL, \
         created_at BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS segment_flags (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         uuid VARCHAR(36) NOT NULL, flag_key VARCHAR(200) NOT NULL, name VARCHAR(200) NOT NULL, \
         enabled BIGINT NOT NULL, default_variation BIGINT NOT NULL, created_at BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL, UNIQUE KEY segment_flags_uuid (uuid), UNIQUE KEY segment_flags_key (flag_key)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS segment_flag_rules (flag_id BIGINT NOT NULL, position BIGINT NOT NULL, \
         segment_id BIGINT NOT NULL, variation BIGINT NOT NULL, PRIMARY KEY (flag_id, position), \
         KEY segment_flag_rules_segment (segment_id)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS segment_api_keys (id VARCHAR(36) NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL, \
         key_hash VARCHAR(64) NOT NULL, permissions VARCHAR(500) NOT NULL, created_at BIGINT NOT NULL, \
         UNIQUE KEY segment_api_keys_hash (key_hash)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    ],
};

/// A history line keeps the slug it was written under: renaming a segment's key does not
/// rewrite the past. Lines written before this migration take the key their segment has now
/// (the best that is known of them).
const HISTORY_SLUGS: Migration = Migration {
    version: 2,
    name: "history lines keep their slug",
    sqlite: &[
        "ALTER TABLE segment_history ADD COLUMN slug VARCHAR(200) NOT NULL DEFAULT ''",
        "UPDATE segment_history SET slug = COALESCE((SELECT s.seg_key FROM segments s \
         WHERE s.id = segment_history.segment_id), '')",
    ],
    mysql: &[
        "ALTER TABLE segment_history ADD COLUMN slug VARCHAR(200) NOT NULL DEFAULT ''",
        "UPDATE segment_history h JOIN segments s ON s.id = h.segment_id SET h.slug = s.seg_key",
    ],
};

/// A key can be revoked (`segments revoke-key`): the row stays, for the record, with the time
/// it stopped working. `segment_secrets` holds the server secret that signs history links, one
/// row every replica on the store reads, so a link one replica gave works on all of them.
const REVOCATION_AND_SECRETS: Migration = Migration {
    version: 3,
    name: "api keys can be revoked; server secrets",
    sqlite: &[
        "ALTER TABLE segment_api_keys ADD COLUMN revoked_at BIGINT",
        "CREATE TABLE segment_secrets (name VARCHAR(64) PRIMARY KEY, secret VARCHAR(128) NOT NULL)",
    ],
    mysql: &[
        "ALTER TABLE segment_api_keys ADD COLUMN revoked_at BIGINT NULL",
        "CREATE TABLE IF NOT EXISTS segment_secrets (name VARCHAR(64) NOT NULL PRIMARY KEY, \
         secret VARCHAR(128) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    ],
};

/// A second counter in `segment_revision` (row 2), bumped by every transaction that adds or
/// removes explicit memberships, so an evaluation can keep the memberships it read while the
/// counter stays where it was.
const MEMBERSHIP_GENERATION: Migration = Migration {
    version: 4,
    name: "membership generation",
    sqlite: &["INSERT OR IGNORE INTO segment_revision (id, revision) VALUES (2, 0)"],
    mysql: &["INSERT IGNORE INTO segment_revision (id, revision) VALUES (2, 0)"],
};

/// Begins a transaction that writes. SQLite takes its write lock at once (`BEGIN IMMEDIATE`),
/// so a transaction that reads before it writes cannot fail on a lock upgrade; MySQL locks
/// rows as statements touch them (see [`lock`]).
pub async fn write_tx(db: &Database) -> SqlResult<Tx> {
    match db.dialect() {
        Dialect::Sqlite => db.pool().begin_with("BEGIN IMMEDIATE").await,
        Dialect::MySql => db.pool().begin().await,
    }
}

/// The suffix that locks the rows a SELECT reads, until commit: MySQL only (SQLite's write
/// transaction already holds the one database lock).
pub fn lock(dialect: Dialect, exclusive: bool) -> &'static str {
    match (dialect, exclusive) {
        (Dialect::Sqlite, _) => "",
        (Dialect::MySql, true) => " FOR UPDATE",
        (Dialect::MySql, false) => " LOCK IN SHARE MODE",
    }
}

/// The counter that says whether a compiled snapshot of the segments is current.
pub async fn revision(db: &Database) -> SqlResult<i64> {
    sqlx::query("SELECT revision FROM segment_revision WHERE id = 1").fetch_one(db.pool()).await?.try_get(0)
}

pub async fn bump_revision(conn: &mut AnyConnection) -> SqlResult<()> {
    sqlx::query("UPDATE segment_revision SET revision = revision + 1 WHERE id = 1").execute(conn).await?;
    Ok(())
}

/// Bumps the membership generation: last in a transaction that changed memberships, so the
/// row stays locked (MySQL) only until its commit.
pub async fn bump_membership_generation(conn: &mut AnyConnection) -> SqlResult<()> {
    sqlx::query("UPDATE segment_revision SET revision = revision + 1 WHERE id = 2").execute(conn).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Segments

#[derive(Clone, Debug)]
pub struct SegmentRow {
    pub id: i64,
    pub uuid: String,
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub rule_type: String,
    pub rule_content: Option<String>,
    pub decision_id: Option<String>,
    pub percent: Option<i64>,
    pub version: i64,
    pub deleted: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

const SEGMENT_COLUMNS: &str = "id, uuid, seg_key, name, description, rule_type, rule_content, decision_id, \
                               percent, version, deleted, created_at, updated_at";

fn segment_row(row: &AnyRow) -> SqlResult<SegmentRow> {
    Ok(SegmentRow {
        id: row.try_get(0)?,
        uuid: row.try_get(1)?,
        key: row.try_get(2)?,
        name: row.try_get(3)?,
        description: text(row, 4)?,
        rule_type: row.try_get(5)?,
        rule_content: text(row, 6)?,
        decision_id: row.try_get(7)?,
        percent: row.try_get(8)?,
        version: row.try_get(9)?,
        deleted: row.try_get::<i64, _>(10)? != 0,
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
    })
}

/// Every segment ever created, deleted ones included, oldest first.
pub async fn all_segments(db: &Database) -> SqlResult<Vec<SegmentRow>> {
    let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY id")).fetch_all(db.pool()).await?;
    rows.iter().map(segment_row).collect()
}

/// The segment a slug names: the live one, or else the one deleted last.
pub async fn segment_by_slug(db: &Database, slug: &str) -> SqlResult<Option<SegmentRow>> {
    segment_where(db.pool(), "seg_key = ? ORDER BY deleted, id DESC LIMIT 1", slug).await
}

/// The first segment `condition` (which takes `value` for its one placeholder) selects.
async fn segment_where<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    condition: &str,
    value: &str,
) -> SqlResult<Option<SegmentRow>> {
    let sql = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE {condition}");
    let row = statement(&sql, &[&value]).fetch_optional(executor).await?;
    row.as_ref().map(segment_row).transpose()
}

/// The live segment with v1 id `uuid`, locked for update inside a transaction on MySQL.
pub async fn live_segment_by_uuid(
    conn: &mut AnyConnection,
    dialect: Dialect,
    uuid: &str,
    for_update: bool,
) -> SqlResult<Option<SegmentRow>> {
    let suffix = if for_update { lock(dialect, true) } else { "" };
    segment_where(conn, &format!("uuid = ? AND deleted = 0{suffix}"), uuid).await
}

/// The live segment with `key`, locked for update inside a transaction on MySQL.
pub async fn live_segment_by_key(
    conn: &mut AnyConnection,
    dialect: Dialect,
    key: &str,
) -> SqlResult<Option<SegmentRow>> {
    segment_where(conn, &format!("live_key = ?{}", lock(dialect, true)), key).await
}

/// Whether a live segment other than `except_id` holds `key`.
pub async fn live_key_taken(conn: &mut AnyConnection, key: &str, except_id: Option<i64>) -> SqlResult<bool> {
    key_taken(conn, "SELECT id FROM segments WHERE live_key = ?", key, except_id).await
}

/// Whether `sql`, which selects the id of the row holding the key it takes, finds a row other
/// than `except_id`.
async fn key_taken(conn: &mut AnyConnection, sql: &str, key: &str, except_id: Option<i64>) -> SqlResult<bool> {
    let row = statement(sql, &[&key]).fetch_optional(conn).await?;
    Ok(match row {
        Some(row) => Some(row.try_get::<i64, _>(0)?) != except_id,
        None => false,
    })
}

impl SegmentRow {
    /// A segment not stored yet: a new v1 id, `key` as its key and name, a SIMPLE rule with no
    /// content, version 1.
    pub fn new(key: String) -> Self {
        Self {
            id: 0,
            uuid: crate::new_uuid(),
            name: key.clone(),
            key,
            description: None,
            rule_type: "SIMPLE".to_owned(),
            rule_content: None,
            decision_id: None,
            percent: None,
            version: 1,
            deleted: false,
            created_at: 0,
            updated_at: 0,
        }
    }
}

/// Binds what a write sets of a segment, in this order: its key (as `seg_key` and as
/// `live_key`), name, description, rule type, rule content, decision id and percent.
fn bind_editable<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    segment: &'q SegmentRow,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(&segment.key)
        .bind(&segment.key)
        .bind(&segment.name)
        .bind(&segment.description)
        .bind(&segment.rule_type)
        .bind(&segment.rule_content)
        .bind(&segment.decision_id)
        .bind(segment.percent)
}

/// Inserts `segment` (the caller checked its key is free; its id, version, deleted flag and
/// times are the store's to set) and bumps the revision.
pub async fn insert_segment(conn: &mut AnyConnection, segment: &SegmentRow, now: i64) -> SqlResult<SegmentRow> {
    let insert = statement(
        "INSERT INTO segments (uuid, seg_key, live_key, name, description, rule_type, rule_content, decision_id, \
         percent, version, deleted, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, ?, ?)",
        &[&segment.uuid],
    );
    bind_editable(insert, segment).bind(now).bind(now).execute(&mut *conn).await?;
    bump_revision(&mut *conn).await?;
    segment_where(conn, "uuid = ?", &segment.uuid).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Writes every editable field of `segment`, bumps its version and the revision.
pub async fn update_segment(conn: &mut AnyConnection, segment: &SegmentRow, now: i64) -> SqlResult<()> {
    let update = sqlx::query(
        "UPDATE segments SET seg_key = ?, live_key = ?, name = ?, description = ?, rule_type = ?, rule_content = ?, \
         decision_id = ?, percent = ?, version = version + 1, updated_at = ? WHERE id = ?",
    );
    bind_editable(update, segment).bind(now).bind(segment.id).execute(&mut *conn).await?;
    bump_revision(conn).await
}

/// One page of live segments, oldest first, and how many live segments there are.
pub async fn live_segments_page(db: &Database, offset: i64, limit: i64) -> SqlResult<(Vec<SegmentRow>, i64)> {
    let rows = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE deleted = 0 ORDER BY id LIMIT ? OFFSET ?");
    page(db, "SELECT COUNT(*) FROM segments WHERE deleted = 0", &rows, (offset, limit), segment_row).await
}

/// One page of what `rows_sql` selects (it ends in `LIMIT ? OFFSET ?`), read by `read`, and the
/// count `count_sql` gives of all of them.
async fn page<T>(
    db: &Database,
    count_sql: &str,
    rows_sql: &str,
    (offset, limit): (i64, i64),
    read: fn(&AnyRow) -> SqlResult<T>,
) -> SqlResult<(Vec<T>, i64)> {
    let total: i64 = sqlx::query(count_sql).fetch_one(db.pool()).await?.try_get(0)?;
    let rows = statement(rows_sql, &[&limit, &offset]).fetch_all(db.pool()).await?;
    Ok((rows.iter().map(read).collect::<SqlResult<_>>()?, total))
}

/// Whether a flag's targeting rule uses the segment.
pub async fn segment_in_use(conn: &mut AnyConnection, segment_id: i64) -> SqlResult<bool> {
    let row = statement("SELECT flag_id FROM segment_flag_rules WHERE segment_id = ? LIMIT 1", &[&segment_id])
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Soft-deletes a segment: it leaves the live set and frees its key; its members lose it, each
/// with a `remove` history line (at its expiry when that came first).
pub async fn soft_delete_segment(conn: &mut AnyConnection, segment_id: i64, now: i64) -> SqlResult<()> {
    statement(
        "UPDATE segments SET deleted = 1, live_key = NULL, version = version + 1, updated_at = ?, deleted_at = ? \
         WHERE id = ?",
        &[&now, &now, &segment_id],
    )
    .execute(&mut *conn)
    .await?;
    statement(
        "INSERT INTO segment_history (user_id, segment_id, slug, action, at) \
         SELECT m.user_id, m.segment_id, s.seg_key, 'remove', CASE WHEN m.expires_at IS NOT NULL \
         AND m.expires_at <= ? THEN m.expires_at ELSE ? END FROM segment_memberships m \
         JOIN segments s ON s.id = m.segment_id WHERE m.segment_id = ? ORDER BY m.added_at, m.ordinal",
        &[&now, &now, &segment_id],
    )
    .execute(&mut *conn)
    .await?;
    statement("DELETE FROM segment_memberships WHERE segment_id = ?", &[&segment_id]).execute(&mut *conn).await?;
    bump_revision(conn).await
}

/// Writes the expired memberships of one segment to the history (each a `remove` at its
/// expiry, under the key the segment has now) and drops them: done before the key changes, so
/// an expiry that happened under the old key is not written later under the new one.
pub async fn materialize_expired_of_segment(conn: &mut AnyConnection, segment_id: i64, now: i64) -> SqlResult<()> {
    statement(
        "INSERT INTO segment_history (user_id, segment_id, slug, action, at) \
         SELECT m.user_id, m.segment_id, s.seg_key, 'remove', m.expires_at FROM segment_memberships m \
         JOIN segments s ON s.id = m.segment_id WHERE m.segment_id = ? AND m.expires_at IS NOT NULL \
         AND m.expires_at <= ? ORDER BY m.expires_at, m.ordinal",
        &[&segment_id, &now],
    )
    .execute(&mut *conn)
    .await?;
    statement(
        "DELETE FROM segment_memberships WHERE segment_id = ? AND expires_at IS NOT NULL AND expires_at <= ?",
        &[&segment_id, &now],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A live segment as evaluation needs it, with the DMN XML of its stored decision if any.
#[derive(Clone, Debug)]
pub struct LiveSegmentRow {
    pub segment: SegmentRow,
    pub decision_xml: Option<String>,
}

/// Every live segment, oldest first, each with the XML of the decision it refers to.
pub async fn live_segments(db: &Database) -> SqlResult<Vec<LiveSegmentRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {SEGMENT_COLUMNS}, (SELECT d.content FROM segment_decisions d WHERE d.uuid = segments.decision_id) \
         FROM segments WHERE deleted = 0 ORDER BY id"
    ))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|row| Ok(LiveSegmentRow { segment: segment_row(row)?, decision_xml: text(row, 13)? })).collect()
}

// ---------------------------------------------------------------------------------------------
// Memberships and history

/// Writes the user's expired memberships to the history as `remove` lines at their expiry
/// time and drops them. Deleting first and writing only what was deleted keeps two
/// concurrent callers from writing one expiry twice.
pub async fn materialize_expired(conn: &mut AnyConnection, user_id: &str, now: i64) -> SqlResult<u64> {
    let expired = statement(
        "SELECT m.segment_id, m.expires_at, s.seg_key FROM segment_memberships m JOIN segments s \
         ON s.id = m.segment_id WHERE m.user_id = ? AND m.expires_at IS NOT NULL AND m.expires_at <= ? \
         ORDER BY m.expires_at, m.ordinal",
        &[&user_id, &now],
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut written = 0;
    for row in expired {
        let segment_id: i64 = row.try_get(0)?;
        let expires_at: i64 = row.try_get(1)?;
        let slug: String = row.try_get(2)?;
        let deleted = statement(
            "DELETE FROM segment_memberships WHERE user_id = ? AND segment_id = ? AND expires_at = ?",
            &[&user_id, &segment_id, &expires_at],
        )
        .execute(&mut *conn)
        .await?;
        if deleted.rows_affected() == 1 {
            insert_history(&mut *conn, user_id, segment_id, &slug, "remove", expires_at).await?;
            written += 1;
        }
    }
    Ok(written)
}

/// Whether the user has memberships that expired but are not in the history yet.
pub async fn has_expired(db: &Database, user_id: &str, now: i64) -> SqlResult<bool> {
    let row = statement(
        "SELECT segment_id FROM segment_memberships WHERE user_id = ? AND expires_at IS NOT NULL AND expires_at <= ? \
         LIMIT 1",
        &[&user_id, &now],
    )
    .fetch_optional(db.pool())
    .await?;
    Ok(row.is_some())
}

/// Users with memberships that expired, for the sweep.
pub async fn users_with_expired(db: &Database, now: i64, limit: i64) -> SqlResult<Vec<String>> {
    let rows = statement(
        "SELECT DISTINCT user_id FROM segment_memberships WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?",
        &[&now, &limit],
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|row| row.try_get(0)).collect()
}

/// Writes a history line under `slug`, the segment's key as the line happens.
pub async fn insert_history(
    conn: &mut AnyConnection,
    user_id: &str,
    segment_id: i64,
    slug: &str,
    action: &str,
    at: i64,
) -> SqlResult<()> {
    statement(
        "INSERT INTO segment_history (user_id, segment_id, slug, action, at) VALUES (?, ?, ?, ?, ?)",
        &[&user_id, &segment_id, &slug, &action, &at],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Most values bound in one `IN (...)` list: SQLite refuses a statement with more than 32,766
/// variables (999 before 3.32) and MySQL more than 65,535, so longer lists are read in chunks,
/// on the caller's transaction so the answer is still one consistent read.
pub const MAX_IN_LIST: usize = 500;

/// `(id, key)` of the live segments among `keys`, share-locked on MySQL so that a concurrent
/// delete waits for the memberships being added.
pub async fn live_segments_by_keys(
    conn: &mut AnyConnection,
    dialect: Dialect,
    keys: &[String],
) -> SqlResult<Vec<(i64, String)>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(MAX_IN_LIST) {
        let sql = format!(
            "SELECT id, seg_key FROM segments WHERE live_key IN ({}){}",
            placeholders(chunk.len()),
            lock(dialect, false)
        );
        found.extend(ids_and_keys(&mut *conn, &sql, chunk).await?);
    }
    Ok(found)
}

/// `(id, key)` of every segment, live or deleted, holding one of `keys`.
pub async fn segments_by_keys(conn: &mut AnyConnection, keys: &[String]) -> SqlResult<Vec<(i64, String)>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(MAX_IN_LIST) {
        let sql = format!("SELECT id, seg_key FROM segments WHERE seg_key IN ({})", placeholders(chunk.len()));
        found.extend(ids_and_keys(&mut *conn, &sql, chunk).await?);
    }
    Ok(found)
}

/// Runs `sql`, whose placeholders take `keys`, and reads its `(id, key)` rows.
async fn ids_and_keys(conn: &mut AnyConnection, sql: &str, keys: &[String]) -> SqlResult<Vec<(i64, String)>> {
    let mut query = sqlx::query(sql);
    for key in keys {
        query = query.bind(key);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// Removes a membership; true (and a `remove` line) when the user had it.
pub async fn remove_membership(
    conn: &mut AnyConnection,
    user_id: &str,
    segment_id: i64,
    slug: &str,
    now: i64,
) -> SqlResult<bool> {
    let deleted =
        statement("DELETE FROM segment_memberships WHERE user_id = ? AND segment_id = ?", &[&user_id, &segment_id])
            .execute(&mut *conn)
            .await?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    insert_history(conn, user_id, segment_id, slug, "remove", now).await?;
    Ok(true)
}

/// Adds a membership, or refreshes the expiry of the one the user has (the caller has written
/// expired ones to the history first, so an existing membership is an active one). Only a new
/// membership gets an `add` line.
#[allow(clippy::too_many_arguments)]
pub async fn add_membership(
    conn: &mut AnyConnection,
    dialect: Dialect,
    user_id: &str,
    segment_id: i64,
    slug: &str,
    ordinal: i64,
    expires_at: Option<i64>,
    now: i64,
) -> SqlResult<()> {
    let insert_ignore = match dialect {
        Dialect::Sqlite => "INSERT OR IGNORE",
        Dialect::MySql => "INSERT IGNORE",
    };
    let inserted = statement(
        &format!(
            "{insert_ignore} INTO segment_memberships (user_id, segment_id, added_at, ordinal, expires_at) \
         VALUES (?, ?, ?, ?, ?)"
        ),
        &[&user_id, &segment_id, &now, &ordinal, &expires_at],
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        insert_history(conn, user_id, segment_id, slug, "add", now).await
    } else {
        statement(
            "UPDATE segment_memberships SET expires_at = ? WHERE user_id = ? AND segment_id = ?",
            &[&expires_at, &user_id, &segment_id],
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// What an evaluation reads from the store: the revision, the membership generation and the
/// user's explicit memberships `(segment id, expires_at)`, expired ones included (the caller
/// drops those by its clock), in one round trip.
pub async fn versions_and_memberships(
    conn: &mut AnyConnection,
    user_id: &str,
) -> SqlResult<(i64, i64, Vec<(i64, Option<i64>)>)> {
    let rows = statement(
        "SELECT r.revision, g.revision, m.segment_id, m.expires_at FROM segment_revision r \
         JOIN segment_revision g ON g.id = 2 LEFT JOIN segment_memberships m ON m.user_id = ? WHERE r.id = 1",
        &[&user_id],
    )
    .fetch_all(conn)
    .await?;
    let (mut revision, mut generation) = (0, 0);
    let mut memberships = Vec::with_capacity(rows.len());
    for row in &rows {
        revision = row.try_get(0)?;
        generation = row.try_get(1)?;
        if let Some(segment_id) = row.try_get::<Option<i64>, _>(2)? {
            memberships.push((segment_id, row.try_get(3)?));
        }
    }
    Ok((revision, generation, memberships))
}

/// The user's explicit memberships `(segment id, expires_at)`, expired ones included: one
/// lookup on the primary key's prefix.
pub async fn memberships(conn: &mut AnyConnection, user_id: &str) -> SqlResult<Vec<(i64, Option<i64>)>> {
    let rows = statement("SELECT segment_id, expires_at FROM segment_memberships WHERE user_id = ?", &[&user_id])
        .fetch_all(conn)
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// A user's active explicit memberships: `(segment id, key, expires_at)` in the order they
/// were added; expired ones are excluded from the moment they expire.
pub async fn active_memberships(
    conn: &mut AnyConnection,
    user_id: &str,
    now: i64,
) -> SqlResult<Vec<(i64, String, Option<i64>)>> {
    let rows = statement(
        "SELECT s.id, s.seg_key, m.expires_at FROM segment_memberships m JOIN segments s ON s.id = m.segment_id \
         WHERE m.user_id = ? AND s.deleted = 0 AND (m.expires_at IS NULL OR m.expires_at > ?) \
         ORDER BY m.added_at, m.ordinal, s.id",
        &[&user_id, &now],
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))).collect()
}

/// One line of the history report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLine {
    pub user_id: String,
    pub slug: String,
    pub action: String,
    pub at: i64,
}

/// The user's history in `[from, to)`, ascending by time, then in the order it was written.
pub async fn history(db: &Database, user_id: &str, from: i64, to: i64) -> SqlResult<Vec<HistoryLine>> {
    let rows = statement(
        "SELECT user_id, slug, action, at FROM segment_history WHERE user_id = ? AND at >= ? AND at < ? \
         ORDER BY at, id",
        &[&user_id, &from, &to],
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(history_line).collect()
}

fn history_line(row: &AnyRow) -> SqlResult<HistoryLine> {
    Ok(HistoryLine { user_id: row.try_get(0)?, slug: row.try_get(1)?, action: row.try_get(2)?, at: row.try_get(3)? })
}

// ---------------------------------------------------------------------------------------------
// Decisions

#[derive(Clone, Debug)]
pub struct DecisionRow {
    pub uuid: String,
    pub name: String,
    pub decision_name: String,
    pub content: String,
    pub created_at: i64,
}

pub async fn insert_decision(db: &Database, decision: &DecisionRow) -> SqlResult<()> {
    statement(
        "INSERT INTO segment_decisions (uuid, name, decision_name, content, created_at) VALUES (?, ?, ?, ?, ?)",
        &[&decision.uuid, &decision.name, &decision.decision_name, &decision.content, &decision.created_at],
    )
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn decision(conn: &mut AnyConnection, uuid: &str) -> SqlResult<Option<DecisionRow>> {
    let row = statement(
        "SELECT uuid, name, decision_name, content, created_at FROM segment_decisions WHERE uuid = ?",
        &[&uuid],
    )
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(DecisionRow {
            uuid: row.try_get(0)?,
            name: row.try_get(1)?,
            decision_name: row.try_get(2)?,
            content: text(&row, 3)?.unwrap_or_default(),
            created_at: row.try_get(4)?,
        })
    })
    .transpose()
}

// ---------------------------------------------------------------------------------------------
// Flags

#[derive(Clone, Debug)]
pub struct FlagRow {
    pub id: i64,
    pub uuid: String,
    pub key: String,
    pub name: String,
    pub enabled: bool,
    pub default_variation: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A targeting rule: users in the segment get `variation`.
#[derive(Clone, Debug)]
pub struct FlagRuleRow {
    pub segment_id: i64,
    pub segment_uuid: String,
    pub segment_key: String,
    pub variation: bool,
}

const FLAG_COLUMNS: &str = "id, uuid, flag_key, name, enabled, default_variation, created_at, updated_at";

fn flag_row(row: &AnyRow) -> SqlResult<FlagRow> {
    Ok(FlagRow {
        id: row.try_get(0)?,
        uuid: row.try_get(1)?,
        key: row.try_get(2)?,
        name: row.try_get(3)?,
        enabled: row.try_get::<i64, _>(4)? != 0,
        default_variation: row.try_get::<i64, _>(5)? != 0,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

/// The flag with v1 id (or key) `ident`, locked for update inside a MySQL transaction.
pub async fn flag(
    conn: &mut AnyConnection,
    dialect: Dialect,
    ident: &str,
    for_update: bool,
) -> SqlResult<Option<FlagRow>> {
    let suffix = if for_update { lock(dialect, true) } else { "" };
    let row = statement(
        &format!("SELECT {FLAG_COLUMNS} FROM segment_flags WHERE uuid = ? OR flag_key = ?{suffix}"),
        &[&ident, &ident],
    )
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(flag_row).transpose()
}

pub async fn flag_key_taken(conn: &mut AnyConnection, key: &str, except_id: Option<i64>) -> SqlResult<bool> {
    key_taken(conn, "SELECT id FROM segment_flags WHERE flag_key = ?", key, except_id).await
}

pub async fn flag_rules(conn: &mut AnyConnection, flag_id: i64) -> SqlResult<Vec<FlagRuleRow>> {
    let rows = statement(
        "SELECT r.segment_id, s.uuid, s.seg_key, r.variation FROM segment_flag_rules r \
         JOIN segments s ON s.id = r.segment_id WHERE r.flag_id = ? ORDER BY r.position",
        &[&flag_id],
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(flag_rule_row).collect()
}

fn flag_rule_row(row: &AnyRow) -> SqlResult<FlagRuleRow> {
    Ok(FlagRuleRow {
        segment_id: row.try_get(0)?,
        segment_uuid: row.try_get(1)?,
        segment_key: row.try_get(2)?,
        variation: row.try_get::<i64, _>(3)? != 0,
    })
}

/// A flag's `enabled` and `default_variation` as the table stores them (BIGINT 0 / 1).
fn flag_switches(flag: &FlagRow) -> [i64; 2] {
    [i64::from(flag.enabled), i64::from(flag.default_variation)]
}

pub async fn insert_flag(conn: &mut AnyConnection, flag: &FlagRow) -> SqlResult<i64> {
    let [enabled, default_variation] = flag_switches(flag);
    statement(
        "INSERT INTO segment_flags (uuid, flag_key, name, enabled, default_variation, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        &[&flag.uuid, &flag.key, &flag.name, &enabled, &default_variation, &flag.created_at, &flag.updated_at],
    )
    .execute(&mut *conn)
    .await?;
    statement("SELECT id FROM segment_flags WHERE uuid = ?", &[&flag.uuid]).fetch_one(conn).await?.try_get(0)
}

pub async fn update_flag(conn: &mut AnyConnection, flag: &FlagRow) -> SqlResult<()> {
    let [enabled, default_variation] = flag_switches(flag);
    statement(
        "UPDATE segment_flags SET flag_key = ?, name = ?, enabled = ?, default_variation = ?, updated_at = ? \
         WHERE id = ?",
        &[&flag.key, &flag.name, &enabled, &default_variation, &flag.updated_at, &flag.id],
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn replace_flag_rules(conn: &mut AnyConnection, flag_id: i64, rules: &[(i64, bool)]) -> SqlResult<()> {
    statement("DELETE FROM segment_flag_rules WHERE flag_id = ?", &[&flag_id]).execute(&mut *conn).await?;
    for (position, (segment_id, variation)) in rules.iter().enumerate() {
        statement(
            "INSERT INTO segment_flag_rules (flag_id, position, segment_id, variation) VALUES (?, ?, ?, ?)",
            &[&flag_id, &(position as i64), segment_id, &i64::from(*variation)],
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn delete_flag(conn: &mut AnyConnection, flag_id: i64) -> SqlResult<()> {
    statement("DELETE FROM segment_flag_rules WHERE flag_id = ?", &[&flag_id]).execute(&mut *conn).await?;
    statement("DELETE FROM segment_flags WHERE id = ?", &[&flag_id]).execute(conn).await?;
    Ok(())
}

pub async fn flags_page(db: &Database, offset: i64, limit: i64) -> SqlResult<(Vec<FlagRow>, i64)> {
    let rows = format!("SELECT {FLAG_COLUMNS} FROM segment_flags ORDER BY id LIMIT ? OFFSET ?");
    page(db, "SELECT COUNT(*) FROM segment_flags", &rows, (offset, limit), flag_row).await
}

// ---------------------------------------------------------------------------------------------
// API keys

pub async fn insert_api_key(
    db: &Database,
    id: &str,
    name: &str,
    key_hash: &str,
    permissions: &str,
    now: i64,
) -> SqlResult<()> {
    statement(
        "INSERT INTO segment_api_keys (id, name, key_hash, permissions, created_at) VALUES (?, ?, ?, ?, ?)",
        &[&id, &name, &key_hash, &permissions, &now],
    )
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The permissions of the key whose hash is `key_hash`, unless it was revoked.
pub async fn api_key_permissions(db: &Database, key_hash: &str) -> SqlResult<Option<String>> {
    let row =
        statement("SELECT permissions FROM segment_api_keys WHERE key_hash = ? AND revoked_at IS NULL", &[&key_hash])
            .fetch_optional(db.pool())
            .await?;
    row.map(|row| row.try_get(0)).transpose()
}

/// Marks the key with id `id` or hash `key_hash` revoked at `now`; how many keys that changed
/// (0 for an unknown or already revoked key).
pub async fn revoke_api_key(db: &Database, id: &str, key_hash: &str, now: i64) -> SqlResult<u64> {
    let done = statement(
        "UPDATE segment_api_keys SET revoked_at = ? WHERE (id = ? OR key_hash = ?) AND revoked_at IS NULL",
        &[&now, &id, &key_hash],
    )
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}

/// The server secret called `name`, made from `candidate` by whichever replica asks first.
pub async fn server_secret(db: &Database, name: &str, candidate: &str) -> SqlResult<String> {
    let insert = match db.dialect() {
        Dialect::Sqlite => "INSERT OR IGNORE INTO segment_secrets (name, secret) VALUES (?, ?)",
        Dialect::MySql => "INSERT IGNORE INTO segment_secrets (name, secret) VALUES (?, ?)",
    };
    statement(insert, &[&name, &candidate]).execute(db.pool()).await?;
    let row = statement("SELECT secret FROM segment_secrets WHERE name = ?", &[&name]).fetch_one(db.pool()).await?;
    Ok(text(&row, 0)?.unwrap_or_default())
}
