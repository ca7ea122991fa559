//! The process-mode mesh (`deploy/mesh`) behind the gateway: the chat suite and the stream
//! suite through it (streams on two stream replicas), routing to the real services, and a
//! chat-write killed under load.
//!
//! On MySQL / MariaDB, Redis and RabbitMQ when `DATABASE_URL`, `REDIS_URL` and `AMQP_URL` are
//! set (two chat-write processes), else on the embedded backends (one chat-write); with
//! `CHATMESH_REQUIRE_BACKENDS` naming them, missing URLs fail instead.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chatmesh_e2e::acknowledged::{AckedMessage, message_numbers_handed_out_twice, read_back_messages};
use chatmesh_e2e::harness::has_binary;
use chatmesh_e2e::mesh::{MeshBackends, MeshOptions, ProcessMesh};
use serde_json::{Value, json};

use crate::helpers::{DESIGN_ROUTES, client, load, method, pid_alive, wait_marked_out, wait_until};

/// The backends the mesh tests run on: the real servers when all three URLs are set.
fn backends(test: &str) -> MeshBackends {
    let backends = MeshBackends::from_env();
    if matches!(backends, MeshBackends::Embedded) {
        for var in ["DATABASE_URL", "REDIS_URL", "AMQP_URL"] {
            // Fails when CHATMESH_REQUIRE_BACKENDS names a missing URL.
            if shared::testing::backend_url(var, test).is_none() {
                eprintln!("{test}: running the mesh on the embedded backends instead");
                break;
            }
        }
    }
    backends
}

async fn start(options: MeshOptions) -> ProcessMesh {
    tokio::task::spawn_blocking(move || ProcessMesh::start(&options)).await.expect("mesh start")
}

/// A chat-only mesh for each suite test.
async fn spawn_chat_mesh() -> ProcessMesh {
    start(MeshOptions {
        backends: backends("gateway chat suite"),
        services: Some(String::new()),
        ..MeshOptions::default()
    })
    .await
}

mod chat_suite_through_the_gateway {
    chatmesh_e2e::chat_suite_tests!(super::spawn_chat_mesh);
}

/// A chat-only mesh with two stream replicas, for each stream suite test: every stream goes
/// through the gateway to the chat-stream pool, while the changes are made through chat-write
/// and chat-read.
async fn spawn_stream_mesh() -> ProcessMesh {
    let mesh = start(MeshOptions {
        backends: backends("gateway stream suite"),
        services: Some(String::new()),
        stream_replicas: 2,
        ..MeshOptions::default()
    })
    .await;
    assert_eq!(mesh.upstreams()["chat-stream"].len(), 2, "two stream replicas in the chat-stream pool");
    mesh
}

mod stream_suite_through_the_gateway {
    chatmesh_e2e::stream_suite_tests!(super::spawn_stream_mesh);
}

fn served_by(response: &reqwest::Response) -> String {
    response.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// Every route of DESIGN.md reaches the service that names itself in `X-Served-By`
/// (segments and events when they are built).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_reaches_the_service_that_answers_it() {
    let mesh = start(MeshOptions { backends: backends("mesh routing"), ..MeshOptions::default() }).await;
    let api = chatmesh_e2e::Api::new(&mesh.url);
    let app = api.create_application("routing").await;
    let chat = api.create_chat(&app, "room").await;
    let msg = api.create_message(&app, chat, "hello there").await;
    api.get_eventually(&format!("/api/applications/{app}/chats/{chat}/messages/{msg}")).await;
    let running: Vec<&str> = ["segments", "events"].into_iter().filter(|s| has_binary(s)).collect();
    if running.len() < 2 {
        eprintln!("mesh routing: only checking chat, segments and events are built: {running:?}");
    }

    let http = client();
    let mut unnamed = Vec::new();
    let mut stream_requests = 0;
    for (index, (verb, template, pool)) in DESIGN_ROUTES.iter().enumerate() {
        if !pool.starts_with("chat") && !running.contains(pool) {
            continue;
        }
        let path =
            template.replace("{app}", &app).replace("{chat}", &chat.to_string()).replace("{msg}", &msg.to_string());
        let body = json!({ "application_name": "a", "chat_name": "c", "message_content": "routed" });
        let request_id = format!("route-check-{index}");
        let response = http
            .request(method(verb), format!("{}{path}", mesh.url))
            .header("x-request-id", &request_id)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, name) = (response.status(), served_by(&response));
        if *pool == "chat-stream" {
            // Stream replicas are chat-read processes in the stream role: they name themselves
            // chat-read, and the pool's request count below says they were reached. (A stream
            // stays open, so its access line is written only when it ends.)
            assert_eq!(name, "chat-read", "{verb} {path} answered {status}");
            stream_requests += 1;
        } else if name.is_empty() {
            // A service's own 404 / 405 fallback may not name itself: the gateway's access
            // line for this request says which pool it went to.
            unnamed.push((request_id, *pool, format!("{verb} {path} answered {status}")));
        } else {
            assert_eq!(name, *pool, "{verb} {path} answered {status}");
        }
    }
    let stream_replicas = &mesh.upstreams()["chat-stream"];
    let reached: f64 = stream_replicas
        .iter()
        .filter_map(|addr| {
            mesh.metric(&format!("gateway_upstream_requests_total{{pool=\"chat-stream\",upstream=\"{addr}\"}}"))
        })
        .sum();
    assert_eq!(
        reached,
        f64::from(stream_requests),
        "the stream routes reach the chat-stream pool ({stream_replicas:?})"
    );
    for (request_id, pool, what) in unnamed {
        let logged = wait_until(Duration::from_secs(5), || {
            mesh.log("gateway")
                .lines()
                .any(|l| l.contains(&format!("request_id={request_id} ")) && l.contains(&format!("pool=\"{pool}\"")))
        })
        .await;
        assert!(logged.is_some(), "{what}: no access line sending {request_id} to {pool}");
        eprintln!("mesh routing: {what}; the gateway's access line sent it to {pool}");
    }

    let messages = http.get(format!("{}/api/applications/{app}/chats/{chat}/messages", mesh.url)).send().await.unwrap();
    assert_eq!(
        (messages.status().as_u16(), served_by(&messages)),
        (200, "chat-read".to_owned()),
        "a GET is never a create"
    );
    let unknown = http.get(format!("{}/api/nothing-here", mesh.url)).send().await.unwrap();
    assert_eq!((unknown.status().as_u16(), served_by(&unknown)), (404, "gateway".to_owned()));
}

/// The gateway answers `/openapi.json` itself with one document merged from every pool's, which
/// lists every API operation of every running service; `/docs` (Swagger UI, from a service)
/// loads that document from the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_one_merged_openapi_document_and_the_docs() {
    let mesh = start(MeshOptions { backends: backends("mesh openapi"), ..MeshOptions::default() }).await;
    let http = client();
    let merged = http.get(format!("{}/openapi.json", mesh.url)).send().await.unwrap();
    assert_eq!((merged.status().as_u16(), served_by(&merged)), (200, "gateway".to_owned()));
    assert!(merged.headers().get("x-openapi-missing-pools").is_none(), "every pool's document was merged");
    let merged: Value = merged.json().await.unwrap();
    assert_eq!(merged["openapi"], "3.1.0");
    let listed = operations(&merged);

    let api_prefixes = ["/api/", "/segments", "/history", "/sessions/", "/events/", "/errors/", "/user/"];
    let mut expected = BTreeSet::new();
    for (pool, addrs) in mesh.upstreams() {
        if addrs.is_empty() {
            continue;
        }
        let own: Value =
            http.get(format!("http://{}/openapi.json", addrs[0])).send().await.unwrap().json().await.unwrap();
        let own_operations = operations(&own);
        assert!(!own_operations.is_empty(), "{pool} documents its operations");
        for (verb, path) in own_operations {
            if api_prefixes.iter().any(|prefix| path.starts_with(prefix)) {
                assert!(
                    merged["paths"][&path][&verb] == own["paths"][&path][&verb],
                    "{verb} {path} of {pool} is in the merged document as {pool} documents it"
                );
                expected.insert((verb, path));
            }
        }
    }
    let api_listed: BTreeSet<_> =
        listed.into_iter().filter(|(_, p)| api_prefixes.iter().any(|x| p.starts_with(x))).collect();
    assert_eq!(api_listed, expected, "the merged document lists exactly the services' API operations");
    let messages = &merged["paths"]["/api/applications/{token}/chats/{chat_number}/messages"];
    assert!(messages.get("get").is_some() && messages.get("post").is_some(), "reads and creates of one path merged");
    eprintln!("mesh openapi: {} operations merged from {} pools", expected.len(), mesh.upstreams().len());

    let docs = http.get(format!("{}/docs", mesh.url)).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger-ui-bundle.js") && page.contains(r#"url: "/openapi.json""#), "{page}");
    let script = http.get(format!("{}/docs/swagger-ui-bundle.js", mesh.url)).send().await.unwrap();
    assert_eq!(script.status().as_u16(), 200);
    assert!(script.bytes().await.unwrap().len() > 100_000, "the Swagger UI bundle is served through the gateway");
}

/// (method, path) of every operation in an OpenAPI document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
    document["paths"]
        .as_object()
        .map(|paths| {
            paths
                .iter()
                .flat_map(|(path, item)| {
                    methods.iter().filter(|m| item.get(**m).is_some()).map(|m| ((*m).to_owned(), path.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `deploy/mesh stop` ends exactly the processes `start` recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_script_stops_exactly_what_it_started() {
    let mesh = start(MeshOptions { backends: backends("mesh script"), ..MeshOptions::default() }).await;
    let pids = mesh.pids();
    assert!(
        pids.contains_key("gateway") && pids.contains_key("chat-write-1") && pids.contains_key("chat-read-1"),
        "{pids:?}"
    );
    assert!(pids.values().all(|pid| pid_alive(*pid)));
    let mut bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();

    let output = mesh.stop();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for (name, pid) in &pids {
        assert!(!pid_alive(*pid), "{name} ({pid}) still runs");
    }
    assert!(bystander.try_wait().unwrap().is_none(), "stop touched a process it did not start");
    bystander.kill().unwrap();
    let _ = bystander.wait();
    assert!(http_refused(&mesh.url), "the gateway port is closed");
}

fn http_refused(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_err()
}

/// Kills one of two chat-write processes (SIGKILL) under message-create load through the
/// gateway. Only creates in flight at the kill may fail; once the gateway marks it out, no
/// request reaches it; every 201 has its own message number and reads back through the gateway
/// with its content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_chat_writes_under_load() {
    let test = "killing_one_of_two_chat_writes_under_load";
    let (Some(database_url), Some(redis_url), Some(amqp_url)) = (
        shared::testing::backend_url("DATABASE_URL", test),
        shared::testing::backend_url("REDIS_URL", test),
        shared::testing::backend_url("AMQP_URL", test),
    ) else {
        return;
    };
    let mesh = start(MeshOptions {
        backends: MeshBackends::Production { database_url, redis_url, amqp_url },
        services: Some(String::new()),
        ..MeshOptions::default()
    })
    .await;
    let writers = mesh.upstreams()["chat-write"].clone();
    assert_eq!(writers.len(), 2, "{writers:?}");
    let api = chatmesh_e2e::Api::new(&mesh.url);
    let app = api.create_application("kill").await;
    let chat = api.create_chat(&app, "room").await;

    let url = format!("{}/api/applications/{app}/chats/{chat}/messages", mesh.url);
    let stop = Arc::new(AtomicBool::new(false));
    let sequence = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(load(8, stop.clone(), move |http, _| {
        let url = url.clone();
        // Unique contents, so a message stored under another's number shows.
        let content = format!("load {0} load{0}z", sequence.fetch_add(1, Ordering::Relaxed));
        async move { http.post(url).json(&json!({ "message_content": content })).send().await }
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = mesh.pid("chat-write-1").expect("chat-write-1 pid");
    let killed = std::time::Instant::now();
    let status = std::process::Command::new("kill").args(["-KILL", &victim.to_string()]).status().unwrap();
    assert!(status.success());
    let gone = wait_until(Duration::from_secs(5), || !pid_alive(victim)).await.expect("chat-write-1 died");
    let (noticed, requests, sent_when_noticed) = wait_marked_out(|s| mesh.metric(s), "chat-write", &writers[0]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.unwrap();

    assert_eq!(
        mesh.metric(&requests).unwrap(),
        sent_when_noticed,
        "requests reached chat-write-1 after it was marked out"
    );
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != Some(201)).collect();
    // POSTs are never sent twice. One that meets a pooled connection the dead process left
    // behind is stopped before it is written (the gateway peeks at the socket) and goes to the
    // other chat-write; but while the killed process is torn down its sockets still take
    // requests nobody will read, so a create sent in the moment after the kill may still
    // fail. The first such failure takes chat-write-1 out, so each client loses at most one
    // create; the window is bounded here, and every create after it succeeds.
    const CLOSE_NOTICED_WITHIN: Duration = Duration::from_millis(250);
    for failure in &failed {
        assert!(failure.started < gone + CLOSE_NOTICED_WITHIN, "a create sent after the kill failed: {failure:?}");
        assert!(failure.finished >= killed, "a create failed before the kill: {failure:?}");
    }
    assert!(failed.len() <= 8, "more than one failure per client: {failed:?}");
    let after = outcomes.iter().filter(|o| o.started > gone && o.status == Some(201)).count();
    assert!(after > 20, "creates went on after the kill: {after}");

    let acked: Vec<AckedMessage> = outcomes
        .iter()
        .filter(|o| o.status == Some(201))
        .map(|o| AckedMessage::from_body(&serde_json::from_str(&o.body).unwrap()).expect("a message 201"))
        .collect();
    let twice = message_numbers_handed_out_twice(&acked);
    assert!(twice.is_empty(), "numbers issued twice: {twice:?}");
    let back = read_back_messages(&api, &app, &acked, Duration::from_secs(120)).await;
    eprintln!(
        "{test}: {} creates, {} failed (in flight at the kill), {after} after it; noticed {:?} after the kill; {}",
        outcomes.len(),
        failed.len(),
        noticed.saturating_duration_since(gone),
        if back.lost() == 0 { format!("all {} read back with their content", acked.len()) } else { back.to_string() }
    );
    back.assert_complete();
}
