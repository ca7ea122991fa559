//! `chat-write`: the create routes of the chat API, scaled out behind the gateway.

use std::path::PathBuf;

use clap::Parser;

/// mimalloc instead of the system allocator: every request allocates (headers, JSON, futures),
/// and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// chat-write: creates chats and messages. Takes each number from the counters (Redis with
/// REDIS_URL), publishes the command to the queue (RabbitMQ with AMQP_URL) and answers 201
/// once the queue confirms it; 503 when it does not.
#[derive(Debug, Parser)]
#[command(name = "chat-write", version)]
struct Cli {
    /// TOML file with any of the settings (listen, max_body_bytes, data_dir, namespace, database_url, ...)
    #[arg(long, env = "CHATMESH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8081]
    #[arg(long, env = "CHATMESH_LISTEN")]
    listen: Option<String>,
    /// Directory for embedded backends, when their URL is unset [default: ./data]
    #[arg(long, env = "CHATMESH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Prefix of Redis keys and queue names [default: chatmesh]
    #[arg(long, env = "CHATMESH_NAMESPACE")]
    namespace: Option<String>,
    /// MySQL / MariaDB URL (mysql://user:pass@host/db); unset: SQLite under the data dir
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Redis URL for the counters; unset: in-process counters (one process only)
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// RabbitMQ URL for the command queue; unset: the embedded queue under the data dir
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// Threads serving requests; 1 runs everything on one thread [default: one per core]
    #[arg(long, env = "CHATMESH_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = match cli.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Some(threads) => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads.into()).enable_all().build()?
        }
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    shared::telemetry::init();
    let mut config: chat_write::Config = shared::config::load(cli.config.as_deref())?;
    shared::config::Overrides {
        listen: cli.listen.as_ref(),
        data_dir: cli.data_dir.as_ref(),
        namespace: cli.namespace.as_ref(),
        database_url: cli.database_url.as_ref(),
        redis_url: cli.redis_url.as_ref(),
        amqp_url: cli.amqp_url.as_ref(),
        elasticsearch_url: None,
    }
    .apply(&mut config.listen, &mut config.backends);

    let (trigger, shutdown) = shared::shutdown::channel();
    trigger.trigger_on_signal();
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    println!("chat-write listening on http://{}", listener.local_addr()?);
    chat_write::run(&config, listener, shutdown).await
}
