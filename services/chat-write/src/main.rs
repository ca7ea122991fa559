//! `chat-write`: the create routes of the chat API, scaled out behind the gateway.

use clap::Parser;
use serde::Serialize;

/// mimalloc instead of the system allocator: every request allocates (headers, JSON, futures),
/// and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// chat-write: creates chats and messages. Takes each number from the counters (Redis with
/// REDIS_URL), publishes the command to the queue (RabbitMQ with AMQP_URL) and answers 201
/// once the queue confirms it; 503 when it does not.
#[derive(Debug, Parser, Serialize)]
#[command(name = "chat-write", version)]
#[command(mut_arg("listen", |arg| arg.help("Address to listen on [default: 127.0.0.1:8081]")))]
#[command(mut_arg("elasticsearch_url", |arg| arg.hide(true)))]
struct Cli {
    #[command(flatten)]
    #[serde(flatten)]
    service: shared::config::ServiceArgs,
    /// Largest request body accepted, in bytes [default: 262144]
    #[arg(long, env = "CHATMESH_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Threads serving requests; 1 runs everything on one thread [default: one per core]
    #[arg(long, env = "CHATMESH_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    #[serde(skip)]
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
    let config: chat_write::Config = shared::config::load(cli.service.config.as_deref(), &cli)?;
    let run = |listener, shutdown| chat_write::run(&config, listener, shutdown);
    shared::http::bind_and_run("chat-write", &config.serve.listen, run).await
}
