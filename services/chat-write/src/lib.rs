//! chat-write: creates chats and messages.
//!
//! # Layout
//! - [`schema`]: the chat tables (migrations for SQLite and MySQL) and the lookups both chat
//!   services make: token to application, highest numbers, chat existence.
//! - [`model`]: the JSON shapes of applications, chats and messages, and field validation.
//! - [`commands`]: what chat-write publishes and chat-read's consumer persists.
//! - [`openapi`]: the OpenAPI document of those routes, served at `/openapi.json`.
//! - [`api`]: the two create routes. A create takes its number from the counters port,
//!   publishes a command through the queue port and answers 201 only once the command is
//!   durably queued; a queue that does not confirm gives 503.

pub mod api;
pub mod commands;
pub mod model;
pub mod openapi;
pub mod schema;

use std::sync::Arc;

use shared::backends::counters::Counters;
use shared::backends::queue::Queue;
use shared::backends::sql::Database;

pub use api::router;

/// What the create routes need: the store (to resolve tokens), the counters and the queue.
/// Handlers get a clone per request, so it is one shared [`Backends`]: a clone is one
/// reference count, not one per field and a copy of the key namespace.
#[derive(Clone)]
pub struct ChatWrite(Arc<Backends>);

impl std::ops::Deref for ChatWrite {
    type Target = Backends;

    fn deref(&self) -> &Backends {
        &self.0
    }
}

/// The backends and caches behind [`ChatWrite`].
pub struct Backends {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn Queue>,
    pub keys: schema::Keys,
    tokens: Arc<schema::TokenCache>,
    /// Chats known to exist: a message create skips the store lookup for them.
    pub(crate) known_chats: Arc<schema::KnownChats>,
}

impl ChatWrite {
    pub fn new(db: Database, counters: Arc<dyn Counters>, queue: Arc<dyn Queue>, namespace: &str) -> Self {
        Self(Arc::new(Backends {
            db,
            counters,
            queue,
            keys: schema::Keys::new(namespace),
            tokens: Arc::default(),
            known_chats: Arc::default(),
        }))
    }

    /// The internal id of the application with `token`, if it exists. Tokens never change
    /// owner, so a hit is cached for the life of the process.
    pub async fn application_id(&self, token: &str) -> Result<Option<i64>, shared::backends::BackendError> {
        if let Some(id) = self.tokens.get(token) {
            return Ok(Some(id));
        }
        let id = schema::application_id(&self.db, token).await?;
        if let Some(id) = id {
            self.tokens.insert(token, id);
        }
        Ok(id)
    }
}

/// chat-write's settings: defaults, then `--config FILE`, then `CHATMESH_*` and the backend
/// URLs, then flags.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    #[serde(flatten)]
    pub backends: shared::config::BackendConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8081".to_owned(), max_body_bytes: 256 * 1024, backends: Default::default() }
    }
}

/// Connects the backends, makes sure the chat tables exist, and serves the create routes on
/// `listener` until `shutdown`.
pub async fn run(
    config: &Config,
    listener: tokio::net::TcpListener,
    shutdown: shared::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let backends = shared::backends::Backends::connect(&config.backends, false).await?;
    tracing::info!(backends = %backends.description, "backends connected");
    backends.db.migrate("chat", schema::MIGRATIONS).await?;
    let state = ChatWrite::new(
        backends.db.clone(),
        backends.counters.clone(),
        backends.queue.clone(),
        &config.backends.namespace,
    );
    let routes = axum::Router::new()
        .merge(shared::http::served_by(router(state), "chat-write"))
        .merge(shared::health::router("chat-write", backends.readiness_checks()))
        .merge(shared::openapi::router(openapi::document()));
    let app = shared::http::with_fallbacks(routes).layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes));
    let app = shared::metrics::instrument(app);
    tracing::info!(address = %listener.local_addr()?, "chat-write listening");
    shared::http::serve(listener, app, shutdown).await?;
    Ok(())
}
