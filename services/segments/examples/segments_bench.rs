//! Evaluation throughput of the segments service, one user at a time:
//!
//! - in-process: the compiled snapshot alone (100 SIMPLE segments; 10 DMN segments), on one
//!   thread, with the condition checks per second of the SIMPLE rules;
//! - in-process with the store: `Segments::evaluate`, which also reads the revision, the
//!   membership generation and the user's explicit memberships (kept 100 ms between reads);
//! - through HTTP: `POST /api/v1/segments/evaluate` against a server on 127.0.0.1:0, from
//!   concurrent clients in the same process, beside the same server's trivial handler
//!   (`GET /healthz`) from the same clients, the two taking turns in 3 rounds, and the ratio
//!   of the two: what evaluation costs over what any request costs on this server and this
//!   machine.
//!
//! Run: `cargo build --release --workspace --example segments_bench`, then
//! `target/release/examples/segments_bench` (SQLite in a temp dir; set `DATABASE_URL` to run
//! the store and HTTP parts on MySQL / MariaDB). `BENCH_SECONDS` sets the length of each
//! measurement (default 3), `BENCH_CLIENTS` the HTTP clients (default 16).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use segments::engine::{LiveSegment, Snapshot};
use segments::rules::{self, RuleType};
use segments::{Segments, Settings};
use serde_json::{Map, Value, json};
use shared::backends::sql::Database;

/// The allocator of the `segments` binary, so the server here allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIMPLE_SEGMENTS: usize = 100;
const DMN_SEGMENTS: usize = 10;
/// Concurrent HTTP clients (`BENCH_CLIENTS`, default 16).
fn http_clients() -> usize {
    std::env::var("BENCH_CLIENTS").ok().and_then(|s| s.parse().ok()).filter(|n| *n > 0).unwrap_or(16)
}

/// Five conditions that all hold for the benchmark user, so every one of them is checked.
fn simple_rule(i: usize) -> String {
    json!({"operator": "AND", "conditions": [
        {"attribute": "plan", "operator": "in", "value": ["premium", "enterprise", "pro"]},
        {"attribute": "age", "operator": "gte", "value": 18 + (i % 10)},
        {"attribute": "country", "operator": "neq", "value": "XX"},
        {"operator": "OR", "conditions": [
            {"attribute": "email", "operator": "endsWith", "value": ".com"},
            {"attribute": "userId", "operator": "eq", "value": "nobody"}
        ]},
        {"attribute": "totalSpent", "operator": "lt", "value": 1_000_000}
    ]})
    .to_string()
}
const CONDITIONS_CHECKED: usize = 5;
/// Rounds in which the trivial handler and evaluation take turns over HTTP; each figure is the
/// mean of its rounds.
const ROUNDS: usize = 3;

fn dmn_rule(i: usize) -> String {
    let threshold = 600 + i * 10;
    format!(
        r##"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" namespace="https://chatmesh.bench/{i}" name="bench{i}" id="_bench{i}">
  <decision name="eligible" id="d_eligible">
    <variable name="eligible" id="v_eligible"/>
    <informationRequirement id="ir_score"><requiredInput href="#i_score"/></informationRequirement>
    <informationRequirement id="ir_country"><requiredInput href="#i_country"/></informationRequirement>
    <decisionTable hitPolicy="FIRST" id="dt">
      <input id="in_score"><inputExpression typeRef="number" id="ie_score"><text>creditScore</text></inputExpression></input>
      <input id="in_country"><inputExpression typeRef="string" id="ie_country"><text>country</text></inputExpression></input>
      <output id="out" typeRef="boolean"/>
      <rule id="r0"><inputEntry id="r0a"><text>&lt; 300</text></inputEntry><inputEntry id="r0b"><text>-</text></inputEntry><outputEntry id="r0o"><text>false</text></outputEntry></rule>
      <rule id="r1"><inputEntry id="r1a"><text>&gt;= {threshold}</text></inputEntry><inputEntry id="r1b"><text>"BR","US","PT"</text></inputEntry><outputEntry id="r1o"><text>true</text></outputEntry></rule>
      <rule id="r2"><inputEntry id="r2a"><text>[500..{threshold})</text></inputEntry><inputEntry id="r2b"><text>"BR"</text></inputEntry><outputEntry id="r2o"><text>true</text></outputEntry></rule>
      <rule id="r3"><inputEntry id="r3a"><text>-</text></inputEntry><inputEntry id="r3b"><text>-</text></inputEntry><outputEntry id="r3o"><text>false</text></outputEntry></rule>
    </decisionTable>
  </decision>
  <inputData name="creditScore" id="i_score"><variable typeRef="number" name="creditScore" id="iv_score"/></inputData>
  <inputData name="country" id="i_country"><variable typeRef="string" name="country" id="iv_country"/></inputData>
</definitions>"##
    )
}

fn attributes() -> Map<String, Value> {
    json!({"plan": "premium", "age": 34, "country": "BR", "email": "ana@example.com", "totalSpent": 1200, "creditScore": 720})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn snapshot(rule_type: RuleType, count: usize) -> Snapshot {
    let segments = (0..count)
        .map(|i| {
            let content = match rule_type {
                RuleType::Simple => simple_rule(i),
                RuleType::Dmn => dmn_rule(i),
            };
            let rule = rules::compile(rule_type, Some(&content), None).expect("benchmark rule compiles");
            LiveSegment {
                id: i as i64,
                uuid: segments::new_uuid(),
                key: format!("segment-{i}"),
                name: format!("Segment {i}"),
                version: 1,
                rule_type,
                rule: rule.map(Arc::new),
                percent: None,
                rendered: std::sync::OnceLock::new(),
            }
        })
        .collect();
    Snapshot { revision: 0, segments }
}

/// Runs `step` for `seconds` on this thread; returns steps per second.
fn per_second(seconds: f64, mut step: impl FnMut() -> usize) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut steps = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            std::hint::black_box(step());
            steps += 1;
        }
    }
    steps as f64 / started.elapsed().as_secs_f64()
}

async fn open_store(dir: &std::path::Path) -> Database {
    match std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()) {
        Some(url) => Database::connect(&shared::testing::fresh_mysql_database(&url).await).await.expect("mysql"),
        None => Database::open_sqlite(dir, "chatmesh.db").await.expect("sqlite"),
    }
}

/// A server with `count` segments of `rule_type`, created through the API.
async fn server(
    rule_type: RuleType,
    count: usize,
) -> (String, Segments, tempfile::TempDir, shared::shutdown::ShutdownTrigger) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_store(dir.path()).await;
    let state = Segments::new(db, &Settings { admin_token: Some("bench".to_owned()), ..Settings::default() })
        .await
        .expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (trigger, shutdown) = shared::shutdown::channel();
    tokio::spawn(shared::http::serve(listener, segments::app(state.clone(), 1024 * 1024), shutdown));
    let http = reqwest::Client::new();
    for i in 0..count {
        let content = match rule_type {
            RuleType::Simple => simple_rule(i),
            RuleType::Dmn => dmn_rule(i),
        };
        let body = json!({"key": format!("segment-{i}"), "name": format!("Segment {i}"), "ruleType": rule_type.as_str(), "ruleContent": content});
        let reply =
            http.post(format!("{base}/api/v1/segments")).bearer_auth("bench").json(&body).send().await.expect("create");
        assert_eq!(reply.status(), 201, "{}", reply.text().await.unwrap_or_default());
    }
    (base, state, dir, trigger)
}

/// What the clients check of an evaluation: the number of segments matched. The items are
/// skipped, not built, so the clients' parsing costs little of the CPU the server shares.
#[derive(serde::Deserialize)]
struct EvaluationCount {
    data: Vec<serde::de::IgnoredAny>,
}

/// `POST /api/v1/segments/evaluate` from the concurrent clients: evaluations/s. The first
/// answer is checked in full.
async fn http_per_second(base: &str, seconds: f64, expected: usize) -> f64 {
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v1/segments/evaluate");
    let body = serde_json::to_vec(&json!({"userId": "user-42", "attributes": attributes()})).expect("body");
    let first: Value = evaluate(&http, &url, body.clone()).await.json().await.expect("json");
    let keys: Vec<&str> =
        first["data"].as_array().expect("data").iter().filter_map(|s| s["attributes"]["key"].as_str()).collect();
    assert_eq!(keys.len(), expected, "{first}");
    assert_eq!(first["meta"]["matchedSegments"], expected, "{first}");
    concurrent_per_second(seconds, move || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            let answer: EvaluationCount = evaluate(&http, &url, body).await.json().await.expect("json");
            assert_eq!(answer.data.len(), expected);
        }
    })
    .await
}

async fn evaluate(http: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let reply = http
        .post(url)
        .bearer_auth("bench")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("evaluate");
    assert_eq!(reply.status(), 200);
    reply
}

/// `GET /healthz` of the same server from the same clients: requests/s.
async fn trivial_per_second(base: &str, seconds: f64) -> f64 {
    let http = reqwest::Client::new();
    let url = format!("{base}/healthz");
    concurrent_per_second(seconds, move || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let reply = http.get(&url).send().await.expect("healthz");
            assert_eq!(reply.status(), 200);
            std::hint::black_box(reply.bytes().await.expect("body"));
        }
    })
    .await
}

/// Runs `request` in a loop on each of the concurrent clients for `seconds`: requests/s.
async fn concurrent_per_second<F, R>(seconds: f64, request: F) -> f64
where
    F: Fn() -> R + Clone + Send + 'static,
    R: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..http_clients() {
        let (request, done) = (request.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                request().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn store_per_second(state: &Segments, seconds: f64) -> f64 {
    let attributes = attributes();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut done = 0u64;
    while Instant::now() < deadline {
        std::hint::black_box(state.evaluate("user-42", &attributes).await.expect("evaluate").matches.len());
        done += 1;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let attributes = attributes();
    let explicit = HashMap::new();
    println!(
        "segments evaluation benchmark ({seconds} s per measurement, {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let simple = snapshot(RuleType::Simple, SIMPLE_SEGMENTS);
    assert_eq!(
        simple.evaluate("user-42", &attributes, &explicit).len(),
        SIMPLE_SEGMENTS,
        "every rule matches: every condition is checked"
    );
    let rate = per_second(seconds, || simple.evaluate("user-42", &attributes, &explicit).len());
    let checks = rate * (SIMPLE_SEGMENTS * CONDITIONS_CHECKED) as f64;
    println!(
        "in-process, 1 thread, {SIMPLE_SEGMENTS} SIMPLE segments: {rate:>10.0} evaluations/s, {:>6.2} M condition checks/s",
        checks / 1e6
    );

    let dmn = snapshot(RuleType::Dmn, DMN_SEGMENTS);
    let dmn_members = dmn.evaluate("user-42", &attributes, &explicit).len();
    assert!(dmn_members > 0);
    let rate = per_second(seconds, || dmn.evaluate("user-42", &attributes, &explicit).len());
    println!(
        "in-process, 1 thread, {DMN_SEGMENTS} DMN segments:     {rate:>10.0} evaluations/s ({:.0} decision evaluations/s)",
        rate * DMN_SEGMENTS as f64
    );

    let backend = if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) { "MySQL" } else { "SQLite" };
    let clients = http_clients();
    // Each row's label is padded so the figures line up, SIMPLE's and DMN's.
    let mut ratios = Vec::new();
    for (rule_type, count, label, expected) in [
        (RuleType::Simple, SIMPLE_SEGMENTS, "SIMPLE", SIMPLE_SEGMENTS),
        (RuleType::Dmn, DMN_SEGMENTS, "DMN", dmn_members),
    ] {
        let (base, state, _dir, trigger) = server(rule_type, count).await;
        let rate = store_per_second(&state, seconds).await;
        let what = format!("{count} {label}:");
        println!("in-process with the store ({backend}), {what:<12}{rate:>10.0} evaluations/s");
        // The two take turns, so that what else runs on the machine weighs on both alike.
        let (mut trivial, mut rate) = (0.0, 0.0);
        for _ in 0..ROUNDS {
            trivial += trivial_per_second(&base, seconds / ROUNDS as f64).await / ROUNDS as f64;
            rate += http_per_second(&base, seconds / ROUNDS as f64, expected).await / ROUNDS as f64;
        }
        println!("HTTP ({clients} clients, {backend}), trivial handler (/healthz): {trivial:>10.0} requests/s");
        let what = format!("{count} {label} segments:");
        println!("HTTP ({clients} clients, {backend}), {what:<21}{rate:>10.0} evaluations/s");
        ratios.push((count, label, 100.0 * rate / trivial));
        trigger.trigger();
    }
    for (count, label, ratio) in ratios {
        println!("segment evaluation (HTTP, {count} {label}) / trivial handler: {ratio:.1}% ({backend})");
    }
}
