//! The types the other modules share: a refused event's [`Reason`], a [`ValidEvent`], and the
//! shapes of the requests [`crate::validate`] and [`crate::user`] check. Those read any JSON and
//! report every rule it breaks, so the request shapes here are what the OpenAPI document says a
//! valid request looks like, not types a body is parsed into.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

/// One reason an event was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = EventReason)]
pub struct Reason {
    /// `missing_field`, `invalid_type`, `blank`, `too_long`, `not_an_object`, `data_not_object`,
    /// `data_empty`, `timestamp_invalid`, `timestamp_in_future`, `session_unknown`,
    /// `schema_violation`, `unknown_event_type` (user events: also `invalid_value`).
    #[schema(example = "data_empty")]
    pub code: String,
    /// RFC 6901 pointer into the payload ("" for the payload itself).
    #[schema(example = "/data")]
    pub pointer: String,
    pub message: String,
}

impl Reason {
    pub fn new(code: &str, pointer: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), pointer: pointer.to_owned(), message: message.into() }
    }
}

/// Records why a field fails a rule and gives no value for it, so a check goes on to the other
/// fields and reports every reason at once.
pub fn refuse<T>(reasons: &mut Vec<Reason>, code: &str, pointer: &str, message: impl Into<String>) -> Option<T> {
    reasons.push(Reason::new(code, pointer, message));
    None
}

/// An event that passed [`crate::validate::check`].
#[derive(Clone, Debug)]
pub struct ValidEvent {
    pub session_id: String,
    pub category: String,
    pub name: String,
    /// The `data` object exactly as the client wrote it: what is stored and served.
    pub data: Box<RawValue>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub client_event_id: Option<String>,
}

/// `{"id": "<session uuid>"}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SessionRef {
    #[schema(example = "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058")]
    pub id: String,
}

/// An event as a client sends it. `POST /events/` accepts any JSON and records what is wrong
/// with it; these are the rules the consumer checks.
#[derive(ToSchema)]
#[schema(example = json!({"session": {"id": "9ab1b579-7021-4e0c-8ea1-2ac9f52f3058"}, "category": "page interaction",
    "name": "pageview", "data": {"host": "www.consumeraffairs.com", "path": "/"}, "timestamp": "2021-06-15 00:00:00"}))]
pub struct EventBody {
    /// A session created by `POST /sessions/` (a bare string id is accepted too).
    pub session: SessionRef,
    /// Not blank, at most 200 characters.
    #[schema(example = "page interaction", min_length = 1, max_length = 200)]
    pub category: String,
    /// Not blank, at most 200 characters.
    #[schema(example = "pageview", min_length = 1, max_length = 200)]
    pub name: String,
    /// A non-empty object, valid against the schema of `(category, name)` when one is registered.
    #[schema(schema_with = event_data)]
    pub data: Value,
    /// RFC 3339, or a date-time without zone (UTC), or a date; not in the future.
    #[schema(example = "2021-06-15 00:00:00")]
    pub timestamp: String,
    /// Optional: a retry with the same one in the same session lands on the same event.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    pub client_event_id: Option<String>,
}

/// The fields a PATCH replaces; the result is validated as a whole.
#[derive(ToSchema)]
pub struct EventPatch {
    #[schema(nullable = false)]
    pub session: Option<SessionRef>,
    #[schema(nullable = false, min_length = 1, max_length = 200, pattern = r"\S")]
    pub category: Option<String>,
    #[schema(nullable = false, min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(schema_with = event_data)]
    pub data: Option<Value>,
    #[schema(nullable = false)]
    pub timestamp: Option<String>,
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

/// A user session's start or end.
#[derive(ToSchema)]
#[schema(as = UserEvent, example = json!({"user_id": "d6313e1fb7d247a6a034e2aadc30ab30", "country": "TIN", "event": "start",
    "session_id": "674606b1-2270-4285-928f-eef4a6b90a60", "ts": "2019-04-16T20:40:50"}))]
pub struct UserEventBody {
    /// Not blank, at most 128 characters.
    pub user_id: String,
    /// Optional; the session's country is its start's.
    pub country: Option<String>,
    pub event: UserEventKind,
    /// Not blank, at most 128 characters.
    pub session_id: String,
    /// RFC 3339, or a date-time without zone (UTC).
    pub ts: String,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserEventKind {
    Start,
    End,
}

/// A JSON array of any values, described: the batch routes read each item on its own.
fn batch_of_any(min: Option<usize>, max: usize, description: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(SchemaType::AnyValue))
        .min_items(min)
        .max_items(Some(max))
        .description(Some(description))
        .build()
        .into()
}

/// `POST /events/batch`: 1 to 500 JSON values (1 MB at most), each accepted or rejected on its
/// own; valid events look like [`EventBody`].
pub struct EventBatchBody;

impl PartialSchema for EventBatchBody {
    fn schema() -> RefOr<Schema> {
        batch_of_any(
            Some(1),
            500,
            "1 to 500 events (1 MB at most); each is accepted or rejected on its own (see EventBody)",
        )
    }
}

impl ToSchema for EventBatchBody {}

/// `POST /user/batches`: up to 10,000 JSON values (4 MB), each stored or reported on its own;
/// valid ones look like `UserEvent`.
pub struct UserBatchBody;

impl PartialSchema for UserBatchBody {
    fn schema() -> RefOr<Schema> {
        batch_of_any(
            None,
            10_000,
            "Up to 10,000 user events (4 MB); each is stored or reported by index (see UserEvent)",
        )
    }
}

impl ToSchema for UserBatchBody {}
