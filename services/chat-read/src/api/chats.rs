//! `/api/applications/:token/chats` (reads) and `.../chats/:number` (read, rename).

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use chat::model::{self, ChatBody, ChatPatch, ChatView};
use shared::ApiError;
use shared::http::{JsonBody, PathParams, QueryParams};

use super::{PageParams, application_id, chat_id, chat_not_found, link_header, trim_page};
use crate::ChatRead;
use crate::store;

pub fn router() -> Router<ChatRead> {
    Router::new()
        .route("/api/applications/{token}/chats", get(list))
        .route("/api/applications/{token}/chats/{chat_number}", get(show).put(replace).patch(update))
}

async fn list(
    State(state): State<ChatRead>,
    OriginalUri(uri): OriginalUri,
    PathParams(token): PathParams<String>,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<(HeaderMap, Json<Vec<ChatView>>), ApiError> {
    let page = params.numbered_page()?;
    let application_id = application_id(&state, &token).await?;
    let (rows, has_more) = trim_page(store::list_chats(&state.db, application_id, &token, page).await?, &page);
    let first = rows.first().map(|c| c.chat_number.to_string());
    let last = rows.last().map(|c| c.chat_number.to_string());
    Ok((link_header(uri.path(), &params, &page, has_more, first, last), Json(rows)))
}

async fn show(
    State(state): State<ChatRead>,
    PathParams((token, number)): PathParams<(String, String)>,
) -> Result<Json<ChatView>, ApiError> {
    let number = model::path_number("chat", &number)?;
    let application_id = application_id(&state, &token).await?;
    let (_, view) = store::get_chat(&state.db, application_id, &token, number).await?.ok_or_else(chat_not_found)?;
    Ok(Json(view))
}

async fn replace(
    State(state): State<ChatRead>,
    PathParams((token, number)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ChatBody>,
) -> Result<Json<ChatView>, ApiError> {
    rename(&state, &token, &number, Some(body.chat_name)).await
}

async fn update(
    State(state): State<ChatRead>,
    PathParams((token, number)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ChatPatch>,
) -> Result<Json<ChatView>, ApiError> {
    rename(&state, &token, &number, body.chat_name).await
}

async fn rename(state: &ChatRead, token: &str, number: &str, name: Option<String>) -> Result<Json<ChatView>, ApiError> {
    let name = name.map(|n| model::required_text("chat_name", &n, model::MAX_NAME_CHARS)).transpose()?;
    let (application_id, chat_id, number) = chat_id(state, token, number).await?;
    if let Some(name) = name {
        store::rename_chat(&state.db, chat_id, &name, shared::now_millis()).await?;
    }
    let (_, view) = store::get_chat(&state.db, application_id, token, number).await?.ok_or_else(chat_not_found)?;
    Ok(Json(view))
}
