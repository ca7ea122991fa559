//! `/sessions/`: the service creates each session's UUID (seed 001: applications ask for one
//! before sending events with it).

use axum::Json;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use shared::ApiError;
use shared::http::QueryParams;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventErrors, Listed, Page, PathParams, SeqPage, both};
use crate::Events;
use crate::store::{self, SessionRow};
use crate::time::format_timestamp;
use crate::validate::normalize_session_id;

pub fn routes() -> OpenApiRouter<Events> {
    let router = both(OpenApiRouter::new(), routes!(list, create));
    both(router, routes!(show))
}

/// A session of the eye.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventSession)]
struct SessionView {
    #[schema(example = "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058")]
    id: String,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2021-06-15T00:00:00.000Z")]
    created_at: String,
}

impl From<SessionRow> for SessionView {
    fn from(row: SessionRow) -> Self {
        Self { id: row.id, created_at: format_timestamp(row.created_at) }
    }
}

/// Takes no body: whatever is sent (the seed sends an empty one) is ignored.
#[utoipa::path(
    post, path = "/sessions/", tag = "sessions", operation_id = "create_session",
    summary = "Create a session (any body is ignored)",
    responses((status = 201, description = "Created", body = SessionView, headers(("location" = String))), EventErrors)
)]
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

impl Listed for SessionView {
    const PAGE: &'static str = "A page of sessions";
}

#[utoipa::path(
    get, path = "/sessions/", tag = "sessions", operation_id = "list_sessions",
    summary = "List sessions, oldest first",
    params(SeqPage),
    responses(Page<SessionView>, EventErrors)
)]
async fn list(
    State(state): State<Events>,
    QueryParams(page): QueryParams<SeqPage>,
) -> Result<Page<SessionView>, ApiError> {
    let (limit, after) = page.read()?;
    let rows = store::list_sessions(&state.db, after, limit + 1).await?;
    Ok(Page::new("/sessions/", &[], limit, rows, |row| row.seq.to_string()))
}

/// `GET /sessions/{id}/`, under any spelling of the session's UUID.
#[utoipa::path(
    get, path = "/sessions/{id}/", tag = "sessions", operation_id = "show_session",
    summary = "A session",
    params(("id" = String, Path)),
    responses((status = 200, description = "The session", body = SessionView), EventErrors)
)]
async fn show(State(state): State<Events>, PathParams(id): PathParams<String>) -> Result<Json<SessionView>, ApiError> {
    let row = store::get_session(&state.db, &normalize_session_id(&id))
        .await?
        .ok_or_else(|| ApiError::not_found("session not found"))?;
    Ok(Json(row.into()))
}
