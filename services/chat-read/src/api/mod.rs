//! chat-read's routes, one module per resource, merged here.

mod applications;
mod chats;
mod messages;
mod search;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header::LINK};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use shared::ApiError;
use shared::http::{PathParams, QueryParams};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;

use crate::ChatRead;
use crate::store::Page;

/// The API routes, served with `state`.
pub fn router(state: ChatRead) -> Router {
    routes().split_for_parts().0.with_state(state)
}

/// The API routes, each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<ChatRead> {
    OpenApiRouter::default()
        .merge(applications::routes())
        .merge(chats::routes())
        .merge(messages::routes())
        .merge(search::routes())
}

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 100;

/// `?limit=&after=&before=` as sent; parsed by [`PageParams::limit`] and
/// [`PageParams::numbered_page`]. Documented as the numbered lists take them; the list of
/// applications documents its token cursors itself.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 100 (default 50)
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Keyset cursor: items numbered after this one
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
    /// Keyset cursor: items numbered before this one (with after: the items between the two)
    #[param(value_type = Option<i64>, minimum = 0)]
    pub before: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match &self.limit {
            None => Ok(DEFAULT_PAGE_SIZE),
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE_SIZE}"))),
        }
    }

    /// A page keyed on numbers (chats, messages).
    pub fn numbered_page(&self) -> Result<Page, ApiError> {
        let number = |name: &str, raw: &Option<String>| -> Result<Option<i64>, ApiError> {
            raw.as_deref()
                .map(|raw| {
                    raw.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer")))
                })
                .transpose()
        };
        Ok(Page {
            limit: self.limit()? + 1,
            after: number("after", &self.after)?,
            before: number("before", &self.before)?,
        })
    }
}

/// Drops the extra row fetched to learn whether more follow; returns the rows and that answer.
pub fn trim_page<T>(mut rows: Vec<T>, page: &Page) -> (Vec<T>, bool) {
    let limit = (page.limit - 1) as usize;
    if rows.len() <= limit {
        return (rows, false);
    }
    if page.after.is_none() && page.before.is_some() {
        rows.remove(0);
    } else {
        rows.truncate(limit);
    }
    (rows, true)
}

/// A page's answer: `rows` (fetched one over the limit) without the extra one, and the `Link`
/// header for `path`, whose cursors are the keys `key` gives the first and last rows.
pub fn page_answer<T>(
    path: &str,
    params: &PageParams,
    page: &Page,
    rows: Vec<T>,
    key: impl Fn(&T) -> String,
) -> (HeaderMap, Json<Vec<T>>) {
    let (rows, has_more) = trim_page(rows, page);
    let (first, last) = (rows.first().map(&key), rows.last().map(&key));
    (link_header(path, params, page, has_more, first, last), Json(rows))
}

/// A list route's request: the state, the parent resource its path `P` names, the page asked
/// for and the path the client called (for the `Link` header).
pub struct Listing<P> {
    pub state: ChatRead,
    pub path: P,
    pub params: PageParams,
    uri_path: String,
}

impl<P: DeserializeOwned + Send> FromRequestParts<ChatRead> for Listing<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ChatRead) -> Result<Self, Self::Rejection> {
        let Ok(OriginalUri(uri)) = OriginalUri::from_request_parts(parts, state).await;
        let PathParams(path) = PathParams::from_request_parts(parts, state).await?;
        let QueryParams(params) = QueryParams::from_request_parts(parts, state).await?;
        Ok(Self { state: state.clone(), path, params, uri_path: uri.path().to_owned() })
    }
}

impl<P> Listing<P> {
    /// The answer with `rows` as the page ([`page_answer`]).
    pub fn answer<T>(&self, page: &Page, rows: Vec<T>, key: impl Fn(&T) -> String) -> (HeaderMap, Json<Vec<T>>) {
        page_answer(&self.uri_path, &self.params, page, rows, key)
    }
}

/// What PUT and PATCH of a chat resource take ([`shared::http::Edit`] on chat-read's state).
pub type Edit<P, B> = shared::http::Edit<ChatRead, P, B>;

/// The RFC 8288 `Link` header of a page: `next` after its last row when more follow (or when
/// it was read backwards), `prev` before its first row when it was read from a cursor. A page
/// read between two cursors (`params` holds both) keeps the far one in its links, so paging
/// stays inside the window.
pub fn link_header(
    path: &str,
    params: &PageParams,
    page: &Page,
    has_more: bool,
    first: Option<String>,
    last: Option<String>,
) -> HeaderMap {
    let limit = page.limit - 1;
    let backwards = page.after.is_none() && page.before.is_some();
    let window = page.after.is_some() && page.before.is_some();
    // In a window, the cursor a link does not move along.
    let kept = |name: &str, raw: &Option<String>| match raw.as_deref() {
        Some(raw) if window => format!("&{name}={}", shared::http::encode_query_value(raw)),
        _ => String::new(),
    };
    let (upper, lower) = (kept("before", &params.before), kept("after", &params.after));
    let mut links = Vec::new();
    if let Some(last) = last.filter(|_| has_more || backwards) {
        links.push(format!("<{path}?limit={limit}&after={last}{upper}>; rel=\"next\""));
    }
    if let Some(first) = first.filter(|_| page.after.is_some() || (backwards && has_more)) {
        links.push(format!("<{path}?limit={limit}{lower}&before={first}>; rel=\"prev\""));
    }
    let mut headers = HeaderMap::new();
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(", "))
    {
        headers.insert(LINK, value);
    }
    headers
}

/// A request bearing the admin token; 401 otherwise. Checked before anything else of the
/// request is read, so a refusal says nothing about the query.
pub struct Admin;

impl FromRequestParts<ChatRead> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ChatRead) -> Result<Self, Self::Rejection> {
        if state.admin.authorizes(&parts.headers) {
            Ok(Self)
        } else {
            Err(ApiError::unauthorized(
                "listing applications needs the admin token (Authorization: Bearer <CHATMESH_ADMIN_TOKEN>)",
            ))
        }
    }
}

fn application_not_found() -> ApiError {
    ApiError::not_found("application not found")
}

fn chat_not_found() -> ApiError {
    ApiError::not_found("chat not found")
}

/// Resolves a token to its application id, or 404.
async fn application_id(state: &ChatRead, token: &str) -> Result<i64, ApiError> {
    chat::schema::application_id(&state.db, token).await?.ok_or_else(application_not_found)
}

/// The highest message number handed out in a chat (its create may still be queued).
async fn last_message_number(state: &ChatRead, application_id: i64, chat_number: i64) -> Result<i64, ApiError> {
    use futures::FutureExt;
    let db = state.db.clone();
    let seed = move || {
        let db = db.clone();
        async move { crate::store::highest_message_number(&db, application_id, chat_number).await }.boxed()
    };
    let key = state.keys.message_counter(application_id, chat_number);
    Ok(state.counters.issued(&key, &seed).await?.last)
}

/// Resolves a chat in an application to its id, or 404.
async fn chat_id(state: &ChatRead, token: &str, raw_number: &str) -> Result<(i64, i64, i64), ApiError> {
    let number = chat::model::path_number("chat", raw_number)?;
    let application_id = application_id(state, token).await?;
    let chat_id = chat::schema::chat_id(&state.db, application_id, number).await?.ok_or_else(chat_not_found)?;
    Ok((application_id, chat_id, number))
}
