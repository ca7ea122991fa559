//! Hostile input against the standalone server: each gets a 4xx (or is stored faithfully),
//! never a 5xx, a panic or a dropped connection. Requests go over a raw socket so that paths
//! reach the server exactly as written (an HTTP client would resolve `..` first).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn spawn() -> chatmesh::testing::Standalone {
    // Every request carries it, so routes behind a credential parse what they are sent.
    chatmesh::testing::spawn(|config| config.segments.admin_token = Some(ADMIN_TOKEN.to_owned())).await
}

const ADMIN_TOKEN: &str = "hostile-input-admin-token";

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `method target` with `body` (JSON content type) as raw bytes on a new connection.
async fn send(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no answer in time"))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {target}: no response head: {:?}", String::from_utf8_lossy(&response)));
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = response[head_end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Answer { status, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
    out
}

fn assert_client_error(answer: &Answer, what: &str) {
    assert!((400..500).contains(&answer.status), "{what}: {} {}", answer.status, answer.text());
    // The chatmesh error body, or the JSON:API one of /api/v1.
    let body = answer.json();
    let code = body["error"]["code"].as_str().or_else(|| body["errors"][0]["code"].as_str());
    assert!(code.is_some(), "{what}: a JSON error body: {}", answer.text());
}

async fn application(addr: SocketAddr) -> String {
    let answer =
        send(addr, "POST", "/api/applications", json!({"application_name": "hostile"}).to_string().as_bytes()).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    answer.json()["application_token"].as_str().unwrap().to_owned()
}

async fn chat(addr: SocketAddr, token: &str) -> i64 {
    let path = format!("/api/applications/{token}/chats");
    let answer = send(addr, "POST", &path, json!({"chat_name": "room"}).to_string().as_bytes()).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    answer.json()["chat_number"].as_i64().unwrap()
}

/// Every route that takes a JSON body, with `{token}` and `{chat}` filled in (`POST /sessions/`
/// takes none: it ignores what it is sent).
const BODY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/applications"),
    ("PUT", "/api/applications/{token}"),
    ("PATCH", "/api/applications/{token}"),
    ("POST", "/api/applications/{token}/chats"),
    ("PUT", "/api/applications/{token}/chats/{chat}"),
    ("POST", "/api/applications/{token}/chats/{chat}/messages"),
    ("PUT", "/api/applications/{token}/chats/{chat}/messages/1"),
    ("POST", "/segments"),
    ("POST", "/segments/users"),
    ("POST", "/api/v1/segments"),
    ("POST", "/api/v1/segments/evaluate"),
    ("POST", "/events/"),
    ("POST", "/events/batch"),
    ("POST", "/user/batches"),
];

async fn body_routes(addr: SocketAddr) -> Vec<(&'static str, String)> {
    let token = application(addr).await;
    let chat = chat(addr, &token).await;
    BODY_ROUTES
        .iter()
        .map(|(method, path)| (*method, path.replace("{token}", &token).replace("{chat}", &chat.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_20000_deep_is_a_400() {
    let server = spawn().await;
    let arrays = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let objects = format!("{}1{}", "{\"a\":".repeat(20_000), "}".repeat(20_000));
    let in_a_field = format!("{{\"application_name\":{arrays}}}");
    for (method, path) in body_routes(server.addr).await {
        for body in [&arrays, &objects, &in_a_field] {
            let answer = send(server.addr, method, &path, body.as_bytes()).await;
            assert_client_error(&answer, &format!("{method} {path} nested"));
        }
    }
    assert_eq!(send(server.addr, "GET", "/healthz", b"").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_body_is_a_400() {
    let server = spawn().await;
    for (method, path) in body_routes(server.addr).await {
        for body in [&b"{\"application_name\":\"a\xff\xfeb\"}"[..], b"\xc3\x28", b"{\"chat_name\":\"\xed\xa0\x80\"}"] {
            let answer = send(server.addr, method, &path, body).await;
            assert_client_error(&answer, &format!("{method} {path} invalid UTF-8"));
        }
    }
}

/// A message with NUL bytes and one of 10,000 four-byte characters are stored and read back
/// exactly (or refused with a 4xx).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_10000_emoji_are_stored_exactly() {
    let server = spawn().await;
    let token = application(server.addr).await;
    let chat = chat(server.addr, &token).await;
    let emoji: String = ['😀', '🦀', '𝄞', '🀄'].iter().cycle().take(10_000).collect();
    for content in ["a\u{0}b\u{0}", emoji.as_str(), "\u{0}"] {
        let path = format!("/api/applications/{token}/chats/{chat}/messages");
        let answer = send(server.addr, "POST", &path, json!({"message_content": content}).to_string().as_bytes()).await;
        if (400..500).contains(&answer.status) {
            assert_client_error(&answer, "refused");
            continue;
        }
        assert_eq!(answer.status, 201, "{}", answer.text());
        let number = answer.json()["message_number"].as_i64().unwrap();
        let read = send(server.addr, "GET", &format!("{path}/{number}"), b"").await;
        assert_eq!(read.status, 200, "{}", read.text());
        assert_eq!(read.json()["message_content"].as_str(), Some(content), "read back exactly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_past_i64_are_a_4xx() {
    let server = spawn().await;
    let addr = server.addr;
    let token = application(addr).await;
    let chat = chat(addr, &token).await;
    let huge = ["9223372036854775808", "99999999999999999999999999", "-9223372036854775809", "1e400"];
    for number in huge {
        for path in [
            format!("/api/applications/{token}/chats/{number}"),
            format!("/api/applications/{token}/chats/{number}/messages"),
            format!("/api/applications/{token}/chats/{chat}/messages/{number}"),
            format!("/api/applications/{token}/chats/{number}/search?q=a"),
            format!("/api/v1/segments/{number}"),
            format!("/api/v1/flags/{number}"),
            format!("/events/{number}/"),
            format!("/errors/{number}/"),
        ] {
            let answer = send(addr, "GET", &path, b"").await;
            assert!((400..500).contains(&answer.status), "GET {path}: {} {}", answer.status, answer.text());
        }
        // In a query a huge number may also be read as "past the end" (an empty page), and a
        // segments user id is an opaque string (a user with no segments): never a 5xx.
        for path in [
            format!("/segments/users/{number}"),
            format!("/segments/users/{number}/history?from=2024-01-01&to=2024-02-01"),
            format!("/api/applications/{token}/chats?page={number}&per_page={number}"),
            format!("/api/applications/{token}/chats/{chat}/messages?page={number}&per_page={number}"),
            format!("/api/v1/segments?page[number]={number}&page[size]={number}"),
            format!("/user/last-events?days={number}"),
            format!("/user/last-sessions-user?user_id={number}"),
        ] {
            let answer = send(addr, "GET", &path, b"").await;
            assert!(answer.status < 500, "GET {path}: {} {}", answer.status, answer.text());
        }
        let bodies = [
            ("POST", "/segments/users".to_owned(), format!("{{\"id\":{number},\"add\":[],\"remove\":[]}}")),
            ("POST", "/api/v1/segments/evaluate".to_owned(), format!("{{\"userId\":{number},\"attributes\":{{}}}}")),
            (
                "POST",
                "/events/".to_owned(),
                format!(
                    "{{\"session\":{{\"id\":\"x\"}},\"category\":\"c\",\"name\":\"n\",\"data\":{{\"a\":1}},\"timestamp\":{number}}}"
                ),
            ),
            ("POST", "/user/batches".to_owned(), format!("[{{\"user_id\":{number}}}]")),
            ("POST", format!("/api/applications/{token}/chats"), format!("{{\"chat_name\":{number}}}")),
            (
                "PUT",
                format!("/api/applications/{token}/chats/{chat}"),
                format!("{{\"chat_name\":\"a\",\"messages_count\":{number}}}"),
            ),
        ];
        for (method, path, body) in bodies {
            let answer = send(addr, method, &path, body.as_bytes()).await;
            assert!(answer.status < 500, "{method} {path} {body}: {} {}", answer.status, answer.text());
        }
    }
}

/// `..`, `%2e%2e` and `%2f` in every path parameter of the chat, segments and events routes: a
/// 4xx, except where the parameter is an opaque string (a segments user id), which is looked up
/// as that string and found to have nothing; never a 5xx, never a file's contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_in_every_path_parameter_is_a_4xx() {
    let server = spawn().await;
    let addr = server.addr;
    let token = application(addr).await;
    let chat = chat(addr, &token).await.to_string();
    // Parameters that are opaque strings, whatever their characters.
    let opaque = ["{user}"];
    let templates: &[(&[&str], &str)] = &[
        (&["GET", "PUT", "PATCH"], "/api/applications/{token}"),
        (&["GET", "POST"], "/api/applications/{token}/chats"),
        (&["GET", "PUT", "PATCH", "POST"], "/api/applications/{token}/chats/{chat}"),
        (&["GET", "POST"], "/api/applications/{token}/chats/{chat}/messages"),
        (&["GET", "PUT", "PATCH"], "/api/applications/{token}/chats/{chat}/messages/{message}"),
        (&["GET"], "/api/applications/{token}/chats/{chat}/search?q=a"),
        (&["GET", "DELETE"], "/segments/{slug}"),
        (&["GET"], "/segments/users/{user}"),
        (&["GET"], "/segments/users/{user}/history?from=2024-01-01&to=2024-02-01"),
        (&["GET"], "/history/{user}/{from}/{to}/history.csv"),
        (&["GET", "PATCH", "DELETE"], "/api/v1/segments/{segment}"),
        (&["GET", "PATCH", "DELETE"], "/api/v1/flags/{flag}"),
        (&["POST"], "/api/v1/flags/{flag}/evaluate"),
        (&["GET"], "/api/v1/decisions/{decision}"),
        (&["GET", "PUT", "PATCH", "DELETE"], "/events/{event}/"),
        (&["GET"], "/errors/{error}/"),
        (&["GET"], "/sessions/{session}/"),
        (&["GET"], "/schemas/{category}/{name}/"),
    ];
    let good = [
        ("{token}", token.as_str()),
        ("{chat}", chat.as_str()),
        ("{message}", "1"),
        ("{slug}", "some-slug"),
        ("{user}", "7"),
        ("{from}", "2024-01-01"),
        ("{to}", "2024-02-01"),
        ("{segment}", "1"),
        ("{flag}", "1"),
        ("{decision}", "1"),
        ("{event}", "1"),
        ("{error}", "1"),
        ("{session}", "1"),
        ("{category}", "c"),
        ("{name}", "n"),
    ];
    let hostile = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2f",
        "a%2fb",
        "%2e%2e%2f%2e%2e%2fetc",
        "..%5c..%5c",
    ];
    let mut sent = 0;
    for (methods, template) in templates {
        for (param, _) in good.iter().filter(|(param, _)| template.contains(param)) {
            for value in hostile {
                let mut path = template.replace(param, value);
                for (other, filler) in &good {
                    path = path.replace(other, filler);
                }
                for method in *methods {
                    let body = if matches!(*method, "GET" | "DELETE") { &b""[..] } else { b"{}" };
                    let answer = send(addr, method, &path, body).await;
                    let accepted = if opaque.contains(param) { 200..500 } else { 400..500 };
                    assert!(accepted.contains(&answer.status), "{method} {path}: {} {}", answer.status, answer.text());
                    assert!(!answer.text().contains("root:"), "{method} {path}: {}", answer.text());
                    sent += 1;
                }
            }
        }
    }
    assert!(sent > 300, "{sent}");
    assert_eq!(send(addr, "GET", "/healthz", b"").await.status, 200);
}
