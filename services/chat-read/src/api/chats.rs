//! `/api/applications/:token/chats` (reads) and `.../chats/:number` (read, rename).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chat::model::{self, ApplicationPath, ChatBody, ChatPatch, ChatPath, ChatView, ReadBody, UnreadView};
use serde::Deserialize;
use shared::ApiError;
use shared::http::{PathParams, QueryParams};
use shared::openapi::ErrorResponses;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Edit, Listing, PageParams, application_id, chat_id, chat_not_found};
use crate::ChatRead;
use crate::store;

pub fn routes() -> OpenApiRouter<ChatRead> {
    OpenApiRouter::default()
        .routes(routes!(list_chats))
        .routes(routes!(show_chat, replace_chat, update_chat))
        .routes(routes!(mark_read))
        .routes(routes!(show_unread))
}

/// `?user_id=`: whose read position the answer counts from.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserParams {
    /// The app's own id of the user whose unread counts to give
    pub user_id: Option<String>,
}

impl UserParams {
    /// The user id, if one was given: 1 to 255 characters, else 400.
    fn user(&self) -> Result<Option<String>, ApiError> {
        self.user_id
            .as_deref()
            .map(|user| {
                model::required_text("user_id", user, MAX_USER_ID_CHARS).map_err(|e| ApiError::bad_request(e.message))
            })
            .transpose()
    }
}

/// The longest user id a read position takes.
const MAX_USER_ID_CHARS: usize = 255;

/// List the chats of an application
///
/// With `?user_id=`, each chat also carries `unread_count`: its messages above that user's
/// read position, deleted ones left out.
#[utoipa::path(
    get, path = "/api/applications/{token}/chats", tag = "chats", params(ApplicationPath, PageParams, UserParams),
    responses((status = 200, description = "List the chats of an application", body = Vec<ChatView>), ErrorResponses)
)]
async fn list_chats(
    list: Listing<ApplicationPath>,
    QueryParams(user): QueryParams<UserParams>,
) -> Result<(HeaderMap, Json<Vec<ChatView>>), ApiError> {
    let (state, token) = (&list.state, &list.path.token);
    let page = list.params.numbered_page()?;
    let user = user.user()?;
    let application_id = application_id(state, token).await?;
    let mut rows = store::list_chats(&state.db, application_id, token, page).await?;
    if let Some(user) = user {
        let numbers: Vec<i64> = rows.iter().map(|chat| chat.chat_number).collect();
        let ids = store::chat_ids(&state.db, application_id, &numbers).await?;
        let unread = crate::reads::unread_counts(&state.db, &ids.values().copied().collect::<Vec<_>>(), &user).await?;
        rows = rows
            .into_iter()
            .map(|chat| {
                let count = ids.get(&chat.chat_number).and_then(|id| unread.get(id)).copied().unwrap_or(0);
                chat.with_unread(count)
            })
            .collect();
    }
    Ok(list.answer(&page, rows, |c| c.chat_number.to_string()))
}

/// Mark a chat read up to a message
///
/// Moves the user's read position forward to `message_number` (a lower one leaves it where
/// it is) and answers the position with the messages above it. 422 beyond the chat's last
/// message number.
#[utoipa::path(
    put, path = "/api/applications/{token}/chats/{chat_number}/read", tag = "chats", params(ChatPath), request_body = ReadBody,
    responses((status = 200, description = "The read position and the messages above it", body = UnreadView), ErrorResponses)
)]
async fn mark_read(edit: Edit<ChatPath, ReadBody>) -> Result<Json<UnreadView>, ApiError> {
    let (state, ChatPath { token, chat_number }) = (&edit.state, &edit.path);
    let user = model::required_text("user_id", &edit.body.user_id, MAX_USER_ID_CHARS)?;
    let number = edit.body.message_number;
    if number < 0 {
        return Err(ApiError::validation("message_number must be a non-negative integer"));
    }
    let (application_id, chat_id, chat_number) = chat_id(state, token, chat_number).await?;
    let last = super::last_message_number(state, application_id, chat_number).await?;
    if number > last {
        return Err(ApiError::validation(format!(
            "message_number {number} is beyond the chat's last message ({last})"
        )));
    }
    let (last_read, unread) = crate::reads::mark_read(&state.db, chat_id, &user, number, shared::now_millis()).await?;
    Ok(Json(UnreadView { user_id: user, chat_number, last_read, unread }))
}

/// Show a user's unread count in a chat
#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/unread", tag = "chats", params(ChatPath, UserParams),
    responses((status = 200, description = "The read position and the messages above it", body = UnreadView), ErrorResponses)
)]
async fn show_unread(
    State(state): State<ChatRead>,
    PathParams(ChatPath { token, chat_number }): PathParams<ChatPath>,
    QueryParams(user): QueryParams<UserParams>,
) -> Result<Json<UnreadView>, ApiError> {
    let user = user.user()?.ok_or_else(|| ApiError::bad_request("user_id is required"))?;
    let (_, chat_id, chat_number) = chat_id(&state, &token, &chat_number).await?;
    let (last_read, unread) = crate::reads::unread(&state.db, chat_id, &user).await?;
    Ok(Json(UnreadView { user_id: user, chat_number, last_read, unread }))
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
