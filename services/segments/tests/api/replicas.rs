//! Several processes on one store: a rule created, updated or deleted, or an explicit
//! membership added or removed, through one of them is what the others evaluate with within a
//! second, and what the one that wrote evaluates with at once.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use segments::auth::Permission;
use serde_json::{Value, json};

use crate::access::SegmentsProcess;
use crate::helpers::TestApp;

/// A rule on `age`, from `min` up.
fn adults_from(min: i64) -> String {
    json!({"conditions": [{"attribute": "age", "operator": "gte", "value": min}]}).to_string()
}

pub async fn changes_reach_every_process_within_a_second(app: &TestApp) {
    let key = app
        .mint(&[
            Permission::SegmentsCreate,
            Permission::SegmentsRead,
            Permission::SegmentsUpdate,
            Permission::SegmentsDelete,
        ])
        .await;
    let other = SegmentsProcess::start(app).await;
    let (here, there) =
        (Replica { app, base: app.base.clone(), key: &key }, Replica { app, base: other.base.clone(), key: &key });
    // Both have evaluated (and hold the compiled rules of) the store as it is before each change.
    assert_eq!(here.evaluate().await, Vec::<String>::new());
    assert_eq!(there.evaluate().await, Vec::<String>::new());

    let created = here
        .send(
            Method::POST,
            "/api/v1/segments",
            json!({"key": "adults", "name": "Adults", "ruleContent": adults_from(18)}),
        )
        .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let id = created.1["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(here.evaluate().await, ["adults"], "rule created through this process");
    there.sees_within_a_second(&["adults"], "rule created through the other process").await;

    let path = format!("/api/v1/segments/{id}");
    let updated = there.send(Method::PATCH, &path, json!({"ruleContent": adults_from(40)})).await;
    assert_eq!(updated.0, StatusCode::OK, "{}", updated.1);
    assert_eq!(there.evaluate().await, Vec::<String>::new(), "rule updated through this process");
    here.sees_within_a_second(&[], "rule updated through the other process").await;

    let updated = here.send(Method::PATCH, &path, json!({"ruleContent": adults_from(21)})).await;
    assert_eq!(updated.0, StatusCode::OK, "{}", updated.1);
    assert_eq!(here.evaluate().await, ["adults"], "rule updated through this process");
    there.sees_within_a_second(&["adults"], "rule updated through the other process").await;

    let deleted = there.send(Method::DELETE, &path, Value::Null).await;
    assert_eq!(deleted.0, StatusCode::NO_CONTENT, "{}", deleted.1);
    assert_eq!(there.evaluate().await, Vec::<String>::new(), "rule deleted through this process");
    here.sees_within_a_second(&[], "rule deleted through the other process").await;

    let created = here.send(Method::POST, "/api/v1/segments", json!({"key": "manual", "name": "Manual"})).await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let added = there.send(Method::POST, "/segments/users", json!({"id": "u-30", "add": [{"slug": "manual"}]})).await;
    assert_eq!(added.0, StatusCode::OK, "{}", added.1);
    assert_eq!(there.evaluate().await, ["manual"], "membership added through this process");
    here.sees_within_a_second(&["manual"], "membership added through the other process").await;
    let removed =
        here.send(Method::POST, "/segments/users", json!({"id": "u-30", "remove": [{"slug": "manual"}]})).await;
    assert_eq!(removed.0, StatusCode::OK, "{}", removed.1);
    assert_eq!(here.evaluate().await, Vec::<String>::new(), "membership removed through this process");
    there.sees_within_a_second(&[], "membership removed through the other process").await;
}

/// One process serving the store, called with a minted key.
struct Replica<'a> {
    app: &'a TestApp,
    base: String,
    key: &'a str,
}

impl Replica<'_> {
    async fn send(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut request = self.app.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.key);
        if !body.is_null() {
            request = request.json(&body);
        }
        let reply = request.send().await.expect("request");
        let status = reply.status();
        let text = reply.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The keys of the segments a 30-year-old is in, by this process's evaluation.
    async fn evaluate(&self) -> Vec<String> {
        let body = json!({"userId": "u-30", "attributes": {"age": 30}});
        let (status, answer) = self.send(Method::POST, "/api/v1/segments/evaluate", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let data = answer["data"].as_array().expect("data");
        data.iter().map(|s| s["attributes"]["key"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// Evaluates until the answer is `expected`, failing when it is not within a second.
    async fn sees_within_a_second(&self, expected: &[&str], change: &str) {
        let written = Instant::now();
        loop {
            let keys = self.evaluate().await;
            if keys == expected {
                eprintln!("{}: {change}, used after {} ms", self.base, written.elapsed().as_millis());
                return;
            }
            assert!(
                written.elapsed() < Duration::from_secs(1),
                "{}: {change} 1 s ago, not used: {keys:?}, expected {expected:?}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
