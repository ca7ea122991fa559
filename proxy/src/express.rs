//! The express lane: the gateway's own HTTP/1.1 relay for plain requests, with pingora-proxy
//! taking every other request on the same connection.
//!
//! pingora-proxy's per-request path is general (modules, caching hooks, two tasks joined by
//! channels per request, boxed headers), and that generality is most of the gateway's CPU time
//! per request. Most requests need none of it: a request head, maybe a small body with a
//! `Content-Length`, an answer. [`Front`] reads each request head off the downstream
//! connection itself and, when the request is plain, relays it in the connection's own task:
//! the head is copied with `X-Request-Id` and `X-Forwarded-For` set, the upstream connection
//! comes from a keep-alive pool per upstream, and the response is copied back as it arrives
//! (by `Content-Length`, chunked framing, or until the upstream closes).
//!
//! Everything else goes to pingora-proxy ([`crate::proxy::GatewayProxy`]), with the bytes
//! already read handed over as the start of the request: the gateway's own routes, requests
//! without a route or without a healthy upstream, bodies that are chunked, large or
//! announced with `Expect`, upgrades, HTTP/1.0, and a request whose upstream could not be
//! reached (nothing was sent; pingora's retries take over). The behaviour is the same either
//! way: routing, round robin over healthy upstreams, the stale-connection check before a
//! request that is never sent twice, one retry of an idempotent request, JSON errors, the
//! access line and metrics.
//!
//! Every request head, whichever lane takes it, is read here first, within the limits that keep
//! a client from holding the gateway ([`read_head`]): complete within `head_timeout_ms` and at
//! most `max_head_bytes` (408 or 431 and a close past them). pingora-proxy then parses it from
//! the bytes already read.

use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use http::Method;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use shared::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gateway::{Gateway, Table};
use crate::metrics::InFlight;
use crate::pool::{Pool, Upstream};
use crate::proxy::{self, Finished, GatewayProxy, REQUEST_ID};

/// A request head larger than this goes to pingora-proxy; the longest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Headers counted when telling where a head ends: pingora-proxy's own limit (more is its 400).
const MAX_PARSED_HEADERS: usize = 256;
/// Request bodies the express lane reads whole before relaying; larger ones stream through
/// pingora-proxy.
const MAX_EXPRESS_BODY: usize = 256 * 1024;
/// Headers the express lane parses; a request with more goes to pingora-proxy.
const MAX_HEADERS: usize = 64;
/// How long a downstream keep-alive connection may wait for its next request (pingora's too).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The proxy service's application: the express lane in front of pingora-proxy.
pub struct Front {
    pub gateway: Arc<Gateway>,
    pub proxy: Arc<HttpProxy<GatewayProxy>>,
    /// One permit per connection served (`max_connections`): past the cap a new connection is
    /// closed at once, so the ones being served keep their latency.
    pub connections: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Ok(_permit) = self.connections.clone().try_acquire_owned() else {
            tracing::debug!("connection cap reached, closing a new connection");
            return None;
        };
        let client_ip = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|addr| addr.as_inet()).map(|addr| addr.ip().to_string()));
        let mut conn = Connection { buf: BytesMut::with_capacity(4096), out: Vec::with_capacity(1024), client_ip };
        let mut shutdown = shutdown.clone();
        // A new connection's head is timed from the accept, a kept-alive one's from its first byte.
        let mut head_started = Some(Instant::now());
        loop {
            let table = self.gateway.table();
            let wait = head_started.map_or(KEEPALIVE, |_| table.server.head_timeout);
            match conn.next_request(&mut stream, &mut shutdown, wait).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
            let deadline = head_started.take().unwrap_or_else(Instant::now) + table.server.head_timeout;
            let head_len = match read_head(&mut stream, &mut conn.buf, deadline, table.server.max_head_bytes).await {
                Head::Complete(len) => len,
                Head::Refused(code, message) => {
                    refuse(&mut stream, &mut conn.out, code, message, &table.server).await;
                    return None;
                }
                Head::Closed => return None,
            };
            if table.server.express {
                match self.express(&mut stream, &mut conn, head_len, &table, &shutdown).await {
                    Next::KeepAlive => continue,
                    Next::Close => return None,
                    Next::Pingora => {}
                }
            }
            // pingora-proxy takes this request, starting from the bytes already read.
            let mut session = ServerSession::new_http1(stream);
            session.set_keepalive(if *shutdown.borrow() { None } else { Some(KEEPALIVE.as_secs()) });
            session.set_pipelined_prefix(std::mem::take(&mut conn.buf));
            let reused = self.proxy.process_new_http(session, &shutdown).await?;
            stream = reused.consume().0;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// The request (still whole in the buffer) goes to pingora-proxy.
    Pingora,
}

/// Per downstream connection: the bytes read and not yet used, the buffer the next write is
/// built in, and the client's address.
struct Connection {
    buf: BytesMut,
    out: Vec<u8>,
    /// The client's address as X-Forwarded-For names it (formatted once per connection).
    client_ip: Option<String>,
}

impl Connection {
    /// Waits up to `wait` for the next request's first bytes. `false`: the client closed, stayed
    /// silent that long, or the gateway is shutting down.
    async fn next_request(
        &mut self,
        stream: &mut Stream,
        shutdown: &mut ShutdownWatch,
        wait: Duration,
    ) -> io::Result<bool> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        if *shutdown.borrow() {
            return Ok(false);
        }
        tokio::select! {
            read = tokio::time::timeout(wait, stream.read_buf(&mut self.buf)) => Ok(matches!(read, Ok(Ok(n)) if n > 0)),
            _ = shutdown.changed() => Ok(false),
        }
    }
}

/// How reading a request head ended.
enum Head {
    /// The head is the buffer's first bytes, this many.
    Complete(usize),
    /// Answered with this status, code and message, then the connection closes.
    Refused(ErrorCode, &'static str),
    /// The client closed or the connection failed.
    Closed,
}

/// Reads until `buf` holds a whole request head (where httparse, as pingora-proxy, says it
/// ends: bare LF line endings included), until `deadline`, and at most `max_bytes` of it. A
/// head httparse rejects counts as complete once its blank line is in: pingora-proxy answers it.
async fn read_head(stream: &mut Stream, buf: &mut BytesMut, deadline: Instant, max_bytes: usize) -> Head {
    let mut searched = 0;
    loop {
        match head_state(buf, searched, max_bytes) {
            HeadState::Complete(len) => return Head::Complete(len),
            HeadState::TooLarge => return Head::Refused(ErrorCode::HeadersTooLarge, HEAD_TOO_LARGE),
            HeadState::Incomplete => {}
        }
        searched = buf.len().saturating_sub(2);
        match tokio::time::timeout_at(deadline.into(), stream.read_buf(buf)).await {
            Ok(Ok(0) | Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
            Err(_) => return Head::Refused(ErrorCode::RequestTimeout, "the request head did not arrive in time"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HeadState {
    /// The head is the first this many bytes.
    Complete(usize),
    TooLarge,
    Incomplete,
}

/// Whether `buf` starts with a whole request head, looking for its blank line from `searched`
/// on (everything before was searched already).
fn head_state(buf: &[u8], searched: usize, max_bytes: usize) -> HeadState {
    if let Some(blank_line) = find_blank_line(buf, searched) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
        let end = match httparse::Request::new(&mut headers).parse(buf) {
            Ok(httparse::Status::Complete(len)) => Some(len),
            // A blank line inside a value's continuation: read on.
            Ok(httparse::Status::Partial) => None,
            Err(_) => Some(blank_line),
        };
        match end {
            Some(len) if len > max_bytes => return HeadState::TooLarge,
            Some(len) => return HeadState::Complete(len),
            None => {}
        }
    }
    if buf.len() > max_bytes { HeadState::TooLarge } else { HeadState::Incomplete }
}

const HEAD_TOO_LARGE: &str = "the request head is over the size limit";

/// Just past the first blank line (`\n\n` or `\n\r\n`) from `from` on: where a head ends at the
/// earliest.
fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.min(buf.len());
    buf[from..].iter().enumerate().find_map(|(at, &byte)| {
        let at = from + at;
        if byte != b'\n' {
            return None;
        }
        match (buf.get(at + 1), buf.get(at + 2)) {
            (Some(b'\n'), _) => Some(at + 2),
            (Some(b'\r'), Some(b'\n')) => Some(at + 3),
            _ => None,
        }
    })
}

/// Answers a request the gateway will not read (a head too slow or too large) and lets the
/// connection close.
async fn refuse(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    code: ErrorCode,
    message: &str,
    settings: &crate::config::ServerSettings,
) {
    out.clear();
    write_error(out, code, message, None, false);
    let _client_gone = write_timed(stream, out, settings.write_timeout.min(Duration::from_secs(1))).await;
}

/// A plain request, as the express lane relays it.
struct Plain<'a> {
    method: Method,
    path: &'a str,
    body_len: usize,
    close: bool,
    request_id: Option<&'a str>,
    forwarded_for: Option<&'a str>,
}

impl Front {
    async fn express(
        self: &Arc<Self>,
        stream: &mut Stream,
        conn: &mut Connection,
        head_len: usize,
        table: &Arc<Table>,
        shutdown: &ShutdownWatch,
    ) -> Next {
        let started = Instant::now();
        // Heads with bare LF line endings are pingora-proxy's to parse; so are large ones.
        if head_len > MAX_HEAD || has_bare_lf(&conn.buf[..head_len]) {
            return Next::Pingora;
        }
        // The head apart from the rest of the buffer (no copy), so the body can be read on
        // while the parsed head is in use; put back in front if pingora-proxy takes over.
        let mut head = conn.buf.split_to(head_len);
        let next = self.relay(stream, conn, &head, table, shutdown, started).await;
        if matches!(next, Next::Pingora) {
            head.unsplit(std::mem::take(&mut conn.buf));
            conn.buf = head;
        }
        next
    }

    async fn relay(
        self: &Arc<Self>,
        stream: &mut Stream,
        conn: &mut Connection,
        head: &[u8],
        table: &Arc<Table>,
        shutdown: &ShutdownWatch,
        started: Instant,
    ) -> Next {
        let settings = &table.server;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        // The head must end where the search for its blank line said (not earlier, at a bare
        // LF), or the two would disagree on where the body starts.
        let Ok(httparse::Status::Complete(parsed)) = request.parse(head) else {
            return Next::Pingora;
        };
        if parsed != head.len() {
            return Next::Pingora;
        }
        let Some(plain) = classify(&request, settings) else { return Next::Pingora };
        if plain.path == settings.health_path
            || plain.path == settings.ready_path
            || (!settings.openapi_path.is_empty() && plain.path == settings.openapi_path)
        {
            return Next::Pingora;
        }
        let Some(pool) = table.routes.find(&plain.method, plain.path).map(|index| &table.pools[index]) else {
            return Next::Pingora;
        };
        // However steadily it trickles, the body must be whole by its deadline.
        let body_deadline = tokio::time::Instant::now() + settings.body_timeout;
        while conn.buf.len() < plain.body_len {
            match tokio::time::timeout_at(body_deadline, read_more(stream, &mut conn.buf, settings.read_timeout)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Next::Close,
                Err(_) => {
                    let message = "the request body did not arrive in time";
                    refuse(stream, &mut conn.out, ErrorCode::RequestTimeout, message, settings).await;
                    return Next::Close;
                }
            }
        }
        // The request is whole in memory: until something has been sent upstream it can
        // still go to pingora-proxy.
        let idempotent = plain.method.is_idempotent();
        let request_id = plain.request_id.map_or_else(proxy::new_request_id, str::to_owned);
        conn.out.clear();
        write_request_head(&mut conn.out, &request, &request_id, plain.forwarded_for, conn.client_ip.as_deref());
        conn.out.extend_from_slice(&conn.buf[..plain.body_len]);
        let _in_flight = InFlight::new(&self.gateway.metrics);
        let mut upstream_buf = BytesMut::with_capacity(4096);
        // The first attempt's upstream, once it failed; and whether the retry may go to it
        // again (on a fresh connection: its pooled one was closed and no other is healthy).
        let mut failed: Option<Arc<Upstream>> = None;
        let mut retry_same = false;
        let (upstream, outcome) = loop {
            let upstream = match &failed {
                None => match pool.select(&[]) {
                    Some(upstream) => upstream,
                    None => return Next::Pingora,
                },
                Some(first) if retry_same => first.clone(),
                Some(first) => match pool.select(std::slice::from_ref(&first.addr)) {
                    Some(upstream) => upstream,
                    None => break (first.clone(), Err(io::Error::from(io::ErrorKind::NotConnected))),
                },
            };
            let fresh_only = failed.is_some();
            let Some((mut upstream_stream, reused)) = connect(&upstream, pool, table, idempotent, fresh_only).await
            else {
                if failed.is_none() {
                    // Nothing was sent: pingora-proxy picks another upstream or answers.
                    return Next::Pingora;
                }
                break (upstream, Err(io::Error::from(io::ErrorKind::ConnectionRefused)));
            };
            upstream.metrics.requests.inc();
            match exchange(&mut upstream_stream, &conn.out, &mut upstream_buf, table).await {
                Ok(response) => break (upstream, Ok((upstream_stream, response))),
                Err(failure) => {
                    if failure.nothing_received {
                        pool.unanswered(&upstream, reused, idempotent, &failure.error);
                    }
                    // Only idempotent requests go again, once: to another upstream, or to the
                    // same one on a fresh connection when its pooled one turned out closed.
                    let stale = failure.nothing_received && reused;
                    let alternative = pool.has_alternative(std::slice::from_ref(&upstream.addr));
                    if idempotent && failed.is_none() && (alternative || stale) {
                        tracing::debug!(upstream = %upstream.label, error = %failure.error, "retrying on another connection");
                        pool.metrics.retries.inc();
                        retry_same = !alternative;
                        upstream_buf.clear();
                        failed = Some(upstream);
                        continue;
                    }
                    break (upstream, Err(failure.error));
                }
            }
        };
        let tries = if failed.is_some() { 2 } else { 1 };
        let (mut upstream_stream, response) = match outcome {
            Ok(exchanged) => exchanged,
            Err(error) => {
                let (code, message) = if error.kind() == io::ErrorKind::TimedOut {
                    (ErrorCode::GatewayTimeout, "the upstream did not answer in time")
                } else {
                    (ErrorCode::BadGateway, "the upstream failed to answer")
                };
                let status = code.status().as_u16();
                answer_error(stream, &mut conn.out, code, message, &request_id, &plain, settings).await;
                self.finish(&plain, &request_id, status, pool, &upstream, started, tries, 0, Some(&error), table);
                conn.buf.clear();
                return Next::Close;
            }
        };
        let keep_downstream = !plain.close && !*shutdown.borrow() && response.framing != Framing::UntilClose;
        conn.out.clear();
        let chunked = response.framing == Framing::Chunked;
        write_response_head(&mut conn.out, &upstream_buf[..response.head_len], &request_id, keep_downstream, chunked);
        let relayed = relay_body(
            stream,
            &mut upstream_stream,
            &mut upstream_buf,
            response.head_len,
            response.framing,
            &mut conn.out,
            &mut conn.buf,
            table,
        )
        .await;
        let (status, bytes, error) = match relayed {
            Ok(relayed) => {
                if relayed.reusable && response.keep_alive {
                    upstream.put_idle(upstream_stream, settings.upstream_keepalive_pool_size);
                }
                (response.status, relayed.body_bytes, None)
            }
            Err(cut) if !cut.head_sent => {
                // Nothing reached the client yet: it gets a JSON 502 rather than a bare close.
                let message = "the upstream sent a malformed response";
                answer_error(stream, &mut conn.out, ErrorCode::BadGateway, message, &request_id, &plain, settings)
                    .await;
                (ErrorCode::BadGateway.status().as_u16(), 0, Some(cut.error))
            }
            Err(cut) => (response.status, cut.body_bytes, Some(cut.error)),
        };
        conn.buf.advance(plain.body_len);
        self.finish(&plain, &request_id, status, pool, &upstream, started, tries, bytes, error.as_ref(), table);
        if error.is_none() && keep_downstream { Next::KeepAlive } else { Next::Close }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        plain: &Plain<'_>,
        request_id: &str,
        status: u16,
        pool: &Arc<Pool>,
        upstream: &Upstream,
        started: Instant,
        tries: usize,
        bytes: usize,
        error: Option<&io::Error>,
        table: &Table,
    ) {
        proxy::finish(
            &self.gateway,
            &Finished {
                started,
                request_id,
                method: plain.method.as_str(),
                path: plain.path,
                status,
                pool: Some(pool),
                upstream: Some(upstream),
                tries,
                bytes,
                error: error.map(ToString::to_string),
                access_log: table.server.access_log,
            },
        );
    }
}

/// Whether a parsed request is plain enough for the express lane.
fn classify<'a>(request: &httparse::Request<'_, 'a>, settings: &crate::config::ServerSettings) -> Option<Plain<'a>> {
    if request.version != Some(1) {
        return None;
    }
    let method = match request.method? {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "HEAD" => Method::HEAD,
        "OPTIONS" => Method::OPTIONS,
        _ => return None,
    };
    let target = request.path?;
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut body_len = None;
    let mut close = false;
    let mut request_id = None;
    let mut seen_request_id = false;
    let mut forwarded_for = None;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok()?.trim();
            if body_len.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            body_len = Some(value.parse::<usize>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            let value = std::str::from_utf8(header.value).ok()?;
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case("keep-alive") && !token.is_empty() {
                    return None;
                }
            }
        } else if name.eq_ignore_ascii_case(REQUEST_ID) {
            // The first one counts (as in the pingora-proxy lane).
            if !seen_request_id {
                request_id = std::str::from_utf8(header.value).ok().filter(|id| proxy::is_acceptable_request_id(id));
            }
            seen_request_id = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            if forwarded_for.is_some() {
                return None;
            }
            forwarded_for = Some(std::str::from_utf8(header.value).ok()?);
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_EXPRESS_BODY || body_len > settings.max_body_bytes {
        return None;
    }
    Some(Plain { method, path, body_len, close, request_id, forwarded_for })
}

/// Headers that describe one hop, not the message: never copied across the gateway.
fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// The request line and headers as the upstream gets them.
fn write_request_head(
    out: &mut Vec<u8>,
    request: &httparse::Request<'_, '_>,
    request_id: &str,
    forwarded_for: Option<&str>,
    client_ip: Option<&str>,
) {
    out.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for header in request.headers.iter() {
        if is_hop_by_hop(header.name)
            || header.name.eq_ignore_ascii_case(REQUEST_ID)
            || header.name.eq_ignore_ascii_case("x-forwarded-for")
        {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    let forwarded: [Option<&str>; 2] = [forwarded_for, client_ip];
    let mut names = forwarded.iter().flatten();
    if let Some(first) = names.next() {
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(first.as_bytes());
        for next in names {
            out.extend_from_slice(b", ");
            out.extend_from_slice(next.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The upstream's status line and headers as the client gets them: hop-by-hop headers and the
/// upstream's own request id replaced by the gateway's.
fn write_response_head(out: &mut Vec<u8>, head: &[u8], request_id: &str, keep_alive: bool, chunked: bool) {
    let mut lines = head.split(|&b| b == b'\n');
    if let Some(status_line) = lines.next() {
        // The client gets HTTP/1.1 whatever the upstream spoke; the gateway decides about
        // the client's connection itself.
        out.extend_from_slice(b"HTTP/1.1");
        out.extend_from_slice(status_line.get(8..).unwrap_or_default());
        out.push(b'\n');
    }
    for line in lines {
        let line_trimmed = line.strip_suffix(b"\r").unwrap_or(line);
        if line_trimmed.is_empty() {
            continue;
        }
        let name = line_trimmed.split(|&b| b == b':').next().unwrap_or_default();
        let name = std::str::from_utf8(name).unwrap_or_default().trim();
        // A chunked body's length is its framing's: a Content-Length beside it is dropped.
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(REQUEST_ID)
            || (chunked && name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        out.extend_from_slice(line_trimmed);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends a JSON error the gateway answers itself (the connection closes after it); a client
/// already gone is nobody to tell.
#[allow(clippy::too_many_arguments)]
async fn answer_error(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    code: ErrorCode,
    message: &str,
    request_id: &str,
    plain: &Plain<'_>,
    settings: &crate::config::ServerSettings,
) {
    out.clear();
    write_error(out, code, message, Some(request_id), plain.method == Method::HEAD);
    let _client_gone = write_timed(stream, out, settings.write_timeout).await;
}

/// A JSON error the gateway answers itself, closing the connection after it.
fn write_error(out: &mut Vec<u8>, code: ErrorCode, message: &str, request_id: Option<&str>, head_only: bool) {
    use std::io::Write as _;
    let body = proxy::error_body(code, message);
    let status = code.status();
    let reason = status.canonical_reason().unwrap_or("");
    let status = status.as_u16();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-served-by: gateway\r\n",
        body.len()
    );
    if let Some(request_id) = request_id {
        let _ = write!(out, "x-request-id: {request_id}\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
}

/// A pooled connection to `upstream` (unless `fresh_only`), or a new one. `None` when it cannot be reached: it is
/// taken out (until its health check passes) and the request goes to pingora-proxy, which
/// picks another upstream or answers the error.
async fn connect(
    upstream: &Arc<Upstream>,
    pool: &Pool,
    table: &Table,
    idempotent: bool,
    fresh_only: bool,
) -> Option<(TcpStream, bool)> {
    let settings = &table.server;
    while !fresh_only && let Some(idle) = upstream.take_idle(settings.upstream_idle_timeout) {
        // An idle connection the upstream wrote to (a close, a 408, bytes past a response)
        // must not carry a request: its answer would be read as this request's. What the
        // runtime's last I/O poll saw is free to ask; a request that is never sent twice
        // asks the socket itself as well (see `proxy::closed_by_peer`).
        let suspect = !idempotent || seen_readable(&idle);
        if !(suspect && proxy::closed_by_peer(idle.as_raw_fd())) {
            return Some((idle, true));
        }
    }
    let connected = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(upstream.addr))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
    match connected {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            Some((stream, false))
        }
        Err(error) => {
            pool.unreachable(upstream, &error);
            None
        }
    }
}

/// Whether the runtime has seen `stream` become readable since it was last read to the end:
/// no syscall, only the readiness the last I/O poll recorded.
fn seen_readable(stream: &TcpStream) -> bool {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    stream.poll_read_ready(&mut context).is_ready()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct ResponseHead {
    status: u16,
    head_len: usize,
    framing: Framing,
    /// The upstream connection may serve another request afterwards.
    keep_alive: bool,
}

struct Failure {
    error: io::Error,
    /// Not one byte of a response arrived.
    nothing_received: bool,
}

/// Sends the request and reads the response head into `buf`.
async fn exchange(
    upstream: &mut TcpStream,
    request: &[u8],
    buf: &mut BytesMut,
    table: &Table,
) -> Result<ResponseHead, Failure> {
    let settings = &table.server;
    let failed = |error: io::Error, nothing_received: bool| Failure { error, nothing_received };
    match tokio::time::timeout(settings.write_timeout, upstream.write_all(request)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(failed(error, true)),
        Err(_) => return Err(failed(io::ErrorKind::TimedOut.into(), false)),
    }
    let head_request = request.starts_with(b"HEAD ");
    let mut searched = 0;
    loop {
        // A blank line (CRLF or, from a lax upstream, bare LF) may end the head: the parser
        // says where exactly.
        let blank_line = find_head_end(buf, searched).is_some() || buf[searched..].windows(2).any(|w| w == b"\n\n");
        if blank_line {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let invalid = || failed(io::Error::new(io::ErrorKind::InvalidData, "invalid response head"), false);
            let head_len = match response.parse(buf) {
                Ok(httparse::Status::Complete(head_len)) => head_len,
                // The blank line was inside a header value: read on.
                Ok(httparse::Status::Partial) => 0,
                Err(_) => return Err(invalid()),
            };
            if head_len > 0 {
                let status = response.code.unwrap_or(0);
                if (100..200).contains(&status) {
                    if status == 101 {
                        return Err(invalid());
                    }
                    // An interim response nobody asked for: dropped, the final one follows.
                    buf.advance(head_len);
                    searched = 0;
                    continue;
                }
                let mut length = None;
                let mut chunked = false;
                let mut keep_alive = response.version == Some(1);
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        let value = std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                        match (length, value) {
                            (None, Some(value)) => length = Some(value),
                            (Some(earlier), Some(value)) if earlier == value => {}
                            _ => return Err(invalid()),
                        }
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        let value = String::from_utf8_lossy(header.value);
                        if value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")) {
                            chunked = true;
                        } else {
                            return Err(invalid());
                        }
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        let value = String::from_utf8_lossy(header.value);
                        if value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                            keep_alive = false;
                        }
                    }
                }
                let framing = if head_request || status == 204 || status == 304 {
                    Framing::Length(0)
                } else if chunked {
                    Framing::Chunked
                } else if let Some(length) = length {
                    Framing::Length(length)
                } else {
                    keep_alive = false;
                    Framing::UntilClose
                };
                return Ok(ResponseHead { status, head_len, framing, keep_alive });
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(failed(io::Error::new(io::ErrorKind::InvalidData, "response head too large"), false));
        }
        searched = buf.len().saturating_sub(3);
        let before = buf.len();
        match read_timed(upstream, buf, settings.read_timeout).await {
            Ok(0) => return Err(failed(io::ErrorKind::UnexpectedEof.into(), before == 0)),
            Ok(_) => {}
            // A timeout is not a closed connection: the upstream may be working on it.
            Err(error) if error.kind() == io::ErrorKind::TimedOut => return Err(failed(error, false)),
            Err(error) => return Err(failed(error, before == 0)),
        }
    }
}

struct Relayed {
    body_bytes: usize,
    /// The response ended exactly where its framing said: the connection may be reused.
    reusable: bool,
}

/// Writes `out` (the response head) and the body after it: what `buf` holds past `head_len`,
/// then what the upstream sends until the framing says the body ended. Each write is flushed,
/// so a stream's events reach the client as the upstream writes them; `read_timeout_ms` bounds
/// each wait for the upstream, never the whole body. While waiting, the client is watched
/// ([`read_upstream`]); what it sends meanwhile is appended to `client_buf`.
#[allow(clippy::too_many_arguments)]
async fn relay_body(
    downstream: &mut Stream,
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    head_len: usize,
    framing: Framing,
    out: &mut Vec<u8>,
    client_buf: &mut BytesMut,
    table: &Table,
) -> Result<Relayed, Cut> {
    let settings = &table.server;
    buf.advance(head_len);
    let mut chunks = ChunkScanner::default();
    let mut remaining = match framing {
        Framing::Length(length) => length,
        _ => usize::MAX,
    };
    let mut body_bytes = 0;
    let mut head_sent = false;
    let mut watch_client = true;
    let cut = |error: io::Error, head_sent: bool, body_bytes: usize| Cut { error, head_sent, body_bytes };
    loop {
        let take = match framing {
            Framing::Length(_) => buf.len().min(remaining),
            Framing::Chunked => chunks.feed(buf).map_err(|()| {
                cut(io::Error::new(io::ErrorKind::InvalidData, "bad chunk framing"), head_sent, body_bytes)
            })?,
            Framing::UntilClose => buf.len(),
        };
        if !head_sent {
            out.extend_from_slice(&buf[..take]);
            write_timed(downstream, out, settings.write_timeout).await.map_err(|e| cut(e, true, body_bytes))?;
            head_sent = true;
        } else if take > 0 {
            write_timed(downstream, &buf[..take], settings.write_timeout)
                .await
                .map_err(|e| cut(e, true, body_bytes))?;
        }
        body_bytes += take;
        buf.advance(take);
        if framing != Framing::UntilClose {
            remaining -= take.min(remaining);
        }
        let done = match framing {
            Framing::Length(_) => remaining == 0,
            Framing::Chunked => chunks.is_done(),
            Framing::UntilClose => false,
        };
        if done {
            return Ok(Relayed { body_bytes, reusable: buf.is_empty() });
        }
        buf.clear();
        let read = read_upstream(upstream, buf, downstream, client_buf, &mut watch_client, settings.read_timeout);
        match read.await {
            Ok(0) if framing == Framing::UntilClose => return Ok(Relayed { body_bytes, reusable: false }),
            Ok(0) => return Err(cut(io::ErrorKind::UnexpectedEof.into(), true, body_bytes)),
            Ok(_) => {}
            Err(error) => return Err(cut(error, true, body_bytes)),
        }
    }
}

/// Reads what the upstream sends next into `buf`, within `timeout`, watching the client
/// meanwhile (while `watch_client`): a client that closes its connection ends the relay at
/// once, where a quiet stream would otherwise hold its upstream connection until the next
/// write to the client failed. Bytes the client sends (a pipelined request) go to
/// `client_buf`, and the client is not watched after them.
async fn read_upstream(
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    client: &mut Stream,
    client_buf: &mut BytesMut,
    watch_client: &mut bool,
    timeout: Duration,
) -> io::Result<usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || io::Error::from(io::ErrorKind::TimedOut);
    while *watch_client {
        tokio::select! {
            read = upstream.read_buf(buf) => return read,
            sent = client.read_buf(client_buf) => match sent {
                Ok(0) | Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the client closed the connection"));
                }
                Ok(_) => *watch_client = false,
            },
            () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
        }
    }
    tokio::time::timeout_at(deadline, upstream.read_buf(buf)).await.unwrap_or_else(|_| Err(timed_out()))
}

/// A response body that could not be relayed whole.
struct Cut {
    error: io::Error,
    /// The response head (and so the status) reached the client.
    head_sent: bool,
    body_bytes: usize,
}

async fn write_timed(stream: &mut Stream, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    match tokio::time::timeout(timeout, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Appends what `reader` has to `buf`: the count (0 at end of stream), or `TimedOut`.
async fn read_timed<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut BytesMut,
    timeout: Duration,
) -> io::Result<usize> {
    tokio::time::timeout(timeout, reader.read_buf(buf)).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Reads more bytes into `buf`; end of stream is an error (a request was cut off).
async fn read_more(stream: &mut Stream, buf: &mut BytesMut, timeout: Duration) -> io::Result<()> {
    match read_timed(stream, buf, timeout).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Whether a line of `head` ends in LF alone.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter().enumerate().any(|(at, &byte)| byte == b'\n' && (at == 0 || head[at - 1] != b'\r'))
}

/// The end of the head (just past its blank line), looking from `from` on.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(4).position(|w| w == b"\r\n\r\n").map(|at| from + at + 4)
}

/// Follows chunked framing (RFC 9112 §7.1) over the bytes of a body as they arrive, to know
/// where it ends; the bytes themselves pass through unchanged.
#[derive(Default, Debug)]
struct ChunkScanner {
    state: ChunkState,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    SizeStart,
    Size(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

impl ChunkScanner {
    /// Consumes bytes of `input` up to the end of the body; returns how many belong to it.
    fn feed(&mut self, input: &[u8]) -> Result<usize, ()> {
        use ChunkState::*;
        let mut at = 0;
        while at < input.len() && self.state != Done {
            let byte = input[at];
            self.state = match self.state {
                SizeStart | Size(_) => {
                    let value = if let Size(value) = self.state { value } else { 0 };
                    match (byte as char).to_digit(16) {
                        Some(digit) if value < (1 << 40) => Size(value * 16 + u64::from(digit)),
                        Some(_) => return Err(()),
                        None if self.state == SizeStart => return Err(()),
                        None if byte == b';' || byte == b' ' || byte == b'\t' => Extension(value),
                        None if byte == b'\r' => SizeLf(value),
                        None => return Err(()),
                    }
                }
                Extension(value) => {
                    if byte == b'\r' {
                        SizeLf(value)
                    } else {
                        Extension(value)
                    }
                }
                SizeLf(value) => match (byte, value) {
                    (b'\n', 0) => TrailerStart,
                    (b'\n', value) => Data(value),
                    _ => return Err(()),
                },
                Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len() - at);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { DataCr } else { Data(left) };
                    continue;
                }
                DataCr if byte == b'\r' => DataLf,
                DataLf if byte == b'\n' => SizeStart,
                TrailerStart if byte == b'\r' => EndLf,
                TrailerStart | TrailerLine if byte != b'\r' => TrailerLine,
                TrailerLine => TrailerLineLf,
                TrailerLineLf if byte == b'\n' => TrailerStart,
                EndLf if byte == b'\n' => Done,
                _ => return Err(()),
            };
            at += 1;
        }
        Ok(at)
    }

    fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_their_framing_says() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: yes\r\n\r\nNEXT";
        let mut scanner = ChunkScanner::default();
        assert_eq!(scanner.feed(body), Ok(body.len() - 4));
        assert!(scanner.is_done());

        // The same body a byte at a time.
        let mut scanner = ChunkScanner::default();
        let mut consumed = 0;
        for byte in body.iter() {
            consumed += scanner.feed(std::slice::from_ref(byte)).unwrap();
            if scanner.is_done() {
                break;
            }
        }
        assert_eq!(consumed, body.len() - 4);

        let mut scanner = ChunkScanner::default();
        assert_eq!(scanner.feed(b"0\r\n\r\n"), Ok(5));
        assert!(scanner.is_done());

        for bad in [&b"x\r\n"[..], b"\r\n", b"5\r\nhelloX", b"5\nhello"] {
            assert!(ChunkScanner::default().feed(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut scanner = ChunkScanner::default();
        assert_eq!(scanner.feed(b"a\r\n0123"), Ok(7));
        assert!(!scanner.is_done(), "six data bytes still to come");
    }

    /// A request head made of pieces chosen to probe framing: valid lines, bare CR or LF, obs-fold,
    /// spaces around names, duplicate or conflicting length headers, NULs, random bytes; maybe
    /// unterminated, maybe followed by a body or a second request.
    fn random_request(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
        use rand::Rng;
        use rand::seq::IndexedRandom;
        const LINES: &[&[u8]] = &[
            b"GET / HTTP/1.1",
            b"POST /api/applications HTTP/1.1",
            b"PUT /api/applications/t?x=1 HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.0",
            b"GET /a\x00b HTTP/1.1",
            b"GET http://h/ HTTP/1.1",
            b"",
        ];
        const HEADERS: &[&[u8]] = &[
            b"Host: t",
            b"Content-Length: 5",
            b"Content-Length: 0",
            b"Content-Length: 12",
            b"Content-Length:  7 ",
            b"Content-Length: +5",
            b"Content-Length: -1",
            b"Content-Length: 5, 5",
            b"Content-Length: 99999999999999999999999",
            b"Content-Length : 5",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: chunked, identity",
            b"Transfer Encoding: chunked",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Expect: 100-continue",
            b"X-Request-Id: abc",
            b"X-A: b",
            b" folded continuation",
            b"\tfolded continuation",
            b"X-Nul: a\x00b",
            b"X-Cr: a\rb",
            b":no-name",
            b"X-Empty:",
        ];
        const ENDINGS: &[&[u8]] = &[b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"];
        let mut out = Vec::new();
        for _ in 0..rng.random_range(0..2) {
            out.extend_from_slice(ENDINGS.choose(rng).unwrap());
        }
        out.extend_from_slice(LINES.choose(rng).unwrap());
        out.extend_from_slice(ENDINGS.choose(rng).unwrap());
        for _ in 0..rng.random_range(0..6) {
            if rng.random_range(0..8) == 0 {
                let len = rng.random_range(1..12);
                out.extend((0..len).map(|_| rng.random::<u8>()));
            } else {
                out.extend_from_slice(HEADERS.choose(rng).unwrap());
            }
            out.extend_from_slice(ENDINGS.choose(rng).unwrap());
        }
        if rng.random_range(0..6) != 0 {
            out.extend_from_slice(ENDINGS.choose(rng).unwrap());
        }
        let len = rng.random_range(0..20);
        out.extend((0..len).map(|_| *b"0123456789\r\nGET / HTTP/1.1".choose(rng).unwrap()));
        out
    }

    /// The express lane and httparse agree on where a request ends, however its bytes arrive:
    /// the head ends where httparse says (and not before all of it is in), and a request the
    /// express lane relays has exactly one Content-Length, digits only, and no Transfer-Encoding,
    /// so its body ends where any HTTP/1.1 parser puts it.
    #[test]
    fn the_express_lane_and_httparse_agree_on_where_requests_end() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_2026);
        let settings = crate::config::ServerSettings::default();
        let max = 64 * 1024;
        let (mut complete, mut relayed) = (0, 0);
        for case in 0..20_000 {
            let request = random_request(&mut rng);
            let shown = String::from_utf8_lossy(&request).into_owned();
            // Fed in random pieces, as read_head sees them.
            let mut fed = 0;
            let mut searched = 0;
            let state = loop {
                fed = (fed + rng.random_range(1..8)).min(request.len());
                let prefix = &request[..fed];
                let state = head_state(prefix, searched, max);
                let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
                match httparse::Request::new(&mut headers).parse(prefix) {
                    Ok(httparse::Status::Complete(len)) => {
                        assert_eq!(state, HeadState::Complete(len), "case {case}, {fed} bytes in: {shown:?}")
                    }
                    Ok(httparse::Status::Partial) => {
                        assert_eq!(state, HeadState::Incomplete, "case {case}, {fed} bytes in: {shown:?}")
                    }
                    Err(_) => {}
                }
                if state != HeadState::Incomplete || fed == request.len() {
                    break state;
                }
                searched = fed.saturating_sub(2);
            };
            let HeadState::Complete(head_len) = state else { continue };
            complete += 1;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(len)) = parsed.parse(&request[..head_len]) else { continue };
            assert_eq!(len, head_len, "{shown:?}");
            let Some(plain) = classify(&parsed, &settings) else { continue };
            if has_bare_lf(&request[..head_len]) {
                continue;
            }
            relayed += 1;
            let named = |name: &'static str| parsed.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
            assert_eq!(named("transfer-encoding").count(), 0, "{shown:?}");
            let lengths: Vec<&[u8]> = named("content-length").map(|h| h.value).collect();
            let expected = match lengths.as_slice() {
                [] => 0,
                [value] => {
                    let text = std::str::from_utf8(value).unwrap().trim_matches([' ', '\t']);
                    assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()), "{shown:?}");
                    text.parse().unwrap()
                }
                more => panic!("{} Content-Lengths relayed: {shown:?}", more.len()),
            };
            assert_eq!(plain.body_len, expected, "{shown:?}");
        }
        assert!(complete > 5_000 && relayed > 200, "the generator reaches every branch: {complete} {relayed}");
    }

    #[test]
    fn heads_too_large_or_incomplete() {
        assert_eq!(head_state(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nbody", 0, 1024), HeadState::Complete(27));
        assert_eq!(head_state(b"GET / HTTP/1.1\nHost: t\n\n", 0, 1024), HeadState::Complete(24));
        assert_eq!(head_state(b"\r\nGET / HTTP/1.1\r\n\r\n", 0, 1024), HeadState::Complete(20));
        assert_eq!(head_state(b"GET / HTTP/1.1\r\nHost: t\r\n", 0, 1024), HeadState::Incomplete);
        assert_eq!(head_state(&[b'a'; 2000], 0, 1024), HeadState::TooLarge);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend_from_slice(&[b'a'; 2000]);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head_state(&big, 0, 1024), HeadState::TooLarge);
    }

    #[test]
    fn heads_are_found_across_reads() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n", 14), Some(18));
    }

    fn parse_and_classify(raw: &[u8], check: impl FnOnce(Option<Plain<'_>>)) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = request.parse(raw) else { panic!("parses") };
        check(classify(&request, &crate::config::ServerSettings::default()));
    }

    #[test]
    fn only_plain_requests_take_the_express_lane() {
        parse_and_classify(b"POST /a?b=1 HTTP/1.1\r\nContent-Length: 2\r\nX-Request-Id: abc\r\n\r\n{}", |plain| {
            let plain = plain.expect("plain");
            assert_eq!((plain.path, plain.body_len, plain.request_id, plain.close), ("/a", 2, Some("abc"), false));
        });
        parse_and_classify(b"GET / HTTP/1.1\r\nConnection: close\r\nX-Request-Id: has space\r\n\r\n", |plain| {
            let plain = plain.expect("plain");
            assert!(plain.close);
            assert_eq!(plain.request_id, None, "an unacceptable id is replaced");
        });
        for raw in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
            b"CONNECT host:443 HTTP/1.1\r\n\r\n",
            b"GET http://host/ HTTP/1.1\r\n\r\n",
        ] {
            parse_and_classify(raw, |plain| assert!(plain.is_none(), "{}", String::from_utf8_lossy(raw)));
        }
    }

    #[test]
    fn the_first_request_id_counts() {
        parse_and_classify(b"GET / HTTP/1.1\r\nX-Request-Id: first\r\nX-Request-Id: second\r\n\r\n", |plain| {
            assert_eq!(plain.expect("plain").request_id, Some("first"));
        });
        parse_and_classify(b"GET / HTTP/1.1\r\nX-Request-Id: bad one\r\nX-Request-Id: second\r\n\r\n", |plain| {
            assert_eq!(plain.expect("plain").request_id, None, "the first is unacceptable: a new one is made");
        });
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_wrote_to_is_suspect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!seen_readable(&client), "an idle connection nobody wrote to");
        server.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(seen_readable(&client), "bytes nobody asked for");
        assert!(proxy::closed_by_peer(client.as_raw_fd()), "and the socket confirms it");
    }

    #[test]
    fn heads_are_rewritten_for_each_hop() {
        let raw = b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-Request-Id: old\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(raw).unwrap();
        let mut out = Vec::new();
        write_request_head(&mut out, &request, "id1", Some("10.0.0.1"), Some("127.0.0.1"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nHost: h\r\nx-request-id: id1\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n\r\n"
        );

        let response_head = |head: &[u8], keep_alive: bool, chunked: bool| {
            let mut out = Vec::new();
            write_response_head(&mut out, head, "id1", keep_alive, chunked);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            response_head(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: keep-alive\r\nx-request-id: theirs\r\nx-served-by: chat-write\r\n\r\n",
                false,
                false
            ),
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-served-by: chat-write\r\nx-request-id: id1\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            response_head(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n", true, true),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-request-id: id1\r\n\r\n",
            "a chunked body's Content-Length is dropped; the client gets HTTP/1.1"
        );
    }
}
