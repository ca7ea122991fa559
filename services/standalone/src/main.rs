//! `chatmesh`: the whole chat API (and every later service) in one process.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

/// mimalloc instead of the system allocator: every request allocates (headers, JSON, futures),
/// and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// chatmesh: the backend for in-app chat, every service in one process.
///
/// Without backend URLs everything is embedded under the data dir (SQLite, an in-process
/// queue and counters, a tantivy index): nothing needs installing. Settings come from the
/// defaults, then `--config FILE`, then the environment, then these flags.
///
/// CHATMESH_ADMIN_TOKEN is the operator's bearer token: it lists every application
/// (GET /api/applications) and holds every segments permission. Unset, those calls answer 401.
#[derive(Debug, Parser)]
#[command(name = "chatmesh", version)]
struct Cli {
    /// TOML file with any of the settings below (keys: listen, data_dir, count_flush_schedule,
    /// max_body_bytes, namespace, database_url, ...)
    #[arg(long, env = "CHATMESH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "CHATMESH_LISTEN", global = true)]
    listen: Option<String>,
    /// Directory for the embedded store, queue and search index [default: ./data]
    #[arg(long, env = "CHATMESH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Six-field cron (seconds first) of the count flush [default: "0 * * * * *", every minute]
    #[arg(long, env = "CHATMESH_COUNT_FLUSH_SCHEDULE", global = true)]
    count_flush_schedule: Option<String>,
    /// Serve the segments legacy routes (/segments, /history) without a credential, for
    /// deployments where only trusted internal callers reach the server [default: false, they
    /// need a bearer token as /api/v1 does]
    #[arg(long, env = "CHATMESH_SEGMENTS_OPEN_LEGACY", num_args = 0..=1, default_missing_value = "true")]
    open_legacy_routes: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default)
    Serve,
}

impl Cli {
    fn config(&self) -> anyhow::Result<chatmesh::Config> {
        let mut config: chatmesh::Config = shared::config::load(self.config.as_deref())?;
        shared::config::Overrides {
            listen: self.listen.as_ref(),
            data_dir: self.data_dir.as_ref(),
            ..Default::default()
        }
        .apply(&mut config.listen, &mut config.backends);
        if let Some(schedule) = &self.count_flush_schedule {
            config.count_flush_schedule.clone_from(schedule);
        }
        if let Some(open) = self.open_legacy_routes {
            config.segments.segments_open_legacy = open;
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
        Command::Serve => serve(config).await,
    }
}

async fn serve(config: chatmesh::Config) -> anyhow::Result<()> {
    let (trigger, shutdown) = shared::shutdown::channel();
    trigger.clone().trigger_on_signal();
    let server = chatmesh::start(&config).await?;
    let listener = TcpListener::bind(&config.listen).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %config.backends.data_dir.display(), "chatmesh listening");
    println!("chatmesh listening on http://{address}");
    server.serve(listener, shutdown).await?;
    tracing::info!("chatmesh stopped");
    Ok(())
}
