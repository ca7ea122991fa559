//! `/openapi.json`: every route of the service is documented, every documented operation is
//! routed, and what each answers is among its documented responses.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let app = spawn_app().await;
    let document = app.get("/openapi.json").await.expect(StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document, serde_json::to_value(events::openapi::document()).unwrap());
    let expected: [(&str, &[&str]); 14] = [
        ("/sessions/", &["get", "post"]),
        ("/sessions/{id}/", &["get"]),
        ("/events/", &["get", "post"]),
        ("/events/batch", &["post"]),
        ("/events/{id}/", &["get", "put", "patch", "delete"]),
        ("/errors/", &["get"]),
        ("/errors/{id}/", &["get"]),
        ("/schemas/", &["get", "post"]),
        ("/schemas/{category}/{name}/", &["get", "put", "delete"]),
        ("/user/batches", &["post"]),
        ("/user/last-events", &["get"]),
        ("/user/last-sessions-user", &["get"]),
        ("/user/last-events", &["get"]),
        ("/events/", &["get"]),
    ];
    for (path, methods) in expected {
        for method in methods {
            assert!(document["paths"][path][method].is_object(), "{method} {path} is not documented");
        }
    }
    // Component names are prefixed so they never collide with other services' in the merged
    // document of `chatmesh`.
    for name in document["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            ["ErrorBody", "ErrorDetail", "ErrorCode", "SessionRef"].contains(&name.as_str())
                || name.starts_with("Event")
                || name.starts_with("User"),
            "{name}"
        );
    }

    // Every documented operation is routed to the service, and answers a documented status.
    let session = app.create_session().await;
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let concrete = path.replace("{id}", &session).replace("{category}", "c").replace("{name}", "n");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = app.client.request(method.clone(), app.at(&concrete));
            if [Method::POST, Method::PUT, Method::PATCH].contains(&method) && !concrete.starts_with("/sessions") {
                request = request.json(&json!({}));
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            assert_eq!(
                response.headers().get("x-served-by").map(|v| v.to_str().unwrap()),
                Some("events"),
                "{method} {concrete} is not routed to the service ({status})"
            );
            assert!(
                operation["responses"][status.as_str()].is_object(),
                "{method} {concrete} answered {status}, which its operation does not document"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_are_at_docs_with_or_without_the_seeds_trailing_slash() {
    let app = spawn_app().await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let moved = no_redirects.get(app.at("/docs/")).send().await.unwrap();
    assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(moved.headers()[reqwest::header::LOCATION], "/docs");

    for path in ["/docs", "/docs/"] {
        let page = app.client.get(app.at(path)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        assert!(page.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"), "{path}");
        assert!(page.text().await.unwrap().contains("/openapi.json"), "{path}");
    }
}
