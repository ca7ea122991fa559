//! `.../chats/:number/messages` (reads) and `.../messages/:number` (read, edit). An edit is
//! written to the store and re-indexed before it answers, so search follows it at once.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chat::commands::Command;
use chat::model::{self, ChatPath, MessageBody, MessagePatch, MessagePath, MessageView};
use chat::schema::search_scope;
use shared::ApiError;
use shared::backends::search::SearchDoc;
use shared::http::PathParams;
use shared::openapi::ErrorResponses;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Edit, Listing, PageParams, chat_id};
use crate::ChatRead;
use crate::store;

pub fn routes() -> OpenApiRouter<ChatRead> {
    OpenApiRouter::default().routes(routes!(list_messages)).routes(routes!(
        show_message,
        replace_message,
        update_message
    ))
}

fn message_not_found() -> ApiError {
    ApiError::not_found("message not found")
}

/// List the messages of a chat
#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/messages", tag = "messages", params(ChatPath, PageParams),
    responses((status = 200, description = "List the messages of a chat", body = Vec<MessageView>), ErrorResponses)
)]
async fn list_messages(list: Listing<ChatPath>) -> Result<(HeaderMap, Json<Vec<MessageView>>), ApiError> {
    let (state, ChatPath { token, chat_number }) = (&list.state, &list.path);
    let page = list.params.numbered_page()?;
    let (_, chat_id, chat_number) = chat_id(state, token, chat_number).await?;
    let rows = store::list_messages(&state.db, chat_id, token, chat_number, page).await?;
    Ok(list.answer(&page, rows, |m| m.message_number.to_string()))
}

/// Show a message
#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages", params(MessagePath),
    responses((status = 200, description = "Show a message", body = MessageView), ErrorResponses)
)]
async fn show_message(
    State(state): State<ChatRead>,
    PathParams(MessagePath { token, chat_number, message_number: number }): PathParams<MessagePath>,
) -> Result<Json<MessageView>, ApiError> {
    let number = model::path_number("message", &number)?;
    let (_, chat_id, chat_number) = chat_id(&state, &token, &chat_number).await?;
    let view =
        store::get_message(&state.db, chat_id, &token, chat_number, number).await?.ok_or_else(message_not_found)?;
    Ok(Json(view))
}

/// Edit a message
#[utoipa::path(
    put, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages", params(MessagePath), request_body = MessageBody,
    responses((status = 200, description = "Edit a message", body = MessageView), ErrorResponses)
)]
async fn replace_message(edit: Edit<MessagePath, MessageBody>) -> Result<Json<MessageView>, ApiError> {
    edit_message(&edit.state, &edit.path, Some(edit.body.message_content)).await
}

/// Update a message
#[utoipa::path(
    patch, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages", params(MessagePath), request_body = MessagePatch,
    responses((status = 200, description = "Update a message", body = MessageView), ErrorResponses)
)]
async fn update_message(edit: Edit<MessagePath, MessagePatch>) -> Result<Json<MessageView>, ApiError> {
    edit_message(&edit.state, &edit.path, edit.body.message_content).await
}

/// PUT and PATCH: `content`, if given, becomes the message's text (and is re-indexed);
/// answers the message.
async fn edit_message(
    state: &ChatRead,
    path: &MessagePath,
    content: Option<String>,
) -> Result<Json<MessageView>, ApiError> {
    let MessagePath { token, chat_number, message_number: number } = path;
    let content = content.map(|c| model::required_text("message_content", &c, model::MAX_MESSAGE_CHARS)).transpose()?;
    let number = model::path_number("message", number)?;
    let (application_id, chat_id, chat_number) = chat_id(state, token, chat_number).await?;
    if let Some(content) = content {
        if !store::update_message(state, chat_id, number, &content, shared::now_millis()).await? {
            return Err(message_not_found());
        }
        if state.search.writable() {
            let doc = SearchDoc { scope: search_scope(application_id, chat_number), number, content };
            state.search.upsert(vec![doc]).await?;
        } else {
            // The consumer process owns the index: it re-reads the text from the store.
            let command = Command::IndexMessage { application_id, chat_number, message_number: number };
            state.queue.publish(&state.keys.command_queue(), command.encode()).await?;
        }
    }
    let view =
        store::get_message(&state.db, chat_id, token, chat_number, number).await?.ok_or_else(message_not_found)?;
    Ok(Json(view))
}
