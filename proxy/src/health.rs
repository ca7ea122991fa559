//! The one background service: active health checks of every upstream of every pool, host
//! name re-resolution, and reload on SIGHUP. pingora gives each service its own runtime and
//! threads, so all of it shares one single-threaded runtime instead of a service per pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::gateway::{Gateway, Table};
use crate::pool::{Upstream, resolve};

pub struct HealthService {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; reload through the admin port only");
                None
            }
        };
        let mut last_resolve: Option<Instant> = None;
        loop {
            let round_started = tokio::time::Instant::now();
            let table = self.gateway.table();
            if last_resolve.is_none_or(|at| at.elapsed() >= table.health_check.resolve_interval) {
                resolve_pools(&self.gateway, &table).await;
                last_resolve = Some(Instant::now());
            }
            check_all(&table).await;
            tokio::select! {
                () = tokio::time::sleep_until(round_started + table.health_check.interval) => {}
                () = self.gateway.reloaded.notified() => { last_resolve = None; }
                Some(()) = async { match hangup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = self.gateway.reload();
                    last_resolve = None;
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// Resolves every host name of every pool; members change where the answer did.
async fn resolve_pools(gateway: &Gateway, table: &Table) {
    for pool in &table.pools {
        for spec in pool.host_specs() {
            match resolve(&spec).await {
                Ok(addrs) => {
                    if pool.set_resolved(&spec, addrs.clone(), &gateway.metrics) {
                        tracing::info!(pool = %pool.name, upstream = %spec, addrs = ?addrs, "upstream resolved");
                    }
                }
                // Keeps the last answer: a DNS hiccup must not empty a pool.
                Err(error) => tracing::warn!(pool = %pool.name, upstream = %spec, %error, "cannot resolve upstream"),
            }
        }
    }
}

/// Checks every member of every pool concurrently and records the outcome.
pub async fn check_all(table: &Table) {
    let settings = &table.health_check;
    let checks = table.pools.iter().flat_map(|pool| {
        pool.members()
            .iter()
            .map(|upstream| {
                let upstream = upstream.clone();
                let pool = pool.name.clone();
                async move {
                    let outcome = probe(upstream.addr, &settings.path, settings.timeout).await;
                    record(&pool, &upstream, outcome, settings.healthy_after, settings.unhealthy_after);
                }
            })
            .collect::<Vec<_>>()
    });
    futures::future::join_all(checks).await;
}

fn record(pool: &str, upstream: &Upstream, outcome: Result<(), String>, healthy_after: u32, unhealthy_after: u32) {
    if outcome.is_err() {
        upstream.metrics.health_check_failures.inc();
    }
    match (upstream.observe_check(outcome.is_ok(), healthy_after, unhealthy_after), outcome) {
        (Some(true), _) => tracing::info!(pool, upstream = %upstream.label, "upstream healthy"),
        (Some(false), Err(reason)) => tracing::warn!(pool, upstream = %upstream.label, reason, "upstream unhealthy"),
        _ => {}
    }
}

/// `GET path` on a fresh connection; any 2xx within `timeout` passes.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let (status, _) = crate::client::get(addr, path, None, None, timeout).await?;
    if status.is_success() { Ok(()) } else { Err(format!("status {}", status.as_u16())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::serve_once;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn probe_passes_on_2xx_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(500);

        let server = serve_once(&listener, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let (outcome, ()) = tokio::join!(probe(addr, "/healthz", timeout), server);
        assert_eq!(outcome, Ok(()));

        let server = serve_once(&listener, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let (outcome, ()) = tokio::join!(probe(addr, "/healthz", timeout), server);
        assert_eq!(outcome, Err("status 503".to_owned()));

        // Accepted but never answered.
        let (outcome, _held) = tokio::join!(probe(addr, "/healthz", timeout), listener.accept());
        assert!(outcome.unwrap_err().contains("no answer"));

        drop(listener);
        assert!(probe(addr, "/healthz", timeout).await.unwrap_err().starts_with("connect"));
    }
}
