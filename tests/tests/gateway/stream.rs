//! Live streams through the gateway, against the stub upstream's Server-Sent Events and
//! WebSocket echo, by both lanes (express on and off): each event reaches the client when the
//! upstream writes it, a stream is never cut while its upstream writes within
//! `read_timeout_ms` however long it lasts, and WebSocket frames go both ways past the limits
//! and deadlines of request bodies.

use std::time::{Duration, Instant};

use chatmesh_e2e::harness::{GatewayProcess, Stub};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{client, fast_config_with, gateway, stub, wait_until};

/// Two gateways whose chat-stream pool is `upstream`, with `settings`: the first with its
/// express lane, the second with pingora-proxy alone. Each is named by its lane.
fn stream_gateways(
    dir: &std::path::Path,
    upstream: &Stub,
    settings: &[(&str, &str)],
) -> [(&'static str, GatewayProcess); 2] {
    [("express", "true"), ("pingora-proxy", "false")].map(|(lane, express)| {
        let dir = dir.join(lane);
        std::fs::create_dir_all(&dir).expect("gateway folder");
        let mut settings = settings.to_vec();
        settings.push(("express", express));
        (lane, gateway(&dir, &fast_config_with(&dir, &settings), "chat-stream", &[upstream]))
    })
}

/// One Server-Sent Event as the client saw it.
#[derive(Debug)]
struct Event {
    id: String,
    data: String,
    /// When it arrived, from the request.
    after: Duration,
}

/// A `text/event-stream` response read as it arrives.
struct EventStream {
    response: reqwest::Response,
    started: Instant,
    pending: String,
    /// Comment lines (`: keep-alive`) seen so far.
    comments: usize,
}

impl EventStream {
    /// Opens `url` as an EventSource would; the answer must be a 200 event stream from the
    /// chat-stream pool.
    async fn open(url: &str) -> Self {
        let started = Instant::now();
        let response = client().get(url).header("accept", "text/event-stream").send().await.expect("stream request");
        assert_eq!(response.status(), 200, "{url}");
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(header("content-type"), "text/event-stream", "{url}");
        assert_eq!(header("x-served-by"), "chat-stream", "{url}");
        assert!(!header("x-request-id").is_empty(), "the gateway's request id on a stream too");
        assert!(response.content_length().is_none(), "a stream has no length");
        Self { response, started, pending: String::new(), comments: 0 }
    }

    /// The next event; `Ok(None)` when the body ended where its framing says, an error when
    /// it was cut.
    async fn next(&mut self) -> Result<Option<Event>, reqwest::Error> {
        loop {
            if let Some(at) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..at + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if let Some(id) = id {
                    return Ok(Some(Event { id, data, after: self.started.elapsed() }));
                }
                continue;
            }
            match self.response.chunk().await? {
                Some(bytes) => self.pending.push_str(std::str::from_utf8(&bytes).expect("UTF-8 events")),
                None => return Ok(None),
            }
        }
    }

    /// Every event left, and how the body ended.
    async fn rest(&mut self) -> (Vec<Event>, Result<(), reqwest::Error>) {
        let mut events = Vec::new();
        loop {
            match self.next().await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => return (events, Ok(())),
                Err(error) => return (events, Err(error)),
            }
        }
    }
}

fn stream_url(gateway: &GatewayProcess, query: &str) -> String {
    format!("{}/api/applications/5f0c9a/chats/3/stream?{query}", gateway.url)
}

/// Event 1 is written at once, event 2 two seconds later: the client has event 1 well before
/// the response ends, so nothing on the way holds the body back. A stream of an event every
/// 100 ms arrives spread over its second, not at once at the end. The admin port counts the
/// stream in flight while it lasts, then as a 2xx of the chat-stream pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_client_as_the_upstream_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = stub("chat-stream");
    for (lane, gateway) in stream_gateways(dir.path(), &upstream, &[]) {
        let mut stream = EventStream::open(&stream_url(&gateway, "events=2&interval_ms=2000")).await;
        let first = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{lane}: event 1 was held back"))
            .expect("event 1")
            .expect("event 1");
        assert_eq!(first.id, "1", "{lane}");
        assert_eq!(first.data, r#"{"n":1,"served_by":"chat-stream"}"#, "{lane}");
        assert_eq!(gateway.metric("gateway_in_flight_requests"), Some(1.0), "{lane}: the stream is in flight");
        let (rest, end) = stream.rest().await;
        end.unwrap_or_else(|e| panic!("{lane}: the stream was cut: {e}"));
        let ids: Vec<&str> = rest.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["2"], "{lane}");
        assert!(rest[0].after >= Duration::from_millis(1900), "{lane}: event 2 came after the pause: {rest:?}");
        eprintln!("{lane}: event 1 after {:?}, event 2 after {:?}", first.after, rest[0].after);

        let mut stream = EventStream::open(&stream_url(&gateway, "events=10&interval_ms=100")).await;
        let (events, end) = stream.rest().await;
        end.unwrap_or_else(|e| panic!("{lane}: the stream was cut: {e}"));
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, (1..=10).map(|n| n.to_string()).collect::<Vec<_>>(), "{lane}: every event, in order");
        let spread = events[9].after - events[0].after;
        assert!(events[0].after < Duration::from_millis(500), "{lane}: event 1 after {:?}", events[0].after);
        assert!(spread >= Duration::from_millis(700), "{lane}: 10 events 100 ms apart arrived within {spread:?}");

        // Counted once the gateway is done with the response, a moment after its last byte.
        let ok = "gateway_requests_total{pool=\"chat-stream\",class=\"2xx\"}";
        let counted = wait_until(Duration::from_secs(2), || {
            gateway.metric(ok) == Some(2.0) && gateway.metric("gateway_in_flight_requests") == Some(0.0)
        });
        assert!(counted.await.is_some(), "{lane}: both streams counted once ended");
    }
}

/// With `read_timeout_ms` at 1 s, a 3 s stream whose upstream writes a keep-alive comment every
/// 300 ms between events 1.5 s apart is relayed whole, comments included; the same stream
/// without the comments is cut once the upstream stays silent for the read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_keeps_writing_outlives_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = stub("chat-stream");
    let gateways = stream_gateways(dir.path(), &upstream, &[("read_timeout_ms", "1000")]);
    let runs = gateways.iter().map(|(lane, gateway)| async move {
        let mut kept = EventStream::open(&stream_url(gateway, "events=3&interval_ms=1500&keepalive_ms=300")).await;
        let (events, end) = kept.rest().await;
        end.unwrap_or_else(|e| panic!("{lane}: a stream that kept writing was cut: {e}"));
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"], "{lane}");
        assert!(events[2].after >= Duration::from_millis(2900), "{lane}: {events:?}");
        assert!(kept.comments >= 6, "{lane}: the keep-alive comments reach the client: {}", kept.comments);

        let mut silent = EventStream::open(&stream_url(gateway, "events=2&interval_ms=1500")).await;
        let (events, end) = silent.rest().await;
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1"], "{lane}: a silent upstream is given up");
        assert!(end.is_err(), "{lane}: the client sees the stream cut, not ended");
        eprintln!("{lane}: kept stream relayed whole ({} comments), silent one cut", kept.comments);
    });
    futures::future::join_all(runs).await;
}

/// A WebSocket handshake is relayed (the 101 comes back from the upstream), then frames go both
/// ways: text and binary echoes, more bytes than `max_body_bytes` in all, and a frame sent
/// after a pause longer than `body_timeout_ms`; a close ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_round_trip_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = stub("chat-stream");
    let settings = [("max_body_bytes", "4096"), ("body_timeout_ms", "1000")];
    let gateways = stream_gateways(dir.path(), &upstream, &settings);
    let runs = gateways.iter().map(|(lane, gateway)| async move {
        let url = format!("{}/api/applications/5f0c9a/stream", gateway.url.replace("http://", "ws://"));
        let (mut socket, response) = tokio_tungstenite::connect_async(url).await.expect("WebSocket handshake");
        assert_eq!(response.status(), 101, "{lane}");
        assert_eq!(response.headers()["x-served-by"], "chat-stream", "{lane}");

        let mut round_trip = async |message: Message| {
            socket.send(message.clone()).await.expect("send a frame");
            let echo = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .unwrap_or_else(|_| panic!("{lane}: no echo"))
                .expect("an echo")
                .expect("an echo");
            assert_eq!(echo, message, "{lane}");
        };
        for n in 0..5 {
            round_trip(Message::text(format!(r#"{{"type":"subscribe","chat_number":{n}}}"#))).await;
        }
        for n in 0..8u8 {
            round_trip(Message::binary(vec![n; 1024])).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        round_trip(Message::text("after a pause")).await;

        socket.send(Message::Close(None)).await.expect("send close");
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(message)) = socket.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(end.is_ok(), "{lane}: the close went through");
    });
    futures::future::join_all(runs).await;
    for (lane, gateway) in &gateways {
        let metrics = chatmesh_e2e::harness::http_get(&format!("{}/metrics", gateway.admin_url));
        assert!(metrics.is_some_and(|m| m.contains("gateway_upstream_healthy")), "{lane}: /metrics answers");
    }
}

/// A client that leaves a stream while the upstream is quiet frees it at once, by either lane:
/// the gateway does not wait for the upstream's next write to find out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_quiet_stream_frees_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = stub("chat-stream");
    let gateways = stream_gateways(dir.path(), &upstream, &[]);
    for (lane, gateway) in &gateways {
        let mut stream = EventStream::open(&stream_url(gateway, "events=2&interval_ms=10000")).await;
        assert_eq!(stream.next().await.expect("event 1").expect("event 1").id, "1", "{lane}");
        assert_eq!(gateway.metric("gateway_in_flight_requests"), Some(1.0), "{lane}");
        let left = Instant::now();
        drop(stream);
        let freed = wait_until(Duration::from_secs(5), || gateway.metric("gateway_in_flight_requests") == Some(0.0));
        let freed = freed.await.unwrap_or_else(|| panic!("{lane}: the stream outlived its client"));
        let after = freed - left;
        assert!(after < Duration::from_secs(1), "{lane}: freed {after:?} after the client left");
        eprintln!("{lane}: stream freed {after:?} after its client left");
    }
}
