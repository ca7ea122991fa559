//! The create routes: `POST /api/applications/:token/chats`, and for messages both the seed's
//! `POST .../chats/:number` and the REST alias `POST .../chats/:number/messages`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use chat::commands::Command;
use chat::model::{self, ApplicationPath, ChatBody, ChatPath, ChatView, MessageBody, MessageView};
use chat::schema;
use shared::http::{JsonBody, PathParams};
use shared::openapi::ErrorResponses;
use shared::{ApiError, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::idempotency::{self, Record};
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
    post, path = "/api/applications/{token}/chats", tag = "chats", params(ApplicationPath, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]{0,253}[!-~])?$", description = "Retries with the same key (1 to 255 visible characters) within 24 h answer the first request's 201 and create nothing more; the same key with another body is a 422, per application")), request_body = ChatBody,
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
    headers: HeaderMap,
    JsonBody(body): JsonBody<ChatBody>,
) -> Result<(StatusCode, Json<ChatView>), ApiError> {
    let chat_name = model::required_text("chat_name", &body.chat_name, model::MAX_NAME_CHARS)?;
    let key = idempotency::key(&headers)?;
    let application_id = state.application_id(&token).await?.ok_or_else(application_not_found)?;
    let seed = state.seed_chat_counter(application_id);
    let draw = async { Ok(state.counters.next(&state.keys.chat_counter(application_id), &seed).await?) };
    let once = key.map(|key| (key, idempotency::fingerprint("chat", 0, &chat_name)));
    let command = |chat_number, created_at| Command::CreateChat {
        application_id,
        chat_number,
        chat_name: chat_name.clone(),
        created_at,
    };
    let Created { number: chat_number, created_at, queued, again } =
        create_once(&state, application_id, once, draw, command).await?;
    if let Err(error) = queued {
        // The number is spent; without this mark, a message sent to it would be accepted for a
        // chat that may never exist.
        if let Err(mark) = store::mark_unconfirmed_chat(&state.db, application_id, chat_number).await {
            tracing::error!(application_id, chat_number, error = %mark, "could not record an unconfirmed chat");
        }
        return Err(error);
    }
    if again {
        // A retry queued the command of a create that may have answered 503: the chat is coming.
        store::clear_unconfirmed_chat(&state.db, application_id, chat_number).await?;
    }
    tracing::debug!(application_id, chat_number, "chat queued");
    Ok((StatusCode::CREATED, Json(ChatView::new(token, chat_number, chat_name, 0, created_at, created_at))))
}

/// Create a message in a chat (the seed's path)
#[utoipa::path(
    post, path = "/api/applications/{token}/chats/{chat_number}", tag = "messages", params(ChatPath, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]{0,253}[!-~])?$", description = "Retries with the same key (1 to 255 visible characters) within 24 h answer the first request's 201 and create nothing more; the same key with another body is a 422, per application")),
    request_body = MessageBody, responses((status = 201, description = "Message created", body = MessageView), ErrorResponses)
)]
async fn create_message(
    State(state): State<ChatWrite>,
    PathParams(ChatPath { token, chat_number }): PathParams<ChatPath>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let content = model::required_text("message_content", &body.message_content, model::MAX_MESSAGE_CHARS)?;
    let chat_number = model::path_number("chat", &chat_number)?;
    let key = idempotency::key(&headers)?;
    let application_id = state.application_id(&token).await?.ok_or_else(application_not_found)?;
    if !chat_exists(&state, application_id, chat_number).await? {
        return Err(ApiError::not_found("chat not found"));
    }
    let seed = state.seed_message_counter(application_id, chat_number);
    let counter = state.keys.message_counter(application_id, chat_number);
    let draw = async { Ok(state.counters.next(&counter, &seed).await?) };
    let once = key.map(|key| (key, idempotency::fingerprint("message", chat_number, &content)));
    let command = |message_number, created_at| Command::CreateMessage {
        application_id,
        chat_number,
        message_number,
        content: content.clone(),
        created_at,
    };
    let Created { number, created_at, queued, .. } = create_once(&state, application_id, once, draw, command).await?;
    queued?;
    let view = MessageView::new(token, chat_number, number, content, created_at, created_at);
    Ok((StatusCode::CREATED, Json(view)))
}

/// A create's number, the time its 201 gives, and whether its command is queued; `again`
/// when the number was drawn by an earlier request with the same idempotency key.
struct Created {
    number: i64,
    created_at: i64,
    queued: Result<(), ApiError>,
    again: bool,
}

/// Draws a number (`draw`) and publishes its command (`command(number, created_at)`): every
/// time without a key, once per key with one (`once`: the key and the request's fingerprint;
/// see [`idempotency`]).
async fn create_once(
    state: &ChatWrite,
    application_id: i64,
    once: Option<(String, String)>,
    draw: impl Future<Output = Result<i64, ApiError>>,
    command: impl Fn(i64, i64) -> Command,
) -> Result<Created, ApiError> {
    let Some((key, fingerprint)) = once else {
        let number = draw.await?;
        let created_at = shared::now_millis();
        let queued = hand_over_or_publish(state, &command(number, created_at)).await;
        return Ok(Created { number, created_at, queued, again: false });
    };
    let db = &state.db;
    let _held = state.in_flight.hold(application_id, &key).await;
    let found = idempotency::lookup(db, application_id, &key, shared::now_millis()).await?;
    let record = match found {
        Some(record) => record,
        None => {
            let number = draw.await?;
            let mine = Record { fingerprint: fingerprint.clone(), number, created_at: shared::now_millis() };
            // Durable before the publish: a retry after a crash from here on publishes this
            // command. Another replica may have written the key's record since the lookup:
            // then that one is the key's, and this number is skipped.
            if idempotency::record(db, application_id, &key, &mine, shared::now_millis()).await? {
                let queued = publish(state, &command(mine.number, mine.created_at)).await;
                if queued.is_ok() {
                    state.in_flight.queued(application_id, &key);
                }
                return Ok(Created { number: mine.number, created_at: mine.created_at, queued, again: false });
            }
            idempotency::lookup(db, application_id, &key, shared::now_millis())
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::ServiceUnavailable, "idempotency key vanished; retry"))?
        }
    };
    if record.fingerprint != fingerprint {
        return Err(idempotency::mismatch());
    }
    // Unless this process queued it, the first request's command may not be queued (it failed,
    // or died after drawing): queue it again, the same command, which the consumer takes as a
    // redelivery if it was.
    let queued = match state.in_flight.was_queued(application_id, &key) {
        true => Ok(()),
        false => publish(state, &command(record.number, record.created_at)).await,
    };
    if queued.is_ok() {
        state.in_flight.queued(application_id, &key);
    }
    Ok(Created { number: record.number, created_at: record.created_at, queued, again: true })
}

/// Create a message in a chat (REST alias)
#[utoipa::path(
    post, path = "/api/applications/{token}/chats/{chat_number}/messages", tag = "messages", params(ChatPath, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]{0,253}[!-~])?$", description = "Retries with the same key (1 to 255 visible characters) within 24 h answer the first request's 201 and create nothing more; the same key with another body is a 422, per application")),
    request_body = MessageBody, responses((status = 201, description = "Message created", body = MessageView), ErrorResponses)
)]
async fn create_message_alias(
    state: State<ChatWrite>,
    path: PathParams<ChatPath>,
    headers: HeaderMap,
    body: JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    create_message(state, path, headers, body).await
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

/// A message's create, without an idempotency key, goes straight to the consumer in this
/// process where the queue has a direct path (the standalone server's embedded queue), else
/// to the queue. Durability: `hand_over` answers `true` only once the consumer acked the
/// command, which it does after committing the message to the store, so the 201 still
/// follows a durable write (the store is the command's log) and reads see it; any other
/// outcome publishes it durably as before. A crash meanwhile loses only a create nobody was
/// answered, whose number may then be handed out again. Chat creates and keyed creates always
/// take the queue: messages may be accepted for a chat's number before the chat is stored
/// ([`chat_exists`]), and a key's number is recorded before its command is queued, so both
/// numbers must stay taken across a crash.
async fn hand_over_or_publish(state: &ChatWrite, command: &Command) -> Result<(), ApiError> {
    if matches!(command, Command::CreateMessage { .. })
        && state.queue.hand_over(&state.keys.command_queue(), command.encode()).await
    {
        return Ok(());
    }
    publish(state, command).await
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
