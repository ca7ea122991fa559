//! The four backend ports of chatmesh and their adapters: one folder per port, the port (its
//! trait and types) in the folder's `mod.rs`, one file per adapter.
//!
//! | port | embedded adapter (default) | production adapter | built with |
//! |---|---|---|---|
//! | [`Database`] | SQLite file under the data dir (`sql/sqlite.rs`) | MySQL / MariaDB (`sql/mysql.rs`, `DATABASE_URL`) | always |
//! | [`Counters`] | in-process, seeded from the store (`counters/memory.rs`) | Redis (`counters/redis.rs`, `REDIS_URL`) | feature `redis` |
//! | [`Queue`] | SQLite-backed queue under the data dir (`queue/embedded.rs`) | RabbitMQ (`queue/rabbitmq.rs`, `AMQP_URL`) | feature `rabbitmq` |
//! | [`SearchIndex`] | tantivy index under the data dir (`search/tantivy.rs`) | Elasticsearch (`search/elasticsearch.rs`, `ELASTICSEARCH_URL`) | features `tantivy`, `elasticsearch` |
//!
//! Each production adapter and the tantivy index is behind a cargo feature of `shared`, so a
//! service that needs only SQL compiles none of their clients. Both SQL engines are always
//! built: every service keeps its tables in one of them. A URL set for an adapter the binary
//! was built without fails at start with a message naming the feature; it never falls back to
//! the embedded adapter, which would split one deployment's data in two.

pub mod counters;
pub mod queue;
pub mod search;
pub mod sql;

pub use counters::Counters;
pub use queue::Queue;
pub use search::SearchIndex;
pub use sql::Database;

/// A backend failed to do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A statement run on a SQLite connection of its own ([`sql::sqlite::open_direct`]).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("search index: {0}")]
    Search(String),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

pub type BackendResult<T> = Result<T, BackendError>;

impl BackendError {
    /// The error as text, to hand one failure to several waiters (the error is not `Clone`):
    /// an `Unavailable` gives its own message, so wrapping it again does not repeat the prefix.
    pub fn message(&self) -> String {
        match self {
            BackendError::Unavailable(message) => message.clone(),
            other => other.to_string(),
        }
    }

    /// The error for a configured adapter this binary was built without: `setting` says what
    /// asked for it, `feature` is the cargo feature of `shared` that builds it.
    pub fn not_built(setting: &str, adapter: &str, feature: &str) -> Self {
        BackendError::Other(format!(
            "{setting}, but this binary was built without the {adapter} (cargo feature `{feature}` of shared)"
        ))
    }
}

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::BackendConfig;
use crate::health::{FnCheck, ReadinessCheck};

/// The store, counters and queue a service runs on, chosen from its [`BackendConfig`].
#[derive(Clone)]
pub struct Backends {
    pub db: Database,
    pub counters: Arc<dyn Counters>,
    pub queue: Arc<dyn Queue>,
    /// Which adapter serves each port, for the start-up log.
    pub description: String,
}

impl Backends {
    /// Connects every port: production adapters where a URL is set, embedded ones otherwise.
    /// `single_process` makes the embedded queue wait for each command to be processed before
    /// a publish returns, so one process reads its own writes.
    pub async fn connect(config: &BackendConfig, single_process: bool) -> BackendResult<Self> {
        let mut description = Vec::new();
        let db = match &config.database_url {
            Some(url) => {
                description.push(format!("store={}", sql::redact(url)));
                Database::connect(url).await?
            }
            None => {
                let dir = data_dir(config)?;
                description.push(format!("store=sqlite:{}", dir.join("chatmesh.db").display()));
                Database::open_sqlite(&dir, "chatmesh.db").await?
            }
        };
        let counters: Arc<dyn Counters> = match &config.redis_url {
            Some(url) => {
                description.push(format!("counters={}", sql::redact(url)));
                redis_counters(url, db.clone(), &config.namespace).await?
            }
            None => {
                description.push("counters=in-process".to_owned());
                Arc::new(counters::MemoryCounters::new())
            }
        };
        let (queue, queue_description) = open_queue(config, single_process).await?;
        description.push(queue_description);
        Ok(Self { db, counters, queue, description: description.join(" ") })
    }

    /// Readiness checks for `/readyz`: one per port.
    pub fn readiness_checks(&self) -> Vec<Arc<dyn ReadinessCheck>> {
        let db = self.db.clone();
        let counters = self.counters.clone();
        let queue = self.queue.clone();
        vec![
            FnCheck::boxed("store", move || {
                let db = db.clone();
                Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
            }),
            FnCheck::boxed("counters", move || {
                let counters = counters.clone();
                Box::pin(async move { counters.ping().await.map_err(|e| e.to_string()) })
            }),
            FnCheck::boxed("queue", move || {
                let queue = queue.clone();
                Box::pin(async move { queue.ping().await.map_err(|e| e.to_string()) })
            }),
        ]
    }
}

/// Opens the queue alone (tools that list or replay dead letters need nothing else): RabbitMQ
/// where a URL is set, the embedded queue under the data dir otherwise. Returns it with a
/// description for the start-up log.
pub async fn open_queue(config: &BackendConfig, single_process: bool) -> BackendResult<(Arc<dyn Queue>, String)> {
    Ok(match &config.amqp_url {
        Some(url) => (rabbitmq_queue(url).await?, format!("queue={}", sql::redact(url))),
        None => {
            let dir = data_dir(config)?;
            let description = format!("queue=embedded:{}", dir.join("queue.db").display());
            let wait = single_process.then_some(Duration::from_secs(5));
            (Arc::new(queue::EmbeddedQueue::open(&dir, wait).await?), description)
        }
    })
}

/// Opens the search index: Elasticsearch where a URL is set, tantivy under the data dir
/// otherwise. A tantivy index has one writing process: the others open it with `indexes`
/// false and hand their writes to it.
pub async fn open_search(config: &BackendConfig, indexes: bool) -> BackendResult<Arc<dyn SearchIndex>> {
    match &config.elasticsearch_url {
        Some(url) => elasticsearch_index(url, &format!("{}-messages", config.namespace)).await,
        None => tantivy_index(&data_dir(config)?.join("search"), indexes),
    }
}

#[cfg(feature = "redis")]
async fn redis_counters(url: &str, db: Database, namespace: &str) -> BackendResult<Arc<dyn Counters>> {
    Ok(Arc::new(counters::RedisCounters::connect(url, db, namespace).await?))
}

#[cfg(not(feature = "redis"))]
async fn redis_counters(_url: &str, _db: Database, _namespace: &str) -> BackendResult<Arc<dyn Counters>> {
    Err(BackendError::not_built("a Redis URL is set (REDIS_URL)", "Redis counters", "redis"))
}

#[cfg(feature = "rabbitmq")]
async fn rabbitmq_queue(url: &str) -> BackendResult<Arc<dyn Queue>> {
    Ok(Arc::new(queue::RabbitQueue::connect(url).await?))
}

#[cfg(not(feature = "rabbitmq"))]
async fn rabbitmq_queue(_url: &str) -> BackendResult<Arc<dyn Queue>> {
    Err(BackendError::not_built("a RabbitMQ URL is set (AMQP_URL)", "RabbitMQ queue", "rabbitmq"))
}

#[cfg(feature = "elasticsearch")]
async fn elasticsearch_index(url: &str, index: &str) -> BackendResult<Arc<dyn SearchIndex>> {
    Ok(Arc::new(search::ElasticIndex::connect(url, index).await?))
}

#[cfg(not(feature = "elasticsearch"))]
async fn elasticsearch_index(_url: &str, _index: &str) -> BackendResult<Arc<dyn SearchIndex>> {
    Err(BackendError::not_built(
        "an Elasticsearch URL is set (ELASTICSEARCH_URL)",
        "Elasticsearch index",
        "elasticsearch",
    ))
}

#[cfg(feature = "tantivy")]
fn tantivy_index(dir: &Path, indexes: bool) -> BackendResult<Arc<dyn SearchIndex>> {
    if indexes {
        Ok(Arc::new(search::TantivyIndex::open(dir)?))
    } else {
        Ok(Arc::new(search::TantivyIndex::open_read_only(dir)?))
    }
}

#[cfg(not(feature = "tantivy"))]
fn tantivy_index(_dir: &Path, _indexes: bool) -> BackendResult<Arc<dyn SearchIndex>> {
    Err(BackendError::not_built(
        "no Elasticsearch URL is set (ELASTICSEARCH_URL)",
        "embedded tantivy search index",
        "tantivy",
    ))
}

fn data_dir(config: &BackendConfig) -> BackendResult<std::path::PathBuf> {
    config.ensure_data_dir().map_err(|e| BackendError::Other(format!("data dir {}: {e}", config.data_dir.display())))
}
