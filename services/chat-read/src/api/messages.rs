//! `.../chats/:number/messages` (reads) and `.../messages/:number` (read, edit). An edit is
//! written to the store and re-indexed before it answers, so search follows it at once.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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
        update_message,
        delete_message
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

/// Delete a message
///
/// The message stops being listed, shown (404), searched and counted, and `message.deleted`
/// goes out on the chat's stream; its number is never handed out again. A second DELETE, and
/// an edit of a deleted message, are 404s. A message whose create is still queued is deleted
/// once it is stored: the delete goes through the same queue, behind its create.
#[utoipa::path(
    delete, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages", params(MessagePath),
    responses((status = 204, description = "Deleted, or queued behind the message's create"), ErrorResponses)
)]
async fn delete_message(
    State(state): State<ChatRead>,
    PathParams(MessagePath { token, chat_number, message_number: number }): PathParams<MessagePath>,
) -> Result<StatusCode, ApiError> {
    let number = model::path_number("message", &number)?;
    let (application_id, chat_id, chat_number) = chat_id(&state, &token, &chat_number).await?;
    let now = shared::now_millis();
    match store::message_deleted(&state.db, chat_id, number).await? {
        Some(true) => Err(message_not_found()),
        Some(false) => {
            // A delete queued while the message's create was (the consumer may have stored the
            // create and not yet applied it) makes this one a second DELETE.
            if !take_delete_marker(&state, application_id, chat_number, number).await? {
                return Err(message_not_found());
            }
            // Another DELETE may have won the race since the look: that one answers 204.
            if !store::delete_message(&state, chat_id, number, now).await? {
                return Err(message_not_found());
            }
            state.counters.touch(&state.keys.touched_chats(), &[chat_id.to_string()]).await?;
            index_again(&state, application_id, chat_number, number, String::new()).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        None => queue_delete(&state, application_id, chat_number, number, now).await,
    }
}

/// The DELETE of a message not stored: if its number was handed out, its create may still be
/// queued, so the delete is queued behind it (once per message: the first DELETE takes a
/// marker, and a second one meanwhile is a 404); otherwise 404.
async fn queue_delete(
    state: &ChatRead,
    application_id: i64,
    chat_number: i64,
    number: i64,
    now: i64,
) -> Result<StatusCode, ApiError> {
    if number > super::last_message_number(state, application_id, chat_number).await? {
        return Err(message_not_found());
    }
    let marker = state.keys.pending_delete(application_id, chat_number, number);
    let holder = delete_holder();
    if !state.counters.try_lock(&marker, &holder, PENDING_DELETE).await? {
        return Err(message_not_found());
    }
    let command = Command::DeleteMessage { application_id, chat_number, message_number: number, deleted_at: now };
    if let Err(error) = state.queue.publish(&state.keys.command_queue(), command.encode()).await {
        // Not queued: a retry of this DELETE must not find the marker.
        let _ = state.counters.unlock(&marker, &holder).await;
        return Err(error.into());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Takes the marker of a message's delete; false when a delete holds it already (queued).
async fn take_delete_marker(
    state: &ChatRead,
    application_id: i64,
    chat_number: i64,
    number: i64,
) -> Result<bool, ApiError> {
    let marker = state.keys.pending_delete(application_id, chat_number, number);
    Ok(state.counters.try_lock(&marker, &delete_holder(), PENDING_DELETE).await?)
}

/// A holder of this request's own: a lock is its holder's to take again.
fn delete_holder() -> String {
    format!("delete-{:032x}", rand::random::<u128>())
}

/// How long the marker of a queued delete lives: far longer than a create waits in the queue.
const PENDING_DELETE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Makes search follow a message's new text (empty for a deleted one, which no query finds):
/// at once where this process writes the index, else through the consumer, which reads the
/// text from the store.
async fn index_again(
    state: &ChatRead,
    application_id: i64,
    chat_number: i64,
    number: i64,
    content: String,
) -> Result<(), ApiError> {
    if state.search.writable() {
        let doc = SearchDoc { scope: search_scope(application_id, chat_number), number, content };
        state.search.upsert(vec![doc]).await?;
    } else {
        let command = Command::IndexMessage { application_id, chat_number, message_number: number };
        state.queue.publish(&state.keys.command_queue(), command.encode()).await?;
    }
    Ok(())
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
        index_again(state, application_id, chat_number, number, content).await?;
    }
    let view =
        store::get_message(&state.db, chat_id, token, chat_number, number).await?.ok_or_else(message_not_found)?;
    Ok(Json(view))
}
