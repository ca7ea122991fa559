//! User sessions (seed 003): start and end events arrive in batches, in any order, possibly
//! more than once. Each is one row keyed by `(session_id, event)`, so a duplicate is ignored by
//! the store itself (whichever writer comes second, in whichever process), and a session is
//! complete exactly when both of its rows exist. Its country is the start event's.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};
use shared::backends::sql::{Database, Dialect, placeholders, statement};
use shared::backends::{BackendError, BackendResult};
use sqlx::Row;

use crate::Events;
use crate::model::{Reason, refuse};
use crate::store::{AnyQuery, WriteGate, begin_write, insert_chunked, optional_text, text};
use crate::time::{format_timestamp, parse_timestamp};

pub const MAX_ID_CHARS: usize = 128;
pub const MAX_COUNTRY_CHARS: usize = 64;
/// Sessions `last-sessions-user` answers with.
pub const LAST_SESSIONS: i64 = 20;
/// The key of `last-events` under which starts without a country are listed.
pub const UNKNOWN_COUNTRY: &str = "unknown";
const ROWS_PER_INSERT: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Start,
    End,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::End => "end",
        }
    }
}

/// A start or end event that passed [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEvent {
    pub user_id: String,
    pub country: Option<String>,
    pub kind: Kind,
    pub session_id: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
}

/// Checks one `{"user_id","country"?,"event":"start|end","session_id","ts"}`, reporting every
/// failure.
pub fn parse(value: &Value) -> Result<UserEvent, Vec<Reason>> {
    let Some(fields) = value.as_object() else {
        return Err(vec![Reason::new("not_an_object", "", "an event must be a JSON object")]);
    };
    let mut reasons = Vec::new();
    let user_id = required_text(fields, "user_id", MAX_ID_CHARS, &mut reasons);
    let session_id = required_text(fields, "session_id", MAX_ID_CHARS, &mut reasons);
    let kind = match fields.get("event") {
        None | Some(Value::Null) => {
            refuse(&mut reasons, "missing_field", "/event", "event is required: \"start\" or \"end\"")
        }
        Some(Value::String(kind)) if kind == "start" => Some(Kind::Start),
        Some(Value::String(kind)) if kind == "end" => Some(Kind::End),
        Some(_) => refuse(&mut reasons, "invalid_value", "/event", "event must be \"start\" or \"end\""),
    };
    let ts = match fields.get("ts") {
        None | Some(Value::Null) => refuse(&mut reasons, "missing_field", "/ts", "ts is required"),
        Some(Value::String(ts)) => match parse_timestamp(ts) {
            Ok(ts) => Some(ts),
            Err(message) => refuse(&mut reasons, "timestamp_invalid", "/ts", message),
        },
        Some(_) => refuse(&mut reasons, "invalid_type", "/ts", "ts must be a string"),
    };
    let country = match fields.get("country") {
        None | Some(Value::Null) => None,
        Some(Value::String(country)) if country.trim().is_empty() => None,
        Some(Value::String(country)) if country.chars().count() > MAX_COUNTRY_CHARS => refuse(
            &mut reasons,
            "too_long",
            "/country",
            format!("country is longer than {MAX_COUNTRY_CHARS} characters"),
        ),
        Some(Value::String(country)) => Some(country.trim().to_owned()),
        Some(_) => refuse(&mut reasons, "invalid_type", "/country", "country must be a string"),
    };
    match (user_id, session_id, kind, ts) {
        (Some(user_id), Some(session_id), Some(kind), Some(ts)) if reasons.is_empty() => {
            Ok(UserEvent { user_id, country, kind, session_id, ts })
        }
        _ => Err(reasons),
    }
}

fn required_text(fields: &Map<String, Value>, field: &str, max: usize, reasons: &mut Vec<Reason>) -> Option<String> {
    let pointer = format!("/{field}");
    match fields.get(field) {
        None | Some(Value::Null) => refuse(reasons, "missing_field", &pointer, format!("{field} is required")),
        Some(Value::String(text)) if text.trim().is_empty() => {
            refuse(reasons, "blank", &pointer, format!("{field} must not be blank"))
        }
        Some(Value::String(text)) if text.trim().chars().count() > max => {
            refuse(reasons, "too_long", &pointer, format!("{field} is longer than {max} characters"))
        }
        // Surrounding whitespace is not part of an id: MySQL's PAD SPACE collations ignore
        // trailing spaces when comparing, so keeping them would make the backends disagree.
        Some(Value::String(text)) => Some(text.trim().to_owned()),
        Some(_) => refuse(reasons, "invalid_type", &pointer, format!("{field} must be a string")),
    }
}

/// What one ingest stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestCounts {
    /// Events stored now.
    pub accepted: u64,
    /// Events whose `(session_id, event)` was already stored (or came twice in the batch).
    pub duplicates: u64,
}

/// Binds the `user_events` columns of `event` received at `received_at`, in the order
/// `(session_id, event, user_id, country, ts, received_at)`.
pub fn bind_user_event<'q>(query: AnyQuery<'q>, event: &'q UserEvent, received_at: i64) -> AnyQuery<'q> {
    query
        .bind(event.session_id.as_str())
        .bind(event.kind.as_str())
        .bind(event.user_id.as_str())
        .bind(event.country.as_deref())
        .bind(event.ts)
        .bind(received_at)
}

/// Stores `events` in one transaction, ignoring duplicates; safe beside concurrent writers.
pub async fn ingest(state: &Events, events: &[UserEvent], received_at: i64) -> BackendResult<IngestCounts> {
    let db = &state.db;
    if events.is_empty() {
        return Ok(IngestCounts::default());
    }
    // Key order: concurrent batches then take InnoDB's row locks in one order and cannot deadlock
    // on each other (a deadlock that happens anyway is retried).
    let mut sorted: Vec<&UserEvent> = events.iter().collect();
    sorted.sort_by(|a, b| (&a.session_id, a.kind).cmp(&(&b.session_id, b.kind)));
    let mut attempt = 0;
    loop {
        match ingest_once(db, &state.write_gate, &sorted, received_at).await {
            Err(BackendError::Sql(sqlx::Error::Database(error)))
                if attempt < 5 && db.dialect() == Dialect::MySql && error.code().as_deref() == Some("40001") =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn ingest_once(
    db: &Database,
    gate: &WriteGate,
    events: &[&UserEvent],
    received_at: i64,
) -> BackendResult<IngestCounts> {
    let mut tx = begin_write(db, gate).await?;
    let insert = |rows: usize| {
        format!(
            "{} INTO user_events (session_id, event, user_id, country, ts, received_at) VALUES {}",
            db.insert_ignore(),
            vec![format!("({})", placeholders(6)); rows].join(", ")
        )
    };
    let accepted = insert_chunked(tx.conn(), events, ROWS_PER_INSERT, insert, |query, event| {
        bind_user_event(query, event, received_at)
    })
    .await?;
    // A country is seen once a start carrying it is stored: a duplicate start naming another
    // country does not count. Known countries cost one small query per batch.
    let candidates: BTreeSet<&str> =
        events.iter().filter(|e| e.kind == Kind::Start).filter_map(|e| e.country.as_deref()).collect();
    if !candidates.is_empty() {
        let sql = format!("SELECT country FROM user_countries WHERE country IN ({})", placeholders(candidates.len()));
        let mut query = sqlx::query(&sql);
        for country in &candidates {
            query = query.bind(*country);
        }
        let mut known = BTreeSet::new();
        for row in query.fetch_all(tx.conn()).await? {
            known.insert(text(&row, 0)?);
        }
        for country in candidates.into_iter().filter(|c| !known.contains(*c)) {
            let sessions: Vec<&str> = events
                .iter()
                .filter(|e| e.kind == Kind::Start && e.country.as_deref() == Some(country))
                .map(|e| e.session_id.as_str())
                .collect();
            let mut stored = false;
            for chunk in sessions.chunks(ROWS_PER_INSERT) {
                let sql = format!(
                    "SELECT COUNT(*) FROM user_events WHERE event = 'start' AND country = ? AND session_id IN ({})",
                    placeholders(chunk.len())
                );
                let mut query = sqlx::query(&sql).bind(country);
                for session in chunk {
                    query = query.bind(*session);
                }
                if query.fetch_one(tx.conn()).await?.try_get::<i64, _>(0)? > 0 {
                    stored = true;
                    break;
                }
            }
            if stored {
                let sql = format!("{} INTO user_countries (country, first_seen) VALUES (?, ?)", db.insert_ignore());
                sqlx::query(&sql).bind(country).bind(received_at).execute(tx.conn()).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(IngestCounts { accepted, duplicates: events.len() as u64 - accepted })
}

/// A session start, as `last-events` lists it (the shape the events came in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = UserSessionStart)]
pub struct StartView {
    pub user_id: String,
    pub country: Option<String>,
    #[schema(example = "start")]
    pub event: &'static str,
    pub session_id: String,
    pub ts: String,
}

/// For every country seen, its session starts with `from <= ts <= to` (no upper bound when `to`
/// is `None`), newest first (an empty list for a country without any). Starts without a country
/// are listed under [`UNKNOWN_COUNTRY`].
pub async fn starts_by_country(
    db: &Database,
    from: i64,
    to: Option<i64>,
) -> BackendResult<BTreeMap<String, Vec<StartView>>> {
    let mut by_country: BTreeMap<String, Vec<StartView>> = BTreeMap::new();
    for row in sqlx::query("SELECT country FROM user_countries").fetch_all(db.pool()).await? {
        by_country.entry(text(&row, 0)?).or_default();
    }
    let rows = sqlx::query(
        "SELECT session_id, user_id, country, ts FROM user_events WHERE event = 'start' AND ts >= ? AND ts <= ? \
         ORDER BY ts DESC, session_id",
    )
    .bind(from)
    .bind(to.unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await?;
    for row in rows {
        let country = optional_text(&row, 2)?;
        let key = country.clone().unwrap_or_else(|| UNKNOWN_COUNTRY.to_owned());
        by_country.entry(key).or_default().push(StartView {
            user_id: text(&row, 1)?,
            country,
            event: Kind::Start.as_str(),
            session_id: text(&row, 0)?,
            ts: format_timestamp(row.try_get(3)?),
        });
    }
    Ok(by_country)
}

/// A complete session.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = UserSession)]
pub struct SessionView {
    pub session_id: String,
    pub user_id: String,
    /// From the start event.
    pub country: Option<String>,
    pub start_ts: String,
    pub end_ts: String,
    pub duration_seconds: f64,
}

/// The last [`LAST_SESSIONS`] sessions of `user_id` complete by `as_of` (both events at or
/// before it), newest start first. Without `as_of`, every complete session counts: both events
/// have arrived, whatever their timestamps.
pub async fn last_complete_sessions(
    db: &Database,
    user_id: &str,
    as_of: Option<i64>,
) -> BackendResult<Vec<SessionView>> {
    let as_of = as_of.unwrap_or(i64::MAX);
    let rows = statement(
        "SELECT s.session_id, s.user_id, s.country, s.ts, e.ts FROM user_events s \
         JOIN user_events e ON e.session_id = s.session_id AND e.event = 'end' \
         WHERE s.user_id = ? AND s.event = 'start' AND s.ts <= ? AND e.ts <= ? \
         ORDER BY s.ts DESC, s.session_id LIMIT ?",
        &[&user_id, &as_of, &as_of, &LAST_SESSIONS],
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let start: i64 = row.try_get(3)?;
            let end: i64 = row.try_get(4)?;
            Ok(SessionView {
                session_id: text(row, 0)?,
                user_id: text(row, 1)?,
                country: optional_text(row, 2)?,
                start_ts: format_timestamp(start),
                end_ts: format_timestamp(end),
                duration_seconds: (end - start) as f64 / 1000.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_the_seed_example_lines() {
        let start = parse(&json!({"user_id": "d6313e1fb7d247a6a034e2aadc30ab30", "country": "TIN", "event": "start",
                                  "session_id": "674606b1-2270-4285-928f-eef4a6b90a60", "ts": "2019-04-16T20:40:50"}))
        .unwrap();
        assert_eq!(start.kind, Kind::Start);
        assert_eq!(start.country.as_deref(), Some("TIN"));
        let end =
            parse(&json!({"user_id": "u", "event": "end", "session_id": "s", "ts": "2018-11-18T06:24:50"})).unwrap();
        assert_eq!((end.kind, end.country), (Kind::End, None));
    }

    #[test]
    fn reports_every_failure() {
        let reasons = parse(&json!({"user_id": "", "event": "pause", "ts": "later", "country": 3})).unwrap_err();
        let mut pointers: Vec<_> = reasons.iter().map(|r| r.pointer.as_str()).collect();
        pointers.sort();
        assert_eq!(pointers, ["/country", "/event", "/session_id", "/ts", "/user_id"]);
        assert_eq!(parse(&json!("x")).unwrap_err()[0].code, "not_an_object");
    }
}
