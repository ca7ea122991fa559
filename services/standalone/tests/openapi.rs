//! `/openapi.json`: one OpenAPI 3.1 document with every chat, segments and events operation,
//! merged from chat-write, chat-read, segments and events.

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_chat_operation() {
    let server = chatmesh::testing::spawn(|_| {}).await;
    let base = &server.url;

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
    // Every operation of the segments and events documents (each listed in its own service's
    // tests) stands in the merged one.
    for service in [segments::openapi::document(), events::openapi::document()] {
        let service: Value = serde_json::from_str(&shared::openapi::to_json(&service)).unwrap();
        for (path, item) in service["paths"].as_object().unwrap() {
            let methods = ["get", "put", "post", "delete", "patch"];
            for method in item.as_object().unwrap().keys().filter(|key| methods.contains(&key.as_str())) {
                assert!(document["paths"][path][method].is_object(), "{method} {path} missing");
            }
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
    drop(server);
}
