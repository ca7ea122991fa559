//! `events`: the events service, and its `.jsonl` loader.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use serde::Serialize;
use shared::clock::SystemClock;
use shared::config::Cli;

/// mimalloc instead of the system allocator: every request allocates (headers, JSON, futures),
/// and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// events: sessions, asynchronously validated events and their error store (the eye), and
/// user-session batches with per-country starts and last sessions.
///
/// Without backend URLs everything is embedded under the data dir (SQLite and an on-disk
/// queue). Settings come from the defaults, then `--config FILE`, then these flags (each also
/// read from the environment variable it names; a flag given wins).
#[derive(Debug, clap::Args, Serialize)]
#[command(name = "events", version)]
#[command(mut_arg("listen", |arg| arg.help("Address to listen on [default: 127.0.0.1:8084]")))]
#[command(mut_arg("redis_url", |arg| arg.hide(true)), mut_arg("elasticsearch_url", |arg| arg.hide(true)))]
struct Flags {
    #[command(flatten)]
    #[serde(flatten)]
    roles: shared::config::RoleArgs,
    /// Run the daily retention job [default: true]
    #[arg(long, env = "CHATMESH_RETENTION", global = true)]
    retention: Option<bool>,
    /// Six-field cron (seconds first) of the retention job [default: "0 30 3 * * *"]
    #[arg(long, env = "CHATMESH_RETENTION_SCHEDULE", global = true)]
    retention_schedule: Option<String>,
    /// Most queue messages the consumer takes per step [default: 128]
    #[arg(long, env = "CHATMESH_CONSUMER_BATCH_SIZE", global = true)]
    consumer_batch_size: Option<usize>,
    /// Consumers run side by side [default: 2]
    #[arg(long, env = "CHATMESH_CONSUMER_TASKS", global = true)]
    consumer_tasks: Option<usize>,
    /// How far ahead of its arrival an event's timestamp may be, in ms [default: 5000]
    #[arg(long, env = "CHATMESH_FUTURE_TOLERANCE_MS", global = true)]
    future_tolerance_ms: Option<i64>,
    /// Refuse events whose (category, name) has no registered schema [default: false]
    #[arg(long, env = "CHATMESH_REQUIRE_SCHEMA", global = true)]
    require_schema: Option<bool>,
    /// User events older than this many days are deleted [default: 365]
    #[arg(long, env = "CHATMESH_RETENTION_DAYS", global = true)]
    retention_days: Option<u32>,
    /// What a user event's age is counted from: received or event_time [default: received]
    #[arg(long, env = "CHATMESH_RETENTION_BASIS", global = true)]
    retention_basis: Option<String>,
    /// Largest body of a single-item request, in bytes [default: 65536]
    #[arg(long, env = "CHATMESH_MAX_BODY_BYTES", global = true)]
    max_body_bytes: Option<usize>,
    /// Most events in one POST /events/batch [default: 500]
    #[arg(long, env = "CHATMESH_MAX_BATCH_EVENTS", global = true)]
    max_batch_events: Option<usize>,
    /// Largest body of POST /events/batch, in bytes [default: 1048576]
    #[arg(long, env = "CHATMESH_MAX_BATCH_BYTES", global = true)]
    max_batch_bytes: Option<usize>,
    /// Most events in one POST /user/batches [default: 10000]
    #[arg(long, env = "CHATMESH_MAX_USER_BATCH_EVENTS", global = true)]
    max_user_batch_events: Option<usize>,
    /// Largest body of POST /user/batches, in bytes [default: 4194304]
    #[arg(long, env = "CHATMESH_MAX_USER_BATCH_BYTES", global = true)]
    max_user_batch_bytes: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the enabled roles (the default)
    Serve,
    /// Load a .jsonl file of user session events ({"user_id","country"?,"event","session_id","ts"}
    /// per line) into the store, with a progress bar and a summary
    Load {
        /// The .jsonl file
        file: PathBuf,
        /// Lines stored per transaction
        #[arg(long, default_value_t = 5_000)]
        batch_size: usize,
        /// Print the summary as JSON instead of text
        #[arg(long)]
        json: bool,
        /// Do not draw the progress bar
        #[arg(long)]
        no_progress: bool,
    },
    /// Delete the user events past the retention period now
    Retention,
    /// List the messages parked in the dead-letter queue, as JSON lines
    DeadLetters {
        /// Most dead letters to list
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put every dead letter back on the events queue
    ReplayDeadLetters,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, config) = Cli::<Flags, Command>::start(Command::Serve)?;
    match command {
        Command::Serve => serve(&config).await,
        Command::Load { file, batch_size, json, no_progress } => {
            let (state, _) = events::connect(&config, Arc::new(SystemClock)).await?;
            let summary = events::loader::load_file(&state, &file, batch_size, !no_progress).await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                print!("{summary}");
            }
            Ok(())
        }
        Command::Retention => {
            let (state, _) = events::connect(&config, Arc::new(SystemClock)).await?;
            let report = events::retention::run_once(&state).await?;
            println!(
                "deleted {} user events received before {}",
                report.deleted,
                shared::rfc3339_millis(report.cutoff)
            );
            Ok(())
        }
        Command::DeadLetters { limit } => {
            let (state, _) = events::connect(&config, Arc::new(SystemClock)).await?;
            for letter in state.queue.dead_letters(state.queue_name(), limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        Command::ReplayDeadLetters => {
            let (state, _) = events::connect(&config, Arc::new(SystemClock)).await?;
            let replayed = state.queue.replay_dead_letters(state.queue_name()).await?;
            println!("replayed {replayed} dead letters onto {}", state.queue_name());
            Ok(())
        }
    }
}

async fn serve(config: &events::Config) -> anyhow::Result<()> {
    shared::http::bind_and_run("events", &config.serve.listen, |listener, shutdown| {
        events::run(config, listener, shutdown)
    })
    .await
}
