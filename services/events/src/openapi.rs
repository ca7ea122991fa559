//! The events service's OpenAPI 3.1 document: the eye's sessions, events, errors and schemas
//! (seed 001) and the user-session routes (seed 003). Each operation is written on its handler
//! in [`crate::api`] and collected by the router; this is the document around them.
//!
//! Routes are documented under the seeds' spelling (`/sessions/`, `/events/{id}/`, ...); each
//! is served without its trailing slash as well.

use shared::openapi::ErrorBody;
use utoipa::OpenApi;

use crate::api::EventValidationError;
use crate::model::{EventBody, UserEventBody};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "events",
        description = "The eye's sessions, asynchronously validated events and their error store, and user-session batches with per-country starts and last sessions."
    ),
    // The error bodies (the handlers list them through `EventErrors`), and the shapes of a
    // valid event and user event, which the routes read as any JSON.
    components(schemas(ErrorBody, EventValidationError, EventBody, UserEventBody)),
    tags(
        (name = "sessions", description = "Sessions of the eye: the service creates each UUID"),
        (name = "events", description = "Events accepted with 202 and validated by the consumer; stored ones are read, replaced, patched and deleted by id"),
        (name = "errors", description = "Refused events: the raw payload and every reason"),
        (name = "event schemas", description = "The JSON Schema of `data` per (category, name)"),
        (name = "user sessions", description = "Start and end events of user sessions, and their metrics"),
    )
)]
pub struct EventsApi;

/// The document served at `/openapi.json`: every route's operation on this one.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::api::routes(&crate::Settings::default()).into_openapi()
}
