//! `/api/applications` and `/api/applications/:token`.

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use chat::model::{self, ApplicationBody, ApplicationPatch, ApplicationView};
use shared::ApiError;
use shared::http::{JsonBody, PathParams, QueryParams};

use super::{Admin, PageParams, application_not_found, link_header, trim_page};
use crate::ChatRead;
use crate::store::{self, Page};

pub fn router() -> Router<ChatRead> {
    Router::new()
        .route("/api/applications", get(list).post(create))
        .route("/api/applications/{token}", get(show).put(replace).patch(update))
}

/// 128 random bits, written like a UUID so clients that expect one keep working.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

async fn create(
    State(state): State<ChatRead>,
    JsonBody(body): JsonBody<ApplicationBody>,
) -> Result<(StatusCode, Json<ApplicationView>), ApiError> {
    let name = model::required_text("application_name", &body.application_name, model::MAX_NAME_CHARS)?;
    let view = store::insert_application(&state.db, &new_token(), &name, shared::now_millis()).await?;
    tracing::info!(application_token = %view.application_token, "application created");
    Ok((StatusCode::CREATED, Json(view)))
}

/// Every application with its token: an operator's call (the admin token as bearer). An
/// application's own token is no answer here, and the refusal names no token.
async fn list(
    _: Admin,
    State(state): State<ChatRead>,
    OriginalUri(uri): OriginalUri,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<(HeaderMap, Json<Vec<ApplicationView>>), ApiError> {
    let page = Page {
        limit: params.limit()? + 1,
        after: cursor(&state, &params.after).await?,
        before: cursor(&state, &params.before).await?,
    };
    let (rows, has_more) = trim_page(store::list_applications(&state.db, page).await?, &page);
    let first = rows.first().map(|a| a.application_token.clone());
    let last = rows.last().map(|a| a.application_token.clone());
    Ok((link_header(uri.path(), &params, &page, has_more, first, last), Json(rows)))
}

async fn show(
    State(state): State<ChatRead>,
    PathParams(token): PathParams<String>,
) -> Result<Json<ApplicationView>, ApiError> {
    let (_, view) = store::get_application(&state.db, &token).await?.ok_or_else(application_not_found)?;
    Ok(Json(view))
}

async fn replace(
    State(state): State<ChatRead>,
    PathParams(token): PathParams<String>,
    JsonBody(body): JsonBody<ApplicationBody>,
) -> Result<Json<ApplicationView>, ApiError> {
    rename(&state, &token, Some(body.application_name)).await
}

async fn update(
    State(state): State<ChatRead>,
    PathParams(token): PathParams<String>,
    JsonBody(body): JsonBody<ApplicationPatch>,
) -> Result<Json<ApplicationView>, ApiError> {
    rename(&state, &token, body.application_name).await
}

async fn rename(state: &ChatRead, token: &str, name: Option<String>) -> Result<Json<ApplicationView>, ApiError> {
    let (id, _) = store::get_application(&state.db, token).await?.ok_or_else(application_not_found)?;
    if let Some(name) = name {
        let name = model::required_text("application_name", &name, model::MAX_NAME_CHARS)?;
        store::rename_application(&state.db, id, &name, shared::now_millis()).await?;
    }
    let (_, view) = store::get_application(&state.db, token).await?.ok_or_else(application_not_found)?;
    Ok(Json(view))
}

/// The internal id behind a cursor token; clients only ever see tokens.
/// Whether `text` has the shape of an application token (8-4-4-4-12 hex digits).
fn is_token_shaped(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

async fn cursor(state: &ChatRead, raw: &Option<String>) -> Result<Option<i64>, ApiError> {
    match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(token) if !is_token_shaped(token) => Err(ApiError::bad_request("the cursor is not an application token")),
        Some(token) => match store::get_application(&state.db, token).await? {
            Some((id, _)) => Ok(Some(id)),
            // A well-formed cursor naming an application that does not exist, like an unknown
            // token in a path.
            None => Err(ApiError::not_found("the cursor names no application")),
        },
    }
}
