//! chat-read's OpenAPI document: the operations its routes carry ([`crate::api::routes`]),
//! under its title and tags, with the admin token's security scheme.

use shared::openapi::ErrorBody;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "chat-read", description = "Applications, reads, updates and search of the chat API."),
    components(schemas(ErrorBody)),
    modifiers(&AdminAuth),
    tags((name = "applications"), (name = "chats"), (name = "messages"), (name = "search"))
)]
struct ChatReadApi;

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
    let mut document = ChatReadApi::openapi();
    document.merge(crate::api::routes().into_openapi());
    document
}
