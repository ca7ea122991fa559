//! `chat-read`: the read side of the chat API, its queue consumer and its count flush.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: every request allocates (headers, JSON, futures),
/// and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// chat-read: applications, every read and edit of the chat API, search, the consumer that
/// persists what chat-write queues, and the per-minute count flush. Each role can be switched
/// off so ops scale API replicas, consumers and the cron independently.
///
/// GET /api/applications lists every application with its token: it needs the admin token
/// from CHATMESH_ADMIN_TOKEN as `Authorization: Bearer`; unset, it answers 401 to everyone.
#[derive(Debug, Parser)]
#[command(name = "chat-read", version)]
struct Cli {
    /// TOML file with any of the settings (listen, api, consumer, cron, count_flush_schedule, ...)
    #[arg(long, env = "CHATMESH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8082]
    #[arg(long, env = "CHATMESH_LISTEN", global = true)]
    listen: Option<String>,
    /// Directory for embedded backends, when their URL is unset [default: ./data]
    #[arg(long, env = "CHATMESH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Prefix of Redis keys and queue names [default: chatmesh]
    #[arg(long, env = "CHATMESH_NAMESPACE", global = true)]
    namespace: Option<String>,
    /// Serve the API routes [default: true]
    #[arg(long, env = "CHATMESH_API", global = true)]
    api: Option<bool>,
    /// Run the queue consumer [default: true]
    #[arg(long, env = "CHATMESH_CONSUMER", global = true)]
    consumer: Option<bool>,
    /// Run the count flush [default: true]
    #[arg(long, env = "CHATMESH_CRON", global = true)]
    cron: Option<bool>,
    /// Six-field cron (seconds first) of the count flush [default: "0 * * * * *"]
    #[arg(long, env = "CHATMESH_COUNT_FLUSH_SCHEDULE", global = true)]
    count_flush_schedule: Option<String>,
    /// MySQL / MariaDB URL (mysql://user:pass@host/db); unset: SQLite under the data dir
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Redis URL for counters, touched sets and the flush lock; unset: in-process
    #[arg(long, env = "REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// RabbitMQ URL for the command queue; unset: the embedded queue under the data dir
    #[arg(long, env = "AMQP_URL", global = true)]
    amqp_url: Option<String>,
    /// Elasticsearch URL for search; unset: the tantivy index under the data dir
    #[arg(long, env = "ELASTICSEARCH_URL", global = true)]
    elasticsearch_url: Option<String>,
    /// The operator's bearer token, which GET /api/applications needs (prefer the environment:
    /// arguments show in `ps`) [default: unset, that listing answers 401]
    #[arg(long, env = "CHATMESH_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the enabled roles (the default)
    Serve,
    /// List the commands parked in the dead-letter queue, as JSON lines
    DeadLetters {
        /// Most dead letters to list
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put every dead letter back on the command queue
    ReplayDeadLetters,
    /// Rebuild the search index from the store (stop the consumers first when the index is tantivy)
    Reindex,
}

impl Cli {
    fn config(&self) -> anyhow::Result<chat_read::Config> {
        let mut config: chat_read::Config = shared::config::load(self.config.as_deref())?;
        shared::config::Overrides {
            listen: self.listen.as_ref(),
            data_dir: self.data_dir.as_ref(),
            namespace: self.namespace.as_ref(),
            database_url: self.database_url.as_ref(),
            redis_url: self.redis_url.as_ref(),
            amqp_url: self.amqp_url.as_ref(),
            elasticsearch_url: self.elasticsearch_url.as_ref(),
        }
        .apply(&mut config.listen, &mut config.backends);
        config.api = self.api.unwrap_or(config.api);
        config.consumer = self.consumer.unwrap_or(config.consumer);
        config.cron = self.cron.unwrap_or(config.cron);
        if let Some(token) = &self.admin_token {
            config.admin_token = Some(token.clone());
        }
        if let Some(schedule) = &self.count_flush_schedule {
            config.count_flush_schedule.clone_from(schedule);
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Serve) => shared::telemetry::init(),
        // Their stdout is their output.
        Some(_) => shared::telemetry::init_on_stderr(),
    }
    let mut config = cli.config()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let (trigger, shutdown) = shared::shutdown::channel();
            trigger.trigger_on_signal();
            let listener = tokio::net::TcpListener::bind(&config.listen).await?;
            println!("chat-read listening on http://{}", listener.local_addr()?);
            chat_read::run(&config, listener, shutdown).await
        }
        // The dead-letter tools open the queue alone: they work while the store is down.
        Command::DeadLetters { limit } => {
            let (queue, _) = shared::backends::open_queue(&config.backends, false).await?;
            let name = chat::schema::Keys::new(&config.backends.namespace).command_queue();
            for letter in queue.dead_letters(&name, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        Command::ReplayDeadLetters => {
            let (queue, _) = shared::backends::open_queue(&config.backends, false).await?;
            let name = chat::schema::Keys::new(&config.backends.namespace).command_queue();
            let replayed = queue.replay_dead_letters(&name).await?;
            println!("replayed {replayed} dead letters onto {name}");
            Ok(())
        }
        Command::Reindex => {
            config.consumer = true;
            let (state, _) = chat_read::connect(&config).await?;
            let indexed = chat_read::reindex(&state).await?;
            println!("reindexed {indexed} messages");
            Ok(())
        }
    }
}
