//! The routes of the events service, one module per resource, merged here. Paths keep the
//! seeds' spelling (`/sessions/`, `/events/`, `/errors/` with their trailing slash, and the
//! same paths without it); `/user/...` are seed 003's.

mod errors;
mod events;
mod schemas;
mod sessions;
mod user;

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shared::http::{is_json_content_type, read_body};
use shared::openapi::ErrorResponses;
use shared::{ApiError, ErrorCode};
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::model::Reason;
use crate::{Events, Settings};

/// Every route of the service, each with its body limit, answering with `X-Served-By: events`.
pub fn router(state: Events) -> Router {
    let (routes, _) = routes(&state.settings).split_for_parts();
    shared::http::served_by(routes.with_state(state), "events")
}

/// The routes with their OpenAPI operations, on `document` (the service's title and tags).
/// `/docs/`, where seed 001 documents the docs, redirects to the shared `/docs` page.
pub fn routes(settings: &Settings) -> OpenApiRouter<Events> {
    use utoipa::OpenApi;
    let single = OpenApiRouter::with_openapi(crate::openapi::EventsApi::openapi())
        .merge(sessions::routes())
        .merge(events::routes())
        .merge(errors::routes())
        .merge(schemas::routes())
        .merge(user::queries())
        .route("/docs/", get(|| async { Redirect::permanent("/docs") }))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes));
    let event_batches = events::batch_routes().layer(DefaultBodyLimit::max(settings.max_batch_bytes));
    let user_batches = user::batch_routes().layer(DefaultBodyLimit::max(settings.max_user_batch_bytes));
    single.merge(event_batches).merge(user_batches)
}

/// Routes the documented path of `methods` both with and without its trailing slash.
fn both(router: OpenApiRouter<Events>, methods: UtoipaMethodRouter<Events>) -> OpenApiRouter<Events> {
    let path = methods.1.paths.keys().next().expect("a documented route").clone();
    let other = match path.strip_suffix('/') {
        Some(bare) => bare.to_owned(),
        None => format!("{path}/"),
    };
    router.route(&other, methods.2.clone()).routes(methods)
}

/// The error answers of the events routes: the shared ones but 401 and 403 (no route takes a
/// token), with a 422 that lists every reason when an event is invalid.
pub struct EventErrors;

impl IntoResponses for EventErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::response::Response>> {
        let mut responses = ErrorResponses::responses();
        responses.retain(|status, _| status != "401" && status != "403");
        let body = openapi::ContentBuilder::new().schema(Some(openapi::Ref::from_schema_name("EventValidationError")));
        let invalid = openapi::ResponseBuilder::new()
            .description("VALIDATION_FAILED: an invalid field or batch; an invalid event lists every reason")
            .content("application/json", body.build());
        responses.insert("422".to_owned(), invalid.build().into());
        responses
    }
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

/// `?limit=&after=` of a listing in `seq` order.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SeqPage {
    /// Page size (default 50)
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Cursor from the Link header (empty: none)
    #[param(pattern = r"^(-?[0-9]{1,18})?$")]
    after: Option<String>,
}

impl SeqPage {
    /// The page size and the `seq` the page starts after: 400 when either is not one.
    fn read(&self) -> Result<(i64, Option<i64>), ApiError> {
        Ok((page_limit(self.limit.as_deref())?, seq_cursor(self.after.as_deref())?))
    }
}

/// A `seq` cursor (`?after=`; empty means none).
fn seq_cursor(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    present(raw)
        .map(|raw| {
            raw.trim().parse::<i64>().map_err(|_| ApiError::bad_request("after must be a cursor from a Link header"))
        })
        .transpose()
}

/// The body of a request that must be JSON: 415 for any other content type.
async fn json_bytes(state: &Events, request: Request) -> Result<bytes::Bytes, ApiError> {
    if !is_json_content_type(request.headers()) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected a body with content-type application/json",
        ));
    }
    read_body(request, state).await
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::bad_request(format!("malformed JSON: {error}"))
}

/// The items of a batch body, each as written: 422 unless a JSON array, 413 beyond `max` items.
fn batch_items(body: &[u8], max: usize) -> Result<Vec<&RawValue>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::validation("a batch is a JSON array of events"),
        _ => malformed(&error),
    })?;
    if items.len() > max {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("a batch holds at most {max} events")));
    }
    Ok(items)
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

/// A listing's rows, each a `Self`: the description of the page it answers with.
trait Listed: ToSchema {
    const PAGE: &'static str;
}

/// A page of a listing: its rows, with the `Link` header to the next page when there is one.
struct Page<V>(HeaderMap, Vec<V>);

impl<V> Page<V> {
    /// The first `limit` of `rows` (read as `limit + 1`); when there were more, `Link` names the
    /// page after the `cursor` of the last one kept, with the same `query`.
    fn new<R>(
        path: &str,
        query: &[(&str, Option<&str>)],
        limit: i64,
        mut rows: Vec<R>,
        cursor: impl FnOnce(&R) -> String,
    ) -> Self
    where
        V: From<R>,
    {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let after = rows.last().filter(|_| more).map(cursor);
        Self(next_page(path, query, limit, after), rows.into_iter().map(V::from).collect())
    }
}

impl<V: Serialize> IntoResponse for Page<V> {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl<V: Listed> IntoResponses for Page<V> {
    fn responses() -> BTreeMap<String, RefOr<openapi::response::Response>> {
        let rows = openapi::schema::ArrayBuilder::new().items(openapi::Ref::from_schema_name(V::name()));
        let link = openapi::HeaderBuilder::new()
            .schema(openapi::ObjectBuilder::new().schema_type(openapi::Type::String))
            .description(Some("rel=next link to the following page, when there is one"));
        let page = openapi::ResponseBuilder::new()
            .description(V::PAGE)
            .header("link", link.build())
            .content("application/json", openapi::ContentBuilder::new().schema(Some(rows)).build());
        BTreeMap::from([("200".to_owned(), page.build().into())])
    }
}

/// Path parameters: a JSON 400 (never axum's plain-text one) when they do not decode.
pub use shared::http::PathParams;

/// A 422 of an update: the usual error body, with every reason when the event is invalid.
#[derive(Serialize, ToSchema)]
pub struct EventValidationError {
    pub error: EventValidationDetail,
}

#[derive(Serialize, ToSchema)]
pub struct EventValidationDetail {
    #[schema(example = "VALIDATION_FAILED")]
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reasons: Option<Vec<Reason>>,
}

/// A 422 that lists every reason: the usual error body with `reasons` beside the message.
pub struct Invalid {
    pub message: String,
    pub reasons: Vec<Reason>,
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let error = EventValidationDetail {
            code: ErrorCode::ValidationFailed,
            message: self.message,
            reasons: Some(self.reasons),
        };
        (ErrorCode::ValidationFailed.status(), Json(EventValidationError { error })).into_response()
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
