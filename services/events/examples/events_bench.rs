//! Ingest benchmark of the events service on the embedded backends (SQLite, on-disk queue).
//!
//! Runs the service in a child process (this binary again, as the server), then measures:
//! - `POST /events/batch`: events/s end to end, from the first request until the consumer has
//!   validated and stored the last event (and, separately, how fast they were accepted);
//! - `POST /user/batches`: events/s stored (that endpoint stores before answering);
//! - `events load`: lines/s of the loader on a generated `.jsonl` file, in its own process;
//! - the peak RSS (VmHWM) of the server and of the loader;
//!
//! and, in the same run, two baselines the figures are divided by:
//! - the same server answering the same request bodies from a trivial handler (reads the body,
//!   answers a constant): what HTTP and the load generator alone allow;
//! - a plain SQLite loop inserting the same rows (same tables, indexes and pragmas, multi-row
//!   INSERTs, one transaction per few thousand rows): what the store alone allows.
//!
//! ```sh
//! cargo build --release --workspace --example events_bench
//! ${CARGO_TARGET_DIR:-target}/release/examples/events_bench
//! ${CARGO_TARGET_DIR:-target}/release/examples/events_bench --events 400000 --user-events 1000000 --lines 1000000
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use events::store::AnyQuery;
use serde_json::{Value, json};

const ROLE: &str = "EVENTS_BENCH_ROLE";

struct Options {
    events: usize,
    batch: usize,
    user_events: usize,
    user_batch: usize,
    lines: usize,
    clients: usize,
}

fn options() -> Options {
    let mut options =
        Options { events: 200_000, batch: 500, user_events: 500_000, user_batch: 5_000, lines: 1_000_000, clients: 4 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--events" => options.events = value,
            "--batch" => options.batch = value,
            "--user-events" => options.user_events = value,
            "--user-batch" => options.user_batch = value,
            "--lines" => options.lines = value,
            "--clients" => options.clients = value,
            other => panic!("unknown option {other} (--events --batch --user-events --user-batch --lines --clients)"),
        }
    }
    options
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match std::env::var(ROLE).as_deref() {
        Ok("server") => runtime.block_on(serve()),
        Ok("loader") => runtime.block_on(load()),
        _ => runtime.block_on(bench(options())),
    }
}

fn config(data_dir: &Path) -> events::Config {
    let mut config = events::Config::embedded(data_dir);
    config.settings.max_user_batch_events = 20_000;
    config.settings.max_user_batch_bytes = 8 * 1024 * 1024;
    config
}

/// The server role: the whole service on the embedded backends (as `events serve` runs it: the
/// API and its consumers), plus the trivial handler of the HTTP baseline, until killed.
async fn serve() -> anyhow::Result<()> {
    let data_dir = PathBuf::from(std::env::var("BENCH_DATA_DIR")?);
    let config = config(&data_dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (_trigger, shutdown) = shared::shutdown::channel();
    let (state, backends) = events::connect(&config, Arc::new(shared::clock::SystemClock)).await?;
    for _ in 0..config.consumer_tasks.max(1) {
        let consumer = events::consumer::Consumer::new(state.clone(), config.consumer_config()).await?;
        tokio::spawn(consumer.run(shutdown.clone()));
    }
    // The baseline: reads the whole body and answers a constant, nothing else.
    let trivial = axum::Router::new().route(
        "/bench/trivial",
        axum::routing::post(|body: bytes::Bytes| async move {
            (axum::http::StatusCode::ACCEPTED, axum::Json(json!({"bytes": body.len()})))
        })
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024)),
    );
    let app = shared::metrics::instrument(events::app(Some(state), &backends).merge(trivial));
    println!("LISTENING {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    shared::http::serve(listener, app, shutdown).await?;
    Ok(())
}

/// The loader role: `events load` on a file, then its summary and peak RSS as one JSON line.
async fn load() -> anyhow::Result<()> {
    let data_dir = PathBuf::from(std::env::var("BENCH_DATA_DIR")?);
    let file = PathBuf::from(std::env::var("BENCH_FILE")?);
    let (state, _) = events::connect(&config(&data_dir), Arc::new(shared::clock::SystemClock)).await?;
    let summary = events::loader::load_file(&state, &file, 5_000, false).await?;
    println!("{}", json!({"summary": summary, "vm_hwm_kib": vm_hwm_kib(std::process::id())}));
    Ok(())
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(data_dir: &Path) -> anyhow::Result<Server> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(ROLE, "server")
        .env("BENCH_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    let address = line.trim().strip_prefix("LISTENING ").ok_or_else(|| anyhow::anyhow!("server said {line:?}"))?;
    Ok(Server { url: format!("http://{address}"), child })
}

/// Posts every body with `clients` concurrent clients; returns the sum of `count(answer)`.
async fn post_all(
    client: &reqwest::Client,
    url: String,
    bodies: Arc<Vec<Vec<u8>>>,
    clients: usize,
    count: fn(&Value) -> u64,
) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut total = 0;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(index) else { return Ok::<u64, anyhow::Error>(total) };
                let response =
                    client.post(&url).header("content-type", "application/json").body(body.clone()).send().await?;
                let status = response.status();
                let answer: Value = response.json().await?;
                anyhow::ensure!(status.is_success(), "{status}: {answer}");
                total += count(&answer);
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total)
}

/// The events an answer of `POST /events/batch` or `POST /user/batches` says were accepted.
fn accepted_count(answer: &Value) -> u64 {
    answer["accepted"].as_u64().unwrap_or(0)
}

/// Posts `bodies` (each of `per_body` events) to the trivial handler: events/s.
async fn trivial_baseline(
    client: &reqwest::Client,
    server: &Server,
    bodies: &Arc<Vec<Vec<u8>>>,
    per_body: usize,
    clients: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let answered = post_all(client, format!("{}/bench/trivial", server.url), bodies.clone(), clients, |_| 1).await?;
    Ok((answered as usize * per_body) as f64 / started.elapsed().as_secs_f64())
}

/// An event row of the eye as the consumer stores it.
struct EventRow {
    id: String,
    session_id: String,
    data: String,
    ts: i64,
}

/// The store alone: `rows` inserted into the events table of a fresh SQLite file (the service's
/// migrations, pragmas and page cache) by a plain loop of multi-row `INSERT OR IGNORE`, 200 rows
/// a statement and 4,000 a transaction, as the consumer writes them. Returns events/s.
async fn sqlite_events_baseline(dir: &Path, rows: &[EventRow]) -> anyhow::Result<f64> {
    let db = shared::backends::sql::Database::open_sqlite(dir, "baseline-events.db").await?;
    db.migrate("events", events::migrations::MIGRATIONS).await?;
    let insert = |n: usize| {
        format!(
            "INSERT OR IGNORE INTO events (id, session_id, category, name, data, ts, client_event_id, \
             received_at, updated_at, version) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, NULL, ?, ?, 1)"; n].join(", ")
        )
    };
    insert_rate(&db, rows, 4_000, 200, insert, |query, row| {
        query
            .bind(row.id.as_str())
            .bind(row.session_id.as_str())
            .bind("page interaction")
            .bind("pageview")
            .bind(row.data.as_str())
            .bind(row.ts)
            .bind(row.ts)
            .bind(row.ts)
    })
    .await
}

/// The store alone for user events: the parsed lines inserted into `user_events` by a plain
/// loop, 500 rows a statement and `per_transaction` a transaction. Returns events/s.
async fn sqlite_user_baseline(dir: &Path, lines: &[String], per_transaction: usize) -> anyhow::Result<f64> {
    let db = shared::backends::sql::Database::open_sqlite(dir, "baseline-user.db").await?;
    db.migrate("events", events::migrations::MIGRATIONS).await?;
    let rows: Vec<events::user::UserEvent> = lines
        .iter()
        .map(|line| events::user::parse(&serde_json::from_str(line).expect("generated JSON")).expect("valid line"))
        .collect();
    // Received now, as the service stamps them.
    let received_at = shared::now_millis();
    let insert = |n: usize| {
        format!(
            "INSERT OR IGNORE INTO user_events (session_id, event, user_id, country, ts, received_at) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?)"; n].join(", ")
        )
    };
    insert_rate(&db, &rows, per_transaction.max(1), 500, insert, |query, row| {
        events::user::bind_user_event(query, row, received_at)
    })
    .await
}

/// Inserts `rows` by a plain loop on one connection, `per_transaction` rows a transaction and
/// `per_statement` a statement (`insert(n)` is the statement for n rows, `bind` binds one row).
/// Returns rows/s.
async fn insert_rate<T>(
    db: &shared::backends::sql::Database,
    rows: &[T],
    per_transaction: usize,
    per_statement: usize,
    insert: impl Fn(usize) -> String,
    bind: impl for<'q> Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> anyhow::Result<f64> {
    let mut conn = db.pool().acquire().await?;
    sqlx::query("PRAGMA cache_size = -32768").execute(&mut *conn).await?;
    let started = Instant::now();
    for transaction in rows.chunks(per_transaction) {
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        events::store::insert_chunked(&mut conn, transaction, per_statement, &insert, &bind).await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

fn ratio(value: f64, baseline: f64) -> String {
    format!("{:.2}x", value / baseline.max(f64::MIN_POSITIVE))
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let dir = tempfile::tempdir()?;
    println!(
        "events ingest benchmark: embedded backends (SQLite, on-disk queue), {cpus} CPUs, load average {load}, data under {}",
        dir.path().display()
    );

    // The eye's events: valid pageviews over 100 sessions, in batches.
    let session_ids: Vec<String> = (0..100).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let event = |i: usize, sessions: &[String]| {
        json!({"session": {"id": sessions[i % sessions.len()]}, "category": "page interaction", "name": "pageview",
               "data": {"host": "www.example.com", "path": format!("/articles/{i}"), "referrer": "https://search.example/"},
               "timestamp": shared::rfc3339_millis(1_623_000_000_000 + i as i64 * 7)})
    };
    let baseline_rows: Vec<EventRow> = (0..options.events)
        .map(|i| {
            let value = event(i, &session_ids);
            EventRow {
                id: uuid::Uuid::now_v7().to_string(),
                session_id: session_ids[i % session_ids.len()].clone(),
                data: value["data"].to_string(),
                ts: 1_623_000_000_000 + i as i64 * 7,
            }
        })
        .collect();
    let sqlite_events = sqlite_events_baseline(&dir.path().join("baseline"), &baseline_rows).await?;
    drop(baseline_rows);
    let user_lines = user_events(options.user_events, 0);
    let sqlite_user = sqlite_user_baseline(&dir.path().join("baseline"), &user_lines, options.user_batch).await?;

    let server = spawn_server(&dir.path().join("server"))?;
    let client = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..100 {
        let answer: Value = client.post(format!("{}/sessions/", server.url)).send().await?.json().await?;
        sessions.push(answer["id"].as_str().expect("session id").to_owned());
    }
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..options.events.div_ceil(options.batch))
            .map(|b| {
                let events: Vec<Value> = (0..options.batch.min(options.events - b * options.batch))
                    .map(|n| event(b * options.batch + n, &sessions))
                    .collect();
                serde_json::to_vec(&events).expect("events serialize")
            })
            .collect(),
    );
    let trivial_events = trivial_baseline(&client, &server, &bodies, options.batch, options.clients).await?;

    let db = shared::backends::sql::Database::open_sqlite(&dir.path().join("server"), "chatmesh.db").await?;
    let cpu = cpu_seconds(server.child.id());
    let started = Instant::now();
    let accepted =
        post_all(&client, format!("{}/events/batch", server.url), bodies, options.clients, accepted_count).await?;
    let accepted_in = started.elapsed();
    anyhow::ensure!(accepted == options.events as u64, "accepted {accepted} of {}", options.events);
    // Stored: `seq` is the rowid and nothing is deleted, so MAX(seq) is the count, read in O(log n).
    loop {
        let stored: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events").fetch_one(db.pool()).await?;
        if stored.unwrap_or(0) as usize >= options.events {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "events not stored after 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored_in = started.elapsed();
    let cpu = cpu_seconds(server.child.id()) - cpu;
    let errors: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_errors").fetch_one(db.pool()).await?;
    anyhow::ensure!(errors == 0, "{errors} benchmark events were refused");
    let end_to_end = options.events as f64 / stored_in.as_secs_f64();
    println!(
        "POST /events/batch   {:>9} events, {} per batch, {} clients: accepted {:>7.0} events/s; stored (accepted, validated, stored) {:>7.0} events/s end to end; server CPU {:.1} s ({:.0} events per CPU-second)",
        options.events,
        options.batch,
        options.clients,
        options.events as f64 / accepted_in.as_secs_f64(),
        end_to_end,
        cpu,
        options.events as f64 / cpu.max(0.01),
    );
    println!(
        "  baseline: same bodies to a trivial handler on the same server {:>7.0} events/s (ratio {}); plain SQLite insert loop of the same rows {:>7.0} events/s (ratio {})",
        trivial_events,
        ratio(end_to_end, trivial_events),
        sqlite_events,
        ratio(end_to_end, sqlite_events),
    );
    println!("  target >= 50000 events/s end to end: {}", if end_to_end >= 50_000.0 { "met" } else { "MISSED" });

    // User sessions: start and end of each session, ends sometimes first.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        user_lines
            .chunks(options.user_batch)
            .map(|chunk| {
                let mut body = b"[".to_vec();
                body.extend(chunk.join(",").as_bytes());
                body.push(b']');
                body
            })
            .collect(),
    );
    drop(user_lines);
    let trivial_user = trivial_baseline(&client, &server, &bodies, options.user_batch, options.clients).await?;
    let cpu = cpu_seconds(server.child.id());
    let started = Instant::now();
    let stored =
        post_all(&client, format!("{}/user/batches", server.url), bodies, options.clients, accepted_count).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(server.child.id()) - cpu;
    anyhow::ensure!(stored == options.user_events as u64, "stored {stored} of {}", options.user_events);
    let user_rate = options.user_events as f64 / elapsed.as_secs_f64();
    println!(
        "POST /user/batches   {:>9} events, {} per batch, {} clients: stored {:>7.0} events/s end to end; server CPU {:.1} s ({:.0} events per CPU-second)",
        options.user_events,
        options.user_batch,
        options.clients,
        user_rate,
        cpu,
        options.user_events as f64 / cpu.max(0.01),
    );
    println!(
        "  baseline: same bodies to a trivial handler on the same server {:>7.0} events/s (ratio {}); plain SQLite insert loop of the same rows {:>7.0} events/s (ratio {})",
        trivial_user,
        ratio(user_rate, trivial_user),
        sqlite_user,
        ratio(user_rate, sqlite_user),
    );
    println!("  target >= 50000 events/s end to end: {}", if user_rate >= 50_000.0 { "met" } else { "MISSED" });
    println!("server peak RSS (VmHWM): {} MiB", vm_hwm_kib(server.child.id()) / 1024);
    drop(server);

    // The loader on a generated file, in its own process.
    let file = dir.path().join("assignment_data.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for line in user_events(options.lines, 1) {
            writeln!(out, "{line}")?;
        }
    }
    let size = std::fs::metadata(&file)?.len();
    let started = Instant::now();
    let output = Command::new(std::env::current_exe()?)
        .env(ROLE, "loader")
        .env("BENCH_DATA_DIR", dir.path().join("loader"))
        .env("BENCH_FILE", &file)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .output()?;
    let wall = started.elapsed();
    anyhow::ensure!(output.status.success(), "loader failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let summary = &report["summary"];
    let lines_per_second = summary["lines"].as_f64().unwrap_or(0.0) / summary["seconds"].as_f64().unwrap_or(1.0);
    println!(
        "events load          {:>9} lines ({} MiB): {:>7.0} lines/s ({} accepted, {} duplicate, {} rejected; {:.1} s with process start), peak RSS {} MiB",
        summary["lines"],
        size / (1024 * 1024),
        lines_per_second,
        summary["accepted"],
        summary["duplicates"],
        summary["rejected"],
        wall.as_secs_f64(),
        report["vm_hwm_kib"].as_u64().unwrap_or(0) / 1024,
    );
    println!(
        "  baseline: plain SQLite insert loop of user rows {:>7.0} events/s (ratio {})",
        sqlite_user,
        ratio(lines_per_second, sqlite_user)
    );
    Ok(())
}

/// `count` user events as JSON lines: sessions of two events, about one in ten without a
/// country, about one in five with its end before its start, and (when `seed` is odd) about
/// one line in a hundred repeated.
fn user_events(count: usize, seed: usize) -> Vec<String> {
    const COUNTRIES: [&str; 8] = ["DE", "FR", "GH", "SK", "TIN", "PT", "NL", "BR"];
    let mut lines: Vec<String> = Vec::with_capacity(count);
    let mut session = 0usize;
    while lines.len() < count {
        let user = format!("{:032x}", (session / 7).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            session,
            seed,
            session % 4096,
            (session / 4096) % 4096,
            session
        );
        let start_ts = 1_541_030_400 + (session as i64 * 37) % 15_552_000;
        let end_ts = start_ts + 60 + (session as i64 * 13) % 7_200;
        let ts = |secs: i64| chrono::DateTime::from_timestamp(secs, 0).unwrap().format("%Y-%m-%dT%H:%M:%S").to_string();
        let country =
            if session % 10 == 3 { String::new() } else { format!(r#""country": "{}", "#, COUNTRIES[session % 8]) };
        let start = format!(
            r#"{{"user_id": "{user}", {country}"event": "start", "session_id": "{id}", "ts": "{}"}}"#,
            ts(start_ts)
        );
        let end = format!(r#"{{"user_id": "{user}", "event": "end", "session_id": "{id}", "ts": "{}"}}"#, ts(end_ts));
        let pair = if session % 5 == 1 { [end, start] } else { [start, end] };
        for line in pair {
            if lines.len() < count {
                if seed % 2 == 1 && lines.len() % 100 == 99 {
                    lines.push(lines[lines.len() - 1].clone());
                } else {
                    lines.push(line);
                }
            }
        }
        session += 1;
    }
    lines
}
