//! The create routes: `POST /api/applications/:token/chats`, and for messages both the seed's
//! `POST .../chats/:number` and the REST alias `POST .../chats/:number/messages`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use chat::commands::Command;
use chat::model::{self, ApplicationPath, ChatBody, ChatPath, ChatView, MessageBody, MessageView};
use chat::schema;
use shared::http::{JsonBody, PathParams};
use shared::openapi::ErrorResponses;
use shared::{ApiError, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ChatWrite, store};

/// The create routes, served with `state`.
pub fn router(state: ChatWrite) -> Router {
    routes().split_for_parts().0.with_state(state)
}

/// The create routes, each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<ChatWrite> {
    OpenApiRouter::default()
        .routes(routes!(create_chat))
        .routes(routes!(create_message))
        .routes(routes!(create_message_alias))
}

/// Create a chat; its number is the next of the application
#[utoipa::path(
    post, path = "/api/applications/{token}/chats", tag = "chats", params(ApplicationPath), request_body = ChatBody,
    responses(
        (status = 201, description = "Chat created", body = ChatView, links(
            ("CreateMessage" = (operation_id = "create_message_alias", parameters(("token" = "$response.body#/application_token"), ("chat_number" = "$response.body#/chat_number")))),
            ("ShowChat" = (operation_id = "show_chat", parameters(("token" = "$response.body#/application_token"), ("chat_number" = "$response.body#/chat_number")))),
            ("ListMessages" = (operation_id = "list_messages", parameters(("token" = "$response.body#/application_token"), ("chat_number" = "$response.body#/chat_number")))),
        )),
        ErrorResponses,
    )
)]
async fn create_chat(
    State(state): State<ChatWrite>,
    PathParams(ApplicationPath { token }): PathParams<ApplicationPath>,
    JsonBody(body): JsonBody<ChatBody>,
) -> Result<(StatusCode, Json<ChatView>), ApiError> {
    let chat_name = model::required_text("chat_name", &body.chat_name, model::MAX_NAME_CHARS)?;
    let application_id = state.application_id(&token).await?.ok_or_else(application_not_found)?;
    let seed = state.seed_chat_counter(application_id);
    let chat_number = state.counters.next(&state.keys.chat_counter(application_id), &seed).await?;
    let created_at = shared::now_millis();
    let command = Command::CreateChat { application_id, chat_number, chat_name: chat_name.clone(), created_at };
    if let Err(error) = publish(&state, &command).await {
        // The number is spent; without this mark, a message sent to it would be accepted for a
        // chat that may never exist.
        if let Err(mark) = store::mark_unconfirmed_chat(&state.db, application_id, chat_number).await {
            tracing::error!(application_id, chat_number, error = %mark, "could not record an unconfirmed chat");
        }
        return Err(error);
    }
    tracing::debug!(application_id, chat_number, "chat queued");
    Ok((StatusCode::CREATED, Json(ChatView::new(token, chat_number, chat_name, 0, created_at, created_at))))
}

/// Create a message in a chat (the seed's path)
#[utoipa::path(
    post, path = "/api/applications/{token}/chats/{chat_number}", tag = "messages", params(ChatPath),
    request_body = MessageBody, responses((status = 201, description = "Message created", body = MessageView), ErrorResponses)
)]
async fn create_message(
    State(state): State<ChatWrite>,
    PathParams(ChatPath { token, chat_number }): PathParams<ChatPath>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let content = model::required_text("message_content", &body.message_content, model::MAX_MESSAGE_CHARS)?;
    let chat_number = model::path_number("chat", &chat_number)?;
    let application_id = state.application_id(&token).await?.ok_or_else(application_not_found)?;
    if !chat_exists(&state, application_id, chat_number).await? {
        return Err(ApiError::not_found("chat not found"));
    }
    let seed = state.seed_message_counter(application_id, chat_number);
    let message_number = state.counters.next(&state.keys.message_counter(application_id, chat_number), &seed).await?;
    let created_at = shared::now_millis();
    let command =
        Command::CreateMessage { application_id, chat_number, message_number, content: content.clone(), created_at };
    publish(&state, &command).await?;
    let view = MessageView::new(token, chat_number, message_number, content, created_at, created_at);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Create a message in a chat (REST alias)
#[utoipa::path(
    post, path = "/api/applications/{token}/chats/{chat_number}/messages", tag = "messages", params(ChatPath),
    request_body = MessageBody, responses((status = 201, description = "Message created", body = MessageView), ErrorResponses)
)]
async fn create_message_alias(
    state: State<ChatWrite>,
    path: PathParams<ChatPath>,
    body: JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    create_message(state, path, body).await
}

/// A chat exists once persisted, and already from its 201 on: a number the chat counter has
/// handed out belongs to a chat whose command is queued, so a message may follow at once,
/// unless that create answered 503 (its command may be lost).
///
/// A number at or below the counter's floor and not in the store cannot be told apart: it may
/// be a chat whose create is still queued from before the counters were seeded again (Redis
/// restarted or came back older), or a number that was never handed out. Neither a 201 (the
/// message could never be stored) nor a 404 (the chat may be there in a moment) is right, so
/// the answer is a 503 to retry.
async fn chat_exists(state: &ChatWrite, application_id: i64, chat_number: i64) -> Result<bool, ApiError> {
    if state.known_chats.contains(application_id, chat_number) {
        return Ok(true);
    }
    let exists = schema::chat_id(&state.db, application_id, chat_number).await?.is_some() || {
        let seed = state.seed_chat_counter(application_id);
        let issued = state.counters.issued(&state.keys.chat_counter(application_id), &seed).await?;
        if chat_number >= 1 && chat_number <= issued.floor {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "this chat is not persisted yet and its number predates the counters' last reset; retry later",
            ));
        }
        chat_number > issued.floor
            && chat_number <= issued.last
            && !store::is_unconfirmed_chat(&state.db, application_id, chat_number).await?
    };
    if exists {
        state.known_chats.insert(application_id, chat_number);
    }
    Ok(exists)
}

/// No 201 without a durably queued command: a queue that does not confirm gives 503.
async fn publish(state: &ChatWrite, command: &Command) -> Result<(), ApiError> {
    state.queue.publish(&state.keys.command_queue(), command.encode()).await.map_err(|error| {
        tracing::warn!(%error, "command not confirmed by the queue");
        ApiError::new(ErrorCode::ServiceUnavailable, "the command queue did not confirm the write; retry later")
    })
}

fn application_not_found() -> ApiError {
    ApiError::not_found("application not found")
}
