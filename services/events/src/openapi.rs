//! The events service's OpenAPI 3.1 document: the eye's sessions, events, errors and schemas
//! (seed 001) and the user-session routes (seed 003), with request and response schemas and
//! error bodies. The schemas here describe what the handlers in [`crate::api`] read and write;
//! the API tests check that every operation documented here is routed, and that the answers
//! they see have the documented shapes.
//!
//! Routes are documented under the seeds' spelling (`/sessions/`, `/events/{id}/`, ...); each
//! is served without its trailing slash as well.

#![allow(dead_code)]

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use shared::openapi::ErrorBody;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::{OpenApi, PartialSchema, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "events",
        description = "The eye's sessions, asynchronously validated events and their error store, and user-session batches with per-country starts and last sessions."
    ),
    paths(
        list_sessions, create_session, show_session,
        list_events, accept_event, accept_batch, show_event, replace_event, update_event, delete_event,
        list_errors, show_error,
        list_schemas, create_schema, show_schema, put_schema, delete_schema,
        user_batches, user_last_events, user_last_sessions,
    ),
    components(schemas(
        ErrorBody, EventSession, SessionRef, EventBody, EventBatchBody, UserBatchBody, EventPatch, Event, EventQueued, EventBatchAccepted,
        EventBatchItem, EventReason, EventError, EventValidationError, EventValidationDetail, EventSchema,
        EventSchemaBody, EventSchemaPut, UserEvent, UserEventKind, UserBatchOutcome, UserBatchRejection,
        UserSessionStart, UserSession,
    )),
    tags(
        (name = "sessions", description = "Sessions of the eye: the service creates each UUID"),
        (name = "events", description = "Events accepted with 202 and validated by the consumer; stored ones are read, replaced, patched and deleted by id"),
        (name = "errors", description = "Refused events: the raw payload and every reason"),
        (name = "event schemas", description = "The JSON Schema of `data` per (category, name)"),
        (name = "user sessions", description = "Start and end events of user sessions, and their metrics"),
    )
)]
pub struct EventsApi;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    EventsApi::openapi()
}

/// A session of the eye.
#[derive(Serialize, ToSchema)]
pub struct EventSession {
    #[schema(example = "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058")]
    id: String,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2021-06-15T00:00:00.000Z")]
    created_at: String,
}

/// `{"id": "<session uuid>"}`.
#[derive(Serialize, ToSchema)]
pub struct SessionRef {
    #[schema(example = "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058")]
    id: String,
}

/// An event as a client sends it. `POST /events/` accepts any JSON and records what is wrong
/// with it; these are the rules the consumer checks.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"session": {"id": "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058"}, "category": "page interaction",
    "name": "pageview", "data": {"host": "www.consumeraffairs.com", "path": "/"}, "timestamp": "2021-06-15 00:00:00"}))]
pub struct EventBody {
    /// A session created by `POST /sessions/` (a bare string id is accepted too).
    session: SessionRef,
    /// Not blank, at most 200 characters.
    #[schema(example = "page interaction", min_length = 1, max_length = 200)]
    category: String,
    /// Not blank, at most 200 characters.
    #[schema(example = "pageview", min_length = 1, max_length = 200)]
    name: String,
    /// A non-empty object, valid against the schema of `(category, name)` when one is registered.
    #[schema(schema_with = event_data)]
    data: Value,
    /// RFC 3339, or a date-time without zone (UTC), or a date; not in the future.
    #[schema(example = "2021-06-15 00:00:00")]
    timestamp: String,
    /// Optional: a retry with the same one in the same session lands on the same event.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    client_event_id: Option<String>,
}

/// Any JSON value: `POST /events/` queues whatever JSON it is sent (202) and the consumer
/// stores it as an event or, with every reason, as an error record. Valid events look like
/// `EventBody`.
fn any_value() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue)
}

/// `POST /events/batch`: 1 to 500 JSON values (1 MB at most), each accepted or rejected on its
/// own; valid events look like `EventBody`.
pub struct EventBatchBody;

impl PartialSchema for EventBatchBody {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(any_value())
            .min_items(Some(1))
            .max_items(Some(500))
            .description(Some(
                "1 to 500 events (1 MB at most); each is accepted or rejected on its own (see EventBody)",
            ))
            .build()
            .into()
    }
}

impl ToSchema for EventBatchBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventBatchBody")
    }
}

/// `POST /user/batches`: up to 10,000 JSON values (4 MB), each stored or reported on its own;
/// valid ones look like `UserEvent`.
pub struct UserBatchBody;

impl PartialSchema for UserBatchBody {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(any_value())
            .max_items(Some(10_000))
            .description(Some("Up to 10,000 user events (4 MB); each is stored or reported by index (see UserEvent)"))
            .build()
            .into()
    }
}

impl ToSchema for UserBatchBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("UserBatchBody")
    }
}

/// An event's `data`: a non-empty object.
fn event_data() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .min_properties(Some(1))
        .description(Some("A non-empty object, valid against the schema of (category, name) when one is registered"))
        .build()
        .into()
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

/// The fields a PATCH replaces; the result is validated as a whole.
#[derive(Serialize, ToSchema)]
pub struct EventPatch {
    #[schema(nullable = false)]
    session: Option<SessionRef>,
    #[schema(nullable = false, min_length = 1, max_length = 200, pattern = r"\S")]
    category: Option<String>,
    #[schema(nullable = false, min_length = 1, max_length = 200, pattern = r"\S")]
    name: Option<String>,
    #[schema(schema_with = event_data)]
    data: Option<Value>,
    #[schema(nullable = false)]
    timestamp: Option<String>,
}

/// A stored event.
#[derive(Serialize, ToSchema)]
pub struct Event {
    id: String,
    session: SessionRef,
    category: String,
    name: String,
    #[schema(value_type = Object)]
    data: Value,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2021-06-15T00:00:00.000Z")]
    timestamp: String,
    client_event_id: Option<String>,
    received_at: String,
    updated_at: String,
}

/// The answer to `POST /events/`: the event is durably queued under `id`.
#[derive(Serialize, ToSchema)]
pub struct EventQueued {
    /// The id of the event once stored, or of its error record.
    id: String,
    #[schema(example = "queued")]
    status: String,
    message: String,
}

/// The answer to `POST /events/batch`.
#[derive(Serialize, ToSchema)]
pub struct EventBatchAccepted {
    accepted: u64,
    rejected: u64,
    /// One per event, in order.
    items: Vec<EventBatchItem>,
}

#[derive(Serialize, ToSchema)]
pub struct EventBatchItem {
    index: u64,
    /// The event's id (its error record's when rejected or when its session is unknown).
    id: String,
    /// `accepted`: queued for the consumer (which still checks the session); `rejected`: an
    /// error record is written with these reasons.
    #[schema(example = "accepted")]
    status: String,
    #[schema(nullable = false)]
    reasons: Option<Vec<EventReason>>,
}

/// One reason an event was refused.
#[derive(Serialize, ToSchema)]
pub struct EventReason {
    /// `missing_field`, `invalid_type`, `blank`, `too_long`, `not_an_object`, `data_not_object`,
    /// `data_empty`, `timestamp_invalid`, `timestamp_in_future`, `session_unknown`,
    /// `schema_violation`, `unknown_event_type` (user events: also `invalid_value`).
    #[schema(example = "data_empty")]
    code: String,
    /// RFC 6901 pointer into the payload ("" for the payload itself).
    #[schema(example = "/data")]
    pointer: String,
    message: String,
}

/// An error record: a refused event.
#[derive(Serialize, ToSchema)]
pub struct EventError {
    /// The id the event was accepted under.
    id: String,
    /// The session the payload named, if it named one.
    session: Option<String>,
    /// The event exactly as sent.
    payload: Value,
    reasons: Vec<EventReason>,
    received_at: String,
    created_at: String,
}

/// A 422 of an update: the usual error body, with every reason when the event is invalid.
#[derive(Serialize, ToSchema)]
pub struct EventValidationError {
    error: EventValidationDetail,
}

#[derive(Serialize, ToSchema)]
pub struct EventValidationDetail {
    #[schema(example = "VALIDATION_FAILED")]
    code: String,
    message: String,
    #[schema(nullable = false)]
    reasons: Option<Vec<EventReason>>,
}

/// A registered schema.
#[derive(Serialize, ToSchema)]
pub struct EventSchema {
    category: String,
    name: String,
    /// A JSON Schema (draft 2020-12) for `data`.
    schema: Value,
    created_at: String,
    updated_at: String,
}

/// Registers a schema.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"category": "search", "name": "query",
    "schema": {"type": "object", "required": ["query"], "properties": {"query": {"type": "string"}}}}))]
pub struct EventSchemaBody {
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
#[derive(Serialize, ToSchema)]
pub struct EventSchemaPut {
    #[schema(schema_with = json_schema)]
    schema: Value,
}

/// A user session's start or end.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"user_id": "d6313e1fb7d247a6a034e2aadc30ab30", "country": "TIN", "event": "start",
    "session_id": "674606b1-2270-4285-928f-eef4a6b90a60", "ts": "2019-04-16T20:40:50"}))]
pub struct UserEvent {
    /// Not blank, at most 128 characters.
    user_id: String,
    /// Optional; the session's country is its start's.
    country: Option<String>,
    event: UserEventKind,
    /// Not blank, at most 128 characters.
    session_id: String,
    /// RFC 3339, or a date-time without zone (UTC).
    ts: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserEventKind {
    Start,
    End,
}

/// The answer to `POST /user/batches`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"accepted": 8, "duplicates": 0, "rejected": 0, "errors": []}))]
pub struct UserBatchOutcome {
    /// Events stored now.
    accepted: u64,
    /// Events whose `(session_id, event)` was already stored (or came twice in the batch).
    duplicates: u64,
    rejected: u64,
    errors: Vec<UserBatchRejection>,
}

#[derive(Serialize, ToSchema)]
pub struct UserBatchRejection {
    index: u64,
    reasons: Vec<EventReason>,
}

/// A session start, as `last-events` lists it.
#[derive(Serialize, ToSchema)]
pub struct UserSessionStart {
    user_id: String,
    country: Option<String>,
    #[schema(example = "start")]
    event: String,
    session_id: String,
    ts: String,
}

/// A complete session.
#[derive(Serialize, ToSchema)]
pub struct UserSession {
    session_id: String,
    user_id: String,
    /// The start event's.
    country: Option<String>,
    start_ts: String,
    end_ts: String,
    duration_seconds: f64,
}

#[utoipa::path(
    get, path = "/sessions/", tag = "sessions",
    summary = "List sessions, oldest first",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("after" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18})?$", description = "Cursor from the Link header (empty: none)"),
    ),
    responses(
        (status = 200, description = "A page of sessions", body = Vec<EventSession>, headers(("link" = String, description = "rel=next link to the following page, when there is one"))),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
    )
)]
fn list_sessions() {}

#[utoipa::path(
    post, path = "/sessions/", tag = "sessions",
    summary = "Create a session (any body is ignored)",
    responses(
        (status = 201, description = "Created", body = EventSession, headers(("location" = String))),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
fn create_session() {}

#[utoipa::path(
    get, path = "/sessions/{id}/", tag = "sessions",
    summary = "A session",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The session", body = EventSession),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
fn show_session() {}

#[utoipa::path(
    get, path = "/events/", tag = "events",
    summary = "List stored events by timestamp, filtered, in keyset pages",
    params(
        ("session" = Option<String>, Query, description = "Session id, any spelling of its UUID (empty: no filter)"),
        ("category" = Option<String>, Query, description = "Empty: no filter"),
        ("name" = Option<String>, Query, description = "Empty: no filter"),
        ("timestamp__gte" = Option<String>, Query, format = DateTime, description = "Earliest timestamp (RFC 3339, or without zone: UTC)"),
        ("timestamp__lte" = Option<String>, Query, format = DateTime, description = "Latest timestamp (RFC 3339, or without zone: UTC)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("after" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18}_-?[0-9]{1,18})?$", description = "Cursor from the Link header (empty: none)"),
    ),
    responses(
        (status = 200, description = "A page of events", body = Vec<Event>, headers(("link" = String, description = "rel=next link to the following page, when there is one"))),
        (status = 400, description = "Bad filter, limit or cursor", body = ErrorBody),
    )
)]
fn list_events() {}

#[utoipa::path(
    post, path = "/events/", tag = "events",
    summary = "Accept an event: 202 once durably queued; the consumer validates it",
    description = "Any JSON is accepted; an invalid event becomes an error record under the answered id. Valid events look like EventBody.",
    request_body(content = inline(Value), description = "An event (see EventBody), or any JSON to be recorded as an error"),
    responses(
        (status = 202, description = "Queued", body = EventQueued),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "The queue did not confirm; retry", body = ErrorBody),
    )
)]
fn accept_event() {}

#[utoipa::path(
    post, path = "/events/batch", tag = "events",
    summary = "Accept up to 500 events (1 MB) at once, with per-item acceptance",
    request_body = EventBatchBody,
    responses(
        (status = 202, description = "Queued; each item accepted or rejected with its reasons", body = EventBatchAccepted),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Over 500 events or 1 MB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a JSON array, or an empty one", body = ErrorBody),
        (status = 503, description = "The queue did not confirm; retry", body = ErrorBody),
    )
)]
fn accept_batch() {}

#[utoipa::path(
    get, path = "/events/{id}/", tag = "events",
    summary = "A stored event",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "No such event (yet)", body = ErrorBody),
    )
)]
fn show_event() {}

#[utoipa::path(
    put, path = "/events/{id}/", tag = "events",
    summary = "Replace an event's session, category, name, data and timestamp (validated again)",
    params(("id" = String, Path)),
    request_body = EventBody,
    responses(
        (status = 200, description = "Replaced", body = Event),
        (status = 400, description = "Malformed JSON or bad path", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "The event kept changing; retry", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid: every reason", body = EventValidationError),
    )
)]
fn replace_event() {}

#[utoipa::path(
    patch, path = "/events/{id}/", tag = "events",
    summary = "Replace the fields present (the result is validated again)",
    params(("id" = String, Path)),
    request_body = EventPatch,
    responses(
        (status = 200, description = "Updated", body = Event),
        (status = 400, description = "Malformed JSON or bad path", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "The event kept changing; retry", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not an object, or invalid: every reason", body = EventValidationError),
    )
)]
fn update_event() {}

#[utoipa::path(
    delete, path = "/events/{id}/", tag = "events",
    summary = "Delete an event",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    )
)]
fn delete_event() {}

#[utoipa::path(
    get, path = "/errors/", tag = "errors",
    summary = "List error records, oldest first",
    params(
        ("session" = Option<String>, Query, description = "Only those naming this session, any spelling of its UUID (empty: no filter)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("after" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18})?$", description = "Cursor from the Link header (empty: none)"),
    ),
    responses(
        (status = 200, description = "A page of error records", body = Vec<EventError>, headers(("link" = String, description = "rel=next link to the following page, when there is one"))),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
    )
)]
fn list_errors() {}

#[utoipa::path(
    get, path = "/errors/{id}/", tag = "errors",
    summary = "An error record (its id is the one the event was accepted under)",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The error record", body = EventError),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "No such error record", body = ErrorBody),
    )
)]
fn show_error() {}

#[utoipa::path(
    get, path = "/schemas/", tag = "event schemas",
    summary = "Every registered schema",
    responses((status = 200, description = "The schemas", body = Vec<EventSchema>))
)]
fn list_schemas() {}

#[utoipa::path(
    post, path = "/schemas/", tag = "event schemas",
    summary = "Register a schema for a new (category, name)",
    request_body = EventSchemaBody,
    responses(
        (status = 201, description = "Registered", body = EventSchema),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Already registered (PUT replaces)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Blank or too long label, or not a valid JSON Schema", body = ErrorBody),
    )
)]
fn create_schema() {}

#[utoipa::path(
    get, path = "/schemas/{category}/{name}/", tag = "event schemas",
    summary = "The schema of (category, name)",
    params(("category" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The schema", body = EventSchema),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "None registered", body = ErrorBody),
    )
)]
fn show_schema() {}

#[utoipa::path(
    put, path = "/schemas/{category}/{name}/", tag = "event schemas",
    summary = "Replace or create the schema of (category, name)",
    params(
        ("category" = String, Path, max_length = 200, pattern = r"\S"),
        ("name" = String, Path, max_length = 200, pattern = r"\S"),
    ),
    request_body = EventSchemaPut,
    responses(
        (status = 200, description = "Replaced", body = EventSchema),
        (status = 201, description = "Created", body = EventSchema),
        (status = 400, description = "Malformed JSON or bad path", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Blank or too long label, or not a valid JSON Schema", body = ErrorBody),
    )
)]
fn put_schema() {}

#[utoipa::path(
    delete, path = "/schemas/{category}/{name}/", tag = "event schemas",
    summary = "Remove the schema of (category, name)",
    params(("category" = String, Path), ("name" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 404, description = "None registered", body = ErrorBody),
    )
)]
fn delete_schema() {}

#[utoipa::path(
    post, path = "/user/batches", tag = "user sessions",
    summary = "Store start and end events (duplicates ignored); invalid ones are reported by index",
    request_body = UserBatchBody,
    responses(
        (status = 200, description = "Stored", body = UserBatchOutcome),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Over the event count or body size limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a JSON array", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
fn user_batches() {}

#[utoipa::path(
    get, path = "/user/last-events", tag = "user sessions",
    summary = "For every country seen, its session starts of the last `days` days, newest first",
    description = "Countries without starts in the window have an empty list; starts without a country are listed under `unknown`.",
    params(
        ("days" = i64, Query, minimum = 1, maximum = 36500),
        ("as_of" = Option<String>, Query, format = DateTime, description = "End of the window; without it the window starts `days` days before now and has no end (starts stamped later than now included)"),
    ),
    responses(
        (status = 200, description = "Starts by country", body = BTreeMap<String, Vec<UserSessionStart>>),
        (status = 400, description = "Missing or bad days, bad as_of", body = ErrorBody),
    )
)]
fn user_last_events() {}

#[utoipa::path(
    get, path = "/user/last-sessions-user", tag = "user sessions",
    summary = "A user's last 20 complete sessions, newest first",
    params(
        ("user_id" = String, Query, pattern = r"\S"),
        ("as_of" = Option<String>, Query, format = DateTime, description = "Sessions complete by then (both events at or before it); without it every session whose start and end have arrived"),
    ),
    responses(
        (status = 200, description = "The sessions", body = Vec<UserSession>),
        (status = 400, description = "Missing user_id, bad as_of", body = ErrorBody),
    )
)]
fn user_last_sessions() {}
