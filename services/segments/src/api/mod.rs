//! The segments routes: one module per resource, merged here.
//!
//! | routes | module |
//! |---|---|
//! | `/segments`, `/segments/users`, `/history/...` (seed 000, a bearer token unless opened by config) | [`legacy`] |
//! | `/api/v1/segments`, `/api/v1/segments/evaluate` (seed 002) | [`segments`] |
//! | `/api/v1/decisions` | [`decisions`] |
//! | `/api/v1/flags` | [`flags`] |

pub mod decisions;
pub mod flags;
pub mod jsonapi;
pub mod legacy;
pub mod segments;

use axum::Router;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::any;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa_axum::router::OpenApiRouter;

use crate::Segments;

/// Every route of the service (without health or the service-wide fallbacks: the binary that
/// serves them adds those once).
pub fn router(state: Segments) -> Router {
    Router::from(routes()).with_state(state)
}

/// The routes with their OpenAPI operations. Under `/api/v1` an unknown path (404) or a method
/// a route does not take (405, with `Allow`) is answered here, in the JSON:API error shape of
/// that family.
pub fn routes() -> OpenApiRouter<Segments> {
    let (v1, document) = OpenApiRouter::new()
        .merge(segments::routes())
        .merge(decisions::routes())
        .merge(flags::routes())
        .split_for_parts();
    let v1 = v1.fallback(jsonapi::no_such_route).method_not_allowed_fallback(jsonapi::method_not_allowed);
    let mut v1 = OpenApiRouter::from(v1);
    *v1.get_openapi_mut() = document;
    OpenApiRouter::new()
        .merge(legacy::routes())
        .nest("/api/v1", v1)
        // The nested fallback takes `/api/v1` and `/api/v1/...`, not the bare `/api/v1/`.
        .route("/api/v1/", any(jsonapi::no_such_route))
}

/// A schema written as JSON, for the shapes the derive cannot say (unions of types).
pub(crate) fn schema_from_json(value: serde_json::Value) -> RefOr<Schema> {
    serde_json::from_value(value).expect("a valid schema")
}

/// Path parameters of the legacy routes: a JSON error body in the chatmesh shape (never axum's
/// plain-text 400) when they do not decode, as `%FF` does not to UTF-8.
pub use shared::http::PathParams;

/// `scheme://host` of the request as the client addressed it (through a proxy's
/// `X-Forwarded-*` headers when present), for the absolute URLs the legacy routes answer with;
/// empty (so URLs stay relative) when the headers give nothing usable.
pub fn base_url(headers: &HeaderMap) -> String {
    let header =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or("").trim());
    let host = header("x-forwarded-host").filter(|h| !h.is_empty()).or_else(|| header("host"));
    let Some(host) = host.filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))) else {
        return String::new();
    };
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// `response` (a 201) with `location`, the new resource's URL, as its `Location` header; a
/// location that is no valid header value leaves the header out rather than failing the create.
pub fn with_location(mut response: Response, location: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// Whether `text` is a UUID in its canonical hyphenated form.
pub fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
