//! `/api/v1/segments` (seed 002) and `POST /api/v1/segments/evaluate`.
//!
//! | method | path | permission | success |
//! |---|---|---|---|
//! | POST | /api/v1/segments | SEGMENTS_CREATE | 201 document + `Location` |
//! | GET | /api/v1/segments | SEGMENTS_READ | 200 `data` page with `meta` / `links` |
//! | GET | /api/v1/segments/:id | SEGMENTS_READ | 200 document |
//! | PATCH | /api/v1/segments/:id | SEGMENTS_UPDATE | 200 document (version bumped) |
//! | DELETE | /api/v1/segments/:id | SEGMENTS_DELETE | 204; 409 while a flag uses it |
//! | POST | /api/v1/segments/evaluate | SEGMENTS_READ | 200 the user's segments, each with its reason |

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use shared::error::{ApiError, ErrorCode};
use sqlx::AnyConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::is_uuid;
use super::jsonapi::{
    CanCreateSegments, CanDeleteSegments, CanReadSegments, CanUpdateSegments, Checker, Document, Errors,
    JsonApiErrorResponses, MEDIA_TYPE, Page, PageLinks, PageMeta, PathParams, SelfLink, document, evaluation_input,
    is_reserved_key, query_map,
};
use crate::engine::{LiveSegment, Reason};
use crate::rules::{self, RuleType};
use crate::store::{self, SegmentRow};
use crate::{Evaluation, Segments};

/// The routes, relative to `/api/v1` (where [`super::router`] nests them).
pub fn routes() -> OpenApiRouter<Segments> {
    OpenApiRouter::new().routes(routes!(list_segments, create_segment)).routes(routes!(evaluate)).routes(routes!(
        get_segment,
        update_segment,
        delete_segment
    ))
}

const PATH: &str = "/api/v1/segments";
const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Largest `ruleContent` (DMN XML can be long; SIMPLE rules rarely are).
const MAX_RULE_CHARS: usize = 512 * 1024;

fn self_link(id: &str) -> String {
    format!("{PATH}/{id}")
}

/// The document of one segment.
fn segment_document(row: &SegmentRow) -> SegmentDocument {
    let attributes = SegmentAttributes {
        key: row.key.clone(),
        name: row.name.clone(),
        description: row.description.clone(),
        rule_type: row.rule_type.clone(),
        rule_content: row.rule_content.clone(),
        decision_id: row.decision_id.clone(),
        percent: row.percent,
        created_at: crate::rfc3339_seconds(row.created_at),
        updated_at: crate::rfc3339_seconds(row.updated_at),
    };
    let links = SelfLink { self_: self_link(&row.uuid) };
    let meta = SegmentMeta { version: row.version };
    SegmentDocument { data: SegmentResource { type_: "segments", id: row.uuid.clone(), attributes, meta, links } }
}

/// The short form the list shows (seed 002: key, name, ruleType).
fn list_item(row: &SegmentRow) -> SegmentListItem {
    let attributes = SegmentSummary { key: row.key.clone(), name: row.name.clone(), rule_type: row.rule_type.clone() };
    SegmentListItem {
        type_: "segments",
        id: row.uuid.clone(),
        attributes,
        links: SelfLink { self_: self_link(&row.uuid) },
    }
}

#[utoipa::path(
    get, path = "/segments", tag = "segments", operation_id = "listSegments",
    summary = "List live segments, a page at a time (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    params(
        ("page[number]" = Option<i64>, Query, description = "Page, from 1", minimum = 1, maximum = 92233720368547758_i64),
        ("page[size]" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "A page of segments", body = SegmentPage, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn list_segments(State(state): State<Segments>, _: CanReadSegments, uri: Uri) -> Result<Response, Errors> {
    let page = Page::from_query(&query_map(&uri)?)?;
    let (rows, total) = store::live_segments_page(state.db(), page.offset(), page.size).await?;
    let (meta, links) = page.meta_and_links(PATH, total);
    Ok(document(StatusCode::OK, SegmentPage { data: rows.iter().map(list_item).collect(), meta, links }))
}

#[utoipa::path(
    get, path = "/segments/{id}", tag = "segments", operation_id = "getSegment",
    summary = "One live segment (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The segment's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440001")),
    responses(
        (status = 200, description = "The segment", body = SegmentDocument, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn get_segment(
    State(state): State<Segments>,
    _: CanReadSegments,
    PathParams(id): PathParams<String>,
) -> Result<Response, Errors> {
    let row = find(&state, &id).await?;
    Ok(document(StatusCode::OK, segment_document(&row)))
}

async fn find(state: &Segments, id: &str) -> Result<SegmentRow, Errors> {
    if !is_uuid(id) {
        return Err(not_found(id));
    }
    let mut conn = state.db().pool().acquire().await?;
    store::live_segment_by_uuid(&mut conn, state.dialect(), id, false).await?.ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> Errors {
    Errors::not_found(format!("segment {id} not found"))
}

fn key_taken(doc: &Document, key: &str) -> Errors {
    Errors::conflict(format!("a segment with key {key} already exists"), Some(doc.pointer("key")))
}

/// The fields a create or a patch may set; `None` means "not sent".
#[derive(Debug, Default)]
struct Changes {
    key: Option<String>,
    name: Option<String>,
    description: Option<Option<String>>,
    rule_type: Option<RuleType>,
    rule_content: Option<Option<String>>,
    decision_id: Option<Option<String>>,
    percent: Option<Option<i64>>,
}

fn read_changes(doc: &Document, creating: bool) -> Result<Changes, Errors> {
    let mut check = Checker::new(doc);
    let mut key = check.key("key", creating);
    if let Some(reserved) = key.take_if(|key| is_reserved_key(key)) {
        check.fail("key", format!("key \"{reserved}\" is reserved: /segments/{reserved} is a legacy route"));
    }
    let name = check.non_blank("name", creating, MAX_NAME_CHARS);
    let description = check.string("description", false, true, MAX_DESCRIPTION_CHARS);
    let rule_type = match doc.get("ruleType") {
        None => None,
        Some(Value::String(text)) => match RuleType::parse(text) {
            Some(rule_type) => Some(rule_type),
            None => {
                check.fail("ruleType", "ruleType must be SIMPLE or DMN");
                None
            }
        },
        Some(_) => {
            check.fail("ruleType", "ruleType must be SIMPLE or DMN");
            None
        }
    };
    // A SIMPLE rule may come as the seed's JSON string or as the JSON object itself.
    let rule_content = match doc.get("ruleContent") {
        Some(Value::Object(object)) => Some(Some(Value::Object(object.clone()).to_string())),
        _ => check.string("ruleContent", false, true, MAX_RULE_CHARS),
    };
    let decision_id = check.string("decisionId", false, true, 36);
    if let Some(Some(id)) = &decision_id
        && !is_uuid(id)
    {
        check.fail("decisionId", "decisionId must be a UUID");
    }
    let percent = check.percent("percent");
    check.finish()?;
    Ok(Changes { key, name, description, rule_type, rule_content, decision_id, percent })
}

/// Checks that the rule a segment would hold compiles: 400 with the reason otherwise. A stored
/// decision is read on `conn`, the caller's transaction when it holds one, so a writer never
/// waits for a second connection while it holds the write lock.
async fn check_rule(conn: &mut AnyConnection, doc: &Document, segment: &SegmentRow) -> Result<(), Errors> {
    let rule_type = RuleType::parse(&segment.rule_type).unwrap_or(RuleType::Simple);
    let content = segment.rule_content.as_deref();
    let pointer = |field: &str| Some(doc.pointer(field));
    match rule_type {
        RuleType::Simple if segment.decision_id.is_some() => {
            return Err(Errors::validation("decisionId is only for DMN segments", pointer("decisionId")));
        }
        RuleType::Dmn if content.is_some() && segment.decision_id.is_some() => {
            return Err(Errors::validation(
                "a DMN segment takes ruleContent or decisionId, not both",
                pointer("decisionId"),
            ));
        }
        RuleType::Dmn if content.is_none() && segment.decision_id.is_none() => {
            return Err(Errors::validation(
                "a DMN segment needs ruleContent (DMN XML) or decisionId",
                pointer("ruleContent"),
            ));
        }
        _ => {}
    }
    let decision_xml = match &segment.decision_id {
        Some(id) => match store::decision(conn, id).await? {
            Some(decision) => Some(decision.content),
            None => return Err(Errors::validation(format!("no decision with id {id}"), pointer("decisionId"))),
        },
        None => None,
    };
    let field = if content.is_some() { "ruleContent" } else { "decisionId" };
    let content = content.map(str::to_owned);
    // Compiling a DMN model is CPU work: off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        rules::compile(rule_type, content.as_deref(), decision_xml.as_deref()).map(|_| ())
    })
    .await
    .unwrap_or_else(|_| Err("the rule could not be compiled".to_owned()));
    outcome.map_err(|reason| Errors::validation(reason, pointer(field)))
}

#[utoipa::path(
    post, path = "/segments", tag = "segments", operation_id = "createSegment",
    summary = "Create a segment (SEGMENTS_CREATE)",
    security(("bearerAuth" = [])),
    request_body(content(
        (SegmentInput = "application/json"),
        (SegmentInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 201, description = "Created", body = SegmentDocument, content_type = MEDIA_TYPE,
            headers(("Location" = String, description = "/api/v1/segments/{id}"))),
        JsonApiErrorResponses,
    )
)]
async fn create_segment(
    State(state): State<Segments>,
    _: CanCreateSegments,
    doc: Document,
) -> Result<Response, Errors> {
    let changes = read_changes(&doc, true)?;
    let key = changes.key.unwrap_or_default();
    let candidate = SegmentRow {
        name: changes.name.unwrap_or_default(),
        description: changes.description.flatten(),
        rule_type: changes.rule_type.unwrap_or(RuleType::Simple).as_str().to_owned(),
        rule_content: changes.rule_content.flatten(),
        decision_id: changes.decision_id.flatten(),
        percent: changes.percent.flatten(),
        ..SegmentRow::new(key.clone())
    };
    check_rule(&mut *state.db().pool().acquire().await?, &doc, &candidate).await?;
    let now = state.now();
    let mut tx = store::write_tx(state.db()).await?;
    if store::live_key_taken(&mut tx, &key, None).await? {
        return Err(key_taken(&doc, &key));
    }
    let row = match store::insert_segment(&mut tx, &candidate, now).await {
        Ok(row) => row,
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Err(key_taken(&doc, &key)),
        Err(error) => return Err(error.into()),
    };
    tx.commit().await?;
    state.wrote();
    Ok(super::with_location(document(StatusCode::CREATED, segment_document(&row)), &self_link(&row.uuid)))
}

#[utoipa::path(
    patch, path = "/segments/{id}", tag = "segments", operation_id = "updateSegment",
    summary = "Change a segment; bumps its version and invalidates cached membership (SEGMENTS_UPDATE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The segment's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440001")),
    request_body(content(
        (SegmentPatch = "application/json"),
        (SegmentPatch = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The updated segment", body = SegmentDocument, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn update_segment(
    State(state): State<Segments>,
    _: CanUpdateSegments,
    PathParams(id): PathParams<String>,
    doc: Document,
) -> Result<Response, Errors> {
    if !is_uuid(&id) {
        return Err(not_found(&id));
    }
    let changes = read_changes(&doc, false)?;
    let now = state.now();
    let mut tx = store::write_tx(state.db()).await?;
    let Some(current) = store::live_segment_by_uuid(&mut tx, state.dialect(), &id, true).await? else {
        return Err(not_found(&id));
    };
    let renamed = changes.key.as_ref().is_some_and(|key| *key != current.key);
    let merged = apply(current, &changes);
    check_rule(&mut tx, &doc, &merged).await?;
    if store::live_key_taken(&mut tx, &merged.key, Some(merged.id)).await? {
        return Err(key_taken(&doc, &merged.key));
    }
    if renamed {
        // Expiries that passed under the old key go to the history under it.
        store::materialize_expired_of_segment(&mut tx, merged.id, now).await?;
    }
    match store::update_segment(&mut tx, &merged, now).await {
        Ok(()) => {}
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Err(key_taken(&doc, &merged.key)),
        Err(error) => return Err(error.into()),
    }
    tx.commit().await?;
    state.wrote();
    let updated = SegmentRow { version: merged.version + 1, updated_at: now, ..merged };
    Ok(document(StatusCode::OK, segment_document(&updated)))
}

fn apply(mut row: SegmentRow, changes: &Changes) -> SegmentRow {
    if let Some(key) = &changes.key {
        row.key.clone_from(key);
    }
    if let Some(name) = &changes.name {
        row.name.clone_from(name);
    }
    if let Some(description) = &changes.description {
        row.description.clone_from(description);
    }
    if let Some(rule_type) = changes.rule_type {
        row.rule_type = rule_type.as_str().to_owned();
    }
    if let Some(content) = &changes.rule_content {
        row.rule_content.clone_from(content);
    }
    if let Some(decision_id) = &changes.decision_id {
        row.decision_id.clone_from(decision_id);
    }
    if let Some(percent) = changes.percent {
        row.percent = percent;
    }
    row
}

#[utoipa::path(
    delete, path = "/segments/{id}", tag = "segments", operation_id = "deleteSegment",
    summary = "Delete a segment; refused while a flag's targeting rule uses it (SEGMENTS_DELETE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The segment's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440001")),
    responses(
        (status = 204, description = "Deleted"),
        JsonApiErrorResponses,
    )
)]
async fn delete_segment(
    State(state): State<Segments>,
    _: CanDeleteSegments,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, Errors> {
    if !is_uuid(&id) {
        return Err(not_found(&id));
    }
    let now = state.now();
    let mut tx = store::write_tx(state.db()).await?;
    let Some(row) = store::live_segment_by_uuid(&mut tx, state.dialect(), &id, true).await? else {
        return Err(not_found(&id));
    };
    if store::segment_in_use(&mut tx, row.id).await? {
        return Err(Errors::conflict(format!("segment {} is used by a flag's targeting rule", row.key), None));
    }
    store::soft_delete_segment(&mut tx, row.id, now).await?;
    tx.commit().await?;
    state.wrote();
    Ok(StatusCode::NO_CONTENT)
}

/// The reason object of an evaluation answer.
impl From<Reason> for ReasonView {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Explicit { expires_at } => Self::Explicit { expires_at: expires_at.map(crate::rfc3339_seconds) },
            Reason::Rule { rule_type } => Self::Rule { rule_type },
            Reason::Percentage { percent, bucket } => {
                Self::Percentage { percent: percent.into(), bucket: bucket.into() }
            }
        }
    }
}

#[utoipa::path(
    post, path = "/segments/evaluate", tag = "segments", operation_id = "evaluateSegments",
    summary = "The segments a user is in (explicit membership, rules, percentage), each with its reason (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    request_body(content(
        (EvaluationInput = "application/json"),
        (EvaluationInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The user's segments", body = EvaluationDocument, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn evaluate(State(state): State<Segments>, _: CanReadSegments, doc: Document) -> Result<Response, Errors> {
    let (user_id, attributes) = evaluation_input(&doc)?;
    let evaluation = state.evaluate(&user_id, &attributes).await?;
    let body = render_evaluation(&evaluation, user_id)
        .map_err(|error| ApiError::new(ErrorCode::Internal, format!("rendering the evaluation: {error}")))?;
    Ok(([(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE))], body).into_response())
}

/// The [`EvaluationDocument`] of `evaluation`, as serde writes it, from each segment's
/// rendering kept with the snapshot: only the reasons and `meta` are written per request.
fn render_evaluation(evaluation: &Evaluation, user_id: String) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(64 + evaluation.matches.len() * 256);
    body.extend_from_slice(b"{\"data\":[");
    for (index, (segment, reason)) in evaluation.memberships().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        let rendered = segment.rendered.get_or_init(|| render_segment(segment));
        // The head ends with `"reason":`, the tail starts with the `null` the reason replaces.
        let at = rendered.find(REASON_MARK).map_or(rendered.len(), |at| at + REASON_MARK.len() - "null".len());
        let (head, tail) = rendered.split_at(at);
        body.extend_from_slice(head.as_bytes());
        serde_json::to_writer(&mut body, &ReasonView::from(reason))?;
        body.extend_from_slice(tail.get("null".len()..).unwrap_or_default().as_bytes());
    }
    body.extend_from_slice(b"],\"meta\":");
    let meta = EvaluationMeta {
        user_id,
        evaluated_segments: evaluation.snapshot.segments.len() as i64,
        matched_segments: evaluation.matches.len() as i64,
    };
    serde_json::to_writer(&mut body, &meta)?;
    body.push(b'}');
    Ok(body)
}

/// Where the reason goes in a segment's rendering: `null` is where serde writes it, and no
/// escaped string can hold it unquoted.
const REASON_MARK: &str = "\"reason\":null";

/// A segment's [`EvaluatedSegment`] with the reason left `null`.
fn render_segment(segment: &LiveSegment) -> Box<str> {
    #[derive(Serialize)]
    struct Fixed<'a> {
        #[serde(rename = "type")]
        type_: &'static str,
        id: &'a str,
        attributes: FixedAttributes<'a>,
        links: SelfLink,
    }
    #[derive(Serialize)]
    struct FixedAttributes<'a> {
        key: &'a str,
        name: &'a str,
        reason: (),
    }
    let fixed = Fixed {
        type_: "segments",
        id: &segment.uuid,
        attributes: FixedAttributes { key: &segment.key, name: &segment.name, reason: () },
        links: SelfLink { self_: self_link(&segment.uuid) },
    };
    serde_json::to_string(&fixed).unwrap_or_default().into_boxed_str()
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

/// Changes some fields of a segment: the fields of [`SegmentInput`], none required (`key` as on
/// create: `users` is reserved); bumps its version and invalidates cached membership at once.
pub struct SegmentPatch;

impl utoipa::PartialSchema for SegmentPatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{RefOr, schema::Schema};
        let RefOr::T(Schema::Object(mut patch)) = <SegmentInput as utoipa::PartialSchema>::schema() else {
            unreachable!("SegmentInput is an object")
        };
        patch.required.clear();
        patch.description = Some(
            "Changes some fields of a segment (the same fields as SegmentInput, all optional); bumps its version and invalidates cached membership at once.".to_owned(),
        );
        patch.example = Some(json!({
            "name": "Premium Users v2",
            "ruleContent": "{\"operator\":\"OR\",\"conditions\":[{\"attribute\":\"plan\",\"operator\":\"eq\",\"value\":\"premium\"},{\"attribute\":\"plan\",\"operator\":\"eq\",\"value\":\"enterprise\"}]}"
        }));
        RefOr::T(Schema::Object(patch))
    }
}

impl ToSchema for SegmentPatch {}

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
    super::schema_from_json(json!({
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
#[serde(rename_all = "camelCase")]
pub struct SegmentAttributes {
    key: String,
    name: String,
    description: Option<String>,
    #[schema(value_type = RuleType)]
    rule_type: String,
    rule_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uuid")]
    decision_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
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
    type_: &'static str,
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
    #[schema(value_type = RuleType)]
    rule_type: String,
}

#[derive(Serialize, ToSchema)]
pub struct SegmentListItem {
    #[serde(rename = "type")]
    type_: &'static str,
    #[schema(format = "uuid")]
    id: String,
    attributes: SegmentSummary,
    links: SelfLink,
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
    super::schema_from_json(json!({
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
#[schema(as = Reason)]
pub enum ReasonView {
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

// The schema of what `render_evaluation` writes; serde writes it in the tests, to check it.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Serialize, ToSchema)]
pub struct EvaluatedAttributes {
    key: String,
    name: String,
    reason: ReasonView,
}

// The schema of what `render_evaluation` writes; serde writes it in the tests, to check it.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Serialize, ToSchema)]
pub struct EvaluatedSegment {
    #[serde(rename = "type")]
    type_: &'static str,
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

// The schema of what `render_evaluation` writes; serde writes it in the tests, to check it.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "data": [{"type": "segments", "id": "550e8400-e29b-41d4-a716-446655440001", "attributes": {"key": "premium-users", "name": "Premium Users", "reason": {"kind": "RULE", "ruleType": "SIMPLE"}}, "links": {"self": "/api/v1/segments/550e8400-e29b-41d4-a716-446655440001"}}],
    "meta": {"userId": "user-1", "evaluatedSegments": 2, "matchedSegments": 1}
}))]
pub struct EvaluationDocument {
    data: Vec<EvaluatedSegment>,
    meta: EvaluationMeta,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::engine::{LiveSegment, Snapshot};

    fn segment(id: i64, key: &str, name: &str) -> LiveSegment {
        LiveSegment {
            id,
            uuid: crate::new_uuid(),
            key: key.to_owned(),
            name: name.to_owned(),
            version: 1,
            rule_type: RuleType::Simple,
            rule: None,
            percent: Some(100),
            rendered: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn rendered_evaluations_are_what_serde_writes() {
        let segments = vec![
            segment(1, "manual", "Manual"),
            segment(2, "quotes\"reason\":null", "Ünïcode \\ \"reason\":null \u{1}"),
            segment(3, "everyone", "Everyone"),
        ];
        let snapshot = Arc::new(Snapshot { revision: 7, segments });
        let explicit = HashMap::from([(1, Some(1_705_314_600_000))]);
        let matches = snapshot.evaluate("u-7", &serde_json::Map::new(), &explicit);
        assert_eq!(matches.len(), 3);
        let evaluation = Evaluation { snapshot, matches };
        for _ in 0..2 {
            let rendered = render_evaluation(&evaluation, "u-7".to_owned()).unwrap();
            let data = evaluation
                .memberships()
                .map(|(segment, reason)| EvaluatedSegment {
                    type_: "segments",
                    id: segment.uuid.clone(),
                    attributes: EvaluatedAttributes {
                        key: segment.key.clone(),
                        name: segment.name.clone(),
                        reason: reason.into(),
                    },
                    links: SelfLink { self_: self_link(&segment.uuid) },
                })
                .collect();
            let meta = EvaluationMeta { user_id: "u-7".to_owned(), evaluated_segments: 3, matched_segments: 3 };
            let expected = serde_json::to_vec(&EvaluationDocument { data, meta }).unwrap();
            assert_eq!(String::from_utf8(rendered).unwrap(), String::from_utf8(expected).unwrap());
        }
    }
}
