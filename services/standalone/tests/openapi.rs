//! `/openapi.json`: one OpenAPI 3.1 document with every chat, segments and events operation,
//! merged from chat-write, chat-read, segments and events.

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
        ("/segments", &["get", "post"]),
        ("/segments/{slug}", &["get", "delete"]),
        ("/segments/users", &["post"]),
        ("/segments/users/{id}", &["get"]),
        ("/segments/users/{id}/history", &["get"]),
        ("/history/{id}/{from}/{to}/history.csv", &["get"]),
        ("/api/v1/segments", &["get", "post"]),
        ("/api/v1/segments/{id}", &["get", "patch", "delete"]),
        ("/api/v1/segments/evaluate", &["post"]),
        ("/api/v1/decisions", &["post"]),
        ("/api/v1/decisions/{id}", &["get"]),
        ("/api/v1/flags", &["get", "post"]),
        ("/api/v1/flags/{id}", &["get", "patch", "delete"]),
        ("/api/v1/flags/{id}/evaluate", &["post"]),
        ("/sessions/", &["get", "post"]),
        ("/events/", &["get", "post"]),
        ("/events/{id}/", &["get", "put", "patch", "delete"]),
        ("/events/batch", &["post"]),
        ("/errors/", &["get"]),
        ("/user/batches", &["post"]),
        ("/user/last-events", &["get"]),
        ("/user/last-sessions-user", &["get"]),
    ];
    for (path, methods) in expected {
        for method in methods {
            assert!(document["paths"][path][method].is_object(), "{method} {path} missing");
        }
    }
    let error = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["example"]["error"]["code"], "NOT_FOUND");
    // The v1 routes answer JSON:API documents and take a bearer token.
    let create = &document["paths"]["/api/v1/segments"]["post"];
    assert!(create["responses"]["201"]["content"]["application/vnd.api+json"].is_object());
    assert!(create["responses"]["409"]["content"]["application/vnd.api+json"].is_object());
    assert_eq!(create["security"][0]["bearerAuth"], serde_json::json!([]));
    assert_eq!(document["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    // So do the legacy routes, and listing applications takes the admin token.
    for (path, method) in
        [("/segments", "get"), ("/segments/users", "post"), ("/history/{id}/{from}/{to}/history.csv", "get")]
    {
        let operation = &document["paths"][path][method];
        assert_eq!(operation["security"][0]["bearerAuth"], serde_json::json!([]), "{method} {path}");
        assert!(operation["responses"]["401"].is_object() && operation["responses"]["403"].is_object(), "{path}");
    }
    let list = &document["paths"]["/api/applications"]["get"];
    assert_eq!(list["security"][0]["adminToken"], serde_json::json!([]));
    assert!(list["responses"]["401"].is_object());
    assert_eq!(document["components"]["securitySchemes"]["adminToken"]["scheme"], "bearer");
    assert!(document["paths"]["/api/applications"]["post"].get("security").is_none(), "creating needs no token");
    // Examples from the seeds.
    let legacy = &document["components"]["schemas"]["LegacyChange"]["example"];
    assert_eq!(legacy["id"], 73234);
    assert_eq!(document["components"]["schemas"]["SegmentInput"]["example"]["key"], "premium-users");

    // The segments binary serves its own document, and the docs page.
    let docs = reqwest::get(format!("{base}/docs")).await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
    trigger.trigger();
}
