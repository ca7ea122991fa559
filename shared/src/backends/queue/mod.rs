//! The queue port: commands published durably (a publish that returns `Ok` survives a crash of
//! any process), delivered at least once, acknowledged after the consumer's commit, retried
//! with a delay, and parked in a dead-letter list after too many attempts.
//!
//! Beside the commands, the port carries notifications: [`Queue::notify`] sends a small payload
//! to every process listening on a topic at that moment ([`Queue::listen`]), at most once and
//! not durably (a RabbitMQ fanout exchange; in-process embedded). They wake readers that
//! catch up from the store, so one that is lost delays a reader, never loses data.
//!
//! Adapters: [`EmbeddedQueue`] (a SQLite file, always built) and, with the `rabbitmq`
//! feature, `RabbitQueue`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::BackendResult;

pub mod embedded;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

pub use self::embedded::EmbeddedQueue;
#[cfg(feature = "rabbitmq")]
pub use self::rabbitmq::RabbitQueue;

/// One command handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Identifies the delivery for ack / retry / dead-letter on its subscription.
    pub id: u64,
    pub payload: Bytes,
    /// How many times the command was retried before this delivery.
    pub attempts: u32,
}

/// A command parked after too many failed attempts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadLetter {
    pub id: u64,
    pub queue: String,
    pub payload: String,
    pub attempts: u32,
    pub reason: String,
    pub failed_at: i64,
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Publishes `payload` to `queue`; `Ok` means it is durably queued.
    async fn publish(&self, queue: &str, payload: Bytes) -> BackendResult<()>;

    /// Starts consuming `queue`. Several subscriptions may share a queue; each delivery goes
    /// to one of them.
    async fn subscribe(&self, queue: &str) -> BackendResult<Box<dyn Subscription>>;

    /// The dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: &str, limit: usize) -> BackendResult<Vec<DeadLetter>>;

    /// Puts every dead letter of `queue` back on it with its attempts reset; returns how many.
    async fn replay_dead_letters(&self, queue: &str) -> BackendResult<usize>;

    /// Commands waiting in `queue` (ready, delayed or being processed).
    async fn depth(&self, queue: &str) -> BackendResult<u64>;

    /// Every command `queue` holds: ready, delayed, being processed and dead-lettered. A
    /// process that numbers commands seeds from them as well as from the store. `None` where
    /// the queue cannot be read without taking its messages (RabbitMQ: there the counters'
    /// durable reservations cover every number queued).
    async fn held_payloads(&self, queue: &str) -> BackendResult<Option<Vec<Bytes>>>;

    async fn ping(&self) -> BackendResult<()>;

    /// Hands `payload` straight to a subscription of `queue` in this process, without queueing
    /// it first: `true` once that subscription acked it, so the consumer's own commit made it
    /// durable and it needs no queueing; `false` when it was not taken (no direct path, nobody
    /// in this process consumes `queue`) or was given back (retried, dead-lettered, or its
    /// subscription dropped), and the caller publishes it. Only the embedded queue of a
    /// single-process deployment has a direct path.
    async fn hand_over(&self, _queue: &str, _payload: Bytes) -> bool {
        false
    }

    /// Sends `payload` to every current listener of `topic`, without waiting for any of them:
    /// at most once, not durable, dropped when nobody listens.
    async fn notify(&self, topic: &str, payload: Bytes) -> BackendResult<()>;

    /// Listens on `topic`: the receiver gets every notification sent after this returns,
    /// until it reports `Closed` (the link to the broker broke: listen again, and catch up
    /// from the store) or `Lagged` (it fell behind and missed some).
    async fn listen(&self, topic: &str) -> BackendResult<tokio::sync::broadcast::Receiver<Bytes>>;
}

/// Notifications a listener may fall behind by before it is told it lagged.
pub const LISTEN_BUFFER: usize = 4096;

#[async_trait]
pub trait Subscription: Send + Sync {
    /// Up to `max` deliveries; waits at most `wait` for the first one, and returns an empty
    /// batch when none came (so a consumer loop can look at its shutdown signal).
    async fn next_batch(&mut self, max: usize, wait: Duration) -> BackendResult<Vec<Delivery>>;

    /// The commands are done with: they will not be delivered again.
    async fn ack(&mut self, ids: &[u64]) -> BackendResult<()>;

    /// Deliver the command again after `delay`, with its attempts counted up.
    async fn retry(&mut self, id: u64, delay: Duration) -> BackendResult<()>;

    /// Park the command in the dead-letter list with `reason`.
    async fn dead_letter(&mut self, id: u64, reason: &str) -> BackendResult<()>;
}
