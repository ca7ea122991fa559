//! The OpenAPI 3.1 documents: the shared error body schema and responses, and the routes that
//! serve a service's document at `/openapi.json`.

use axum::Router;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;

/// A whole OpenAPI document.
pub type OpenApiDocument = OpenApi;

/// The one JSON error body: `{"error":{"code":"NOT_FOUND","message":"application not found"}}`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "NOT_FOUND", "message": "application not found"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of the error codes; the HTTP status follows from it.
    #[schema(example = "NOT_FOUND")]
    pub code: ErrorCodeName,
    /// Human-readable, lowercase, no trailing period.
    pub message: String,
}

/// Every error code chatmesh answers with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCodeName {
    BadRequest,
    ValidationFailed,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ServiceUnavailable,
    Internal,
}

/// `GET /openapi.json` serving `document`.
pub fn router<S: Clone + Send + Sync + 'static>(document: OpenApi) -> Router<S> {
    let json = document.to_pretty_json().expect("the OpenAPI document serialises");
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], json) }
        }),
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
