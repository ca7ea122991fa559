//! segmentify's routes (seed 000), with its exact shapes:
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | /segments | 200 `[{"id","slug","is_deleted"}]`, deleted included |
//! | GET | /segments/:slug | 200 `{"id","slug","is_deleted"}` (the live one, else the one deleted last) |
//! | POST | /segments `{"slug","percent"?}` | 201 + `Location` |
//! | DELETE | /segments/:slug | 204 (soft delete) |
//! | POST | /segments/users `{"id","add":[{"slug","expired"?}],"remove":[{"slug"}]}` | 200 `{"segments":[{"slug"}]}` |
//! | GET | /segments/users/:id | 200 `[{"slug"}]` (active only) |
//! | GET | /segments/users/:id/history?from=&to= | 200 `{"link"}` |
//! | GET | /history/:id/:from/:to/history.csv | 200 CSV `user,slug,add\|remove,RFC3339` |
//!
//! Who may call them: a bearer token with the permission the route needs (`SEGMENTS_READ` for
//! reads, `SEGMENTS_CREATE`, `SEGMENTS_DELETE`, and `SEGMENTS_UPDATE` to change a user's
//! segments), as `/api/v1` takes it; 401 without a valid token, 403 without the permission, in
//! these routes' own error body. The CSV also opens to the signed link `history` answered with
//! (`?expires=&signature=`, valid [`crate::auth::LINK_LIFETIME_SECS`] seconds), so the caller
//! can hand it to a browser. The CSV is written from the store for the one user the path names,
//! never read from a file, so no path can reach the filesystem. With
//! `segments_open_legacy` every route here is open.
//!
//! Errors use the chatmesh error body: 404 for an unknown slug, 409 for a slug taken or a
//! segment a flag uses, 422 for invalid fields. Changing a user's segments is all-or-nothing:
//! an unknown or deleted slug in `add` (or an unknown one in `remove`) changes nothing. Removes
//! apply before adds, so a slug in both ends up added; a slug added twice takes the expiry of its
//! last entry. `add` and `remove` take at most [`MAX_CHANGE_ITEMS`] items each (422 beyond).
//! A history range whose `to` is before its `from` is empty. The OpenAPI document of these
//! routes is [`crate::openapi`].

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::http::{JsonBody, QueryParams};
use shared::openapi::ErrorResponses;
use shared::{ApiError, ErrorCode};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::jsonapi::{is_reserved_key, is_valid_key};
use super::{PathParams, base_url, encode_segment};
use crate::auth::{self, Permission, Refusal};
use crate::store::{self, SegmentRow};
use crate::{Segments, percent};

/// A request the legacy routes let in: open by config, or a bearer holding permission `P` (a
/// [`Permission`] as `u32`). Checked before anything else of the request is read.
pub struct Legacy<const P: u32>;

type CanRead = Legacy<{ Permission::SegmentsRead as u32 }>;
type CanCreate = Legacy<{ Permission::SegmentsCreate as u32 }>;
type CanUpdate = Legacy<{ Permission::SegmentsUpdate as u32 }>;
type CanDelete = Legacy<{ Permission::SegmentsDelete as u32 }>;

impl<const P: u32> axum::extract::FromRequestParts<Segments> for Legacy<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &Segments) -> Result<Self, ApiError> {
        if state.legacy_routes_open() {
            return Ok(Self);
        }
        auth::authorize(state, &parts.headers, auth::permission_of(P)).await.map_err(refusal)?;
        Ok(Self)
    }
}

/// A refusal in the legacy routes' error body.
fn refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unauthenticated(message) => ApiError::unauthorized(message),
        Refusal::Forbidden(permission) => {
            ApiError::forbidden(format!("this token lacks the {} permission", permission.as_str()))
        }
        Refusal::Store(error) => error.into(),
    }
}

pub fn routes() -> OpenApiRouter<Segments> {
    OpenApiRouter::new()
        .routes(routes!(list_segments, create_segment))
        .routes(routes!(change_user_segments))
        .routes(routes!(user_segments))
        .routes(routes!(history_link))
        .routes(routes!(get_segment, delete_segment))
        .routes(routes!(history_csv))
}

/// Longest user id stored.
const MAX_USER_ID_CHARS: usize = 191;
/// Most items an `add` or a `remove` list takes: every item is a membership written in the
/// one transaction that holds the store's write lock, so a larger change is several requests.
pub const MAX_CHANGE_ITEMS: usize = 1000;

/// A segment as segmentify shows it; `is_deleted` after a soft delete.
#[derive(Serialize, ToSchema)]
#[schema(as = LegacySegment, example = json!({"id": 1, "slug": "AVITO_VOICE_MESSAGES", "is_deleted": false}))]
struct SegmentView {
    id: i64,
    #[schema(example = "AVITO_VOICE_MESSAGES")]
    slug: String,
    is_deleted: bool,
    /// The share of all users (present and future) in the segment, when created with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    percent: Option<i64>,
}

impl From<&SegmentRow> for SegmentView {
    fn from(row: &SegmentRow) -> Self {
        Self { id: row.id, slug: row.key.clone(), is_deleted: row.deleted, percent: row.percent }
    }
}

#[utoipa::path(
    get, path = "/segments", tag = "segments (legacy)", operation_id = "legacyListSegments",
    summary = "Every segment ever created, deleted included",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "All segments", body = Vec<SegmentView>,
            example = json!([{"id": 1, "slug": "AVITO_VOICE_MESSAGES", "is_deleted": false}, {"id": 2, "slug": "AVITO_RED_BUTTON", "is_deleted": false}])),
        ErrorResponses,
    )
)]
async fn list_segments(_: CanRead, State(state): State<Segments>) -> Result<Json<Vec<SegmentView>>, ApiError> {
    let rows = store::all_segments(state.db()).await?;
    Ok(Json(rows.iter().map(SegmentView::from).collect()))
}

/// The segment a slug names: the live one, else the one deleted last, with `is_deleted: true`
/// (as seed 000's store reads it).
#[utoipa::path(
    get, path = "/segments/{slug}", tag = "segments (legacy)", operation_id = "legacyGetSegment",
    summary = "One segment by slug: the live one, else the one deleted last (`is_deleted: true`)",
    security(("bearerAuth" = [])),
    params(("slug" = String, Path, description = "The segment's slug", example = "AVITO_VOICE_MESSAGES")),
    responses((status = 200, description = "The segment", body = SegmentView), ErrorResponses)
)]
async fn get_segment(
    _: CanRead,
    State(state): State<Segments>,
    PathParams(slug): PathParams<String>,
) -> Result<Json<SegmentView>, ApiError> {
    let row = store::segment_by_slug(state.db(), &slug).await?.ok_or_else(|| segment_not_found(&slug))?;
    Ok(Json(SegmentView::from(&row)))
}

/// Creates a segment; with `percent`, that share of all users is in it, deterministically.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LegacyCreate, example = json!({"slug": "AVITO_RED_BUTTON"}))]
struct CreateBody {
    /// Letters, digits, hyphens and underscores, at most 200; `users` is reserved.
    #[schema(pattern = r"^[A-Za-z0-9_-]+$", min_length = 1, max_length = 200)]
    slug: String,
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 100)]
    percent: Option<Value>,
}

#[utoipa::path(
    post, path = "/segments", tag = "segments (legacy)", operation_id = "legacyCreateSegment",
    summary = "Create a segment",
    security(("bearerAuth" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = SegmentView,
            headers(("Location" = String, description = "URL of the new segment"))),
        ErrorResponses,
    )
)]
async fn create_segment(
    _: CanCreate,
    State(state): State<Segments>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    let slug = body.slug;
    if !is_valid_key(&slug) {
        return Err(ApiError::validation("slug must be 1 to 200 letters, digits, hyphens or underscores"));
    }
    if is_reserved_key(&slug) {
        return Err(ApiError::validation(format!("slug \"{slug}\" is reserved")));
    }
    let percent = match &body.percent {
        None | Some(Value::Null) => None,
        Some(value) => match super::jsonapi::as_integer(value).filter(|p| (0..=100).contains(p)) {
            Some(percent) => Some(percent),
            None => return Err(ApiError::validation("percent must be an integer from 0 to 100")),
        },
    };
    let now = state.now();
    let mut tx = store::write_tx(state.db()).await?;
    if store::live_key_taken(&mut tx, &slug, None).await? {
        return Err(slug_taken(&slug));
    }
    let new = store::SegmentRow { percent, ..store::SegmentRow::new(slug.clone()) };
    let row = match store::insert_segment(&mut tx, &new, now).await {
        Ok(row) => row,
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Err(slug_taken(&slug)),
        Err(error) => return Err(error.into()),
    };
    tx.commit().await?;
    state.wrote();
    let location = format!("{}/segments/{}", base_url(&headers), encode_segment(&slug));
    Ok(super::with_location((StatusCode::CREATED, Json(SegmentView::from(&row))).into_response(), &location))
}

#[utoipa::path(
    delete, path = "/segments/{slug}", tag = "segments (legacy)", operation_id = "legacyDeleteSegment",
    summary = "Soft-delete a segment (deleting a deleted one succeeds)",
    security(("bearerAuth" = [])),
    params(("slug" = String, Path, description = "The segment's slug", example = "AVITO_VOICE_MESSAGES")),
    responses((status = 204, description = "Deleted"), ErrorResponses)
)]
async fn delete_segment(
    _: CanDelete,
    State(state): State<Segments>,
    PathParams(slug): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let now = state.now();
    let mut tx = store::write_tx(state.db()).await?;
    let Some(row) = store::live_segment_by_key(&mut tx, state.dialect(), &slug).await? else {
        drop(tx);
        // Deleting a deleted segment changes nothing and succeeds; an unknown slug is a 404.
        return match store::segment_by_slug(state.db(), &slug).await? {
            Some(_) => Ok(StatusCode::NO_CONTENT),
            None => Err(segment_not_found(&slug)),
        };
    };
    if store::segment_in_use(&mut tx, row.id).await? {
        return Err(ApiError::new(ErrorCode::Conflict, format!("segment {slug} is used by a flag's targeting rule")));
    }
    store::soft_delete_segment(&mut tx, row.id, now).await?;
    tx.commit().await?;
    state.wrote();
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a user's segments, all or nothing: removes first, then adds (so a slug both removed
/// and added ends up added, with the new expiry; a slug added twice takes its last expiry). An
/// unknown slug changes nothing (404).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LegacyChange, example = json!({"id": 73234, "add": [{"slug": "AVITO_RESEARCH_AMOGUS", "expired": "2025-01-02T15:04:06Z"}, {"slug": "AVITO_CHINESE_MARKET"}], "remove": [{"slug": "AVITO_RED_BUTTON"}]}))]
struct ChangeBody {
    /// The user: an integer (as the seed sends; |id| < 2^53, larger ones as strings) or a string
    /// of 1 to 191 characters.
    #[schema(schema_with = user_id_schema)]
    id: Value,
    /// At most 1000 items.
    #[serde(default)]
    #[schema(max_items = 1000)]
    add: Vec<AddItem>,
    /// At most 1000 items.
    #[serde(default)]
    #[schema(max_items = 1000)]
    remove: Vec<RemoveItem>,
}

fn user_id_schema() -> RefOr<Schema> {
    super::schema_from_json(json!({
        "oneOf": [
            {"type": "integer", "minimum": -9_007_199_254_740_991_i64, "maximum": 9_007_199_254_740_991_i64},
            {"type": "string", "minLength": 1, "maxLength": 191, "pattern": r"\S"}
        ],
        "example": 73234
    }))
}

/// A segment to add; `expired` (RFC 3339) is when the membership ends by itself (a time already
/// past ends it at once: the history shows the add and its remove).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LegacyAdd)]
struct AddItem {
    #[schema(example = "AVITO_RESEARCH_AMOGUS")]
    slug: String,
    #[serde(default)]
    #[schema(format = DateTime, example = "2025-01-02T15:04:06Z")]
    expired: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LegacyRemove)]
struct RemoveItem {
    #[schema(example = "AVITO_RED_BUTTON")]
    slug: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LegacySlug)]
struct SlugView {
    #[schema(example = "AVITO_CHINESE_MARKET")]
    slug: String,
}

/// The user's active segments after the change.
#[derive(Serialize, ToSchema)]
#[schema(as = LegacyChanged, example = json!({"segments": [{"slug": "AVITO_RESEARCH_AMOGUS"}, {"slug": "AVITO_CHINESE_MARKET"}]}))]
struct Changed {
    segments: Vec<SlugView>,
}

/// A user id from the body: an integer (as the seed sends) or a non-empty string.
fn user_id_from_body(id: &Value) -> Result<String, ApiError> {
    let text = match id {
        Value::Number(n) if super::jsonapi::integer_text(n).is_some() => {
            super::jsonapi::integer_text(n).unwrap_or_default()
        }
        Value::String(s) if !s.trim().is_empty() => s.clone(),
        _ => return Err(ApiError::validation("id must be an integer or a non-empty string")),
    };
    check_user_id(&text)?;
    Ok(text)
}

fn check_user_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > MAX_USER_ID_CHARS {
        return Err(ApiError::validation(format!("user id must be 1 to {MAX_USER_ID_CHARS} characters")));
    }
    Ok(())
}

#[utoipa::path(
    post, path = "/segments/users", tag = "segments (legacy)", operation_id = "legacyChangeUserSegments",
    summary = "Add and remove a user's segments, all or nothing",
    security(("bearerAuth" = [])),
    request_body = ChangeBody,
    responses((status = 200, description = "The user's active segments after the change", body = Changed), ErrorResponses)
)]
async fn change_user_segments(
    _: CanUpdate,
    State(state): State<Segments>,
    JsonBody(body): JsonBody<ChangeBody>,
) -> Result<Json<Changed>, ApiError> {
    let user_id = user_id_from_body(&body.id)?;
    for (field, len) in [("add", body.add.len()), ("remove", body.remove.len())] {
        if len > MAX_CHANGE_ITEMS {
            return Err(ApiError::validation(format!(
                "{field} holds {len} items; at most {MAX_CHANGE_ITEMS} are taken in one request"
            )));
        }
    }
    let now = state.now();
    let mut add_slugs: Vec<&str> = Vec::with_capacity(body.add.len());
    let mut expiries: Vec<Option<i64>> = Vec::with_capacity(body.add.len());
    let mut add_index: HashMap<&str, usize> = HashMap::with_capacity(body.add.len());
    for item in &body.add {
        let expires_at = match &item.expired {
            None => None,
            Some(text) => {
                let at = chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|_| ApiError::validation(format!("expired of {} must be an RFC 3339 time", item.slug)))?
                    .timestamp_millis();
                // A time already past ends the membership at once: it is added and removed now.
                Some(at.max(now))
            }
        };
        // A slug added twice is added once, with the expiry of its last entry.
        match add_index.get(item.slug.as_str()) {
            Some(&index) => expiries[index] = expires_at,
            None => {
                add_index.insert(&item.slug, add_slugs.len());
                add_slugs.push(&item.slug);
                expiries.push(expires_at);
            }
        }
    }
    // A slug both removed and added ends up added: removes are applied first.
    let mut seen_removes = HashSet::with_capacity(body.remove.len());
    let remove_slugs: Vec<String> = body
        .remove
        .iter()
        .filter(|item| seen_removes.insert(item.slug.as_str()))
        .map(|item| item.slug.clone())
        .collect();
    let add_keys: Vec<String> = add_slugs.iter().map(|slug| (*slug).to_owned()).collect();

    let mut tx = store::write_tx(state.db()).await?;
    let to_add: HashMap<String, i64> = store::live_segments_by_keys(&mut tx, state.dialect(), &add_keys)
        .await?
        .into_iter()
        .map(|(id, key)| (key, id))
        .collect();
    let missing: Vec<&str> = add_slugs.iter().copied().filter(|slug| !to_add.contains_key(*slug)).collect();
    if !missing.is_empty() {
        return Err(ApiError::not_found(format!("no live segment with slug {}; nothing changed", listing(&missing))));
    }
    let to_remove = store::segments_by_keys(&mut tx, &remove_slugs).await?;
    let found: HashSet<&str> = to_remove.iter().map(|(_, key)| key.as_str()).collect();
    let unknown: Vec<&str> = remove_slugs.iter().map(String::as_str).filter(|slug| !found.contains(slug)).collect();
    if !unknown.is_empty() {
        return Err(ApiError::not_found(format!("no segment with slug {}; nothing changed", listing(&unknown))));
    }
    store::materialize_expired(&mut tx, &user_id, now).await?;
    // Removes are written first: at one instant the history reads "remove, then add".
    for (segment_id, slug) in &to_remove {
        store::remove_membership(&mut tx, &user_id, *segment_id, slug, now).await?;
    }
    for (ordinal, (slug, expires_at)) in add_slugs.iter().zip(&expiries).enumerate() {
        let segment_id = to_add.get(*slug).copied().unwrap_or_default();
        store::add_membership(&mut tx, state.dialect(), &user_id, segment_id, slug, ordinal as i64, *expires_at, now)
            .await?;
    }
    let explicit = store::active_memberships(&mut tx, &user_id, now).await?;
    store::bump_membership_generation(&mut tx).await?;
    tx.commit().await?;
    state.wrote();
    let slugs = with_percentage_segments(&state, &user_id, explicit).await?;
    Ok(Json(Changed { segments: slugs }))
}

/// Slugs for an error message: the first few, then how many more.
fn listing(slugs: &[&str]) -> String {
    const SHOWN: usize = 10;
    if slugs.len() <= SHOWN {
        slugs.join(", ")
    } else {
        format!("{} and {} more", slugs[..SHOWN].join(", "), slugs.len() - SHOWN)
    }
}

#[utoipa::path(
    get, path = "/segments/users/{id}", tag = "segments (legacy)", operation_id = "legacyUserSegments",
    summary = "A user's active segments: explicit ones not expired, then percentage ones",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The user id, 1 to 191 characters", min_length = 1, max_length = 191, example = "73234")),
    responses(
        (status = 200, description = "The user's active segments", body = Vec<SlugView>,
            example = json!([{"slug": "AVITO_RESEARCH_AMOGUS"}, {"slug": "AVITO_CHINESE_MARKET"}])),
        ErrorResponses,
    )
)]
async fn user_segments(
    _: CanRead,
    State(state): State<Segments>,
    PathParams(user_id): PathParams<String>,
) -> Result<Json<Vec<SlugView>>, ApiError> {
    check_user_id(&user_id)?;
    let mut conn = state.db().pool().acquire().await?;
    let explicit = store::active_memberships(&mut conn, &user_id, state.now()).await?;
    drop(conn);
    Ok(Json(with_percentage_segments(&state, &user_id, explicit).await?))
}

/// `[{"slug"}]`: the explicit memberships in the order they were added, then the percentage
/// segments the user falls in.
async fn with_percentage_segments(
    state: &Segments,
    user_id: &str,
    explicit: Vec<(i64, String, Option<i64>)>,
) -> Result<Vec<SlugView>, ApiError> {
    let snapshot = state.snapshot().await?;
    let seen: HashSet<i64> = explicit.iter().map(|(id, _, _)| *id).collect();
    let mut slugs: Vec<SlugView> = explicit.into_iter().map(|(_, slug, _)| SlugView { slug }).collect();
    for segment in &snapshot.segments {
        if let Some(share) = segment.percent
            && !seen.contains(&segment.id)
            && percent::in_percentage(&segment.key, user_id, share)
        {
            slugs.push(SlugView { slug: segment.key.clone() });
        }
    }
    Ok(slugs)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// First day (UTC), YYYY-MM-DD; default 1970-01-01
    #[param(format = Date, example = "2023-08-30")]
    from: Option<String>,
    /// Last day (UTC), YYYY-MM-DD; default today. Before `from`: an empty range
    #[param(format = Date, example = "2023-08-31")]
    to: Option<String>,
}

/// Where the CSV history of the range is.
#[derive(Serialize, ToSchema)]
#[schema(as = LegacyHistoryLink, example = json!({"link": "http://localhost:9090/history/73234/2023-08-30/2023-08-31/history.csv?expires=1693417288&signature=5d41402abc4b2a76b9719d911017c592ae4e8b1c6b2f4e0d8e4f3a2b1c0d9e8f"}))]
struct HistoryLink {
    /// The CSV's URL, signed: it works without a credential for a few minutes.
    link: String,
}

fn parse_date(name: &str, text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| ApiError::bad_request(format!("{name} must be a date as YYYY-MM-DD")))
}

/// `[from 00:00, the day after to 00:00)` in UTC milliseconds; empty when `to` is before `from`.
fn date_range(from: NaiveDate, to: NaiveDate) -> (i64, i64) {
    let start = from.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
    let end = to.succ_opt().unwrap_or(NaiveDate::MAX).and_time(NaiveTime::MIN).and_utc().timestamp_millis();
    (start, end.max(start))
}

#[utoipa::path(
    get, path = "/segments/users/{id}/history", tag = "segments (legacy)", operation_id = "legacyHistoryLink",
    summary = "A link to the CSV of the user's segment changes in a date range",
    security(("bearerAuth" = [])),
    params(
        ("id" = String, Path, description = "The user id, 1 to 191 characters", min_length = 1, max_length = 191, example = "73234"),
        HistoryQuery,
    ),
    responses((status = 200, description = "The link", body = HistoryLink), ErrorResponses)
)]
async fn history_link(
    _: CanRead,
    State(state): State<Segments>,
    headers: HeaderMap,
    PathParams(user_id): PathParams<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<HistoryLink>, ApiError> {
    check_user_id(&user_id)?;
    let from = match &query.from {
        Some(text) => parse_date("from", text)?,
        None => NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default(),
    };
    let to = match &query.to {
        Some(text) => parse_date("to", text)?,
        None => chrono::DateTime::from_timestamp_millis(state.now()).unwrap_or_default().date_naive(),
    };
    let (from, to) = (from.format("%Y-%m-%d").to_string(), to.format("%Y-%m-%d").to_string());
    let expires = state.now().div_euclid(1000) + auth::LINK_LIFETIME_SECS;
    let signature = state.link_key().sign(&user_id, &from, &to, expires);
    let link = format!(
        "{}/history/{}/{from}/{to}/history.csv?expires={expires}&signature={signature}",
        base_url(&headers),
        encode_segment(&user_id),
    );
    Ok(Json(HistoryLink { link }))
}

/// The signature of a history link, as `history` wrote it. An `expires` that is not an integer
/// is a 400 whoever asks.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkQuery {
    /// Of a signed link: when it stops working (Unix seconds)
    expires: Option<i64>,
    /// Of a signed link: its HMAC-SHA256, hex; the link opens the CSV without a bearer token
    signature: Option<String>,
}

/// Who may read a CSV: the open setting, a bearer with `SEGMENTS_READ` (when one is sent), or
/// an unexpired link signed for exactly this user and range.
async fn may_read_history(
    state: &Segments,
    headers: &HeaderMap,
    query: &LinkQuery,
    (user_id, from, to): (&str, &str, &str),
) -> Result<(), ApiError> {
    if state.legacy_routes_open() {
        return Ok(());
    }
    // A bearer, when one is sent, is what decides; otherwise the link's signature.
    let bearer = headers.contains_key(axum::http::header::AUTHORIZATION);
    let signed = query.expires.zip(query.signature.as_deref()).filter(|_| !bearer);
    let Some((expires, signature)) = signed else {
        return auth::authorize(state, headers, Permission::SegmentsRead).await.map_err(refusal);
    };
    // A link that does not check out is no credential at all: 401, as a bad token is.
    if !state.link_key().verify(user_id, from, to, expires, signature) {
        return Err(ApiError::unauthorized("this history link is not valid"));
    }
    if expires < state.now().div_euclid(1000) {
        return Err(ApiError::unauthorized("this history link has expired; ask for a new one"));
    }
    Ok(())
}

#[utoipa::path(
    get, path = "/history/{id}/{from}/{to}/history.csv", tag = "segments (legacy)", operation_id = "legacyHistoryCsv",
    summary = "The CSV history: `user,slug,add|remove,RFC3339` lines, ascending; TTL expiries are removes",
    security(("bearerAuth" = [])),
    params(
        ("id" = String, Path, description = "The user id, 1 to 191 characters", min_length = 1, max_length = 191, example = "73234"),
        ("from" = String, Path, format = Date, description = "First day (UTC)", example = "2023-08-30"),
        ("to" = String, Path, format = Date, description = "Last day (UTC), inclusive", example = "2023-08-31"),
        LinkQuery,
    ),
    responses(
        (status = 200, description = "The CSV", content_type = "text/csv", body = String,
            example = "73234,AVITO_RED_BUTTON,add,2023-08-30T17:36:28Z\n73234,AVITO_RED_BUTTON,remove,2023-08-30T17:38:11Z\n73234,AVITO_RESEARCH_AMOGUS,add,2023-08-30T17:38:11Z\n73234,AVITO_CHINESE_MARKET,add,2023-08-30T17:38:11Z\n"),
        ErrorResponses,
    )
)]
async fn history_csv(
    State(state): State<Segments>,
    headers: HeaderMap,
    PathParams((user_id, from, to)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<LinkQuery>,
) -> Result<Response, ApiError> {
    may_read_history(&state, &headers, &query, (&user_id, &from, &to)).await?;
    check_user_id(&user_id)?;
    let (start, end) = date_range(parse_date("from", &from)?, parse_date("to", &to)?);
    let now = state.now();
    // Expiries that passed are written to the history first, so they show as removes.
    if store::has_expired(state.db(), &user_id, now).await? {
        let mut tx = store::write_tx(state.db()).await?;
        store::materialize_expired(&mut tx, &user_id, now).await?;
        tx.commit().await?;
    }
    let lines = store::history(state.db(), &user_id, start, end).await?;
    let mut csv = String::with_capacity(lines.len() * 64);
    for line in lines {
        csv.push_str(&csv_field(&line.user_id));
        csv.push(',');
        csv.push_str(&csv_field(&line.slug));
        csv.push(',');
        csv.push_str(&line.action);
        csv.push(',');
        csv.push_str(&crate::rfc3339_seconds(line.at));
        csv.push('\n');
    }
    let mut response = csv.into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    response
        .headers_mut()
        .insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"history.csv\""));
    Ok(response)
}

/// RFC 4180 quoting, for user ids that hold commas, quotes or line breaks.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

fn segment_not_found(slug: &str) -> ApiError {
    ApiError::not_found(format!("segment {slug} not found"))
}

fn slug_taken(slug: &str) -> ApiError {
    ApiError::new(ErrorCode::Conflict, format!("segment {slug} already exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        for (field, written) in [("73234", "73234"), ("a,b", "\"a,b\""), ("say \"hi\"", "\"say \"\"hi\"\"\"")] {
            assert_eq!(csv_field(field), written);
        }
    }

    #[test]
    fn a_range_covers_whole_days() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let (start, end) = date_range(day("2023-08-30"), day("2023-08-31"));
        assert_eq!(end - start, 2 * 86_400_000);
        let (start, end) = date_range(day("2023-08-31"), day("2023-08-30"));
        assert_eq!(start, end, "an inverted range is empty");
    }
}
