//! DMN segments: decision tables with FIRST, UNIQUE and COLLECT hit policies, the membership
//! rule of seed 002, stored decisions, refused models, and compile-once caching.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{JsonApiReply, TestApp, dmn_table};

async fn dmn_segment(app: &TestApp, key: &str, xml: &str) -> String {
    app.create_segment(json!({"key": key, "name": key, "ruleType": "DMN", "ruleContent": xml})).await
}

async fn member(app: &TestApp, key: &str, attributes: Value) -> bool {
    app.evaluate("user-1", attributes).await.iter().any(|k| k == key)
}

pub async fn first_hit_policy(app: &TestApp) {
    let xml = dmn_table(
        "eligible",
        "FIRST",
        &[("age", "number"), ("country", "string")],
        &[("", "boolean")],
        &[(&["< 18", "-"], &["false"]), (&["-", "\"BR\",\"US\""], &["true"]), (&["-", "-"], &["false"])],
    );
    dmn_segment(app, "first", &xml).await;
    assert!(member(app, "first", json!({"age": 30, "country": "BR"})).await);
    assert!(!member(app, "first", json!({"age": 15, "country": "BR"})).await, "the first matching rule decides");
    assert!(!member(app, "first", json!({"age": 30, "country": "DE"})).await);
    let reply = app
        .v1(
            Method::POST,
            "/api/v1/segments/evaluate",
            Some(&json!({"userId": "x", "attributes": {"age": 40, "country": "US"}})),
        )
        .await;
    assert_eq!(reply.body["data"][0]["attributes"]["reason"], json!({"kind": "RULE", "ruleType": "DMN"}));
}

pub async fn unique_hit_policy(app: &TestApp) {
    let disjoint = dmn_table(
        "score",
        "UNIQUE",
        &[("creditScore", "number")],
        &[("", "boolean")],
        &[(&[">= 700"], &["true"]), (&["< 700"], &["false"])],
    );
    dmn_segment(app, "unique", &disjoint).await;
    assert!(member(app, "unique", json!({"creditScore": 750})).await);
    assert!(!member(app, "unique", json!({"creditScore": 500})).await);
    assert!(!member(app, "unique", json!({})).await, "no input, no rule matches");
    // Two rules matching under UNIQUE is no answer: not a member.
    let overlapping = dmn_table(
        "overlap",
        "UNIQUE",
        &[("creditScore", "number")],
        &[("", "boolean")],
        &[(&[">= 700"], &["true"]), (&[">= 600"], &["true"])],
    );
    dmn_segment(app, "overlap", &overlapping).await;
    assert!(member(app, "overlap", json!({"creditScore": 650})).await);
    assert!(!member(app, "overlap", json!({"creditScore": 750})).await);
}

pub async fn collect_hit_policy(app: &TestApp) {
    let collect = dmn_table(
        "signals",
        "COLLECT",
        &[("plan", "string"), ("country", "string")],
        &[("", "boolean")],
        &[(&["\"premium\"", "-"], &["true"]), (&["-", "\"BR\""], &["true"]), (&["\"free\"", "-"], &["false"])],
    );
    dmn_segment(app, "collect", &collect).await;
    assert!(member(app, "collect", json!({"plan": "premium", "country": "DE"})).await);
    assert!(member(app, "collect", json!({"plan": "free", "country": "BR"})).await, "[true, false] holds a true");
    assert!(!member(app, "collect", json!({"plan": "free", "country": "DE"})).await, "[false]");
    assert!(!member(app, "collect", json!({"plan": "basic", "country": "DE"})).await, "no rule matched: []");
    // COLLECT with an aggregation: a count above zero is truthy.
    let count = dmn_table(
        "hits",
        "COLLECT COUNT",
        &[("plan", "string"), ("country", "string")],
        &[("", "string")],
        &[(&["\"premium\"", "-"], &["\"p\""]), (&["-", "\"BR\""], &["\"b\""])],
    );
    dmn_segment(app, "count", &count).await;
    assert!(member(app, "count", json!({"plan": "premium", "country": "BR"})).await);
    assert!(!member(app, "count", json!({"plan": "basic", "country": "DE"})).await, "COUNT of nothing is 0");
}

/// Membership per seed 002: `true`, an object with `isMember` / `match` / `result` true, or a
/// truthy value.
pub async fn object_and_truthy_outputs(app: &TestApp) {
    let object = dmn_table(
        "tiering",
        "FIRST",
        &[("totalSpent", "number")],
        &[("isMember", "boolean"), ("tier", "string")],
        &[(&[">= 1000"], &["true", "\"gold\""]), (&["-"], &["false", "\"none\""])],
    );
    dmn_segment(app, "object", &object).await;
    assert!(member(app, "object", json!({"totalSpent": 5000})).await);
    assert!(!member(app, "object", json!({"totalSpent": 10})).await, "isMember false, though tier is a string");
    let matched = dmn_table(
        "matching",
        "FIRST",
        &[("plan", "string")],
        &[("match", "boolean"), ("score", "number")],
        &[(&["\"pro\""], &["true", "1"]), (&["-"], &["false", "0"])],
    );
    dmn_segment(app, "match", &matched).await;
    assert!(member(app, "match", json!({"plan": "pro"})).await);
    assert!(!member(app, "match", json!({"plan": "free"})).await);
    let truthy = dmn_table(
        "label",
        "FIRST",
        &[("country", "string")],
        &[("", "string")],
        &[(&["\"BR\""], &["\"latam\""]), (&["-"], &["\"\""])],
    );
    dmn_segment(app, "truthy", &truthy).await;
    assert!(member(app, "truthy", json!({"country": "BR"})).await, "a non-empty string is truthy");
    assert!(!member(app, "truthy", json!({"country": "FR"})).await, "an empty string is not");
    let number = dmn_table(
        "weight",
        "FIRST",
        &[("age", "number")],
        &[("", "number")],
        &[(&[">= 18"], &["age * 2"]), (&["-"], &["0"])],
    );
    dmn_segment(app, "number", &number).await;
    assert!(member(app, "number", json!({"age": 20})).await);
    assert!(!member(app, "number", json!({"age": 10})).await);
}

/// `/api/v1/decisions` stores a model once; segments refer to it by `decisionId`.
pub async fn stored_decisions(app: &TestApp) {
    let xml = dmn_table(
        "stored",
        "FIRST",
        &[("plan", "string")],
        &[("", "boolean")],
        &[(&["\"enterprise\""], &["true"]), (&["-"], &["false"])],
    );
    let reply = app.send_raw(Method::POST, "/api/v1/decisions", "application/xml", &xml, Some(&app.admin)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let decision = reply.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.body["data"]["type"], "decisions");
    assert_eq!(reply.body["data"]["attributes"]["name"], "stored");
    assert_eq!(reply.body["data"]["attributes"]["decision"], "stored");
    let reply = app.v1(Method::GET, &format!("/api/v1/decisions/{decision}"), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["attributes"]["content"], xml.as_str());
    // The JSON form of an upload.
    let reply = app.v1(Method::POST, "/api/v1/decisions", Some(&json!({"name": "Named", "content": xml}))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["data"]["attributes"]["name"], "Named");

    let segment = app
        .create_segment(json!({"key": "complex-eligibility", "name": "Complex Eligibility", "ruleType": "DMN", "decisionId": decision}))
        .await;
    let reply = app.v1(Method::GET, &format!("/api/v1/segments/{segment}"), None).await;
    assert_eq!(reply.body["data"]["attributes"]["decisionId"], decision.as_str());
    assert!(reply.body["data"]["attributes"]["ruleContent"].is_null());
    assert!(member(app, "complex-eligibility", json!({"plan": "enterprise"})).await);
    assert!(!member(app, "complex-eligibility", json!({"plan": "free"})).await);

    let both = json!({"key": "both", "name": "B", "ruleType": "DMN", "decisionId": decision, "ruleContent": xml});
    let reply = app.v1(Method::POST, "/api/v1/segments", Some(&both)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let unknown =
        json!({"key": "u", "name": "U", "ruleType": "DMN", "decisionId": "550e8400-e29b-41d4-a716-446655440099"});
    let reply = app.v1(Method::POST, "/api/v1/segments", Some(&unknown)).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::BAD_REQUEST, "VALIDATION"));
    assert_eq!(reply.body["errors"][0]["source"]["pointer"], "/decisionId");
    for id in ["550e8400-e29b-41d4-a716-446655440099", "nope"] {
        let reply = app.v1(Method::GET, &format!("/api/v1/decisions/{id}"), None).await;
        assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    }
    let reply = app.send_raw(Method::POST, "/api/v1/decisions", "text/xml", "<definitions", Some(&app.admin)).await;
    assert_eq!((reply.status, reply.jsonapi_code()), (StatusCode::BAD_REQUEST, "VALIDATION"));
    let reply = app.v1(Method::POST, "/api/v1/decisions", Some(&json!({"name": "no content"}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reader = segments::auth::mint_key(
        app.state.db(),
        "reader",
        segments::auth::Permissions::from_list(&[segments::auth::Permission::SegmentsRead]),
    )
    .await
    .unwrap();
    let reply = app.send_raw(Method::POST, "/api/v1/decisions", "application/xml", &xml, Some(&reader.token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = app.send_raw(Method::POST, "/api/v1/decisions", "application/xml", &xml, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// A model that does not parse or validate is a 400 carrying the parser's reason.
pub async fn invalid_models_are_refused(app: &TestApp) {
    let valid = dmn_table("v", "FIRST", &[("a", "number")], &[("", "boolean")], &[(&["> 1"], &["true"])]);
    for (xml, fragment) in [
        ("not xml at all".to_owned(), "invalid DMN model"),
        ("<definitions".to_owned(), "invalid DMN model"),
        ("<?xml version=\"1.0\"?><root/>".to_owned(), "invalid DMN model"),
        (valid.replace("hitPolicy=\"FIRST\"", "hitPolicy=\"SOMETIMES\""), ""),
        (valid.replace("https://www.omg.org/spec/DMN/20191111/MODEL/", "urn:not-dmn"), ""),
    ] {
        let body = json!({"key": "bad", "name": "Bad", "ruleType": "DMN", "ruleContent": xml});
        let reply = app.v1(Method::POST, "/api/v1/segments", Some(&body)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "VALIDATION", &xml);
        assert_eq!(reply.body["errors"][0]["source"]["pointer"], "/ruleContent");
        let detail = reply.body["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(fragment) && detail.len() > 10, "{detail}");
    }
    // PATCH to a broken model is refused and leaves the segment as it was.
    let id = dmn_segment(app, "good", &valid).await;
    let reply =
        app.v1(Method::PATCH, &format!("/api/v1/segments/{id}"), Some(&json!({"ruleContent": "<definitions"}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(member(app, "good", json!({"a": 5})).await);
    // Switching the type to SIMPLE with XML content is refused too.
    let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{id}"), Some(&json!({"ruleType": "SIMPLE"}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

/// Each segment version is compiled once, however many evaluations use it.
pub async fn compiled_once_per_version(app: &TestApp) {
    let xml = dmn_table("c", "FIRST", &[("a", "number")], &[("", "boolean")], &[(&["> 1"], &["true"])]);
    let id = dmn_segment(app, "cached", &xml).await;
    app.create_segment(json!({"key": "simple", "name": "S",
        "ruleContent": r#"{"conditions":[{"attribute":"a","operator":"gt","value":1}]}"#}))
        .await;
    assert_eq!(app.evaluate("u", json!({"a": 2})).await, ["cached", "simple"]);
    let compiled = app.state.engine().compilations();
    assert_eq!(compiled, 2);
    for a in 0..10 {
        app.evaluate("u", json!({"a": a})).await;
    }
    assert_eq!(app.state.engine().compilations(), compiled, "no recompilation without a change");
    let patch = json!({"ruleContent": xml.replace("&gt; 1", "&gt; 5")});
    let reply = app.v1(Method::PATCH, &format!("/api/v1/segments/{id}"), Some(&patch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(app.evaluate("u", json!({"a": 2})).await, ["simple"], "the new version answers at once");
    assert_eq!(app.state.engine().compilations(), compiled + 1, "only the changed segment is recompiled");
}
