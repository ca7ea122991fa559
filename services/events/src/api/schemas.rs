//! `/schemas/`: the JSON Schema an event's `data` must satisfy, per `(category, name)`. Three
//! ship with the service (`page interaction`/`pageview`, `page interaction`/`cta click`,
//! `form interaction`/`submit`); more are registered here. A schema applies to events the
//! consumer validates from then on (and to updates), within a second on every replica.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::http::JsonBody;
use shared::{ApiError, ErrorCode};

use super::{PathParams, both};
use crate::Events;
use crate::schemas::{self, EventSchema, compile};
use crate::time::format_timestamp;
use crate::validate::MAX_LABEL_CHARS;

pub fn router() -> Router<Events> {
    let router = both(Router::new(), "/schemas/", get(list).post(create));
    both(router, "/schemas/{category}/{name}/", get(show).put(put).delete(remove))
}

#[derive(Debug, Serialize)]
struct SchemaView {
    category: String,
    name: String,
    schema: Value,
    created_at: String,
    updated_at: String,
}

impl From<&EventSchema> for SchemaView {
    fn from(schema: &EventSchema) -> Self {
        Self {
            category: schema.category.clone(),
            name: schema.name.clone(),
            schema: schema.schema.clone(),
            created_at: format_timestamp(schema.created_at),
            updated_at: format_timestamp(schema.updated_at),
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    category: String,
    name: String,
    schema: Value,
}

#[derive(Debug, Deserialize)]
struct PutBody {
    schema: Value,
}

fn check_label(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::validation(format!("{field} must not be blank")));
    }
    if value.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::validation(format!("{field} is longer than {MAX_LABEL_CHARS} characters")));
    }
    Ok(())
}

fn check_schema(schema: &Value) -> Result<(), ApiError> {
    compile(schema).map(|_| ()).map_err(ApiError::validation)
}

async fn list(State(state): State<Events>) -> Result<Json<Vec<SchemaView>>, ApiError> {
    state.schemas.refresh(&state.db).await?;
    Ok(Json(state.schemas.all().iter().map(|schema| SchemaView::from(schema.as_ref())).collect()))
}

async fn lookup(state: &Events, category: &str, name: &str) -> Result<Json<SchemaView>, ApiError> {
    state.schemas.refresh(&state.db).await?;
    let schema = state.schemas.get(category, name).ok_or_else(|| ApiError::not_found("schema not found"))?;
    Ok(Json(SchemaView::from(schema.as_ref())))
}

/// `POST /schemas/`: 201, or 409 when `(category, name)` already has one (use PUT to replace).
async fn create(
    State(state): State<Events>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<SchemaView>), ApiError> {
    check_label("category", &body.category)?;
    check_label("name", &body.name)?;
    check_schema(&body.schema)?;
    if !schemas::create(&state.db, &body.category, &body.name, &body.schema, state.clock.now_millis()).await? {
        return Err(ApiError::new(ErrorCode::Conflict, "a schema is already registered for this category and name"));
    }
    Ok((StatusCode::CREATED, lookup(&state, &body.category, &body.name).await?))
}

async fn show(
    State(state): State<Events>,
    PathParams((category, name)): PathParams<(String, String)>,
) -> Result<Json<SchemaView>, ApiError> {
    lookup(&state, &category, &name).await
}

/// `PUT /schemas/{category}/{name}/` with `{"schema": ...}`: 201 when created, 200 when replaced.
async fn put(
    State(state): State<Events>,
    PathParams((category, name)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<(StatusCode, Json<SchemaView>), ApiError> {
    check_label("category", &category)?;
    check_label("name", &name)?;
    check_schema(&body.schema)?;
    let created = schemas::put(&state.db, &category, &name, &body.schema, state.clock.now_millis()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, lookup(&state, &category, &name).await?))
}

async fn remove(
    State(state): State<Events>,
    PathParams((category, name)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let deleted = schemas::delete(&state.db, &category, &name).await?;
    state.schemas.refresh(&state.db).await?;
    if deleted { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found("schema not found")) }
}
