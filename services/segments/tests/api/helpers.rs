//! One app per test: the segments routes served on 127.0.0.1:0 with their own store (a
//! SQLite file in a temp dir, or a fresh MySQL database on the server in `DATABASE_URL`) and a
//! clock the test moves.

use std::path::PathBuf;
use std::sync::Arc;

use chatmesh_e2e::client::Api;
use reqwest::{Method, StatusCode};
use segments::{Segments, Settings};
use serde_json::Value;
use shared::backends::sql::Database;
use shared::clock::ManualClock;
use shared::shutdown::{ShutdownTrigger, channel};

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

/// 2023-08-30T17:36:28Z, the first line of seed 000's CSV example.
pub const START: i64 = 1_693_416_988_000;
pub const HOUR: i64 = 3_600_000;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// The client every request of [`TestApp::send`] goes through.
    api: Api,
    pub state: Segments,
    /// The admin token (every permission), unless the app was spawned without one.
    pub admin: String,
    pub backend: Backend,
    /// Where the store is, for the `segments` binary: its data dir (SQLite) or database URL.
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    clock: Arc<ManualClock>,
    trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

/// A response with its body read; its `error_code` is the code of a chatmesh error body
/// (legacy routes), [`JsonApiReply::jsonapi_code`] that of a JSON:API document.
pub use chatmesh_e2e::client::Reply;

/// What a `/api/v1` reply carries besides a chatmesh error body.
pub trait JsonApiReply {
    /// The `code` of the first JSON:API error.
    fn jsonapi_code(&self) -> &str;

    /// Asserts the status and the first JSON:API error code, saying `context` and the body
    /// when they are not the ones expected.
    fn assert_error(&self, status: StatusCode, code: &str, context: &str);
}

impl JsonApiReply for Reply {
    fn jsonapi_code(&self) -> &str {
        self.body["errors"][0]["code"].as_str().unwrap_or("")
    }

    fn assert_error(&self, status: StatusCode, code: &str, context: &str) {
        assert_eq!((self.status, self.jsonapi_code()), (status, code), "{context}: {}", self.text);
    }
}

/// Spawns an app on `backend` with an admin token; `None` when the backend's URL is not set.
pub async fn spawn(backend: Backend, test: &str) -> Option<TestApp> {
    spawn_with(backend, test, Some(format!("admin-{:032x}", rand::random::<u128>()))).await
}

/// Spawns an app with the admin token given (or none).
pub async fn spawn_with(backend: Backend, test: &str, admin: Option<String>) -> Option<TestApp> {
    let store = open_store(backend, test).await?;
    Some(serve_on(store, admin).await)
}

/// Spawns an app with these settings.
pub async fn spawn_with_settings(backend: Backend, test: &str, settings: Settings) -> Option<TestApp> {
    let store = open_store(backend, test).await?;
    Some(serve_with(store, settings).await)
}

/// A store as a test app gets it, before the service has migrated it.
pub struct Store {
    pub db: Database,
    pub backend: Backend,
    pub database_url: Option<String>,
    dir: tempfile::TempDir,
}

/// Opens a fresh, empty store on `backend`; `None` when the backend's URL is not set.
pub async fn open_store(backend: Backend, test: &str) -> Option<Store> {
    if std::env::var_os("SEGMENTS_TEST_LOG").is_some() {
        shared::telemetry::init();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, database_url) = match backend {
        Backend::Sqlite => (Database::open_sqlite(dir.path(), "chatmesh.db").await.expect("sqlite"), None),
        Backend::MySql => {
            let server = shared::testing::backend_url("DATABASE_URL", test)?;
            let url = shared::testing::fresh_mysql_database(&server).await;
            (Database::connect(&url).await.expect("mysql"), Some(url))
        }
    };
    Some(Store { db, backend, database_url, dir })
}

/// Serves the segments routes on `store` (migrating it, as the service does at start).
pub async fn serve_on(store: Store, admin: Option<String>) -> TestApp {
    serve_with(store, Settings { admin_token: admin, ..Settings::default() }).await
}

/// [`serve_on`] with every setting given.
pub async fn serve_with(store: Store, settings: Settings) -> TestApp {
    let Store { db, backend, database_url, dir } = store;
    let clock = Arc::new(ManualClock::new(START));
    let admin = settings.admin_token.clone();
    let state = Segments::with_clock(db, &settings, clock.clone()).await.expect("segments state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (trigger, shutdown) = channel();
    tokio::spawn(shared::http::serve(listener, segments::app(state.clone(), 1024 * 1024), shutdown));
    let api = Api::new(&base);
    TestApp {
        base,
        http: api.http.clone(),
        api,
        state,
        admin: admin.unwrap_or_default(),
        backend,
        data_dir: dir.path().to_path_buf(),
        database_url,
        clock,
        trigger,
        _dir: dir,
    }
}

impl TestApp {
    pub fn set_now(&self, millis: i64) {
        self.clock.set(millis);
    }

    pub fn advance(&self, millis: i64) {
        self.clock.advance(std::time::Duration::from_millis(millis as u64));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with an optional JSON body and an optional bearer token.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>, token: Option<&str>) -> Reply {
        self.bearing(token).send(method, path, body).await
    }

    /// Sends raw bytes with a content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
        token: Option<&str>,
    ) -> Reply {
        self.bearing(token).send_raw(method, path, content_type, body.as_bytes().to_vec()).await
    }

    /// The client, sending `token` as its bearer (or no credential).
    fn bearing(&self, token: Option<&str>) -> Api {
        match token {
            Some(token) => self.api.with_bearer(token),
            None => self.api.clone(),
        }
    }

    /// The admin token as a bearer, when the app has one.
    pub fn admin_bearer(&self) -> Option<&str> {
        Some(self.admin.as_str()).filter(|admin| !admin.is_empty())
    }

    /// `GET path` as the admin (when the app has one).
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, self.admin_bearer()).await
    }

    /// `POST path` as the admin (when the app has one).
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body), self.admin_bearer()).await
    }

    /// `DELETE path` as the admin (when the app has one).
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, self.admin_bearer()).await
    }

    /// Mints a key with `permissions` in this app's store; returns the key.
    pub async fn mint(&self, permissions: &[segments::auth::Permission]) -> String {
        let permissions = segments::auth::Permissions::from_list(permissions);
        segments::auth::mint_key(self.state.db(), "test key", permissions).await.expect("mint").token
    }

    /// `/api/v1` as the admin.
    pub async fn v1(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.send(method, path, body, Some(&self.admin)).await
    }

    /// Creates a legacy segment; returns the reply (asserted 201).
    pub async fn create_slug(&self, slug: &str) -> Reply {
        let reply = self.post("/segments", &serde_json::json!({ "slug": slug })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply
    }

    /// Creates a v1 segment as the admin; returns its id.
    pub async fn create_segment(&self, attributes: Value) -> String {
        let reply = self.v1(Method::POST, "/api/v1/segments", Some(&attributes)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{attributes}: {}", reply.text);
        reply.body["data"]["id"].as_str().expect("id").to_owned()
    }

    /// The keys of the segments a user is in, per `POST /api/v1/segments/evaluate`.
    pub async fn evaluate(&self, user_id: &str, attributes: Value) -> Vec<String> {
        let body = serde_json::json!({ "userId": user_id, "attributes": attributes });
        let reply = self.v1(Method::POST, "/api/v1/segments/evaluate", Some(&body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|item| item["attributes"]["key"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The user's active slugs, per `GET /segments/users/:id`.
    pub async fn user_slugs(&self, user: &str) -> Vec<String> {
        let reply = self.get(&format!("/segments/users/{user}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply
            .body
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["slug"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The user's CSV history over `[from, to]`, through the link the API gives (signed: it is
    /// fetched without a credential).
    pub async fn history_csv(&self, user: &str, from: &str, to: &str) -> String {
        let reply = self.get(&format!("/segments/users/{user}/history?from={from}&to={to}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let link = reply.body["link"].as_str().expect("link").to_owned();
        let csv = self.http.get(&link).send().await.expect("csv");
        assert_eq!(csv.status(), StatusCode::OK);
        assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        csv.text().await.expect("csv text")
    }
}

/// RFC 3339 (to the second) of a clock reading, as the API writes times.
pub fn at(millis: i64) -> String {
    segments::rfc3339_seconds(millis)
}

/// A DMN model with one decision table named `name`: `inputs` are `(name, typeRef)`, `outputs`
/// `(name, typeRef)` (one unnamed output when a single one is named ""), and each rule gives
/// its input entries and output entries as FEEL text.
#[cfg(feature = "dmn")]
pub fn dmn_table(
    name: &str,
    hit_policy: &str,
    inputs: &[(&str, &str)],
    outputs: &[(&str, &str)],
    rules: &[(&[&str], &[&str])],
) -> String {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let (policy, aggregation) = match hit_policy.split_once(' ') {
        Some((policy, aggregation)) => (policy, format!(" aggregation=\"{aggregation}\"")),
        None => (hit_policy, String::new()),
    };
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<definitions xmlns=\"https://www.omg.org/spec/DMN/20191111/MODEL/\" \
         namespace=\"https://chatmesh.test/{name}\" name=\"{name}\" id=\"_{name}\">\n  <decision name=\"{name}\" id=\"d_{name}\">\n    \
         <variable name=\"{name}\" id=\"v_{name}\"/>\n"
    );
    for (input, _) in inputs {
        xml.push_str(&format!(
            "    <informationRequirement id=\"ir_{input}\"><requiredInput href=\"#i_{input}\"/></informationRequirement>\n"
        ));
    }
    xml.push_str(&format!("    <decisionTable hitPolicy=\"{policy}\"{aggregation} id=\"dt_{name}\">\n"));
    for (input, type_ref) in inputs {
        xml.push_str(&format!(
            "      <input id=\"in_{input}\"><inputExpression typeRef=\"{type_ref}\" id=\"ie_{input}\"><text>{input}</text></inputExpression></input>\n"
        ));
    }
    for (index, (output, type_ref)) in outputs.iter().enumerate() {
        let name_attr = if output.is_empty() { String::new() } else { format!(" name=\"{output}\"") };
        xml.push_str(&format!("      <output id=\"out_{index}\"{name_attr} typeRef=\"{type_ref}\"/>\n"));
    }
    for (index, (entries, results)) in rules.iter().enumerate() {
        xml.push_str(&format!("      <rule id=\"r{index}\">"));
        for (column, entry) in entries.iter().enumerate() {
            xml.push_str(&format!("<inputEntry id=\"r{index}i{column}\"><text>{}</text></inputEntry>", escape(entry)));
        }
        for (column, result) in results.iter().enumerate() {
            xml.push_str(&format!(
                "<outputEntry id=\"r{index}o{column}\"><text>{}</text></outputEntry>",
                escape(result)
            ));
        }
        xml.push_str("</rule>\n");
    }
    xml.push_str("    </decisionTable>\n  </decision>\n");
    for (input, type_ref) in inputs {
        xml.push_str(&format!(
            "  <inputData name=\"{input}\" id=\"i_{input}\"><variable typeRef=\"{type_ref}\" name=\"{input}\" id=\"iv_{input}\"/></inputData>\n"
        ));
    }
    xml.push_str("</definitions>\n");
    xml
}
