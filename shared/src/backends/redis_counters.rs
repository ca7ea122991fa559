//! The Redis counters adapter: atomic INCR per key, touched sets, and a lock.
//!
//! Numbers must never be reused, even when Redis loses its keys (a restart without
//! persistence, a FLUSHALL) while commands with recently issued numbers are still queued and
//! not yet in the store. So every issued number is covered by a durable reservation in the
//! SQL store before it is answered: when a number passes the reservation cached beside its
//! key, the next block is reserved in the store first. A missing key is seeded by one atomic
//! script from the larger of the store's highest number and the key's reservation, once per
//! key in this process (single flight). A number issued just before a flush and not yet
//! covered is thrown away: the epoch key, recreated by every seed, tells the two apart.
//!
//! Requests for the same key that arrive while one is at Redis share the next round trip: one
//! `INCRBY` by their count hands each its own number of a contiguous range (see [`Coalescer`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use sqlx::Row;
use tokio::sync::oneshot;

use super::counters::{Counters, Seed};
use super::sql::{Database, Dialect, Migration};
use super::{BackendError, BackendResult};

/// Numbers reserved in the store at a time.
pub const RESERVATION_BLOCK: i64 = 256;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "counter reservations",
    sqlite: &["CREATE TABLE counter_reservations (name VARCHAR(255) NOT NULL PRIMARY KEY, high BIGINT NOT NULL)"],
    mysql: &["CREATE TABLE IF NOT EXISTS counter_reservations (name VARCHAR(255) NOT NULL PRIMARY KEY, \
              high BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
}];

/// Adds ARGV[1] to an existing counter; returns nil when the key is missing, else
/// `{highest number of the range, cached reservation, epoch}`.
const NEXT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
local reserved = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[3]) or ''
return {n, reserved, epoch}
";

/// Seeds a missing counter (and its cached reservation) at ARGV[1]; makes sure an epoch exists.
const SEED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('SET', KEYS[3], ARGV[2], 'NX')
return 1
";

/// Raises the cached reservation to ARGV[1] unless it is higher already.
const RAISE: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// Moves the touched set into its in-flush twin (merging with a crashed flush's leftovers)
/// and returns the members to flush.
const TAKE_TOUCHED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
    redis.call('DEL', KEYS[1])
  else
    redis.call('RENAME', KEYS[1], KEYS[2])
  end
end
return redis.call('SMEMBERS', KEYS[2])
";

const TRY_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisCounters {
    redis: ConnectionManager,
    db: Database,
    epoch_key: String,
    seeding: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    coalescer: Coalescer,
    scripts: Scripts,
}

struct Scripts {
    next: redis::Script,
    seed: redis::Script,
    raise: redis::Script,
    take_touched: redis::Script,
    try_lock: redis::Script,
    unlock: redis::Script,
}

fn unavailable(error: redis::RedisError) -> BackendError {
    BackendError::Unavailable(format!("redis: {error}"))
}

impl RedisCounters {
    /// Connects to `url`; reservations live in `db` (migrated here). `namespace` names the epoch key.
    pub async fn connect(url: &str, db: Database, namespace: &str) -> BackendResult<Self> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(3)));
        let redis = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| BackendError::Unavailable("redis: connection timed out".into()))?
            .map_err(unavailable)?;
        db.migrate("counters", MIGRATIONS).await?;
        Ok(Self {
            redis,
            db,
            epoch_key: format!("{namespace}:counters:epoch"),
            seeding: Mutex::default(),
            coalescer: Coalescer::default(),
            scripts: Scripts {
                next: redis::Script::new(NEXT),
                seed: redis::Script::new(SEED),
                raise: redis::Script::new(RAISE),
                take_touched: redis::Script::new(TAKE_TOUCHED),
                try_lock: redis::Script::new(TRY_LOCK),
                unlock: redis::Script::new(UNLOCK),
            },
        })
    }

    fn reserved_key(key: &str) -> String {
        format!("{key}:reserved")
    }

    async fn reservation(&self, key: &str) -> BackendResult<i64> {
        let row = sqlx::query("SELECT high FROM counter_reservations WHERE name = ?")
            .bind(key)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0))
    }

    /// Durably reserves numbers up to `high` for `key`.
    async fn reserve(&self, key: &str, high: i64) -> BackendResult<()> {
        let sql = match self.db.dialect() {
            Dialect::MySql => {
                "INSERT INTO counter_reservations (name, high) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE high = GREATEST(high, VALUES(high))"
            }
            Dialect::Sqlite => {
                "INSERT INTO counter_reservations (name, high) VALUES (?, ?) \
                 ON CONFLICT (name) DO UPDATE SET high = MAX(high, excluded.high)"
            }
        };
        sqlx::query(sql).bind(key).bind(high).execute(self.db.pool()).await?;
        Ok(())
    }

    /// Draws `count` numbers for `key` in one round trip; returns the first of the range.
    async fn next_range(&self, key: &str, seed: Seed<'_>, count: i64) -> BackendResult<i64> {
        let mut redis = self.redis.clone();
        for _ in 0..16 {
            let issued: Option<(i64, i64, String)> = self
                .scripts
                .next
                .key(key)
                .key(Self::reserved_key(key))
                .key(&self.epoch_key)
                .arg(count)
                .invoke_async(&mut redis)
                .await
                .map_err(unavailable)?;
            let Some((last, reserved, epoch)) = issued else {
                self.seed(key, seed).await?;
                continue;
            };
            let first = last - count + 1;
            if last <= reserved {
                return Ok(first);
            }
            let high = last + RESERVATION_BLOCK;
            self.reserve(key, high).await?;
            self.scripts
                .raise
                .key(Self::reserved_key(key))
                .arg(high)
                .invoke_async::<i64>(&mut redis)
                .await
                .map_err(unavailable)?;
            // Redis may have lost its keys while the reservation was written: numbers from
            // before a re-seed may be handed out again after it, so they are thrown away.
            let current: Option<String> =
                redis::cmd("GET").arg(&self.epoch_key).query_async(&mut redis).await.map_err(unavailable)?;
            if current.as_deref() == Some(epoch.as_str()) {
                return Ok(first);
            }
            tracing::warn!(key, first, last, "counters were reset while numbers were reserved; drawing again");
        }
        Err(BackendError::Unavailable("redis: counters keep being reset".into()))
    }

    /// Seeds a missing key, once per key in this process.
    async fn seed(&self, key: &str, seed: Seed<'_>) -> BackendResult<()> {
        let gate = {
            let mut seeding = self.seeding.lock().expect("seeding lock poisoned");
            seeding.entry(key.to_owned()).or_default().clone()
        };
        let _single_flight = gate.lock().await;
        let mut redis = self.redis.clone();
        let exists: bool = redis::cmd("EXISTS").arg(key).query_async(&mut redis).await.map_err(unavailable)?;
        if !exists {
            let start = seed().await?.max(self.reservation(key).await?);
            let epoch = format!("{:016x}", rand::random::<u64>());
            self.scripts
                .seed
                .key(key)
                .key(Self::reserved_key(key))
                .key(&self.epoch_key)
                .arg(start)
                .arg(epoch)
                .invoke_async::<i64>(&mut redis)
                .await
                .map_err(unavailable)?;
            tracing::info!(key, start, "counter seeded from the store");
            crate::metrics::record_counter_seed("redis");
        }
        let mut seeding = self.seeding.lock().expect("seeding lock poisoned");
        if Arc::strong_count(&gate) <= 2 {
            seeding.remove(key);
        }
        Ok(())
    }
}

#[async_trait]
impl Counters for RedisCounters {
    async fn next(&self, key: &str, seed: Seed<'_>) -> BackendResult<i64> {
        let mut turn = match self.coalescer.join(key) {
            Turn::Lead(turn) => turn,
            Turn::Wait(answer) => match answer.await {
                Ok(Answer::Number(number)) => return Ok(number),
                Ok(Answer::Failed(message)) => return Err(BackendError::Unavailable(message)),
                Ok(Answer::Lead(turn)) => turn,
                Err(_) => return Err(BackendError::Unavailable("redis: counter request abandoned".into())),
            },
        };
        let waiting = turn.take() as i64;
        match self.next_range(key, seed, waiting + 1).await {
            Ok(first) => {
                turn.answer(|index| Answer::Number(first + 1 + index as i64));
                Ok(first)
            }
            Err(error) => {
                let message = error.message();
                turn.answer(|_| Answer::Failed(message.clone()));
                Err(error)
            }
        }
    }

    async fn current(&self, key: &str, seed: Seed<'_>) -> BackendResult<i64> {
        let mut redis = self.redis.clone();
        for _ in 0..4 {
            let value: Option<i64> = redis::cmd("GET").arg(key).query_async(&mut redis).await.map_err(unavailable)?;
            match value {
                Some(value) => return Ok(value),
                None => self.seed(key, seed).await?,
            }
        }
        Err(BackendError::Unavailable("redis: counters keep being reset".into()))
    }

    async fn touch(&self, set: &str, members: &[String]) -> BackendResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut redis = self.redis.clone();
        redis::cmd("SADD").arg(set).arg(members).query_async::<i64>(&mut redis).await.map_err(unavailable)?;
        Ok(())
    }

    async fn take_touched(&self, set: &str) -> BackendResult<Vec<String>> {
        let mut redis = self.redis.clone();
        self.scripts
            .take_touched
            .key(set)
            .key(format!("{set}:in-flush"))
            .invoke_async(&mut redis)
            .await
            .map_err(unavailable)
    }

    async fn finish_touched(&self, set: &str) -> BackendResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("DEL").arg(format!("{set}:in-flush")).query_async::<i64>(&mut redis).await.map_err(unavailable)?;
        Ok(())
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> BackendResult<bool> {
        let mut redis = self.redis.clone();
        let got: i64 = self
            .scripts
            .try_lock
            .key(name)
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok(got == 1)
    }

    async fn unlock(&self, name: &str, holder: &str) -> BackendResult<()> {
        let mut redis = self.redis.clone();
        self.scripts.unlock.key(name).arg(holder).invoke_async::<i64>(&mut redis).await.map_err(unavailable)?;
        Ok(())
    }

    async fn ping(&self) -> BackendResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("PING").query_async::<String>(&mut redis).await.map_err(unavailable)?;
        Ok(())
    }
}

/// Requests for the same key that arrive while another is at Redis wait; when the round trip
/// in flight returns, one of them leads the next round for all of them. A leader that is
/// cancelled (its client went away) hands its waiters and the lead on, so nobody is stranded.
#[derive(Default)]
struct Coalescer {
    keys: Waiting,
}

/// Keys with a round in flight, and the requests waiting for the next one.
type Waiting = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<Answer>>>>>;

enum Answer {
    Number(i64),
    Failed(String),
    Lead(LeadTurn),
}

enum Turn {
    Lead(LeadTurn),
    Wait(oneshot::Receiver<Answer>),
}

/// The right to make the next round trip for a key. Dropping it passes the lead to the first
/// request still waiting, or frees the key when none is.
struct LeadTurn {
    keys: Waiting,
    key: String,
    /// Waiters taken for this round and not answered yet (given back if the round is dropped).
    taken: Vec<oneshot::Sender<Answer>>,
}

impl Coalescer {
    fn join(&self, key: &str) -> Turn {
        let mut keys = self.keys.lock().expect("coalescer lock poisoned");
        if let Some(waiting) = keys.get_mut(key) {
            let (send, receive) = oneshot::channel();
            waiting.push(send);
            return Turn::Wait(receive);
        }
        keys.insert(key.to_owned(), Vec::new());
        Turn::Lead(LeadTurn { keys: self.keys.clone(), key: key.to_owned(), taken: Vec::new() })
    }
}

impl LeadTurn {
    /// Takes every request waiting now into this round; returns how many.
    fn take(&mut self) -> usize {
        let mut keys = self.keys.lock().expect("coalescer lock poisoned");
        let waiting = keys.get_mut(&self.key).expect("a led key stays registered");
        self.taken.append(waiting);
        self.taken.len()
    }

    /// Answers the requests taken into this round.
    fn answer(&mut self, answer: impl Fn(usize) -> Answer) {
        for (index, waiter) in self.taken.drain(..).enumerate() {
            // A request that went away leaves its number unused (skipped, never reused).
            let _ = waiter.send(answer(index));
        }
    }
}

impl Drop for LeadTurn {
    fn drop(&mut self) {
        let next = {
            let mut keys = self.keys.lock().expect("coalescer lock poisoned");
            let waiting = keys.get_mut(&self.key).expect("a led key stays registered");
            waiting.splice(0..0, self.taken.drain(..));
            if waiting.is_empty() {
                keys.remove(&self.key);
                None
            } else {
                Some(waiting.remove(0))
            }
        };
        if let Some(next) = next {
            let turn = LeadTurn { keys: self.keys.clone(), key: std::mem::take(&mut self.key), taken: Vec::new() };
            // If that request went away too, the returned turn drops here (outside the lock)
            // and passes the lead on again.
            let _ = next.send(Answer::Lead(turn));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(turn: Turn) -> LeadTurn {
        match turn {
            Turn::Lead(turn) => turn,
            Turn::Wait(_) => panic!("expected the lead"),
        }
    }

    fn waiter(turn: Turn) -> oneshot::Receiver<Answer> {
        match turn {
            Turn::Wait(answer) => answer,
            Turn::Lead(_) => panic!("expected to wait"),
        }
    }

    fn number(answer: &mut oneshot::Receiver<Answer>) -> i64 {
        match answer.try_recv() {
            Ok(Answer::Number(number)) => number,
            _ => panic!("expected a number"),
        }
    }

    fn handed_lead(answer: &mut oneshot::Receiver<Answer>) -> LeadTurn {
        match answer.try_recv() {
            Ok(Answer::Lead(turn)) => turn,
            _ => panic!("expected the lead"),
        }
    }

    #[test]
    fn requests_waiting_on_a_round_share_the_next_one() {
        let coalescer = Coalescer::default();
        let mut first = lead(coalescer.join("k"));
        assert_eq!(first.take(), 0, "nobody waits yet");
        let mut second = waiter(coalescer.join("k"));
        let mut third = waiter(coalescer.join("k"));
        let _other_key = lead(coalescer.join("other"));
        first.answer(|_| unreachable!("nobody was taken"));
        drop(first);
        let mut next = handed_lead(&mut second);
        assert!(third.try_recv().is_err(), "one request leads, the other still waits");
        assert_eq!(next.take(), 1);
        next.answer(|index| Answer::Number(10 + index as i64));
        assert_eq!(number(&mut third), 10);
        drop(next);
        assert!(coalescer.keys.lock().unwrap().get("k").is_none(), "a key nobody waits for is freed");
        let _again = lead(coalescer.join("k"));
    }

    #[test]
    fn a_cancelled_round_gives_its_requests_back_and_passes_the_lead() {
        let coalescer = Coalescer::default();
        let mut first = lead(coalescer.join("k"));
        let gone = waiter(coalescer.join("k"));
        let mut second = waiter(coalescer.join("k"));
        let mut third = waiter(coalescer.join("k"));
        assert_eq!(first.take(), 3);
        // The leader's client goes away while its round is at Redis, and so does a waiter.
        drop(gone);
        drop(first);
        let mut next = handed_lead(&mut second);
        assert_eq!(next.take(), 1, "the waiter taken into the cancelled round is served by the next");
        next.answer(|index| Answer::Number(20 + index as i64));
        assert_eq!(number(&mut third), 20);
    }
}
