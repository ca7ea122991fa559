//! The Redis counters adapter: atomic increments per key, touched sets, and a lock.
//!
//! Redis is a cache of the numbering, never its truth. Numbers must never be reused, even when
//! Redis loses its keys (a restart without persistence, a FLUSHALL) or comes back with older
//! ones (a restart that lost the last second of its AOF, a failover to a lagging replica, a
//! restore from a snapshot) while commands with recently issued numbers are still queued and
//! not yet in the store. So:
//!
//! - every issued number is covered by a durable reservation in the SQL store before it is
//!   answered: when a number passes the reservation cached beside its counter, the next block
//!   is reserved in the store first;
//! - each counter is a hash that records the run id of the Redis server it was seeded on
//!   (`run`) and a random id of that seeding (`seed`). Every script compares `run` with the
//!   server's own run id (`INFO server`), which changes with every restart and differs on a
//!   promoted replica: a counter written by another server process, however recent its data
//!   looks, is treated as missing;
//! - a missing counter is seeded by one atomic script from the larger of the store's highest
//!   number and the key's durable reservation, once per key in this process (single flight),
//!   with `floor` set to that start (numbers at or below it may or may not have been handed
//!   out, see [`Issued`]);
//! - a number drawn above the cached reservation is answered only if, after its block was
//!   reserved in the store, the counter is still the same seeding on the same server; otherwise
//!   it is thrown away and another is drawn.
//!
//! Requests for the same key that arrive while one is at Redis share the next round trip: one
//! `HINCRBY` by their count hands each its own number of a contiguous range (see
//! [`Coalescer`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use sqlx::Row;
use tokio::sync::oneshot;

use super::{Counters, Issued, Seed};
use crate::backends::sql::{Database, Dialect, Migration};
use crate::backends::{BackendError, BackendResult};

/// Numbers reserved in the store at a time.
pub const RESERVATION_BLOCK: i64 = 256;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "counter reservations",
    sqlite: &["CREATE TABLE counter_reservations (name VARCHAR(255) NOT NULL PRIMARY KEY, high BIGINT NOT NULL)"],
    mysql: &["CREATE TABLE IF NOT EXISTS counter_reservations (name VARCHAR(255) NOT NULL PRIMARY KEY, \
              high BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
}];

/// The opening of every counter script: `run` is this server's run id, and `valid` says
/// whether the counter hash KEYS[1] was seeded on this very server process.
const PRELUDE: &str = r"
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local valid = redis.call('TYPE', KEYS[1]).ok == 'hash' and redis.call('HGET', KEYS[1], 'run') == run
";

/// Adds ARGV[1] to a valid counter; returns nil when it must be seeded, else
/// `{highest number of the range, cached reservation, seeding id}`.
const NEXT: &str = r"
if not valid then return false end
local n = redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])
local fields = redis.call('HMGET', KEYS[1], 'reserved', 'seed')
return {n, tonumber(fields[1]), fields[2]}
";

/// `{last number handed out, floor}` of a valid counter, or nil when it must be seeded.
const ISSUED: &str = r"
if not valid then return false end
local fields = redis.call('HMGET', KEYS[1], 'n', 'floor')
return {tonumber(fields[1]), tonumber(fields[2])}
";

/// Seeds a counter that is missing or was written by another server process at ARGV[1], with
/// seeding id ARGV[2]; a valid counter (another process seeded it first) is left alone.
const SEED: &str = r"
if valid then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'reserved', ARGV[1], 'floor', ARGV[1], 'run', run, 'seed', ARGV[2])
return 1
";

/// Raises the cached reservation to ARGV[1] if the counter is still seeding ARGV[2] on this
/// server; returns 0 when it is not (its numbers may be handed out again: throw them away).
const RAISE: &str = r"
if not valid or redis.call('HGET', KEYS[1], 'seed') ~= ARGV[2] then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'reserved')) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'reserved', ARGV[1])
end
return 1
";

/// This server's run id and the marker KEYS[1] (created with ARGV[1] when missing): the two
/// change when the server restarts or fails over, and when its keys are flushed.
const GENERATION: &str = r"
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local marker = redis.call('GET', KEYS[1])
if not marker then
  marker = ARGV[1]
  redis.call('SET', KEYS[1], marker)
end
return run .. '/' .. marker
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
    generation_key: String,
    seeding: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    coalescer: Coalescer,
    scripts: Scripts,
}

struct Scripts {
    next: redis::Script,
    issued: redis::Script,
    seed: redis::Script,
    raise: redis::Script,
    generation: redis::Script,
    take_touched: redis::Script,
    try_lock: redis::Script,
    unlock: redis::Script,
}

fn unavailable(error: redis::RedisError) -> BackendError {
    BackendError::Unavailable(format!("redis: {error}"))
}

fn counter_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}{body}"))
}

impl RedisCounters {
    /// Connects to `url`; reservations live in `db` (migrated here). `namespace` names the
    /// generation marker.
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
            generation_key: format!("{namespace}:counters:generation"),
            seeding: Mutex::default(),
            coalescer: Coalescer::default(),
            scripts: Scripts {
                next: counter_script(NEXT),
                issued: counter_script(ISSUED),
                seed: counter_script(SEED),
                raise: counter_script(RAISE),
                generation: redis::Script::new(GENERATION),
                take_touched: redis::Script::new(TAKE_TOUCHED),
                try_lock: redis::Script::new(TRY_LOCK),
                unlock: redis::Script::new(UNLOCK),
            },
        })
    }

    /// The durable reservation of `key`: every number ever handed out for it is at or below.
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
            let issued: Option<(i64, i64, String)> =
                self.scripts.next.key(key).arg(count).invoke_async(&mut redis).await.map_err(unavailable)?;
            let Some((last, reserved, seeding)) = issued else {
                self.seed(key, seed).await?;
                continue;
            };
            let first = last - count + 1;
            if last <= reserved {
                return Ok(first);
            }
            let high = last + RESERVATION_BLOCK;
            self.reserve(key, high).await?;
            let still: i64 = self
                .scripts
                .raise
                .key(key)
                .arg(high)
                .arg(&seeding)
                .invoke_async(&mut redis)
                .await
                .map_err(unavailable)?;
            if still == 1 {
                return Ok(first);
            }
            // Redis restarted, failed over or lost its keys while the block was reserved: the
            // counter was (or will be) seeded again, possibly below these numbers.
            tracing::warn!(key, first, last, "counter was reset while its numbers were reserved; drawing again");
        }
        Err(BackendError::Unavailable("redis: counters keep being reset".into()))
    }

    /// Seeds a counter that is missing or stale, once per key in this process.
    async fn seed(&self, key: &str, seed: Seed<'_>) -> BackendResult<()> {
        let gate = {
            let mut seeding = self.seeding.lock().expect("seeding lock poisoned");
            seeding.entry(key.to_owned()).or_default().clone()
        };
        let _single_flight = gate.lock().await;
        let mut redis = self.redis.clone();
        let valid: Option<(i64, i64)> =
            self.scripts.issued.key(key).invoke_async(&mut redis).await.map_err(unavailable)?;
        if valid.is_none() {
            // The reservation is read before the script runs: a number handed out after this
            // read is drawn from a counter seeded on this server, so the script sees it valid.
            let start = seed().await?.max(self.reservation(key).await?);
            let seeding = format!("{:016x}", rand::random::<u64>());
            let seeded: i64 = self
                .scripts
                .seed
                .key(key)
                .arg(start)
                .arg(seeding)
                .invoke_async(&mut redis)
                .await
                .map_err(unavailable)?;
            if seeded == 1 {
                tracing::info!(key, start, "counter seeded from the store and its durable reservation");
                crate::metrics::record_counter_seed("redis");
            }
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

    async fn issued(&self, key: &str, seed: Seed<'_>) -> BackendResult<Issued> {
        let mut redis = self.redis.clone();
        for _ in 0..4 {
            let issued: Option<(i64, i64)> =
                self.scripts.issued.key(key).invoke_async(&mut redis).await.map_err(unavailable)?;
            match issued {
                Some((last, floor)) => return Ok(Issued { floor, last }),
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

    async fn finish_touched(&self, set: &str, members: &[String]) -> BackendResult<()> {
        let mut redis = self.redis.clone();
        for chunk in members.chunks(1_000) {
            redis::cmd("SREM")
                .arg(format!("{set}:in-flush"))
                .arg(chunk)
                .query_async::<i64>(&mut redis)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn generation(&self) -> BackendResult<String> {
        let mut redis = self.redis.clone();
        let marker = format!("{:016x}", rand::random::<u64>());
        self.scripts
            .generation
            .key(&self.generation_key)
            .arg(marker)
            .invoke_async(&mut redis)
            .await
            .map_err(unavailable)
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
