//! `chatmesh-stub`: a tiny HTTP/1.1 upstream for gateway tests. Every response names the stub
//! (`X-Served-By: <name>`) and echoes what arrived: method, path, the `X-Request-Id` it got
//! and the body size. `?delay_ms=N` answers after N ms, `?status=N` answers N,
//! `?framing=chunked` sends the body in chunks, `?framing=close` without a length, closing
//! the connection after it, and `?framing=badchunk` a chunked head with broken framing; `--drop`
//! closes every connection without answering (except `/healthz`), as a crashing process
//! would. `GET /stats` counts the requests seen, by method.
//!
//! Live streams: a `GET` with `Accept: text/event-stream` answers Server-Sent Events (chunked,
//! each event written and sent at once):
//! `?events=N` events (default 5), `?interval_ms=M` apart (default 100), with a `: keep-alive`
//! comment every `?keepalive_ms=K` while it waits (default none), then the end of the body. A
//! WebSocket handshake (`Upgrade: websocket`) on any path opens a WebSocket that echoes every
//! text and binary frame until the client closes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(name = "chatmesh-stub")]
struct Cli {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The name answered in X-Served-By
    #[arg(long, default_value = "stub")]
    name: String,
    /// Close connections without answering (except /healthz and /stats)
    #[arg(long)]
    drop: bool,
}

type Stats = Arc<Mutex<BTreeMap<String, u64>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(&cli.listen).await?;
    println!("{} listening on http://{}", cli.name, listener.local_addr()?);
    let name: Arc<str> = cli.name.into();
    let stats = Stats::default();
    loop {
        let (socket, _) = listener.accept().await?;
        let (name, stats) = (name.clone(), stats.clone());
        tokio::spawn(async move {
            let _ = serve_connection(socket, &name, cli.drop, &stats).await;
        });
    }
}

async fn serve_connection(mut socket: TcpStream, name: &str, drop: bool, stats: &Stats) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let read = socket.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split_whitespace();
        let method = request_line.next().unwrap_or("").to_owned();
        let target = request_line.next().unwrap_or("/").to_owned();
        let mut content_length = 0usize;
        let mut request_id = String::new();
        let mut forwarded_for = String::new();
        let mut close = false;
        let mut chunked = false;
        let mut websocket_key = None;
        let mut event_stream = false;
        for line in lines {
            let Some((key, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "x-request-id" => request_id = value.to_owned(),
                "x-forwarded-for" => forwarded_for = value.to_owned(),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().ends_with("chunked"),
                "sec-websocket-key" => websocket_key = Some(value.to_owned()),
                "accept" => event_stream = value.contains("text/event-stream"),
                _ => {}
            }
        }
        if chunked {
            buf.drain(..head_end);
            let Some(decoded) = read_chunked(&mut socket, &mut buf).await? else { return Ok(()) };
            content_length = decoded;
        } else {
            while buf.len() < head_end + content_length {
                let mut chunk = [0u8; 16384];
                let read = socket.read(&mut chunk).await?;
                if read == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..read]);
            }
            buf.drain(..head_end + content_length);
        }

        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let param = |key: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .map(str::to_owned)
        };
        let internal = path == "/healthz" || path == "/stats";
        if !internal {
            *stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(method.clone()).or_default() += 1;
            if drop {
                return Ok(());
            }
        }
        if let Some(key) = websocket_key {
            return echo_websocket(socket, buf, &key, name).await;
        }
        if method == "GET" && event_stream {
            let number = |key: &str, default: u64| param(key).and_then(|v| v.parse().ok()).unwrap_or(default);
            let events = number("events", 5);
            let interval = Duration::from_millis(number("interval_ms", 100));
            let keepalive = Duration::from_millis(number("keepalive_ms", 0));
            send_events(&mut socket, name, events, interval, keepalive).await?;
            if close {
                return Ok(());
            }
            continue;
        }
        if let Some(ms) = param("delay_ms").and_then(|v| v.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let status: u16 = param("status").and_then(|v| v.parse().ok()).unwrap_or(200);
        let body = if path == "/stats" {
            serde_json::to_string(&*stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner))?
        } else {
            serde_json::json!({
                "served_by": name,
                "method": method,
                "path": path,
                "request_id": request_id,
                "forwarded_for": forwarded_for,
                "body_bytes": content_length,
            })
            .to_string()
        };
        let head = format!("HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\nx-served-by: {name}\r\n");
        // A HEAD response announces the body a GET would get and sends none.
        let sent_body = if method == "HEAD" { "" } else { body.as_str() };
        match param("framing").as_deref() {
            Some("chunked") => {
                // Three chunks, each in its own write, and a trailer.
                socket.write_all(format!("{head}transfer-encoding: chunked\r\n\r\n").as_bytes()).await?;
                let third = sent_body.len() / 3;
                for part in [&sent_body[..third], &sent_body[third..2 * third], &sent_body[2 * third..]] {
                    socket.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes()).await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                socket.write_all(b"0\r\nx-trailer: end\r\n\r\n").await?;
            }
            Some("badchunk") => {
                socket.write_all(format!("{head}transfer-encoding: chunked\r\n\r\nnot-hex\r\n").as_bytes()).await?;
                return Ok(());
            }
            Some("close") => {
                socket.write_all(format!("{head}connection: close\r\n\r\n{sent_body}").as_bytes()).await?;
                return Ok(());
            }
            _ => {
                socket.write_all(format!("{head}content-length: {}\r\n\r\n{sent_body}", body.len()).as_bytes()).await?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// Answers Server-Sent Events: the head alone, then `events` events `interval` apart, each in
/// its own chunk and its own write, with a keep-alive comment every `keepalive` (when not zero)
/// while waiting for the next one.
async fn send_events(
    socket: &mut TcpStream,
    name: &str,
    events: u64,
    interval: Duration,
    keepalive: Duration,
) -> std::io::Result<()> {
    async fn chunk(socket: &mut TcpStream, text: &str) -> std::io::Result<()> {
        socket.write_all(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes()).await
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         transfer-encoding: chunked\r\nx-served-by: {name}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    for number in 1..=events {
        if number > 1 {
            let next = tokio::time::Instant::now() + interval;
            while !keepalive.is_zero() && tokio::time::Instant::now() + keepalive < next {
                tokio::time::sleep(keepalive).await;
                chunk(socket, ": keep-alive\n\n").await?;
            }
            tokio::time::sleep_until(next).await;
        }
        chunk(socket, &format!("id: {number}\nevent: tick\ndata: {{\"n\":{number},\"served_by\":\"{name}\"}}\n\n"))
            .await?;
    }
    socket.write_all(b"0\r\n\r\n").await
}

/// Completes the WebSocket handshake of a request whose head has been read (`rest` holds what
/// arrived after it), then echoes every text and binary frame until the client closes.
async fn echo_websocket(mut socket: TcpStream, rest: Vec<u8>, key: &str, name: &str) -> std::io::Result<()> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let accept = derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {accept}\r\nx-served-by: {name}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    let mut websocket = tokio_tungstenite::WebSocketStream::from_partially_read(socket, rest, Role::Server, None).await;
    while let Some(message) = websocket.next().await {
        match message.map_err(std::io::Error::other)? {
            message @ (Message::Text(_) | Message::Binary(_)) => {
                websocket.send(message).await.map_err(std::io::Error::other)?;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    // The close handshake is answered by the next poll after a Close arrives.
    let _ = websocket.close(None).await;
    Ok(())
}

/// Reads a chunked body off the front of `buf` (reading more as needed) and removes it; its
/// decoded length, or `None` when the connection closed or the framing is broken.
async fn read_chunked(socket: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut decoded = 0;
    loop {
        let line_end = loop {
            if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            if !read_into(socket, buf).await? {
                return Ok(None);
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else { return Ok(None) };
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let Some(at) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if !read_into(socket, buf).await? {
                        return Ok(None);
                    }
                    continue;
                };
                buf.drain(..at + 2);
                if at == 0 {
                    return Ok(Some(decoded));
                }
            }
        }
        while buf.len() < size + 2 {
            if !read_into(socket, buf).await? {
                return Ok(None);
            }
        }
        buf.drain(..size + 2);
        decoded += size;
    }
}

async fn read_into(socket: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16384];
    let read = socket.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..read]);
    Ok(read > 0)
}
