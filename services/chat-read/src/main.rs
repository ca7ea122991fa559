//! `chat-read`: the read side of the chat API, its queue consumer and its count flush.

use clap::{Parser, Subcommand};
use serde::Serialize;
use shared::config::Cli;

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
#[derive(Debug, clap::Args, Serialize)]
#[command(name = "chat-read", version)]
#[command(mut_arg("listen", |arg| arg.help("Address to listen on [default: 127.0.0.1:8082]")))]
struct Flags {
    #[command(flatten)]
    #[serde(flatten)]
    roles: shared::config::RoleArgs,
    /// Run the count flush [default: true]
    #[arg(long, env = "CHATMESH_CRON", global = true)]
    cron: Option<bool>,
    /// Serve the live stream (SSE, WebSocket) and the /chat page [default: true]. Given alone
    /// (`chat-read --stream`), this process is a stream replica: the stream only, with no API,
    /// consumer, count flush or search index, unless those are set too
    #[arg(long, env = "CHATMESH_STREAM", global = true, num_args = 0..=1, default_missing_value = "true")]
    stream: Option<bool>,
    #[command(flatten)]
    #[serde(flatten)]
    stream_settings: chat_read::stream::StreamArgs,
    /// Six-field cron (seconds first) of the count flush [default: "0 * * * * *"]
    #[arg(long, env = "CHATMESH_COUNT_FLUSH_SCHEDULE", global = true)]
    count_flush_schedule: Option<String>,
    /// Most commands the consumer persists in one transaction [default: 2000]
    #[arg(long, env = "CHATMESH_CONSUMER_BATCH_SIZE", global = true)]
    consumer_batch_size: Option<usize>,
    /// Attempts before a failing command goes to the dead-letter queue [default: 8]
    #[arg(long, env = "CHATMESH_CONSUMER_MAX_ATTEMPTS", global = true)]
    consumer_max_attempts: Option<u32>,
    /// Largest request body accepted, in bytes [default: 262144]
    #[arg(long, env = "CHATMESH_MAX_BODY_BYTES", global = true)]
    max_body_bytes: Option<usize>,
    /// The operator's bearer token, which GET /api/applications needs (prefer the environment:
    /// arguments show in `ps`) [default: unset, that listing answers 401]
    #[arg(long, env = "CHATMESH_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::<Flags, Command>::parse();
    let flags = &mut cli.flags;
    if flags.stream == Some(true) && flags.roles.api.is_none() && flags.roles.consumer.is_none() && flags.cron.is_none()
    {
        // A stream replica: the other roles are off unless asked for.
        (flags.roles.api, flags.roles.consumer, flags.cron) = (Some(false), Some(false), Some(false));
    }
    match cli.command {
        None | Some(Command::Serve) => shared::telemetry::init(),
        // Their stdout is their output.
        Some(_) => shared::telemetry::init_on_stderr(),
    }
    let mut config: chat_read::Config = cli.load()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let run = |listener, shutdown| chat_read::run(&config, listener, shutdown);
            shared::http::bind_and_run("chat-read", &config.serve.listen, run).await
        }
        // The dead-letter tools open the queue alone: they work while the store is down.
        Command::DeadLetters { limit } => {
            let (queue, _) = shared::backends::open_queue(&config.serve.backends, false).await?;
            let name = chat::schema::Keys::new(&config.serve.backends.namespace).command_queue();
            for letter in queue.dead_letters(&name, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        Command::ReplayDeadLetters => {
            let (queue, _) = shared::backends::open_queue(&config.serve.backends, false).await?;
            let name = chat::schema::Keys::new(&config.serve.backends.namespace).command_queue();
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
