//! What every chatmesh service needs once.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults, then an optional TOML file, then the
//!   environment) and the backend settings every service shares.
//! - [`telemetry`]: tracing setup.
//! - [`auth`]: the admin token and constant-time comparison of secrets.
//! - [`error`]: the JSON error body and the one table of error codes to HTTP status.
//! - [`http`]: extractors that turn bad input into that error body (400 / 413 / 415 / 422),
//!   the JSON 404 / 405 fallbacks and `serve` with graceful shutdown.
//! - [`metrics`]: Prometheus metrics, the per-route request middleware and `/metrics`.
//! - [`openapi`]: the shared error responses of the OpenAPI documents and `/openapi.json`.
//! - [`shutdown`]: a shutdown signal every task can wait on; [`clock`]: the injectable clock.
//! - [`health`]: `/healthz` (the process answers) and `/readyz` (its backends answer).
//! - [`backends`]: the four ports (SQL store, counters, queue, search), one folder each, with
//!   their embedded adapters and, behind cargo features, their production ones.
//! - `conformance` (feature `testing`): the one test suite per port that every adapter must
//!   pass; `testing` (feature `testing`): helpers for tests against the real backends. Only
//!   test builds enable the feature.

pub mod auth;
pub mod backends;
pub mod clock;
pub mod config;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod error;
pub mod health;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod schedule;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watermark;

pub use error::{ApiError, ErrorCode};

/// Milliseconds since the Unix epoch: the one clock format the stores keep.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 text (UTC, milliseconds) for a stored millisecond timestamp.
pub fn rfc3339_millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
