//! HTTP plumbing shared by every service: extractors that answer bad input with the JSON error
//! body (never a 500), the JSON 404 / 405 fallbacks, and `serve` with graceful shutdown and the
//! limits that keep a slow client from holding the server ([`ServeLimits`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;

use crate::error::{ApiError, ErrorCode};
use crate::shutdown::Shutdown;

/// Path parameters: a segment that does not decode (`%FF` is not UTF-8) is a JSON 400, not
/// axum's plain-text rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => {
                let PathProblem { detail, server_error, .. } = PathProblem::of(&rejection);
                let code = if server_error { ErrorCode::Internal } else { ErrorCode::BadRequest };
                Err(ApiError::new(code, detail))
            }
        }
    }
}

/// What a client is told about path parameters that did not decode.
pub struct PathProblem {
    pub detail: String,
    /// The parameter at fault, when axum names it.
    pub parameter: Option<String>,
    /// The route and its extractor disagree (a bug, not bad input).
    pub server_error: bool,
}

impl PathProblem {
    pub fn of(rejection: &axum::extract::rejection::PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        let server_error = rejection.status().is_server_error();
        if let PathRejection::FailedToDeserializePathParams(failure) = rejection
            && let ErrorKind::InvalidUtf8InPathParam { key } = failure.kind()
        {
            return Self {
                detail: format!("the {key} in the path is not valid UTF-8 once percent-decoded"),
                parameter: Some(key.clone()),
                server_error,
            };
        }
        Self { detail: format!("invalid path: {}", rejection.body_text()), parameter: None, server_error }
    }
}

/// A request body as bytes, whatever its type: 413 (JSON) over the body limit.
#[derive(Debug, Clone, Default)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, state).await.map(RawBody)
    }
}

/// A write to the resource its path `P` names, with the JSON body `B`, and the service's
/// state `S`: what a PUT or PATCH handler takes, read in the order of the extractors it
/// replaces ([`PathParams`], then [`JsonBody`]), so a bad path is reported before a bad body.
pub struct Edit<S, P, B> {
    pub state: S,
    pub path: P,
    pub body: B,
}

impl<S, P, B> FromRequest<S> for Edit<S, P, B>
where
    S: Clone + Send + Sync,
    P: DeserializeOwned + Send,
    B: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let PathParams(path) = PathParams::from_request_parts(&mut parts, state).await?;
        let JsonBody(body) = JsonBody::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Self { state: state.clone(), path, body })
    }
}

/// A JSON request body: 415 unless the content type is JSON, 413 over the body limit, 400 for
/// malformed JSON, 422 for well-formed JSON of the wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a body with content-type application/json",
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads the whole body, answering 413 when it is over the router's limit. What is left of an
/// over-limit body is read and discarded by [`drain_unread_body`] before the 413 goes out.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is over the size limit")
        } else if let Some(timed_out) = find_source::<BodyTimedOut>(&rejection) {
            ApiError::bad_request(timed_out.to_string())
        } else {
            ApiError::bad_request(format!("could not read the request body: {rejection}"))
        }
    })
}

/// The first error of type `E` in the chain of `error`'s sources.
fn find_source<'a, E: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// Largest unread body read and discarded before a response (a 413, a 401, ...); a larger one
/// (by its Content-Length) is answered at once and its connection closed.
pub const MAX_DRAIN_BYTES: usize = 4 * 1024 * 1024;
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain(body: axum::body::Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut drained = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > MAX_DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// A request body that, when dropped before its end, hands what is left to `leftover`.
struct Reclaimable {
    inner: Option<axum::body::Body>,
    leftover: Arc<Mutex<Option<axum::body::Body>>>,
}

impl http_body::Body for Reclaimable {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => std::pin::Pin::new(inner).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for Reclaimable {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && !http_body::Body::is_end_stream(&inner)
        {
            *self.leftover.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        }
    }
}

/// Deepest nesting of arrays and objects a JSON body may have (serde_json's own limit when it
/// builds values; it skips ignored fields without one).
pub const MAX_JSON_DEPTH: usize = 128;

/// Parses JSON with the 400 / 422 split of [`JsonBody`]. A body that is not UTF-8 or nests
/// deeper than [`MAX_JSON_DEPTH`] is a 400 even where the bad part is in a field the target
/// ignores (serde_json skips ignored strings without checking their UTF-8).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|error| ApiError::bad_request(format!("malformed JSON: the body is not UTF-8 ({error})")))?;
    if json_depth_exceeds(text.as_bytes(), MAX_JSON_DEPTH) {
        return Err(ApiError::bad_request(format!("malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")));
    }
    serde_json::from_str(text).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::validation(error.to_string()),
        _ => ApiError::bad_request(format!("malformed JSON: {error}")),
    })
}

/// Whether arrays and objects in `json` nest deeper than `limit` (brackets inside strings do
/// not count). One pass, no allocation.
pub fn json_depth_exceeds(json: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// True for `application/json` and any `+json` media type.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A query string: 400 with the JSON error body when it does not parse.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_from_str(query).map(QueryParams)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{query}").parse().map_err(|_| bad_query())?)
        .map(|q| q.0)
        .map_err(|rejection| ApiError::bad_request(format!("invalid query string: {}", rejection.body_text())))
}

fn bad_query() -> ApiError {
    ApiError::bad_request("invalid query string")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The JSON 404 for a path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// The JSON 405 for a known path with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
}

/// Adds the JSON fallbacks to a finished router, and reads what a route left unread of a
/// request body (see [`drain_unread_body`]).
pub fn with_fallbacks(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(drain_unread_body))
}

/// Reads to its end (up to [`MAX_DRAIN_BYTES`], within [`DRAIN_TIMEOUT`]) a request body the
/// route answered without reading, as a 401 or 404 does, before the response goes out. The
/// HTTP server closes a connection whose request body was left unread, and a client (or the
/// gateway) that sends its next request on that kept-alive connection gets no answer; a POST
/// is then never retried.
pub async fn drain_unread_body(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    if http_body::Body::is_end_stream(req.body()) {
        // No body (most GETs): nothing to watch.
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let leftover = Arc::new(Mutex::new(None));
    let body = axum::body::Body::new(Reclaimable { inner: Some(body), leftover: leftover.clone() });
    let response = next.run(Request::from_parts(parts, body)).await;
    let rest = leftover.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(rest) = rest
        && http_body::Body::size_hint(&rest).lower() <= MAX_DRAIN_BYTES as u64
    {
        drain(rest).await;
    }
    response
}

/// Names the service that answered, so routing through the gateway can be checked.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// Adds `X-Served-By: <service>` to every response of `router`.
pub fn served_by(router: Router, service: &'static str) -> Router {
    router.layer(axum::middleware::map_response(move |mut response: axum::response::Response| async move {
        response.headers_mut().insert(SERVED_BY, HeaderValue::from_static(service));
        response
    }))
}

/// How long and how much a client may take, so that no client can hold a server: a slow or
/// silent client is cut off, and past the connection cap new connections wait in the kernel's
/// accept backlog while the ones being served keep their latency. Flags and env:
/// [`LimitArgs`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeLimits {
    /// A request head must be complete within this, from the moment the server waits for it:
    /// a new connection that sends nothing and an idle keep-alive connection are closed
    /// after it too.
    pub http_head_timeout_ms: u64,
    /// A larger request head (request line and headers) is answered 431 and the connection
    /// closed.
    pub http_max_head_bytes: usize,
    /// The whole request body must arrive within this, from the end of its head, however
    /// steadily it trickles; past it the request fails with a 400 and the connection closes.
    pub http_body_timeout_ms: u64,
    /// Connections served at once by the process.
    pub http_max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            http_head_timeout_ms: 30_000,
            http_max_head_bytes: 64 * 1024,
            http_body_timeout_ms: 60_000,
            http_max_connections: 4096,
        }
    }
}

/// The flags of [`ServeLimits`], each also read from its `CHATMESH_HTTP_*` variable; one not
/// given keeps the file's value or the default (part of [`crate::config::ServiceArgs`]).
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct LimitArgs {
    /// Milliseconds a request head may take to arrive; idle and silent connections are closed
    /// after it too [default: 30000]
    #[arg(long, env = "CHATMESH_HTTP_HEAD_TIMEOUT_MS", global = true)]
    pub http_head_timeout_ms: Option<u64>,
    /// Largest request head (request line and headers), in bytes; a 431 beyond [default: 65536]
    #[arg(long, env = "CHATMESH_HTTP_MAX_HEAD_BYTES", global = true)]
    pub http_max_head_bytes: Option<usize>,
    /// Milliseconds the whole request body may take to arrive, however it trickles
    /// [default: 60000]
    #[arg(long, env = "CHATMESH_HTTP_BODY_TIMEOUT_MS", global = true)]
    pub http_body_timeout_ms: Option<u64>,
    /// Connections served at once; more wait in the accept backlog [default: 4096]
    #[arg(long, env = "CHATMESH_HTTP_MAX_CONNECTIONS", global = true)]
    pub http_max_connections: Option<usize>,
}

impl ServeLimits {
    pub fn head_timeout(&self) -> Duration {
        Duration::from_millis(self.http_head_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_timeout_ms)
    }
}

/// A service binary's `serve`: binds `listen`, says on stdout where `service` listens, and runs
/// `run` with the listener and a shutdown that SIGTERM or SIGINT triggers.
pub async fn bind_and_run<F, Fut>(service: &str, listen: &str, run: F) -> anyhow::Result<()>
where
    F: FnOnce(TcpListener, Shutdown) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (trigger, shutdown) = crate::shutdown::channel();
    trigger.trigger_on_signal();
    let listener = TcpListener::bind(listen).await?;
    println!("{service} listening on http://{}", listener.local_addr()?);
    run(listener, shutdown).await
}

/// Serves `router` on `listener` with the default limits until `shutdown`, then finishes
/// in-flight requests (for tests and examples; the services serve with their configured ones).
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> std::io::Result<()> {
    serve_with_limits(listener, router, shutdown, &ServeLimits::default()).await
}

/// Serves `router` on `listener` within `limits` until `shutdown`; then stops accepting, closes
/// idle connections and waits for the in-flight ones.
///
/// hyper's HTTP/1 connection directly rather than `axum::serve`, which sets no timer (so no
/// head timeout) and no head size limit, and accepts without bound.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    limits: &ServeLimits,
) -> std::io::Result<()> {
    // acquire_many below takes a u32.
    let max_connections = limits.http_max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (closing, closing_seen) = tokio::sync::watch::channel(());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.head_timeout())
        .max_header_size(limits.http_max_head_bytes);
    let body_timeout = limits.body_timeout();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        // The permit is taken before accepting: over the cap, connections wait in the
        // kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after_accept_error(error).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let request = if http_body::Body::is_end_stream(request.body()) {
                request.map(axum::body::Body::new)
            } else {
                request.map(|body| axum::body::Body::new(TimedBody::new(body, body_timeout)))
            };
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).with_upgrades();
        let mut closing_seen = closing_seen.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closing_seen.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = closing.send(());
    // Every connection holds a permit until it is done: all of them back means none is left.
    let _all_closed = permits.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX)).await;
    Ok(())
}

/// An accept error is about one connection (reset before it was accepted) or the process (out
/// of file descriptors): the loop goes on, after a pause in the second case so it does not spin.
async fn pause_after_accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        tracing::warn!(%error, "accept failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request body that fails once its deadline passes, however steadily bytes still trickle in
/// (hyper's timeouts cover only the head).
struct TimedBody {
    inner: hyper::body::Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    timed_out: bool,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, timeout: Duration) -> Self {
        Self { inner, deadline: Box::pin(tokio::time::sleep(timeout)), timeout, timed_out: false }
    }
}

/// The error a request body past its deadline ends with.
#[derive(Debug)]
pub struct BodyTimedOut(Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {} ms", self.0.as_millis())
    }
}

impl std::error::Error for BodyTimedOut {}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        if self.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out = true;
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route that answers without reading the body (as a 401 does) keeps the connection
    /// usable for the next request, even when the body arrives after the headers.
    #[tokio::test]
    async fn a_body_left_unread_does_not_close_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let router =
            with_fallbacks(Router::new().route(
                "/guarded",
                axum::routing::post(|| async { ApiError::new(ErrorCode::Unauthorized, "no token") }),
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_trigger, shutdown) = crate::shutdown::channel();
        tokio::spawn(serve(listener, router, shutdown));

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = br#"{"name":"late"}"#;
        let head = format!(
            "POST /guarded HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        stream.write_all(body).await.unwrap();
        let first = read_response(&mut stream).await;
        assert!(first.starts_with("HTTP/1.1 401"), "{first}");

        stream.write_all(b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let second = read_response(&mut stream).await;
        assert!(second.starts_with("HTTP/1.1 404"), "the connection still answers: {second:?}");

        async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
            let mut buf = vec![0u8; 4096];
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap_or(0);
            String::from_utf8_lossy(&buf[..read]).into_owned()
        }
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json_content_type(&headers));
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json_content_type(&headers), json, "{value}");
        }
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_are_422() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            name: String,
        }
        assert_eq!(parse_json::<Body>(b"{\"name\": \"x\"}").unwrap().name, "x");
        assert_eq!(parse_json::<Body>(b"{").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse_json::<Body>(b"{\"name\": 5}").unwrap_err().code, ErrorCode::ValidationFailed);
        assert_eq!(parse_json::<Body>(b"{}").unwrap_err().code, ErrorCode::ValidationFailed);
    }

    #[test]
    fn bad_utf8_and_deep_nesting_are_400_even_in_ignored_fields() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            name: Option<String>,
        }
        let deep = format!("{{\"other\":{}{}}}", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_json::<Body>(deep.as_bytes()).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(parse_json::<Body>(b"{\"other\":\"\xed\xa0\x80\"}").unwrap_err().code, ErrorCode::BadRequest);
        let shallow = format!("{{\"other\":{}{}, \"name\":\"[[[{{\"}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_json::<Body>(shallow.as_bytes()).unwrap().name.as_deref(), Some("[[[{"));
        assert!(!json_depth_exceeds(br#"{"a":"\"[[[[[[[[["}"#, 2), "brackets in strings, after an escaped quote");
        assert!(json_depth_exceeds(b"[[[", 2));
    }
}
