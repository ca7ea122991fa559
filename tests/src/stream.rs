//! Clients of the live stream (SSE and WebSocket) and the stream suite: one async function per
//! behaviour a chat client relies on, run against any deployment by [`stream_suite_tests!`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::Api;

/// How long a suite waits for an event it expects.
pub const EVENT_WAIT: Duration = Duration::from_secs(20);

/// One Server-Sent Event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl SseEvent {
    /// The message number of a message event.
    pub fn message_number(&self) -> Option<i64> {
        self.data["message_number"].as_i64()
    }
}

/// An open SSE response, read event by event.
pub struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// Keep-alive comments seen.
    pub comments: usize,
    /// The response ended (the server closed it, or the connection broke).
    pub ended: bool,
}

impl Sse {
    /// GETs `url` (a stream route, query included) with `last_event_id` as the header; the
    /// response as it came, to be checked by the caller.
    pub async fn request(url: &str, last_event_id: Option<&str>) -> reqwest::Response {
        Self::send(url, last_event_id).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    async fn send(url: &str, last_event_id: Option<&str>) -> reqwest::Result<reqwest::Response> {
        let mut request = reqwest::Client::new().get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send().await
    }

    /// Opens the stream of `url`, asserting a 200 `text/event-stream` answer.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Sse {
        let response = Self::request(url, last_event_id).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {url}");
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("text/event-stream"), "{url}: content type {content_type}");
        Sse { response, buffer: Vec::new(), comments: 0, ended: false }
    }

    /// Opens the stream of `url` if it answers 200 now; `None` when the server is unreachable
    /// or answers anything else (a client reconnecting to whichever server is up).
    pub async fn try_open(url: &str, last_event_id: Option<&str>) -> Option<Sse> {
        let response = Self::send(url, last_event_id).await.ok()?;
        (response.status() == StatusCode::OK).then(|| Sse { response, buffer: Vec::new(), comments: 0, ended: false })
    }

    /// The next event, waiting at most `wait`; `None` when none came (or the stream ended).
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.take_event() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()? {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => self.ended = true,
            }
        }
    }

    /// The next `count` events, each within [`EVENT_WAIT`]; panics when one does not come.
    pub async fn take(&mut self, count: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next(EVENT_WAIT).await {
                Some(event) => events.push(event),
                None => panic!("only {} of {count} events came: {events:?}", events.len()),
            }
        }
        events
    }

    /// Parses one complete event off the buffer (comments are counted and skipped).
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
            let mut fields = 0;
            for line in text.lines().filter(|line| !line.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (name, value) =
                    line.split_once(':').map_or((line, ""), |(n, v)| (n, v.strip_prefix(' ').unwrap_or(v)));
                fields += 1;
                match name {
                    "event" => event = value.to_owned(),
                    "id" => id = Some(value.to_owned()),
                    "data" => {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(value);
                    }
                    _ => {}
                }
            }
            if fields > 0 {
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(SseEvent { event, id, data });
            }
        }
    }
}

/// A WebSocket client of an application's stream.
pub struct Socket {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Socket {
    /// Connects to `GET /api/applications/:token/stream` at `base` (`http://...`).
    pub async fn connect(base: &str, token: &str) -> Socket {
        let url = format!("{}/api/applications/{token}/stream", base.replacen("http", "ws", 1));
        let (stream, response) =
            tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        Socket { stream }
    }

    /// [`Socket::connect`] with a receive buffer of `bytes`, for a client that reads slowly.
    pub async fn connect_with_receive_buffer(base: &str, token: &str, bytes: u32) -> Socket {
        let url = format!("{}/api/applications/{token}/stream", base.replacen("http", "ws", 1));
        let address = base.trim_start_matches("http://").trim_end_matches('/');
        let address: std::net::SocketAddr = address.parse().expect("an ip:port base");
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(bytes).expect("receive buffer size");
        let tcp = socket.connect(address).await.expect("connect");
        let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
        let (stream, response) =
            tokio_tungstenite::client_async(&url, tcp).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        Socket { stream }
    }

    pub async fn send(&mut self, frame: Value) {
        self.stream.send(Message::text(frame.to_string())).await.expect("send a frame");
    }

    /// Subscribes to `chat` with `options` (`last_event_id` / `after`) merged in.
    pub async fn subscribe(&mut self, chat: i64, options: Value) {
        let mut frame = json!({ "type": "subscribe", "chat_number": chat });
        if let (Some(frame), Some(options)) = (frame.as_object_mut(), options.as_object()) {
            frame.extend(options.clone());
        }
        self.send(frame).await;
    }

    /// The next JSON frame within `wait` (pings skipped); `None` when none came or the socket
    /// closed. A close frame comes back as `{"type":"close","code":N}`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??.ok()?;
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
                Message::Close(frame) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    return Some(json!({ "type": "close", "code": code }));
                }
                _ => continue,
            }
        }
    }

    /// The next `count` frames, each within [`EVENT_WAIT`].
    pub async fn take(&mut self, count: usize) -> Vec<Value> {
        let mut frames = Vec::with_capacity(count);
        while frames.len() < count {
            match self.next(EVENT_WAIT).await {
                Some(frame) => frames.push(frame),
                None => panic!("only {} of {count} frames came: {frames:?}", frames.len()),
            }
        }
        frames
    }
}

/// The path of a chat's SSE stream, with `query` (`""` or `?...`).
pub fn chat_stream_path(token: &str, chat: i64, query: &str) -> String {
    format!("/api/applications/{token}/chats/{chat}/stream{query}")
}

/// An application with one chat, readable on the read side (a chat's stream answers 404 until
/// the chat is stored).
pub async fn application_with_chat(api: &Api, name: &str) -> (String, i64) {
    let token = api.create_application(name).await;
    let chat = api.create_chat(&token, "general").await;
    let reply = api.get_eventually(&format!("/api/applications/{token}/chats/{chat}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    (token, chat)
}

/// The change number of a log cursor (`"42"`), for order checks.
fn seq(id: &Option<String>) -> i64 {
    id.as_deref().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("a change cursor, got {id:?}"))
}

/// Every message create, an edit, a rename and a delete arrive once each, in the order of
/// their ids.
pub async fn sse_delivers_every_change_in_order(api: &Api) {
    let (token, chat) = application_with_chat(api, "stream order").await;
    let mut stream = Sse::open(&api.url(&chat_stream_path(&token, chat, "")), None).await;
    let contents: Vec<String> = (1..=20).map(|i| format!("hello {i}")).collect();
    let creates = contents.iter().map(|content| api.create_message(&token, chat, content));
    let numbers = futures::future::join_all(creates).await;
    let sent: HashMap<i64, &String> = numbers.iter().copied().zip(&contents).collect();
    let mut numbers = numbers;
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    let mut events = stream.take(20).await;
    let path = format!("/api/applications/{token}/chats/{chat}");
    let edited = api
        .send(reqwest::Method::PUT, &format!("{path}/messages/3"), Some(&json!({"message_content": "edited"})))
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text);
    let renamed = api.send(reqwest::Method::PATCH, &path, Some(&json!({"chat_name": "renamed"}))).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    let deleted = api.send(reqwest::Method::DELETE, &format!("{path}/messages/5"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    events.extend(stream.take(3).await);

    let mut created: Vec<i64> = events[..20]
        .iter()
        .map(|e| {
            assert_eq!(e.event, "message.created", "{e:?}");
            assert_eq!(e.data["application_token"], token.as_str());
            assert_eq!(e.data["chat_number"], chat);
            let number = e.message_number().expect("message number");
            assert_eq!(e.data["message_content"], sent[&number].as_str(), "{e:?}");
            number
        })
        .collect();
    created.sort_unstable();
    assert_eq!(created, (1..=20).collect::<Vec<_>>(), "every create once");
    assert_eq!(events[20].event, "message.updated");
    assert_eq!(events[20].data["message_number"], 3);
    assert_eq!(events[20].data["message_content"], "edited");
    assert_eq!(events[21].event, "chat.updated");
    assert_eq!(events[21].data["chat_name"], "renamed");
    assert_eq!(events[22].event, "message.deleted");
    assert_eq!(events[22].data["message_number"], 5);
    assert!(events[22].data.get("message_content").is_none(), "a deleted message's text is not sent: {:?}", events[22]);
    let ids: Vec<i64> = events.iter().map(|e| seq(&e.id)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert!(stream.next(Duration::from_millis(300)).await.is_none(), "nothing more");
}

/// A client that reconnects with its last id gets exactly what it missed, then goes on live.
pub async fn sse_resume_gets_exactly_what_was_missed(api: &Api) {
    let (token, chat) = application_with_chat(api, "stream resume").await;
    let url = api.url(&chat_stream_path(&token, chat, ""));
    let mut stream = Sse::open(&url, None).await;
    for i in 1..=5 {
        api.create_message(&token, chat, &format!("before {i}")).await;
    }
    let seen = stream.take(5).await;
    let last = seen.last().and_then(|e| e.id.clone()).unwrap_or_else(|| panic!("an id: {seen:?}"));
    drop(stream);
    for i in 6..=10 {
        api.create_message(&token, chat, &format!("while away {i}")).await;
    }
    let path = format!("/api/applications/{token}/chats/{chat}/messages/2");
    let edited = api.send(reqwest::Method::PATCH, &path, Some(&json!({"message_content": "changed while away"}))).await;
    assert_eq!(edited.status, StatusCode::OK);

    // The header, as EventSource sends it; the query parameter means the same.
    for resume in [Some(last.as_str()), None] {
        let url = match resume {
            Some(_) => url.clone(),
            None => format!("{url}?last_event_id={last}"),
        };
        let mut again = Sse::open(&url, resume).await;
        let missed = again.take(6).await;
        let mut created: Vec<i64> =
            missed.iter().filter(|e| e.event == "message.created").filter_map(SseEvent::message_number).collect();
        created.sort_unstable();
        assert_eq!(created, vec![6, 7, 8, 9, 10], "{missed:?}");
        let edits: Vec<&SseEvent> = missed.iter().filter(|e| e.event == "message.updated").collect();
        assert_eq!(edits.len(), 1, "{missed:?}");
        assert_eq!(edits[0].data["message_content"], "changed while away");
        assert!(missed.iter().all(|e| seq(&e.id) > seq(&Some(last.clone()))), "nothing from before the cursor");
        assert!(again.next(Duration::from_millis(300)).await.is_none(), "none twice");
        if resume.is_none() {
            let number = api.create_message(&token, chat, "live again").await;
            let live = again.take(1).await;
            assert_eq!(live[0].message_number(), Some(number));
        }
    }
}

/// `?after=N` replays the messages above N as they are now, then goes on live; resuming from a
/// replayed event's id finishes the replay without repeating any.
pub async fn sse_after_replays_then_goes_live(api: &Api) {
    let (token, chat) = application_with_chat(api, "stream replay").await;
    for i in 1..=10 {
        api.create_message(&token, chat, &format!("old {i}")).await;
    }
    // The replay reads the store: wait until the read side holds all ten.
    let list = format!("/api/applications/{token}/chats/{chat}/messages?limit=100");
    api.eventually(&list, |r| r.body.as_array().is_some_and(|a| a.len() == 10)).await;
    let path = format!("/api/applications/{token}/chats/{chat}/messages/6");
    let edited = api.send(reqwest::Method::PUT, &path, Some(&json!({"message_content": "old 6, edited"}))).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text);

    let url = api.url(&chat_stream_path(&token, chat, "?after=4"));
    let mut stream = Sse::open(&url, None).await;
    let replayed = stream.take(6).await;
    let numbers: Vec<i64> = replayed.iter().filter_map(SseEvent::message_number).collect();
    assert_eq!(numbers, vec![5, 6, 7, 8, 9, 10], "in number order");
    assert!(replayed.iter().all(|e| e.event == "message.created" && e.id.is_some()));
    assert_eq!(replayed[1].data["message_content"], "old 6, edited", "the current state");
    let number = api.create_message(&token, chat, "new").await;
    let live = stream.take(1).await;
    assert_eq!(live[0].message_number(), Some(number));
    assert!(seq(&live[0].id) > 0);
    drop(stream);

    // Resume from the second replayed event: the rest of the replay, then the live one.
    let mut resumed = Sse::open(&url, replayed[1].id.as_deref()).await;
    let rest = resumed.take(5).await;
    let numbers: Vec<i64> = rest.iter().filter_map(SseEvent::message_number).collect();
    assert_eq!(numbers, vec![7, 8, 9, 10, number]);
    assert!(resumed.next(Duration::from_millis(300)).await.is_none(), "none twice");
}

/// A cursor this server never handed out gets `reset`, then the stream goes on live.
pub async fn sse_unknown_cursor_resets(api: &Api) {
    let (token, chat) = application_with_chat(api, "stream reset").await;
    let url = api.url(&chat_stream_path(&token, chat, ""));
    for cursor in ["not-a-cursor", "999999999"] {
        let mut stream = Sse::open(&url, Some(cursor)).await;
        let reset = stream.take(1).await;
        assert_eq!(reset[0].event, "reset", "{cursor}");
        assert!(reset[0].data["reason"].as_str().is_some_and(|r| !r.is_empty()));
        let number = api.create_message(&token, chat, &format!("after {cursor}")).await;
        let live = stream.take(1).await;
        assert_eq!(live[0].message_number(), Some(number));
    }
}

/// Unknown tokens and chats are JSON 404s before any stream starts; bad parameters 400s.
pub async fn stream_errors_are_json(api: &Api) {
    let (token, chat) = application_with_chat(api, "stream errors").await;
    let cases = [
        (chat_stream_path("no-such-token", 1, ""), StatusCode::NOT_FOUND, "NOT_FOUND"),
        (chat_stream_path(&token, chat + 1000, ""), StatusCode::NOT_FOUND, "NOT_FOUND"),
        (chat_stream_path(&token, chat, "?after=-1"), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        (chat_stream_path(&token, chat, "?after=x"), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        // As the chat's REST route answers it.
        (format!("/api/applications/{token}/chats/abc/stream"), StatusCode::NOT_FOUND, "NOT_FOUND"),
        ("/api/applications/no-such-token/stream".to_owned(), StatusCode::NOT_FOUND, "NOT_FOUND"),
        // A WebSocket route asked without an upgrade.
        (format!("/api/applications/{token}/stream"), StatusCode::BAD_REQUEST, "BAD_REQUEST"),
    ];
    for (path, status, code) in cases {
        let reply = api.get(&path).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text);
        assert_eq!(reply.error_code(), code, "{path}: {}", reply.text);
    }
}

/// One socket follows several chats, each from where it asks; unsubscribing stops a chat;
/// an unknown chat, another application's chat number and a bad frame get error frames and
/// leave the socket open.
pub async fn websocket_follows_many_chats(api: &Api) {
    let (token, first) = application_with_chat(api, "socket").await;
    let second = api.create_chat(&token, "second").await;
    api.get_eventually(&format!("/api/applications/{token}/chats/{second}")).await;
    let earlier = api.create_message(&token, second, "before the socket").await;
    api.eventually(&format!("/api/applications/{token}/chats/{second}/messages/{earlier}"), |r| {
        r.status == StatusCode::OK
    })
    .await;
    // Another application with a chat numbered above this one's: its number means nothing here.
    let (other_token, _) = application_with_chat(api, "someone else").await;
    api.create_chat(&other_token, "two").await;
    let other_chat = api.create_chat(&other_token, "three").await;
    api.get_eventually(&format!("/api/applications/{other_token}/chats/{other_chat}")).await;

    let mut socket = Socket::connect(&api.url(""), &token).await;
    socket.subscribe(first, json!({})).await;
    socket.subscribe(second, json!({ "after": 0 })).await;
    let frames = socket.take(3).await;
    let subscribed: Vec<i64> =
        frames.iter().filter(|f| f["type"] == "subscribed").filter_map(|f| f["chat_number"].as_i64()).collect();
    assert_eq!(subscribed.len(), 2, "{frames:?}");
    let replayed: Vec<&Value> = frames.iter().filter(|f| f["type"] == "message.created").collect();
    assert_eq!(replayed.len(), 1, "{frames:?}");
    assert_eq!(replayed[0]["chat_number"], second);
    assert_eq!(replayed[0]["data"]["message_content"], "before the socket");

    let in_first = api.create_message(&token, first, "to the first").await;
    let in_second = api.create_message(&token, second, "to the second").await;
    let frames = socket.take(2).await;
    let mut got: Vec<(i64, i64)> = frames
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "message.created", "{f}");
            assert!(f["id"].as_str().is_some(), "{f}");
            (f["chat_number"].as_i64().unwrap(), f["data"]["message_number"].as_i64().unwrap())
        })
        .collect();
    got.sort_unstable();
    let mut expected = vec![(first, in_first), (second, in_second)];
    expected.sort_unstable();
    assert_eq!(got, expected);

    // Another application's chat is not this socket's, whatever its number.
    socket.subscribe(other_chat, json!({})).await;
    socket.subscribe(first + second + 1000, json!({})).await;
    socket.send(json!({ "type": "dance" })).await;
    let errors = socket.take(3).await;
    let codes: Vec<&str> = errors.iter().map(|f| f["error"]["code"].as_str().unwrap_or_default()).collect();
    assert!(errors.iter().all(|f| f["type"] == "error"), "{errors:?}");
    assert_eq!(codes, vec!["NOT_FOUND", "NOT_FOUND", "BAD_REQUEST"], "{errors:?}");
    api.create_message(&other_token, other_chat, "not for this socket").await;

    socket.send(json!({ "type": "unsubscribe", "chat_number": first })).await;
    let frames = socket.take(1).await;
    assert_eq!(frames[0]["type"], "unsubscribed");
    api.create_message(&token, first, "nobody follows this").await;
    let last = api.create_message(&token, second, "still followed").await;
    let frames = socket.take(1).await;
    assert_eq!(
        (frames[0]["chat_number"].as_i64(), frames[0]["data"]["message_number"].as_i64()),
        (Some(second), Some(last))
    );
    assert!(socket.next(Duration::from_millis(500)).await.is_none(), "nothing of the unsubscribed chat: {:?}", frames);
}

/// An application's chats reach only streams opened with its token.
pub async fn streams_keep_applications_apart(api: &Api) {
    let (mine, my_chat) = application_with_chat(api, "mine").await;
    let (theirs, their_chat) = application_with_chat(api, "theirs").await;
    let mut stream = Sse::open(&api.url(&chat_stream_path(&mine, my_chat, "?after=0")), None).await;
    api.create_message(&theirs, their_chat, "theirs").await;
    let number = api.create_message(&mine, my_chat, "mine").await;
    let events = stream.take(1).await;
    assert_eq!(events[0].data["application_token"], mine.as_str());
    assert_eq!(events[0].message_number(), Some(number));
    assert_eq!(events[0].data["message_content"], "mine");
    assert!(stream.next(Duration::from_millis(500)).await.is_none());
}

/// Each event kind's count by message number, to compare against the store.
pub fn tally(events: &[SseEvent]) -> HashMap<(String, i64), usize> {
    let mut counts = HashMap::new();
    for event in events {
        *counts.entry((event.event.clone(), event.message_number().unwrap_or(0))).or_insert(0) += 1;
    }
    counts
}

/// Waits until `done` holds for the events read so far (at most `wait`), reading on.
pub async fn read_until(
    stream: &mut Sse,
    events: &mut Vec<SseEvent>,
    wait: Duration,
    done: impl Fn(&[SseEvent]) -> bool,
) {
    let deadline = Instant::now() + wait;
    while !done(events) && Instant::now() < deadline {
        if let Some(event) = stream.next(Duration::from_millis(200)).await {
            events.push(event);
        }
    }
}

/// Declares one `#[tokio::test]` per stream-suite behaviour, as [`crate::chat_suite_tests!`]
/// does for the chat suite.
#[macro_export]
macro_rules! stream_suite_tests {
    (optional $spawn:path) => {
        $crate::stream_suite_tests!(@names @optional $spawn);
    };
    ($spawn:path) => {
        $crate::stream_suite_tests!(@names @tests $spawn);
    };
    (@names @$rule:ident $spawn:path) => {
        $crate::stream_suite_tests!(@$rule $spawn;
            sse_delivers_every_change_in_order,
            sse_resume_gets_exactly_what_was_missed,
            sse_after_replays_then_goes_live,
            sse_unknown_cursor_resets,
            stream_errors_are_json,
            websocket_follows_many_chats,
            streams_keep_applications_apart,
        );
    };
    (@$rule:ident $spawn:path; $($name:ident),* $(,)?) => {
        $crate::suite_tests!(@$rule $spawn, stream; $($name),*);
    };
}
