//! Evaluation: which segments a user is in, and why.
//!
//! The live segments are held as a compiled [`Snapshot`]. Each evaluation reads the store's
//! revision counter (one primary-key lookup) and reloads the snapshot when any segment changed,
//! in this process or another one: a PATCH changes the next answer, with no stale window.
//! Compiled rules are cached by `(segment id, version)`, so a reload recompiles only the
//! segments that changed; a DMN model is compiled once per segment version.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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
            });
        }
        let live: std::collections::HashSet<(i64, i64)> = segments.iter().map(|s| (s.id, s.version)).collect();
        cache.retain(|key, _| live.contains(key));
        Snapshot { revision, segments }
    }
}
