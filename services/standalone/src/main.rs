//! `chatmesh`: the whole chat API (and every later service) in one process.
//!
//! It allocates with the system allocator, where the split services use mimalloc: this is the
//! binary a small deployment runs for good, held to a memory ceiling. Indexing a backlog frees
//! as fast as it allocates, and mimalloc 3 keeps freed pages for a second, so the peak RSS of
//! `chatmesh-bench standalone --messages 1000000 --fill-direct` was 193-228 MiB with it and
//! 151 MiB without. A create's server CPU, over what the same request costs the benchmark's
//! client, was alike within run-to-run noise (2.53-2.71 with mimalloc, 2.59-2.70 without).

use clap::Subcommand;
use serde::Serialize;
use shared::config::Cli;
use tokio::net::TcpListener;

/// `--admin-token`, which opens more here than in the segments binary.
const ADMIN_TOKEN_HELP: &str = "The operator's bearer token: it lists every application and holds every segments \
     permission (prefer the environment: arguments show in `ps`) [default: unset, those calls answer 401]";

/// chatmesh: the backend for in-app chat, every service in one process.
///
/// Without backend URLs everything is embedded under the data dir (SQLite, an in-process
/// queue and counters, a tantivy index): nothing needs installing. Settings come from the
/// defaults, then `--config FILE`, then these flags (each also read from the environment
/// variable it names; a flag given wins).
///
/// CHATMESH_ADMIN_TOKEN is the operator's bearer token: it lists every application
/// (GET /api/applications) and holds every segments permission. Unset, those calls answer 401.
#[derive(Debug, clap::Args, Serialize)]
#[command(name = "chatmesh", version)]
#[command(mut_arg("listen", |arg| arg.help("Address to listen on [default: 127.0.0.1:8080]")))]
#[command(mut_arg("admin_token", |arg| arg.help(ADMIN_TOKEN_HELP)))]
struct Flags {
    #[command(flatten)]
    #[serde(flatten)]
    segments: segments::SettingsArgs,
    /// Six-field cron (seconds first) of the count flush [default: "0 * * * * *", every minute]
    #[arg(long, env = "CHATMESH_COUNT_FLUSH_SCHEDULE", global = true)]
    count_flush_schedule: Option<String>,
    /// Largest request body accepted, in bytes [default: 262144]
    #[arg(long, env = "CHATMESH_MAX_BODY_BYTES", global = true)]
    max_body_bytes: Option<usize>,
    /// Largest request body the segments routes accept, in bytes [default: 1048576]
    #[arg(long, env = "CHATMESH_SEGMENTS_MAX_BODY_BYTES", global = true)]
    segments_max_body_bytes: Option<usize>,
    #[command(flatten)]
    #[serde(flatten)]
    stream: chat_read::stream::StreamArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default)
    Serve,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, config) = Cli::<Flags, Command>::start(Command::Serve)?;
    match command {
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
