//! `/docs`: Swagger UI renders in headless Chromium with the network cut off, every asset
//! served by chatmesh itself, and lists the chat and segments operations.
//!
//! Chromium runs with a proxy that answers nothing for every host but the server's, so any
//! outside fetch (a CDN, a validator) fails; finding it and skipping without it follow
//! [`chatmesh_e2e::browser`].

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chatmesh_e2e::browser::{OFFLINE_FLAGS, chromium_or_skip, screenshot_path};
use shared::shutdown::channel;

/// Runs Chromium headless on `url` with the network cut off but for 127.0.0.1, and `extra`.
async fn run_chromium(binary: &Path, profile: &Path, url: &str, extra: &[String]) -> std::process::Output {
    let mut command = tokio::process::Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2000",
            "--virtual-time-budget=10000",
        ])
        .args(OFFLINE_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium finishes within two minutes")
        .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_render_offline_in_headless_chromium() {
    let Some(chromium) = chromium_or_skip("docs_render_offline_in_headless_chromium") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = chatmesh::start(&chatmesh::Config::embedded(dir.path().join("data"))).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = channel();
    let served = tokio::spawn(server.serve(listener, shutdown));

    // The page and both assets come from the server, with no URL elsewhere.
    let page = reqwest::get(format!("{base}/docs")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no outside URL in the page:\n{html}");
    for (asset, kind) in [("/docs/swagger-ui-bundle.js", "text/javascript"), ("/docs/swagger-ui.css", "text/css")] {
        let reply = reqwest::get(format!("{base}{asset}")).await.unwrap();
        assert_eq!(reply.status(), 200, "{asset}");
        assert!(reply.headers()["content-type"].to_str().unwrap().starts_with(kind), "{asset}");
        assert!(reply.bytes().await.unwrap().len() > 10_000, "{asset} is the real asset");
    }

    let url = format!("{base}/docs");
    let dom = run_chromium(&chromium, &dir.path().join("profile-dom"), &url, &["--dump-dom".to_owned()]).await;
    let dom_text = String::from_utf8_lossy(&dom.stdout).replace('\u{200b}', "");
    assert!(dom.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&dom.stderr));
    for operation in [
        "/api/applications",
        "/api/applications/{token}/chats",
        "/api/applications/{token}/chats/{chat_number}/messages",
        "/api/applications/{token}/chats/{chat_number}/search",
        "/segments/users",
        "/api/v1/segments",
    ] {
        assert!(
            dom_text.contains(&format!("data-path=\"{operation}\"")),
            "the rendered docs list no {operation}; the DOM was:\n{}",
            &dom_text[..dom_text.len().min(4000)]
        );
    }
    assert!(dom_text.contains("opblock-summary-method"), "operations render with their methods");

    let screenshot = screenshot_path("docs");
    let _ = std::fs::remove_file(&screenshot);
    let shot = run_chromium(
        &chromium,
        &dir.path().join("profile-shot"),
        &url,
        &[format!("--screenshot={}", screenshot.display())],
    )
    .await;
    assert!(shot.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&shot.stderr));
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot, {} bytes", png.len());
    eprintln!("docs screenshot: {}", screenshot.display());

    trigger.trigger();
    served.await.unwrap().unwrap();
}
