//! The segments service's OpenAPI 3.1 document: segmentify's legacy routes (seed 000) and the
//! `/api/v1` JSON:API (seed 002), with request and response schemas, error bodies, and the
//! seeds' examples. The schemas here describe what the handlers in [`crate::api`] read and
//! write; `.ci/run` checks the running service against this document with schemathesis.

#![allow(dead_code)]

use serde::Serialize;
use serde_json::json;
use shared::openapi::ErrorBody;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "segments",
        description = "User segments for feature targeting: segmentify's legacy routes (slugs, memberships with TTL, CSV history, percentages) and the /api/v1 JSON:API (SIMPLE and DMN rules, flags, evaluation)."
    ),
    paths(
        v1_list_segments, v1_create_segment, v1_get_segment, v1_update_segment, v1_delete_segment, v1_evaluate,
        v1_create_decision, v1_get_decision,
        v1_list_flags, v1_create_flag, v1_get_flag, v1_update_flag, v1_delete_flag, v1_evaluate_flag,
    ),
    components(schemas(
        ErrorBody, JsonApiErrors, JsonApiError, ErrorSource, SegmentInput, SegmentPatch, SegmentDocument,
        SegmentResource, SegmentAttributes, SegmentMeta, SelfLink, SegmentPage, SegmentListItem, SegmentSummary,
        PageMeta, PageLinks, EvaluationInput, EvaluationDocument, EvaluatedSegment, EvaluatedAttributes,
        EvaluationMeta, Reason, RuleType, DecisionInput, DecisionDocument, DecisionResource, DecisionAttributes,
        FlagInput, FlagPatch, FlagRuleInput, FlagDocument, FlagPage, FlagResource, FlagAttributes, FlagRule,
        FlagEvaluationDocument, FlagEvaluation, FlagEvaluationAttributes, FlagReason,
    )),
    modifiers(&BearerAuth),
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
    utoipa_axum::router::OpenApiRouter::<crate::Segments>::with_openapi(SegmentsApi::openapi())
        .merge(crate::api::legacy::routes())
        .into_openapi()
}

/// `bearerAuth`: the admin token (`CHATMESH_ADMIN_TOKEN`) or a key minted by `segments mint-key`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "The admin token (CHATMESH_ADMIN_TOKEN, every permission) or an API key minted with `segments mint-key`."
                .to_owned(),
        );
        components.add_security_scheme("bearerAuth", SecurityScheme::Http(http));
    }
}

/// A schema written as JSON, for the shapes the derive cannot say (unions of types).
pub(crate) fn schema_from_json(value: serde_json::Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    serde_json::from_value(value).expect("a valid schema")
}

// ---------------------------------------------------------------------------------------------
// /api/v1 schemas

/// A JSON:API error document: every problem of the request at once.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"errors": [{"status": "404", "code": "NOT_FOUND", "detail": "segment 550e8400-e29b-41d4-a716-446655440001 not found", "source": {"parameter": "id"}}]}))]
pub struct JsonApiErrors {
    errors: Vec<JsonApiError>,
}

#[derive(Serialize, ToSchema)]
pub struct JsonApiError {
    /// The HTTP status, as a string.
    #[schema(example = "400")]
    status: String,
    #[schema(example = "VALIDATION")]
    code: JsonApiErrorCode,
    detail: String,
    source: Option<ErrorSource>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JsonApiErrorCode {
    Validation,
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

/// What the problem is about: a JSON pointer into the body, a query parameter, or a header.
#[derive(Serialize, ToSchema)]
pub struct ErrorSource {
    #[schema(example = "/key")]
    pointer: Option<String>,
    parameter: Option<String>,
    header: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub enum RuleType {
    #[serde(rename = "SIMPLE")]
    Simple,
    #[serde(rename = "DMN")]
    Dmn,
}

/// Creates a segment. The body is this object, or the same fields as `data.attributes` of a
/// JSON:API document. `ruleContent`: for SIMPLE, the rule as JSON (an object, or a string
/// holding it, as the seed sends); for DMN, the DMN XML. A DMN segment takes `ruleContent`
/// or `decisionId`. Rules are compiled on write: an invalid one is a 400.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "key": "premium-users",
    "name": "Premium Users",
    "description": "Usuários com plano premium",
    "ruleType": "SIMPLE",
    "ruleContent": "{\"operator\":\"AND\",\"conditions\":[{\"attribute\":\"plan\",\"operator\":\"eq\",\"value\":\"premium\"}]}"
}))]
#[serde(rename_all = "camelCase")]
pub struct SegmentInput {
    /// Unique among live segments: letters, digits, hyphens, underscores; `users` is reserved
    /// (the legacy route `/segments/users`).
    #[schema(pattern = r"^[A-Za-z0-9_-]+$", min_length = 1, max_length = 200)]
    key: String,
    #[schema(pattern = r"\S", min_length = 1, max_length = 200)]
    name: String,
    #[schema(max_length = 1000)]
    description: Option<String>,
    #[schema(nullable = false)]
    rule_type: Option<RuleType>,
    #[schema(schema_with = rule_content_schema)]
    rule_content: Option<serde_json::Value>,
    #[schema(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        format = "uuid"
    )]
    decision_id: Option<String>,
    /// The share of all users (by murmur3 bucket) in the segment, beside its rule.
    #[schema(minimum = 0, maximum = 100)]
    percent: Option<i64>,
}

/// Changes some fields of a segment (the same fields as [`SegmentInput`], all optional); bumps
/// its version and invalidates cached membership at once.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "name": "Premium Users v2",
    "ruleContent": "{\"operator\":\"OR\",\"conditions\":[{\"attribute\":\"plan\",\"operator\":\"eq\",\"value\":\"premium\"},{\"attribute\":\"plan\",\"operator\":\"eq\",\"value\":\"enterprise\"}]}"
}))]
#[serde(rename_all = "camelCase")]
pub struct SegmentPatch {
    /// As on create: `users` is reserved.
    #[schema(pattern = r"^[A-Za-z0-9_-]+$", min_length = 1, max_length = 200, nullable = false)]
    key: Option<String>,
    #[schema(pattern = r"\S", min_length = 1, max_length = 200, nullable = false)]
    name: Option<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    #[schema(nullable = false)]
    rule_type: Option<RuleType>,
    #[schema(schema_with = rule_content_schema)]
    rule_content: Option<serde_json::Value>,
    #[schema(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        format = "uuid"
    )]
    decision_id: Option<String>,
    #[schema(minimum = 0, maximum = 100)]
    percent: Option<i64>,
}

fn rule_content_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let scalar = json!({"type": ["string", "number", "boolean"]});
    let condition = |operators: &[&str], value: serde_json::Value| {
        json!({
            "type": "object",
            "required": ["attribute", "operator", "value"],
            "additionalProperties": false,
            "properties": {
                "attribute": {"type": "string", "minLength": 1, "pattern": r"\S", "description": "An attribute of the evaluation context; `userId` is the user's id"},
                "operator": {"type": "string", "enum": operators},
                "value": value,
            }
        })
    };
    let list = |kind: &str| json!({"type": "array", "minItems": 1, "items": {"type": kind}});
    schema_from_json(json!({
        "description": "SIMPLE: the rule `{\"operator\":\"AND|OR\",\"conditions\":[...]}` as an object or JSON-encoded in a string; DMN: the DMN XML. Checked on write (400 when it does not compile).",
        "oneOf": [
            {
                "type": "object",
                "title": "SimpleRule",
                "required": ["conditions"],
                "additionalProperties": false,
                "properties": {
                    "operator": {"type": "string", "enum": ["AND", "OR"], "default": "AND"},
                    "conditions": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 1000,
                        "items": {"oneOf": [
                            condition(&["eq", "neq", "contains"], scalar),
                            condition(&["gt", "gte", "lt", "lte"], json!({"type": "number"})),
                            condition(&["in", "notIn"], json!({"oneOf": [list("string"), list("number"), list("boolean")]})),
                            condition(&["startsWith", "endsWith"], json!({"type": "string"})),
                        ]}
                    }
                }
            },
            {"type": "string", "title": "Encoded rule or DMN XML", "maxLength": 524288},
            {"type": "null"}
        ],
        "example": "{\"operator\":\"AND\",\"conditions\":[{\"attribute\":\"plan\",\"operator\":\"eq\",\"value\":\"premium\"}]}"
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SelfLink {
    #[serde(rename = "self")]
    #[schema(example = "/api/v1/segments/550e8400-e29b-41d4-a716-446655440001")]
    self_: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentAttributes {
    key: String,
    name: String,
    description: Option<String>,
    rule_type: RuleType,
    rule_content: Option<String>,
    #[schema(format = "uuid")]
    decision_id: Option<String>,
    percent: Option<i64>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SegmentMeta {
    /// Bumped by every PATCH.
    version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SegmentResource {
    #[serde(rename = "type")]
    #[schema(example = "segments")]
    type_: String,
    #[schema(format = "uuid")]
    id: String,
    attributes: SegmentAttributes,
    meta: SegmentMeta,
    links: SelfLink,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"data": {
    "type": "segments",
    "id": "550e8400-e29b-41d4-a716-446655440001",
    "attributes": {
        "key": "premium-users",
        "name": "Premium Users",
        "description": "Usuários com plano premium",
        "ruleType": "SIMPLE",
        "ruleContent": "{\"operator\":\"AND\",\"conditions\":[{\"attribute\":\"plan\",\"operator\":\"eq\",\"value\":\"premium\"}]}",
        "createdAt": "2024-01-15T10:30:00Z",
        "updatedAt": "2024-01-15T10:30:00Z"
    },
    "meta": {"version": 1},
    "links": {"self": "/api/v1/segments/550e8400-e29b-41d4-a716-446655440001"}
}}))]
pub struct SegmentDocument {
    data: SegmentResource,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentSummary {
    key: String,
    name: String,
    rule_type: RuleType,
}

#[derive(Serialize, ToSchema)]
pub struct SegmentListItem {
    #[serde(rename = "type")]
    type_: String,
    #[schema(format = "uuid")]
    id: String,
    attributes: SegmentSummary,
    links: SelfLink,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageMeta {
    total_items: i64,
    total_pages: i64,
    current_page: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PageLinks {
    #[serde(rename = "self")]
    self_: String,
    first: String,
    last: String,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "data": [
        {"type": "segments", "id": "550e8400-e29b-41d4-a716-446655440001", "attributes": {"key": "premium-users", "name": "Premium Users", "ruleType": "SIMPLE"}, "links": {"self": "/api/v1/segments/550e8400-e29b-41d4-a716-446655440001"}},
        {"type": "segments", "id": "550e8400-e29b-41d4-a716-446655440002", "attributes": {"key": "beta-testers", "name": "Beta Testers", "ruleType": "SIMPLE"}, "links": {"self": "/api/v1/segments/550e8400-e29b-41d4-a716-446655440002"}}
    ],
    "meta": {"totalItems": 2, "totalPages": 1, "currentPage": 1},
    "links": {"self": "/api/v1/segments?page[number]=1&page[size]=20", "first": "/api/v1/segments?page[number]=1&page[size]=20", "last": "/api/v1/segments?page[number]=1&page[size]=20"}
}))]
pub struct SegmentPage {
    data: Vec<SegmentListItem>,
    meta: PageMeta,
    links: PageLinks,
}

/// Who to evaluate: `userId` (a string of 1 to 191 characters, or an integer) and the context
/// `attributes` rules look at. Also accepted as `data.attributes` of a JSON:API document.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"userId": "user-1", "attributes": {"plan": "premium", "country": "BR", "age": 30}}))]
#[serde(rename_all = "camelCase")]
pub struct EvaluationInput {
    #[schema(schema_with = evaluation_user_schema)]
    user_id: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

fn evaluation_user_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema_from_json(json!({
        "oneOf": [
            {"type": "integer", "minimum": -9_007_199_254_740_991_i64, "maximum": 9_007_199_254_740_991_i64},
            {"type": "string", "minLength": 1, "maxLength": 191}
        ],
        "example": "user-1"
    }))
}

/// Why the user is in a segment.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// Added through `POST /segments/users`; `expiresAt` when it has a TTL.
    Explicit {
        #[serde(rename = "expiresAt")]
        #[schema(format = DateTime)]
        expires_at: Option<String>,
    },
    /// The segment's SIMPLE or DMN rule matched.
    Rule {
        #[serde(rename = "ruleType")]
        rule_type: RuleType,
    },
    /// The user's murmur3 bucket (1 to 100) is within the segment's percent.
    Percentage { percent: i64, bucket: i64 },
}

#[derive(Serialize, ToSchema)]
pub struct EvaluatedAttributes {
    key: String,
    name: String,
    reason: Reason,
}

#[derive(Serialize, ToSchema)]
pub struct EvaluatedSegment {
    #[serde(rename = "type")]
    type_: String,
    #[schema(format = "uuid")]
    id: String,
    attributes: EvaluatedAttributes,
    links: SelfLink,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationMeta {
    user_id: String,
    evaluated_segments: i64,
    matched_segments: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "data": [{"type": "segments", "id": "550e8400-e29b-41d4-a716-446655440001", "attributes": {"key": "premium-users", "name": "Premium Users", "reason": {"kind": "RULE", "ruleType": "SIMPLE"}}, "links": {"self": "/api/v1/segments/550e8400-e29b-41d4-a716-446655440001"}}],
    "meta": {"userId": "user-1", "evaluatedSegments": 2, "matchedSegments": 1}
}))]
pub struct EvaluationDocument {
    data: Vec<EvaluatedSegment>,
    meta: EvaluationMeta,
}

/// A DMN model as JSON (`content` is the XML). The body may instead be the XML itself, sent
/// as `application/xml`, `text/xml` or any `+xml` type.
#[derive(Serialize, ToSchema)]
pub struct DecisionInput {
    #[schema(max_length = 200)]
    name: Option<String>,
    /// DMN XML, at most 512 KiB; compiled on write (400 when it does not).
    #[schema(pattern = r"\S", min_length = 1, max_length = 524288)]
    content: String,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionAttributes {
    name: String,
    /// The decision the model's output is read from.
    decision: String,
    #[schema(format = DateTime)]
    #[serde(rename = "createdAt")]
    created_at: String,
    /// The DMN XML (on `GET` only).
    content: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionResource {
    #[serde(rename = "type")]
    #[schema(example = "decisions")]
    type_: String,
    #[schema(format = "uuid")]
    id: String,
    attributes: DecisionAttributes,
    links: SelfLink,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionDocument {
    data: DecisionResource,
}

/// A targeting rule: the segment (by `segmentId`, or `segmentKey`) and the variation it gives.
#[derive(Serialize)]
pub struct FlagRuleInput;

impl utoipa::PartialSchema for FlagRuleInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let rule = |required: &str| {
            json!({
                "type": "object",
                "required": [required],
                "properties": {
                    "segmentId": {"type": "string", "format": "uuid"},
                    "segmentKey": {"type": "string"},
                    "variation": {"type": "boolean", "default": true}
                }
            })
        };
        schema_from_json(json!({
            "description": "A targeting rule: the segment (by `segmentId`, or `segmentKey`) and the variation it gives (default true). A segment that does not exist (or is deleted) is a 409.",
            "anyOf": [rule("segmentId"), rule("segmentKey")],
            "example": {"segmentKey": "premium-users", "variation": true}
        }))
    }
}

impl ToSchema for FlagRuleInput {}

/// Creates a flag; `rules` are tried in order, the first segment the user is in wins.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"key": "new-checkout", "name": "New checkout", "enabled": true, "defaultVariation": false, "rules": [{"segmentKey": "premium-users", "variation": true}]}))]
#[serde(rename_all = "camelCase")]
pub struct FlagInput {
    #[schema(pattern = r"^[A-Za-z0-9_-]+$", min_length = 1, max_length = 200)]
    key: String,
    #[schema(max_length = 200, nullable = false)]
    name: Option<String>,
    #[schema(nullable = false)]
    enabled: Option<bool>,
    #[schema(nullable = false)]
    default_variation: Option<bool>,
    #[schema(max_items = 100, nullable = false)]
    rules: Option<Vec<FlagRuleInput>>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"enabled": false}))]
#[serde(rename_all = "camelCase")]
pub struct FlagPatch {
    #[schema(pattern = r"^[A-Za-z0-9_-]+$", min_length = 1, max_length = 200, nullable = false)]
    key: Option<String>,
    #[schema(max_length = 200, nullable = false)]
    name: Option<String>,
    #[schema(nullable = false)]
    enabled: Option<bool>,
    #[schema(nullable = false)]
    default_variation: Option<bool>,
    /// Replaces every rule.
    #[schema(max_items = 100, nullable = false)]
    rules: Option<Vec<FlagRuleInput>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlagRule {
    #[schema(format = "uuid")]
    segment_id: String,
    segment_key: String,
    variation: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlagAttributes {
    key: String,
    name: String,
    enabled: bool,
    default_variation: bool,
    rules: Vec<FlagRule>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct FlagResource {
    #[serde(rename = "type")]
    #[schema(example = "flags")]
    type_: String,
    #[schema(format = "uuid")]
    id: String,
    attributes: FlagAttributes,
    links: SelfLink,
}

#[derive(Serialize, ToSchema)]
pub struct FlagDocument {
    data: FlagResource,
}

#[derive(Serialize, ToSchema)]
pub struct FlagPage {
    data: Vec<FlagResource>,
    meta: PageMeta,
    links: PageLinks,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlagReason {
    /// The flag is disabled: the default variation.
    Disabled,
    /// The user is in the segment of a targeting rule.
    TargetingMatch,
    /// No rule's segment holds the user: the default variation.
    Default,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlagEvaluationAttributes {
    key: String,
    user_id: String,
    value: bool,
    reason: FlagReason,
    #[schema(format = "uuid")]
    segment_id: Option<String>,
    segment_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FlagEvaluation {
    #[serde(rename = "type")]
    #[schema(example = "flagEvaluations")]
    type_: String,
    #[schema(format = "uuid")]
    id: String,
    attributes: FlagEvaluationAttributes,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"data": {"type": "flagEvaluations", "id": "550e8400-e29b-41d4-a716-446655440010", "attributes": {"key": "new-checkout", "userId": "user-1", "value": true, "reason": "TARGETING_MATCH", "segmentId": "550e8400-e29b-41d4-a716-446655440001", "segmentKey": "premium-users"}}}))]
pub struct FlagEvaluationDocument {
    data: FlagEvaluation,
}

// ---------------------------------------------------------------------------------------------
// /api/v1 operations

const JSONAPI: &str = "application/vnd.api+json";

#[utoipa::path(
    get, path = "/api/v1/segments", tag = "segments", operation_id = "listSegments",
    summary = "List live segments, a page at a time (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    params(
        ("page[number]" = Option<i64>, Query, description = "Page, from 1", minimum = 1, maximum = 92233720368547758_i64),
        ("page[size]" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "A page of segments", body = SegmentPage, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: a bad page parameter", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_READ", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_list_segments() {}

#[utoipa::path(
    post, path = "/api/v1/segments", tag = "segments", operation_id = "createSegment",
    summary = "Create a segment (SEGMENTS_CREATE)",
    security(("bearerAuth" = [])),
    request_body(content(
        (SegmentInput = "application/json"),
        (SegmentInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 201, description = "Created", body = SegmentDocument, content_type = JSONAPI,
            headers(("Location" = String, description = "/api/v1/segments/{id}"))),
        (status = 400, description = "VALIDATION: missing or invalid fields, malformed JSON, or a rule that does not compile", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_CREATE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 409, description = "CONFLICT: a live segment has this key", body = JsonApiErrors, content_type = JSONAPI),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: not JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_create_segment() {}

#[utoipa::path(
    get, path = "/api/v1/segments/{id}", tag = "segments", operation_id = "getSegment",
    summary = "One live segment (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The segment's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440001")),
    responses(
        (status = 200, description = "The segment", body = SegmentDocument, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_READ", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no live segment has this id", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_get_segment() {}

#[utoipa::path(
    patch, path = "/api/v1/segments/{id}", tag = "segments", operation_id = "updateSegment",
    summary = "Change a segment; bumps its version and invalidates cached membership (SEGMENTS_UPDATE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The segment's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440001")),
    request_body(content(
        (SegmentPatch = "application/json"),
        (SegmentPatch = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The updated segment", body = SegmentDocument, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: invalid fields, malformed JSON, or a rule that does not compile, or the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_UPDATE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no live segment has this id", body = JsonApiErrors, content_type = JSONAPI),
        (status = 409, description = "CONFLICT: another live segment has the new key", body = JsonApiErrors, content_type = JSONAPI),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: not JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_update_segment() {}

#[utoipa::path(
    delete, path = "/api/v1/segments/{id}", tag = "segments", operation_id = "deleteSegment",
    summary = "Delete a segment; refused while a flag's targeting rule uses it (SEGMENTS_DELETE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The segment's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440001")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "VALIDATION: the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_DELETE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no live segment has this id", body = JsonApiErrors, content_type = JSONAPI),
        (status = 409, description = "CONFLICT: a flag's targeting rule uses the segment", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_delete_segment() {}

#[utoipa::path(
    post, path = "/api/v1/segments/evaluate", tag = "segments", operation_id = "evaluateSegments",
    summary = "The segments a user is in (explicit membership, rules, percentage), each with its reason (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    request_body(content(
        (EvaluationInput = "application/json"),
        (EvaluationInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The user's segments", body = EvaluationDocument, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: missing userId, attributes not an object, or malformed JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_READ", body = JsonApiErrors, content_type = JSONAPI),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: not JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_evaluate() {}

#[utoipa::path(
    post, path = "/api/v1/decisions", tag = "decisions", operation_id = "createDecision",
    summary = "Store a DMN model, compiled first (SEGMENTS_CREATE)",
    security(("bearerAuth" = [])),
    request_body(content(
        (DecisionInput = "application/json"),
        (String = "application/xml"),
    )),
    responses(
        (status = 201, description = "Stored", body = DecisionDocument, content_type = JSONAPI,
            headers(("Location" = String, description = "/api/v1/decisions/{id}"))),
        (status = 400, description = "VALIDATION: the model does not compile, or the JSON is malformed or incomplete", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_CREATE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: neither JSON nor XML", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_create_decision() {}

#[utoipa::path(
    get, path = "/api/v1/decisions/{id}", tag = "decisions", operation_id = "getDecision",
    summary = "A stored DMN model, with its XML (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The decision's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440099")),
    responses(
        (status = 200, description = "The decision", body = DecisionDocument, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks SEGMENTS_READ", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no decision has this id", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_get_decision() {}

#[utoipa::path(
    get, path = "/api/v1/flags", tag = "flags", operation_id = "listFlags",
    summary = "List flags, a page at a time (FLAGS_READ)",
    security(("bearerAuth" = [])),
    params(
        ("page[number]" = Option<i64>, Query, description = "Page, from 1", minimum = 1, maximum = 92233720368547758_i64),
        ("page[size]" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "A page of flags", body = FlagPage, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: a bad page parameter", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks FLAGS_READ", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_list_flags() {}

#[utoipa::path(
    post, path = "/api/v1/flags", tag = "flags", operation_id = "createFlag",
    summary = "Create a flag (FLAGS_WRITE)",
    security(("bearerAuth" = [])),
    request_body(content(
        (FlagInput = "application/json"),
        (FlagInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 201, description = "Created", body = FlagDocument, content_type = JSONAPI,
            headers(("Location" = String, description = "/api/v1/flags/{id}"))),
        (status = 400, description = "VALIDATION: missing or invalid fields, or malformed JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks FLAGS_WRITE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 409, description = "CONFLICT: a flag has this key, or a rule names no live segment", body = JsonApiErrors, content_type = JSONAPI),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: not JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_create_flag() {}

#[utoipa::path(
    get, path = "/api/v1/flags/{id}", tag = "flags", operation_id = "getFlag",
    summary = "One flag, by id or key (FLAGS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    responses(
        (status = 200, description = "The flag", body = FlagDocument, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks FLAGS_READ", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no flag has this id or key", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_get_flag() {}

#[utoipa::path(
    patch, path = "/api/v1/flags/{id}", tag = "flags", operation_id = "updateFlag",
    summary = "Change a flag; `rules`, when sent, replace every rule (FLAGS_WRITE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    request_body(content(
        (FlagPatch = "application/json"),
        (FlagPatch = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The updated flag", body = FlagDocument, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: invalid fields, or malformed JSON, or the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks FLAGS_WRITE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no flag has this id or key", body = JsonApiErrors, content_type = JSONAPI),
        (status = 409, description = "CONFLICT: another flag has the new key, or a rule names no live segment", body = JsonApiErrors, content_type = JSONAPI),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: not JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_update_flag() {}

#[utoipa::path(
    delete, path = "/api/v1/flags/{id}", tag = "flags", operation_id = "deleteFlag",
    summary = "Delete a flag (FLAGS_WRITE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "VALIDATION: the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks FLAGS_WRITE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no flag has this id or key", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_delete_flag() {}

#[utoipa::path(
    post, path = "/api/v1/flags/{id}/evaluate", tag = "flags", operation_id = "evaluateFlag",
    summary = "The flag's variation for a user: the first rule whose segment holds the user, else the default (FLAGS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    request_body(content(
        (EvaluationInput = "application/json"),
        (EvaluationInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The variation and why", body = FlagEvaluationDocument, content_type = JSONAPI),
        (status = 400, description = "VALIDATION: missing userId, attributes not an object, or malformed JSON, or the id in the path is not UTF-8 once percent-decoded", body = JsonApiErrors, content_type = JSONAPI),
        (status = 401, description = "UNAUTHORIZED: no valid bearer token", body = JsonApiErrors, content_type = JSONAPI),
        (status = 403, description = "FORBIDDEN: the token lacks FLAGS_READ", body = JsonApiErrors, content_type = JSONAPI),
        (status = 404, description = "NOT_FOUND: no flag has this id or key", body = JsonApiErrors, content_type = JSONAPI),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = JsonApiErrors, content_type = JSONAPI),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: not JSON", body = JsonApiErrors, content_type = JSONAPI),
        (status = 503, description = "The store is unavailable; retry", body = JsonApiErrors, content_type = JSONAPI),
    )
)]
fn v1_evaluate_flag() {}

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
