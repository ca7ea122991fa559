//! The counters port: numbers that are unique per parent and never reused, the touched-set
//! the count flush works from, and a lock so one replica flushes at a time.
//!
//! A counter missing from the backend (first use, a restart, Redis losing its keys or coming
//! back with older ones) is seeded from everything durable that holds numbers for it by `seed`
//! before it is incremented, once per key even when many requests miss it together (single
//! flight).
//!
//! Adapters: [`MemoryCounters`] (embedded, always built) and, with the `redis` feature,
//! `RedisCounters`.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::BackendResult;

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

pub use self::memory::MemoryCounters;
#[cfg(feature = "redis")]
pub use self::redis::RedisCounters;

/// Finds the highest number the store (and anything else durable) already holds for a key.
pub type Seed<'a> = &'a (dyn Fn() -> BoxFuture<'static, BackendResult<i64>> + Send + Sync);

/// What the counter of a key has handed out.
///
/// Every number in `floor + 1 ..= last` was handed out by the counter since it was last
/// seeded. A number at or below `floor` is in the store, or was handed out before a seed that
/// could not tell which numbers were (Redis came back without its keys, or older): such a
/// number may belong to a command still queued, or may never have been handed out at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issued {
    pub floor: i64,
    pub last: i64,
}

#[async_trait]
pub trait Counters: Send + Sync {
    /// The next number for `key`: one more than every number handed out before.
    async fn next(&self, key: &str, seed: Seed<'_>) -> BackendResult<i64>;

    /// What has been handed out for `key` (seeding it first if missing).
    async fn issued(&self, key: &str, seed: Seed<'_>) -> BackendResult<Issued>;

    /// Records that `members` of `set` changed and need their counts flushed.
    async fn touch(&self, set: &str, members: &[String]) -> BackendResult<()>;

    /// Takes the members of `set` touched so far for a flush. Members touched from now on wait
    /// for the next flush. Until [`Counters::finish_touched`] is called, a crashed flush's members are
    /// handed out again by the next call.
    async fn take_touched(&self, set: &str) -> BackendResult<Vec<String>>;

    /// The flush of `members` (taken from `set`) is committed. Only those are forgotten: a
    /// member another flush took meanwhile, or touched again, is kept.
    async fn finish_touched(&self, set: &str, members: &[String]) -> BackendResult<()>;

    /// Changes whenever the backend may have lost or rolled back what it held (a restart, a
    /// failover, a flush): touched sets from before are gone, so counts must be rebuilt in full.
    async fn generation(&self) -> BackendResult<String>;

    /// Takes the lock `name` for `holder` for `ttl` unless another holder has it.
    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> BackendResult<bool>;

    /// Gives back the lock if `holder` still has it.
    async fn unlock(&self, name: &str, holder: &str) -> BackendResult<()>;

    /// Answers when the backend answers.
    async fn ping(&self) -> BackendResult<()>;
}
