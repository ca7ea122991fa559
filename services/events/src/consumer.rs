//! The consumer: validates the events the API queued and stores each one, or an error record
//! with its raw payload and every reason.
//!
//! One step takes a batch of queue messages, validates their events (the stateless rules of
//! [`validate::check`], then whether each session exists), and writes events and error records
//! in one transaction per few thousand events; only after the commit does it ack. A crash at
//! any point means redelivery, and redelivery is harmless: events and errors are keyed by the
//! id the API answered with, and inserts skip ids already stored. A store that is down is not
//! the messages' fault: they are held and retried by the next step. A message that cannot be
//! decoded, or whose rows the store refuses, goes to the dead-letter queue.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use shared::backends::queue::{Delivery, Subscription};
use shared::backends::sql::Dialect;
use shared::backends::{BackendError, BackendResult};
use shared::shutdown::Shutdown;

use crate::Events;
use crate::ingest::QueuedEvents;
use crate::model::{Reason, ValidEvent};
use crate::store::{self, NewError, NewEvent};
use crate::validate::{self, Payload, session_id_of};

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Most queue messages taken per step.
    pub batch_size: usize,
    /// Events written per transaction (a message is never split).
    pub events_per_commit: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self { batch_size: 128, events_per_commit: 4_000 }
    }
}

/// What one step (or a drain) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Queue messages settled.
    pub messages: usize,
    /// Events stored (not counting ones already stored).
    pub stored: u64,
    /// Error records written.
    pub rejected: u64,
    pub dead_lettered: usize,
}

impl StepReport {
    fn add(&mut self, other: &StepReport) {
        self.messages += other.messages;
        self.stored += other.stored;
        self.rejected += other.rejected;
        self.dead_lettered += other.dead_lettered;
    }
}

pub struct Consumer {
    state: Events,
    subscription: Box<dyn Subscription>,
    config: ConsumerConfig,
    /// Deliveries taken but not settled because the store failed: the next step retries them.
    held: Vec<Delivery>,
}

impl Consumer {
    pub async fn new(state: Events, config: ConsumerConfig) -> BackendResult<Self> {
        let subscription = state.queue.subscribe(state.queue_name()).await?;
        Ok(Self { state, subscription, config, held: Vec::new() })
    }

    /// Runs steps until `shutdown`, finishing the batch in hand.
    pub async fn run(mut self, shutdown: Shutdown) {
        tracing::info!(queue = %self.state.queue_name(), "events consumer started");
        let mut failures = 0u32;
        while !shutdown.is_triggered() {
            match self.step(Duration::from_millis(500)).await {
                Ok(_) => failures = 0,
                Err(error) => {
                    failures += 1;
                    let pause =
                        Duration::from_millis(100).saturating_mul(1 << failures.min(8)).min(Duration::from_secs(10));
                    tracing::warn!(%error, ?pause, "events consumer step failed, pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.clone().wait() => {}
                    }
                }
            }
        }
        tracing::info!("events consumer stopped");
    }

    /// Processes every message queued now, then returns (startup, tests).
    pub async fn drain(&mut self) -> BackendResult<StepReport> {
        let mut total = StepReport::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let report = self.step(Duration::from_millis(50)).await?;
            total.add(&report);
            if report.messages + report.dead_lettered == 0 && self.held.is_empty() {
                // Empty-handed: done, unless messages are still in flight elsewhere (another
                // subscription holds them) or not yet visible to this one.
                if self.state.queue.depth(self.state.queue_name()).await? == 0 || Instant::now() >= deadline {
                    return Ok(total);
                }
            }
        }
    }

    /// Takes one batch (waiting up to `wait` for it) and settles every message in it.
    pub async fn step(&mut self, wait: Duration) -> BackendResult<StepReport> {
        let deliveries = if self.held.is_empty() {
            self.subscription.next_batch(self.config.batch_size, wait).await?
        } else {
            std::mem::take(&mut self.held)
        };
        if deliveries.is_empty() {
            return Ok(StepReport::default());
        }
        if let Err(error) = self.state.schemas.refresh_if_stale(&self.state.db).await {
            self.held = deliveries;
            return Err(error);
        }
        let mut report = StepReport::default();
        let mut settled: HashSet<u64> = HashSet::with_capacity(deliveries.len());
        let outcome = self.settle(&deliveries, &mut settled, &mut report).await;
        if outcome.is_err() {
            self.held = deliveries.into_iter().filter(|d| !settled.contains(&d.id)).collect();
        }
        outcome.map(|()| report)
    }

    async fn settle(
        &mut self,
        deliveries: &[Delivery],
        settled: &mut HashSet<u64>,
        report: &mut StepReport,
    ) -> BackendResult<()> {
        let mut group: Vec<(u64, QueuedEvents<'_>)> = Vec::new();
        let mut group_events = 0;
        for delivery in deliveries {
            match QueuedEvents::decode(&delivery.payload) {
                Ok(events) => {
                    group_events += events.items.len();
                    group.push((delivery.id, events));
                }
                Err(error) => {
                    tracing::error!(%error, delivery = delivery.id, "undecodable events message, dead-lettering");
                    self.subscription.dead_letter(delivery.id, &format!("undecodable events message: {error}")).await?;
                    settled.insert(delivery.id);
                    report.dead_lettered += 1;
                }
            }
            if group_events >= self.config.events_per_commit {
                self.persist_group(&group, settled, report).await?;
                group.clear();
                group_events = 0;
            }
        }
        if !group.is_empty() {
            self.persist_group(&group, settled, report).await?;
        }
        Ok(())
    }

    /// Writes one group in one transaction and acks it. When the store refuses the rows (not
    /// merely fails), each message is tried alone and the ones it still refuses are
    /// dead-lettered, so one bad message never holds up the rest.
    async fn persist_group(
        &mut self,
        group: &[(u64, QueuedEvents<'_>)],
        settled: &mut HashSet<u64>,
        report: &mut StepReport,
    ) -> BackendResult<()> {
        let ids: Vec<u64> = group.iter().map(|(id, _)| *id).collect();
        match persist(&self.state, group).await {
            Ok((stored, rejected)) => {
                // Ack only now: the rows are committed.
                self.subscription.ack(&ids).await?;
                settled.extend(&ids);
                report.messages += ids.len();
                report.stored += stored;
                report.rejected += rejected;
                Ok(())
            }
            Err(error) if is_data_error(self.state.db.dialect(), &error) => {
                tracing::warn!(%error, "the store refused a batch of events, writing message by message");
                for one in group.chunks(1) {
                    let id = one[0].0;
                    match persist(&self.state, one).await {
                        Ok((stored, rejected)) => {
                            self.subscription.ack(&[id]).await?;
                            report.messages += 1;
                            report.stored += stored;
                            report.rejected += rejected;
                        }
                        Err(error) if is_data_error(self.state.db.dialect(), &error) => {
                            tracing::error!(%error, delivery = id, "the store refuses this events message, dead-lettering");
                            self.subscription.dead_letter(id, &format!("refused by the store: {error}")).await?;
                            report.dead_lettered += 1;
                        }
                        Err(error) => return Err(error),
                    }
                    settled.insert(id);
                }
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// One queued event on its way to the store, as an event or as an error record.
struct Candidate<'a> {
    id: &'a str,
    payload: &'a str,
    /// The session the payload names, when it names one the rules did not already refuse.
    session_id: Option<String>,
    outcome: Result<ValidEvent, Vec<Reason>>,
    received_at: i64,
}

/// Validates and writes the events of `group`; returns (events stored, error records written).
async fn persist(state: &Events, group: &[(u64, QueuedEvents<'_>)]) -> BackendResult<(u64, u64)> {
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for (_, events) in group {
        let rules = state.rules(events.received_at);
        for item in &events.items {
            let payload = item.payload.get();
            let (session_id, outcome) = match Payload::parse(payload) {
                Err(error) => (None, Err(vec![Reason::new("invalid_json", "", format!("malformed JSON: {error}"))])),
                Ok(parsed) => {
                    let session_id = session_id_of(parsed.value()).map(Cow::into_owned);
                    match &item.rejected {
                        Some(reasons) => (session_id, Err(reasons.clone())),
                        None => (session_id, validate::check(parsed, &rules)),
                    }
                }
            };
            // A session the rules refused (blank, too long) is not looked up.
            let session_id = session_id.filter(|_| match &outcome {
                Ok(_) => true,
                Err(reasons) => !reasons.iter().any(|r| r.pointer.starts_with("/session")),
            });
            candidates.push(Candidate { id: &item.id, payload, session_id, outcome, received_at: events.received_at });
        }
    }

    // Whether each session exists: every reason is reported, so invalid events are asked about too.
    let mut unknown: Vec<&str> =
        candidates.iter().filter_map(|c| c.session_id.as_deref()).filter(|id| !state.sessions.contains(id)).collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        let mut conn = state.db.pool().acquire().await?;
        let found = store::existing_sessions(&mut conn, &unknown).await?;
        state.sessions.extend(found);
    }
    for candidate in &mut candidates {
        let Some(session_id) = &candidate.session_id else { continue };
        if state.sessions.contains(session_id) {
            continue;
        }
        let reason = validate::session_unknown(session_id);
        match &mut candidate.outcome {
            Ok(_) => candidate.outcome = Err(vec![reason]),
            Err(reasons) => reasons.push(reason),
        }
    }

    let mut new_events = Vec::with_capacity(candidates.len());
    let mut new_errors = Vec::new();
    for candidate in &candidates {
        match &candidate.outcome {
            Ok(event) => new_events.push(NewEvent { id: candidate.id, event, received_at: candidate.received_at }),
            Err(reasons) => new_errors.push(NewError {
                id: candidate.id,
                session_id: candidate.session_id.as_deref(),
                payload: candidate.payload,
                reasons,
                received_at: candidate.received_at,
            }),
        }
    }
    let insert_ignore = state.db.insert_ignore();
    let mut tx = store::begin_write(&state.db, &state.write_gate).await?;
    let stored = store::insert_events(tx.conn(), insert_ignore, &new_events).await?;
    let rejected = store::insert_errors(tx.conn(), insert_ignore, &new_errors, state.clock.now_millis()).await?;
    tx.commit().await?;
    Ok((stored, rejected))
}

/// A store error caused by the rows (a constraint, a value the column refuses) rather than the
/// store being unreachable or busy: writing the same rows again will not help.
fn is_data_error(dialect: Dialect, error: &BackendError) -> bool {
    let BackendError::Sql(sqlx::Error::Database(error)) = error else {
        return false;
    };
    let Some(code) = error.code() else {
        return false;
    };
    match dialect {
        // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation).
        Dialect::MySql => code.starts_with("22") || code.starts_with("23"),
        // SQLITE_TOOBIG, SQLITE_CONSTRAINT (and its extended codes), SQLITE_MISMATCH.
        Dialect::Sqlite => code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 18..=20)),
    }
}
