//! `GET .../chats/:number/search`: the query comes from a JSON body `{"search_query": ...}` (as
//! the seed sends it, on a GET), or from `?search_query=` or `?q=`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chat::model::{self, ChatPath, SearchHitView};
use chat::schema::search_scope;
use serde::Deserialize;
use shared::http::{PathParams, QueryParams, RawBody, is_json_content_type, parse_json};
use shared::openapi::ErrorResponses;
use shared::{ApiError, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MAX_PAGE_SIZE, PageParams, chat_id};
use crate::ChatRead;

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;

pub fn routes() -> OpenApiRouter<ChatRead> {
    OpenApiRouter::default().routes(routes!(search_messages))
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

/// Search the messages of a chat
#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/search", tag = "search",
    params(
        ChatPath,
        ("q" = String, Query, description = "The query: not blank, at most 500 characters. Also accepted as `?search_query=` or as a JSON body `{\"search_query\"}` on the GET (the seed's way); without any of them the answer is 422", min_length = 1, max_length = 500, pattern = r"\S"),
        ("limit" = Option<i64>, Query, description = "Most hits, 1 to 100 (default 50)", minimum = 1, maximum = 100),
    ),
    responses((status = 200, description = "Search the messages of a chat", body = Vec<SearchHitView>), ErrorResponses)
)]
async fn search_messages(
    State(state): State<ChatRead>,
    PathParams(ChatPath { token, chat_number }): PathParams<ChatPath>,
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
