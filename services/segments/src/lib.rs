//! segments: user segments for feature targeting. One store of segments behind two route
//! families: segmentify's legacy routes (slugs, memberships with TTL, CSV history, percentage
//! assignment) and the `/api/v1` JSON:API (SIMPLE and DMN rules, flags, evaluation).
//!
//! # Layout
//! - [`store`]: the tables (SQLite and MySQL migrations) and every statement.
//! - [`rules`]: SIMPLE rules ([`rules::simple`]) and DMN models ([`rules::dmn`], behind the
//!   `dmn` feature), parsed and checked at write time, compiled for evaluation.
//! - [`percent`]: murmur3 buckets for percentage segments, as Unleash computes them.
//! - [`engine`]: the compiled snapshot of live segments, reloaded when the store's revision
//!   moves, and the evaluation that says which segments a user is in and why.
//! - [`auth`]: permissions, the admin token, minted API keys (stored hashed, revocable) and
//!   the signed history links.
//! - [`api`]: the routes: [`api::legacy`] (seed 000) and the v1 resources (seed 002).
//! - [`openapi`]: their OpenAPI 3.1 document, served at `/openapi.json` with docs at `/docs`.
//! - [`Segments`]: the state every route shares, with an injectable [`Clock`] so TTL tests
//!   move time instead of sleeping.

pub mod api;
pub mod auth;
pub mod engine;
pub mod openapi;
pub mod percent;
pub mod rules;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::backends::sql::{Database, Dialect};
use shared::config::BackendConfig;
use shared::shutdown::Shutdown;
use tokio::net::TcpListener;

pub use api::router;
pub use engine::{Reason, Snapshot};

/// Milliseconds since the Unix epoch, as the service sees them. Tests pass a clock they move.
pub type Clock = Arc<dyn shared::clock::Clock>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(shared::clock::SystemClock)
}

/// The service's own settings, flattened into its config and into the standalone server's.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Bootstrap bearer token holding every permission (env `CHATMESH_ADMIN_TOKEN`).
    /// Unset: only keys minted with `segments mint-key` are accepted.
    pub admin_token: Option<String>,
    /// Serve the legacy routes (seed 000) without a credential (env
    /// `CHATMESH_SEGMENTS_OPEN_LEGACY`), for deployments where only trusted internal callers
    /// reach the service. Off: they need a bearer token as `/api/v1` does.
    pub segments_open_legacy: bool,
}

/// The flags of [`Settings`], each also read from its environment variable, for the segments
/// binary and the standalone server; one not given keeps the file's value or the default.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct SettingsArgs {
    /// The admin token, every permission (prefer the environment: arguments show in `ps`)
    /// [default: unset, only minted keys are accepted]
    #[arg(long, env = "CHATMESH_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
    /// Serve the legacy routes (/segments, /history) without a credential, for deployments
    /// where only trusted internal callers reach the service [default: false, they need a
    /// bearer token as /api/v1 does]
    #[arg(long, env = "CHATMESH_SEGMENTS_OPEN_LEGACY", num_args = 0..=1, default_missing_value = "true")]
    #[serde(rename = "segments_open_legacy")]
    pub open_legacy_routes: Option<bool>,
}

/// The state every route shares.
#[derive(Clone)]
pub struct Segments(Arc<Inner>);

struct Inner {
    db: Database,
    clock: Clock,
    admin: shared::auth::AdminToken,
    open_legacy: bool,
    link_key: auth::LinkKey,
    engine: engine::Engine,
    reads: engine::StoreReads,
    keys: auth::KeyCache,
}

/// The segments a user is in at one revision of the store: indices into the snapshot's
/// segments, each with its reason.
pub struct Evaluation {
    pub snapshot: Arc<Snapshot>,
    pub matches: Vec<(usize, Reason)>,
}

impl Evaluation {
    pub fn memberships(&self) -> impl Iterator<Item = (&engine::LiveSegment, Reason)> {
        self.matches.iter().map(|(index, reason)| (&self.snapshot.segments[*index], *reason))
    }
}

impl Segments {
    /// Creates or upgrades the segments tables and returns the state, on the wall clock.
    pub async fn new(db: Database, settings: &Settings) -> anyhow::Result<Self> {
        Self::with_clock(db, settings, system_clock()).await
    }

    /// Same as [`Segments::new`] with the clock given.
    pub async fn with_clock(db: Database, settings: &Settings, clock: Clock) -> anyhow::Result<Self> {
        db.migrate("segments", store::MIGRATIONS).await?;
        let admin = shared::auth::AdminToken::new(settings.admin_token.as_deref());
        if !admin.is_configured() {
            tracing::warn!(
                "no admin token configured (CHATMESH_ADMIN_TOKEN): the segments routes accept only API keys \
                 minted with `segments mint-key`, and answer 401 to everyone until one is"
            );
        }
        if settings.segments_open_legacy {
            tracing::warn!(
                "the legacy segments routes (/segments, /history) are open without a credential \
                 (CHATMESH_SEGMENTS_OPEN_LEGACY): only trusted callers must reach this service"
            );
        }
        let link_key = auth::LinkKey::load(&db).await?;
        Ok(Self(Arc::new(Inner {
            db,
            clock,
            admin,
            open_legacy: settings.segments_open_legacy,
            link_key,
            engine: engine::Engine::default(),
            reads: engine::StoreReads::default(),
            keys: auth::KeyCache::default(),
        })))
    }

    pub fn db(&self) -> &Database {
        &self.0.db
    }

    pub fn dialect(&self) -> Dialect {
        self.0.db.dialect()
    }

    /// Now, in epoch milliseconds, on the service's clock.
    pub fn now(&self) -> i64 {
        self.0.clock.now_millis()
    }

    pub fn engine(&self) -> &engine::Engine {
        &self.0.engine
    }

    pub(crate) fn admin(&self) -> &shared::auth::AdminToken {
        &self.0.admin
    }

    /// Whether the legacy routes take requests without a credential.
    pub fn legacy_routes_open(&self) -> bool {
        self.0.open_legacy
    }

    pub(crate) fn link_key(&self) -> &auth::LinkKey {
        &self.0.link_key
    }

    pub(crate) fn key_cache(&self) -> &auth::KeyCache {
        &self.0.keys
    }

    /// The compiled snapshot of the live segments at the store's current revision.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, sqlx::Error> {
        self.0.engine.snapshot(&self.0.db).await
    }

    /// The segments `user_id` is in, given `attributes`, each with its reason. What it reads
    /// from the store (at most one query) stays current for [`engine::STORE_READ_INTERVAL`]
    /// unless this process writes: see [`engine::StoreReads`].
    pub async fn evaluate(&self, user_id: &str, attributes: &Map<String, Value>) -> Result<Evaluation, sqlx::Error> {
        let reads = &self.0.reads;
        let (revision, memberships) = match reads.current(user_id) {
            engine::Current::Fresh { revision, memberships: Some(memberships), .. } => (revision, memberships),
            engine::Current::Fresh { revision, generation, memberships: None } => {
                let mut conn = self.0.db.pool().acquire().await?;
                let memberships: Arc<[engine::Membership]> = store::memberships(&mut conn, user_id).await?.into();
                reads.keep(revision, generation, user_id, memberships.clone());
                (revision, memberships)
            }
            engine::Current::Stale { writes } => {
                let mut conn = self.0.db.pool().acquire().await?;
                let (revision, generation, memberships) = store::versions_and_memberships(&mut conn, user_id).await?;
                let memberships: Arc<[engine::Membership]> = memberships.into();
                reads.read(writes, revision, generation, user_id, memberships.clone());
                (revision, memberships)
            }
        };
        let now = self.now();
        let explicit: HashMap<i64, Option<i64>> =
            memberships.iter().filter(|(_, expires_at)| expires_at.is_none_or(|at| at > now)).copied().collect();
        let snapshot = self.0.engine.snapshot_at(&self.0.db, revision).await?;
        let matches = snapshot.evaluate(user_id, attributes, &explicit);
        Ok(Evaluation { snapshot, matches })
    }

    /// Says a write of this process committed, so its next evaluation reads the store again.
    pub(crate) fn wrote(&self) {
        self.0.reads.wrote();
    }

    /// Writes every expired membership to the history and drops it; returns how many. The
    /// active lists never depend on this (they exclude expired rows themselves): it keeps the
    /// table small and the history complete for users nobody asks about.
    pub async fn sweep_expired(&self) -> Result<u64, sqlx::Error> {
        let now = self.now();
        let mut swept = 0;
        loop {
            let users = store::users_with_expired(&self.0.db, now, 500).await?;
            if users.is_empty() {
                return Ok(swept);
            }
            for user in users {
                let mut tx = store::write_tx(&self.0.db).await?;
                swept += store::materialize_expired(&mut tx, &user, now).await?;
                tx.commit().await?;
            }
        }
    }
}

/// A new random (version 4) UUID, the v1 id of segments, flags, decisions and keys.
pub fn new_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// RFC 3339 in UTC to the second, the form both seeds show (`2024-01-15T10:30:00Z`).
pub fn rfc3339_seconds(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The segments service's settings: defaults, then `--config FILE`, then `CHATMESH_*` and
/// `DATABASE_URL`, then flags.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Largest request body accepted, in bytes (DMN models can be large).
    pub max_body_bytes: usize,
    /// Seconds between sweeps that write expired memberships to the history.
    pub sweep_interval_secs: u64,
    #[serde(flatten)]
    pub settings: Settings,
    /// The address, backends and limits.
    #[serde(flatten)]
    pub serve: shared::config::Serve,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            sweep_interval_secs: 60,
            settings: Settings::default(),
            serve: shared::config::Serve::at("127.0.0.1:8083"),
        }
    }
}

/// The store: MySQL / MariaDB at `DATABASE_URL`, else SQLite under the data dir.
///
/// The SQLite file is `chatmesh.db`, the one the standalone `chatmesh` server uses, rather
/// than a file of its own: switching between the standalone server and this binary on one
/// data dir keeps the same segments, and a key minted with `segments mint-key` works for
/// both, just as every service shares one database when `DATABASE_URL` is set.
pub async fn open_database(backends: &BackendConfig) -> anyhow::Result<Database> {
    Ok(match &backends.database_url {
        Some(url) => Database::connect(url).await?,
        None => Database::open_sqlite(&backends.ensure_data_dir()?, "chatmesh.db").await?,
    })
}

/// Every route of the service with `X-Served-By`, health, `/openapi.json` and `/docs`, the JSON
/// fallbacks and the body limit.
pub fn app(state: Segments, max_body_bytes: usize) -> Router {
    let db = state.db().clone();
    let store_check = shared::health::FnCheck::boxed("store", move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
    });
    let routes = Router::new()
        .merge(shared::http::served_by(router(state), "segments"))
        .merge(shared::health::router("segments", vec![store_check]))
        .merge(shared::openapi::router(openapi::document()));
    shared::http::with_fallbacks(routes).layer(DefaultBodyLimit::max(max_body_bytes))
}

/// Connects the store, migrates, and serves on `listener` until `shutdown`, sweeping expired
/// memberships beside it.
pub async fn run(config: &Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let db = open_database(&config.serve.backends).await?;
    let state = Segments::new(db, &config.settings).await?;
    let sweeper = tokio::spawn(sweep_periodically(
        state.clone(),
        Duration::from_secs(config.sweep_interval_secs.max(1)),
        shutdown.clone(),
    ));
    tracing::info!(address = %listener.local_addr()?, "segments listening");
    let app = shared::metrics::instrument(app(state, config.max_body_bytes));
    shared::http::serve_with_limits(listener, app, shutdown, &config.serve.http).await?;
    sweeper.await?;
    Ok(())
}

/// Runs [`Segments::sweep_expired`] every `interval` until `shutdown`.
pub async fn sweep_periodically(state: Segments, interval: Duration, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match state.sweep_expired().await {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(swept, "expired memberships written to the history"),
            Err(error) => tracing::warn!(%error, "membership sweep failed; retrying at the next interval"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(api::is_uuid(&id));
        assert_ne!(id, new_uuid());
    }

    #[test]
    fn timestamps_to_the_second() {
        assert_eq!(rfc3339_seconds(1_705_314_600_123), "2024-01-15T10:30:00Z");
    }
}
