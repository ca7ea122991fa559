//! `/sessions/`: the service creates each session's UUID (seed 001: applications ask for one
//! before sending events with it).

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::ApiError;
use shared::http::QueryParams;

use super::{PathParams, both, next_page, page_limit, seq_cursor};
use crate::Events;
use crate::store::{self, SessionRow};
use crate::time::format_timestamp;
use crate::validate::normalize_session_id;

pub fn router() -> Router<Events> {
    let router = both(Router::new(), "/sessions/", get(list).post(create));
    both(router, "/sessions/{id}/", get(show))
}

#[derive(Debug, Serialize)]
struct SessionView {
    id: String,
    created_at: String,
}

impl From<SessionRow> for SessionView {
    fn from(row: SessionRow) -> Self {
        Self { id: row.id, created_at: format_timestamp(row.created_at) }
    }
}

/// Takes no body: whatever is sent (the seed sends an empty one) is ignored.
async fn create(State(state): State<Events>) -> Result<(StatusCode, HeaderMap, Json<SessionView>), ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now_millis();
    store::create_session(&state.db, &id, now).await?;
    state.sessions.extend([id.clone()]);
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/sessions/{id}/")) {
        headers.insert(LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(SessionView { id, created_at: format_timestamp(now) })))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    State(state): State<Events>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<(HeaderMap, Json<Vec<SessionView>>), ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let after = seq_cursor(query.after.as_deref())?;
    let mut rows = store::list_sessions(&state.db, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let cursor = rows.last().filter(|_| more).map(|row| row.seq.to_string());
    let headers = next_page("/sessions/", &[], limit, cursor);
    Ok((headers, Json(rows.into_iter().map(SessionView::from).collect())))
}

/// `GET /sessions/{id}/`, under any spelling of the session's UUID.
async fn show(State(state): State<Events>, PathParams(id): PathParams<String>) -> Result<Json<SessionView>, ApiError> {
    let row = store::get_session(&state.db, &normalize_session_id(&id))
        .await?
        .ok_or_else(|| ApiError::not_found("session not found"))?;
    Ok(Json(row.into()))
}
