//! The live stream of the standalone server: the stream suite, a WebSocket client too slow for
//! its queue, and a shutdown with streams open.

use std::time::Duration;

use chatmesh_e2e::stream::{Socket, Sse, application_with_chat, chat_stream_path};
use serde_json::json;

struct Server(chatmesh::testing::Standalone);

impl chatmesh_e2e::Deployment for Server {
    fn base_url(&self) -> String {
        self.0.url.clone()
    }
}

async fn spawn() -> Server {
    Server(chatmesh::testing::spawn(|_| {}).await)
}

chatmesh_e2e::stream_suite_tests!(spawn);

/// A WebSocket client that stops reading is disconnected once its queue fills, with the id of
/// the last event it was sent; subscribing again from there gets every later message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_socket_is_disconnected_with_its_cursor_and_loses_nothing() {
    use chatmesh_e2e::Deployment;
    let server = Server(
        chatmesh::testing::spawn(|config| {
            config.stream.stream_socket_queue = 8;
        })
        .await,
    );
    let api = server.api();
    let (token, chat) = application_with_chat(&api, "slow reader").await;
    let mut socket = Socket::connect_with_receive_buffer(&server.0.url, &token, 4096).await;
    socket.subscribe(chat, json!({})).await;
    let subscribed = socket.take(1).await;
    assert_eq!(subscribed[0]["type"], "subscribed");
    // Large messages fill the socket's buffers and then its queue while the client reads nothing
    // for longer than the server waits on a full queue; then it reads what it was sent.
    let body = "x".repeat(9_000);
    let total = 400;
    let writer = {
        let (api, token) = (api.clone(), token.clone());
        tokio::spawn(async move {
            let contents: Vec<String> = (1..=total).map(|i| format!("{i} {body}")).collect();
            for batch in contents.chunks(16) {
                futures::future::join_all(batch.iter().map(|content| api.create_message(&token, chat, content))).await;
            }
        })
    };
    tokio::time::sleep(chat_read::stream::FULL_QUEUE_WAIT * 2).await;
    let mut received = Vec::new();
    let mut resume = None;
    while let Some(frame) = socket.next(Duration::from_secs(10)).await {
        match frame["type"].as_str() {
            Some("message.created") => received.push(frame["data"]["message_number"].as_i64().unwrap()),
            Some("overflow") => resume = Some(frame["resume"].clone()),
            Some("close") => {
                assert_eq!(frame["code"], 1013, "{frame}");
                break;
            }
            other => panic!("unexpected frame {other:?}: {frame}"),
        }
    }
    writer.await.expect("every message created");
    let resume = resume.expect("an overflow frame before the close");
    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.lines().any(|line| line.starts_with("chatmesh_stream_overflows_total ") && !line.ends_with(" 0")),
        "the overflow is counted"
    );
    assert!(received.len() < total as usize, "the client was cut off before the end ({} frames)", received.len());
    let cursor = resume[0]["last_event_id"].as_str().expect("a resume cursor").to_owned();
    assert_eq!(resume[0]["chat_number"], chat);

    let mut again = Socket::connect(&server.0.url, &token).await;
    again.subscribe(chat, json!({ "last_event_id": cursor })).await;
    let mut rest = Vec::new();
    while rest.len() + received.len() < total as usize {
        let frame = again.next(Duration::from_secs(20)).await.expect("the rest of the messages");
        if frame["type"] == "message.created" {
            rest.push(frame["data"]["message_number"].as_i64().unwrap());
        }
    }
    let mut all: Vec<i64> = received.iter().chain(&rest).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "every message once across the reconnect");
}

/// A shutdown ends open streams instead of waiting for their clients: the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    use chatmesh_e2e::Deployment;
    let dir = tempfile::tempdir().unwrap();
    let config = chatmesh::Config::embedded(dir.path());
    let server = chatmesh::start(&config).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = shared::shutdown::channel();
    let serving = tokio::spawn(server.serve(listener, shutdown));
    struct At(String);
    impl Deployment for At {
        fn base_url(&self) -> String {
            self.0.clone()
        }
    }
    let api = At(url.clone()).api();
    let (token, chat) = application_with_chat(&api, "shutdown").await;
    let mut stream = Sse::open(&api.url(&chat_stream_path(&token, chat, "")), None).await;
    let mut socket = Socket::connect(&url, &token).await;
    socket.subscribe(chat, json!({})).await;
    socket.take(1).await;
    trigger.trigger();
    let stopped = tokio::time::timeout(Duration::from_secs(10), serving).await;
    assert!(stopped.is_ok(), "the server stopped with streams open");
    assert!(stream.next(Duration::from_secs(1)).await.is_none(), "the SSE stream ended");
    let closing = socket.next(Duration::from_secs(1)).await;
    assert!(closing.is_none() || closing.as_ref().is_some_and(|f| f["type"] == "close"), "{closing:?}");
}
