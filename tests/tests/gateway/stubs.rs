//! The gateway in front of stub upstreams (`chatmesh-stub`), which name themselves and echo
//! what reached them: every behaviour of the gateway without any backend.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatmesh_e2e::harness::{GatewayProcess, Stub, http_get, write_upstreams};
use serde_json::Value;

use crate::helpers::{
    DESIGN_ROUTES, POOLS, chat_read_gateway, client, config_with, express_and_pingora, fast_config, gateway, load,
    method, stub, stub_binary, wait_marked_out, wait_until,
};

fn served_by(response: &reqwest::Response) -> String {
    response.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn stats(stub: &Stub, method: &str) -> u64 {
    let body = http_get(&format!("http://{}/stats", stub.addr)).unwrap_or_default();
    serde_json::from_str::<Value>(&body).ok().and_then(|v| v[method].as_u64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_design_reaches_its_pool() {
    let dir = tempfile::tempdir().unwrap();
    let stubs: Vec<Stub> = POOLS.iter().map(|n| stub(n)).collect();
    let pools: Vec<(&str, Vec<String>)> = POOLS.iter().zip(&stubs).map(|(p, s)| (*p, vec![s.addr.clone()])).collect();
    let config = fast_config(dir.path());
    let gateway = GatewayProcess::start(dir.path(), &config, &pools);
    for (pool, stub) in POOLS.iter().zip(&stubs) {
        gateway.wait_healthy(pool, &[&stub.addr]);
    }
    let http = client();
    for (verb, template, pool) in DESIGN_ROUTES {
        let path = template.replace("{app}", "5f0c9a").replace("{chat}", "3").replace("{msg}", "2");
        let response = http
            .request(method(verb), format!("{}{path}", gateway.url))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(served_by(&response), *pool, "{verb} {path}");
        let echoed = json(response).await;
        let sent_path = path.split('?').next().unwrap();
        assert_eq!(echoed["path"], sent_path, "the path reaches the upstream unchanged");
        assert_eq!(echoed["method"], *verb);
    }

    for path in ["/", "/api", "/api/nothing-here", "/api/v2/segments", "/metrics", "/sessionsx"] {
        let response = http.get(format!("{}{path}", gateway.url)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(served_by(&response), "gateway");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(json(response).await["error"]["code"], "NOT_FOUND", "{path}");
    }
    let health = http.get(format!("{}/healthz", gateway.url)).send().await.unwrap();
    assert_eq!((health.status().as_u16(), served_by(&health)), (200, "gateway".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_passed_upstream_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gateway) = chat_read_gateway(dir.path(), &[]);
    let http = client();
    let url = format!("{}/api/applications", gateway.url);

    let response = http.get(&url).header("x-request-id", "client-chose-this-1").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chose-this-1");
    assert_eq!(json(response).await["request_id"], "client-chose-this-1", "the upstream got the client's id");

    let response = http.get(&url).send().await.unwrap();
    let made = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.len() == 32 && made.chars().all(|c| c.is_ascii_hexdigit()), "{made}");
    assert_eq!(json(response).await["request_id"], made.as_str());

    let response = http.get(&url).header("x-request-id", "bad id with spaces").send().await.unwrap();
    assert_ne!(response.headers()["x-request-id"], "bad id with spaces", "an unprintable id is replaced");

    let not_found = http.get(format!("{}/nope", gateway.url)).send().await.unwrap();
    assert!(not_found.headers().contains_key("x-request-id"), "the gateway's own answers carry one too");

    let logged = wait_until(Duration::from_secs(5), || {
        let log = gateway.process.log_text();
        log.lines()
            .any(|l| l.contains("client-chose-this-1") && l.contains("status=200") && l.contains("pool=\"chat-read\""))
            && log.contains(&made)
    })
    .await;
    assert!(logged.is_some(), "one access line per request: {}", gateway.process.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_healthy_upstreams_and_back_after_a_passing_check() {
    let dir = tempfile::tempdir().unwrap();
    let first = stub("first");
    let mut second = stub("second");
    let gateway = gateway(dir.path(), &fast_config(dir.path()), "chat-read", &[&first, &second]);
    let http = client();
    let url = format!("{}/api/applications", gateway.url);

    let mut names = Vec::new();
    for _ in 0..10 {
        names.push(served_by(&http.get(&url).send().await.unwrap()));
    }
    assert_eq!(names.iter().filter(|n| *n == "first").count(), 5, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "second").count(), 5, "{names:?}");

    let second_addr = second.addr.clone();
    drop(second.process);
    for _ in 0..10 {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!((response.status().as_u16(), served_by(&response)), (200, "first".to_owned()));
    }
    gateway.wait_healthy("chat-read", &[&first.addr]);

    second = Stub::start(&stub_binary(), "second", Some(&second_addr), false);
    gateway.wait_healthy("chat-read", &[&first.addr, &second.addr]);
    let mut names = Vec::new();
    for _ in 0..10 {
        names.push(served_by(&http.get(&url).send().await.unwrap()));
    }
    assert!(names.contains(&"second".to_owned()), "back in rotation: {names:?}");
}

/// Two chat-write stubs under create load (each answer takes 5 ms, so requests are in flight
/// at any moment); one is killed. Only requests sent before it was gone may fail, and once the
/// gateway has marked it unhealthy no request reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_upstream_under_load_fails_only_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let survivor = stub("survivor");
    let mut victim = stub("victim");
    let gateway = gateway(dir.path(), &config_with(dir.path(), &[]), "chat-write", &[&survivor, &victim]);
    let url = format!("{}/api/applications/app/chats?delay_ms=5", gateway.url);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(8, stop.clone(), move |http, _| {
        let url = url.clone();
        async move { http.post(url).header("content-type", "application/json").body("{\"chat_name\":\"c\"}").send().await }
    }));
    tokio::time::sleep(Duration::from_millis(800)).await;

    let killed = Instant::now();
    victim.process.child.kill().unwrap();
    victim.process.child.wait().unwrap();
    let gone = Instant::now();
    let (_, requests, sent_when_noticed) = wait_marked_out(|s| gateway.metric(s), "chat-write", &victim.addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.unwrap();

    assert_eq!(gateway.metric(&requests).unwrap(), sent_when_noticed, "requests reached it after it was marked out");
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != Some(201) && o.status != Some(200)).collect();
    for failure in &failed {
        assert!(failure.started < gone, "a request sent after the kill failed: {failure:?}");
        assert!(failure.finished >= killed, "a request failed before the kill: {failure:?}");
        assert_eq!(failure.status, Some(502), "a failure is a JSON 502: {failure:?}");
        assert!(failure.body.contains("BAD_GATEWAY"), "{failure:?}");
    }
    assert!(failed.len() <= 8, "at most one request per client was in flight: {}", failed.len());
    let after: Vec<_> = outcomes.iter().filter(|o| o.started > gone).collect();
    assert!(after.len() > 50, "load went on after the kill: {}", after.len());
    assert!(stats(&survivor, "POST") > 0);
}

/// The express lane (plain requests) and pingora-proxy (everything, with `express = false`)
/// answer alike: the same statuses, bodies and headers for each framing of the upstream's
/// response (length, chunked, until close), for HEAD, for bodies on either side of the express
/// lane's limit, and for a chain of X-Forwarded-For; each over a reused keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_express_lane_and_pingora_proxy_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = stub("chat-read");
    let gateways = express_and_pingora(dir.path(), &upstream);
    let large = "x".repeat(300 * 1024);
    let cases: Vec<(&str, &str, Option<&str>, Option<&str>)> = vec![
        ("GET", "/api/applications", None, None),
        ("GET", "/api/applications?framing=chunked", None, None),
        ("GET", "/api/applications?framing=close", None, None),
        ("HEAD", "/api/applications", None, None),
        ("POST", "/api/applications", Some("{\"name\":\"a\"}"), None),
        ("POST", "/api/applications?framing=chunked", Some(large.as_str()), None),
        ("GET", "/api/applications?status=404", None, Some("10.1.2.3")),
        ("PUT", "/api/applications/tok?framing=close", Some("{}"), Some("10.1.2.3, 10.4.5.6")),
    ];
    let mut answers: Vec<Vec<String>> = Vec::new();
    for gateway in &gateways {
        let http = client();
        let mut seen = Vec::new();
        for round in 0..2 {
            for (verb, path, body, forwarded) in &cases {
                let mut request = http.request(method(verb), format!("{}{path}", gateway.url));
                if let Some(body) = body {
                    request = request.header("content-type", "application/json").body((*body).to_owned());
                }
                if let Some(forwarded) = forwarded {
                    request = request.header("x-forwarded-for", *forwarded);
                }
                let what = format!("{verb} {path} (round {round}, {})", gateway.url);
                let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                let status = response.status().as_u16();
                let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
                assert_eq!(served_by(&response), "chat-read", "{what}");
                assert!(!response.headers().contains_key("x-trailer"), "{what}");
                let text = response.text().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                if *verb == "HEAD" {
                    assert_eq!(text, "", "{what}");
                    seen.push(format!("{verb} {path} {status}"));
                    continue;
                }
                let echo: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
                assert_eq!(echo["request_id"], id.as_str(), "{what}: the upstream got the id the client sees");
                let expected_chain = match forwarded {
                    Some(earlier) => format!("{earlier}, 127.0.0.1"),
                    None => "127.0.0.1".to_owned(),
                };
                assert_eq!(echo["forwarded_for"], expected_chain.as_str(), "{what}");
                assert_eq!(echo["body_bytes"], body.map_or(0, str::len), "{what}");
                seen.push(format!("{verb} {path} {status} {} {}", echo["method"], echo["path"]));
            }
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1], "express lane (left) and pingora-proxy (right) differ");
    assert!(answers[0].iter().any(|a| a.contains(" 404 ")), "{:?}", answers[0]);

    // A response whose framing is broken before any of it went out: a JSON 502 from the
    // express lane, not a bare close.
    let broken = client().get(format!("{}/api/applications?framing=badchunk", gateways[0].url)).send().await.unwrap();
    assert_eq!(broken.status(), 502);
    assert_eq!(json(broken).await["error"]["code"], "BAD_GATEWAY");
}

/// An upstream that passes its health check but drops requests (a crash mid-request): a GET
/// that met it is retried once on another upstream, a POST never. Each drop takes it out at
/// once, and its next passing check brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_once_and_posts_never() {
    let dir = tempfile::tempdir().unwrap();
    let dropper = Stub::start(&stub_binary(), "dropper", None, true);
    let good = stub("good");
    let gateway = gateway(dir.path(), &fast_config(dir.path()), "chat-read", &[&dropper, &good]);
    let http = client();
    let url = format!("{}/api/applications", gateway.url);
    let healthy = format!("gateway_upstream_healthy{{pool=\"chat-read\",upstream=\"{}\"}}", dropper.addr);
    let dropper_in = || gateway.metric(&healthy) == Some(1.0);

    // Each request waits until the dropper takes traffic, so round robin sends it some.
    let mut gets = 0;
    while stats(&dropper, "GET") < 3 && gets < 60 {
        wait_until(Duration::from_secs(5), dropper_in).await.expect("the dropper passes its checks");
        let response = http.get(&url).send().await.unwrap();
        assert_eq!((response.status().as_u16(), served_by(&response)), (200, "good".to_owned()));
        gets += 1;
    }
    let dropped_gets = stats(&dropper, "GET");
    assert!(dropped_gets >= 3, "round robin sent GETs to the dropper: {dropped_gets} of {gets}");
    assert_eq!(stats(&good, "GET"), gets, "each GET reached the good upstream exactly once");
    assert_eq!(gateway.metric("gateway_retries_total{pool=\"chat-read\"}"), Some(dropped_gets as f64));

    let (mut posts, mut bad_gateways) = (0, 0);
    while stats(&dropper, "POST") < 3 && posts < 60 {
        wait_until(Duration::from_secs(5), dropper_in).await.expect("the dropper passes its checks");
        let response = http.post(&url).header("content-type", "application/json").body("{}").send().await.unwrap();
        if response.status() == 502 {
            assert_eq!(json(response).await["error"]["code"], "BAD_GATEWAY");
            bad_gateways += 1;
        } else {
            assert_eq!((response.status().as_u16(), served_by(&response)), (200, "good".to_owned()));
        }
        posts += 1;
    }
    let dropped_posts = stats(&dropper, "POST");
    assert!(dropped_posts >= 3, "round robin sent POSTs to the dropper: {dropped_posts} of {posts}");
    assert_eq!(bad_gateways, dropped_posts, "a POST that reached the dropper is not sent again");
    assert_eq!(stats(&good, "POST") + dropped_posts, posts, "no POST was sent twice");

    // Every drop took the dropper out at once: it only had traffic while it was in.
    let drops = (dropped_gets + dropped_posts) as usize;
    let taken_out = || gateway.process.log_text().matches("failed a request before answering").count();
    wait_until(Duration::from_secs(5), || taken_out() == drops).await;
    assert_eq!(taken_out(), drops, "{}", gateway.process.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_one_other_upstream_only() {
    let dir = tempfile::tempdir().unwrap();
    let droppers: Vec<Stub> = (0..3).map(|i| Stub::start(&stub_binary(), &format!("d{i}"), None, true)).collect();
    let gateway = gateway(dir.path(), &fast_config(dir.path()), "chat-read", &droppers.iter().collect::<Vec<_>>());
    let response = client().get(format!("{}/api/applications", gateway.url)).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(json(response).await["error"]["code"], "BAD_GATEWAY");
    let attempts: u64 = droppers.iter().map(|d| stats(d, "GET")).sum();
    assert_eq!(attempts, 2, "the first try and one retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_503_504_413() {
    let dir = tempfile::tempdir().unwrap();
    let (slow, gateway) = chat_read_gateway(dir.path(), &[("read_timeout_ms", "300")]);
    let http = client();

    let unavailable = http.get(format!("{}/segments", gateway.url)).send().await.unwrap();
    assert_eq!(unavailable.status(), 503, "a pool without a healthy upstream");
    assert_eq!(json(unavailable).await["error"]["code"], "SERVICE_UNAVAILABLE");

    let timed_out = http.get(format!("{}/api/applications?delay_ms=1000", gateway.url)).send().await.unwrap();
    assert_eq!(timed_out.status(), 504);
    assert_eq!(json(timed_out).await["error"]["code"], "GATEWAY_TIMEOUT");

    let huge = vec![b'x'; 2 * 1024 * 1024];
    let too_large = http
        .post(format!("{}/api/applications", gateway.url))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(json(too_large).await["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(stats(&slow, "POST"), 0, "an over-limit body never reaches the upstream");

    // Chunked, so the limit is found while streaming (the stub, which does not read chunked
    // bodies, is told to wait so it cannot answer first).
    let addr = gateway.url.trim_start_matches("http://").to_owned();
    let reply = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "POST /api/applications?delay_ms=2000 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..20 {
            if write!(stream, "{:x}\r\n", chunk.len()).is_err() || stream.write_all(&chunk).is_err() || stream.write_all(b"\r\n").is_err() {
                break;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("PAYLOAD_TOO_LARGE"), "{reply}");
}

/// A reload (SIGHUP, or POST /reload) swaps the pools; a request already in flight to the
/// old upstream finishes there; a bad config is refused and the running one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_pools_without_dropping_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let old = stub("old");
    let new = stub("new");
    let gateway = gateway(dir.path(), &fast_config(dir.path()), "chat-read", &[&old]);
    let http = client();
    let url = format!("{}/api/applications", gateway.url);

    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), format!("{url}?delay_ms=1500"));
        async move { http.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let empty: Vec<String> = Vec::new();
    write_upstreams(
        &gateway.upstreams_file,
        &[
            ("chat-write", empty.clone()),
            ("chat-read", vec![new.addr.clone()]),
            ("segments", empty.clone()),
            ("events", empty),
        ],
    );
    gateway.process.signal("HUP");
    gateway.wait_healthy("chat-read", &[&new.addr]);
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(served_by(&response), "new");
    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(
        (finished.status().as_u16(), served_by(&finished)),
        (200, "old".to_owned()),
        "the in-flight request finished"
    );
    assert_eq!(gateway.metric("gateway_config_reloads_total{result=\"ok\"}"), Some(1.0));

    std::fs::write(&gateway.upstreams_file, "chat-read = [\"not an address\"]\n").unwrap();
    let reload = http.post(format!("{}/reload", gateway.admin_url));
    let refused = reload.bearer_auth(gateway.admin_token.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(json(refused).await["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(served_by(&http.get(&url).send().await.unwrap()), "new", "the running config stays");
    assert_eq!(gateway.metric("gateway_config_reloads_total{result=\"error\"}"), Some(1.0));
}

/// SIGTERM: no new connections, in-flight requests finish, and the process exits as soon as
/// they have (not after the whole grace period).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, mut gateway) = chat_read_gateway(dir.path(), &[]);
    let http = client();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{}/api/applications?delay_ms=1000", gateway.url));
            tokio::spawn(async move { http.get(url).send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = Instant::now();
    gateway.process.signal("TERM");
    for request in slow {
        let response = request.await.unwrap().expect("an in-flight request completes");
        assert_eq!(response.status(), 200);
        assert_eq!(json(response).await["served_by"], "chat-read");
    }
    let exited = tokio::task::spawn_blocking(move || {
        let exited = gateway.process.wait_exit(Duration::from_secs(5));
        (exited, gateway)
    })
    .await
    .unwrap();
    assert!(exited.0, "the gateway did not exit after draining");
    assert!(
        term.elapsed() < Duration::from_secs(4),
        "exited {:?} after SIGTERM (grace period is 10 s)",
        term.elapsed()
    );
    assert!(exited.1.process.log_text().contains("no request in flight, exiting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_admin_port() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, gateway) = chat_read_gateway(dir.path(), &[]);
    let http = client();
    for _ in 0..5 {
        http.get(format!("{}/api/applications", gateway.url)).send().await.unwrap();
    }
    http.get(format!("{}/nope", gateway.url)).send().await.unwrap();
    // The access phase (which counts, and then leaves the in-flight gauge) runs just after the
    // response is written.
    let mut text = String::new();
    wait_until(Duration::from_secs(5), || {
        text = http_get(&format!("{}/metrics", gateway.admin_url)).unwrap_or_default();
        text.contains("gateway_requests_total{pool=\"gateway\",class=\"4xx\"} 1")
            && text.contains("gateway_in_flight_requests 0")
    })
    .await;
    for series in [
        "gateway_requests_total{pool=\"chat-read\",class=\"2xx\"} 5",
        "gateway_requests_total{pool=\"gateway\",class=\"4xx\"} 1",
        "gateway_request_duration_seconds_count{pool=\"chat-read\"} 5",
        "gateway_in_flight_requests 0",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "gateway_upstream_requests_total{{pool=\"chat-read\",upstream=\"{}\"}} 5",
            upstream.addr
        ))
    );
    assert!(text.contains(&format!("gateway_upstream_healthy{{pool=\"chat-read\",upstream=\"{}\"}} 1", upstream.addr)));
    let public = http.get(format!("{}/metrics", gateway.url)).send().await.unwrap();
    assert_eq!(public.status(), 404, "metrics stay off the public port");
    let ready = http.get(format!("{}/readyz", gateway.admin_url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// `POST /reload` takes the admin token as a bearer and nothing else (401 JSON otherwise, the
/// config untouched); a gateway started without one refuses every reload over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gateway) = chat_read_gateway(dir.path(), &[]);
    let token = gateway.admin_token.clone().unwrap();
    let http = client();
    let reload = || http.post(format!("{}/reload", gateway.admin_url));
    for (what, request) in [
        ("no credential", reload()),
        ("a wrong token", reload().bearer_auth("not-it")),
        ("the token's first half", reload().bearer_auth(&token[..token.len() / 2])),
        ("the token and more", reload().bearer_auth(format!("{token}x"))),
        ("the token as basic auth", reload().basic_auth("admin", Some(&token))),
    ] {
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), 401, "{what}");
        assert!(refused.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        assert!(refused.headers().contains_key("www-authenticate"), "{what}");
        let body = json(refused).await;
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}: {body}");
    }
    assert_eq!(gateway.metric("gateway_config_reloads_total{result=\"ok\"}").unwrap_or(0.0), 0.0, "nothing reloaded");
    let reloaded = reload().bearer_auth(&token).send().await.unwrap();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(json(reloaded).await["reloaded"], true);
    assert_eq!(gateway.metric("gateway_config_reloads_total{result=\"ok\"}"), Some(1.0));
    // The rest of the admin port stays readable (it listens on loopback).
    assert!(http_get(&format!("{}/metrics", gateway.admin_url)).is_some());

    let dir = tempfile::tempdir().unwrap();
    let pools: Vec<(&str, Vec<String>)> = POOLS.iter().map(|p| (*p, Vec::new())).collect();
    let unset = GatewayProcess::start_with_admin_token(dir.path(), &fast_config(dir.path()), &pools, None);
    for bearer in ["", "anything"] {
        let refused = http.post(format!("{}/reload", unset.admin_url)).bearer_auth(bearer).send().await.unwrap();
        assert_eq!(refused.status(), 401, "no admin token configured: no reload over HTTP");
    }
    let said = wait_until(Duration::from_secs(5), || unset.process.log_text().contains("no admin token configured"));
    assert!(said.await.is_some(), "said at start: {}", unset.process.log_text());
}

/// The admin port listens on loopback in the deployed config (and docker-compose.yml
/// publishes only the public port, see `compose`).
#[test]
fn the_admin_port_listens_on_loopback() {
    let text = std::fs::read_to_string(chatmesh_e2e::harness::repo_root().join("deploy/gateway.toml")).unwrap();
    let admin_listen = text
        .lines()
        .find_map(|line| line.strip_prefix("admin_listen"))
        .and_then(|rest| rest.split('"').nth(1))
        .expect("deploy/gateway.toml sets admin_listen");
    let addr: std::net::SocketAddr = admin_listen.parse().unwrap();
    assert!(addr.ip().is_loopback(), "admin_listen = {admin_listen}");
}

/// Every JSON error the gateway answers itself carries a code of the services' one table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_error_codes_come_from_the_shared_table() {
    let dir = tempfile::tempdir().unwrap();
    let dropper = Stub::start(&stub_binary(), "dropper", None, true);
    let gateway = gateway(dir.path(), &fast_config(dir.path()), "chat-read", &[&dropper]);
    let http = client();
    let known: Vec<&str> = shared::ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    let answers = [
        http.get(format!("{}/no/such/route", gateway.url)).send().await.unwrap(),
        http.get(format!("{}/segments", gateway.url)).send().await.unwrap(),
        http.get(format!("{}/api/applications", gateway.url)).send().await.unwrap(),
        http.get(format!("{}/nothing", gateway.admin_url)).send().await.unwrap(),
        http.post(format!("{}/reload", gateway.admin_url)).send().await.unwrap(),
    ];
    let mut seen = Vec::new();
    for response in answers {
        let status = response.status().as_u16();
        let body = json(response).await;
        let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("{status}: {body}")).to_owned();
        assert!(known.contains(&code.as_str()), "{code} is not in shared::ErrorCode");
        let table_status = shared::ErrorCode::ALL.iter().find(|c| c.as_str() == code).unwrap().status().as_u16();
        assert_eq!(status, table_status, "{code}");
        seen.push(code);
    }
    assert_eq!(seen, ["NOT_FOUND", "SERVICE_UNAVAILABLE", "BAD_GATEWAY", "NOT_FOUND", "UNAUTHORIZED"]);
}
