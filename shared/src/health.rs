//! `/healthz` answers while the process serves; `/readyz` answers 200 only when every backend
//! the service depends on answers too, and 503 naming the ones that do not.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::json;

/// One backend `/readyz` asks.
pub trait ReadinessCheck: Send + Sync {
    fn name(&self) -> &str;
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A readiness check from a name and an async closure.
pub struct FnCheck<F> {
    name: String,
    check: F,
}

impl<F> FnCheck<F>
where
    F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync,
{
    pub fn boxed(name: impl Into<String>, check: F) -> Arc<dyn ReadinessCheck>
    where
        F: 'static,
    {
        Arc::new(Self { name: name.into(), check })
    }
}

impl<F> ReadinessCheck for FnCheck<F>
where
    F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        (self.check)()
    }
}

/// The routes `/healthz` and `/readyz`, for a service named `service`.
pub fn router(service: &'static str, checks: Vec<Arc<dyn ReadinessCheck>>) -> Router {
    Router::new()
        .route("/healthz", get(move || async move { Json(json!({"status": "ok", "service": service})) }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(checks))
}

async fn readyz(State(checks): State<Arc<Vec<Arc<dyn ReadinessCheck>>>>) -> impl IntoResponse {
    let results = futures::future::join_all(checks.iter().map(|check| async move {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), check.check())
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        (check.name().to_owned(), outcome)
    }))
    .await;
    let failing: serde_json::Map<_, _> =
        results.into_iter().filter_map(|(name, outcome)| outcome.err().map(|reason| (name, json!(reason)))).collect();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "failing": failing})))
    }
}
