//! The in-process counters adapter: the embedded one, for a deployment of one process.
//!
//! Nothing here needs to survive a restart, so nothing is written anywhere: everything lives
//! in memory and is rebuilt from the store after a restart (a counter by seeding the first
//! time it is used, counts by a full recount at start). It is therefore only correct while
//! one process hands out the numbers (several replicas need Redis).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{Counters, Issued, Seed};
use crate::backends::{BackendError, BackendResult};

/// In-process counters, touched sets and locks.
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
