//! One app per test: the events service on port 0 with its own data dir, queue namespace and
//! (when `DATABASE_URL` is set) its own MySQL database; RabbitMQ when `AMQP_URL` is set. The
//! consumer is not running: tests drain it when they want the queued events processed, so
//! every outcome is deterministic. The clock is manual.

use std::sync::Arc;

use events::consumer::{Consumer, StepReport};
use events::{Config, Events};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::clock::ManualClock;
use shared::shutdown::ShutdownTrigger;
use shared::testing::{backend_url, fresh_mysql_database, fresh_namespace};

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub state: Events,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    consumer: tokio::sync::Mutex<Consumer>,
    trigger: ShutdownTrigger,
    pub dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An app whose config `adjust` changed first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    shared::telemetry::init();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded(dir.path());
    config.serve.backends.namespace = fresh_namespace("events");
    if let Some(url) = backend_url("DATABASE_URL", "events API tests on MySQL (running on SQLite instead)") {
        config.serve.backends.database_url = Some(fresh_mysql_database(&url).await);
    }
    if let Some(url) = backend_url("AMQP_URL", "events API tests on RabbitMQ (running on the embedded queue instead)") {
        config.serve.backends.amqp_url = Some(url);
    }
    adjust(&mut config);
    let clock = Arc::new(ManualClock::starting_now());
    let (state, backends) = events::connect(&config, clock.clone()).await.expect("backends connect");
    // The adapters really are the ones the environment names.
    assert_eq!(
        state.db.dialect() == shared::backends::sql::Dialect::MySql,
        config.serve.backends.database_url.is_some(),
        "store: {}",
        backends.description
    );
    assert_eq!(
        backends.description.contains("queue=amqp"),
        config.serve.backends.amqp_url.is_some(),
        "{}",
        backends.description
    );
    let consumer = Consumer::new(state.clone(), config.consumer_config()).await.expect("consumer subscribes");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = shared::shutdown::channel();
    tokio::spawn(shared::http::serve(listener, events::app(Some(state.clone()), &backends), shutdown));
    TestApp {
        url,
        client: reqwest::Client::new(),
        state,
        clock,
        config,
        consumer: tokio::sync::Mutex::new(consumer),
        trigger,
        dir,
    }
}

/// A response with its body read as JSON (`Value::Null` for an empty body).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("response body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{status}: body is not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        Self { status, headers, body }
    }

    /// The `rel="next"` target of the `Link` header, if any.
    pub fn next_link(&self) -> Option<String> {
        let link = self.headers.get(reqwest::header::LINK)?.to_str().ok()?;
        let start = link.find('<')? + 1;
        let end = link.find('>')?;
        link.contains("rel=\"next\"").then(|| link[start..end].to_owned())
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts the status and returns the error code of the JSON error body.
    #[track_caller]
    pub fn expect_status_code(self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.error_code().to_owned()
    }

    /// The error code of a JSON error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {}", self.body))
    }
}

impl TestApp {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::read(self.client.get(self.at(path)).send().await.expect("GET")).await
    }

    /// GET, with the body as the exact text served (for what parsing into a `Value` would hide).
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self.client.get(self.at(path)).send().await.expect("GET");
        (response.status(), response.text().await.expect("response body"))
    }

    /// Sends `body` as is, as JSON, with the response body as the exact text served.
    pub async fn send_text(&self, method: reqwest::Method, path: &str, body: String) -> (StatusCode, String) {
        let request =
            self.client.request(method, self.at(path)).header(reqwest::header::CONTENT_TYPE, "application/json");
        let response = request.body(body).send().await.expect("request");
        (response.status(), response.text().await.expect("response body"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        Answer::read(self.client.post(self.at(path)).json(body).send().await.expect("POST")).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        Answer::read(self.client.put(self.at(path)).json(body).send().await.expect("PUT")).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Answer {
        Answer::read(self.client.patch(self.at(path)).json(body).send().await.expect("PATCH")).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Answer::read(self.client.delete(self.at(path)).send().await.expect("DELETE")).await
    }

    /// Sends `body` as is, with `content_type` (none when `None`).
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
        let mut request = self.client.post(self.at(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        Answer::read(request.send().await.expect("POST")).await
    }

    /// Creates a session as the seed does (POST with an empty body) and returns its id.
    pub async fn create_session(&self) -> String {
        let body = self.post_raw("/sessions/", None, "").await.expect(StatusCode::CREATED);
        body["id"].as_str().expect("session id").to_owned()
    }

    /// Posts one event; returns the id it was accepted under.
    pub async fn post_event(&self, event: &Value) -> String {
        let body = self.post("/events/", event).await.expect(StatusCode::ACCEPTED);
        assert_eq!(body["status"], "queued");
        body["id"].as_str().expect("event id").to_owned()
    }

    /// Processes everything queued so far.
    pub async fn drain(&self) -> StepReport {
        self.consumer.lock().await.drain().await.expect("consumer drains")
    }

    /// Follows `Link: rel="next"` from `path`, collecting every page.
    pub async fn all_pages(&self, path: &str) -> (Vec<Value>, usize) {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut next = Some(path.to_owned());
        while let Some(path) = next {
            let answer = self.get(&path).await;
            next = answer.next_link();
            items.extend(answer.expect(StatusCode::OK).as_array().expect("a JSON array").iter().cloned());
            pages += 1;
            assert!(pages < 1000, "pagination does not end");
        }
        (items, pages)
    }
}

/// The seed's example event, in `session`.
pub fn pageview(session: &str, timestamp: &str) -> Value {
    json!({
        "session": {"id": session},
        "category": "page interaction",
        "name": "pageview",
        "data": {"host": "www.consumeraffairs.com", "path": "/"},
        "timestamp": timestamp,
    })
}

/// `(code, pointer)` of every reason of an error record, sorted.
pub fn reasons(error: &Value) -> Vec<(String, String)> {
    let mut reasons: Vec<(String, String)> = error["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| (r["code"].as_str().unwrap().to_owned(), r["pointer"].as_str().unwrap().to_owned()))
        .collect();
    reasons.sort();
    reasons
}

pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// The `session.id` of an event payload, when it has a string one.
pub fn session_id(event: &Value) -> Option<&str> {
    event.get("session")?.get("id")?.as_str()
}
