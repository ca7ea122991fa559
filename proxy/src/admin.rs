//! The admin port: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz` (every pool
//! that has upstreams has a healthy one), `GET /upstreams` (each member and its health) and
//! `POST /reload`. Kept off the public port.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

use crate::gateway::Gateway;

pub struct AdminApp {
    pub gateway: Arc<Gateway>,
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
            (Method::POST, "/reload") => match self.gateway.reload() {
                Ok(()) => json_reply(StatusCode::OK, &json!({"reloaded": true})),
                Err(error) => json_reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"error": {"code": "VALIDATION_FAILED", "message": format!("{error:#}")}}),
                ),
            },
            (_, path) => json_reply(
                StatusCode::NOT_FOUND,
                &json!({"error": {"code": "NOT_FOUND", "message": format!("no admin route {path}")}}),
            ),
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
                            "requests": u.metrics.requests.load(std::sync::atomic::Ordering::Relaxed),
                        })
                    })
                    .collect();
                (pool.name.clone(), json!(members))
            })
            .collect();
        json_reply(StatusCode::OK, &serde_json::Value::Object(pools))
    }
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
