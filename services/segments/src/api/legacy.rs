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

use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::http::{JsonBody, QueryParams};
use shared::{ApiError, ErrorCode};

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

pub fn router() -> Router<Segments> {
    Router::new()
        .route("/segments", get(list_segments).post(create_segment))
        .route("/segments/users", post(change_user_segments))
        .route("/segments/users/{id}", get(user_segments))
        .route("/segments/users/{id}/history", get(history_link))
        .route("/segments/{slug}", get(get_segment).delete(delete_segment))
        .route("/history/{id}/{from}/{to}/history.csv", get(history_csv))
}

/// Longest user id stored.
const MAX_USER_ID_CHARS: usize = 191;
/// Most items an `add` or a `remove` list takes: every item is a membership written in the
/// one transaction that holds the store's write lock, so a larger change is several requests.
pub const MAX_CHANGE_ITEMS: usize = 1000;

fn segment_view(row: &SegmentRow) -> Value {
    let mut view = json!({ "id": row.id, "slug": row.key, "is_deleted": row.deleted });
    if let Some(percent) = row.percent {
        view["percent"] = json!(percent);
    }
    view
}

async fn list_segments(_: CanRead, State(state): State<Segments>) -> Result<Json<Value>, ApiError> {
    let rows = store::all_segments(state.db()).await?;
    Ok(Json(Value::Array(rows.iter().map(segment_view).collect())))
}

/// The segment a slug names: the live one, else the one deleted last, with `is_deleted: true`
/// (as seed 000's store reads it).
async fn get_segment(
    _: CanRead,
    State(state): State<Segments>,
    PathParams(slug): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let row = store::segment_by_slug(state.db(), &slug).await?.ok_or_else(|| segment_not_found(&slug))?;
    Ok(Json(segment_view(&row)))
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    slug: String,
    #[serde(default)]
    percent: Option<Value>,
}

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
    let new = store::NewSegment {
        uuid: crate::new_uuid(),
        key: slug.clone(),
        name: slug.clone(),
        description: None,
        rule_type: "SIMPLE".to_owned(),
        rule_content: None,
        decision_id: None,
        percent,
    };
    let row = match store::insert_segment(&mut tx, &new, now).await {
        Ok(row) => row,
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Err(slug_taken(&slug)),
        Err(error) => return Err(error.into()),
    };
    tx.commit().await?;
    let location = format!("{}/segments/{}", base_url(&headers), encode_segment(&slug));
    let mut response = (StatusCode::CREATED, Json(segment_view(&row))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

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
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ChangeBody {
    id: Value,
    #[serde(default)]
    add: Vec<AddItem>,
    #[serde(default)]
    remove: Vec<RemoveItem>,
}

#[derive(Debug, Deserialize)]
struct AddItem {
    slug: String,
    #[serde(default)]
    expired: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RemoveItem {
    slug: String,
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

async fn change_user_segments(
    _: CanUpdate,
    State(state): State<Segments>,
    JsonBody(body): JsonBody<ChangeBody>,
) -> Result<Json<Value>, ApiError> {
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
    tx.commit().await?;
    let slugs = with_percentage_segments(&state, &user_id, explicit).await?;
    Ok(Json(json!({ "segments": slugs })))
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

async fn user_segments(
    _: CanRead,
    State(state): State<Segments>,
    PathParams(user_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
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
) -> Result<Value, ApiError> {
    let snapshot = state.snapshot().await?;
    let seen: HashSet<i64> = explicit.iter().map(|(id, _, _)| *id).collect();
    let mut slugs: Vec<Value> = explicit.into_iter().map(|(_, slug, _)| json!({ "slug": slug })).collect();
    for segment in &snapshot.segments {
        if let Some(share) = segment.percent
            && !seen.contains(&segment.id)
            && percent::in_percentage(&segment.key, user_id, share)
        {
            slugs.push(json!({ "slug": segment.key }));
        }
    }
    Ok(Value::Array(slugs))
}

#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
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

async fn history_link(
    _: CanRead,
    State(state): State<Segments>,
    headers: HeaderMap,
    PathParams(user_id): PathParams<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "link": link })))
}

/// The signature of a history link, as `history` wrote it. An `expires` that is not an integer
/// is a 400 whoever asks.
#[derive(Debug, Default, Deserialize)]
struct LinkQuery {
    expires: Option<i64>,
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
        assert_eq!(csv_field("73234"), "73234");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
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
