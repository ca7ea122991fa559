//! `/errors/`: the events the consumer (or the batch endpoint) refused, each with the raw
//! payload as sent and every reason. An error record has the id the event was accepted under.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shared::ApiError;
use shared::http::QueryParams;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{EventErrors, Listed, Page, PathParams, SeqPage, both, present};
use crate::Events;
use crate::model::Reason;
use crate::store::{self, ErrorRow};
use crate::time::format_timestamp;
use crate::validate::normalize_session_id;

pub fn routes() -> OpenApiRouter<Events> {
    let router = both(OpenApiRouter::new(), routes!(list));
    both(router, routes!(show))
}

/// An error record: a refused event.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EventError)]
struct ErrorView {
    /// The id the event was accepted under.
    id: String,
    /// The session the payload named, if it named one.
    session: Option<String>,
    /// The event exactly as sent.
    #[schema(value_type = Value)]
    payload: Box<RawValue>,
    reasons: Vec<Reason>,
    received_at: String,
    created_at: String,
}

impl From<ErrorRow> for ErrorView {
    fn from(row: ErrorRow) -> Self {
        let payload = raw_payload(row.payload);
        Self {
            id: row.id,
            session: row.session_id,
            payload,
            reasons: row.reasons,
            received_at: format_timestamp(row.received_at),
            created_at: format_timestamp(row.created_at),
        }
    }
}

/// The stored payload text as it is, or (should it somehow not be JSON) a JSON string holding it.
fn raw_payload(stored: String) -> Box<RawValue> {
    serde_json::from_str::<Box<RawValue>>(&stored)
        .unwrap_or_else(|_| serde_json::value::to_raw_value(&stored).expect("a string serialises as JSON"))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SessionFilter {
    /// Only those naming this session, any spelling of its UUID (empty: no filter)
    session: Option<String>,
}

impl Listed for ErrorView {
    const PAGE: &'static str = "A page of error records";
}

/// `GET /errors/`, oldest first, optionally for one `session`, paged by `limit` and `after`.
/// The payload is the stored text itself, never re-serialised (key order, `1.10`, integers
/// beyond f64 all kept).
#[utoipa::path(
    get, path = "/errors/", tag = "errors", operation_id = "list_errors",
    summary = "List error records, oldest first",
    params(SessionFilter, SeqPage),
    responses(Page<ErrorView>, EventErrors)
)]
async fn list(
    State(state): State<Events>,
    QueryParams(filter): QueryParams<SessionFilter>,
    QueryParams(page): QueryParams<SeqPage>,
) -> Result<Page<ErrorView>, ApiError> {
    let (limit, after) = page.read()?;
    // An empty filter value is no filter, as django-filter (behind the seed) takes it.
    let session = present(filter.session.as_deref()).map(normalize_session_id);
    let rows = store::list_errors(&state.db, session.as_deref(), after, limit + 1).await?;
    Ok(Page::new("/errors/", &[("session", session.as_deref())], limit, rows, |row| row.seq.to_string()))
}

#[utoipa::path(
    get, path = "/errors/{id}/", tag = "errors", operation_id = "show_error",
    summary = "An error record (its id is the one the event was accepted under)",
    params(("id" = String, Path)),
    responses((status = 200, description = "The error record", body = ErrorView), EventErrors)
)]
async fn show(State(state): State<Events>, PathParams(id): PathParams<String>) -> Result<Json<ErrorView>, ApiError> {
    let row = store::get_error(&state.db, &id).await?.ok_or_else(|| ApiError::not_found("error not found"))?;
    Ok(Json(row.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_served_as_stored_or_as_a_string_when_not_json() {
        let stored = r#"{"b": 1.10, "a": 123456789012345678901234567890}"#;
        assert_eq!(raw_payload(stored.to_owned()).get(), stored);
        assert_eq!(raw_payload("{not json".to_owned()).get(), r#""{not json""#);
    }
}
