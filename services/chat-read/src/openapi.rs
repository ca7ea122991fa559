//! chat-read's OpenAPI document: the operations its routes carry ([`crate::api::routes`]),
//! under its title and tags, with the admin token's security scheme.

use shared::openapi::{BearerScheme, ErrorBody};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "chat-read", description = "Applications, reads, updates and search of the chat API."),
    components(schemas(ErrorBody)),
    modifiers(&ADMIN_AUTH),
    tags(
        (name = "applications"), (name = "chats"), (name = "messages"), (name = "search"),
        (name = "stream", description = "Every change of a chat, pushed as it is committed: SSE per chat, a WebSocket per application.")
    )
)]
struct ChatReadApi;

/// `adminToken`: the operator's bearer token, `CHATMESH_ADMIN_TOKEN`.
const ADMIN_AUTH: BearerScheme = BearerScheme {
    name: "adminToken",
    description: "The admin token (CHATMESH_ADMIN_TOKEN). An application's own token is not one: it goes in the path.",
};

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = ChatReadApi::openapi();
    document.merge(crate::api::routes().into_openapi());
    document.merge(crate::stream::routes().into_openapi());
    document
}
