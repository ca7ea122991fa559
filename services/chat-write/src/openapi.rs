//! chat-write's OpenAPI document: the operations its routes carry ([`crate::api::routes`]),
//! under its title and tags.

use shared::openapi::ErrorBody;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "chat-write", description = "Creates chats and messages: numbers from counters, a confirmed publish, then 201."),
    components(schemas(ErrorBody)),
    tags((name = "chats"), (name = "messages"))
)]
struct ChatWriteApi;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = ChatWriteApi::openapi();
    document.merge(crate::api::routes().into_openapi());
    document
}
