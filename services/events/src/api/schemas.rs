//! `/schemas/`: the JSON Schema an event's `data` must satisfy, per `(category, name)`. Three
//! ship with the service (`page interaction`/`pageview`, `page interaction`/`cta click`,
//! `form interaction`/`submit`); more are registered here. A schema applies to events the
//! consumer validates from then on (and to updates), within a second on every replica.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::http::JsonBody;
use shared::{ApiError, ErrorCode};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventErrors, PathParams, both};
use crate::Events;
use crate::schemas::{self, EventSchema, compile};
use crate::time::format_timestamp;
use crate::validate::MAX_LABEL_CHARS;

pub fn routes() -> OpenApiRouter<Events> {
    let router = both(OpenApiRouter::new(), routes!(list, create));
    both(router, routes!(show, put, remove))
}

/// A registered schema.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventSchema)]
struct SchemaView {
    category: String,
    name: String,
    /// A JSON Schema (draft 2020-12) for `data`.
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

/// Registers a schema.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = EventSchemaBody, example = json!({"category": "search", "name": "query",
    "schema": {"type": "object", "required": ["query"], "properties": {"query": {"type": "string"}}}}))]
struct CreateBody {
    /// Not blank, at most 200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    category: String,
    /// Not blank, at most 200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    #[schema(schema_with = json_schema)]
    schema: Value,
}

/// Replaces (or creates) the schema of the path's `(category, name)`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = EventSchemaPut)]
struct PutBody {
    #[schema(schema_with = json_schema)]
    schema: Value,
}

/// A JSON Schema: an object or a boolean.
fn json_schema() -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Object))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .description(Some("A JSON Schema (draft 2020-12) for data: an object or a boolean"))
        .build()
        .into()
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

#[utoipa::path(
    get, path = "/schemas/", tag = "event schemas", operation_id = "list_schemas",
    summary = "Every registered schema",
    responses((status = 200, description = "The schemas", body = Vec<SchemaView>), EventErrors)
)]
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
#[utoipa::path(
    post, path = "/schemas/", tag = "event schemas", operation_id = "create_schema",
    summary = "Register a schema for a new (category, name)",
    request_body = CreateBody,
    responses((status = 201, description = "Registered", body = SchemaView), EventErrors)
)]
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

#[utoipa::path(
    get, path = "/schemas/{category}/{name}/", tag = "event schemas", operation_id = "show_schema",
    summary = "The schema of (category, name)",
    params(("category" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The schema", body = SchemaView), EventErrors)
)]
async fn show(
    State(state): State<Events>,
    PathParams((category, name)): PathParams<(String, String)>,
) -> Result<Json<SchemaView>, ApiError> {
    lookup(&state, &category, &name).await
}

/// `PUT /schemas/{category}/{name}/` with `{"schema": ...}`: 201 when created, 200 when replaced.
#[utoipa::path(
    put, path = "/schemas/{category}/{name}/", tag = "event schemas", operation_id = "put_schema",
    summary = "Replace or create the schema of (category, name)",
    params(
        ("category" = String, Path, max_length = 200, pattern = r"\S"),
        ("name" = String, Path, max_length = 200, pattern = r"\S"),
    ),
    request_body = PutBody,
    responses(
        (status = 200, description = "Replaced", body = SchemaView),
        (status = 201, description = "Created", body = SchemaView),
        EventErrors,
    )
)]
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

#[utoipa::path(
    delete, path = "/schemas/{category}/{name}/", tag = "event schemas", operation_id = "delete_schema",
    summary = "Remove the schema of (category, name)",
    params(("category" = String, Path), ("name" = String, Path)),
    responses((status = 204, description = "Removed"), EventErrors)
)]
async fn remove(
    State(state): State<Events>,
    PathParams((category, name)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let deleted = schemas::delete(&state.db, &category, &name).await?;
    state.schemas.refresh(&state.db).await?;
    if deleted { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found("schema not found")) }
}
