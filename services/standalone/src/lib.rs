//! The `chatmesh` standalone server: every chatmesh service in one process, on the embedded
//! backends by default (SQLite, in-process counters, the SQLite-backed queue, tantivy).
//!
//! # Layout
//! - [`Config`]: listen address, data dir, count-flush schedule, body limit, backends.
//! - [`start`]: connects the backends, migrates, drains commands left queued by a previous
//!   run (so counters seed from a complete store), recounts, and returns the [`Server`].
//! - [`Server::serve`]: serves until shutdown, with the consumer and the count flush beside it.
//! - `testing` (feature `testing`): the in-process server the tests start.

#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use chat_read::ChatRead;
use chat_read::consumer::{Consumer, ConsumerConfig};
use chat_write::ChatWrite;
use serde::{Deserialize, Serialize};
use shared::backends::{Backends, open_search};
use shared::config::BackendConfig;
use shared::shutdown::Shutdown;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: String,
    /// Six-field cron (seconds first) of the count flush.
    pub count_flush_schedule: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest request body the segments routes accept, in bytes (DMN models can be large; the
    /// segments binary's own default).
    pub segments_max_body_bytes: usize,
    /// The segments service's settings: `admin_token` (env `CHATMESH_ADMIN_TOKEN`), which also
    /// opens `GET /api/applications`, and `segments_open_legacy`.
    #[serde(flatten)]
    pub segments: segments::Settings,
    #[serde(flatten)]
    pub backends: BackendConfig,
    /// The live stream's poll interval, keep-alive and WebSocket limits (`CHATMESH_STREAM_*`).
    #[serde(flatten)]
    pub stream: chat_read::stream::StreamSettings,
    /// What a client may take: head and body deadlines, head size, connection cap
    /// (`CHATMESH_HTTP_*`).
    #[serde(flatten)]
    pub http: shared::http::ServeLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            count_flush_schedule: chat_read::counts::DEFAULT_SCHEDULE.to_owned(),
            max_body_bytes: 256 * 1024,
            segments_max_body_bytes: 1024 * 1024,
            segments: segments::Settings::default(),
            backends: BackendConfig::default(),
            stream: chat_read::stream::StreamSettings::default(),
            http: shared::http::ServeLimits::default(),
        }
    }
}

impl Config {
    /// Everything embedded under `data_dir`, listening on an ephemeral port.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self { listen: "127.0.0.1:0".to_owned(), backends: BackendConfig::embedded(data_dir), ..Self::default() }
    }
}

/// A started server, ready to serve.
pub struct Server {
    router: Router,
    consumer: Consumer,
    read: ChatRead,
    events: events::Embedded,
    count_flush_schedule: String,
    /// The counters generation the counts at start are right for.
    counts_generation: String,
    /// Ends the live stream's subscriptions when the server shuts down (their responses would
    /// otherwise hold the graceful shutdown open).
    stream_stop: shared::shutdown::ShutdownTrigger,
    http: shared::http::ServeLimits,
}

/// Connects, migrates and recovers; returns the server ready to serve.
pub async fn start(config: &Config) -> anyhow::Result<Server> {
    let backends = Backends::connect(&config.backends, true).await?;
    let search = open_search(&config.backends, true).await?;
    tracing::info!(backends = %backends.description, "backends connected");
    let (stream_stop, stream_shutdown) = shared::shutdown::channel();
    let read = ChatRead::over(&backends, search, &config.backends.namespace, config.segments.admin_token.as_deref())
        .with_stream(config.stream.clone(), stream_shutdown);
    if !read.admin.is_configured() {
        chat_read::warn_no_admin_token();
    }
    read.migrate().await?;
    let write = ChatWrite::new(
        backends.db.clone(),
        backends.counters.clone(),
        backends.queue.clone(),
        &config.backends.namespace,
    );

    // Commands a previous run queued but did not persist are persisted before the first new
    // number is handed out: counters seed from the store, so it must hold every number issued.
    // The consumer runs on a thread of its own ([`Server::serve`]), so it may run its batch
    // transactions on a connection of its own too.
    let mut consumer = Consumer::new(read.clone(), ConsumerConfig::default()).await?.with_own_connection()?;
    let recovered = consumer.drain().await?;
    if recovered.persisted + recovered.retried + recovered.dead_lettered > 0 {
        tracing::info!(?recovered, "commands left queued by the previous run processed");
    }
    // Delayed retries and dead letters stay queued with their numbers: counters start above them.
    write.load_queued_numbers().await?;
    let counts_generation = chat_read::counts::recount_at_start(&read).await?;
    let events = events::Embedded::start(&backends, &config.backends.namespace).await?;
    // Segments live in the same store (chatmesh.db or DATABASE_URL) as everything else.
    let segments = segments::Segments::new(backends.db.clone(), &config.segments).await?;
    let segments = shared::http::served_by(segments::router(segments), "segments")
        .layer(DefaultBodyLimit::max(config.segments_max_body_bytes));

    let router = router(write, read.clone(), events.router(), segments, &backends, config.max_body_bytes);
    Ok(Server {
        router,
        consumer,
        read,
        events,
        count_flush_schedule: config.count_flush_schedule.clone(),
        counts_generation,
        stream_stop,
        http: config.http.clone(),
    })
}

/// Every route of every service, with health, fallbacks and the body limit.
fn router(
    write: ChatWrite,
    read: ChatRead,
    events: Router,
    segments: Router,
    backends: &Backends,
    max_body_bytes: usize,
) -> Router {
    shared::metrics::watch_queue_depth(backends.queue.clone(), read.keys.command_queue());
    let checks = read.readiness_checks(backends, true);
    let routes = Router::new()
        .merge(shared::http::served_by(chat_write::router(write), "chat-write"))
        .merge(shared::http::served_by(chat_read::router(read.clone()), "chat-read"))
        .merge(shared::http::served_by(chat_read::stream::router(read), "chat-read"))
        .merge(events)
        .merge(segments)
        .merge(shared::health::router("chatmesh", checks))
        .merge(shared::openapi::router(openapi_document()));
    shared::metrics::instrument(shared::http::with_fallbacks(routes).layer(DefaultBodyLimit::max(max_body_bytes)))
}

/// The OpenAPI document of every route chatmesh serves.
pub fn openapi_document() -> shared::openapi::OpenApiDocument {
    shared::openapi::merge(
        "chatmesh",
        [
            chat_write::openapi::document(),
            chat_read::openapi::document(),
            segments::openapi::document(),
            events::openapi::document(),
        ],
    )
}

impl Server {
    /// Serves on `listener` until `shutdown`; then finishes in-flight requests and the
    /// consumer's current batch.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let consumer = on_own_thread("chat-consumer", self.consumer.run(shutdown.clone()))?;
        let cron = tokio::spawn(chat_read::counts::run(
            self.read.clone(),
            self.count_flush_schedule,
            self.counts_generation,
            shutdown.clone(),
        ));
        let events = tokio::spawn(self.events.run(shutdown.clone()));
        let stream_stop = self.stream_stop;
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.wait().await;
            stream_stop.trigger();
        });
        shared::http::serve_with_limits(listener, self.router, shutdown, &self.http).await?;
        // The consumer's thread says it is done; an `Err` means it ended without saying so.
        consumer.await.map_err(|_| anyhow::anyhow!("the chat consumer's thread ended early"))?;
        cron.await??;
        events.await??;
        Ok(())
    }
}

/// Runs `work` on a thread of its own with a runtime of its own, and says when it is done.
///
/// The consumer is the create path's one sequence: every create in a batch waits for the
/// batch's transaction. On the server's runtime each wake-up of the consumer queued behind the
/// tasks of 64 connections: at 64 clients a batch's transaction took 1.7 ms, 0.6 ms of it for
/// `BEGIN` alone, and both cores were a fifth idle while the clients waited for it. On its own
/// thread the consumer is woken by the kernel as soon as a create comes, and it runs the
/// transaction itself on a connection of its own ([`Consumer::with_own_connection`]) rather
/// than in five round trips to a pooled connection's thread.
fn on_own_thread(
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        runtime.block_on(work);
        // What the work left spawned (none at a clean stop) is not waited for long.
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        let _ = done.send(());
    })?;
    Ok(finished)
}
