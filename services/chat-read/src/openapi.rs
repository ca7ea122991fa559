//! chat-read's OpenAPI document: applications, every read and update, and search.

use chat::model::{
    ApplicationBody, ApplicationPatch, ApplicationView, ChatBody, ChatPatch, ChatView, MessageBody, MessagePatch,
    MessageView, SearchHitView,
};
use shared::openapi::ErrorBody;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "chat-read", description = "Applications, reads, updates and search of the chat API."),
    paths(list_applications, create_application, show_application, replace_application, update_application, list_chats, show_chat, replace_chat, update_chat, list_messages, show_message, replace_message, update_message, search_messages),
    components(schemas(ApplicationBody, ApplicationPatch, ChatPatch, MessagePatch, SearchHitView, ErrorBody)),
    modifiers(&AdminAuth),
    tags((name = "applications"), (name = "chats"), (name = "messages"), (name = "search"))
)]
pub struct ChatReadApi;

/// `adminToken`: the operator's bearer token, `CHATMESH_ADMIN_TOKEN`.
struct AdminAuth;

impl utoipa::Modify for AdminAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "The admin token (CHATMESH_ADMIN_TOKEN). An application's own token is not one: it goes in the path."
                .to_owned(),
        );
        components.add_security_scheme("adminToken", SecurityScheme::Http(http));
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ChatReadApi::openapi()
}

#[utoipa::path(
    get, path = "/api/applications", tag = "applications",
    summary = "List every application with its token (the admin token only)",
    security(("adminToken" = [])),
    params(("limit" = Option<i64>, Query, description = "Page size, 1 to 100 (default 50)", minimum = 1, maximum = 100), ("after" = Option<String>, Query, description = "Keyset cursor: the token of the application the page starts after (empty: no cursor; an unknown token is 404)", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"), ("before" = Option<String>, Query, description = "Keyset cursor: the token of the application the page ends before (with after: the applications between the two; empty: no cursor; an unknown token is 404)", pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")),
    responses(
        (status = 200, description = "List applications", body = Vec<ApplicationView>),
        (status = 400, description = "A bad limit or cursor, or a malformed query string", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no admin token as bearer (an application's token is not one); the body names no token", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn list_applications() {}

#[utoipa::path(
    post, path = "/api/applications", tag = "applications",
    summary = "Create an application",
    params(),
    request_body = ApplicationBody,
    responses(
        (status = 201, description = "Create an application", body = ApplicationView,
            links(
                ("CreateChat" = (operation_id = "create_chat", parameters(("token" = "$response.body#/application_token")))),
                ("ListChats" = (operation_id = "list_chats", parameters(("token" = "$response.body#/application_token")))),
                ("ShowApplication" = (operation_id = "show_application", parameters(("token" = "$response.body#/application_token")))),
            )),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn create_application() {}

#[utoipa::path(
    get, path = "/api/applications/{token}", tag = "applications",
    summary = "Show an application",
    params(("token" = String, Path, description = "Application token")),
    responses(
        (status = 200, description = "Show an application", body = ApplicationView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn show_application() {}

#[utoipa::path(
    put, path = "/api/applications/{token}", tag = "applications",
    summary = "Rename an application",
    params(("token" = String, Path, description = "Application token")),
    request_body = ApplicationBody,
    responses(
        (status = 200, description = "Rename an application", body = ApplicationView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn replace_application() {}

#[utoipa::path(
    patch, path = "/api/applications/{token}", tag = "applications",
    summary = "Update an application",
    params(("token" = String, Path, description = "Application token")),
    request_body = ApplicationPatch,
    responses(
        (status = 200, description = "Update an application", body = ApplicationView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn update_application() {}

#[utoipa::path(
    get, path = "/api/applications/{token}/chats", tag = "chats",
    summary = "List the chats of an application",
    params(("token" = String, Path, description = "Application token"), ("limit" = Option<i64>, Query, description = "Page size, 1 to 100 (default 50)", minimum = 1, maximum = 100), ("after" = Option<i64>, Query, description = "Keyset cursor: items numbered after this one", minimum = 0), ("before" = Option<i64>, Query, description = "Keyset cursor: items numbered before this one (with after: the items between the two)", minimum = 0)),
    responses(
        (status = 200, description = "List the chats of an application", body = Vec<ChatView>),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn list_chats() {}

#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}", tag = "chats",
    summary = "Show a chat",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number")),
    responses(
        (status = 200, description = "Show a chat", body = ChatView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn show_chat() {}

#[utoipa::path(
    put, path = "/api/applications/{token}/chats/{chat_number}", tag = "chats",
    summary = "Rename a chat",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number")),
    request_body = ChatBody,
    responses(
        (status = 200, description = "Rename a chat", body = ChatView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn replace_chat() {}

#[utoipa::path(
    patch, path = "/api/applications/{token}/chats/{chat_number}", tag = "chats",
    summary = "Update a chat",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number")),
    request_body = ChatPatch,
    responses(
        (status = 200, description = "Update a chat", body = ChatView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn update_chat() {}

#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/messages", tag = "messages",
    summary = "List the messages of a chat",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number"), ("limit" = Option<i64>, Query, description = "Page size, 1 to 100 (default 50)", minimum = 1, maximum = 100), ("after" = Option<i64>, Query, description = "Keyset cursor: items numbered after this one", minimum = 0), ("before" = Option<i64>, Query, description = "Keyset cursor: items numbered before this one (with after: the items between the two)", minimum = 0)),
    responses(
        (status = 200, description = "List the messages of a chat", body = Vec<MessageView>),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn list_messages() {}

#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages",
    summary = "Show a message",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number"), ("message_number" = i64, Path, description = "Message number")),
    responses(
        (status = 200, description = "Show a message", body = MessageView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn show_message() {}

#[utoipa::path(
    put, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages",
    summary = "Edit a message",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number"), ("message_number" = i64, Path, description = "Message number")),
    request_body = MessageBody,
    responses(
        (status = 200, description = "Edit a message", body = MessageView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn replace_message() {}

#[utoipa::path(
    patch, path = "/api/applications/{token}/chats/{chat_number}/messages/{message_number}", tag = "messages",
    summary = "Update a message",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number"), ("message_number" = i64, Path, description = "Message number")),
    request_body = MessagePatch,
    responses(
        (status = 200, description = "Update a message", body = MessageView),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn update_message() {}

#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/search", tag = "search",
    summary = "Search the messages of a chat",
    params(("token" = String, Path, description = "Application token"), ("chat_number" = i64, Path, description = "Chat number"), ("q" = String, Query, description = "The query: not blank, at most 500 characters. Also accepted as `?search_query=` or as a JSON body `{\"search_query\"}` on the GET (the seed's way); without any of them the answer is 422", min_length = 1, max_length = 500, pattern = r"\S"), ("limit" = Option<i64>, Query, description = "Most hits, 1 to 100 (default 50)", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "Search the messages of a chat", body = Vec<SearchHitView>),
        (status = 400, description = "Malformed JSON or query string", body = ErrorBody),
        (status = 404, description = "Unknown token or number", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long field", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn search_messages() {}
