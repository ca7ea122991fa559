//! `/api/applications/:token/chats` (reads) and `.../chats/:number` (read, rename).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chat::model::{self, ApplicationPath, ChatBody, ChatPatch, ChatPath, ChatView};
use shared::ApiError;
use shared::http::PathParams;
use shared::openapi::ErrorResponses;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Edit, Listing, PageParams, application_id, chat_id, chat_not_found};
use crate::ChatRead;
use crate::store;

pub fn routes() -> OpenApiRouter<ChatRead> {
    OpenApiRouter::default().routes(routes!(list_chats)).routes(routes!(show_chat, replace_chat, update_chat))
}

/// List the chats of an application
#[utoipa::path(
    get, path = "/api/applications/{token}/chats", tag = "chats", params(ApplicationPath, PageParams),
    responses((status = 200, description = "List the chats of an application", body = Vec<ChatView>), ErrorResponses)
)]
async fn list_chats(list: Listing<ApplicationPath>) -> Result<(HeaderMap, Json<Vec<ChatView>>), ApiError> {
    let (state, token) = (&list.state, &list.path.token);
    let page = list.params.numbered_page()?;
    let rows = store::list_chats(&state.db, application_id(state, token).await?, token, page).await?;
    Ok(list.answer(&page, rows, |c| c.chat_number.to_string()))
}

/// Show a chat
#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}", tag = "chats", params(ChatPath),
    responses((status = 200, description = "Show a chat", body = ChatView), ErrorResponses)
)]
async fn show_chat(
    State(state): State<ChatRead>,
    PathParams(ChatPath { token, chat_number: number }): PathParams<ChatPath>,
) -> Result<Json<ChatView>, ApiError> {
    let number = model::path_number("chat", &number)?;
    let application_id = application_id(&state, &token).await?;
    let (_, view) = store::get_chat(&state.db, application_id, &token, number).await?.ok_or_else(chat_not_found)?;
    Ok(Json(view))
}

/// Rename a chat
#[utoipa::path(
    put, path = "/api/applications/{token}/chats/{chat_number}", tag = "chats", params(ChatPath), request_body = ChatBody,
    responses((status = 200, description = "Rename a chat", body = ChatView), ErrorResponses)
)]
async fn replace_chat(edit: Edit<ChatPath, ChatBody>) -> Result<Json<ChatView>, ApiError> {
    rename(&edit.state, &edit.path, Some(edit.body.chat_name)).await
}

/// Update a chat
#[utoipa::path(
    patch, path = "/api/applications/{token}/chats/{chat_number}", tag = "chats", params(ChatPath), request_body = ChatPatch,
    responses((status = 200, description = "Update a chat", body = ChatView), ErrorResponses)
)]
async fn update_chat(edit: Edit<ChatPath, ChatPatch>) -> Result<Json<ChatView>, ApiError> {
    rename(&edit.state, &edit.path, edit.body.chat_name).await
}

/// PUT and PATCH: `name`, if given, becomes the chat's name; answers the chat.
async fn rename(state: &ChatRead, path: &ChatPath, name: Option<String>) -> Result<Json<ChatView>, ApiError> {
    let ChatPath { token, chat_number: number } = path;
    let name = name.map(|n| model::required_text("chat_name", &n, model::MAX_NAME_CHARS)).transpose()?;
    let (application_id, chat_id, number) = chat_id(state, token, number).await?;
    if let Some(name) = name {
        store::rename_chat(state, chat_id, &name, shared::now_millis()).await?;
    }
    let (_, view) = store::get_chat(&state.db, application_id, token, number).await?.ok_or_else(chat_not_found)?;
    Ok(Json(view))
}
