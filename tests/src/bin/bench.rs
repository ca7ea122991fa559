//! chatmesh-bench: load figures for the chat API.
//!
//! `standalone`: the `chatmesh` server on embedded backends: message-create requests/s and p99
//! at 64 clients against its `/healthz` (the two take turns), search p50/p99 over a chat of
//! 100,000 messages (`--messages`), and the server's peak RSS, each against its target. The
//! searched chat is filled through the create API; with `--fill-direct` its messages are
//! written straight into the stopped server's store instead (a fixture, labelled so) and the
//! server indexes them at its next start, timed: a chat of a million messages takes minutes
//! rather than the create path's rate.
//!
//! `production`: chat-write on Redis + RabbitMQ against a trivial handler of the same server
//! (its `/healthz`), and the consumer's persist rate into MySQL against a plain multi-row
//! INSERT loop, each pair measured in the same run. Needs `DATABASE_URL`, `REDIS_URL`,
//! `AMQP_URL`.
//!
//! `stream`: the live stream, in one server (`--mode standalone`, the default) or from a
//! `chat-read --stream` replica on the production backends behind the gateway
//! (`--mode production`, `--direct` without the gateway): the time
//! from a create's 201 to each subscriber's event with 1,000 subscribers, the resident memory
//! of idle subscribers, and fan-out to the subscribers of one chat against a bare broadcast
//! of the same bytes to as many sockets.
//!
//! `essentials`: idempotent creates against plain ones, and a user's unread count on a chat of
//! a million messages against a chat of ten (the standalone server).
//!
//! Run with `cargo run --release -p chatmesh-e2e --bin chatmesh-bench -- standalone` (or
//! `production`, `stream`, `essentials`): the release binaries are built first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmesh_e2e::load::{self, LoadReport};
use chatmesh_e2e::processes::Service;
use chatmesh_e2e::split::SplitChat;
use chatmesh_e2e::stream_load::{self, BareBroadcast, Received, Subscribers, Transport};
use chatmesh_e2e::{Api, Deployment};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use serde_json::json;
use sqlx::Row;

#[derive(Parser)]
#[command(name = "chatmesh-bench", about = "Load figures for the chat API")]
struct Cli {
    /// Concurrent clients [default: 64 standalone, 256 production]
    #[arg(long)]
    clients: Option<usize>,
    /// Seconds per measured run
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The standalone server on embedded backends
    Standalone {
        /// Messages in the searched chat
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Search queries to time
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Write the searched chat's messages straight into the stopped server's store (a
        /// fixture, not the create path); the server indexes them at its next start
        #[arg(long)]
        fill_direct: bool,
    },
    /// chat-write and the consumer on MySQL + Redis + RabbitMQ
    Production {
        /// Commands queued before the consumer starts, for the persist rate
        #[arg(long, default_value_t = 50_000)]
        backlog: usize,
    },
    /// The live stream: 201-to-delivery latency, idle subscribers' memory, fan-out
    Stream(StreamArgs),
    /// Idempotent creates against plain ones, and unread counts on a chat of a million
    /// messages against a chat of ten (the standalone server)
    Essentials {
        /// Messages in the big chat (written straight into the store as a fixture)
        #[arg(long, default_value_t = 1_000_000)]
        messages: i64,
    },
}

#[derive(clap::Args)]
struct StreamArgs {
    /// The standalone server, or chat-write + the consumer + a `chat-read --stream` replica on
    /// MySQL + Redis + RabbitMQ (needs DATABASE_URL, REDIS_URL, AMQP_URL)
    #[arg(long, value_enum, default_value_t = Mode::Standalone)]
    mode: Mode,
    /// Chats the latency subscribers follow
    #[arg(long, default_value_t = 100)]
    chats: usize,
    /// Latency subscribers per chat
    #[arg(long, default_value_t = 10)]
    per_chat: usize,
    /// How many of each chat's latency subscribers use a WebSocket (the others SSE)
    #[arg(long, default_value_t = 5)]
    sockets_per_chat: usize,
    /// Message creates per second during the latency run, spread over the chats
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Idle SSE subscribers one stream process holds, for its memory
    #[arg(long, default_value_t = 5_000)]
    idle: usize,
    /// Chats the idle subscribers are spread over
    #[arg(long, default_value_t = 100)]
    idle_chats: usize,
    /// Idle SSE subscribers each on a chat of its own, in another fresh process (0: none)
    #[arg(long, default_value_t = 2_000)]
    idle_distinct: usize,
    /// SSE subscribers of the fan-out chat
    #[arg(long, default_value_t = 5_000)]
    fanout: usize,
    /// Messages created in the fan-out chat
    #[arg(long, default_value_t = 200)]
    fanout_messages: usize,
    /// In production mode, subscribers and creates of the latency and fan-out phases go to
    /// the services directly instead of through the gateway (deploy/gateway.toml)
    #[arg(long)]
    direct: bool,
    /// Skip phases: any of latency, idle, fanout (comma-separated)
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Standalone,
    Production,
}

const WORDS: &[&str] = &[
    "hello", "world", "chat", "message", "search", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "rust",
    "tokio", "server", "client", "queue", "redis", "mysql", "index", "prefix", "ranking", "newest", "count", "flush",
    "minute", "token", "number", "durable", "confirm", "replay", "letter", "gateway", "proxy", "health", "ready",
    "metric", "latency", "thread", "socket", "stream", "batch", "commit", "before", "after", "again", "morning",
    "evening", "coffee", "meeting", "lunch", "weekend", "project", "release", "deploy", "rollback", "incident",
];

fn sentence(seed: u64, words: usize) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..words)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            WORDS[(state >> 33) as usize % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates messages in `chat` from `clients` loops for `duration`, raising `highest` to the
/// highest number a 201 gave.
async fn create_messages(
    api: &Api,
    token: &str,
    chat: i64,
    clients: usize,
    duration: Duration,
    highest: Arc<std::sync::atomic::AtomicI64>,
) -> LoadReport {
    let url = Arc::new(api.url_for(&reqwest::Method::POST, &format!("/api/applications/{token}/chats/{chat}")));
    let http = api.http.clone();
    load::run(clients, duration, move |i| {
        let (http, url, highest) = (http.clone(), url.clone(), highest.clone());
        async move {
            let sent = http.post(url.as_str()).json(&json!({ "message_content": sentence(i, 8) })).send().await;
            let Ok(response) = sent else { return false };
            if response.status() != 201 {
                return false;
            }
            let number = response.bytes().await.ok().and_then(|body| message_number(&body));
            highest.fetch_max(number.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            number.is_some()
        }
    })
    .await
}

/// `message_number` of a create's JSON answer.
fn message_number(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(body).ok()?["message_number"].as_i64()
}

async fn get_path(api: &Api, url: String, clients: usize, duration: Duration) -> LoadReport {
    let http = api.http.clone();
    let url = Arc::new(url);
    load::run(clients, duration, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move { matches!(http.get(url.as_str()).send().await, Ok(r) if r.status() == 200) }
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Standalone { messages, queries, fill_direct } => {
            standalone(cli.clients.unwrap_or(64), cli.seconds, messages, queries, fill_direct).await
        }
        // Enough clients to load the write side: at 64 each create waits on a Redis round trip
        // and a RabbitMQ confirm with the cores half idle, so that figure is latency, not rate.
        Command::Production { backlog } => production(cli.clients.unwrap_or(256), cli.seconds, backlog).await,
        Command::Stream(args) => stream(&args, cli.seconds).await,
        Command::Essentials { messages } => {
            chatmesh_e2e::essentials_load::run(cli.clients.unwrap_or(64), cli.seconds, messages).await
        }
    }
}

/// The search latency the standalone server aims for at p99, and its memory ceiling.
const SEARCH_P99_TARGET_MS: f64 = 10.0;
const PEAK_RSS_TARGET_MIB: f64 = 200.0;

async fn standalone(
    clients: usize,
    seconds: u64,
    messages: usize,
    queries: usize,
    fill_direct: bool,
) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().display().to_string();
    let log = std::env::var("CHATMESH_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let args = ["--data-dir", data_dir.as_str()];
    let envs = [("RUST_LOG", log.as_str())];
    let mut server = Service::start("chatmesh", &args, &envs).await;
    let mut pid = server.pid().expect("pid");
    let mut api = Api::new(&server.url);
    println!(
        "standalone chatmesh at {} (data under {data_dir}), {clients} clients; creates and the trivial \
         handler alternate in {ROUNDS} rounds of {:.1} s each",
        server.url,
        seconds as f64 / ROUNDS as f64
    );

    let token = api.create_application("bench").await;
    let chat = api.create_chat(&token, "load").await;
    let (health, create) =
        interleaved(&api, &api.url("/healthz"), &token, chat, &Arc::default(), clients, seconds).await;
    println!("GET /healthz (trivial handler)   {health}");
    println!("POST message (create)            {create}");
    println!("message create / trivial handler: {:.1}%", 100.0 * create.rps() / health.rps());

    let searched = api.create_chat(&token, "searched").await;
    if fill_direct {
        print_peak_rss("create phase", pid);
        server.kill().await;
        let started = Instant::now();
        let content = |number: i64| sentence(number as u64 + 6, 10);
        let store = data.path().join("chatmesh.db");
        chatmesh_e2e::fixture::fill_directly(&store, &token, searched, messages as i64, content).await?;
        println!(
            "FIXTURE: wrote {messages} messages straight into the stopped server's store in {:.1} s (not the create path)",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        server = Service::start_within("chatmesh", &args, &envs, Duration::from_secs(3600)).await;
        println!(
            "server start, indexing the {messages} stored messages first: {:.1} s ({:.0} msg/s)",
            started.elapsed().as_secs_f64(),
            messages as f64 / started.elapsed().as_secs_f64()
        );
        pid = server.pid().expect("pid");
        api = Api::new(&server.url);
    } else {
        let started = Instant::now();
        let (api, token) = (api.clone(), token.clone());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (api, token, next) = (api.clone(), token.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= messages {
                            return;
                        }
                        api.create_message(&token, searched, &sentence(i as u64 + 7, 10)).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        let fill = started.elapsed();
        println!(
            "filled a chat with {messages} messages in {:.1} s ({:.0} msg/s)",
            fill.as_secs_f64(),
            messages as f64 / fill.as_secs_f64()
        );
    }

    let mut latencies = Vec::with_capacity(queries);
    let mut hits = 0usize;
    for i in 0..queries {
        let word = WORDS[i % WORDS.len()];
        let query = if i % 3 == 0 {
            word[..3].to_owned()
        } else if i % 3 == 1 {
            word.to_owned()
        } else {
            format!("{word} {}", WORDS[(i * 7) % WORDS.len()])
        };
        let sent = Instant::now();
        let reply = api
            .get(&format!("/api/applications/{token}/chats/{searched}/search?q={}&limit=50", query.replace(' ', "%20")))
            .await;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        hits += reply.body.as_array().map_or(0, Vec::len);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| percentile(&latencies, q);
    println!(
        "search over {messages} messages      p50 {:.2} ms  p99 {:.2} ms  ({queries} queries, {:.1} hits each)",
        at(0.50),
        at(0.99),
        hits as f64 / queries as f64
    );
    println!("search p99 / {SEARCH_P99_TARGET_MS} ms target: {:.1}%", 100.0 * at(0.99) / SEARCH_P99_TARGET_MS);
    print_peak_rss(if fill_direct { "indexing and search" } else { "whole run" }, pid);
    Ok(())
}

/// The server's peak RSS so far, and its share of the target.
fn print_peak_rss(phase: &str, pid: u32) {
    let peak = load::peak_rss_mib(pid).unwrap_or(f64::NAN);
    println!("server peak RSS ({phase})  {peak:.1} MiB");
    println!("peak RSS / {PEAK_RSS_TARGET_MIB} MiB target: {:.1}%", 100.0 * peak / PEAK_RSS_TARGET_MIB);
}

async fn production(clients: usize, seconds: u64, backlog: usize) -> anyhow::Result<()> {
    let log = std::env::var("CHATMESH_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let Some(mut mesh) = SplitChat::start("chatmesh-bench production", &[("RUST_LOG", &log)]).await else {
        anyhow::bail!("set DATABASE_URL, REDIS_URL and AMQP_URL");
    };
    let api = mesh.api();
    println!(
        "chat-write at {} on Redis + RabbitMQ, {clients} clients; creates and the trivial handler \
         alternate in {ROUNDS} rounds of {:.1} s each",
        mesh.write.url,
        seconds as f64 / ROUNDS as f64
    );
    let token = api.create_application("bench").await;
    let live_chat = api.create_chat(&token, "load").await;
    let backlog_chat = api.create_chat(&token, "backlog").await;
    let health = format!("{}/healthz", mesh.write.url);

    // The write side alone, as when the consumers run on other machines: what it queues is
    // the backlog the consumer drains below.
    mesh.consumer.kill().await;
    let highest = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let (baseline, alone) = interleaved(&api, &health, &token, backlog_chat, &highest, clients, seconds).await;
    println!("chat-write GET /healthz (trivial handler, baseline)   {baseline}");
    println!("chat-write POST message, consumer stopped             {alone}");
    println!("write side alone / baseline                           {:.1}%", 100.0 * alone.rps() / baseline.rps());
    let mut queued = Created { created: (alone.requests - alone.errors) as usize, last_number: 0 };
    if queued.created < backlog {
        let more = create_until(&api, &token, backlog_chat, clients, backlog - queued.created).await;
        queued.created += more.created;
        queued.last_number = more.last_number;
    }
    queued.last_number = queued.last_number.max(highest.load(std::sync::atomic::Ordering::Relaxed));

    // Consumer persist rate: the backlog queued with the consumer stopped, drained.
    let database_url = mesh.env.iter().find(|(k, _)| k == "DATABASE_URL").expect("database url").1.clone();
    let db = shared::backends::sql::Database::connect(&database_url).await?;
    quiesce(&db).await?;
    mesh.consumer = mesh.start_like("chat-read", &["--api", "false", "--cron", "false"]).await;
    // Timed from the first persisted row (process start excluded) to the last. Progress is
    // read as the highest persisted number of the chat's id (one index lookup, so polling every
    // 5 ms does not load MySQL; a join with chats would read every persisted row each time),
    // then the count confirms every 201 is there.
    let application_id = chat::schema::application_id(&db, &token).await?.expect("the bench application");
    let chat_id = loop {
        if let Some(id) = chat::schema::chat_id(&db, application_id, backlog_chat).await? {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let highest_persisted =
        || sqlx_count(&db, "SELECT COALESCE(MAX(number), 0) FROM messages WHERE chat_id = ?", chat_id);
    let persisted = || sqlx_count(&db, "SELECT COUNT(*) FROM messages WHERE chat_id = ?", chat_id);
    let (started, at_start) = loop {
        if highest_persisted().await? > 0 {
            break (Instant::now(), persisted().await? as usize);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    while highest_persisted().await? < queued.last_number {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while (persisted().await? as usize) < queued.created {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = started.elapsed().as_secs_f64();
    let consumer_rate = (queued.created - at_start) as f64 / drained;
    println!(
        "consumer persist + index rate into MySQL             {consumer_rate:>9.0} msg/s ({} messages in {drained:.2} s after the first)",
        queued.created - at_start
    );

    // The write side beside a live consumer, all on this machine's cores.
    let (baseline_live, live) = interleaved(&api, &health, &token, live_chat, &highest, clients, seconds).await;
    println!("chat-write GET /healthz (trivial handler, baseline)   {baseline_live}");
    println!("chat-write POST message, consumer live                {live}");
    println!("write path beside the consumer / baseline             {:.1}%", 100.0 * live.rps() / baseline_live.rps());

    // Read-after-write lag: how long after a 201 a GET of the new message still answers 404.
    let mut lags = Vec::with_capacity(LAG_SAMPLES);
    for i in 0..LAG_SAMPLES {
        let number = api.create_message(&token, live_chat, &sentence(i as u64, 4)).await;
        let created = Instant::now();
        let path = format!("/api/applications/{token}/chats/{live_chat}/messages/{number}");
        while api.get(&path).await.status != 200 {
            anyhow::ensure!(created.elapsed() < Duration::from_secs(30), "message {number} never became readable");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags.push(created.elapsed().as_secs_f64() * 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "read-after-write lag (201 to first 200 GET)           p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms ({LAG_SAMPLES} messages)",
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );

    // Baseline: a plain multi-row INSERT loop of as many rows into a scratch table.
    let rows = queued.created;
    sqlx::query(
        "CREATE TABLE bench_messages (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, chat_id BIGINT NOT NULL, \
         number BIGINT NOT NULL, content TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
         UNIQUE KEY (chat_id, number)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    )
    .execute(db.pool())
    .await?;
    quiesce(&db).await?;
    let started = Instant::now();
    for (batch, chunk) in (0..rows).collect::<Vec<_>>().chunks(500).enumerate() {
        let sql = format!(
            "INSERT INTO bench_messages (chat_id, number, content, created_at, updated_at) VALUES {}",
            vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(&sql);
        for i in chunk {
            query = query
                .bind(1_i64)
                .bind(*i as i64 + 1)
                .bind(sentence(*i as u64, 8))
                .bind(batch as i64)
                .bind(batch as i64);
        }
        query.execute(db.pool()).await?;
    }
    let insert_loop = rows as f64 / started.elapsed().as_secs_f64();
    println!("plain multi-row INSERT loop (baseline)               {insert_loop:>9.0} rows/s");
    println!("consumer / baseline                                  {:.1}%", 100.0 * consumer_rate / insert_loop);
    drop(mesh);
    // The run's database holds a few hundred MB: left behind, runs after it would share the
    // server's buffer pool with them.
    let name: String = sqlx::query("SELECT DATABASE()").fetch_one(db.pool()).await?.try_get(0)?;
    sqlx::query(&format!("DROP DATABASE `{name}`")).execute(db.pool()).await?;
    Ok(())
}

/// Waits (for at most a minute) until MySQL has written out its dirty pages and purged the
/// old row versions of what ran before, so a timed write does not pay for earlier ones: without
/// it, the INSERT loop run just after the live creates varies from run to run.
async fn quiesce(db: &shared::backends::sql::Database) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        // MariaDB reports both; MySQL 8 only the dirty pages.
        let rows = sqlx::query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_pages_dirty', \
             'Innodb_buffer_pool_pages_total', 'Innodb_history_list_length')",
        )
        .fetch_all(db.pool())
        .await?;
        let value = |name: &str| {
            rows.iter()
                .find(|row| row.try_get::<String, _>(0).is_ok_and(|n| n == name))
                .and_then(|row| row.try_get::<String, _>(1).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let dirty = value("Innodb_buffer_pool_pages_dirty");
        let total = value("Innodb_buffer_pool_pages_total").max(1);
        let history = value("Innodb_history_list_length");
        if dirty * 100 <= total && history <= 1_000 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            println!("(MySQL still had {dirty} dirty pages and {history} unpurged versions after a minute)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("(waited {:.1} s for MySQL to write out and purge what ran before)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Rounds in which the trivial handler and message creates take turns, so both see the same
/// machine (other work on the host drifts over a run).
const ROUNDS: u32 = 5;

/// `GET health` and message creates in `chat`, alternating over [`ROUNDS`] rounds for `seconds`
/// each in all; `highest` is raised to the highest message number created.
async fn interleaved(
    api: &Api,
    health: &str,
    token: &str,
    chat: i64,
    highest: &Arc<std::sync::atomic::AtomicI64>,
    clients: usize,
    seconds: u64,
) -> (LoadReport, LoadReport) {
    let slice = Duration::from_secs(seconds) / ROUNDS;
    let (mut baseline, mut creates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        baseline.push(get_path(api, health.to_owned(), clients, slice).await);
        creates.push(create_messages(api, token, chat, clients, slice, highest.clone()).await);
    }
    (LoadReport::merge(&baseline).expect("rounds"), LoadReport::merge(&creates).expect("rounds"))
}

const LAG_SAMPLES: usize = 200;

/// The `q` quantile of sorted, non-empty `values`.
fn percentile(values: &[f64], q: f64) -> f64 {
    values[((values.len() as f64 * q) as usize).min(values.len() - 1)]
}

async fn sqlx_count(db: &shared::backends::sql::Database, sql: &str, bind: i64) -> anyhow::Result<i64> {
    Ok(sqlx::query(sql).bind(bind).fetch_one(db.pool()).await?.try_get(0)?)
}

/// What [`create_until`] got: how many 201s, and the highest message number among them.
struct Created {
    created: usize,
    last_number: i64,
}

/// Creates `total` messages with `clients` writers.
async fn create_until(api: &Api, token: &str, chat: i64, clients: usize, total: usize) -> Created {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (api, token, next) = (api.clone(), token.to_owned(), next.clone());
            tokio::spawn(async move {
                let mut mine = Created { created: 0, last_number: 0 };
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let url = api.url_for(&reqwest::Method::POST, &format!("/api/applications/{token}/chats/{chat}"));
                    // The same 8-word rows as the timed creates and the INSERT loop.
                    let content = sentence(i as u64, 8);
                    let sent = api.http.post(url).json(&json!({ "message_content": content })).send().await;
                    let Ok(response) = sent else { continue };
                    if response.status() != 201 {
                        continue;
                    }
                    let number = response.bytes().await.ok().and_then(|body| message_number(&body));
                    mine.created += 1;
                    mine.last_number = mine.last_number.max(number.unwrap_or(0));
                }
                mine
            })
        })
        .collect();
    let mut all = Created { created: 0, last_number: 0 };
    for task in tasks {
        if let Ok(mine) = task.await {
            all.created += mine.created;
            all.last_number = all.last_number.max(mine.last_number);
        }
    }
    all
}

/// Connections at once a stream process is allowed in this bench (`CHATMESH_HTTP_MAX_CONNECTIONS`,
/// 4,096 by default): room for the largest phase and the creates beside it.
fn stream_connection_cap(args: &StreamArgs) -> usize {
    args.idle.max(args.idle_distinct).max(args.fanout).max(args.chats * args.per_chat) + 1_024
}

async fn stream(args: &StreamArgs, seconds: u64) -> anyhow::Result<()> {
    let cap = stream_connection_cap(args);
    // This process holds both ends of the bare broadcast's sockets; the servers inherit the
    // same limit.
    let needed = (2 * args.fanout).max(args.idle).max(args.idle_distinct).max(args.chats * args.per_chat) as u64 + 512;
    let limit = stream_load::open_files_limit().unwrap_or(0);
    anyhow::ensure!(limit >= needed, "the open-files limit is {limit}, this run needs {needed}: raise `ulimit -n`");
    let cap = cap.to_string();
    let log = std::env::var("CHATMESH_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let env = [("RUST_LOG", log.as_str()), ("CHATMESH_HTTP_MAX_CONNECTIONS", cap.as_str())];
    let runs = |phase: &str| !args.skip.iter().any(|skipped| skipped == phase);
    match args.mode {
        Mode::Standalone => {
            let standalone = || async {
                let data = tempfile::tempdir().expect("temp dir");
                let data_dir = data.path().display().to_string();
                let server = Service::start("chatmesh", &["--data-dir", &data_dir], &env).await;
                (server, data)
            };
            for (subscribers, chats) in idle_runs(args).filter(|_| runs("idle")) {
                let (server, _data) = standalone().await;
                println!("idle subscribers: a fresh standalone chatmesh at {}", server.url);
                idle_memory(&Api::new(&server.url), &server, subscribers, chats).await?;
            }
            let (server, _data) = standalone().await;
            let api = Api::new(&server.url);
            let address = stream_load::address_of(&server.url)?;
            println!("latency and fan-out: standalone chatmesh at {} (embedded backends)", server.url);
            if runs("latency") {
                delivery_latency(&api, address, args, seconds, 50.0).await?;
            }
            if runs("fanout") {
                fan_out(&api, address, args).await?;
            }
        }
        Mode::Production => {
            let Some(mesh) = SplitChat::start("chatmesh-bench stream", &env).await else {
                anyhow::bail!("set DATABASE_URL, REDIS_URL and AMQP_URL");
            };
            let api = mesh.api();
            for (subscribers, chats) in idle_runs(args).filter(|_| runs("idle")) {
                let replica = mesh.start_like("chat-read", &["--stream"]).await;
                println!("idle subscribers: a fresh `chat-read --stream` replica at {}", replica.url);
                idle_memory(&api, &replica, subscribers, chats).await?;
            }
            let replica = mesh.start_like("chat-read", &["--stream"]).await;
            let gateway_dir = tempfile::tempdir()?;
            let (api, address, _gateway) = if args.direct {
                println!(
                    "latency and fan-out: creates to chat-write at {}, the consumer into MySQL, subscribers on a \
                     `chat-read --stream` replica at {} (directly, no gateway)",
                    mesh.write.url, replica.url
                );
                (api, stream_load::address_of(&replica.url)?, None)
            } else {
                let gateway = tokio::task::block_in_place(|| start_gateway(gateway_dir.path(), &mesh, &replica, &cap))?;
                println!(
                    "latency and fan-out: creates and subscribers through the gateway at {} (deploy/gateway.toml): \
                     chat-write, the consumer into MySQL, a `chat-read --stream` replica in the chat-stream pool",
                    gateway.url
                );
                (Api::new(&gateway.url), stream_load::address_of(&gateway.url)?, Some(gateway))
            };
            if runs("latency") {
                delivery_latency(&api, address, args, seconds, 100.0).await?;
            }
            if runs("fanout") {
                fan_out(&api, address, args).await?;
            }
            drop(replica);
            let database_url = mesh.env.iter().find(|(k, _)| k == "DATABASE_URL").expect("database url").1.clone();
            drop(mesh);
            let db = shared::backends::sql::Database::connect(&database_url).await?;
            let name: String = sqlx::query("SELECT DATABASE()").fetch_one(db.pool()).await?.try_get(0)?;
            sqlx::query(&format!("DROP DATABASE `{name}`")).execute(db.pool()).await?;
        }
    }
    Ok(())
}

/// The gateway with the deployed config (its connection cap raised to `cap`) in front of the
/// mesh's chat-write and chat-read and of `replica` as the chat-stream pool; returns once each
/// pool's upstream is healthy.
fn start_gateway(
    dir: &std::path::Path,
    mesh: &SplitChat,
    replica: &Service,
    cap: &str,
) -> anyhow::Result<chatmesh_e2e::harness::GatewayProcess> {
    let deployed = std::fs::read_to_string(chatmesh_e2e::harness::repo_root().join("deploy/gateway.toml"))?;
    anyhow::ensure!(deployed.contains("max_connections = 4096"), "deploy/gateway.toml: no max_connections = 4096");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, deployed.replace("max_connections = 4096", &format!("max_connections = {cap}")))?;
    let addr = |service: &Service| service.url.trim_start_matches("http://").to_owned();
    let pools =
        [("chat-write", addr(&mesh.write)), ("chat-read", addr(&mesh.read_api)), ("chat-stream", addr(replica))];
    let mut upstreams: Vec<(&str, Vec<String>)> = pools.iter().map(|(pool, a)| (*pool, vec![a.clone()])).collect();
    upstreams.extend([("segments", Vec::new()), ("events", Vec::new())]);
    let gateway = chatmesh_e2e::harness::GatewayProcess::start(dir, &config, &upstreams);
    for (pool, a) in &pools {
        gateway.wait_healthy(pool, &[a.as_str()]);
    }
    Ok(gateway)
}

/// Creates `count` chats in `token`'s application and waits until the read side has each
/// (a chat's stream answers 404 until then).
async fn readable_chats(api: &Api, token: &str, count: usize) -> Vec<i64> {
    let creates = (0..count).map(|i| {
        let (api, token) = (api.clone(), token.to_owned());
        async move { api.create_chat(&token, &format!("chat {i}")).await }
    });
    let chats: Vec<i64> = futures::stream::iter(creates).buffer_unordered(16).collect().await;
    let reads = chats.iter().map(|chat| {
        let (api, path) = (api.clone(), format!("/api/applications/{token}/chats/{chat}"));
        async move { assert_eq!(api.get_eventually(&path).await.status, 200, "{path} never became readable") }
    });
    futures::stream::iter(reads).buffer_unordered(16).collect::<Vec<()>>().await;
    chats
}

/// Opens one subscriber per `(chat, transport)`, 64 connecting at a time.
async fn subscribe_all(
    subscribers: &Subscribers,
    address: std::net::SocketAddr,
    token: &str,
    plan: &[(i64, Transport)],
) -> anyhow::Result<()> {
    let opens = plan.iter().enumerate().map(|(i, (chat, transport))| async move {
        match transport {
            Transport::Sse => {
                let path = chatmesh_e2e::stream::chat_stream_path(token, *chat, "");
                subscribers.open_sse(address, &path, *chat, i == 0).await
            }
            Transport::WebSocket => subscribers.open_socket(address, token, *chat).await,
        }
    });
    let opened: Vec<anyhow::Result<()>> = futures::stream::iter(opens).buffer_unordered(64).collect().await;
    opened.into_iter().collect()
}

/// A created message: its chat, its number, when its create was sent and when the 201's head
/// arrived.
type Announced = (i64, i64, Instant, Instant);

/// POSTs one message to `chat`; what its 201 said, or `None` for any other outcome.
async fn create_one(api: &Api, token: &str, chat: i64, seed: u64) -> Option<Announced> {
    let url = api.url_for(&reqwest::Method::POST, &format!("/api/applications/{token}/chats/{chat}"));
    let request = api.http.post(url).json(&json!({ "message_content": sentence(seed, 8) }));
    let sent = Instant::now();
    let response = request.send().await.ok()?;
    let arrived = Instant::now();
    if response.status() != 201 {
        return None;
    }
    let number = message_number(&response.bytes().await.ok()?)?;
    Some((chat, number, sent, arrived))
}

/// Message numbers by chat.
fn by_chat(created: &[Announced]) -> std::collections::HashMap<i64, Vec<i64>> {
    let mut chats = std::collections::HashMap::<i64, Vec<i64>>::new();
    for (chat, number, ..) in created {
        chats.entry(*chat).or_default().push(*number);
    }
    chats
}

/// 1,000 subscribers (by default) over 100 chats while messages are created at a steady rate:
/// for every delivery, the time from the create's 201 to the event; every subscriber must get
/// every message of its chat once.
async fn delivery_latency(
    api: &Api,
    address: std::net::SocketAddr,
    args: &StreamArgs,
    seconds: u64,
    goal_ms: f64,
) -> anyhow::Result<()> {
    let token = api.create_application("stream latency").await;
    let chats = readable_chats(api, &token, args.chats).await;
    let plan: Vec<(i64, Transport)> = chats
        .iter()
        .flat_map(|chat| {
            (0..args.per_chat)
                .map(move |i| (*chat, if i < args.sockets_per_chat { Transport::WebSocket } else { Transport::Sse }))
        })
        .collect();
    let subscribers = Subscribers::new();
    subscribe_all(&subscribers, address, &token, &plan).await?;
    let sockets = plan.iter().filter(|(_, t)| *t == Transport::WebSocket).count();
    println!(
        "{} subscribers ({} SSE, {sockets} WebSocket) on {} chats; {:.0} creates/s round-robin over the chats for {seconds} s",
        plan.len(),
        plan.len() - sockets,
        chats.len(),
        args.rate
    );

    // Open loop: each create starts on its tick whatever the earlier ones are doing.
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0.. {
        tick.tick().await;
        if started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        let (api, token, chat) = (api.clone(), token.clone(), chats[i % chats.len()]);
        creates.push(tokio::spawn(async move { create_one(&api, &token, chat, i as u64).await }));
    }
    let attempted = creates.len();
    let mut created = Vec::with_capacity(attempted);
    for create in creates {
        created.extend(create.await?);
    }
    let expected = (created.len() * args.per_chat) as u64;
    if !subscribers.wait_for(expected, Duration::from_secs(30)).await {
        println!("(only {} of {expected} deliveries within 30 s of the last create)", subscribers.delivered());
    }
    // Room for a duplicate to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = subscribers.stop().await;

    let times: std::collections::HashMap<(i64, i64), (Instant, Instant)> =
        created.iter().map(|(chat, number, sent, arrived)| ((*chat, *number), (*sent, *arrived))).collect();
    let histogram = || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    // From the 201 (the contract) and from the moment the create was sent, for every delivery
    // and by transport.
    let (mut from_201, mut from_sent) = (histogram(), histogram());
    let mut by_transport = std::collections::HashMap::new();
    let mut before_201 = 0u64;
    for subscriber in &received {
        let mine = by_transport.entry(subscriber.transport).or_insert_with(histogram);
        for delivery in &subscriber.deliveries {
            let Some((sent, arrived)) = times.get(&(subscriber.chat, delivery.number)) else { continue };
            if delivery.at < *arrived {
                before_201 += 1;
            }
            let micros = delivery.at.saturating_duration_since(*arrived).as_micros() as u64;
            from_201.saturating_record(micros.max(1));
            mine.saturating_record(micros.max(1));
            from_sent.saturating_record((delivery.at.saturating_duration_since(*sent).as_micros() as u64).max(1));
        }
    }
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let line = |what: &str, h: &hdrhistogram::Histogram<u64>| {
        println!(
            "{what:<34} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        )
    };
    line("201-to-delivery, all", &from_201);
    for transport in [Transport::Sse, Transport::WebSocket] {
        if let Some(h) = by_transport.get(&transport) {
            line(&format!("201-to-delivery, {transport}"), h);
        }
    }
    line("create sent-to-delivery, all", &from_sent);
    println!(
        "({} deliveries of {} messages; {before_201} came before their 201 arrived, counted as 0 ms)",
        from_201.len(),
        created.len()
    );
    let tally = stream_load::tally(&received, &by_chat(&created));
    println!(
        "every subscriber, every message once: missing {}, duplicates {}, unexpected {} ({} creates answered 201, {} did not)",
        tally.missing,
        tally.duplicates,
        tally.unexpected,
        created.len(),
        attempted - created.len()
    );
    println!("201-to-delivery p99 / {goal_ms:.0} ms goal: {:.1}%", 100.0 * ms(&from_201, 0.99) / goal_ms);
    Ok(())
}

/// The idle runs asked for: `(subscribers, chats)`, shared chats first, then a chat each.
fn idle_runs(args: &StreamArgs) -> impl Iterator<Item = (usize, usize)> {
    [(args.idle, args.idle_chats), (args.idle_distinct, args.idle_distinct)].into_iter().filter(|(n, _)| *n > 0)
}

/// The resident memory `server` adds for each of `count` idle SSE subscribers spread over
/// `chats` new chats.
async fn idle_memory(api: &Api, server: &Service, count: usize, chats: usize) -> anyhow::Result<()> {
    let pid = server.pid().expect("pid");
    let address = stream_load::address_of(&server.url)?;
    let token = api.create_application("stream idle").await;
    let chats = readable_chats(api, &token, chats.max(1)).await;
    // The first subscriber starts the stream's tasks and pools: not a subscriber's cost.
    let warm = Subscribers::new();
    subscribe_all(&warm, address, &token, &[(chats[0], Transport::Sse)]).await?;
    warm.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = stream_load::rss_kib(pid).unwrap_or(0);
    let plan: Vec<(i64, Transport)> = (0..count).map(|i| (chats[i % chats.len()], Transport::Sse)).collect();
    let subscribers = Subscribers::new();
    let started = Instant::now();
    subscribe_all(&subscribers, address, &token, &plan).await?;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = stream_load::rss_kib(pid).unwrap_or(0);
    let each = after.saturating_sub(before) as f64 / count as f64;
    println!(
        "{} idle SSE subscribers on {} chats (opened in {:.1} s): RSS {:.1} MiB before, {:.1} MiB after, \
         {each:.1} KiB per subscriber",
        count,
        chats.len(),
        opened.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    println!("RSS per idle subscriber ({count} on {} chats) / 16 KiB goal: {:.1}%", chats.len(), 100.0 * each / 16.0);
    subscribers.stop().await;
    Ok(())
}

/// `args.fanout` SSE subscribers of one chat, `args.fanout_messages` messages created: events
/// received per second, from the first create to the last event, against a bare broadcast of
/// the same event texts to as many sockets read the same way.
async fn fan_out(api: &Api, address: std::net::SocketAddr, args: &StreamArgs) -> anyhow::Result<()> {
    let token = api.create_application("stream fan-out").await;
    let chat = readable_chats(api, &token, 1).await[0];
    let plan = vec![(chat, Transport::Sse); args.fanout];
    let subscribers = Subscribers::new();
    subscribe_all(&subscribers, address, &token, &plan).await?;
    let messages = args.fanout_messages;
    let started = Instant::now();
    let creates = (0..messages).map(|i| {
        let (api, token) = (api.clone(), token.clone());
        async move { create_one(&api, &token, chat, i as u64).await }
    });
    let created: Vec<Announced> =
        futures::stream::iter(creates).buffer_unordered(8).filter_map(|c| async move { c }).collect().await;
    let expected = (created.len() * args.fanout) as u64;
    let complete = subscribers.wait_for(expected, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = subscribers.stop().await;
    let stream = deliveries_per_second(&received, started);
    let tally = stream_load::tally(&received, &by_chat(&created));
    println!(
        "stream fan-out: {} SSE subscribers of one chat, {} messages: {:>9.0} deliveries/s ({} in {:.2} s from the first \
         create to the last event{}); missing {}, duplicates {}, unexpected {}",
        args.fanout,
        created.len(),
        stream.0 as f64 / stream.1,
        stream.0,
        stream.1,
        if complete { "" } else { ", INCOMPLETE" },
        tally.missing,
        tally.duplicates,
        tally.unexpected
    );

    // The same event texts, as the first subscriber received them, to as many sockets.
    let texts = received.iter().find(|r| !r.texts.is_empty()).map(|r| r.texts.clone()).unwrap_or_default();
    anyhow::ensure!(!texts.is_empty(), "no event text to broadcast");
    drop(received);
    let bare = BareBroadcast::start(texts.len() + 16)?;
    let readers = Subscribers::new();
    let opens = (0..args.fanout).map(|_| readers.open_sse(bare.address, "/bare", chat, false));
    let opened: Vec<anyhow::Result<()>> = futures::stream::iter(opens).buffer_unordered(64).collect().await;
    opened.into_iter().collect::<anyhow::Result<()>>()?;
    let chunks: Vec<bytes::Bytes> = texts.iter().map(|text| BareBroadcast::frame(text)).collect();
    let started = Instant::now();
    for chunk in chunks {
        bare.send(chunk);
    }
    let complete = readers.wait_for((texts.len() * args.fanout) as u64, Duration::from_secs(300)).await;
    let received = readers.stop().await;
    let baseline = deliveries_per_second(&received, started);
    println!(
        "bare broadcast: the same {} event texts to {} sockets:       {:>9.0} deliveries/s ({} in {:.2} s{})",
        texts.len(),
        args.fanout,
        baseline.0 as f64 / baseline.1,
        baseline.0,
        baseline.1,
        if complete { "" } else { ", INCOMPLETE" },
    );
    println!(
        "stream fan-out / bare broadcast: {:.1}%",
        100.0 * (stream.0 as f64 / stream.1) / (baseline.0 as f64 / baseline.1)
    );
    Ok(())
}

/// Events received by all subscribers, and the seconds from `started` to the last of them.
fn deliveries_per_second(received: &[Received], started: Instant) -> (u64, f64) {
    let count = received.iter().map(|r| r.deliveries.len() as u64).sum();
    let last = received.iter().flat_map(|r| r.deliveries.iter().map(|d| d.at)).max().unwrap_or(started);
    (count, last.saturating_duration_since(started).as_secs_f64().max(1e-9))
}
