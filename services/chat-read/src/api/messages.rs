//! `.../chats/:number/messages` (reads) and `.../messages/:number` (read, edit). An edit is
//! written to the store and re-indexed before it answers, so search follows it at once.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use chat::commands::Command;
use chat::model::{self, ChatPath, MessageBody, MessagePatch, MessagePath, MessageView};
use chat::schema::search_scope;
use shared::ApiError;
use shared::backends::search::SearchDoc;
use shared::http::{JsonBody, PathParams, QueryParams};
use shared::openapi::ErrorResponses;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PageParams, chat_id, link_header, trim_page};
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
async fn list_messages(
    State(state): State<ChatRead>,
    OriginalUri(uri): OriginalUri,
    PathParams(ChatPath { token, chat_number }): PathParams<ChatPath>,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<(HeaderMap, Json<Vec<MessageView>>), ApiError> {
    let page = params.numbered_page()?;
    let (_, chat_id, chat_number) = chat_id(&state, &token, &chat_number).await?;
    let rows = store::list_messages(&state.db, chat_id, &token, chat_number, page).await?;
    let (rows, has_more) = trim_page(rows, &page);
    let first = rows.first().map(|m| m.message_number.to_string());
    let last = rows.last().map(|m| m.message_number.to_string());
    Ok((link_header(uri.path(), &params, &page, has_more, first, last), Json(rows)))
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
async fn replace_message(
    State(state): State<ChatRead>,
    PathParams(MessagePath { token, chat_number, message_number: number }): PathParams<MessagePath>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<Json<MessageView>, ApiError> {
    edit(&state, &token, &chat_number, &number, Some(body.message_content)).await
}

/// Update a message
#[utoipa::path(
    patch, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages", params(MessagePath), request_body = MessagePatch,
    responses((status = 200, description = "Update a message", body = MessageView), ErrorResponses)
)]
async fn update_message(
    State(state): State<ChatRead>,
    PathParams(MessagePath { token, chat_number, message_number: number }): PathParams<MessagePath>,
    JsonBody(body): JsonBody<MessagePatch>,
) -> Result<Json<MessageView>, ApiError> {
    edit(&state, &token, &chat_number, &number, body.message_content).await
}

async fn edit(
    state: &ChatRead,
    token: &str,
    chat_number: &str,
    number: &str,
    content: Option<String>,
) -> Result<Json<MessageView>, ApiError> {
    let content = content.map(|c| model::required_text("message_content", &c, model::MAX_MESSAGE_CHARS)).transpose()?;
    let number = model::path_number("message", number)?;
    let (application_id, chat_id, chat_number) = chat_id(state, token, chat_number).await?;
    if let Some(content) = content {
        if !store::update_message(&state.db, chat_id, number, &content, shared::now_millis()).await? {
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
