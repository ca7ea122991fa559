//! `/events/`: accepting events (202 once durably queued; the consumer validates them), and
//! listing, reading, replacing, patching and deleting the stored ones. An update is validated
//! again, synchronously, by the same rules.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use shared::http::{Edit, QueryParams};
use shared::{ApiError, ErrorCode};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    EventErrors, Invalid, Listed, Page, PathParams, Refusal, batch_items, both, json_bytes, malformed, page_limit,
    present,
};
use crate::Events;
use crate::ingest::{self, QueuedEvent, QueuedEvents, event_id};
use crate::model::{EventBatchBody, EventBody, EventPatch, Reason, SessionRef, ValidEvent};
use crate::store::{self, EventFilter, EventRow};
use crate::time::{format_timestamp, parse_timestamp};
use crate::validate::{self, Payload, normalize_session_id, session_id_of};

pub fn routes() -> OpenApiRouter<Events> {
    let router = both(OpenApiRouter::new(), routes!(list, accept));
    both(router, routes!(show, replace, update, remove))
}

/// `POST /events/batch`, under its own body limit.
pub fn batch_routes() -> OpenApiRouter<Events> {
    both(OpenApiRouter::new(), routes!(accept_batch))
}

/// A stored event.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Event)]
struct EventView {
    id: String,
    session: SessionRef,
    category: String,
    name: String,
    #[schema(value_type = Object)]
    data: Box<RawValue>,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2021-06-15T00:00:00.000Z")]
    timestamp: String,
    client_event_id: Option<String>,
    received_at: String,
    updated_at: String,
}

impl From<EventRow> for EventView {
    fn from(row: EventRow) -> Self {
        Self {
            id: row.id,
            session: SessionRef { id: row.event.session_id },
            category: row.event.category,
            name: row.event.name,
            data: row.event.data,
            timestamp: format_timestamp(row.event.timestamp),
            client_event_id: row.event.client_event_id,
            received_at: format_timestamp(row.received_at),
            updated_at: format_timestamp(row.updated_at),
        }
    }
}

/// The JSON body of a request, as raw bytes: 415 unless it is JSON, 413 over the limit.
/// The answer to `POST /events/`: the event is durably queued under `id`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventQueued)]
struct Queued {
    /// The id of the event once stored, or of its error record.
    id: String,
    #[schema(example = "queued")]
    status: &'static str,
    message: &'static str,
}

/// `POST /events/`: 202 once the event is durably queued, whatever it holds (as long as it is
/// JSON): the consumer stores it, or an error record under the same id.
#[utoipa::path(
    post, path = "/events/", tag = "events", operation_id = "accept_event",
    summary = "Accept an event: 202 once durably queued; the consumer validates it",
    description = "Any JSON is accepted; an invalid event becomes an error record under the answered id. Valid events look like EventBody.",
    request_body(content = inline(Value), description = "An event (see EventBody), or any JSON to be recorded as an error"),
    responses((status = 202, description = "Queued", body = Queued), EventErrors)
)]
async fn accept(State(state): State<Events>, request: Request) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let body = json_bytes(&state, request).await?;
    let payload: &RawValue = serde_json::from_slice(&body).map_err(|e| malformed(&e))?;
    let value: Value = serde_json::from_str(payload.get()).map_err(|e| malformed(&e))?;
    let id = event_id(&value);
    let queued = QueuedEvents {
        received_at: state.clock.now_millis(),
        items: vec![QueuedEvent { id: id.as_str().into(), payload, rejected: None }],
    };
    ingest::publish(&state, &queued).await?;
    let message = "the event will be stored once validated; an invalid one becomes an error record with this id";
    Ok((StatusCode::ACCEPTED, Json(Queued { id, status: "queued", message })))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventBatchItem)]
struct BatchItem {
    index: u64,
    /// The event's id (its error record's when rejected or when its session is unknown).
    id: String,
    /// `accepted`: queued for the consumer (which still checks the session); `rejected`: an
    /// error record is written with these reasons.
    #[schema(example = "accepted")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    reasons: Option<Vec<Reason>>,
}

/// The answer to `POST /events/batch`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventBatchAccepted)]
struct BatchAccepted {
    accepted: u64,
    rejected: u64,
    /// One per event, in order.
    items: Vec<BatchItem>,
}

/// `POST /events/batch`: up to the batch limit of events, queued as one message. Each item is
/// checked at once by every rule that needs no store, so the answer says which were accepted;
/// a rejected item is queued too, so its error record (with the same id) is written as well.
/// Whether the session exists is still the consumer's check.
#[utoipa::path(
    post, path = "/events/batch", tag = "events", operation_id = "accept_batch",
    summary = "Accept up to 500 events (1 MB) at once, with per-item acceptance",
    request_body = EventBatchBody,
    responses(
        (status = 202, description = "Queued; each item accepted or rejected with its reasons", body = BatchAccepted),
        EventErrors,
    )
)]
async fn accept_batch(
    State(state): State<Events>,
    request: Request,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
    let body = json_bytes(&state, request).await?;
    let payloads = batch_items(&body, state.settings.max_batch_events)?;
    if payloads.is_empty() {
        return Err(ApiError::validation("a batch holds at least one event"));
    }
    if let Err(error) = state.schemas.refresh_if_stale(&state.db).await {
        tracing::warn!(%error, "could not reload event schemas; checking against the loaded ones");
    }
    let received_at = state.clock.now_millis();
    let rules = state.rules(received_at);
    let mut items = Vec::with_capacity(payloads.len());
    let mut queued = Vec::with_capacity(payloads.len());
    for (index, payload) in payloads.into_iter().enumerate() {
        let parsed = Payload::parse(payload.get()).map_err(|e| malformed(&e))?;
        let id = event_id(parsed.value());
        let rejected = validate::check(parsed, &rules).err();
        items.push(BatchItem {
            index: index as u64,
            id: id.clone(),
            status: if rejected.is_some() { "rejected" } else { "accepted" },
            reasons: rejected.clone(),
        });
        queued.push(QueuedEvent { id: id.into(), payload, rejected });
    }
    ingest::publish(&state, &QueuedEvents { received_at, items: queued }).await?;
    let rejected = items.iter().filter(|item| item.reasons.is_some()).count() as u64;
    let accepted = items.len() as u64 - rejected;
    Ok((StatusCode::ACCEPTED, Json(BatchAccepted { accepted, rejected, items })))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Session id, any spelling of its UUID (empty: no filter)
    session: Option<String>,
    /// Empty: no filter
    category: Option<String>,
    /// Empty: no filter
    name: Option<String>,
    /// Earliest timestamp (RFC 3339, or without zone: UTC)
    #[serde(rename = "timestamp__gte")]
    #[param(format = DateTime)]
    timestamp_gte: Option<String>,
    /// Latest timestamp (RFC 3339, or without zone: UTC)
    #[serde(rename = "timestamp__lte")]
    #[param(format = DateTime)]
    timestamp_lte: Option<String>,
    /// Page size (default 50)
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Cursor from the Link header (empty: none)
    #[param(pattern = r"^(-?[0-9]{1,18}_-?[0-9]{1,18})?$")]
    after: Option<String>,
}

fn timestamp_filter(name: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|raw| parse_timestamp(raw).map_err(|message| ApiError::bad_request(format!("{name}: {message}"))))
        .transpose()
}

impl Listed for EventView {
    const PAGE: &'static str = "A page of events";
}

/// `GET /events/`: filtered by `session`, `category`, `name`, `timestamp__gte` and
/// `timestamp__lte` (an empty session, category or name is no filter; a timestamp filter must be
/// a timestamp, as the OpenAPI document declares it), ordered by timestamp, paged by `limit` and the `after` cursor of the
/// `Link` header.
#[utoipa::path(
    get, path = "/events/", tag = "events", operation_id = "list_events",
    summary = "List stored events by timestamp, filtered, in keyset pages",
    params(ListQuery),
    responses(Page<EventView>, EventErrors)
)]
async fn list(
    State(state): State<Events>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Page<EventView>, ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let after = present(query.after.as_deref())
        .map(|raw| {
            raw.rsplit_once('_')
                .and_then(|(ts, seq)| Some((ts.parse::<i64>().ok()?, seq.parse::<i64>().ok()?)))
                .ok_or_else(|| ApiError::bad_request("after must be a cursor from a Link header"))
        })
        .transpose()?;
    // An empty text filter is no filter, as django-filter (behind the seed) takes it.
    let session = present(query.session.as_deref()).map(|id| normalize_session_id(id).into_owned());
    let category = present(query.category.as_deref());
    let name = present(query.name.as_deref());
    let timestamp_gte = query.timestamp_gte.as_deref();
    let timestamp_lte = query.timestamp_lte.as_deref();
    let filter = EventFilter {
        session: session.clone(),
        category: category.map(str::to_owned),
        name: name.map(str::to_owned),
        timestamp_gte: timestamp_filter("timestamp__gte", timestamp_gte)?,
        timestamp_lte: timestamp_filter("timestamp__lte", timestamp_lte)?,
        after,
        limit: limit + 1,
    };
    let rows = store::list_events(&state.db, &filter).await?;
    Ok(Page::new(
        "/events/",
        &[
            ("session", session.as_deref()),
            ("category", category),
            ("name", name),
            ("timestamp__gte", timestamp_gte),
            ("timestamp__lte", timestamp_lte),
        ],
        limit,
        rows,
        |row| format!("{}_{}", row.event.timestamp, row.seq),
    ))
}

fn event_not_found() -> ApiError {
    ApiError::not_found("event not found")
}

#[utoipa::path(
    get, path = "/events/{id}/", tag = "events", operation_id = "show_event",
    summary = "A stored event",
    params(("id" = String, Path)),
    responses((status = 200, description = "The event", body = EventView), EventErrors)
)]
async fn show(State(state): State<Events>, PathParams(id): PathParams<String>) -> Result<Json<EventView>, ApiError> {
    let row = store::get_event(&state.db, &id).await?.ok_or_else(event_not_found)?;
    Ok(Json(row.into()))
}

/// What `PUT` and `PATCH /events/{id}/` take: the event's id and the body as written.
type EventEdit = Edit<Events, String, Box<RawValue>>;

/// Attempts at an update that keeps losing to concurrent ones before answering 409.
const UPDATE_ATTEMPTS: usize = 16;

/// `PUT /events/{id}/`: replaces the event's session, category, name, data and timestamp.
#[utoipa::path(
    put, path = "/events/{id}/", tag = "events", operation_id = "replace_event",
    summary = "Replace an event's session, category, name, data and timestamp (validated again)",
    params(("id" = String, Path)),
    request_body = EventBody,
    responses((status = 200, description = "Replaced", body = EventView), EventErrors)
)]
async fn replace(Edit { state, path: id, body }: EventEdit) -> Result<Json<EventView>, Refusal> {
    // An unknown id is a 404 whatever the body holds.
    store::get_event(&state.db, &id).await?.ok_or_else(event_not_found)?;
    let payload = Payload::parse(body.get()).map_err(|e| malformed(&e))?;
    let event = validate_update(&state, payload).await?;
    update_retrying(&state, &id, |_| async { Ok(event.clone()) }).await
}

/// `PATCH /events/{id}/`: replaces the fields present in the body (`data` as a whole, not key
/// by key) and validates the result. A patch applies to the version it read, or is redone on
/// the newer one, so concurrent patches of different fields all land.
#[utoipa::path(
    patch, path = "/events/{id}/", tag = "events", operation_id = "update_event",
    summary = "Replace the fields present (the result is validated again)",
    params(("id" = String, Path)),
    request_body = EventPatch,
    responses((status = 200, description = "Updated", body = EventView), EventErrors)
)]
async fn update(Edit { state, path: id, body }: EventEdit) -> Result<Json<EventView>, Refusal> {
    // The fields as the client wrote them, so a patched `data` is stored as its text.
    let Ok(patch) = serde_json::from_str::<HashMap<String, &RawValue>>(body.get()) else {
        return Err(ApiError::validation("a PATCH body must be a JSON object").into());
    };
    let state = &state;
    let patch = &patch;
    update_retrying(state, &id, move |current| async move {
        let mut merged = editable_fields(current);
        for field in ["session", "category", "name", "data", "timestamp"] {
            if let Some(value) = patch.get(field) {
                merged.insert(field, Cow::Borrowed(*value));
            }
        }
        let text = serde_json::to_string(&merged).expect("raw JSON members serialise");
        let payload = Payload::parse(&text).map_err(|e| malformed(&e))?;
        validate_update(state, payload).await
    })
    .await
}

/// Stores what `edit` makes of the event as it is now, unless a concurrent update changed it
/// meanwhile: then `edit` is redone on the newer version, up to [`UPDATE_ATTEMPTS`] times
/// before a 409.
async fn update_retrying<Edit>(
    state: &Events,
    id: &str,
    mut edit: impl FnMut(EventRow) -> Edit,
) -> Result<Json<EventView>, Refusal>
where
    Edit: Future<Output = Result<ValidEvent, Refusal>>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let current = store::get_event(&state.db, id).await?.ok_or_else(event_not_found)?;
        let version = current.version;
        let event = edit(current).await?;
        if store::update_event(&state.db, id, version, &event, state.clock.now_millis()).await? {
            return reread(state, id).await;
        }
    }
    Err(ApiError::new(ErrorCode::Conflict, "the event kept changing while being updated; retry").into())
}

async fn reread(state: &Events, id: &str) -> Result<Json<EventView>, Refusal> {
    let row = store::get_event(&state.db, id).await?.ok_or_else(event_not_found)?;
    Ok(Json(row.into()))
}

/// The fields an update may change, as a client would send them; `data` is the stored text.
fn editable_fields<'a>(row: EventRow) -> BTreeMap<&'static str, Cow<'a, RawValue>> {
    let row = row.event;
    let raw = |value: Value| Cow::Owned(serde_json::value::to_raw_value(&value).expect("a JSON value serialises"));
    BTreeMap::from([
        ("session", raw(json!({"id": row.session_id}))),
        ("category", raw(Value::String(row.category))),
        ("name", raw(Value::String(row.name))),
        ("data", Cow::Owned(row.data)),
        ("timestamp", raw(Value::String(format_timestamp(row.timestamp)))),
    ])
}

/// Every rule of ingestion, the session's existence included, checked now: 422 with every
/// reason when the update is invalid.
async fn validate_update(state: &Events, payload: Payload<'_>) -> Result<ValidEvent, Refusal> {
    if let Err(error) = state.schemas.refresh_if_stale(&state.db).await {
        tracing::warn!(%error, "could not reload event schemas; checking against the loaded ones");
    }
    let session_id = session_id_of(payload.value()).map(Cow::into_owned);
    let outcome = validate::check(payload, &state.rules(state.clock.now_millis()));
    let mut reasons = match outcome {
        Ok(event) if session_exists(state, &event.session_id).await? => return Ok(event),
        Ok(event) => vec![validate::session_unknown(&event.session_id)],
        Err(mut reasons) => {
            if let Some(session_id) = session_id.filter(|_| !reasons.iter().any(|r| r.pointer.starts_with("/session")))
                && !session_exists(state, &session_id).await?
            {
                reasons.push(validate::session_unknown(&session_id));
            }
            reasons
        }
    };
    reasons.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    Err(Refusal::Invalid(Invalid { message: "the event is invalid".to_owned(), reasons }))
}

async fn session_exists(state: &Events, id: &str) -> Result<bool, ApiError> {
    if state.sessions.contains(id) {
        return Ok(true);
    }
    let mut conn = state.db.pool().acquire().await?;
    let found = store::existing_sessions(&mut conn, &[id]).await?;
    // Exactly this id: MySQL's collation also matches it with trailing spaces added.
    let exists = found.contains(id);
    state.sessions.extend(found);
    Ok(exists)
}

#[utoipa::path(
    delete, path = "/events/{id}/", tag = "events", operation_id = "delete_event",
    summary = "Delete an event",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), EventErrors)
)]
async fn remove(State(state): State<Events>, PathParams(id): PathParams<String>) -> Result<StatusCode, ApiError> {
    if store::delete_event(&state.db, &id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(event_not_found()) }
}
