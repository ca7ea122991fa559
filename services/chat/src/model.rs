//! The JSON shapes clients send and see, the paths they name, and the validation of the fields
//! they send; each with its OpenAPI schema or parameters.

use serde::{Deserialize, Serialize};
use shared::ApiError;

/// Longest application or chat name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({"type": "application", "application_token": "3f2b8c1e-9a4d-4e7b-b1c2-5d6e7f809a1b",
    "application_name": "My App", "chats_count": 0, "created_at": "2024-01-01T00:00:00.000Z",
    "updated_at": "2024-01-01T00:00:00.000Z"}))]
pub struct ApplicationView {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "application")]
    pub kind: &'static str,
    pub application_token: String,
    pub application_name: String,
    pub chats_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({"type": "chat", "application_token": "3f2b8c1e-9a4d-4e7b-b1c2-5d6e7f809a1b",
    "chat_number": 1, "chat_name": "general", "messages_count": 0, "created_at": "2024-01-01T00:00:00.000Z",
    "updated_at": "2024-01-01T00:00:00.000Z"}))]
pub struct ChatView {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "chat")]
    pub kind: &'static str,
    pub application_token: String,
    pub chat_number: i64,
    pub chat_name: String,
    pub messages_count: i64,
    pub created_at: String,
    pub updated_at: String,
    /// The messages above the read position of the user a list was asked for (`?user_id=`),
    /// deleted ones left out; only then present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<i64>,
}

/// `PUT .../chats/:number/read`: the message a user has read up to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"user_id": "user-42", "message_number": 17}))]
pub struct ReadBody {
    /// The app's own id of its user (1 to 255 characters)
    pub user_id: String,
    /// The last message the user has read: at most the chat's last message number
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "integer")]
    pub message_number: i64,
}

/// An integer as JSON Schema counts them: `17` or `17.0`, not `17.5`.
fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(value) = number.as_i64() {
        return Ok(value);
    }
    match number.as_f64() {
        Some(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => Ok(value as i64),
        _ => Err(serde::de::Error::custom(format!("expected an integer, got {number}"))),
    }
}

/// A user's read position in a chat and the messages above it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({"user_id": "user-42", "chat_number": 1, "last_read": 17, "unread": 3}))]
pub struct UnreadView {
    pub user_id: String,
    pub chat_number: i64,
    /// The message number read up to (0: none)
    pub last_read: i64,
    /// Messages above it, deleted ones left out
    pub unread: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({"type": "message", "application_token": "3f2b8c1e-9a4d-4e7b-b1c2-5d6e7f809a1b",
    "chat_number": 1, "message_number": 1, "message_content": "Hello, world", "created_at": "2024-01-01T00:00:00.000Z",
    "updated_at": "2024-01-01T00:00:00.000Z"}))]
pub struct MessageView {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "message")]
    pub kind: &'static str,
    pub application_token: String,
    pub chat_number: i64,
    pub message_number: i64,
    pub message_content: String,
    pub created_at: String,
    pub updated_at: String,
}

impl ApplicationView {
    /// The view of an application row; the stamps are milliseconds since the epoch.
    pub fn new(token: String, name: String, chats_count: i64, created_at: i64, updated_at: i64) -> Self {
        Self {
            kind: "application",
            application_token: token,
            application_name: name,
            chats_count,
            created_at: shared::rfc3339_millis(created_at),
            updated_at: shared::rfc3339_millis(updated_at),
        }
    }
}

impl ChatView {
    /// The view of a chat of the application `token`; the stamps are milliseconds since the epoch.
    pub fn new(
        token: String,
        number: i64,
        name: String,
        messages_count: i64,
        created_at: i64,
        updated_at: i64,
    ) -> Self {
        Self {
            kind: "chat",
            application_token: token,
            chat_number: number,
            chat_name: name,
            messages_count,
            created_at: shared::rfc3339_millis(created_at),
            updated_at: shared::rfc3339_millis(updated_at),
            unread_count: None,
        }
    }

    /// The same view with the unread count of the user it was asked for.
    pub fn with_unread(self, unread: i64) -> Self {
        Self { unread_count: Some(unread), ..self }
    }
}

impl MessageView {
    /// The view of a message of chat `chat_number` of the application `token`; the stamps are
    /// milliseconds since the epoch.
    pub fn new(
        token: String,
        chat_number: i64,
        number: i64,
        content: String,
        created_at: i64,
        updated_at: i64,
    ) -> Self {
        Self {
            kind: "message",
            application_token: token,
            chat_number,
            message_number: number,
            message_content: content,
            created_at: shared::rfc3339_millis(created_at),
            updated_at: shared::rfc3339_millis(updated_at),
        }
    }
}

/// Creates or renames an application.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ApplicationBody {
    /// Not blank, at most 255 characters.
    #[schema(example = "My App", min_length = 1, max_length = 255, pattern = r"\S")]
    pub application_name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ApplicationPatch {
    /// Not blank, at most 255 characters.
    #[schema(example = "My App", min_length = 1, max_length = 255, pattern = r"\S")]
    pub application_name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatBody {
    /// Not blank, at most 255 characters.
    #[schema(example = "general", min_length = 1, max_length = 255, pattern = r"\S")]
    pub chat_name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatPatch {
    /// Not blank, at most 255 characters.
    #[schema(example = "general", min_length = 1, max_length = 255, pattern = r"\S")]
    pub chat_name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessageBody {
    /// Not blank, at most 10 000 characters.
    #[schema(example = "Hello, world", min_length = 1, max_length = 10000, pattern = r"\S")]
    pub message_content: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessagePatch {
    /// Not blank, at most 10 000 characters.
    #[schema(example = "Hello, world", min_length = 1, max_length = 10000, pattern = r"\S")]
    pub message_content: Option<String>,
}

/// One search hit, ranked by relevance then newest.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = SearchHitDoc, example = json!({"number": 1, "content": "Hello, world"}))]
pub struct SearchHitView {
    pub number: i64,
    pub content: String,
}

impl From<shared::backends::search::SearchHit> for SearchHitView {
    fn from(hit: shared::backends::search::SearchHit) -> Self {
        Self { number: hit.number, content: hit.content }
    }
}

/// The path of an application's routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ApplicationPath {
    /// Application token
    pub token: String,
}

/// The path of a chat's routes. Numbers stay text until [`path_number`] reads them, so one
/// that cannot exist is a 404 like one that does not.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChatPath {
    /// Application token
    pub token: String,
    /// Chat number
    #[param(value_type = i64)]
    pub chat_number: String,
}

/// The path of a message's routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MessagePath {
    /// Application token
    pub token: String,
    /// Chat number
    #[param(value_type = i64)]
    pub chat_number: String,
    /// Message number
    #[param(value_type = i64)]
    pub message_number: String,
}

/// A required text field: not blank, at most `max` characters. Returns it trimmed.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::validation(format!("{field} must not be blank")));
    }
    if trimmed.chars().count() > max {
        return Err(ApiError::validation(format!("{field} must be at most {max} characters")));
    }
    Ok(trimmed.to_owned())
}

/// A chat or message number from a path: a positive integer, or the resource cannot exist.
pub fn path_number(kind: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::not_found(format!("{kind} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_are_trimmed_and_bounded() {
        assert_eq!(required_text("f", "  hi ", 5).unwrap(), "hi");
        assert!(required_text("f", "   ", 5).is_err());
        assert!(required_text("f", "ééééé", 5).is_ok());
        assert!(required_text("f", "éééééé", 5).is_err());
    }

    #[test]
    fn path_numbers_are_positive_integers() {
        assert_eq!(path_number("chat", "12").unwrap(), 12);
        for bad in ["0", "-1", "abc", "1.5", "99999999999999999999"] {
            assert!(path_number("chat", bad).is_err(), "{bad}");
        }
    }
}
