//! Request smuggling: heads whose framing is ambiguous, sent raw to a gateway with its express
//! lane and to one with pingora-proxy alone. The express lane answers each exactly as
//! pingora-proxy does (it hands every such request over), or with a 400; and no request hidden
//! in a body ever reaches the upstream.

use chatmesh_e2e::harness::http_get;

use crate::helpers::{addr, exchange, express_and_pingora, stub};

/// The request hidden after each ambiguous body: a PUT, which no case sends in the open.
const HIDDEN: &str = "PUT /api/applications/smuggled HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";

/// (what, raw request); `{hidden}` is replaced by [`HIDDEN`].
const CASES: &[(&str, &str)] = &[
    (
        "Content-Length and Transfer-Encoding",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}",
    ),
    (
        "Transfer-Encoding and Content-Length",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 80\r\n\r\n0\r\n\r\n{hidden}",
    ),
    (
        "two different Content-Lengths",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 80\r\n\r\n{hidden}",
    ),
    (
        "two equal Content-Lengths",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}{hidden}",
    ),
    ("a Content-Length list", "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length: 2, 2\r\n\r\n{}{hidden}"),
    ("a signed Content-Length", "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length: +2\r\n\r\n{}{hidden}"),
    (
        "an overflowing Content-Length",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551617\r\n\r\n{}{hidden}",
    ),
    ("obs-fold", "GET /api/applications HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n{hidden}"),
    (
        "obs-fold on Content-Length",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n 80\r\n\r\n{hidden}",
    ),
    (
        "obs-fold on Transfer-Encoding",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n chunked\r\nContent-Length: 0\r\n\r\n{hidden}",
    ),
    (
        "a bare CR in a value",
        "GET /api/applications HTTP/1.1\r\nHost: t\r\nX-Cr: a\rContent-Length: 80\r\n\r\n{hidden}",
    ),
    ("bare LF line endings", "GET /api/applications HTTP/1.1\nHost: t\n\n{hidden}"),
    ("a bare LF inside the head", "POST /api/applications HTTP/1.1\r\nHost: t\nContent-Length: 0\r\n\r\n{hidden}"),
    (
        "a chunk extension",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;name=value\r\n{}\r\n0\r\n\r\n{hidden}",
    ),
    (
        "a chunk extension hiding a size",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\n50\r\n{}\r\n0\r\n\r\n{hidden}",
    ),
    (
        "an overflowing chunk size",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000002\r\n{}\r\n0\r\n\r\n{hidden}",
    ),
    (
        "a 0x chunk size",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n{hidden}",
    ),
    (
        "Transfer-Encoding: chunked, identity",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{hidden}",
    ),
    (
        "Transfer-Encoding: identity",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n{hidden}",
    ),
    (
        "two Transfer-Encodings",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{hidden}",
    ),
    ("a space before the colon", "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length : 80\r\n\r\n{hidden}"),
    (
        "a space inside a header name",
        "POST /api/applications HTTP/1.1\r\nHost: t\r\nTransfer Encoding: chunked\r\nContent-Length: 0\r\n\r\n{hidden}",
    ),
    ("a tab before the colon", "POST /api/applications HTTP/1.1\r\nHost: t\r\nContent-Length\t: 80\r\n\r\n{hidden}"),
    ("a NUL in a value", "GET /api/applications HTTP/1.1\r\nHost: t\r\nX-Nul: a\0b\r\n\r\n{hidden}"),
    (
        "HTTP/1.0 with Transfer-Encoding",
        "POST /api/applications HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n{hidden}",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_answered_as_pingora_answers_it_and_smuggles_nothing() {
    let upstream = stub("chat-read");
    let dir = tempfile::tempdir().unwrap();
    let gateways = express_and_pingora(dir.path(), &upstream);
    let addrs = gateways.each_ref().map(addr);

    let mut table = Vec::new();
    for (what, template) in CASES {
        let raw = template.replace("{hidden}", HIDDEN);
        let (express, express_text) = exchange(addrs[0], raw.as_bytes()).await;
        let (pingora, pingora_text) = exchange(addrs[1], raw.as_bytes()).await;
        table.push(format!("{what}: express {express:?}, pingora-proxy {pingora:?}"));
        assert!(
            express == pingora || express == [400],
            "{what}: the express lane answered {express:?}, pingora-proxy {pingora:?}\n{express_text}\n---\n{pingora_text}"
        );
        for text in [&express_text, &pingora_text] {
            assert!(!text.contains("smuggled"), "{what}: the hidden request was answered: {text}");
        }
        assert!(express.iter().all(|s| *s < 500), "{what}: a 5xx for a client's framing: {express_text}");
    }
    println!("{}", table.join("\n"));
    let stats = http_get(&format!("http://{}/stats", upstream.addr)).unwrap_or_default();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["PUT"].as_u64().unwrap_or(0), 0, "a hidden request reached the upstream: {stats}");
}
