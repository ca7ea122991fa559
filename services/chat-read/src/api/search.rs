//! `GET .../chats/:number/search`: the query comes from a JSON body `{"search_query": ...}` (as
//! the seed sends it, on a GET), or from `?search_query=` or `?q=`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use chat::model::{self, SearchHitView};
use chat::schema::search_scope;
use serde::Deserialize;
use shared::http::{PathParams, QueryParams, RawBody, is_json_content_type, parse_json};
use shared::{ApiError, ErrorCode};

use super::{MAX_PAGE_SIZE, PageParams, chat_id};
use crate::ChatRead;

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;

pub fn router() -> Router<ChatRead> {
    Router::new().route("/api/applications/{token}/chats/{chat_number}/search", get(search))
}

#[derive(Debug, Default, Deserialize)]
struct SearchParams {
    search_query: Option<String>,
    q: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SearchBody {
    search_query: Option<String>,
}

async fn search(
    State(state): State<ChatRead>,
    PathParams((token, chat_number)): PathParams<(String, String)>,
    QueryParams(params): QueryParams<SearchParams>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Vec<SearchHitView>>, ApiError> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else if !is_json_content_type(&headers) {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType, "a search body must be application/json"));
    } else {
        parse_json::<SearchBody>(&body)?.search_query
    };
    let query = from_body
        .or(params.search_query)
        .or(params.q)
        .ok_or_else(|| ApiError::validation("search_query is required (JSON body, ?search_query= or ?q=)"))?;
    let query = model::required_text("search_query", &query, MAX_QUERY_CHARS)?;
    let limit = PageParams { limit: params.limit, ..PageParams::default() }.limit()?;
    let (application_id, _, chat_number) = chat_id(&state, &token, &chat_number).await?;
    let started = std::time::Instant::now();
    // Where this process also consumes, a search reads its writes: what was acknowledged
    // before it is staged and committed first.
    state.index_progress.caught_up().await;
    state.search.visible().await;
    let hits = state
        .search
        .search(&search_scope(application_id, chat_number), &query, limit.min(MAX_PAGE_SIZE) as usize)
        .await;
    shared::metrics::record_search(started.elapsed(), hits.is_ok());
    Ok(Json(hits?.into_iter().map(SearchHitView::from).collect()))
}
