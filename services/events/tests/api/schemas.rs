//! `/schemas/`: the three shipped schemas, and registering, replacing and removing more.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{pairs, reasons, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_ship_and_can_be_registered_replaced_and_removed() {
    let app = spawn_app().await;
    let shipped = app.get("/schemas/").await.expect(StatusCode::OK);
    let names: Vec<(String, String)> = shipped
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["category"].as_str().unwrap().to_owned(), s["name"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        names,
        pairs(&[("form interaction", "submit"), ("page interaction", "cta click"), ("page interaction", "pageview")])
    );
    let pageview = app.get("/schemas/page%20interaction/pageview/").await.expect(StatusCode::OK);
    assert_eq!(pageview["schema"]["required"], json!(["host", "path"]));

    let schema =
        json!({"type": "object", "required": ["query"], "properties": {"query": {"type": "string", "minLength": 2}}});
    let created = app.post("/schemas/", &json!({"category": "search", "name": "query", "schema": schema})).await;
    assert_eq!(created.expect(StatusCode::CREATED)["schema"], schema);
    let again = app.post("/schemas/", &json!({"category": "search", "name": "query", "schema": schema})).await;
    assert_eq!(again.expect_status_code(StatusCode::CONFLICT), "CONFLICT");
    for bad in [
        json!({"category": "search", "name": "other", "schema": {"type": "nonsense"}}),
        json!({"category": "search", "name": "other", "schema": "a string"}),
        json!({"category": " ", "name": "other", "schema": {}}),
        json!({"category": "search", "name": "other"}),
    ] {
        assert_eq!(
            app.post("/schemas/", &bad).await.expect_status_code(StatusCode::UNPROCESSABLE_ENTITY),
            "VALIDATION_FAILED",
            "{bad}"
        );
    }

    // Events of the new type are checked against it.
    let session = app.create_session().await;
    let event = |query: serde_json::Value| json!({"session": {"id": session}, "category": "search", "name": "query", "data": {"query": query}, "timestamp": "2021-06-15"});
    let good = app.post_event(&event(json!("shoes"))).await;
    let short = app.post_event(&event(json!("s"))).await;
    app.drain().await;
    assert_eq!(app.get(&format!("/events/{good}/")).await.status, StatusCode::OK);
    let error = app.get(&format!("/errors/{short}/")).await.expect(StatusCode::OK);
    assert_eq!(reasons(&error), pairs(&[("schema_violation", "/data/query")]));

    // Replaced: the new rule applies at once.
    let replaced =
        app.put("/schemas/search/query/", &json!({"schema": {"type": "object", "required": ["page"]}})).await;
    assert_eq!(replaced.expect(StatusCode::OK)["schema"]["required"], json!(["page"]));
    let now_invalid = app.post_event(&event(json!("shoes"))).await;
    app.drain().await;
    assert_eq!(
        reasons(&app.get(&format!("/errors/{now_invalid}/")).await.expect(StatusCode::OK)),
        pairs(&[("schema_violation", "/data/page")])
    );
    // PUT creates too.
    assert_eq!(app.put("/schemas/search/filter", &json!({"schema": true})).await.status, StatusCode::CREATED);

    // Removed: events of that type pass on the common rules alone.
    assert_eq!(app.delete("/schemas/search/query/").await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.delete("/schemas/search/query/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/schemas/search/query/").await.status, StatusCode::NOT_FOUND);
    let free = app.post_event(&event(json!(1))).await;
    app.drain().await;
    assert_eq!(app.get(&format!("/events/{free}/")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_types_can_be_required_to_have_a_schema() {
    let app = spawn_app_with(|config| config.settings.require_schema = true).await;
    let session = app.create_session().await;
    let id = app
        .post_event(&json!({"session": {"id": session}, "category": "misc", "name": "thing", "data": {"k": 1}, "timestamp": "2021-06-15"}))
        .await;
    app.drain().await;
    assert_eq!(
        reasons(&app.get(&format!("/errors/{id}/")).await.expect(StatusCode::OK)),
        pairs(&[("unknown_event_type", "/name")])
    );
}
