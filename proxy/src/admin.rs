//! The admin port: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz` (every pool
//! that has upstreams has a healthy one), `GET /upstreams` (each member and its health) and
//! `POST /reload`. Kept off the public port, on loopback by default; `POST /reload` changes what
//! the gateway does, so it also needs the admin token (`Authorization: Bearer`,
//! `CHATMESH_ADMIN_TOKEN`; unset, it is refused and SIGHUP is the way to reload).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use shared::ErrorCode;
use shared::auth::AdminToken;

use crate::gateway::Gateway;

pub struct AdminApp {
    pub gateway: Arc<Gateway>,
    /// The operator's token, which `POST /reload` needs.
    pub admin: AdminToken,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_owned());
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let table = self.gateway.table();
                let text = self.gateway.metrics.render(&table.health());
                reply(StatusCode::OK, "text/plain; version=0.0.4", text.into_bytes())
            }
            (Method::GET, "/healthz") => json_reply(StatusCode::OK, &json!({"status": "ok", "service": "gateway"})),
            (Method::GET, "/readyz") => self.readyz(),
            (Method::GET, "/upstreams") => self.upstreams(),
            (Method::POST, "/reload") if !self.admin.authorizes(&req.headers) => error_reply(
                ErrorCode::Unauthorized,
                "reloading needs the admin token (Authorization: Bearer <CHATMESH_ADMIN_TOKEN>)",
            ),
            (Method::POST, "/reload") => match self.gateway.reload() {
                Ok(()) => json_reply(StatusCode::OK, &json!({"reloaded": true})),
                // 422: the file is well-formed TOML or not, but its settings are what fail.
                Err(error) => error_reply(ErrorCode::ValidationFailed, &format!("{error:#}")),
            },
            (_, path) => error_reply(ErrorCode::NotFound, &format!("no admin route {path}")),
        }
    }
}

impl AdminApp {
    fn readyz(&self) -> Response<Vec<u8>> {
        let table = self.gateway.table();
        let unready = table.unready_pools();
        if unready.is_empty() {
            json_reply(StatusCode::OK, &json!({"status": "ready"}))
        } else {
            json_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unready", "pools_without_healthy_upstream": unready}),
            )
        }
    }

    fn upstreams(&self) -> Response<Vec<u8>> {
        let table = self.gateway.table();
        let pools: serde_json::Map<String, serde_json::Value> = table
            .pools
            .iter()
            .map(|pool| {
                let members: Vec<_> = pool
                    .members()
                    .iter()
                    .map(|u| {
                        json!({
                            "addr": u.addr.to_string(),
                            "healthy": u.is_healthy(),
                            "requests": u.metrics.requests.get(),
                        })
                    })
                    .collect();
                (pool.name.clone(), json!(members))
            })
            .collect();
        json_reply(StatusCode::OK, &serde_json::Value::Object(pools))
    }
}

fn error_reply(code: ErrorCode, message: &str) -> Response<Vec<u8>> {
    let mut response = reply(code.status(), "application/json", crate::proxy::error_body(code, message).to_vec());
    if code == ErrorCode::Unauthorized {
        response.headers_mut().insert("www-authenticate", http::HeaderValue::from_static("Bearer realm=\"chatmesh\""));
    }
    response
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", body.to_string().into_bytes())
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}
