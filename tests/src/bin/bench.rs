//! chatmesh-bench: load figures for the chat API.
//!
//! `standalone`: the `chatmesh` server on embedded backends: message-create requests/s and p99
//! at 64 clients, search p50/p99 over a chat of 100,000 messages, and the server's peak RSS.
//!
//! `production`: chat-write on Redis + RabbitMQ against a trivial handler of the same server
//! (its `/healthz`), and the consumer's persist rate into MySQL against a plain multi-row
//! INSERT loop, each pair measured in the same run. Needs `DATABASE_URL`, `REDIS_URL`,
//! `AMQP_URL`.
//!
//! Run with `cargo run --release -p chatmesh-e2e --bin chatmesh-bench -- standalone` (or
//! `production`): the release binaries are built first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmesh_e2e::load::{self, LoadReport};
use chatmesh_e2e::processes::Service;
use chatmesh_e2e::split::SplitChat;
use chatmesh_e2e::{Api, Deployment};
use clap::{Parser, Subcommand};
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
    },
    /// chat-write and the consumer on MySQL + Redis + RabbitMQ
    Production {
        /// Commands queued before the consumer starts, for the persist rate
        #[arg(long, default_value_t = 50_000)]
        backlog: usize,
    },
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
        Command::Standalone { messages, queries } => {
            standalone(cli.clients.unwrap_or(64), cli.seconds, messages, queries).await
        }
        // Enough clients to load the write side: at 64 each create waits on a Redis round trip
        // and a RabbitMQ confirm with the cores half idle, so that figure is latency, not rate.
        Command::Production { backlog } => production(cli.clients.unwrap_or(256), cli.seconds, backlog).await,
    }
}

async fn standalone(clients: usize, seconds: u64, messages: usize, queries: usize) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().display().to_string();
    let log = std::env::var("CHATMESH_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let server = Service::start("chatmesh", &["--data-dir", &data_dir], &[("RUST_LOG", &log)]).await;
    let pid = server.pid().expect("pid");
    let api = Api::new(&server.url);
    println!("standalone chatmesh at {} (data under {data_dir}), {clients} clients", server.url);

    let token = api.create_application("bench").await;
    let chat = api.create_chat(&token, "load").await;
    let seconds = Duration::from_secs(seconds);
    let health = get_path(&api, api.url("/healthz"), clients, seconds).await;
    println!("GET /healthz (trivial handler)   {health}");
    let create = create_messages(&api, &token, chat, clients, seconds, Arc::default()).await;
    println!("POST message (create)            {create}");
    println!("create / trivial ratio           {:.1}%", 100.0 * create.rps() / health.rps());

    let searched = api.create_chat(&token, "searched").await;
    let started = Instant::now();
    let fill = {
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
        started.elapsed()
    };
    println!(
        "filled a chat with {messages} messages in {:.1} s ({:.0} msg/s)",
        fill.as_secs_f64(),
        messages as f64 / fill.as_secs_f64()
    );

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
    println!("server peak RSS                  {:.1} MiB", load::peak_rss_mib(pid).unwrap_or(f64::NAN));
    Ok(())
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
