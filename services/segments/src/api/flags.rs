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
    CanReadFlags, CanWriteFlags, Checker, Document, Errors, Page, PathParams, document, evaluation_input, query_map,
};
use crate::Segments;
use crate::store::{self, FlagRow, FlagRuleRow};

/// The routes, relative to `/api/v1` (where [`super::router`] nests them).
pub fn router() -> Router<Segments> {
    Router::new()
        .route("/flags", get(list_flags).post(create_flag))
        .route("/flags/{id}", get(get_flag).patch(update_flag).delete(delete_flag))
        .route("/flags/{id}/evaluate", post(evaluate_flag))
}

const PATH: &str = "/api/v1/flags";
/// Most targeting rules one flag holds.
const MAX_RULES: usize = 100;

fn resource(flag: &FlagRow, rules: &[FlagRuleRow]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|rule| json!({ "segmentId": rule.segment_uuid, "segmentKey": rule.segment_key, "variation": rule.variation }))
        .collect();
    json!({
        "type": "flags",
        "id": flag.uuid,
        "attributes": {
            "key": flag.key,
            "name": flag.name,
            "enabled": flag.enabled,
            "defaultVariation": flag.default_variation,
            "rules": rules,
            "createdAt": crate::rfc3339_seconds(flag.created_at),
            "updatedAt": crate::rfc3339_seconds(flag.updated_at),
        },
        "links": { "self": format!("{PATH}/{}", flag.uuid) },
    })
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
    let mut response = document(StatusCode::CREATED, json!({ "data": resource(&flag, &rules) }));
    if let Ok(location) = HeaderValue::from_str(&format!("{PATH}/{}", flag.uuid)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn list_flags(State(state): State<Segments>, _: CanReadFlags, uri: Uri) -> Result<Response, Errors> {
    let page = Page::from_query(&query_map(&uri)?)?;
    let (flags, total) = store::flags_page(state.db(), page.offset(), page.size).await?;
    let mut conn = state.db().pool().acquire().await?;
    let mut data = Vec::with_capacity(flags.len());
    for flag in &flags {
        data.push(resource(flag, &store::flag_rules(&mut conn, flag.id).await?));
    }
    let (meta, links) = page.meta_and_links(PATH, total);
    Ok(document(StatusCode::OK, json!({ "data": data, "meta": meta, "links": links })))
}

async fn get_flag(
    State(state): State<Segments>,
    _: CanReadFlags,
    PathParams(id): PathParams<String>,
) -> Result<Response, Errors> {
    let mut conn = state.db().pool().acquire().await?;
    let flag = store::flag(&mut conn, state.dialect(), &id, false).await?.ok_or_else(|| not_found(&id))?;
    let rules = store::flag_rules(&mut conn, flag.id).await?;
    Ok(document(StatusCode::OK, json!({ "data": resource(&flag, &rules) })))
}

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
    Ok(document(StatusCode::OK, json!({ "data": resource(&flag, &rules) })))
}

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
        (flag.default_variation, "DISABLED", None)
    } else {
        let evaluation = state.evaluate(&user_id, &attributes).await?;
        let member_of: HashSet<i64> = evaluation.memberships().map(|(segment, _)| segment.id).collect();
        match rules.iter().find(|rule| member_of.contains(&rule.segment_id)) {
            Some(rule) => (rule.variation, "TARGETING_MATCH", Some(rule)),
            None => (flag.default_variation, "DEFAULT", None),
        }
    };
    let mut attributes = json!({ "key": flag.key, "userId": user_id, "value": value, "reason": reason });
    if let Some(rule) = segment {
        attributes["segmentId"] = json!(rule.segment_uuid);
        attributes["segmentKey"] = json!(rule.segment_key);
    }
    Ok(document(
        StatusCode::OK,
        json!({ "data": { "type": "flagEvaluations", "id": flag.uuid, "attributes": attributes } }),
    ))
}
