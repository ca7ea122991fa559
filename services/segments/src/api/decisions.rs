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

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::is_uuid;
use super::jsonapi::{
    CanCreateSegments, CanReadSegments, Checker, Document, Errors, JsonApiErrorResponses, MEDIA_TYPE, PathParams,
    SelfLink, document,
};
use crate::Segments;
use crate::store::{self, DecisionRow};

/// The routes, relative to `/api/v1` (where [`super::router`] nests them).
pub fn routes() -> OpenApiRouter<Segments> {
    OpenApiRouter::new().routes(routes!(create_decision)).routes(routes!(get_decision))
}

const MAX_MODEL_CHARS: usize = 512 * 1024;

fn resource(row: &DecisionRow, with_content: bool) -> DecisionDocument {
    let attributes = DecisionAttributes {
        name: row.name.clone(),
        decision: row.decision_name.clone(),
        created_at: crate::rfc3339_seconds(row.created_at),
        content: with_content.then(|| row.content.clone()),
    };
    let links = SelfLink { self_: format!("/api/v1/decisions/{}", row.uuid) };
    DecisionDocument { data: DecisionResource { type_: "decisions", id: row.uuid.clone(), attributes, links } }
}

fn is_xml(request: &Request) -> bool {
    let Some(value) = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/xml" || essence == "text/xml" || essence.ends_with("+xml")
}

#[utoipa::path(
    post, path = "/decisions", tag = "decisions", operation_id = "createDecision",
    summary = "Store a DMN model, compiled first (SEGMENTS_CREATE)",
    security(("bearerAuth" = [])),
    request_body(content(
        (DecisionInput = "application/json"),
        (String = "application/xml"),
    )),
    responses(
        (status = 201, description = "Stored", body = DecisionDocument, content_type = MEDIA_TYPE,
            headers(("Location" = String, description = "/api/v1/decisions/{id}"))),
        JsonApiErrorResponses,
    )
)]
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
    let response = document(StatusCode::CREATED, resource(&row, false));
    Ok(super::with_location(response, &format!("/api/v1/decisions/{}", row.uuid)))
}

#[utoipa::path(
    get, path = "/decisions/{id}", tag = "decisions", operation_id = "getDecision",
    summary = "A stored DMN model, with its XML (SEGMENTS_READ)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The decision's id (UUID)", example = "550e8400-e29b-41d4-a716-446655440099")),
    responses(
        (status = 200, description = "The decision", body = DecisionDocument, content_type = MEDIA_TYPE),
        JsonApiErrorResponses,
    )
)]
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
    Ok(document(StatusCode::OK, resource(&row, true)))
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
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionResource {
    #[serde(rename = "type")]
    #[schema(example = "decisions")]
    type_: &'static str,
    #[schema(format = "uuid")]
    id: String,
    attributes: DecisionAttributes,
    links: SelfLink,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionDocument {
    data: DecisionResource,
}
