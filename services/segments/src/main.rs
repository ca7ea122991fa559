//! `segments`: the segments service on its own, and the commands that mint and revoke API keys.

use clap::Subcommand;
use segments::auth::{Permission, Permissions};
use serde::Serialize;
use shared::config::Cli;

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
#[derive(Debug, clap::Args, Serialize)]
#[command(name = "segments", version)]
#[command(mut_arg("listen", |arg| arg.help("Address to listen on [default: 127.0.0.1:8083]")))]
#[command(mut_arg("namespace", |arg| arg.hide(true)), mut_arg("redis_url", |arg| arg.hide(true)))]
#[command(mut_arg("amqp_url", |arg| arg.hide(true)), mut_arg("elasticsearch_url", |arg| arg.hide(true)))]
struct Flags {
    /// Largest request body accepted, in bytes (DMN models can be large) [default: 1048576]
    #[arg(long, env = "CHATMESH_MAX_BODY_BYTES", global = true)]
    max_body_bytes: Option<usize>,
    /// Seconds between sweeps that write expired memberships to the history [default: 60]
    #[arg(long, env = "CHATMESH_SWEEP_INTERVAL_SECS", global = true)]
    sweep_interval_secs: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    settings: segments::SettingsArgs,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, config) = Cli::<Flags, Command>::start(Command::Serve)?;
    match command {
        Command::Serve => serve(&config).await,
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
            let db = segments::open_database(&config.serve.backends).await?;
            db.migrate("segments", segments::store::MIGRATIONS).await?;
            let key = segments::auth::mint_key(&db, &name, permissions).await?;
            eprintln!("minted key {} with {}; it is shown once, store it now:", key.id, key.permissions.to_csv());
            println!("{}", key.token);
            Ok(())
        }
        Command::RevokeKey { key } => {
            let db = segments::open_database(&config.serve.backends).await?;
            db.migrate("segments", segments::store::MIGRATIONS).await?;
            if !segments::auth::revoke_key(&db, &key).await? {
                anyhow::bail!("no key to revoke: no unrevoked key has this id or value");
            }
            eprintln!("revoked; every replica refuses the key within a second");
            Ok(())
        }
    }
}

async fn serve(config: &segments::Config) -> anyhow::Result<()> {
    shared::http::bind_and_run("segments", &config.serve.listen, |listener, shutdown| {
        segments::run(config, listener, shutdown)
    })
    .await
}
