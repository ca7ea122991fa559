//! `/errors/`: the events the consumer (or the batch endpoint) refused, each with the raw
//! payload as sent and every reason. An error record has the id the event was accepted under.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shared::ApiError;
use shared::http::QueryParams;

use super::{PathParams, both, next_page, page_limit, present, seq_cursor};
use crate::Events;
use crate::store::{self, ErrorRow};
use crate::time::format_timestamp;
use crate::validate::{Reason, normalize_session_id};

pub fn router() -> Router<Events> {
    let router = both(Router::new(), "/errors/", get(list));
    both(router, "/errors/{id}/", get(show))
}

#[derive(Debug, Serialize)]
struct ErrorView {
    id: String,
    /// The session the payload named, if it named one.
    session: Option<String>,
    /// The event as the client sent it: the stored text itself, never re-serialised (key order,
    /// `1.10`, integers beyond f64 all kept).
    payload: Box<RawValue>,
    reasons: Vec<Reason>,
    received_at: String,
    created_at: String,
}

impl From<ErrorRow> for ErrorView {
    fn from(row: ErrorRow) -> Self {
        let payload = raw_payload(row.payload);
        Self {
            id: row.id,
            session: row.session_id,
            payload,
            reasons: row.reasons,
            received_at: format_timestamp(row.received_at),
            created_at: format_timestamp(row.created_at),
        }
    }
}

/// The stored payload text as it is, or (should it somehow not be JSON) a JSON string holding it.
fn raw_payload(stored: String) -> Box<RawValue> {
    serde_json::from_str::<Box<RawValue>>(&stored)
        .unwrap_or_else(|_| serde_json::value::to_raw_value(&stored).expect("a string serialises as JSON"))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    session: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /errors/`, oldest first, optionally for one `session`, paged by `limit` and `after`.
async fn list(
    State(state): State<Events>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<(HeaderMap, Json<Vec<ErrorView>>), ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let after = seq_cursor(query.after.as_deref())?;
    // An empty filter value is no filter, as django-filter (behind the seed) takes it.
    let session = present(query.session.as_deref()).map(normalize_session_id);
    let mut rows = store::list_errors(&state.db, session.as_deref(), after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let cursor = rows.last().filter(|_| more).map(|row| row.seq.to_string());
    let headers = next_page("/errors/", &[("session", session.as_deref())], limit, cursor);
    Ok((headers, Json(rows.into_iter().map(ErrorView::from).collect())))
}

async fn show(State(state): State<Events>, PathParams(id): PathParams<String>) -> Result<Json<ErrorView>, ApiError> {
    let row = store::get_error(&state.db, &id).await?.ok_or_else(|| ApiError::not_found("error not found"))?;
    Ok(Json(row.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_served_as_stored_or_as_a_string_when_not_json() {
        let stored = r#"{"b": 1.10, "a": 123456789012345678901234567890}"#;
        assert_eq!(raw_payload(stored.to_owned()).get(), stored);
        assert_eq!(raw_payload("{not json".to_owned()).get(), r#""{not json""#);
    }
}
