//! `/api/v1/flags`: a minimal feature flag, enough for segments to be used by targeting rules
//! (so that deleting a segment in use answers 409, as seed 002 says).
//!
//! A flag has a `key`, a `name`, `enabled`, a `defaultVariation` (boolean) and ordered `rules`
//! `[{"segmentId" | "segmentKey", "variation"}]`. Evaluating it for a user gives the variation
//! of the first rule whose segment the user is in, else the default; a disabled flag always
//! gives the default.
//!
//! | method | path | permission |
//! |---|---|---|
//! | POST | /api/v1/flags | FLAGS_WRITE |
//! | GET | /api/v1/flags | FLAGS_READ |
//! | GET | /api/v1/flags/:idOrKey | FLAGS_READ |
//! | PATCH | /api/v1/flags/:idOrKey | FLAGS_WRITE |
//! | DELETE | /api/v1/flags/:idOrKey | FLAGS_WRITE |
//! | POST | /api/v1/flags/:idOrKey/evaluate `{"userId","attributes"}` | FLAGS_READ |

use std::collections::HashSet;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::AnyConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::is_uuid;
use super::jsonapi::{
    CanReadFlags, CanWriteFlags, Checker, Document, Errors, JsonApiErrorResponses, MEDIA_TYPE, Page, PageLinks,
    PageMeta, PathParams, SelfLink, document, evaluation_input, query_map,
};
use super::segments::EvaluationInput;
use crate::Segments;
use crate::store::{self, FlagRow, FlagRuleRow};

/// The routes, relative to `/api/v1` (where [`super::router`] nests them).
pub fn routes() -> OpenApiRouter<Segments> {
    OpenApiRouter::new()
        .routes(routes!(list_flags, create_flag))
        .routes(routes!(get_flag, update_flag, delete_flag))
        .routes(routes!(evaluate_flag))
}

const PATH: &str = "/api/v1/flags";
/// Most targeting rules one flag holds.
const MAX_RULES: usize = 100;

fn resource(flag: &FlagRow, rules: &[FlagRuleRow]) -> FlagResource {
    let rules = rules
        .iter()
        .map(|rule| FlagRule {
            segment_id: rule.segment_uuid.clone(),
            segment_key: rule.segment_key.clone(),
            variation: rule.variation,
        })
        .collect();
    let attributes = FlagAttributes {
        key: flag.key.clone(),
        name: flag.name.clone(),
        enabled: flag.enabled,
        default_variation: flag.default_variation,
        rules,
        created_at: crate::rfc3339_seconds(flag.created_at),
        updated_at: crate::rfc3339_seconds(flag.updated_at),
    };
    let links = SelfLink { self_: format!("{PATH}/{}", flag.uuid) };
    FlagResource { type_: "flags", id: flag.uuid.clone(), attributes, links }
}

fn not_found(id: &str) -> Errors {
    Errors::not_found(format!("flag {id} not found"))
}

fn key_taken(doc: &Document, key: &str) -> Errors {
    Errors::conflict(format!("a flag with key {key} already exists"), Some(doc.pointer("key")))
}

/// A targeting rule as sent: which segment, by id or key, and the variation it gives.
struct RuleInput {
    segment_id: Option<String>,
    segment_key: Option<String>,
    variation: bool,
}

fn read_rules(doc: &Document, check: &mut Checker<'_>) -> Option<Vec<RuleInput>> {
    let value = doc.get("rules")?;
    let Value::Array(items) = value else {
        check.fail("rules", "rules must be an array");
        return None;
    };
    if items.len() > MAX_RULES {
        check.fail("rules", format!("a flag holds at most {MAX_RULES} rules"));
        return None;
    }
    let mut rules = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let field = format!("rules/{index}");
        let Value::Object(object) = item else {
            check.fail(&field, "a rule must be an object {\"segmentId\" or \"segmentKey\", \"variation\"}");
            continue;
        };
        let segment_id = object.get("segmentId").and_then(Value::as_str).map(str::to_owned);
        let segment_key = object.get("segmentKey").and_then(Value::as_str).map(str::to_owned);
        if segment_id.is_none() && segment_key.is_none() {
            check.fail(&format!("{field}/segmentId"), "a rule needs segmentId (or segmentKey)");
        }
        let variation = match object.get("variation") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                check.fail(&format!("{field}/variation"), "variation must be a boolean");
                true
            }
        };
        rules.push(RuleInput { segment_id, segment_key, variation });
    }
    Some(rules)
}

/// Resolves rules to live segment ids, locking those segments (on MySQL) until commit so a
/// concurrent delete cannot slip between the check and the write.
async fn resolve_rules(
    state: &Segments,
    conn: &mut AnyConnection,
    doc: &Document,
    rules: &[RuleInput],
) -> Result<Vec<(i64, bool)>, Errors> {
    let mut resolved = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let segment = match (&rule.segment_id, &rule.segment_key) {
            (Some(id), _) if is_uuid(id) => store::live_segment_by_uuid(conn, state.dialect(), id, true).await?,
            (Some(_), _) => None,
            (None, Some(key)) => store::live_segment_by_key(conn, state.dialect(), key).await?,
            (None, None) => None,
        };
        match segment {
            Some(segment) => resolved.push((segment.id, rule.variation)),
            None => {
                // The body is well formed; it conflicts with the store's state (no such live
                // segment, now): 409, with a pointer to the rule.
                return Err(Errors::conflict(
                    format!("rule {index} names no live segment"),
                    Some(doc.pointer(&format!("rules/{index}/segmentId"))),
                ));
            }
        }
    }
    Ok(resolved)
}

#[utoipa::path(
    post, path = "/flags", tag = "flags", operation_id = "createFlag",
    summary = "Create a flag (FLAGS_WRITE)",
    security(("bearerAuth" = [])),
    request_body(content(
        (FlagInput = "application/json"),
        (FlagInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 201, description = "Created", body = FlagDocument, content_type = MEDIA_TYPE,
            headers(("Location" = String, description = "/api/v1/flags/{id}"))),
        JsonApiErrorResponses,
    )
)]
async fn create_flag(State(state): State<Segments>, _: CanWriteFlags, doc: Document) -> Result<Response, Errors> {
    let mut check = Checker::new(&doc);
    let key = check.key("key", true);
    let name = check.string("name", false, false, 200).flatten();
    let enabled = check.boolean("enabled").unwrap_or(false);
    let default_variation = check.boolean("defaultVariation").unwrap_or(false);
    let rules = read_rules(&doc, &mut check).unwrap_or_default();
    check.finish()?;
    let key = key.unwrap_or_default();
    let now = state.now();
    let mut flag = FlagRow {
        id: 0,
        uuid: crate::new_uuid(),
        name: name.unwrap_or_else(|| key.clone()),
        key,
        enabled,
        default_variation,
        created_at: now,
        updated_at: now,
    };
    let mut tx = store::write_tx(state.db()).await?;
    if store::flag_key_taken(&mut tx, &flag.key, None).await? {
        return Err(key_taken(&doc, &flag.key));
    }
    let resolved = resolve_rules(&state, &mut tx, &doc, &rules).await?;
    flag.id = match store::insert_flag(&mut tx, &flag).await {
        Ok(id) => id,
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Err(key_taken(&doc, &flag.key)),
        Err(error) => return Err(error.into()),
    };
    store::replace_flag_rules(&mut tx, flag.id, &resolved).await?;
    let rules = store::flag_rules(&mut tx, flag.id).await?;
    tx.commit().await?;
    let response = document(StatusCode::CREATED, FlagDocument { data: resource(&flag, &rules) });
    Ok(super::with_location(response, &format!("{PATH}/{}", flag.uuid)))
}

#[utoipa::path(
    get, path = "/flags", tag = "flags", operation_id = "listFlags",
    summary = "List flags, a page at a time (FLAGS_READ)",
    security(("bearerAuth" = [])),
    params(
        ("page[number]" = Option<i64>, Query, description = "Page, from 1", minimum = 1, maximum = 92233720368547758_i64),
        ("page[size]" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "A page of flags", body = FlagPage, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn list_flags(State(state): State<Segments>, _: CanReadFlags, uri: Uri) -> Result<Response, Errors> {
    let page = Page::from_query(&query_map(&uri)?)?;
    let (flags, total) = store::flags_page(state.db(), page.offset(), page.size).await?;
    let mut conn = state.db().pool().acquire().await?;
    let mut data = Vec::with_capacity(flags.len());
    for flag in &flags {
        data.push(resource(flag, &store::flag_rules(&mut conn, flag.id).await?));
    }
    let (meta, links) = page.meta_and_links(PATH, total);
    Ok(document(StatusCode::OK, FlagPage { data, meta, links }))
}

#[utoipa::path(
    get, path = "/flags/{id}", tag = "flags", operation_id = "getFlag",
    summary = "One flag, by id or key (FLAGS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    responses(
        (status = 200, description = "The flag", body = FlagDocument, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn get_flag(
    State(state): State<Segments>,
    _: CanReadFlags,
    PathParams(id): PathParams<String>,
) -> Result<Response, Errors> {
    let mut conn = state.db().pool().acquire().await?;
    let flag = store::flag(&mut conn, state.dialect(), &id, false).await?.ok_or_else(|| not_found(&id))?;
    let rules = store::flag_rules(&mut conn, flag.id).await?;
    Ok(document(StatusCode::OK, FlagDocument { data: resource(&flag, &rules) }))
}

#[utoipa::path(
    patch, path = "/flags/{id}", tag = "flags", operation_id = "updateFlag",
    summary = "Change a flag; `rules`, when sent, replace every rule (FLAGS_WRITE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    request_body(content(
        (FlagPatch = "application/json"),
        (FlagPatch = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The updated flag", body = FlagDocument, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn update_flag(
    State(state): State<Segments>,
    _: CanWriteFlags,
    PathParams(id): PathParams<String>,
    doc: Document,
) -> Result<Response, Errors> {
    let mut check = Checker::new(&doc);
    let key = check.key("key", false);
    let name = check.string("name", false, false, 200).flatten();
    let enabled = check.boolean("enabled");
    let default_variation = check.boolean("defaultVariation");
    let rules = read_rules(&doc, &mut check);
    check.finish()?;
    let now = state.now();
    let mut tx = store::write_tx(state.db()).await?;
    let mut flag = store::flag(&mut tx, state.dialect(), &id, true).await?.ok_or_else(|| not_found(&id))?;
    if let Some(key) = key {
        if store::flag_key_taken(&mut tx, &key, Some(flag.id)).await? {
            return Err(key_taken(&doc, &key));
        }
        flag.key = key;
    }
    if let Some(name) = name {
        flag.name = name;
    }
    flag.enabled = enabled.unwrap_or(flag.enabled);
    flag.default_variation = default_variation.unwrap_or(flag.default_variation);
    flag.updated_at = now;
    if let Some(rules) = rules {
        let resolved = resolve_rules(&state, &mut tx, &doc, &rules).await?;
        store::replace_flag_rules(&mut tx, flag.id, &resolved).await?;
    }
    match store::update_flag(&mut tx, &flag).await {
        Ok(()) => {}
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Err(key_taken(&doc, &flag.key)),
        Err(error) => return Err(error.into()),
    }
    let rules = store::flag_rules(&mut tx, flag.id).await?;
    tx.commit().await?;
    Ok(document(StatusCode::OK, FlagDocument { data: resource(&flag, &rules) }))
}

#[utoipa::path(
    delete, path = "/flags/{id}", tag = "flags", operation_id = "deleteFlag",
    summary = "Delete a flag (FLAGS_WRITE)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    responses(
        (status = 204, description = "Deleted"),
        JsonApiErrorResponses,
    )
)]
async fn delete_flag(
    State(state): State<Segments>,
    _: CanWriteFlags,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, Errors> {
    let mut tx = store::write_tx(state.db()).await?;
    let flag = store::flag(&mut tx, state.dialect(), &id, true).await?.ok_or_else(|| not_found(&id))?;
    store::delete_flag(&mut tx, flag.id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/flags/{id}/evaluate", tag = "flags", operation_id = "evaluateFlag",
    summary = "The flag's variation for a user: the first rule whose segment holds the user, else the default (FLAGS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The flag's id (UUID) or key", example = "new-checkout")),
    request_body(content(
        (EvaluationInput = "application/json"),
        (EvaluationInput = "application/vnd.api+json"),
    )),
    responses(
        (status = 200, description = "The variation and why", body = FlagEvaluationDocument, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
async fn evaluate_flag(
    State(state): State<Segments>,
    _: CanReadFlags,
    PathParams(id): PathParams<String>,
    doc: Document,
) -> Result<Response, Errors> {
    let (user_id, attributes) = evaluation_input(&doc)?;
    let mut conn = state.db().pool().acquire().await?;
    let flag = store::flag(&mut conn, state.dialect(), &id, false).await?.ok_or_else(|| not_found(&id))?;
    let rules = store::flag_rules(&mut conn, flag.id).await?;
    drop(conn);
    let (value, reason, segment) = if !flag.enabled {
        (flag.default_variation, FlagReason::Disabled, None)
    } else {
        let evaluation = state.evaluate(&user_id, &attributes).await?;
        let member_of: HashSet<i64> = evaluation.memberships().map(|(segment, _)| segment.id).collect();
        match rules.iter().find(|rule| member_of.contains(&rule.segment_id)) {
            Some(rule) => (rule.variation, FlagReason::TargetingMatch, Some(rule)),
            None => (flag.default_variation, FlagReason::Default, None),
        }
    };
    let attributes = FlagEvaluationAttributes {
        key: flag.key,
        user_id,
        value,
        reason,
        segment_id: segment.map(|rule| rule.segment_uuid.clone()),
        segment_key: segment.map(|rule| rule.segment_key.clone()),
    };
    let data = FlagEvaluation { type_: "flagEvaluations", id: flag.uuid, attributes };
    Ok(document(StatusCode::OK, FlagEvaluationDocument { data }))
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
        super::schema_from_json(json!({
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

/// Changes some fields of a flag: the fields of [`FlagInput`], none required; `rules`, when
/// sent, replace every rule.
pub struct FlagPatch;

impl utoipa::PartialSchema for FlagPatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{RefOr, schema::Schema};
        let RefOr::T(Schema::Object(mut patch)) = <FlagInput as utoipa::PartialSchema>::schema() else {
            unreachable!("FlagInput is an object")
        };
        patch.required.clear();
        patch.description = Some("Changes some fields of a flag; `rules`, when sent, replace every rule.".to_owned());
        patch.example = Some(json!({"enabled": false}));
        RefOr::T(Schema::Object(patch))
    }
}

impl ToSchema for FlagPatch {}

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
    type_: &'static str,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uuid")]
    segment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FlagEvaluation {
    #[serde(rename = "type")]
    #[schema(example = "flagEvaluations")]
    type_: &'static str,
    #[schema(format = "uuid")]
    id: String,
    attributes: FlagEvaluationAttributes,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"data": {"type": "flagEvaluations", "id": "550e8400-e29b-41d4-a716-446655440010", "attributes": {"key": "new-checkout", "userId": "user-1", "value": true, "reason": "TARGETING_MATCH", "segmentId": "550e8400-e29b-41d4-a716-446655440001", "segmentKey": "premium-users"}}}))]
pub struct FlagEvaluationDocument {
    data: FlagEvaluation,
}
