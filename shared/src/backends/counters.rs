//! The counters port: numbers that are unique per parent and never reused, the touched-set
//! the count flush works from, and a lock so one replica flushes at a time.
//!
//! A counter missing from the backend (first use, a restart, Redis losing its keys or coming
//! back with older ones) is seeded from everything durable that holds numbers for it by `seed`
//! before it is incremented, once per key even when many requests miss it together (single
//! flight).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::{BackendError, BackendResult};

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

/// In-process counters: the embedded adapter. Everything lives in memory and is rebuilt from
/// the store after a restart (counters by seeding, counts by a full recount at start).
#[derive(Default)]
pub struct MemoryCounters {
    counters: Mutex<HashMap<String, Arc<OnceCell<AtomicI64>>>>,
    touched: Mutex<HashMap<String, TouchedSet>>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
}

#[derive(Default)]
struct TouchedSet {
    pending: HashSet<String>,
    in_flush: HashSet<String>,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }

    fn cell(&self, key: &str) -> Arc<OnceCell<AtomicI64>> {
        let mut counters = self.counters.lock().expect("counters lock poisoned");
        counters.entry(key.to_owned()).or_default().clone()
    }

    async fn seeded(&self, key: &str, seed: Seed<'_>) -> BackendResult<Arc<OnceCell<AtomicI64>>> {
        let cell = self.cell(key);
        // OnceCell runs one initialiser at a time: concurrent misses wait for the first seed.
        cell.get_or_try_init(|| async {
            let start = seed().await?;
            crate::metrics::record_counter_seed("memory");
            Ok::<_, BackendError>(AtomicI64::new(start))
        })
        .await?;
        Ok(cell)
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn next(&self, key: &str, seed: Seed<'_>) -> BackendResult<i64> {
        let cell = self.seeded(key, seed).await?;
        Ok(cell.get().expect("seeded").fetch_add(1, Ordering::SeqCst) + 1)
    }

    async fn issued(&self, key: &str, seed: Seed<'_>) -> BackendResult<Issued> {
        let cell = self.seeded(key, seed).await?;
        // The seed is exact here (the store and the queue), so every number up to it exists.
        Ok(Issued { floor: 0, last: cell.get().expect("seeded").load(Ordering::SeqCst) })
    }

    async fn touch(&self, set: &str, members: &[String]) -> BackendResult<()> {
        let mut touched = self.touched.lock().expect("touched lock poisoned");
        touched.entry(set.to_owned()).or_default().pending.extend(members.iter().cloned());
        Ok(())
    }

    async fn take_touched(&self, set: &str) -> BackendResult<Vec<String>> {
        let mut touched = self.touched.lock().expect("touched lock poisoned");
        let entry = touched.entry(set.to_owned()).or_default();
        let pending = std::mem::take(&mut entry.pending);
        entry.in_flush.extend(pending);
        Ok(entry.in_flush.iter().cloned().collect())
    }

    async fn finish_touched(&self, set: &str, members: &[String]) -> BackendResult<()> {
        let mut touched = self.touched.lock().expect("touched lock poisoned");
        if let Some(entry) = touched.get_mut(set) {
            for member in members {
                entry.in_flush.remove(member);
            }
        }
        Ok(())
    }

    async fn generation(&self) -> BackendResult<String> {
        // Lost only with the process, and a new process recounts everything at start.
        Ok("memory".to_owned())
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> BackendResult<bool> {
        let mut locks = self.locks.lock().expect("locks poisoned");
        let now = Instant::now();
        match locks.get(name) {
            Some((owner, expires)) if owner != holder && *expires > now => Ok(false),
            _ => {
                locks.insert(name.to_owned(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn unlock(&self, name: &str, holder: &str) -> BackendResult<()> {
        let mut locks = self.locks.lock().expect("locks poisoned");
        if locks.get(name).is_some_and(|(owner, _)| owner == holder) {
            locks.remove(name);
        }
        Ok(())
    }

    async fn ping(&self) -> BackendResult<()> {
        Ok(())
    }
}
