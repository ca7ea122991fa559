//! The routes of the events service, one module per resource, merged here. Paths keep the
//! seeds' spelling (`/sessions/`, `/events/`, `/errors/` with their trailing slash, and the
//! same paths without it); `/user/...` are seed 003's.

mod errors;
mod events;
mod schemas;
mod sessions;
mod user;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get};
use serde_json::json;
use shared::ApiError;

use crate::Events;
use crate::validate::Reason;

/// Every route of the service, each with its body limit, answering with `X-Served-By: events`.
/// `/docs/`, where seed 001 documents the docs, redirects to the shared `/docs` page.
pub fn router(state: Events) -> Router {
    let settings = state.settings.clone();
    let single = Router::new()
        .merge(sessions::router())
        .merge(events::router())
        .merge(errors::router())
        .merge(schemas::router())
        .merge(user::queries())
        .route("/docs/", get(|| async { Redirect::permanent("/docs") }))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes));
    let event_batches = events::batch_router().layer(DefaultBodyLimit::max(settings.max_batch_bytes));
    let user_batches = user::batch_router().layer(DefaultBodyLimit::max(settings.max_user_batch_bytes));
    shared::http::served_by(single.merge(event_batches).merge(user_batches).with_state(state), "events")
}

/// Routes `path` both with and without its trailing slash.
fn both(router: Router<Events>, path: &str, methods: MethodRouter<Events>) -> Router<Events> {
    let other = match path.strip_suffix('/') {
        Some(bare) => bare.to_owned(),
        None => format!("{path}/"),
    };
    router.route(path, methods.clone()).route(&other, methods)
}

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

/// `?limit=`: 1 to [`MAX_PAGE_SIZE`], [`DEFAULT_PAGE_SIZE`] when absent.
fn page_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    match present(raw) {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE_SIZE}"))),
    }
}

/// A query value, `None` when absent or empty (`?after=` means no cursor).
fn present(raw: Option<&str>) -> Option<&str> {
    raw.filter(|raw| !raw.is_empty())
}

/// A `seq` cursor (`?after=`; empty means none).
fn seq_cursor(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    present(raw)
        .map(|raw| {
            raw.trim().parse::<i64>().map_err(|_| ApiError::bad_request("after must be a cursor from a Link header"))
        })
        .transpose()
}

/// The `Link: <...>; rel="next"` header of a full page: the same query with `after` moved on.
fn next_page(path: &str, query: &[(&str, Option<&str>)], limit: i64, after: Option<String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let Some(after) = after else {
        return headers;
    };
    let mut pairs: Vec<String> = query
        .iter()
        .filter_map(|(key, value)| value.map(|value| format!("{key}={}", shared::http::encode_query_value(value))))
        .collect();
    pairs.push(format!("limit={limit}"));
    pairs.push(format!("after={}", shared::http::encode_query_value(&after)));
    if let Ok(value) = HeaderValue::from_str(&format!("<{path}?{}>; rel=\"next\"", pairs.join("&"))) {
        headers.insert(LINK, value);
    }
    headers
}

/// Path parameters: a JSON 400 (never axum's plain-text one) when they do not decode.
pub use shared::http::PathParams;

/// A 422 that lists every reason: the usual error body with `reasons` beside the message.
pub struct Invalid {
    pub message: String,
    pub reasons: Vec<Reason>,
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": "VALIDATION_FAILED", "message": self.message, "reasons": self.reasons}});
        (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
    }
}

/// Either error a validating handler answers with.
pub enum Refusal {
    Api(ApiError),
    Invalid(Invalid),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<shared::backends::BackendError> for Refusal {
    fn from(error: shared::backends::BackendError) -> Self {
        Self::Api(error.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Api(error) => error.into_response(),
            Self::Invalid(invalid) => invalid.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_keep_the_filters() {
        let headers =
            next_page("/events/", &[("category", Some("page interaction")), ("name", None)], 10, Some("5_7".into()));
        assert_eq!(headers[LINK], "</events/?category=page%20interaction&limit=10&after=5_7>; rel=\"next\"");
        assert!(next_page("/events/", &[], 10, None).is_empty());
    }

    #[test]
    fn limits() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_limit(Some("500")).unwrap(), 500);
        for bad in ["0", "501", "-1", "x"] {
            assert!(page_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
