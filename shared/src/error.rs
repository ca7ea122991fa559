//! The one JSON error body of chatmesh and the one table from error code to HTTP status.
//!
//! Every error a client sees is `{"error":{"code":"NOT_FOUND","message":"application not found"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Every error code chatmesh answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON syntax, a bad query string.
    BadRequest,
    /// A well-formed body whose fields fail validation.
    ValidationFailed,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// A backend is unreachable; the request may be retried.
    ServiceUnavailable,
    Internal,
    /// The request (its head or body) did not arrive in time.
    RequestTimeout,
    /// The request head is over the size limit.
    HeadersTooLarge,
    /// The gateway's upstream failed to answer.
    BadGateway,
    /// The gateway's upstream did not answer in time.
    GatewayTimeout,
}

impl ErrorCode {
    /// The table: one HTTP status per code.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The code as clients read it in `error.code` (the serde name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Conflict => "CONFLICT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Self::BadGateway => "BAD_GATEWAY",
            Self::GatewayTimeout => "GATEWAY_TIMEOUT",
        }
    }

    /// Every code, for tests and documents that list them.
    pub const ALL: [ErrorCode; 15] = [
        Self::BadRequest,
        Self::ValidationFailed,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ServiceUnavailable,
        Self::Internal,
        Self::RequestTimeout,
        Self::HeadersTooLarge,
        Self::BadGateway,
        Self::GatewayTimeout,
    ];
}

/// An error on its way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

/// The one JSON error body: `{"error":{"code":"NOT_FOUND","message":"application not found"}}`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "NOT_FOUND", "message": "application not found"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of the error codes; the HTTP status follows from it.
    #[schema(example = "NOT_FOUND")]
    pub code: ErrorCode,
    /// Human-readable, lowercase, no trailing period.
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// A backend failed: logged in full here, answered as 503 without internals.
    pub fn backend(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(ErrorCode::ServiceUnavailable, format!("{context}: backend unavailable, retry later"))
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        (status, Json(ErrorBody { error: ErrorDetail { code: self.code, message: self.message } })).into_response()
    }
}

impl From<crate::backends::BackendError> for ApiError {
    fn from(error: crate::backends::BackendError) -> Self {
        Self::backend("storage", &error)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::backend("database", &error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_error_code_is_a_4xx_and_backend_codes_are_5xx() {
        use ErrorCode::*;
        // The backend (and gateway) codes are the only 5xx; every other code is the client's.
        for code in ErrorCode::ALL {
            let backend = matches!(code, ServiceUnavailable | Internal | BadGateway | GatewayTimeout);
            assert_eq!(code.status().is_server_error(), backend, "{code:?}");
            assert_eq!(code.status().is_client_error(), !backend, "{code:?}");
        }
        assert_eq!(serde_json::to_string(&ValidationFailed).unwrap(), "\"VALIDATION_FAILED\"");
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()), "{code:?}");
        }
        assert_eq!((BadGateway.status().as_u16(), GatewayTimeout.status().as_u16()), (502, 504));
    }
}
