//! `/api/v1/decisions`: DMN models stored once and referred to by segments' `decisionId`.
//!
//! `POST` takes the DMN XML as the body (`application/xml`, `text/xml` or any `+xml` type), or a
//! JSON document `{"name"?,"content"}`; the model is parsed and compiled before it is stored
//! (400 `VALIDATION` with the parser's reason otherwise) and answers 201 with its id. A decision
//! never changes once stored, so a segment's compiled copy never goes stale.
//!
//! | method | path | permission |
//! |---|---|---|
//! | POST | /api/v1/decisions | SEGMENTS_CREATE |
//! | GET | /api/v1/decisions/:id | SEGMENTS_READ |

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::is_uuid;
use super::jsonapi::{CanCreateSegments, CanReadSegments, Checker, Document, Errors, PathParams, document};
use crate::Segments;
use crate::store::{self, DecisionRow};

/// The routes, relative to `/api/v1` (where [`super::router`] nests them).
pub fn router() -> Router<Segments> {
    Router::new().route("/decisions", post(create_decision)).route("/decisions/{id}", get(get_decision))
}

const MAX_MODEL_CHARS: usize = 512 * 1024;

fn resource(row: &DecisionRow, with_content: bool) -> Value {
    let mut attributes = json!({
        "name": row.name,
        "decision": row.decision_name,
        "createdAt": crate::rfc3339_seconds(row.created_at),
    });
    if with_content {
        attributes["content"] = json!(row.content);
    }
    json!({
        "type": "decisions",
        "id": row.uuid,
        "attributes": attributes,
        "links": { "self": format!("/api/v1/decisions/{}", row.uuid) },
    })
}

fn is_xml(request: &Request) -> bool {
    let Some(value) = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/xml" || essence == "text/xml" || essence.ends_with("+xml")
}

async fn create_decision(
    State(state): State<Segments>,
    _: CanCreateSegments,
    request: Request,
) -> Result<Response, Errors> {
    let (name, content, pointer) = if is_xml(&request) {
        let bytes = shared::http::read_body(request, &state).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| Errors::validation("the DMN model must be UTF-8 text", None))?;
        (None, text, None)
    } else {
        let doc = Document::from_request(request, &state).await?;
        let mut check = Checker::new(&doc);
        let name = check.string("name", false, true, 200).flatten();
        let content = check.string("content", true, false, MAX_MODEL_CHARS).flatten();
        check.finish()?;
        (name, content.unwrap_or_default(), Some(doc.pointer("content")))
    };
    if content.chars().count() > MAX_MODEL_CHARS {
        return Err(Errors::validation(format!("a DMN model is at most {MAX_MODEL_CHARS} characters"), pointer));
    }
    let xml = content.clone();
    let described = tokio::task::spawn_blocking(move || crate::rules::describe_dmn(&xml))
        .await
        .unwrap_or_else(|_| Err("the DMN model could not be compiled".to_owned()));
    let (model_name, decision_name) = described.map_err(|reason| Errors::validation(reason, pointer))?;
    let row = DecisionRow {
        uuid: crate::new_uuid(),
        name: name.unwrap_or(model_name).chars().take(200).collect(),
        decision_name: decision_name.chars().take(200).collect(),
        content,
        created_at: state.now(),
    };
    store::insert_decision(state.db(), &row).await?;
    let mut response = document(StatusCode::CREATED, json!({ "data": resource(&row, false) }));
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/decisions/{}", row.uuid)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn get_decision(
    State(state): State<Segments>,
    _: CanReadSegments,
    PathParams(id): PathParams<String>,
) -> Result<Response, Errors> {
    let not_found = || Errors::not_found(format!("decision {id} not found"));
    if !is_uuid(&id) {
        return Err(not_found());
    }
    let mut conn = state.db().pool().acquire().await?;
    let row = store::decision(&mut conn, &id).await?.ok_or_else(not_found)?;
    Ok(document(StatusCode::OK, json!({ "data": resource(&row, true) })))
}
