//! chat-write: creates chats and messages.
//!
//! The chat tables, keys, commands and views are the `chat` crate's; this crate holds what
//! only the write side does.
//!
//! # Layout
//! - [`store`]: the caches in front of the chat lookups, the chat numbers whose create the
//!   queue did not confirm, and the seeds of the counters (the highest number held).
//! - [`api`]: the create routes, each handler carrying its OpenAPI operation. A create takes
//!   its number from the counters port, publishes a command through the queue port and
//!   answers 201 only once the command is durably queued; a queue that does not confirm gives
//!   503.
//! - [`idempotency`]: `Idempotency-Key` on the creates: one chat or message per key.
//! - [`openapi`]: the document's title and tags around those operations, served at
//!   `/openapi.json`.

pub mod api;
pub mod idempotency;
pub mod openapi;
pub mod store;

use std::sync::Arc;

use chat::commands::Command;
use chat::schema::{self, Keys};
use shared::backends::counters::Counters;
use shared::backends::queue::Queue;
use shared::backends::sql::Database;

pub use api::router;

/// What the create routes need: the store (to resolve tokens), the counters and the queue.
/// Handlers get a clone per request, so it is one shared [`Inner`]: a clone is one reference
/// count, not one per field and a copy of the key namespace.
#[derive(Clone)]
pub struct ChatWrite(Arc<Inner>);

impl std::ops::Deref for ChatWrite {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The backends and caches behind [`ChatWrite`].
pub struct Inner {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn Queue>,
    pub keys: Keys,
    tokens: Arc<store::TokenCache>,
    /// Chats known to exist: a message create skips the store lookup for them.
    pub(crate) known_chats: Arc<store::KnownChats>,
    /// The highest number per counter key among the commands the queue held at start (see
    /// [`ChatWrite::load_queued_numbers`]).
    queued: std::sync::RwLock<std::collections::HashMap<String, i64>>,
    /// Idempotency keys of the creates running in this process.
    pub(crate) in_flight: crate::idempotency::InFlight,
}

impl ChatWrite {
    pub fn new(db: Database, counters: Arc<dyn Counters>, queue: Arc<dyn Queue>, namespace: &str) -> Self {
        Self(Arc::new(Inner {
            db,
            counters,
            queue,
            keys: Keys::new(namespace),
            tokens: Arc::default(),
            known_chats: Arc::default(),
            queued: Default::default(),
            in_flight: Default::default(),
        }))
    }

    /// Reads the numbers of every command the queue holds (ready, delayed, dead-lettered), so
    /// counters seeded from now on start above them as well as above the store. Run before the
    /// first number is handed out; needed where the counters live in this process (they start
    /// empty after a restart while the queue may still hold commands numbered by the last
    /// run). The queue is read before the store, so a command the consumer moves from one to
    /// the other meanwhile is seen in one of them. Returns how many commands were read.
    pub async fn load_queued_numbers(&self) -> Result<usize, shared::backends::BackendError> {
        let Some(payloads) = self.queue.held_payloads(&self.keys.command_queue()).await? else { return Ok(0) };
        let mut highest = std::collections::HashMap::new();
        for payload in &payloads {
            let Ok(command) = Command::decode(payload) else { continue };
            let (key, number) = match command {
                Command::CreateChat { application_id, chat_number, .. } => {
                    (self.keys.chat_counter(application_id), chat_number)
                }
                // A queued delete names a number handed out before the restart; its create may
                // have died with the process (a create handed straight to the consumer lives in
                // memory until stored), and the number must not go to another message.
                Command::CreateMessage { application_id, chat_number, message_number, .. }
                | Command::DeleteMessage { application_id, chat_number, message_number, .. } => {
                    (self.keys.message_counter(application_id, chat_number), message_number)
                }
                Command::IndexMessage { .. } => continue,
            };
            let entry = highest.entry(key).or_insert(number);
            *entry = (*entry).max(number);
        }
        *self.queued.write().expect("queued numbers poisoned") = highest;
        Ok(payloads.len())
    }

    /// The highest number the queue held at start for the counter `key` names. The key is
    /// only formatted when the queue held anything (every create builds a seed, few use it).
    fn queued_number(&self, key: impl FnOnce() -> String) -> i64 {
        let queued = self.queued.read().expect("queued numbers poisoned");
        if queued.is_empty() {
            return 0;
        }
        queued.get(&key()).copied().unwrap_or(0)
    }

    /// Seeds the chat counter of an application: above the store and the queue.
    pub(crate) fn seed_chat_counter(&self, application_id: i64) -> impl store::SeedFn {
        let queued = self.queued_number(|| self.keys.chat_counter(application_id));
        store::seed_chat_counter(&self.db, application_id, queued)
    }

    /// Seeds the message counter of a chat: above the store and the queue.
    pub(crate) fn seed_message_counter(&self, application_id: i64, chat_number: i64) -> impl store::SeedFn {
        let queued = self.queued_number(|| self.keys.message_counter(application_id, chat_number));
        store::seed_message_counter(&self.db, application_id, chat_number, queued)
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
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The address, backends and limits.
    #[serde(flatten)]
    pub serve: shared::config::Serve,
}

impl Default for Config {
    fn default() -> Self {
        Self { max_body_bytes: 256 * 1024, serve: shared::config::Serve::at("127.0.0.1:8081") }
    }
}

/// Connects the backends, makes sure the chat tables exist, and serves the create routes on
/// `listener` until `shutdown`.
pub async fn run(
    config: &Config,
    listener: tokio::net::TcpListener,
    shutdown: shared::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let backends = shared::backends::Backends::connect(&config.serve.backends, false).await?;
    tracing::info!(backends = %backends.description, "backends connected");
    backends.db.migrate("chat", schema::MIGRATIONS).await?;
    let state = ChatWrite::new(
        backends.db.clone(),
        backends.counters.clone(),
        backends.queue.clone(),
        &config.serve.backends.namespace,
    );
    let queued = state.load_queued_numbers().await?;
    if queued > 0 {
        tracing::info!(queued, "counters will start above the commands the queue holds");
    }
    let routes = axum::Router::new()
        .merge(shared::http::served_by(router(state), "chat-write"))
        .merge(shared::health::router("chat-write", backends.readiness_checks()))
        .merge(shared::openapi::router(openapi::document()));
    let app = shared::http::with_fallbacks(routes).layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes));
    let app = shared::metrics::instrument(app);
    tracing::info!(address = %listener.local_addr()?, "chat-write listening");
    shared::http::serve_with_limits(listener, app, shutdown, &config.serve.http).await?;
    Ok(())
}
