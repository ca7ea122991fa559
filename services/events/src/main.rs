//! `events`: the events service, and its `.jsonl` loader.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use shared::clock::SystemClock;

/// mimalloc instead of the system allocator: every request allocates (headers, JSON, futures),
/// and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// events: sessions, asynchronously validated events and their error store (the eye), and
/// user-session batches with per-country starts and last sessions.
///
/// Without backend URLs everything is embedded under the data dir (SQLite and an on-disk
/// queue). Settings come from the defaults, then `--config FILE`, then the environment
/// (`CHATMESH_*`, `DATABASE_URL`, `AMQP_URL`), then these flags.
#[derive(Debug, Parser)]
#[command(name = "events", version)]
struct Cli {
    /// TOML file with any of the settings (listen, api, consumer, retention, retention_days, ...)
    #[arg(long, env = "CHATMESH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8084]
    #[arg(long, env = "CHATMESH_LISTEN", global = true)]
    listen: Option<String>,
    /// Directory for embedded backends, when their URL is unset [default: ./data]
    #[arg(long, env = "CHATMESH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Prefix of queue names [default: chatmesh]
    #[arg(long, env = "CHATMESH_NAMESPACE", global = true)]
    namespace: Option<String>,
    /// Serve the API routes [default: true]
    #[arg(long, env = "CHATMESH_API", global = true)]
    api: Option<bool>,
    /// Run the queue consumer that validates and stores events [default: true]
    #[arg(long, env = "CHATMESH_CONSUMER", global = true)]
    consumer: Option<bool>,
    /// Run the daily retention job [default: true]
    #[arg(long, env = "CHATMESH_RETENTION", global = true)]
    retention: Option<bool>,
    /// Six-field cron (seconds first) of the retention job [default: "0 30 3 * * *"]
    #[arg(long, env = "CHATMESH_RETENTION_SCHEDULE", global = true)]
    retention_schedule: Option<String>,
    /// User events older than this many days are deleted [default: 365]
    #[arg(long, env = "CHATMESH_RETENTION_DAYS", global = true)]
    retention_days: Option<u32>,
    /// MySQL / MariaDB URL (mysql://user:pass@host/db); unset: SQLite under the data dir
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// RabbitMQ URL for the events queue; unset: the embedded queue under the data dir
    #[arg(long, env = "AMQP_URL", global = true)]
    amqp_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
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

impl Cli {
    fn config(&self) -> anyhow::Result<events::Config> {
        let mut config: events::Config = shared::config::load(self.config.as_deref())?;
        shared::config::Overrides {
            listen: self.listen.as_ref(),
            data_dir: self.data_dir.as_ref(),
            namespace: self.namespace.as_ref(),
            database_url: self.database_url.as_ref(),
            amqp_url: self.amqp_url.as_ref(),
            ..Default::default()
        }
        .apply(&mut config.listen, &mut config.backends);
        config.api = self.api.unwrap_or(config.api);
        config.consumer = self.consumer.unwrap_or(config.consumer);
        config.retention = self.retention.unwrap_or(config.retention);
        if let Some(schedule) = &self.retention_schedule {
            config.retention_schedule.clone_from(schedule);
        }
        config.settings.retention_days = self.retention_days.unwrap_or(config.settings.retention_days);
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
            println!("events listening on http://{}", listener.local_addr()?);
            events::run(&config, listener, shutdown).await
        }
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
