//! Load on the live stream, for `chatmesh-bench stream`: subscribers that timestamp every
//! message event they receive, checks that each got every message once, the resident memory
//! of a process, and a bare broadcast of the same bytes to as many sockets (the fan-out's
//! baseline).
//!
//! An SSE subscriber here is one HTTP/1 connection through hyper's client (no pool) whose
//! events are split and scanned for their message number rather than parsed as JSON: the
//! readers share the machine's cores with the server, so their work is kept small, and it is
//! the same for the stream and for its baseline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How a subscriber is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Sse,
    WebSocket,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sse => "SSE",
            Self::WebSocket => "WebSocket",
        })
    }
}

/// A `message.created` event as one subscriber received it: the message's number, and when
/// the read that completed the event returned.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    pub number: i64,
    pub at: Instant,
}

/// Everything one subscriber received, once it was stopped.
pub struct Received {
    pub chat: i64,
    pub transport: Transport,
    pub deliveries: Vec<Delivery>,
    /// The raw text of each message event (`event:`, `id:`, `data:` lines and the blank line),
    /// for a subscriber opened with `keep_texts`.
    pub texts: Vec<Bytes>,
}

/// A group of subscribers read in the background: a shared count of the message events they
/// received so far, and one signal that stops them all.
pub struct Subscribers {
    delivered: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<Received>>>,
}

impl Default for Subscribers {
    fn default() -> Self {
        Self::new()
    }
}

impl Subscribers {
    pub fn new() -> Self {
        Subscribers { delivered: Arc::default(), stop: watch::channel(false).0, tasks: std::sync::Mutex::default() }
    }

    /// Message events received by all subscribers so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.tasks.lock().expect("subscriber tasks").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&self, task: JoinHandle<Received>) {
        self.tasks.lock().expect("subscriber tasks").push(task);
    }

    /// Opens chat `chat`'s SSE stream at `path` on `address` from its first change
    /// (`Last-Event-ID: 0`, so no message created after this returns can be missed) and reads
    /// it in the background. Returns once the 200 head arrived.
    pub async fn open_sse(&self, address: SocketAddr, path: &str, chat: i64, keep_texts: bool) -> anyhow::Result<()> {
        let response = sse_request(address, path).await?;
        let (delivered, mut stop) = (self.delivered.clone(), self.stop.subscribe());
        self.add(tokio::spawn(async move {
            let mut received = Received { chat, transport: Transport::Sse, deliveries: Vec::new(), texts: Vec::new() };
            let mut body = response.into_body();
            let mut buffer: Vec<u8> = Vec::new();
            loop {
                let frame = tokio::select! {
                    frame = body.frame() => frame,
                    _ = stop.wait_for(|stopped| *stopped) => break,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else { continue };
                let at = Instant::now();
                buffer.extend_from_slice(&data);
                let mut start = 0;
                while let Some(end) = find(&buffer[start..], b"\n\n") {
                    let block = &buffer[start..start + end + 2];
                    if let Some(number) = sse_message_created(block) {
                        received.deliveries.push(Delivery { number, at });
                        delivered.fetch_add(1, Ordering::Relaxed);
                        if keep_texts {
                            received.texts.push(Bytes::copy_from_slice(block));
                        }
                    }
                    start += end + 2;
                }
                buffer.drain(..start);
            }
            received
        }));
        Ok(())
    }

    /// Opens a WebSocket on `token`'s application stream at `address`, subscribes to `chat`
    /// from its first change and reads it in the background. Returns once `subscribed` came.
    pub async fn open_socket(&self, address: SocketAddr, token: &str, chat: i64) -> anyhow::Result<()> {
        let url = format!("ws://{address}/api/applications/{token}/stream");
        let tcp = tokio::net::TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let (mut socket, _) = tokio_tungstenite::client_async(&url, tcp).await.with_context(|| url.clone())?;
        let subscribe = serde_json::json!({ "type": "subscribe", "chat_number": chat, "last_event_id": "0" });
        socket.send(Message::text(subscribe.to_string())).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
                .await
                .context("no subscribed frame within 30 s")?
                .context("the socket closed before subscribed")??;
            if let Message::Text(text) = frame {
                anyhow::ensure!(text.as_str().contains(r#""type":"subscribed""#), "unexpected frame {text}");
                break;
            }
        }
        let (delivered, mut stop) = (self.delivered.clone(), self.stop.subscribe());
        self.add(tokio::spawn(async move {
            let mut received =
                Received { chat, transport: Transport::WebSocket, deliveries: Vec::new(), texts: Vec::new() };
            loop {
                let frame = tokio::select! {
                    frame = socket.next() => frame,
                    _ = stop.wait_for(|stopped| *stopped) => break,
                };
                let Some(Ok(frame)) = frame else { break };
                let Message::Text(text) = frame else { continue };
                let text = text.as_bytes();
                if find(text, br#""type":"message.created""#).is_some()
                    && let Some(number) = number_after(text, br#""message_number":"#)
                {
                    received.deliveries.push(Delivery { number, at: Instant::now() });
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = socket.close(None).await;
            received
        }));
        Ok(())
    }

    /// Waits until the subscribers have received `total` message events, or `limit` passed;
    /// whether they have.
    pub async fn wait_for(&self, total: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.delivered() < total {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Stops every subscriber (closing its connection) and answers what each received.
    pub async fn stop(self) -> Vec<Received> {
        let _ = self.stop.send(true);
        let tasks = self.tasks.into_inner().expect("subscriber tasks");
        let mut all = Vec::with_capacity(tasks.len());
        for task in tasks {
            all.push(task.await.expect("a subscriber task"));
        }
        all
    }
}

/// `GET path` with `Last-Event-ID: 0` on a connection of its own; the response once its head
/// came, which must be a 200 event stream.
async fn sse_request(address: SocketAddr, path: &str) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let tcp = tokio::net::TcpStream::connect(address).await.with_context(|| format!("connect {address}"))?;
    tcp.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    // Ends when the response body is dropped: a stream's connection is not reused.
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", address.to_string())
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await.with_context(|| format!("GET {path}"))?;
    anyhow::ensure!(response.status() == 200, "GET {path}: {}", response.status());
    Ok(response)
}

/// The message number of an SSE event block when it is a `message.created`.
fn sse_message_created(block: &[u8]) -> Option<i64> {
    let mut created = false;
    let mut number = None;
    for line in block.split(|b| *b == b'\n') {
        if let Some(name) = line.strip_prefix(b"event:") {
            created = name.trim_ascii() == b"message.created";
        } else if let Some(data) = line.strip_prefix(b"data:") {
            number = number_after(data, br#""message_number":"#);
        }
    }
    number.filter(|_| created)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The integer right after the first `key` in `text`.
fn number_after(text: &[u8], key: &[u8]) -> Option<i64> {
    let rest = &text[find(text, key)? + key.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The address of an `http://ip:port` base URL.
pub fn address_of(base: &str) -> anyhow::Result<SocketAddr> {
    let address = base.trim_start_matches("http://").trim_end_matches('/');
    address.parse().with_context(|| format!("an ip:port base URL, got {base}"))
}

/// How each subscriber's deliveries compare with the messages of its chat that were created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Created messages a subscriber never received.
    pub missing: u64,
    /// Receipts of a message beyond its first.
    pub duplicates: u64,
    /// Messages received that no 201 announced (a create whose answer was lost).
    pub unexpected: u64,
}

/// Tallies every subscriber's deliveries against `created` (message numbers by chat).
pub fn tally(received: &[Received], created: &HashMap<i64, Vec<i64>>) -> Tally {
    let mut tally = Tally::default();
    for subscriber in received {
        let expected = created.get(&subscriber.chat).map(Vec::as_slice).unwrap_or_default();
        let mut counts: HashMap<i64, u64> = expected.iter().map(|number| (*number, 0)).collect();
        for delivery in &subscriber.deliveries {
            match counts.get_mut(&delivery.number) {
                Some(count) => *count += 1,
                None => tally.unexpected += 1,
            }
        }
        for count in counts.values() {
            match count {
                0 => tally.missing += 1,
                n => tally.duplicates += n - 1,
            }
        }
    }
    tally
}

/// Resident memory (VmRSS) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's soft limit on open files.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The bare baseline of the fan-out: a TCP server that answers each connection's request with
/// an event-stream head, then writes every `Bytes` of a tokio broadcast to it as one HTTP
/// chunk, as the stream's server frames an SSE event.
///
/// It runs on a runtime of its own with as many worker threads as a server has by default
/// (one per core), so it competes with the readers in this process as a server process would,
/// and, like hyper, writes whatever events are waiting in one `write` on sockets left with
/// their default options.
pub struct BareBroadcast {
    pub address: SocketAddr,
    sender: broadcast::Sender<Bytes>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BareBroadcast {
    /// Listens on a loopback port; `capacity` events may be in flight (at least as many as
    /// will be sent, so no reader lags).
    pub fn start(capacity: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().thread_name("bare-broadcast").enable_all().build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let sender = broadcast::channel::<Bytes>(capacity.max(1)).0;
        let accepting = sender.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            while let Ok((socket, _)) = listener.accept().await {
                // Subscribed before the head goes out: a reader with the head misses nothing.
                let receiver = accepting.subscribe();
                tokio::spawn(serve_bare(socket, receiver));
            }
        });
        Ok(BareBroadcast { address, sender, runtime: Some(runtime) })
    }

    /// One SSE event's text framed as one HTTP chunk, as the stream's server writes it.
    pub fn frame(event: &[u8]) -> Bytes {
        let mut chunk = Vec::with_capacity(event.len() + 12);
        chunk.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        chunk.extend_from_slice(event);
        chunk.extend_from_slice(b"\r\n");
        Bytes::from(chunk)
    }

    /// Sends a [`BareBroadcast::frame`]d event to every connection.
    pub fn send(&self, chunk: Bytes) {
        let _ = self.sender.send(chunk);
    }
}

impl Drop for BareBroadcast {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Most bytes [`serve_bare`] gathers into one write.
const BARE_WRITE: usize = 64 * 1024;

/// One connection of [`BareBroadcast`]: reads the request head, answers with the head the
/// stream's server sends, then writes the broadcast chunks, those already waiting together.
async fn serve_bare(mut socket: tokio::net::TcpStream, mut receiver: broadcast::Receiver<Bytes>) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while find(&head, b"\r\n\r\n").is_none() {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
                   x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n";
    if socket.write_all(answer).await.is_err() {
        return;
    }
    let mut out = Vec::with_capacity(BARE_WRITE);
    loop {
        match receiver.recv().await {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(broadcast::error::RecvError::Lagged(missed)) => panic!("a bare reader lagged by {missed} events"),
            Err(broadcast::error::RecvError::Closed) => return,
        }
        while out.len() < BARE_WRITE {
            match receiver.try_recv() {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
        if socket.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_number_of_message_created_events_only() {
        let created = b"event: message.created\ndata: {\"type\":\"message\",\"chat_number\":3,\"message_number\":42,\"message_content\":\"hi\"}\nid: 7\n\n";
        assert_eq!(sse_message_created(created), Some(42));
        let updated = b"event: message.updated\ndata: {\"message_number\":42}\nid: 8\n\n";
        assert_eq!(sse_message_created(updated), None);
        assert_eq!(sse_message_created(b":keep-alive\n\n"), None);
    }

    #[test]
    fn tally_counts_missing_duplicate_and_unexpected_deliveries() {
        let at = Instant::now();
        let got = |numbers: &[i64]| Received {
            chat: 1,
            transport: Transport::Sse,
            deliveries: numbers.iter().map(|number| Delivery { number: *number, at }).collect(),
            texts: Vec::new(),
        };
        let created = HashMap::from([(1, vec![1, 2, 3])]);
        assert_eq!(tally(&[got(&[1, 2, 3])], &created), Tally::default());
        assert_eq!(tally(&[got(&[1, 1, 3, 9])], &created), Tally { missing: 1, duplicates: 1, unexpected: 1 });
    }
}
