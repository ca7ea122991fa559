//! `segments`: the segments service on its own, and the commands that mint and revoke API keys.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use segments::auth::{Permission, Permissions};

/// mimalloc instead of the system allocator: every request allocates (headers, JSON, futures),
/// and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// segments: user segments for feature targeting. Serves segmentify's legacy routes
/// (/segments, memberships with TTL, CSV history) and the /api/v1 JSON:API (SIMPLE and DMN
/// rules, flags, evaluation).
///
/// Every route takes a bearer token: the admin token from CHATMESH_ADMIN_TOKEN (every
/// permission), or a key minted with `segments mint-key` (revoked with `segments revoke-key`,
/// refused by every replica within a second). The legacy routes can be opened without one with
/// --open-legacy-routes. The store is MySQL / MariaDB with DATABASE_URL, else SQLite
/// (chatmesh.db, the standalone server's file) under the data dir.
#[derive(Debug, Parser)]
#[command(name = "segments", version)]
struct Cli {
    /// TOML file with any of the settings (listen, max_body_bytes, sweep_interval_secs, data_dir, database_url, ...)
    #[arg(long, env = "CHATMESH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8083]
    #[arg(long, env = "CHATMESH_LISTEN", global = true)]
    listen: Option<String>,
    /// Directory of the embedded SQLite store, when DATABASE_URL is unset [default: ./data]
    #[arg(long, env = "CHATMESH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// MySQL / MariaDB URL (mysql://user:pass@host/db); unset: SQLite under the data dir
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// The admin token, every permission (prefer the environment: arguments show in `ps`)
    /// [default: unset, only minted keys are accepted]
    #[arg(long, env = "CHATMESH_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    /// Serve the legacy routes (/segments, /history) without a credential, for deployments
    /// where only trusted internal callers reach the service [default: false, they need a
    /// bearer token as /api/v1 does]
    #[arg(long, env = "CHATMESH_SEGMENTS_OPEN_LEGACY", num_args = 0..=1, default_missing_value = "true")]
    open_legacy_routes: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default)
    Serve,
    /// Mint an /api/v1 key with the chosen permissions; prints the key once (only its hash is stored)
    MintKey {
        /// What the key is for, kept beside its hash
        #[arg(long, default_value = "api key")]
        name: String,
        /// A permission to grant, repeatable or comma-separated: SEGMENTS_CREATE, SEGMENTS_READ,
        /// SEGMENTS_UPDATE, SEGMENTS_DELETE, FLAGS_READ, FLAGS_WRITE
        #[arg(long = "permission", value_delimiter = ',', required_unless_present = "all")]
        permissions: Vec<String>,
        /// Grant every permission
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key minted with mint-key, by its id (as mint-key printed it) or the key itself;
    /// every replica refuses it within a second
    RevokeKey {
        /// The key's id, or the key
        key: String,
    },
}

impl Cli {
    fn config(&self) -> anyhow::Result<segments::Config> {
        let mut config: segments::Config = shared::config::load(self.config.as_deref())?;
        shared::config::Overrides {
            listen: self.listen.as_ref(),
            data_dir: self.data_dir.as_ref(),
            database_url: self.database_url.as_ref(),
            ..Default::default()
        }
        .apply(&mut config.listen, &mut config.backends);
        if let Some(token) = &self.admin_token {
            config.settings.admin_token = Some(token.clone());
        }
        if let Some(open) = self.open_legacy_routes {
            config.settings.segments_open_legacy = open;
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init();
    let config = cli.config()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let (trigger, shutdown) = shared::shutdown::channel();
            trigger.trigger_on_signal();
            let listener = tokio::net::TcpListener::bind(&config.listen).await?;
            println!("segments listening on http://{}", listener.local_addr()?);
            segments::run(&config, listener, shutdown).await
        }
        Command::MintKey { name, permissions, all } => {
            let permissions = if all {
                Permissions::all()
            } else {
                let parsed: Vec<Permission> = permissions
                    .iter()
                    .map(|text| Permission::parse(text).ok_or_else(|| anyhow::anyhow!("unknown permission {text:?}")))
                    .collect::<anyhow::Result<_>>()?;
                Permissions::from_list(&parsed)
            };
            let db = segments::open_database(&config.backends).await?;
            db.migrate("segments", segments::store::MIGRATIONS).await?;
            let key = segments::auth::mint_key(&db, &name, permissions).await?;
            eprintln!("minted key {} with {}; it is shown once, store it now:", key.id, key.permissions.to_csv());
            println!("{}", key.token);
            Ok(())
        }
        Command::RevokeKey { key } => {
            let db = segments::open_database(&config.backends).await?;
            db.migrate("segments", segments::store::MIGRATIONS).await?;
            if !segments::auth::revoke_key(&db, &key).await? {
                anyhow::bail!("no key to revoke: no unrevoked key has this id or value");
            }
            eprintln!("revoked; every replica refuses the key within a second");
            Ok(())
        }
    }
}
