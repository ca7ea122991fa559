//! The four backend ports of chatmesh and their adapters.
//!
//! | port | embedded adapter (default) | production adapter |
//! |---|---|---|
//! | [`sql::Database`] | SQLite file under the data dir | MySQL / MariaDB (`DATABASE_URL`) |
//! | [`counters::Counters`] | in-process, seeded from the store | Redis (`REDIS_URL`) |
//! | [`queue::Queue`] | SQLite-backed queue under the data dir | RabbitMQ (`AMQP_URL`) |
//! | [`search::SearchIndex`] | tantivy index under the data dir | Elasticsearch (`ELASTICSEARCH_URL`) |

pub mod counters;
pub mod elastic;
pub mod queue;
pub mod rabbitmq;
pub mod redis_counters;
pub mod search;
pub mod sql;

/// A backend failed to do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
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
}

use std::sync::Arc;
use std::time::Duration;

use crate::config::BackendConfig;
use crate::health::{FnCheck, ReadinessCheck};

/// The store, counters and queue a service runs on, chosen from its [`BackendConfig`].
#[derive(Clone)]
pub struct Backends {
    pub db: sql::Database,
    pub counters: Arc<dyn counters::Counters>,
    pub queue: Arc<dyn queue::Queue>,
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
                sql::Database::connect(url).await?
            }
            None => {
                let dir = data_dir(config)?;
                description.push(format!("store=sqlite:{}", dir.join("chatmesh.db").display()));
                sql::Database::open_sqlite(&dir, "chatmesh.db").await?
            }
        };
        let counters: Arc<dyn counters::Counters> = match &config.redis_url {
            Some(url) => {
                description.push(format!("counters={}", sql::redact(url)));
                Arc::new(redis_counters::RedisCounters::connect(url, db.clone(), &config.namespace).await?)
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
pub async fn open_queue(
    config: &BackendConfig,
    single_process: bool,
) -> BackendResult<(Arc<dyn queue::Queue>, String)> {
    Ok(match &config.amqp_url {
        Some(url) => (Arc::new(rabbitmq::RabbitQueue::connect(url).await?), format!("queue={}", sql::redact(url))),
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
pub async fn open_search(config: &BackendConfig, indexes: bool) -> BackendResult<Arc<dyn search::SearchIndex>> {
    match &config.elasticsearch_url {
        Some(url) => {
            Ok(Arc::new(elastic::ElasticIndex::connect(url, &format!("{}-messages", config.namespace)).await?))
        }
        None if indexes => Ok(Arc::new(search::TantivyIndex::open(&data_dir(config)?.join("search"))?)),
        None => Ok(Arc::new(search::TantivyIndex::open_read_only(&data_dir(config)?.join("search"))?)),
    }
}

fn data_dir(config: &BackendConfig) -> BackendResult<std::path::PathBuf> {
    config.ensure_data_dir().map_err(|e| BackendError::Other(format!("data dir {}: {e}", config.data_dir.display())))
}
