//! The OpenAPI 3.1 documents: the shared error responses, and the routes that
//! serve a service's document at `/openapi.json` and browsable docs at `/docs`.
//!
//! `/docs` is Swagger UI, vendored under `shared/assets/swagger-ui/` (npm `swagger-ui-dist`,
//! unmodified) and embedded in the binary: the page and its script and style come from the
//! service itself, so the docs work with no network and nothing is downloaded at build time.

use axum::Router;
use axum::routing::get;
use utoipa::IntoResponses;
use utoipa::openapi::OpenApi;

pub use crate::error::ErrorBody;

/// A whole OpenAPI document.
pub type OpenApiDocument = OpenApi;

/// The shared error answers, each with the JSON error body; a route lists them once:
/// `responses((status = 201, body = X), ErrorResponses)`.
#[derive(IntoResponses)]
pub enum ErrorResponses {
    /// BAD_REQUEST: malformed JSON, query string or path
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// UNAUTHORIZED: no valid bearer token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// FORBIDDEN: the token lacks the permission
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// NOT_FOUND: no such resource
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// CONFLICT: the resource exists or is in use
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// PAYLOAD_TOO_LARGE: body over the size limit
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// UNSUPPORTED_MEDIA_TYPE: not application/json
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// VALIDATION_FAILED: a missing, blank, too long or invalid field
    #[response(status = 422)]
    ValidationFailed(ErrorBody),
    /// SERVICE_UNAVAILABLE: a backend is unavailable; retry
    #[response(status = 503)]
    ServiceUnavailable(ErrorBody),
}

/// A bearer-token security scheme a document's operations name in their `security`: a
/// modifier, `modifiers(&SCHEME)` on the document's `#[openapi(...)]`.
pub struct BearerScheme {
    /// The scheme's name in `components.securitySchemes`.
    pub name: &'static str,
    /// Which tokens it takes.
    pub description: &'static str,
}

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(self.description.to_owned());
        components.add_security_scheme(self.name, SecurityScheme::Http(http));
    }
}

/// `GET /openapi.json` serving `document`, and the Swagger UI page at `GET /docs` that browses it.
pub fn router<S: Clone + Send + Sync + 'static>(document: OpenApi) -> Router<S> {
    let json = to_json(&document);
    let title = document.info.title.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], json) }
            }),
        )
        .merge(docs_router(&title))
}

/// The document as served: pretty JSON, with response links spelled as OpenAPI spells them
/// (utoipa 5.5 writes a link's `operationId`, `operationRef` and `requestBody` in snake case).
pub fn to_json(document: &OpenApi) -> String {
    let mut value = serde_json::to_value(document).expect("the OpenAPI document serialises");
    if let Some(paths) = value.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
        let operations =
            paths.values_mut().filter_map(serde_json::Value::as_object_mut).flat_map(|item| item.values_mut());
        let responses = operations
            .filter_map(|operation| operation.get_mut("responses"))
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|responses| responses.values_mut());
        for response in responses {
            let Some(links) = response.get_mut("links").and_then(serde_json::Value::as_object_mut) else {
                continue;
            };
            for link in links.values_mut().filter_map(serde_json::Value::as_object_mut) {
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(field) = link.remove(snake) {
                        link.insert(camel.to_owned(), field);
                    }
                }
            }
        }
    }
    serde_json::to_string_pretty(&value).expect("the OpenAPI document serialises")
}

/// Swagger UI 5.35.0 (npm `swagger-ui-dist`), embedded.
const SWAGGER_UI_JS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_UI_CSS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui.css");

/// The page at `/docs`: Swagger UI over `/openapi.json`, every asset from this server.
/// `validatorUrl: null` keeps Swagger UI from asking an outside validator about the document.
fn docs_page(title: &str) -> String {
    let title: String = title
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<style>body {{ margin: 0; }}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
</script>
</body>
</html>
"##
    )
}

/// `GET /docs` (the page) and its two assets under `/docs/`.
fn docs_router<S: Clone + Send + Sync + 'static>(title: &str) -> Router<S> {
    use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
    const CACHE: &str = "public, max-age=86400";
    let page = docs_page(title);
    Router::new()
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move { ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-cache")], page) }
            }),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| async {
                ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, CACHE)], SWAGGER_UI_JS)
            }),
        )
        .route(
            "/docs/swagger-ui.css",
            get(|| async { ([(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, CACHE)], SWAGGER_UI_CSS) }),
        )
}

/// Merges the documents of several services into one, titled `title`.
pub fn merge(title: &str, documents: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut merged = utoipa::openapi::OpenApiBuilder::new()
        .info(utoipa::openapi::InfoBuilder::new().title(title).version(env!("CARGO_PKG_VERSION")).build())
        .build();
    for document in documents {
        merged.merge(document);
    }
    merged
}
