//! Who may call the legacy routes: a bearer with the route's permission (401 / 403 in their
//! own error body), everyone when the deployment opens them, the CSV also through its signed
//! link; a revoked key refused by every instance on the store within a second.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use segments::Settings;
use segments::auth::Permission;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::helpers::{TestApp, spawn_with_settings};

/// Every legacy route, the permission it needs, and a request that succeeds with it.
fn legacy_routes() -> Vec<(Method, &'static str, Option<Value>, Permission)> {
    vec![
        (Method::GET, "/segments", None, Permission::SegmentsRead),
        (Method::GET, "/segments/KNOWN", None, Permission::SegmentsRead),
        (Method::POST, "/segments", Some(json!({"slug": "NEW"})), Permission::SegmentsCreate),
        (Method::DELETE, "/segments/DOOMED", None, Permission::SegmentsDelete),
        (
            Method::POST,
            "/segments/users",
            Some(json!({"id": 1, "add": [{"slug": "KNOWN"}]})),
            Permission::SegmentsUpdate,
        ),
        (Method::GET, "/segments/users/1", None, Permission::SegmentsRead),
        (Method::GET, "/segments/users/1/history?from=2023-08-30&to=2023-08-31", None, Permission::SegmentsRead),
        (Method::GET, "/history/1/2023-08-30/2023-08-31/history.csv", None, Permission::SegmentsRead),
    ]
}

/// 401 without a credential, 403 with a key lacking the route's permission, success with it,
/// each refusal in the legacy error body.
pub async fn legacy_routes_need_a_credential(app: &TestApp) {
    app.create_slug("KNOWN").await;
    let all =
        [Permission::SegmentsRead, Permission::SegmentsCreate, Permission::SegmentsUpdate, Permission::SegmentsDelete];
    let mut keys = Vec::new();
    for permission in all {
        keys.push((permission, app.mint(&[permission]).await));
    }
    for (method, path, body, needed) in legacy_routes() {
        if method == Method::DELETE {
            app.create_slug("DOOMED").await;
        }
        for token in [None, Some("wrong"), Some("cmsk_0000"), Some("")] {
            let reply = app.send(method.clone(), path, body.as_ref(), token).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}: {}", reply.text);
            assert_eq!(reply.error_code(), "UNAUTHORIZED", "{method} {path}: {}", reply.text);
        }
        for (permission, key) in &keys {
            if *permission == needed {
                continue;
            }
            let reply = app.send(method.clone(), path, body.as_ref(), Some(key)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path} with {permission:?}: {}", reply.text);
            assert_eq!(reply.error_code(), "FORBIDDEN");
            assert!(reply.body["error"]["message"].as_str().unwrap().contains(needed.as_str()), "{}", reply.text);
        }
        let key = &keys.iter().find(|(permission, _)| *permission == needed).unwrap().1;
        let reply = app.send(method.clone(), path, body.as_ref(), Some(key)).await;
        assert!(reply.status.is_success(), "{method} {path} with {needed:?}: {} {}", reply.status, reply.text);
        let reply = app.send(method.clone(), path, body.as_ref(), Some(&app.admin)).await;
        assert!(
            reply.status.is_success() || (method == Method::POST && reply.status == StatusCode::CONFLICT),
            "{method} {path} as the admin: {} {}",
            reply.status,
            reply.text
        );
    }
    // A bad body is not read before the credential.
    let reply = app.send_raw(Method::POST, "/segments", "application/json", "{", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// With `segments_open_legacy` the legacy routes answer without a credential; /api/v1 does not.
pub async fn the_open_setting_reopens_the_legacy_routes(app: &TestApp) {
    let settings = Settings { admin_token: Some("open-admin".into()), segments_open_legacy: true };
    let Some(open) = spawn_with_settings(app.backend, "the_open_setting_reopens_the_legacy_routes", settings).await
    else {
        return;
    };
    let created = open.send(Method::POST, "/segments", Some(&json!({"slug": "KNOWN"})), None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    open.send(Method::POST, "/segments", Some(&json!({"slug": "DOOMED"})), None).await;
    for (method, path, body, _) in legacy_routes() {
        let reply = open.send(method.clone(), path, body.as_ref(), None).await;
        assert!(
            reply.status.is_success() || reply.status == StatusCode::CONFLICT,
            "{method} {path} open: {} {}",
            reply.status,
            reply.text
        );
    }
    let v1 = open.send(Method::GET, "/api/v1/segments", None, None).await;
    assert_eq!(v1.status, StatusCode::UNAUTHORIZED, "/api/v1 stays closed");
    // The setting's name, as the binary documents it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_segments")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--open-legacy-routes") && help.contains("CHATMESH_SEGMENTS_OPEN_LEGACY"), "{help}");
}

/// The CSV link works without a credential for the user and range it was made for, until it
/// expires; a changed path, a bad signature or a missing one is a 401; a bearer still works.
pub async fn history_links_are_signed(app: &TestApp) {
    app.create_slug("KNOWN").await;
    app.post("/segments/users", &json!({"id": 73234, "add": [{"slug": "KNOWN"}]})).await;
    let reply = app.get("/segments/users/73234/history?from=2023-08-30&to=2023-08-31").await;
    let link = reply.body["link"].as_str().unwrap().to_owned();
    let anonymous = |url: String| async move { app.http.get(url).send().await.unwrap() };
    let csv = anonymous(link.clone()).await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.text().await.unwrap().starts_with("73234,KNOWN,add,"));

    let (path, query) = link.split_once('?').unwrap();
    let tampered = [
        (path.replace("/73234/", "/73235/"), query.to_owned()),
        (path.replace("2023-08-31", "2023-09-30"), query.to_owned()),
        (path.to_owned(), query.replace("signature=", "signature=00")),
        (path.to_owned(), format!("{query}ff")),
        (path.to_owned(), query.replace("expires=", "expires=9")),
    ];
    for (path, query) in tampered {
        let reply = anonymous(format!("{path}?{query}")).await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{path}?{query}");
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
    assert_eq!(anonymous(path.to_owned()).await.status(), StatusCode::UNAUTHORIZED, "no signature, no bearer");
    // An expiry that is no integer is a bad request, with or without a credential.
    let garbled = format!("{path}?{}", query.replace("expires=", "expires=x"));
    assert_eq!(anonymous(garbled.clone()).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.http.get(&garbled).bearer_auth(&app.admin).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    // A bearer decides when one is sent: a key without SEGMENTS_READ is refused even with the link.
    let creator = app.mint(&[Permission::SegmentsCreate]).await;
    assert_eq!(app.http.get(&link).bearer_auth(&creator).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let reader = app.mint(&[Permission::SegmentsRead]).await;
    assert_eq!(app.http.get(path).bearer_auth(&reader).send().await.unwrap().status(), StatusCode::OK);

    // Expired: the link is refused, a new one works.
    app.advance(segments::auth::LINK_LIFETIME_SECS * 1000 + 1000);
    let expired = anonymous(link.clone()).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(expired.text().await.unwrap().contains("expired"));
    assert_eq!(app.history_csv("73234", "2023-08-30", "2023-08-31").await.lines().count(), 1);
}

/// The CSV is written from the store for the one user its path names: `..`, encoded slashes
/// and absolute paths reach no file, with or without a credential.
pub async fn history_paths_never_reach_a_file(app: &TestApp) {
    app.create_slug("KNOWN").await;
    app.post("/segments/users", &json!({"id": 73234, "add": [{"slug": "KNOWN"}]})).await;
    let reply = app.get("/segments/users/73234/history?from=2023-08-30&to=2023-08-31").await;
    let link = reply.body["link"].as_str().unwrap().to_owned();
    let query = link.split_once('?').unwrap().1.to_owned();
    let range = "2023-08-30/2023-08-31";
    let targets = [
        format!("/history/../../../../etc/passwd/{range}/history.csv"),
        format!("/history/..%2F..%2F..%2F..%2Fetc%2Fpasswd/{range}/history.csv"),
        format!("/history/%2e%2e%2f%2e%2e%2fetc%2fpasswd/{range}/history.csv"),
        format!("/history/%2Fetc%2Fpasswd/{range}/history.csv"),
        format!("/history/..%5C..%5Cwindows%5Cwin.ini/{range}/history.csv"),
        "/history/73234/../../../etc/passwd/history.csv".to_owned(),
        format!("/history/73234/{range}/..%2F..%2Fetc%2Fpasswd"),
        "/history/../../etc/passwd".to_owned(),
        "//etc/passwd".to_owned(),
    ];
    for target in &targets {
        let signed = format!("{target}?{query}");
        for (request, bearer) in [(target, None), (&signed, None), (target, Some(app.admin.as_str()))] {
            let (status, body) = raw_get(&app.base, request, bearer).await;
            assert!(!body.contains("root:") && !body.contains("[fonts]"), "{request}: {body}");
            if bearer.is_none() {
                assert!([401, 404].contains(&status), "{request} without a credential: {status} {body}");
            } else {
                // The admin may read any user's history: here a user of that odd name, who has none.
                assert!(
                    (status == 200 && body.is_empty()) || (400..500).contains(&status),
                    "{request}: {status} {body}"
                );
            }
        }
    }
}

/// A GET over a plain TCP connection, so the path goes out exactly as written (an HTTP client
/// would resolve `..` itself): (status, body).
async fn raw_get(base: &str, target: &str, bearer: Option<&str>) -> (u16, String) {
    let authority = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await.expect("connect");
    let authorization = bearer.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// `segments revoke-key` (by id or by the key): the key stops working within a second on this
/// instance and on a second `segments` process on the same store, both of which had it cached.
pub async fn revoked_keys_are_refused_everywhere_within_a_second(app: &TestApp) {
    let minted = segments::auth::mint_key(
        app.state.db(),
        "to revoke",
        segments::auth::Permissions::from_list(&[Permission::SegmentsRead]),
    )
    .await
    .unwrap();
    let other = SegmentsProcess::start(app).await;
    let instances = [app.base.clone(), other.base.clone()];
    let status = |base: String, token: String| {
        let http = app.http.clone();
        async move {
            let reply = http.get(format!("{base}/segments")).bearer_auth(token).send().await.unwrap();
            reply.status()
        }
    };
    for base in &instances {
        assert_eq!(status(base.clone(), minted.token.clone()).await, StatusCode::OK, "{base} takes the key");
    }
    let output = segments_command(app, &["revoke-key", &minted.id]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let revoked_at = Instant::now();
    for base in &instances {
        loop {
            let status = status(base.clone(), minted.token.clone()).await;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(status, StatusCode::OK);
            assert!(revoked_at.elapsed() < Duration::from_secs(1), "{base} still takes a key revoked 1 s ago");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "revoked key refused by both instances {} ms after revoke-key returned",
        revoked_at.elapsed().as_millis()
    );
    // Revoking it again, or a key never minted, is an error; revoking by the key itself works.
    assert!(!segments_command(app, &["revoke-key", &minted.id]).await.status.success());
    assert!(!segments_command(app, &["revoke-key", "cmsk_nothing"]).await.status.success());
    let key = app.mint(&[Permission::SegmentsRead]).await;
    assert!(segments_command(app, &["revoke-key", &key]).await.status.success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status(other.base.clone(), key).await, StatusCode::UNAUTHORIZED);
}

/// The `segments` binary pointed at the app's store.
fn segments_binary(app: &TestApp) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_segments"));
    command
        .arg("--data-dir")
        .arg(&app.data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("CHATMESH_CONFIG")
        .env_remove("CHATMESH_ADMIN_TOKEN")
        .env_remove("CHATMESH_SEGMENTS_OPEN_LEGACY")
        .kill_on_drop(true);
    if let Some(url) = &app.database_url {
        command.env("DATABASE_URL", url);
    }
    command
}

async fn segments_command(app: &TestApp, args: &[&str]) -> std::process::Output {
    let run = segments_binary(app).args(args).output();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("segments within a minute").expect("run segments")
}

/// A second `segments` server on the app's store.
pub struct SegmentsProcess {
    pub base: String,
    _child: tokio::process::Child,
}

impl SegmentsProcess {
    pub async fn start(app: &TestApp) -> Self {
        let mut child = segments_binary(app)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn segments");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once(" listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("segments exited before listening");
        })
        .await
        .expect("segments listens within a minute");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { base, _child: child }
    }
}
