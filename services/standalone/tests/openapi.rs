//! `/openapi.json`: one OpenAPI 3.1 document with every chat operation, merged from chat-write
//! and chat-read.

use serde_json::Value;
use shared::shutdown::channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_chat_operation() {
    let dir = tempfile::tempdir().unwrap();
    let server = chatmesh::start(&chatmesh::Config::embedded(dir.path())).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = channel();
    tokio::spawn(server.serve(listener, shutdown));

    let response = reqwest::get(format!("{base}/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let chat = "/api/applications/{token}/chats/{chat_number}";
    let expected = [
        ("/api/applications", &["get", "post"][..]),
        ("/api/applications/{token}", &["get", "put", "patch"]),
        ("/api/applications/{token}/chats", &["get", "post"]),
        (chat, &["get", "put", "patch", "post"]),
        ("/api/applications/{token}/chats/{chat_number}/messages", &["get", "post"]),
        ("/api/applications/{token}/chats/{chat_number}/messages/{message_number}", &["get", "put", "patch"]),
        ("/api/applications/{token}/chats/{chat_number}/search", &["get"]),
    ];
    for (path, methods) in expected {
        for method in methods {
            assert!(document["paths"][path][method].is_object(), "{method} {path} missing");
        }
    }
    let error = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["example"]["error"]["code"], "NOT_FOUND");
    trigger.trigger();
}
