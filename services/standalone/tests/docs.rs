//! `/docs`: Swagger UI renders in headless Chromium with the network cut off, every asset
//! served by chatmesh itself, and lists the chat and segments operations.
//!
//! Chromium (Debian's `chromium`, or `CHROMIUM` naming a binary) runs with a proxy that
//! answers nothing (`127.0.0.1:9`) for every host but the server's, so any outside fetch (a
//! CDN, a validator) fails. Without Chromium the test prints why it is skipped, unless
//! `CHATMESH_REQUIRE_BACKENDS` names `CHROMIUM` (as `.ci/run` does), which makes it fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shared::shutdown::channel;
use shared::testing::REQUIRE_FLAG;

/// The Chromium binary: `$CHROMIUM`, else the first of Debian's names found on the `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&dirs).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium, or `None` after printing why the test is skipped.
///
/// # Panics
/// When Chromium is missing and [`REQUIRE_FLAG`] names `CHROMIUM`.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        let required = std::env::var(REQUIRE_FLAG).is_ok_and(|flag| {
            let flag = flag.trim();
            flag == "1"
                || flag.eq_ignore_ascii_case("all")
                || flag.eq_ignore_ascii_case("true")
                || flag.split(',').any(|name| name.trim() == "CHROMIUM")
        });
        assert!(!required, "{test}: no chromium on the PATH (or in CHROMIUM) and {REQUIRE_FLAG} forbids skipping it");
        eprintln!("SKIPPED {test}: no chromium on the PATH (apt-get install chromium, or set CHROMIUM)");
    }
    found
}

/// Where the screenshot goes: beside the test binary, under the target dir.
fn screenshot_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/docs-<hash> -> <target>/docs-screenshot
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = target.join("docs-screenshot");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir.join("docs.png")
}

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
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
            "--window-size=1280,2000",
            "--virtual-time-budget=10000",
        ])
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

    let screenshot = screenshot_path();
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
