//! A small client for the chat API, used by the suite and the benchmark.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Api {
    pub base: String,
    /// Where the create routes go when chat-write runs apart from chat-read without a gateway.
    pub write_base: Option<String>,
    pub http: reqwest::Client,
    /// The deployment's admin token (`CHATMESH_ADMIN_TOKEN`), for [`Api::as_admin`].
    pub admin_token: Option<String>,
    /// Sent as `Authorization: Bearer` with every request.
    pub bearer: Option<String>,
}

/// True for the three create routes chat-write serves.
pub fn is_write_route(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["api", "applications", _, "chats"]
            | ["api", "applications", _, "chats", _]
            | ["api", "applications", _, "chats", _, "messages"]
    )
}

/// A response with its body read.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a JSON error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Self { base: base.trim_end_matches('/').to_owned(), write_base: None, http, admin_token: None, bearer: None }
    }

    /// This client, knowing the deployment's admin token.
    pub fn with_admin_token(self, admin_token: Option<String>) -> Self {
        Self { admin_token, ..self }
    }

    /// A client sending the admin token as its bearer (none when the deployment has none).
    pub fn as_admin(&self) -> Self {
        Self { bearer: self.admin_token.clone(), ..self.clone() }
    }

    /// A client sending `token` as its bearer.
    pub fn with_bearer(&self, token: &str) -> Self {
        Self { bearer: Some(token.to_owned()), ..self.clone() }
    }

    /// A client for chat-read at `read` and chat-write at `write`.
    pub fn split(read: &str, write: &str) -> Self {
        Self { write_base: Some(write.trim_end_matches('/').to_owned()), ..Self::new(read) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL `method path` goes to.
    pub fn url_for(&self, method: &Method, path: &str) -> String {
        match &self.write_base {
            Some(write) if is_write_route(method, path) => format!("{write}{path}"),
            _ => self.url(path),
        }
    }

    /// Sends `method path` with an optional JSON body.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self.http.request(method.clone(), self.url_for(&method, path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    /// Sends raw bytes with a content type.
    pub async fn send_raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let mut request = self
            .http
            .request(method.clone(), self.url_for(&method, path))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    /// GETs `path` until it answers 200 (reads may trail a 201 when the services run apart).
    pub async fn get_eventually(&self, path: &str) -> Reply {
        self.eventually(path, |reply| reply.status == StatusCode::OK).await
    }

    /// GETs `path` until `done` holds for the reply, for up to 90 s.
    pub async fn eventually(&self, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let reply = self.get(path).await;
            if done(&reply) || Instant::now() > deadline {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates an application; returns its token.
    pub async fn create_application(&self, name: &str) -> String {
        let reply = self.post("/api/applications", &serde_json::json!({ "application_name": name })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["application_token"].as_str().expect("token").to_owned()
    }

    /// Creates a chat; returns its number.
    pub async fn create_chat(&self, token: &str, name: &str) -> i64 {
        let reply =
            self.post(&format!("/api/applications/{token}/chats"), &serde_json::json!({ "chat_name": name })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["chat_number"].as_i64().expect("chat number")
    }

    /// Creates a message on the seed's path; returns its number.
    pub async fn create_message(&self, token: &str, chat: i64, content: &str) -> i64 {
        let reply = self
            .post(
                &format!("/api/applications/{token}/chats/{chat}"),
                &serde_json::json!({ "message_content": content }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["message_number"].as_i64().expect("message number")
    }
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}
