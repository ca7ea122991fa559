//! The chatmesh gateway: a pingora reverse proxy in front of the chat, segments and events
//! services, configured by one TOML file (`deploy/gateway.toml`).
//!
//! # Layout
//! - [`config`]: the file (server settings, health check, pools, routes) and the upstreams
//!   file that replaces pool members (process mode).
//! - [`routes`]: method + path pattern → pool, first match wins.
//! - [`pool`]: members, round-robin over the healthy ones, health state, DNS re-resolution.
//! - [`gateway`]: the live [`gateway::Table`], swapped whole on reload, and the metrics.
//! - [`express`]: the express lane, relaying plain HTTP/1.1 requests itself and handing
//!   every other request to pingora-proxy.
//! - [`proxy`]: the `ProxyHttp` phases: request id, routing, body limit, peer choice,
//!   retries, JSON errors, access log.
//! - [`health`]: the one background service: health checks, resolution, SIGHUP reload.
//! - [`openapi`]: the merged `/openapi.json` of everything reachable through the gateway.
//! - [`client`]: the gateway's own requests to upstreams (health checks, documents).
//! - [`admin`]: the admin port: metrics, readiness, pool state, reload.
//! - [`metrics`]: the gateway's Prometheus registry.
//! - [`logs`]: log lines written to stdout by a background thread.
//!
//! pingora's `Server::run` builds and owns its runtimes (one per service: proxy, admin,
//! health) and must not be called inside a tokio runtime, so [`run`] is called from a plain
//! `main`.

pub mod admin;
pub mod client;
pub mod config;
pub mod express;
pub mod gateway;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod pool;
pub mod proxy;
pub mod routes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{ExecutionPhase, RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

use crate::config::ConfigSource;
use crate::gateway::Gateway;

/// Runs the gateway until SIGTERM (graceful: stop accepting, finish in-flight requests, exit as
/// soon as none is left or after the grace period) or SIGINT (immediate).
pub fn run(source: ConfigSource, admin: shared::auth::AdminToken) -> anyhow::Result<()> {
    let checked = source.load()?;
    let server_settings = checked.config.server.clone();
    for (what, addr) in [("listen", &server_settings.listen), ("admin_listen", &server_settings.admin_listen)] {
        // pingora binds inside a service task and only logs a failure there: check first so a
        // taken port stops the process instead of leaving it up without a listener.
        std::net::TcpListener::bind(addr).with_context(|| format!("{what} {addr}"))?;
    }
    let gateway = Arc::new(Gateway::new(source, checked));

    let conf = ServerConf {
        threads: server_settings.threads,
        work_stealing: server_settings.work_stealing,
        grace_period_seconds: Some(server_settings.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(server_settings.shutdown_timeout_seconds),
        upstream_keepalive_pool_size: server_settings.upstream_keepalive_pool_size,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let pingora_proxy =
        pingora_proxy::http_proxy(&server.configuration, proxy::GatewayProxy { gateway: gateway.clone() });
    let front = express::Front {
        gateway: gateway.clone(),
        proxy: Arc::new(pingora_proxy),
        connections: Arc::new(tokio::sync::Semaphore::new(server_settings.max_connections)),
    };
    let mut proxy = Service::new("proxy".to_owned(), front);
    proxy.add_tcp(&server_settings.listen);
    proxy.threads = Some(server_settings.threads);

    if !admin.is_configured() {
        tracing::warn!(
            "no admin token configured (CHATMESH_ADMIN_TOKEN): POST /reload on the admin port answers 401; \
             reload with SIGHUP"
        );
    }
    let mut admin = Service::new("admin".to_owned(), admin::AdminApp { gateway: gateway.clone(), admin });
    admin.add_tcp(&server_settings.admin_listen);
    admin.threads = Some(1);

    let mut health = background_service("health", health::HealthService { gateway: gateway.clone() });
    // A check round a second needs no more than one thread, whatever the proxy has.
    health.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(health);

    exit_once_drained(&server, &gateway, Duration::from_secs(server_settings.grace_period_seconds));
    tracing::info!(
        listen = %server_settings.listen,
        admin = %server_settings.admin_listen,
        threads = server_settings.threads,
        "gateway starting"
    );
    println!("gateway listening on http://{}", server_settings.listen);
    server.run(RunArgs::default());
    logs::flush();
    Ok(())
}

/// pingora sleeps through the whole grace period after SIGTERM even when nothing is in flight;
/// this watcher ends the process as soon as the last in-flight request has finished.
fn exit_once_drained(server: &Server, gateway: &Arc<Gateway>, grace: Duration) {
    let mut phases = server.watch_execution_phase();
    let metrics = gateway.metrics.clone();
    std::thread::spawn(move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(ExecutionPhase::Terminated) | Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            }
        }
        let started = Instant::now();
        while started.elapsed() < grace {
            if metrics.in_flight.get() <= 0 {
                tracing::info!(after_ms = started.elapsed().as_millis(), "no request in flight, exiting");
                logs::flush();
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// Tracing for the gateway: `RUST_LOG` filter (default `info`), JSON lines with
/// `CHATMESH_LOG_FORMAT=json`, as the services do. pingora's `log` records go through it too.
/// Lines go to stdout from a background thread ([`logs`]); call [`logs::flush`] before exiting.
pub fn init_telemetry() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("CHATMESH_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(ansi).with_writer(logs::stdout());
    let _already_installed = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
