//! chat-write's OpenAPI document: the three create routes.

use shared::openapi::ErrorBody;
use utoipa::OpenApi;

use chat::model::{ChatBody, ChatView, MessageBody, MessageView};

#[derive(OpenApi)]
#[openapi(
    info(title = "chat-write", description = "Creates chats and messages: numbers from counters, a confirmed publish, then 201."),
    paths(create_chat, create_message, create_message_alias),
    components(schemas(ChatBody, ChatView, MessageBody, MessageView, ErrorBody)),
    tags((name = "chats"), (name = "messages"))
)]
pub struct ChatWriteApi;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ChatWriteApi::openapi()
}

#[utoipa::path(
    post, path = "/api/applications/{token}/chats", tag = "chats",
    summary = "Create a chat; its number is the next of the application",
    params(("token" = String, Path, description = "Application token")),
    request_body = ChatBody,
    responses(
        (status = 201, description = "Chat created", body = ChatView,
            links(
                ("CreateMessage" = (operation_id = "create_message_alias", parameters(("token" = "$response.body#/application_token"), ("chat_number" = "$response.body#/chat_number")))),
                ("ShowChat" = (operation_id = "show_chat", parameters(("token" = "$response.body#/application_token"), ("chat_number" = "$response.body#/chat_number")))),
                ("ListMessages" = (operation_id = "list_messages", parameters(("token" = "$response.body#/application_token"), ("chat_number" = "$response.body#/chat_number")))),
            )),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "Unknown application", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
        (status = 503, description = "The queue did not confirm; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn create_chat() {}

#[utoipa::path(
    post, path = "/api/applications/{token}/chats/{chat_number}", tag = "messages",
    summary = "Create a message in a chat (the seed's path)",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number")),
    request_body = MessageBody,
    responses(
        (status = 201, description = "Message created", body = MessageView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "Unknown application or chat", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
        (status = 503, description = "The queue did not confirm; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn create_message() {}

#[utoipa::path(
    post, path = "/api/applications/{token}/chats/{chat_number}/messages", tag = "messages",
    summary = "Create a message in a chat (REST alias)",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number")),
    request_body = MessageBody,
    responses(
        (status = 201, description = "Message created", body = MessageView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "Unknown application or chat", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
        (status = 503, description = "The queue did not confirm; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn create_message_alias() {}
