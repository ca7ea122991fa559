//! chat-read: applications, every read and update of the chat API, search, the consumer that
//! persists what chat-write queues, and the per-minute count flush.
//!
//! # Layout
//! - [`api`]: one module per resource with its routes, each handler carrying its OpenAPI
//!   operation; [`api::routes`] merges them.
//! - [`consumer`]: takes command batches off the queue, persists them in one transaction,
//!   indexes the messages, and only then acks. [`consumer::Consumer::step`] runs one batch, so
//!   tests can drive it. `direct`: on SQLite, the consumer's batch transaction of new messages
//!   on a connection of its own, for a consumer with a thread of its own.
//! - [`counts`]: the count flush (`chats_count`, `messages_count`) run by tokio-cron-scheduler
//!   under a lock, so one replica flushes at a time.
//! - [`openapi`]: the document's title, tags and security scheme around those operations,
//!   served at `/openapi.json`.
//! - [`store`]: the SQL the API and the consumer run.
//! - [`changes`]: each chat's change log, written with every change and read by the stream.
//! - [`reads`]: read positions and exact unread counts.
//! - [`stream`]: the live stream (SSE per chat, a WebSocket per application, the chat page),
//!   a role of its own that opens no search index, so stream replicas scale apart.

pub mod api;
pub mod changes;
pub mod consumer;
pub mod counts;
mod direct;
pub mod openapi;
pub mod reads;
pub mod store;
pub mod stream;

use std::sync::Arc;

use chat::schema::Keys;
use shared::backends::counters::Counters;
use shared::backends::queue::Queue;
use shared::backends::search::SearchIndex;
use shared::backends::sql::Database;

pub use api::router;

/// Everything chat-read's roles share.
#[derive(Clone)]
pub struct ChatRead {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn Queue>,
    pub search: Arc<dyn SearchIndex>,
    pub keys: Keys,
    /// What this process's consumer has handed its indexer, for searches that read their own
    /// writes.
    pub index_progress: Arc<consumer::IndexProgress>,
    /// Whether this process's consumer can write to the store, for `/readyz`.
    pub consumer_store: Arc<consumer::StoreStatus>,
    /// The operator's token: listing every application (which shows their tokens) needs it.
    pub admin: shared::auth::AdminToken,
    /// This process's live-stream subscribers, where it serves the stream.
    pub stream: Option<Arc<stream::Hub>>,
}

impl ChatRead {
    pub fn new(
        db: Database,
        counters: Arc<dyn Counters>,
        queue: Arc<dyn Queue>,
        search: Arc<dyn SearchIndex>,
        namespace: &str,
    ) -> Self {
        Self {
            db,
            counters,
            queue,
            search,
            keys: Keys::new(namespace),
            index_progress: Default::default(),
            consumer_store: Default::default(),
            admin: Default::default(),
            stream: None,
        }
    }

    /// The same state serving the live stream with `settings` until `shutdown`.
    pub fn with_stream(mut self, settings: stream::StreamSettings, shutdown: shared::shutdown::Shutdown) -> Self {
        self.stream = Some(stream::Hub::new(self.clone(), settings, shutdown));
        self
    }

    /// The same state with `admin` as the operator's token (unset: nobody may list applications).
    pub fn with_admin_token(self, admin: shared::auth::AdminToken) -> Self {
        Self { admin, ..self }
    }

    /// What readiness answers for: the `backends`, the search index and, where this process
    /// runs the `consumer`, whether it can write to the store.
    pub fn readiness_checks(
        &self,
        backends: &shared::backends::Backends,
        consumer: bool,
    ) -> Vec<Arc<dyn shared::health::ReadinessCheck>> {
        let mut checks = backends.readiness_checks();
        let search = self.search.clone();
        checks.push(shared::health::FnCheck::boxed("search", move || {
            let search = search.clone();
            Box::pin(async move { search.ping().await.map_err(|e| e.to_string()) })
        }));
        if consumer {
            let status = self.consumer_store.clone();
            checks.push(shared::health::FnCheck::boxed("consumer", move || {
                let status = status.clone();
                Box::pin(async move { status.check() })
            }));
        }
        checks
    }

    /// The state over connected `backends` and `search`, keys under `namespace`, admin routes
    /// open to `admin_token` (none: refused).
    pub fn over(
        backends: &shared::backends::Backends,
        search: Arc<dyn SearchIndex>,
        namespace: &str,
        admin_token: Option<&str>,
    ) -> Self {
        Self::new(backends.db.clone(), backends.counters.clone(), backends.queue.clone(), search, namespace)
            .with_admin_token(shared::auth::AdminToken::new(admin_token))
    }

    /// Creates or upgrades the chat tables.
    pub async fn migrate(&self) -> Result<(), shared::backends::BackendError> {
        self.db.migrate("chat", chat::schema::MIGRATIONS).await
    }
}

/// chat-read's settings: defaults, then `--config FILE`, then `CHATMESH_*` and the backend
/// URLs, then flags. Each role can be switched off, so ops run API replicas, consumers and
/// the cron as separate processes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// Serve the API routes.
    pub api: bool,
    /// Run the queue consumer.
    pub consumer: bool,
    /// Run the count flush.
    pub cron: bool,
    /// Serve the live stream (SSE, WebSocket) and the chat page.
    pub stream: bool,
    #[serde(flatten)]
    pub stream_settings: stream::StreamSettings,
    /// Six-field cron (seconds first) of the count flush.
    pub count_flush_schedule: String,
    /// Most commands the consumer persists in one transaction.
    pub consumer_batch_size: usize,
    /// Attempts before a failing command goes to the dead-letter queue.
    pub consumer_max_attempts: u32,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The operator's token (env `CHATMESH_ADMIN_TOKEN`), needed to list every application;
    /// unset, that listing answers 401 to everyone.
    pub admin_token: Option<String>,
    /// The address (health routes are served there whatever the roles), backends and limits.
    #[serde(flatten)]
    pub serve: shared::config::Serve,
}

impl Default for Config {
    fn default() -> Self {
        let consumer = consumer::ConsumerConfig::default();
        Self {
            api: true,
            consumer: true,
            cron: true,
            stream: true,
            stream_settings: stream::StreamSettings::default(),
            count_flush_schedule: counts::DEFAULT_SCHEDULE.to_owned(),
            consumer_batch_size: consumer.batch_size,
            consumer_max_attempts: consumer.max_attempts,
            max_body_bytes: 256 * 1024,
            admin_token: None,
            serve: shared::config::Serve::at("127.0.0.1:8082"),
        }
    }
}

impl Config {
    pub fn consumer_config(&self) -> consumer::ConsumerConfig {
        consumer::ConsumerConfig {
            batch_size: self.consumer_batch_size.max(1),
            max_attempts: self.consumer_max_attempts.max(1),
            ..consumer::ConsumerConfig::default()
        }
    }
}

/// Says at start, once, why `GET /api/applications` will refuse everyone.
pub fn warn_no_admin_token() {
    tracing::warn!(
        "no admin token configured (CHATMESH_ADMIN_TOKEN): GET /api/applications answers 401 to every caller \
         until one is; each application's own routes work as usual"
    );
}

/// Rebuilds the search index from the store (after losing the index, or moving to
/// Elasticsearch); returns how many messages were indexed.
pub async fn reindex(state: &ChatRead) -> Result<u64, shared::backends::BackendError> {
    index_from(state, 0).await
}

/// Indexes every message of the store with an id above `after_id`, in id order, and makes
/// the index durable; returns how many messages were indexed.
pub async fn index_from(state: &ChatRead, after_id: i64) -> Result<u64, shared::backends::BackendError> {
    let mut after = after_id;
    let mut indexed = 0u64;
    loop {
        let page = store::messages_for_reindex(&state.db, after, 1000).await?;
        let Some(last) = page.last() else {
            state.search.flush().await?;
            return Ok(indexed);
        };
        after = last.0;
        indexed += page.len() as u64;
        let docs = page
            .into_iter()
            .map(|(_, application_id, chat_number, number, content)| shared::backends::search::SearchDoc {
                scope: chat::schema::search_scope(application_id, chat_number),
                number,
                content,
            })
            .collect();
        state.search.stage_bulk(docs, after).await?;
        tracing::info!(indexed, "indexing from the store");
    }
}

/// Connects the backends and migrates; the state every role shares.
pub async fn connect(config: &Config) -> anyhow::Result<(ChatRead, shared::backends::Backends)> {
    let backends = shared::backends::Backends::connect(&config.serve.backends, false).await?;
    // A process that neither serves the API nor consumes searches and indexes nothing: a
    // stream replica opens no index.
    let search: Arc<dyn SearchIndex> = if config.api || config.consumer {
        shared::backends::open_search(&config.serve.backends, config.consumer).await?
    } else {
        Arc::new(shared::backends::search::NoIndex)
    };
    tracing::info!(backends = %backends.description, "backends connected");
    let state = ChatRead::over(&backends, search, &config.serve.backends.namespace, config.admin_token.as_deref());
    state.migrate().await?;
    Ok((state, backends))
}

/// Runs the enabled roles until `shutdown`: the API (and health) on `listener`, the consumer,
/// and the count flush.
pub async fn run(
    config: &Config,
    listener: tokio::net::TcpListener,
    shutdown: shared::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let (state, backends) = connect(config).await?;
    let state = if config.stream { state.with_stream(config.stream_settings.clone(), shutdown.clone()) } else { state };
    let mut tasks = tokio::task::JoinSet::new();
    if config.consumer {
        let consumer = consumer::Consumer::new(state.clone(), config.consumer_config()).await?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            consumer.run(shutdown).await;
            Ok(())
        });
    }
    if config.cron {
        let generation = counts::recount_at_start(&state).await?;
        tasks.spawn(counts::run(state.clone(), config.count_flush_schedule.clone(), generation, shutdown.clone()));
    }
    shared::metrics::watch_queue_depth(state.queue.clone(), state.keys.command_queue());
    let mut routes = shared::health::router("chat-read", state.readiness_checks(&backends, config.consumer));
    if config.api && !state.admin.is_configured() {
        warn_no_admin_token();
    }
    if config.api {
        routes = routes.merge(shared::http::served_by(router(state.clone()), "chat-read"));
    }
    if config.stream {
        routes = routes.merge(shared::http::served_by(stream::router(state.clone()), "chat-read"));
    }
    if config.api || config.stream {
        routes = routes.merge(shared::openapi::router(openapi::document()));
    }
    let app = shared::http::with_fallbacks(routes).layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes));
    let app = shared::metrics::instrument(app);
    tracing::info!(
        address = %listener.local_addr()?,
        api = config.api,
        consumer = config.consumer,
        cron = config.cron,
        stream = config.stream,
        "chat-read running"
    );
    shared::http::serve_with_limits(listener, app, shutdown, &config.serve.http).await?;
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}
