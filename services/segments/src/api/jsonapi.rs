//! What every `/api/v1` route shares: JSON:API documents and the `errors` array, the bearer
//! token check (401 / 403), request documents, and `page[number]` / `page[size]` pagination.
//!
//! Errors: `{"errors":[{"status":"400","code":"VALIDATION","detail":"...","source":{...}}]}`,
//! each problem an [`ErrorCode`] with its status from the one table, spelled as seed 002 does:
//! `VALIDATION` (400) for a bad or invalid request, the table's name for every other code.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{ApiError, ErrorCode};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

use crate::Segments;
use crate::auth::{self, Permission};

pub const MEDIA_TYPE: &str = "application/vnd.api+json";
pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

/// A JSON:API error document: every problem of the request at once.
#[derive(Serialize, ToSchema)]
#[schema(as = JsonApiErrors, example = json!({"errors": [{"status": "404", "code": "NOT_FOUND", "detail": "segment 550e8400-e29b-41d4-a716-446655440001 not found", "source": {"parameter": "id"}}]}))]
pub struct ErrorsBody {
    errors: Vec<Problem>,
}

/// The error answers of the `/api/v1` routes, each a JSON:API error document.
#[derive(IntoResponses)]
pub enum JsonApiErrorResponses {
    /// VALIDATION: missing or invalid fields, malformed JSON, a rule that does not compile, a bad page parameter, or a path parameter that is not UTF-8 once percent-decoded
    #[response(status = 400, content_type = MEDIA_TYPE)]
    BadRequest(ErrorsBody),
    /// UNAUTHORIZED: no valid bearer token
    #[response(status = 401, content_type = MEDIA_TYPE)]
    Unauthorized(ErrorsBody),
    /// FORBIDDEN: the token lacks the route's permission
    #[response(status = 403, content_type = MEDIA_TYPE)]
    Forbidden(ErrorsBody),
    /// NOT_FOUND: no live segment, decision or flag has this id
    #[response(status = 404, content_type = MEDIA_TYPE)]
    NotFound(ErrorsBody),
    /// CONFLICT: the key is taken, a rule names no live segment, or a flag uses the segment
    #[response(status = 409, content_type = MEDIA_TYPE)]
    Conflict(ErrorsBody),
    /// PAYLOAD_TOO_LARGE
    #[response(status = 413, content_type = MEDIA_TYPE)]
    PayloadTooLarge(ErrorsBody),
    /// UNSUPPORTED_MEDIA_TYPE: not JSON (nor XML for a decision)
    #[response(status = 415, content_type = MEDIA_TYPE)]
    UnsupportedMediaType(ErrorsBody),
    /// SERVICE_UNAVAILABLE: the store is unavailable; retry
    #[response(status = 503, content_type = MEDIA_TYPE)]
    ServiceUnavailable(ErrorsBody),
}

/// One entry of the `errors` array; its status is its code's.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = JsonApiError)]
pub struct Problem {
    /// The HTTP status, as a string.
    #[serde(serialize_with = "status_text")]
    #[schema(value_type = String, example = "400")]
    pub status: Code,
    #[schema(example = "VALIDATION")]
    pub code: Code,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ErrorSource>,
}

/// What the problem is about: a JSON pointer into the body, a query parameter, or a header.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ErrorSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "/key")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl ErrorSource {
    fn pointer(pointer: String) -> Self {
        Self { pointer: Some(pointer), ..Self::default() }
    }

    fn parameter(parameter: &str) -> Self {
        Self { parameter: Some(parameter.to_owned()), ..Self::default() }
    }
}

/// An [`ErrorCode`] as seed 002 spells it, with the status of the one table: a bad or invalid
/// request is `VALIDATION`, 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code(pub ErrorCode);

impl Code {
    pub fn status(self) -> StatusCode {
        match self.0 {
            ErrorCode::ValidationFailed => StatusCode::BAD_REQUEST,
            code => code.status(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self.0 {
            ErrorCode::BadRequest | ErrorCode::ValidationFailed => "VALIDATION",
            code => code.as_str(),
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn status_text<S: serde::Serializer>(code: &Code, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(code.status().as_str())
}

/// The codes the `/api/v1` routes answer with.
const ANSWERED: [ErrorCode; 10] = [
    ErrorCode::ValidationFailed,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Conflict,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::ServiceUnavailable,
    ErrorCode::Internal,
];

impl PartialSchema for Code {
    fn schema() -> RefOr<Schema> {
        let codes = ANSWERED.map(|code| Code(code).as_str());
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(codes)).into()
    }
}

impl ToSchema for Code {
    fn name() -> std::borrow::Cow<'static, str> {
        "JsonApiErrorCode".into()
    }
}

/// A JSON:API error response: one or more problems, answered with the first one's status.
#[derive(Clone, Debug)]
pub struct Errors(pub Vec<Problem>);

impl Errors {
    fn one(code: ErrorCode, detail: impl Into<String>, source: Option<ErrorSource>) -> Self {
        Self(vec![Problem { status: Code(code), code: Code(code), detail: detail.into(), source }])
    }

    /// 400 `VALIDATION` about the field at JSON `pointer`.
    pub fn validation(detail: impl Into<String>, pointer: Option<String>) -> Self {
        Self::one(ErrorCode::ValidationFailed, detail, pointer.map(ErrorSource::pointer))
    }

    /// 400 `VALIDATION` about a query parameter.
    pub fn bad_parameter(detail: impl Into<String>, parameter: &str) -> Self {
        Self::one(ErrorCode::ValidationFailed, detail, Some(ErrorSource::parameter(parameter)))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::one(ErrorCode::NotFound, detail, Some(ErrorSource::parameter("id")))
    }

    pub fn conflict(detail: impl Into<String>, pointer: Option<String>) -> Self {
        Self::one(ErrorCode::Conflict, detail, pointer.map(ErrorSource::pointer))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let source = ErrorSource { header: Some("Authorization".to_owned()), ..ErrorSource::default() };
        Self::one(ErrorCode::Unauthorized, detail, Some(source))
    }

    pub fn forbidden(permission: Permission) -> Self {
        Self::one(ErrorCode::Forbidden, format!("this token lacks the {} permission", permission.as_str()), None)
    }

    /// A backend failed: logged in full, answered 503 without internals.
    pub fn backend(context: &str, error: &dyn std::fmt::Display) -> Self {
        Self::from(ApiError::backend(context, error))
    }
}

impl From<ApiError> for Errors {
    fn from(error: ApiError) -> Self {
        Self::one(error.code, error.message, None)
    }
}

impl From<sqlx::Error> for Errors {
    fn from(error: sqlx::Error) -> Self {
        Self::backend("database", &error)
    }
}

impl IntoResponse for Errors {
    fn into_response(self) -> Response {
        let status = self.0.first().map_or(StatusCode::INTERNAL_SERVER_ERROR, |p| p.status.status());
        let mut response = document(status, ErrorsBody { errors: self.0 });
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"chatmesh\""));
        }
        response
    }
}

/// The JSON:API 404 for a path under `/api/v1` that no route matches.
pub async fn no_such_route() -> Errors {
    shared::http::not_found().await.into()
}

/// The JSON:API 405 for an `/api/v1` route asked with a method it does not take (axum adds
/// `Allow`).
pub async fn method_not_allowed() -> Errors {
    shared::http::method_not_allowed().await.into()
}

/// A JSON:API document response.
pub fn document(status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

/// Path parameters of the `/api/v1` routes: a JSON:API 400 `VALIDATION` (never axum's
/// plain-text 400) when they do not decode, as `%FF` does not to UTF-8.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Errors;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let path = axum::extract::Path::<T>::from_request_parts(parts, state).await;
        path.map(|axum::extract::Path(value)| Self(value)).map_err(|rejection| path_errors(&rejection))
    }
}

/// The JSON:API answer to path parameters that do not decode: a 500 when the route itself is
/// wrong, else a 400 `VALIDATION` naming the parameter when it is known.
fn path_errors(rejection: &axum::extract::rejection::PathRejection) -> Errors {
    let problem = shared::http::PathProblem::of(rejection);
    if problem.server_error {
        return ApiError::new(ErrorCode::Internal, problem.detail).into();
    }
    let source = problem.parameter.as_deref().map(ErrorSource::parameter);
    Errors::one(ErrorCode::ValidationFailed, problem.detail, source)
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// A request whose bearer token holds permission `P` (a [`Permission`] as `u32`): 401 without
/// a valid token, 403 without the permission. Checked before the body is read.
pub struct Authorized<const P: u32>;

pub type CanCreateSegments = Authorized<{ Permission::SegmentsCreate as u32 }>;
pub type CanReadSegments = Authorized<{ Permission::SegmentsRead as u32 }>;
pub type CanUpdateSegments = Authorized<{ Permission::SegmentsUpdate as u32 }>;
pub type CanDeleteSegments = Authorized<{ Permission::SegmentsDelete as u32 }>;
pub type CanReadFlags = Authorized<{ Permission::FlagsRead as u32 }>;
pub type CanWriteFlags = Authorized<{ Permission::FlagsWrite as u32 }>;

impl<const P: u32> FromRequestParts<Segments> for Authorized<P> {
    type Rejection = Errors;

    async fn from_request_parts(parts: &mut Parts, state: &Segments) -> Result<Self, Self::Rejection> {
        auth::authorize(state, &parts.headers, auth::permission_of(P)).await?;
        Ok(Self)
    }
}

impl From<auth::Refusal> for Errors {
    fn from(refusal: auth::Refusal) -> Self {
        match refusal {
            auth::Refusal::Unauthenticated(detail) => Errors::unauthorized(detail),
            auth::Refusal::Forbidden(permission) => Errors::forbidden(permission),
            auth::Refusal::Store(error) => error.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request documents

/// A request body: either the flat object of the seed's examples (`{"key","name",...}`) or a
/// JSON:API document (`{"data":{"type","attributes":{...}}}`). Error pointers follow the form
/// the client sent.
#[derive(Clone, Debug, Default)]
pub struct Document {
    pub fields: Map<String, Value>,
    prefix: &'static str,
}

impl Document {
    pub fn from_value(value: Value) -> Result<Self, Errors> {
        let Value::Object(mut object) = value else {
            return Err(Errors::validation("the request body must be a JSON object", Some(String::new())));
        };
        match object.remove("data") {
            None => Ok(Self { fields: object, prefix: "" }),
            Some(Value::Object(mut data)) => match data.remove("attributes") {
                None => Ok(Self { fields: Map::new(), prefix: "/data/attributes" }),
                Some(Value::Object(attributes)) => Ok(Self { fields: attributes, prefix: "/data/attributes" }),
                Some(_) => {
                    Err(Errors::validation("data.attributes must be an object", Some("/data/attributes".to_owned())))
                }
            },
            Some(_) => Err(Errors::validation("data must be an object", Some("/data".to_owned()))),
        }
    }

    /// The JSON pointer of a field as the client sent it.
    pub fn pointer(&self, field: &str) -> String {
        format!("{}/{field}", self.prefix)
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    pub fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }
}

impl<S: Send + Sync> FromRequest<S> for Document {
    type Rejection = Errors;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !shared::http::is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("expected a body with content-type application/json or {MEDIA_TYPE}"),
            )
            .into());
        }
        let bytes = shared::http::read_body(req, state).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Errors::validation(format!("malformed JSON: {e}"), Some(String::new())))?;
        Self::from_value(value)
    }
}

/// Collects every field problem of one request, so a client learns them all at once.
pub struct Checker<'a> {
    pub doc: &'a Document,
    pub problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub fn new(doc: &'a Document) -> Self {
        Self { doc, problems: Vec::new() }
    }

    pub fn fail(&mut self, field: &str, detail: impl Into<String>) {
        self.problems.extend(Errors::validation(detail, Some(self.doc.pointer(field))).0);
    }

    /// A string field: `Ok(None)` when absent (or null when `nullable`).
    pub fn string(&mut self, field: &str, required: bool, nullable: bool, max_chars: usize) -> Option<Option<String>> {
        match self.doc.get(field) {
            None if required => {
                self.fail(field, format!("{field} is required"));
                None
            }
            None => None,
            Some(Value::Null) if nullable => Some(None),
            Some(Value::String(text)) => {
                if required && text.trim().is_empty() {
                    self.fail(field, format!("{field} must not be blank"));
                    None
                } else if text.chars().count() > max_chars {
                    self.fail(field, format!("{field} must be at most {max_chars} characters"));
                    None
                } else {
                    Some(Some(text.clone()))
                }
            }
            Some(_) => {
                self.fail(field, format!("{field} must be a string"));
                None
            }
        }
    }

    /// A string that must hold more than whitespace whenever it is sent, required or not (a
    /// patch may leave it out, not blank it).
    pub fn non_blank(&mut self, field: &str, required: bool, max_chars: usize) -> Option<String> {
        let text = self.string(field, required, false, max_chars)??;
        if text.trim().is_empty() {
            self.fail(field, format!("{field} must not be blank"));
            return None;
        }
        Some(text)
    }

    /// A key: `[A-Za-z0-9_-]+`, at most 200 characters.
    pub fn key(&mut self, field: &str, required: bool) -> Option<String> {
        let key = self.string(field, required, false, 200)??;
        if is_valid_key(&key) {
            Some(key)
        } else {
            self.fail(field, format!("{field} may hold only letters, digits, hyphens and underscores"));
            None
        }
    }

    pub fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.doc.get(field) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.fail(field, format!("{field} must be a boolean"));
                None
            }
        }
    }

    /// An optional integer from 0 to 100; `Some(None)` for an explicit null.
    pub fn percent(&mut self, field: &str) -> Option<Option<i64>> {
        match self.doc.get(field) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(value) => match as_integer(value).filter(|p| (0..=100).contains(p)) {
                Some(percent) => Some(Some(percent)),
                None => {
                    self.fail(field, format!("{field} must be an integer from 0 to 100"));
                    None
                }
            },
        }
    }

    pub fn finish(self) -> Result<(), Errors> {
        if self.problems.is_empty() { Ok(()) } else { Err(Errors(self.problems)) }
    }
}

/// `[A-Za-z0-9_-]+`, at most 200 characters: segment keys, legacy slugs and flag keys.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 200 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Keys the legacy routes use as path segments (`/segments/users`), so no segment may take
/// them by either route family: a legacy client could not reach it.
const RESERVED_KEYS: [&str; 1] = ["users"];

pub fn is_reserved_key(key: &str) -> bool {
    RESERVED_KEYS.contains(&key)
}

/// An integral JSON number within JavaScript's safe range (|n| < 2^53) as its integer text:
/// `7`, and `7.0` too (JSON does not tell them apart; JSON Schema's `integer` accepts both).
/// Larger ids are sent as strings.
pub fn integer_text(n: &serde_json::Number) -> Option<String> {
    const SAFE: i64 = (1 << 53) - 1;
    let value = match n.as_i64() {
        Some(value) => value,
        None => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 || f.abs() > SAFE as f64 {
                return None;
            }
            f as i64
        }
    };
    (-SAFE..=SAFE).contains(&value).then(|| value.to_string())
}

/// A JSON number that is an integer (`87` or `87.0`) within the safe range, as `i64`.
pub fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => integer_text(n)?.parse().ok(),
        _ => None,
    }
}

/// The `userId` and `attributes` of an evaluation request.
pub fn evaluation_input(doc: &Document) -> Result<(String, Map<String, Value>), Errors> {
    let user_id = match doc.get("userId") {
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= 191 => id.clone(),
        Some(Value::Number(n)) if integer_text(n).is_some() => integer_text(n).unwrap_or_default(),
        _ => {
            return Err(Errors::validation(
                "userId is required: a non-empty string of at most 191 characters",
                Some(doc.pointer("userId")),
            ));
        }
    };
    let attributes = match doc.get("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(attributes)) => attributes.clone(),
        Some(_) => return Err(Errors::validation("attributes must be an object", Some(doc.pointer("attributes")))),
    };
    Ok((user_id, attributes))
}

// ---------------------------------------------------------------------------------------------
// Pagination

/// `page[number]` (from 1) and `page[size]` (1 to 100, default 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub number: i64,
    pub size: i64,
}

impl Page {
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, Errors> {
        let read =
            |name: &str, default: i64, max: i64| -> Result<i64, Errors> {
                match query.get(name) {
                    None => Ok(default),
                    Some(raw) => raw.trim().parse::<i64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                        Errors::bad_parameter(format!("{name} must be an integer from 1 to {max}"), name)
                    }),
                }
            };
        Ok(Self {
            number: read("page[number]", 1, i64::MAX / MAX_PAGE_SIZE)?,
            size: read("page[size]", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
        })
    }

    pub fn offset(&self) -> i64 {
        (self.number - 1) * self.size
    }

    /// `meta` and `links` of a page of `path` holding `total` items in all.
    pub fn meta_and_links(&self, path: &str, total: i64) -> (PageMeta, PageLinks) {
        let pages = if total == 0 { 0 } else { (total + self.size - 1) / self.size };
        let link = |number: i64| format!("{path}?page[number]={number}&page[size]={}", self.size);
        let links = PageLinks {
            self_: link(self.number),
            first: link(1),
            last: link(pages.max(1)),
            prev: (self.number > 1).then(|| link((self.number - 1).min(pages.max(1)))),
            next: (self.number < pages).then(|| link(self.number + 1)),
        };
        (PageMeta { total_items: total, total_pages: pages, current_page: self.number }, links)
    }
}

/// The query string as a map, with the JSON:API error body when it does not parse.
pub fn query_map(uri: &axum::http::Uri) -> Result<HashMap<String, String>, Errors> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|query| query.0)
        .map_err(|rejection| Errors::validation(format!("invalid query string: {}", rejection.body_text()), None))
}

#[derive(Serialize, ToSchema)]
pub struct SelfLink {
    #[serde(rename = "self")]
    #[schema(example = "/api/v1/segments/550e8400-e29b-41d4-a716-446655440001")]
    pub self_: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageMeta {
    pub total_items: i64,
    pub total_pages: i64,
    pub current_page: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PageLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub first: String,
    pub last: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pages_link_to_their_neighbours() {
        let page = Page { number: 2, size: 20 };
        let (meta, links) = page.meta_and_links("/api/v1/segments", 45);
        let (meta, links) = (serde_json::to_value(meta).unwrap(), serde_json::to_value(links).unwrap());
        assert_eq!(meta, json!({"totalItems": 45, "totalPages": 3, "currentPage": 2}));
        assert_eq!(links["self"], "/api/v1/segments?page[number]=2&page[size]=20");
        assert_eq!(links["prev"], "/api/v1/segments?page[number]=1&page[size]=20");
        assert_eq!(links["next"], "/api/v1/segments?page[number]=3&page[size]=20");
        assert_eq!(links["last"], "/api/v1/segments?page[number]=3&page[size]=20");
    }

    #[test]
    fn keys() {
        let too_long = "a".repeat(201);
        for (key, valid) in [("premium-users_2", true), ("premium users", false), ("", false), (&too_long, false)] {
            assert_eq!(is_valid_key(key), valid, "{key:?}");
        }
    }
}
