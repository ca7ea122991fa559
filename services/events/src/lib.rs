//! events: the eye's sessions, its asynchronously validated events and their error store
//! (seed 001), and user-session batches with their metrics (seed 003).
//!
//! # Layout
//! - [`api`]: one module per resource with its routes; [`router`] merges them.
//! - [`ingest`]: what an accepted event looks like on the queue, its id, publishing it.
//! - [`validate`]: every rule an event must pass, all failures collected as reasons.
//! - [`model`]: the types the modules share, and the request shapes the rules check.
//! - [`schemas`]: the JSON Schema registry per `(category, name)`.
//! - [`consumer`]: validates queued events and stores them or their error records, acking
//!   after the commit; [`consumer::Consumer::step`] runs one batch, so tests drive it.
//! - [`store`]: the SQL of sessions, events and errors; [`migrations`]: every table.
//! - [`user`]: user-session batches, complete sessions, starts per country (seed 003).
//! - [`retention`]: the daily delete of user events past the retention period.
//! - [`loader`]: the `.jsonl` loader behind `events load`.
//! - [`time`]: timestamp parsing (the injectable clock is [`shared::clock`]).
//! - [`openapi`]: the OpenAPI document of the routes, served at `/openapi.json` (and `/docs`;
//!   `/docs/` redirects there).

pub mod api;
pub mod consumer;
pub mod ingest;
pub mod loader;
pub mod migrations;
pub mod model;
pub mod openapi;
pub mod retention;
pub mod schemas;
pub mod store;
pub mod time;
pub mod user;
pub mod validate;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use serde::{Deserialize, Serialize};
use shared::backends::queue::Queue;
use shared::backends::sql::Database;
use shared::backends::{BackendResult, Backends};
use shared::shutdown::Shutdown;

pub use api::router;
use consumer::{Consumer, ConsumerConfig};
use retention::RetentionBasis;
use schemas::SchemaRegistry;
use shared::clock::{Clock, SystemClock};

/// The rules and limits of the service, whatever process runs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// How far ahead of its arrival an event's timestamp may be (client clocks drift).
    pub future_tolerance_ms: i64,
    /// Refuse events whose `(category, name)` has no registered schema.
    pub require_schema: bool,
    /// User events older than this many days are deleted by the retention job.
    pub retention_days: u32,
    /// What a user event's age is counted from: `received` (as the seed's TTL) or `event_time`.
    pub retention_basis: RetentionBasis,
    /// Largest body of a single-item request, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one `POST /events/batch`.
    pub max_batch_events: usize,
    /// Largest body of `POST /events/batch`, in bytes.
    pub max_batch_bytes: usize,
    /// Most events in one `POST /user/batches`.
    pub max_user_batch_events: usize,
    /// Largest body of `POST /user/batches`, in bytes.
    pub max_user_batch_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            future_tolerance_ms: 5_000,
            require_schema: false,
            retention_days: 365,
            retention_basis: RetentionBasis::Received,
            max_body_bytes: 64 * 1024,
            max_batch_events: 500,
            max_batch_bytes: 1024 * 1024,
            max_user_batch_events: 10_000,
            max_user_batch_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Sessions known to exist. Sessions are never deleted, so a positive answer never goes stale.
#[derive(Default)]
pub struct SessionCache(Mutex<HashSet<String>>);

impl SessionCache {
    /// Beyond this many ids the cache starts over rather than grow without bound.
    const CAPACITY: usize = 1_000_000;

    pub fn contains(&self, id: &str) -> bool {
        self.0.lock().expect("session cache lock poisoned").contains(id)
    }

    pub fn extend(&self, ids: impl IntoIterator<Item = String>) {
        let mut known = self.0.lock().expect("session cache lock poisoned");
        if known.len() > Self::CAPACITY {
            known.clear();
        }
        known.extend(ids);
    }
}

/// Everything the API, the consumer and the jobs share.
#[derive(Clone)]
pub struct Events {
    pub db: Database,
    pub queue: Arc<dyn Queue>,
    pub clock: Arc<dyn Clock>,
    pub schemas: Arc<SchemaRegistry>,
    pub settings: Arc<Settings>,
    pub sessions: Arc<SessionCache>,
    /// Turns at writing to SQLite, shared by the consumers and the user-batch writers.
    pub write_gate: store::WriteGate,
    queue_name: Arc<str>,
}

impl Events {
    pub fn new(
        db: Database,
        queue: Arc<dyn Queue>,
        namespace: &str,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            db,
            queue,
            clock,
            schemas: Arc::new(SchemaRegistry::new()),
            settings: Arc::new(settings),
            sessions: Arc::new(SessionCache::default()),
            write_gate: store::WriteGate::default(),
            queue_name: format!("{namespace}.events").into(),
        }
    }

    /// The queue accepted events wait in.
    pub fn queue_name(&self) -> &str {
        &self.queue_name
    }

    /// Creates or upgrades the tables and loads the schemas.
    pub async fn migrate(&self) -> BackendResult<()> {
        self.db.migrate("events", migrations::MIGRATIONS).await?;
        self.schemas.refresh(&self.db).await
    }

    /// The validation rules for an event received at `now`.
    pub fn rules(&self, now: i64) -> validate::Rules<'_> {
        validate::Rules {
            now,
            future_tolerance_ms: self.settings.future_tolerance_ms,
            schemas: &self.schemas,
            require_schema: self.settings.require_schema,
        }
    }
}

/// The events service's settings: defaults, then `--config FILE`, then `CHATMESH_*` and the
/// backend URLs, then flags. Each role can be switched off, so API replicas, consumers and the
/// retention job can run as separate processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Serve the API routes.
    pub api: bool,
    /// Run the queue consumer.
    pub consumer: bool,
    /// Run the retention job.
    pub retention: bool,
    /// Six-field cron (seconds first) of the retention job.
    pub retention_schedule: String,
    /// Most queue messages the consumer takes per step.
    pub consumer_batch_size: usize,
    /// Consumers run side by side: while one validates its batch, another writes.
    pub consumer_tasks: usize,
    #[serde(flatten)]
    pub settings: Settings,
    /// The address (health routes are served there whatever the roles), backends and limits.
    #[serde(flatten)]
    pub serve: shared::config::Serve,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api: true,
            consumer: true,
            retention: true,
            retention_schedule: retention::DEFAULT_SCHEDULE.to_owned(),
            consumer_batch_size: ConsumerConfig::default().batch_size,
            consumer_tasks: CONSUMER_TASKS,
            settings: Settings::default(),
            serve: shared::config::Serve::at("127.0.0.1:8084"),
        }
    }
}

impl Config {
    /// Everything embedded under `data_dir`, listening on an ephemeral port.
    pub fn embedded(data_dir: impl Into<std::path::PathBuf>) -> Self {
        Self { serve: shared::config::Serve::embedded(data_dir), ..Self::default() }
    }

    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig { batch_size: self.consumer_batch_size.max(1), ..ConsumerConfig::default() }
    }
}

/// Connects the backends (production adapters where a URL is set) and migrates.
pub async fn connect(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<(Events, Backends)> {
    let backends = Backends::connect(&config.serve.backends, false).await?;
    tracing::info!(backends = %backends.description, "backends connected");
    let state = Events::new(
        backends.db.clone(),
        backends.queue.clone(),
        &config.serve.backends.namespace,
        config.settings.clone(),
        clock,
    );
    state.migrate().await?;
    Ok((state, backends))
}

/// The routes with health checks, the OpenAPI document and the JSON fallbacks: the whole HTTP
/// app of `events`.
pub fn app(state: Option<Events>, backends: &Backends) -> Router {
    let mut routes = shared::health::router("events", backends.readiness_checks());
    if let Some(state) = state {
        routes = routes.merge(router(state)).merge(shared::openapi::router(openapi::document()));
    }
    shared::http::with_fallbacks(routes)
}

/// Runs the enabled roles until `shutdown`: the API (and health) on `listener`, the consumer
/// and the retention job.
pub async fn run(config: &Config, listener: tokio::net::TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let (state, backends) = connect(config, Arc::new(SystemClock)).await?;
    let mut tasks = tokio::task::JoinSet::new();
    if config.consumer {
        for _ in 0..config.consumer_tasks.max(1) {
            let consumer = Consumer::new(state.clone(), config.consumer_config()).await?;
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                consumer.run(shutdown).await;
                Ok(())
            });
        }
    }
    if config.retention {
        tasks.spawn(retention::run(state.clone(), config.retention_schedule.clone(), shutdown.clone()));
    }
    shared::metrics::watch_queue_depth(state.queue.clone(), state.queue_name());
    let app = shared::metrics::instrument(app(config.api.then(|| state.clone()), &backends));
    tracing::info!(
        address = %listener.local_addr()?,
        api = config.api,
        consumer = config.consumer,
        retention = config.retention,
        queue = %state.queue_name(),
        "events running"
    );
    shared::http::serve_with_limits(listener, app, shutdown, &config.serve.http).await?;
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

/// Consumers per process by default: two keep both cores busy, one validating while the other
/// writes.
pub const CONSUMER_TASKS: usize = 2;

/// The events service inside another server (the standalone `chatmesh`): its state on that
/// server's backends, its routes, and its consumer and retention job.
pub struct Embedded {
    state: Events,
    consumer: Consumer,
}

impl Embedded {
    /// Migrates, and processes what a previous run left queued.
    pub async fn start(backends: &Backends, namespace: &str) -> anyhow::Result<Self> {
        let state = Events::new(
            backends.db.clone(),
            backends.queue.clone(),
            namespace,
            Settings::default(),
            Arc::new(SystemClock),
        );
        state.migrate().await?;
        let mut consumer = Consumer::new(state.clone(), ConsumerConfig::default()).await?;
        let recovered = consumer.drain().await?;
        if recovered.messages > 0 {
            tracing::info!(?recovered, "events left queued by the previous run processed");
        }
        Ok(Self { state, consumer })
    }

    /// The service's routes (no fallbacks: the host adds its own).
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Runs the consumers and the daily retention job until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut consumers = vec![tokio::spawn(self.consumer.run(shutdown.clone()))];
        for _ in 1..CONSUMER_TASKS {
            let consumer = Consumer::new(self.state.clone(), ConsumerConfig::default()).await?;
            consumers.push(tokio::spawn(consumer.run(shutdown.clone())));
        }
        retention::run(self.state, retention::DEFAULT_SCHEDULE.to_owned(), shutdown).await?;
        for consumer in consumers {
            consumer.await?;
        }
        Ok(())
    }
}
