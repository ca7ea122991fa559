//! Evaluation: which segments a user is in, and why.
//!
//! The live segments are held as a compiled [`Snapshot`], labelled with the store's revision
//! counter, which every segment write bumps in its transaction; the snapshot is reloaded when
//! the counter moves. Compiled rules are cached by `(segment id, version)`, so a reload
//! recompiles only the segments that changed; a DMN model is compiled once per segment version.
//!
//! [`StoreReads`] keeps what evaluations read from the store: the revision, the membership
//! generation (bumped by every membership change) and the explicit memberships of recent
//! users. Read in one round trip, they stay current for [`STORE_READ_INTERVAL`] unless this
//! process writes: a change made through this process applies at its next evaluation, one made
//! through another process on the same store within that interval plus one read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use shared::backends::sql::Database;

use crate::percent;
use crate::rules::{self, CompiledRule, Context, Input, RuleType};
use crate::store;

/// A live segment, compiled.
#[derive(Debug)]
pub struct LiveSegment {
    pub id: i64,
    pub uuid: String,
    pub key: String,
    pub name: String,
    pub version: i64,
    pub rule_type: RuleType,
    /// `None`: no rule, or a stored rule this build cannot compile (logged when loaded).
    pub rule: Option<Arc<CompiledRule>>,
    pub percent: Option<u8>,
    /// The API's rendering of what its answers show of this segment whatever the user, made
    /// at first use and kept with the snapshot.
    pub rendered: std::sync::OnceLock<Box<str>>,
}

/// Every live segment at one revision of the store.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub segments: Vec<LiveSegment>,
}

/// Why a user is in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Added through `POST /segments/users`; `expires_at` in epoch milliseconds.
    Explicit { expires_at: Option<i64> },
    /// The segment's rule matched the user's attributes.
    Rule { rule_type: RuleType },
    /// The user's bucket falls in the segment's percentage.
    Percentage { percent: u8, bucket: u32 },
}

impl Snapshot {
    /// The segments `user_id` is in, as indices into `segments` in segment order, each with the
    /// first reason that holds: explicit membership, then the rule, then the percentage.
    /// `explicit` maps segment ids to the expiry of the user's active memberships.
    pub fn evaluate(
        &self,
        user_id: &str,
        attributes: &Map<String, Value>,
        explicit: &HashMap<i64, Option<i64>>,
    ) -> Vec<(usize, Reason)> {
        let input = Input::new(Context { user_id, attributes });
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(index, segment)| segment.reason(&input, explicit).map(|reason| (index, reason)))
            .collect()
    }
}

impl LiveSegment {
    fn reason(&self, input: &Input<'_>, explicit: &HashMap<i64, Option<i64>>) -> Option<Reason> {
        if let Some(expires_at) = explicit.get(&self.id) {
            return Some(Reason::Explicit { expires_at: *expires_at });
        }
        if let Some(rule) = &self.rule
            && rule.matches(input)
        {
            return Some(Reason::Rule { rule_type: rule.rule_type() });
        }
        let percent = self.percent?;
        let bucket = percent::bucket(&self.key, input.context.user_id);
        (percent > 0 && bucket <= u32::from(percent)).then_some(Reason::Percentage { percent, bucket })
    }
}

/// Compiled rules by `(segment id, version)`; `None` for a segment without a usable rule.
type CompiledCache = HashMap<(i64, i64), Option<Arc<CompiledRule>>>;

/// The compiled snapshot and the cache it is built from.
#[derive(Default)]
pub struct Engine {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Single-flights reloads: one caller reloads, the others wait and reuse its snapshot.
    reload: tokio::sync::Mutex<()>,
    compiled: Mutex<CompiledCache>,
    compilations: AtomicU64,
}

impl Engine {
    /// The snapshot of the current revision of the store.
    pub async fn snapshot(&self, db: &Database) -> Result<Arc<Snapshot>, sqlx::Error> {
        let revision = store::revision(db).await?;
        self.snapshot_at(db, revision).await
    }

    /// The snapshot of `revision`, just read from the store.
    pub async fn snapshot_at(&self, db: &Database, revision: i64) -> Result<Arc<Snapshot>, sqlx::Error> {
        if let Some(current) = self.current().filter(|s| s.revision == revision) {
            return Ok(current);
        }
        let _single_flight = self.reload.lock().await;
        if let Some(current) = self.current().filter(|s| s.revision >= revision) {
            return Ok(current);
        }
        // The revision is read before the rows, so the rows are at least that recent: a
        // snapshot may be labelled older than it is (and reloaded once more), never newer.
        let rows = store::live_segments(db).await?;
        let snapshot = Arc::new(self.compile(revision, rows));
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many rules were compiled since start (each segment version at most once).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    fn compile(&self, revision: i64, rows: Vec<store::LiveSegmentRow>) -> Snapshot {
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        let mut segments = Vec::with_capacity(rows.len());
        for store::LiveSegmentRow { segment: row, decision_xml } in rows {
            let rule_type = RuleType::parse(&row.rule_type).unwrap_or(RuleType::Simple);
            let rule = cache
                .entry((row.id, row.version))
                .or_insert_with(|| {
                    self.compilations.fetch_add(1, Ordering::Relaxed);
                    match rules::compile(rule_type, row.rule_content.as_deref(), decision_xml.as_deref()) {
                        Ok(rule) => rule.map(Arc::new),
                        Err(reason) => {
                            tracing::warn!(segment = %row.key, version = row.version, %reason, "stored rule does not compile; it matches nobody");
                            None
                        }
                    }
                })
                .clone();
            segments.push(LiveSegment {
                id: row.id,
                uuid: row.uuid,
                key: row.key,
                name: row.name,
                version: row.version,
                rule_type,
                rule,
                percent: row.percent.and_then(|p| u8::try_from(p).ok()),
                rendered: std::sync::OnceLock::new(),
            });
        }
        let live: std::collections::HashSet<(i64, i64)> = segments.iter().map(|s| (s.id, s.version)).collect();
        cache.retain(|key, _| live.contains(key));
        Snapshot { revision, segments }
    }
}

/// How long what an evaluation read from the store stays current when this process has not
/// written since: the most a change made through another process waits to be used.
pub const STORE_READ_INTERVAL: Duration = Duration::from_millis(100);

/// Users whose memberships are kept; past it the kept ones are dropped and read again.
const KEPT_USERS: usize = 100_000;

/// An explicit membership: `(segment id, expires_at)`, expired ones included.
pub type Membership = (i64, Option<i64>);

/// The store's revision and membership generation as last read, with the memberships read at
/// that generation, by user.
#[derive(Default)]
pub struct StoreReads {
    versions: Mutex<Versions>,
    /// Writes this process committed; bumped after each commit.
    writes: AtomicU64,
}

#[derive(Default)]
struct Versions {
    read_at: Option<Instant>,
    /// [`StoreReads::writes`] when the read began: a write committed since makes it stale.
    writes: u64,
    revision: i64,
    generation: i64,
    users: HashMap<String, Arc<[Membership]>>,
}

/// What [`StoreReads::current`] knows without the store.
pub enum Current {
    /// The versions read are current; the user's memberships are known, or must be read (and
    /// then [`StoreReads::keep`] at `generation`).
    Fresh { revision: i64, generation: i64, memberships: Option<Arc<[Membership]>> },
    /// Read the versions and memberships again, then [`StoreReads::read`] with `writes`.
    Stale { writes: u64 },
}

impl StoreReads {
    /// Says a write of this process committed: the next evaluation reads the store again.
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    pub fn current(&self, user_id: &str) -> Current {
        let writes = self.writes.load(Ordering::SeqCst);
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        match versions.read_at {
            Some(read_at) if versions.writes == writes && read_at.elapsed() < STORE_READ_INTERVAL => Current::Fresh {
                revision: versions.revision,
                generation: versions.generation,
                memberships: versions.users.get(user_id).cloned(),
            },
            _ => Current::Stale { writes },
        }
    }

    /// Records versions and one user's memberships read after [`Current::Stale`] said `writes`.
    pub fn read(&self, writes: u64, revision: i64, generation: i64, user_id: &str, memberships: Arc<[Membership]>) {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        // Memberships are kept per generation and revision: a deleted segment takes its
        // memberships with it, and a revision is bumped by every segment write.
        if versions.generation != generation || versions.revision != revision || versions.read_at.is_none() {
            versions.users.clear();
        }
        // A read that began before another finished may be older than it: keep the newer.
        if versions.read_at.is_none() || writes >= versions.writes {
            versions.read_at = Some(Instant::now());
            versions.writes = writes;
            versions.revision = revision;
            versions.generation = generation;
        }
        if (versions.generation, versions.revision) == (generation, revision) {
            Self::insert(&mut versions, user_id, memberships);
        }
    }

    /// Keeps a user's memberships read while the versions were current at `revision` and
    /// `generation`.
    pub fn keep(&self, revision: i64, generation: i64, user_id: &str, memberships: Arc<[Membership]>) {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if (versions.generation, versions.revision) == (generation, revision) {
            Self::insert(&mut versions, user_id, memberships);
        }
    }

    fn insert(versions: &mut Versions, user_id: &str, memberships: Arc<[Membership]>) {
        if versions.users.len() >= KEPT_USERS {
            versions.users.clear();
        }
        versions.users.insert(user_id.to_owned(), memberships);
    }
}
