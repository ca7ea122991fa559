//! The segments service's OpenAPI 3.1 document: segmentify's legacy routes (seed 000) and the
//! `/api/v1` JSON:API (seed 002). Each operation is written on its handler in [`crate::api`]
//! and collected by the router; this is the document around them (title, tags, the bearer
//! scheme). `.ci/run` checks the running service against it with schemathesis.

use shared::openapi::{BearerScheme, ErrorBody};
use utoipa::OpenApi;

use crate::api::jsonapi::ErrorsBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "segments",
        description = "User segments for feature targeting: segmentify's legacy routes (slugs, memberships with TTL, CSV history, percentages) and the /api/v1 JSON:API (SIMPLE and DMN rules, flags, evaluation)."
    ),
    // The error bodies: the handlers list them through ErrorResponses and JsonApiErrorResponses.
    components(schemas(ErrorBody, ErrorsBody)),
    modifiers(&BEARER_AUTH),
    tags(
        (name = "segments (legacy)", description = "segmentify's routes with its exact shapes, behind a bearer token with SEGMENTS_* permissions (unless the deployment opens them with CHATMESH_SEGMENTS_OPEN_LEGACY)"),
        (name = "segments", description = "/api/v1 segments: JSON:API documents, bearer token with SEGMENTS_* permissions"),
        (name = "decisions", description = "DMN models stored once, referred to by segments' decisionId"),
        (name = "flags", description = "Feature flags whose targeting rules use segments"),
    )
)]
pub struct SegmentsApi;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    utoipa_axum::router::OpenApiRouter::with_openapi(SegmentsApi::openapi()).merge(crate::api::routes()).into_openapi()
}

/// `bearerAuth`: the admin token (`CHATMESH_ADMIN_TOKEN`) or a key minted by `segments mint-key`.
const BEARER_AUTH: BearerScheme = BearerScheme {
    name: "bearerAuth",
    description: "The admin token (CHATMESH_ADMIN_TOKEN, every permission) or an API key minted with `segments mint-key`.",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        let document = serde_json::to_value(document()).unwrap();
        for (path, methods) in [
            ("/segments", &["get", "post"][..]),
            ("/segments/{slug}", &["get", "delete"]),
            ("/segments/users", &["post"]),
            ("/segments/users/{id}", &["get"]),
            ("/segments/users/{id}/history", &["get"]),
            ("/history/{id}/{from}/{to}/history.csv", &["get"]),
            ("/api/v1/segments", &["get", "post"]),
            ("/api/v1/segments/{id}", &["get", "patch", "delete"]),
            ("/api/v1/segments/evaluate", &["post"]),
            ("/api/v1/decisions", &["post"]),
            ("/api/v1/decisions/{id}", &["get"]),
            ("/api/v1/flags", &["get", "post"]),
            ("/api/v1/flags/{id}", &["get", "patch", "delete"]),
            ("/api/v1/flags/{id}/evaluate", &["post"]),
        ] {
            for method in methods {
                assert!(document["paths"][path][method].is_object(), "{method} {path}");
            }
        }
        let schemes = &document["components"]["securitySchemes"]["bearerAuth"];
        assert_eq!(schemes["scheme"], "bearer");
    }
}
