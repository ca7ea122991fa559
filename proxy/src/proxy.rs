//! The proxy: one [`ProxyHttp`] implementation with short phase methods and per-request state
//! in [`RequestCtx`].
//!
//! Retries: a request that never reached an upstream (the connection failed, or a pooled
//! keep-alive connection turned out closed by the upstream before anything was sent on it) goes
//! to another healthy upstream whatever its method, and an unreachable upstream is taken out
//! until its health check passes again. A request that failed after it was sent is retried once
//! on another upstream only when its method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS); a
//! POST or PATCH that may have reached an upstream is never sent twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use shared::ErrorCode;

use crate::gateway::{Gateway, Table};
use crate::metrics::InFlight;
use crate::pool::{Pool, Upstream};

pub const REQUEST_ID: &str = "x-request-id";
const SERVED_BY: &str = "x-served-by";

pub struct GatewayProxy {
    pub gateway: Arc<Gateway>,
}

/// What one request carries through the phases.
pub struct RequestCtx {
    started: Instant,
    request_id: String,
    table: Option<Arc<Table>>,
    pool: Option<Arc<Pool>>,
    upstream: Option<Arc<Upstream>>,
    /// Upstreams this request was sent to, in order.
    tried: Vec<SocketAddr>,
    /// Set once an idempotent request has been sent again after a failure.
    resent: bool,
    /// The retry may go to the upstream already tried (a stale keep-alive connection).
    retry_same: bool,
    body_bytes: usize,
    /// When the request body must be whole (`body_timeout_ms` after the head).
    body_deadline: Option<Instant>,
    _in_flight: InFlight,
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: String::new(),
            table: None,
            pool: None,
            upstream: None,
            tried: Vec::new(),
            resent: false,
            retry_same: false,
            body_bytes: 0,
            body_deadline: None,
            _in_flight: InFlight::new(&self.gateway.metrics),
        }
    }

    /// Request id, the gateway's own health route, routing, and the body-size limit.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let table = self.gateway.table();
        let req = session.req_header();
        ctx.request_id = req
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_acceptable_request_id(id))
            .map_or_else(new_request_id, str::to_owned);
        let path = req.uri.path();
        let method = &req.method;

        if method == Method::GET || method == Method::HEAD {
            if path == table.server.health_path {
                let body = Bytes::from_static(br#"{"status":"ok","service":"gateway"}"#);
                respond(session, ctx, StatusCode::OK, body, true).await?;
                return Ok(true);
            }
            if path == table.server.ready_path {
                let unready = table.unready_pools();
                let (status, body) = if unready.is_empty() {
                    (StatusCode::OK, serde_json::json!({"status": "ready", "service": "gateway"}))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"status": "unready", "service": "gateway", "pools_without_healthy_upstream": unready}),
                    )
                };
                respond(session, ctx, status, Bytes::from(body.to_string()), true).await?;
                return Ok(true);
            }
            if !table.server.openapi_path.is_empty() && path == table.server.openapi_path {
                self.openapi(session, ctx, &table).await?;
                return Ok(true);
            }
        }
        let Some(pool) = table.routes.find(method, path).map(|index| table.pools[index].clone()) else {
            let message = format!("no route for {method} {path}");
            respond_error(session, ctx, ErrorCode::NotFound, &message, true).await?;
            return Ok(true);
        };
        if let Some(length) = content_length(req)
            && length > table.server.max_body_bytes
        {
            // A client still sending its body when the connection closes may see a reset instead
            // of the 413: read and discard the body first (up to max_drain_bytes), unless the
            // client waits for `100 Continue` and so sends nothing.
            let expects_continue = req
                .headers
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let mut keepalive = false;
            if !expects_continue && length <= table.server.max_drain_bytes {
                let drain = session.as_downstream_mut().drain_request_body();
                keepalive = matches!(tokio::time::timeout(table.server.read_timeout, drain).await, Ok(Ok(())));
            }
            let message = format!("request body is over the {} byte limit", table.server.max_body_bytes);
            respond_error(session, ctx, ErrorCode::PayloadTooLarge, &message, keepalive).await?;
            return Ok(true);
        }
        // pingora's read timeout is per read: a body trickling a byte at a time would never
        // trip it. Each read gets what is left of the body's deadline (see request_body_filter).
        let body_timeout = table.server.body_timeout;
        ctx.body_deadline = Some(Instant::now() + body_timeout);
        let downstream = session.as_downstream_mut();
        downstream.set_read_timeout(Some(body_timeout));
        downstream.set_total_drain_timeout(Some(body_timeout));
        ctx.pool = Some(pool);
        ctx.table = Some(table);
        Ok(false)
    }

    /// Enforces the limit on bodies without a Content-Length (chunked), and the body's deadline.
    /// Neither applies once the connection is upgraded: what the client sends then is not a
    /// request body but its side of a WebSocket, as long-lived and as large as it likes.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if session.was_upgraded() {
            return Ok(());
        }
        if let (Some(chunk), Some(table)) = (body.as_ref(), ctx.table.as_ref()) {
            ctx.body_bytes += chunk.len();
            if ctx.body_bytes > table.server.max_body_bytes {
                return Err(refusal(ErrorCode::PayloadTooLarge, "request body is over the limit"));
            }
        }
        if let (false, Some(deadline)) = (end_of_stream, ctx.body_deadline) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(refusal(ErrorCode::RequestTimeout, "the request body did not arrive in time"));
            }
            session.as_downstream_mut().set_read_timeout(Some(left));
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let (Some(pool), Some(table)) = (ctx.pool.as_ref(), ctx.table.as_ref()) else {
            return Err(Error::explain(ErrorType::InternalError, "no pool chosen"));
        };
        let exclude: &[SocketAddr] = if std::mem::take(&mut ctx.retry_same) { &[] } else { &ctx.tried };
        let Some(upstream) = pool.select(exclude) else {
            let code = if ctx.tried.is_empty() { ErrorCode::ServiceUnavailable } else { ErrorCode::BadGateway };
            return Err(refusal(code, format!("no healthy upstream in pool {}", pool.name)));
        };
        if !ctx.tried.is_empty() {
            pool.metrics.retries.inc();
        }
        ctx.tried.push(upstream.addr);
        upstream.metrics.requests.inc();
        let mut peer = HttpPeer::new(upstream.addr, false, String::new());
        let server = &table.server;
        peer.options.connection_timeout = Some(server.connect_timeout);
        peer.options.read_timeout = Some(server.read_timeout);
        peer.options.write_timeout = Some(server.write_timeout);
        peer.options.idle_timeout = Some(server.upstream_idle_timeout);
        ctx.upstream = Some(upstream);
        Ok(Box::new(peer))
    }

    /// A request that is never sent twice must not go out on a pooled connection the upstream
    /// has closed (it died, or timed the connection out): pingora tests a pooled connection
    /// before reusing it, but only against what the runtime's last I/O poll saw. So before such
    /// a request is written, the socket itself is asked; a closed one fails the attempt before
    /// anything is sent, and the request goes again on another connection.
    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if reused && !session.req_header().method.is_idempotent() && closed_by_peer(fd) {
            return Err(Error::explain(STALE_CONNECTION, "the pooled upstream connection was closed by the upstream"));
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_request.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let forwarded = match upstream_request.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {}", client.ip()),
                None => client.ip().to_string(),
            };
            upstream_request.insert_header("x-forwarded-for", forwarded)?;
        }
        Ok(())
    }

    /// The request id; and on a `101 Switching Protocols`, no read timeout on the client's side
    /// of the upgraded connection (the body's deadline set it): a WebSocket client may stay
    /// silent as long as it likes, while the upstream's pings, read within `read_timeout_ms`,
    /// tell the connection is alive.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if upstream_response.status == StatusCode::SWITCHING_PROTOCOLS && session.is_upgrade_req() {
            session.as_downstream_mut().set_read_timeout(None);
        }
        Ok(())
    }

    /// The request never left: take the upstream out and try another one.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(upstream)) = (ctx.pool.as_ref(), ctx.upstream.as_ref()) {
            pool.unreachable(upstream, &e);
            e.set_retry(pool.has_alternative(&ctx.tried));
        }
        e
    }

    /// The request may have reached the upstream: only idempotent requests go again, once, to
    /// another upstream (or to the same one on a fresh connection when a reused keep-alive
    /// connection turned out closed and no other upstream is healthy).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if *e.etype() == STALE_CONNECTION {
            // Nothing was sent: any method may go again, on a fresh or another connection.
            ctx.retry_same = ctx.pool.as_ref().is_none_or(|pool| !pool.has_alternative(&ctx.tried));
            e.set_retry(true);
            return e;
        }
        let stale_connection = client_reused && matches!(e.retry, RetryType::ReusedOnly);
        let idempotent = session.req_header().method.is_idempotent();
        let unanswered = *e.esource() == ErrorSource::Upstream
            && matches!(e.etype(), ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError)
            && session.response_written().is_none();
        if unanswered && let (Some(pool), Some(upstream)) = (ctx.pool.as_ref(), ctx.upstream.as_ref()) {
            pool.unanswered(upstream, client_reused, idempotent, &e);
        }
        let mut e = e.more_context(format!("peer: {peer}"));
        let alternative = ctx.pool.as_ref().is_some_and(|pool| pool.has_alternative(&ctx.tried));
        let retry = *e.esource() == ErrorSource::Upstream
            && idempotent
            && !ctx.resent
            && !session.as_ref().retry_buffer_truncated()
            && (alternative || stale_connection);
        if retry {
            ctx.resent = true;
            ctx.retry_same = !alternative;
        }
        e.set_retry(retry);
        e
    }

    /// JSON bodies for every error the gateway answers itself.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let (status, code, message) = classify(e);
        if status > 0 && session.response_written().is_none() {
            let body = error_body(code, &message);
            if let Err(error) = respond(session, ctx, status, body, false).await {
                tracing::debug!(%error, "could not send the error response");
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    /// Access log line and metrics, once per request.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let req = session.req_header();
        finish(
            &self.gateway,
            &Finished {
                started: ctx.started,
                request_id: &ctx.request_id,
                method: req.method.as_str(),
                path: req.uri.path(),
                status: session.response_written().map_or(0, |r| r.status.as_u16()),
                pool: ctx.pool.as_deref(),
                upstream: ctx.upstream.as_deref(),
                tries: ctx.tried.len(),
                bytes: session.body_bytes_sent(),
                error: e.map(ToString::to_string),
                access_log: ctx.table.as_ref().is_none_or(|t| t.server.access_log),
            },
        );
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // The access log line already records gateway-generated statuses.
        matches!(error.etype(), ErrorType::HTTPStatus(_))
    }
}

impl GatewayProxy {
    /// The merged OpenAPI document of every pool (see [`crate::openapi`]).
    async fn openapi(&self, session: &mut Session, ctx: &RequestCtx, table: &Arc<Table>) -> Result<()> {
        match self.gateway.openapi.get(table).await {
            Ok(merged) => {
                let missing = (!merged.missing_pools.is_empty()).then(|| merged.missing_pools.join(","));
                let headers = missing.as_deref().map(|m| ("x-openapi-missing-pools", m));
                respond_with(session, ctx, StatusCode::OK, merged.json, true, headers).await
            }
            Err(message) => {
                tracing::warn!(%message, "no OpenAPI document to merge");
                respond_error(session, ctx, ErrorCode::ServiceUnavailable, &message, true).await
            }
        }
    }
}

/// A request the gateway is done with, by either lane.
pub(crate) struct Finished<'a> {
    pub started: Instant,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// 0 when no response went out.
    pub status: u16,
    pub pool: Option<&'a Pool>,
    pub upstream: Option<&'a Upstream>,
    pub tries: usize,
    pub bytes: usize,
    pub error: Option<String>,
    pub access_log: bool,
}

/// Metrics and the access line of a finished request.
pub(crate) fn finish(gateway: &Gateway, done: &Finished<'_>) {
    let elapsed = done.started.elapsed();
    match done.pool {
        Some(pool) => pool.metrics.observe(done.status, elapsed),
        None => gateway.metrics.own().observe(done.status, elapsed),
    }
    if done.access_log {
        tracing::info!(
            target: "access",
            request_id = %done.request_id,
            method = %done.method,
            path = %done.path,
            status = done.status,
            pool = done.pool.map_or("gateway", |p| p.name.as_str()),
            upstream = done.upstream.map_or("-", |u| u.label.as_str()),
            tries = done.tries,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            bytes = done.bytes,
            error = done.error.as_deref(),
            "request"
        );
    }
}

/// An error the gateway answers itself with `code` (and its status), for [`classify`].
fn refusal(code: ErrorCode, message: impl Into<pingora_core::ImmutStr>) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(code.status().as_u16()), message)
}

/// The codes [`refusal`] raises, told apart by their status.
const REFUSALS: [ErrorCode; 4] =
    [ErrorCode::PayloadTooLarge, ErrorCode::RequestTimeout, ErrorCode::ServiceUnavailable, ErrorCode::BadGateway];

/// Status, code and message for an error the gateway answers; status 0 when nobody is left to
/// answer. The status is the code's own, except for another 4xx / 5xx status (pingora's, or an
/// upstream's) relayed as is.
fn classify(e: &Error) -> (u16, ErrorCode, String) {
    let detail = e.context.as_ref().map_or_else(|| e.etype().as_str().to_owned(), ToString::to_string);
    let own = |code: ErrorCode, message: String| (code.status().as_u16(), code, message);
    match e.etype() {
        // The client's body, not the upstream, ran past its deadline.
        ErrorType::ReadTimedout if e.esource() == &ErrorSource::Downstream => {
            own(ErrorCode::RequestTimeout, "the request body did not arrive in time".to_owned())
        }
        ErrorType::HTTPStatus(status) => match REFUSALS.into_iter().find(|code| code.status() == *status) {
            Some(code) => own(code, detail),
            None if StatusCode::from_u16(*status).is_ok_and(|s| s.is_client_error()) => {
                (*status, ErrorCode::BadRequest, detail)
            }
            None => (*status, ErrorCode::BadGateway, detail),
        },
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            own(ErrorCode::GatewayTimeout, "the upstream did not answer in time".to_owned())
        }
        _ => match e.esource() {
            ErrorSource::Upstream => own(ErrorCode::BadGateway, "the upstream failed to answer".to_owned()),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => {
                    (0, ErrorCode::BadRequest, String::new())
                }
                _ => own(ErrorCode::BadRequest, detail),
            },
            ErrorSource::Internal | ErrorSource::Unset => own(ErrorCode::Internal, "internal gateway error".to_owned()),
        },
    }
}

/// `{"error":{"code":...,"message":...}}`, the body every chatmesh error has, with a code of
/// the services' own table.
pub fn error_body(code: ErrorCode, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": { "code": code.as_str(), "message": message } }).to_string())
}

/// Writes a complete JSON response. With `keepalive`, the connection stays open (pingora
/// drains an unread request body before reusing it).
async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: impl Into<u16>,
    body: Bytes,
    keepalive: bool,
) -> Result<()> {
    respond_with(session, ctx, status.into(), body, keepalive, None).await
}

/// [`respond`] with the JSON error of `code`, in its status.
async fn respond_error(
    session: &mut Session,
    ctx: &RequestCtx,
    code: ErrorCode,
    message: &str,
    keepalive: bool,
) -> Result<()> {
    respond(session, ctx, code.status(), error_body(code, message), keepalive).await
}

/// [`respond`] with one more header.
async fn respond_with(
    session: &mut Session,
    ctx: &RequestCtx,
    status: impl Into<u16>,
    body: Bytes,
    keepalive: bool,
    extra: Option<(&'static str, &str)>,
) -> Result<()> {
    if !keepalive {
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(status.into(), Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header(SERVED_BY, "gateway")?;
    if let Some((name, value)) = extra {
        resp.insert_header(name, value.to_owned())?;
    }
    if !ctx.request_id.is_empty() {
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    }
    let head_only = session.req_header().method == Method::HEAD;
    session.write_response_header(Box::new(resp), head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The error of an attempt stopped before sending because its pooled connection was closed.
const STALE_CONNECTION: ErrorType = ErrorType::Custom("stale pooled upstream connection");

/// Whether the upstream closed (or reset) the connection on `fd`, or sent something unasked on
/// it: a non-blocking peek that returns at once either way.
pub(crate) fn closed_by_peer(fd: std::os::unix::io::RawFd) -> bool {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    match recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Err(Errno::EAGAIN | Errno::EINTR) => false,
        Ok(_) | Err(_) => true,
    }
}

fn content_length(req: &RequestHeader) -> Option<usize> {
    req.headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A client's id is kept when it is short printable ASCII (it goes into logs and headers).
pub(crate) fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// 128 random bits as 32 hex digits.
pub(crate) fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u128>();
    (0..32).rev().map(|digit| char::from(HEX[((bits >> (digit * 4)) & 0xf) as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_json_statuses() {
        let (status, code, _) = classify(&Error::explain(ErrorType::HTTPStatus(503), "no healthy upstream"));
        assert_eq!((status, code.as_str()), (503, "SERVICE_UNAVAILABLE"));
        let (status, code, _) = classify(&Error::new_up(ErrorType::ConnectRefused));
        assert_eq!((status, code.as_str()), (502, "BAD_GATEWAY"));
        let (status, code, _) = classify(&Error::new_up(ErrorType::ReadTimedout));
        assert_eq!((status, code.as_str()), (504, "GATEWAY_TIMEOUT"));
        let (status, _, _) = classify(&Error::new_down(ErrorType::ConnectionClosed));
        assert_eq!(status, 0, "nobody to answer");
        let body: serde_json::Value = serde_json::from_slice(&error_body(ErrorCode::BadGateway, "x")).unwrap();
        assert_eq!(body["error"]["code"], "BAD_GATEWAY");
    }

    #[test]
    fn a_connection_closed_by_its_peer_is_told_apart_from_an_idle_one() {
        use std::io::Write;
        use std::os::unix::io::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert!(!closed_by_peer(client.as_raw_fd()), "an idle open connection is usable");
        server.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(closed_by_peer(client.as_raw_fd()), "data nobody asked for: not reusable");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(server);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(closed_by_peer(client.as_raw_fd()), "closed by the peer");
        assert!(closed_by_peer(client.as_raw_fd()), "a peek leaves the close in place for the next look");
    }

    #[test]
    fn request_ids() {
        assert!(is_acceptable_request_id("abc-123"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id("has space"));
        assert!(!is_acceptable_request_id(&"x".repeat(129)));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_request_id());
    }
}
