//! The stream's routes: Server-Sent Events per chat, a WebSocket per application, and the chat
//! page that shows them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chat::model::{self, ApplicationPath, ChatPath};
use serde::Deserialize;
use shared::http::{PathParams, QueryParams};
use shared::openapi::ErrorResponses;
use shared::{ApiError, ErrorCode};
use tokio::sync::mpsc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ChatRef, Cursor, Event, Hub, Out, Start, follow};
use crate::ChatRead;

pub fn routes() -> OpenApiRouter<ChatRead> {
    OpenApiRouter::default().routes(routes!(chat_stream)).routes(routes!(application_stream)).route("/chat", get(page))
}

/// Where a chat's stream starts: neither field gives changes from now on.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Resume after this event id (as the `Last-Event-ID` header, which wins when both are sent)
    pub last_event_id: Option<String>,
    /// Replay the messages numbered above this one as they are now, then go on live
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
}

/// SSE events take a few dozen bytes of buffer each: a slow reader waits on its socket, and
/// falls behind into the feed's buffer and then the store, not into memory here.
const SSE_QUEUE: usize = 64;

/// Stream a chat's changes (Server-Sent Events)
///
/// Events `message.created`, `message.updated`, `message.deleted` and `chat.updated`, each with
/// an `id` (an opaque cursor) and the message or chat as its REST route shows it as `data`; a
/// comment line at least every 15 s while idle. Resume after an event with `Last-Event-ID`
/// (browsers' EventSource sends it by itself) or `?last_event_id=`; `?after=N` replays the
/// messages numbered above N first. A cursor this server cannot resume from gets an
/// `event: reset` (fetch the chat again over REST), then the stream goes on live.
#[utoipa::path(
    get, path = "/api/applications/{token}/chats/{chat_number}/stream", tag = "stream", params(ChatPath, StreamParams),
    responses(
        (status = 200, description = "The chat's events, as they happen", content_type = "text/event-stream", body = String),
        ErrorResponses
    )
)]
async fn chat_stream(
    State(state): State<ChatRead>,
    PathParams(ChatPath { token, chat_number }): PathParams<ChatPath>,
    QueryParams(params): QueryParams<StreamParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hub = hub(&state)?;
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().unwrap_or_default().to_owned()),
        None => params.last_event_id,
    };
    let start = match (last_event_id, params.after) {
        (Some(id), _) => Start::Resume(Cursor::parse(&id)),
        (None, Some(after)) => Start::After(number_param("after", &after)?),
        (None, None) => Start::Live,
    };
    let chat = resolve_chat(&state, &token, &chat_number).await?;
    let (sender, mut receiver) = mpsc::channel::<Event>(SSE_QUEUE);
    tokio::spawn(follow(hub.clone(), chat, start, Out::Waiting(sender), false));
    let events = futures::stream::poll_fn(move |cx| {
        receiver.poll_recv(cx).map(|event| event.map(|event| Ok::<_, Infallible>(sse_event(event))))
    });
    let keep_alive = KeepAlive::new().interval(hub.settings().keep_alive()).text("keep-alive");
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    // Proxies that buffer responses (nginx) pass this one through as it comes.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn sse_event(event: Event) -> axum::response::sse::Event {
    let sse = axum::response::sse::Event::default().event(event.name).data(&*event.data);
    match event.cursor {
        Some(cursor) => sse.id(cursor.to_string()),
        None => sse,
    }
}

/// Stream many chats of an application (WebSocket)
///
/// Upgrades to a WebSocket. The client sends `{"type":"subscribe","chat_number":N}` (with
/// `"last_event_id"` or `"after"` as the SSE route takes them) and
/// `{"type":"unsubscribe","chat_number":N}`; the server answers `{"type":"subscribed",
/// "chat_number":N,"id":...}` and sends `{"type":"<event>","chat_number":N,"id":...,
/// "data":{...}}` frames with the SSE events' meaning, and pings. A client that reads too
/// slowly for its queue gets `{"type":"overflow","resume":[{"chat_number":N,
/// "last_event_id":...}]}` and a close (1013): subscribing again from those ids loses nothing.
#[utoipa::path(
    get, path = "/api/applications/{token}/stream", tag = "stream", params(ApplicationPath),
    responses((status = 101, description = "Switching to the WebSocket protocol"), ErrorResponses)
)]
async fn application_stream(
    State(state): State<ChatRead>,
    PathParams(ApplicationPath { token }): PathParams<ApplicationPath>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let hub = hub(&state)?;
    let application_id = chat::schema::application_id(&state.db, &token)
        .await?
        .ok_or_else(|| ApiError::not_found("application not found"))?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::bad_request(format!("this route takes a WebSocket upgrade: {}", rejection.body_text()))
    })?;
    let application = super::socket::Application { id: application_id, token: Arc::from(token) };
    Ok(upgrade
        .max_message_size(super::socket::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| super::socket::session(hub, state, application, socket)))
}

/// The chat page: open or create an application and a chat, send messages, and see them live.
async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(include_str!("../../assets/chat.html")))
}

fn hub(state: &ChatRead) -> Result<Arc<Hub>, ApiError> {
    state
        .stream
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::ServiceUnavailable, "the live stream is not served here"))
}

/// A non-negative integer parameter, or 400.
pub(super) fn number_param(name: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer")))
}

/// The chat `raw_number` of the application `token`, or 404.
pub(super) async fn resolve_chat(state: &ChatRead, token: &str, raw_number: &str) -> Result<ChatRef, ApiError> {
    let chat_number = model::path_number("chat", raw_number)?;
    let application_id = chat::schema::application_id(&state.db, token)
        .await?
        .ok_or_else(|| ApiError::not_found("application not found"))?;
    chat_in(state, application_id, Arc::from(token), chat_number).await
}

/// Chat `chat_number` of an application already resolved, or 404.
pub(super) async fn chat_in(
    state: &ChatRead,
    application_id: i64,
    token: Arc<str>,
    chat_number: i64,
) -> Result<ChatRef, ApiError> {
    let chat_id = chat::schema::chat_id(&state.db, application_id, chat_number)
        .await?
        .ok_or_else(|| ApiError::not_found("chat not found"))?;
    Ok(ChatRef { application_id, token, chat_id, chat_number })
}
