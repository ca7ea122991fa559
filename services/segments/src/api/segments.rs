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

use axum::Router;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use super::is_uuid;
use super::jsonapi::{
    CanCreateSegments, CanDeleteSegments, CanReadSegments, CanUpdateSegments, Checker, Document, Errors, Page,
    PathParams, document, evaluation_input, is_reserved_key, query_map,
};
use crate::Segments;
use crate::engine::Reason;
use crate::rules::{self, RuleType};
use crate::store::{self, SegmentRow};

/// The routes, relative to `/api/v1` (where [`super::router`] nests them).
pub fn router() -> Router<Segments> {
    Router::new()
        .route("/segments", get(list_segments).post(create_segment))
        .route("/segments/evaluate", post(evaluate))
        .route("/segments/{id}", get(get_segment).patch(update_segment).delete(delete_segment))
}

const PATH: &str = "/api/v1/segments";
const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Largest `ruleContent` (DMN XML can be long; SIMPLE rules rarely are).
const MAX_RULE_CHARS: usize = 512 * 1024;

fn self_link(id: &str) -> String {
    format!("{PATH}/{id}")
}

/// The full resource object of a segment.
pub fn resource(row: &SegmentRow) -> Value {
    let mut attributes = json!({
        "key": row.key,
        "name": row.name,
        "description": row.description,
        "ruleType": row.rule_type,
        "ruleContent": row.rule_content,
        "createdAt": crate::rfc3339_seconds(row.created_at),
        "updatedAt": crate::rfc3339_seconds(row.updated_at),
    });
    if let Some(decision_id) = &row.decision_id {
        attributes["decisionId"] = json!(decision_id);
    }
    if let Some(percent) = row.percent {
        attributes["percent"] = json!(percent);
    }
    json!({
        "type": "segments",
        "id": row.uuid,
        "attributes": attributes,
        "meta": { "version": row.version },
        "links": { "self": self_link(&row.uuid) },
    })
}

/// The short form the list shows (seed 002: key, name, ruleType).
fn list_item(row: &SegmentRow) -> Value {
    json!({
        "type": "segments",
        "id": row.uuid,
        "attributes": { "key": row.key, "name": row.name, "ruleType": row.rule_type },
        "links": { "self": self_link(&row.uuid) },
    })
}

async fn list_segments(State(state): State<Segments>, _: CanReadSegments, uri: Uri) -> Result<Response, Errors> {
    let page = Page::from_query(&query_map(&uri)?)?;
    let (rows, total) = store::live_segments_page(state.db(), page.offset(), page.size).await?;
    let (meta, links) = page.meta_and_links(PATH, total);
    Ok(document(
        StatusCode::OK,
        json!({ "data": rows.iter().map(list_item).collect::<Vec<_>>(), "meta": meta, "links": links }),
    ))
}

async fn get_segment(
    State(state): State<Segments>,
    _: CanReadSegments,
    PathParams(id): PathParams<String>,
) -> Result<Response, Errors> {
    let row = find(&state, &id).await?;
    Ok(document(StatusCode::OK, json!({ "data": resource(&row) })))
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

async fn create_segment(
    State(state): State<Segments>,
    _: CanCreateSegments,
    doc: Document,
) -> Result<Response, Errors> {
    let changes = read_changes(&doc, true)?;
    let key = changes.key.unwrap_or_default();
    let candidate = SegmentRow {
        id: 0,
        uuid: crate::new_uuid(),
        key: key.clone(),
        name: changes.name.unwrap_or_default(),
        description: changes.description.flatten(),
        rule_type: changes.rule_type.unwrap_or(RuleType::Simple).as_str().to_owned(),
        rule_content: changes.rule_content.flatten(),
        decision_id: changes.decision_id.flatten(),
        percent: changes.percent.flatten(),
        version: 1,
        deleted: false,
        created_at: 0,
        updated_at: 0,
    };
    check_rule(&mut *state.db().pool().acquire().await?, &doc, &candidate).await?;
    let now = state.now();
    let mut tx = store::write_tx(state.db()).await?;
    if store::live_key_taken(&mut tx, &key, None).await? {
        return Err(key_taken(&doc, &key));
    }
    let new = store::NewSegment {
        uuid: candidate.uuid,
        key: candidate.key,
        name: candidate.name,
        description: candidate.description,
        rule_type: candidate.rule_type,
        rule_content: candidate.rule_content,
        decision_id: candidate.decision_id,
        percent: candidate.percent,
    };
    let row = match store::insert_segment(&mut tx, &new, now).await {
        Ok(row) => row,
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Err(key_taken(&doc, &key)),
        Err(error) => return Err(error.into()),
    };
    tx.commit().await?;
    let mut response = document(StatusCode::CREATED, json!({ "data": resource(&row) }));
    if let Ok(location) = HeaderValue::from_str(&self_link(&row.uuid)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

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
    let updated = SegmentRow { version: merged.version + 1, updated_at: now, ..merged };
    Ok(document(StatusCode::OK, json!({ "data": resource(&updated) })))
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
    Ok(StatusCode::NO_CONTENT)
}

/// The reason object of an evaluation answer.
pub fn reason_view(reason: Reason) -> Value {
    match reason {
        Reason::Explicit { expires_at } => json!({
            "kind": "EXPLICIT",
            "expiresAt": expires_at.map(crate::rfc3339_seconds),
        }),
        Reason::Rule { rule_type } => json!({ "kind": "RULE", "ruleType": rule_type.as_str() }),
        Reason::Percentage { percent, bucket } => json!({ "kind": "PERCENTAGE", "percent": percent, "bucket": bucket }),
    }
}

async fn evaluate(State(state): State<Segments>, _: CanReadSegments, doc: Document) -> Result<Response, Errors> {
    let (user_id, attributes) = evaluation_input(&doc)?;
    let evaluation = state.evaluate(&user_id, &attributes).await?;
    let data: Vec<Value> = evaluation
        .memberships()
        .map(|(segment, reason)| {
            json!({
                "type": "segments",
                "id": segment.uuid,
                "attributes": { "key": segment.key, "name": segment.name, "reason": reason_view(reason) },
                "links": { "self": self_link(&segment.uuid) },
            })
        })
        .collect();
    let meta = json!({
        "userId": user_id,
        "evaluatedSegments": evaluation.snapshot.segments.len(),
        "matchedSegments": data.len(),
    });
    Ok(document(StatusCode::OK, json!({ "data": data, "meta": meta })))
}
