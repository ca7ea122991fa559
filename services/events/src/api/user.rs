//! `/user/...` (seed 003): batches of session start and end events, the session starts of the
//! last days per country, and a user's last complete sessions. Both queries take an optional
//! `as_of` (a timestamp) so historical data can be asked about as of any moment; without it
//! nothing is cut off at the server's clock, since clients stamp `ts` with their own clocks.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::ApiError;
use shared::http::QueryParams;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventErrors, batch_items, json_bytes, malformed};
use crate::Events;
use crate::model::{Reason, UserBatchBody};
use crate::time::parse_timestamp;
use crate::user::{self, SessionView, StartView};

/// Longest window of `last-events`, in days.
pub const MAX_DAYS: i64 = 36_500;
const DAY_MILLIS: i64 = 86_400_000;

pub fn queries() -> OpenApiRouter<Events> {
    OpenApiRouter::new().routes(routes!(last_events)).routes(routes!(last_sessions))
}

/// `POST /user/batches`, under its own body limit.
pub fn batch_routes() -> OpenApiRouter<Events> {
    OpenApiRouter::new().routes(routes!(batches))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UserBatchRejection)]
struct RejectedItem {
    index: u64,
    reasons: Vec<Reason>,
}

/// The answer to `POST /user/batches`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UserBatchOutcome, example = json!({"accepted": 8, "duplicates": 0, "rejected": 0, "errors": []}))]
struct BatchOutcome {
    /// Events stored now.
    accepted: u64,
    /// Events whose `(session_id, event)` was already stored (or came twice in the batch).
    duplicates: u64,
    rejected: u64,
    errors: Vec<RejectedItem>,
}

/// `POST /user/batches`: stores the valid events (duplicates ignored) and answers how many
/// were stored, were duplicates, or were rejected (with every reason, by index).
#[utoipa::path(
    post, path = "/user/batches", tag = "user sessions", operation_id = "user_batches",
    summary = "Store start and end events (duplicates ignored); invalid ones are reported by index",
    request_body = UserBatchBody,
    responses((status = 200, description = "Stored", body = BatchOutcome), EventErrors)
)]
async fn batches(State(state): State<Events>, request: Request) -> Result<Json<BatchOutcome>, ApiError> {
    let body = json_bytes(&state, request).await?;
    let items = batch_items(&body, state.settings.max_user_batch_events)?;
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let value: Value = serde_json::from_str(item.get()).map_err(|error| malformed(&error))?;
        match user::parse(&value) {
            Ok(event) => events.push(event),
            Err(reasons) => errors.push(RejectedItem { index: index as u64, reasons }),
        }
    }
    let counts = user::ingest(&state, &events, state.clock.now_millis()).await?;
    let rejected = errors.len() as u64;
    Ok(Json(BatchOutcome { accepted: counts.accepted, duplicates: counts.duplicates, rejected, errors }))
}

fn as_of(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|raw| parse_timestamp(raw).map_err(|message| ApiError::bad_request(format!("as_of: {message}"))))
        .transpose()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LastEventsQuery {
    #[param(value_type = i64, required = true, minimum = 1, maximum = 36500)]
    days: Option<String>,
    /// End of the window; without it the window starts `days` days before now and has no end (starts stamped later than now included)
    #[param(format = DateTime)]
    as_of: Option<String>,
}

/// `GET /user/last-events?days=X`: `{"<country>": [start, ...], ...}` with every country seen,
/// each with its session starts of the X days up to `as_of`, newest first. Without `as_of`, the
/// starts from X days before now on, including any stamped later than now.
#[utoipa::path(
    get, path = "/user/last-events", tag = "user sessions", operation_id = "user_last_events",
    summary = "For every country seen, its session starts of the last `days` days, newest first",
    description = "Countries without starts in the window have an empty list; starts without a country are listed under `unknown`.",
    params(LastEventsQuery),
    responses((status = 200, description = "Starts by country", body = BTreeMap<String, Vec<StartView>>), EventErrors)
)]
async fn last_events(
    State(state): State<Events>,
    QueryParams(query): QueryParams<LastEventsQuery>,
) -> Result<Json<BTreeMap<String, Vec<StartView>>>, ApiError> {
    let days = query
        .days
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("days is required"))?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|days| (1..=MAX_DAYS).contains(days))
        .ok_or_else(|| ApiError::bad_request(format!("days must be an integer from 1 to {MAX_DAYS}")))?;
    let to = as_of(query.as_of.as_deref())?;
    let from = to.unwrap_or_else(|| state.clock.now_millis()).saturating_sub(days * DAY_MILLIS);
    Ok(Json(user::starts_by_country(&state.db, from, to).await?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LastSessionsQuery {
    #[param(value_type = String, required = true, pattern = r"\S")]
    user_id: Option<String>,
    /// Sessions complete by then (both events at or before it); without it every session whose start and end have arrived
    #[param(format = DateTime)]
    as_of: Option<String>,
}

/// `GET /user/last-sessions-user?user_id=`: the user's last 20 sessions complete by `as_of`
/// (without it: complete at all, whatever their timestamps), newest first.
#[utoipa::path(
    get, path = "/user/last-sessions-user", tag = "user sessions", operation_id = "user_last_sessions",
    summary = "A user's last 20 complete sessions, newest first",
    params(LastSessionsQuery),
    responses((status = 200, description = "The sessions", body = Vec<SessionView>), EventErrors)
)]
async fn last_sessions(
    State(state): State<Events>,
    QueryParams(query): QueryParams<LastSessionsQuery>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let user_id = query
        .user_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("user_id is required"))?;
    let as_of = as_of(query.as_of.as_deref())?;
    Ok(Json(user::last_complete_sessions(&state.db, user_id, as_of).await?))
}
