//! `/chat`: the chat page open on one chat in two headless Chromium windows. A message sent
//! from one shows in the other within a second, once, escaped, over the live stream (no
//! reload, no REST call); edits and a renamed chat follow the same way.
//!
//! Chromium runs offline but for the server, as [`chatmesh_e2e::browser`] starts it; without
//! Chromium the test is skipped by that module's rule.

use std::time::{Duration, Instant};

use chatmesh_e2e::Api;
use chatmesh_e2e::browser::{Browser, Page, chromium_or_skip, screenshot_path};
use serde_json::{Value, json};

/// The longest a message may take from the Send click to showing in the other window.
const LIVE_WITHIN: Duration = Duration::from_secs(1);

/// `text` as a JavaScript string literal.
fn js(text: &str) -> String {
    Value::from(text).to_string()
}

/// The `#messages` rows of `page` whose text contains `text`, with the text of each.
async fn rows_containing(page: &Page, text: &str) -> Vec<(i64, String)> {
    let rows = page
        .evaluate(&format!(
            "[...document.querySelectorAll('#messages li[data-number]')]
                .filter(li => li.textContent.includes({text}))
                .map(li => [Number(li.dataset.number), li.querySelector('.text').textContent])",
            text = js(text)
        ))
        .await
        .unwrap();
    rows.as_array().unwrap().iter().map(|row| (row[0].as_i64().unwrap(), row[1].as_str().unwrap().to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_in_one_window_shows_live_in_another() {
    let Some(chromium) = chromium_or_skip("a_message_sent_in_one_window_shows_live_in_another") else {
        return;
    };
    let server = chatmesh::testing::spawn(|_| {}).await;
    let api = Api::new(&server.url);
    let token = api.create_application("page test").await;
    let chat = api.create_chat(&token, "lobby").await;
    let history = "sent before the page opened";
    let first = api.create_message(&token, chat, history).await;

    // One self-contained file: no URL of another host to load anything from.
    let page = reqwest::get(format!("{}/chat", server.url)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no outside URL in the page");

    let browser = Browser::launch(&chromium).await.expect("chromium starts");
    let url = format!("{}/chat#token={token}&chat={chat}", server.url);
    let sender = browser.open(&url).await.expect("the sender's window opens");
    let watcher = browser.open(&url).await.expect("the watcher's window opens");
    for page in [&sender, &watcher] {
        page.wait_for("document.getElementById('status').textContent === 'live'", Duration::from_secs(10))
            .await
            .expect("the page's stream goes live");
        page.wait_for(
            &format!("document.getElementById('chat-title').textContent === {}", js("lobby")),
            Duration::from_secs(5),
        )
        .await
        .expect("the chat's name is the title");
        page.wait_for(
            &format!(
                "document.querySelector('#messages li[data-number=\"{first}\"]')?.textContent.includes({})",
                js(history)
            ),
            Duration::from_secs(5),
        )
        .await
        .expect("the history shows on open");
    }

    // The watcher is left as it is from here: a reload would drop the marker, and any REST
    // call it makes is recorded. When the text appears is noted by the page's own clock.
    watcher
        .evaluate(
            "(() => {
                 window.notReloaded = true;
                 window.restCalls = [];
                 const fetchBefore = window.fetch;
                 window.fetch = (...args) => { window.restCalls.push(String(args[0])); return fetchBefore(...args); };
                 return true;
             })()",
        )
        .await
        .unwrap();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let text = format!("live {stamp:x} <b>not bold</b> & done");
    watcher
        .evaluate(&format!(
            "(() => {{
                 window.seenAt = null;
                 const list = document.getElementById('messages');
                 new MutationObserver(() => {{
                     if (window.seenAt === null && list.textContent.includes({text})) window.seenAt = Date.now();
                 }}).observe(list, {{ childList: true, subtree: true, characterData: true }});
                 return true;
             }})()",
            text = js(&text)
        ))
        .await
        .unwrap();

    let clicked = Instant::now();
    let clicked_at = sender
        .evaluate(&format!(
            "(() => {{
                 const input = document.getElementById('message-input');
                 input.value = {text};
                 input.dispatchEvent(new Event('input', {{ bubbles: true }}));
                 const at = Date.now();
                 document.getElementById('send').click();
                 return at;
             }})()",
            text = js(&text)
        ))
        .await
        .unwrap();
    watcher
        .wait_for(
            &format!("document.getElementById('messages').textContent.includes({})", js(&text)),
            Duration::from_secs(10),
        )
        .await
        .expect("the message shows in the other window");
    let took = clicked.elapsed();
    let seen_at = watcher.evaluate("window.seenAt").await.unwrap();
    let in_page = seen_at.as_f64().zip(clicked_at.as_f64()).map(|(seen, clicked)| seen - clicked);
    eprintln!(
        "send-to-visible: {:.1} ms (by the test's clock), {} ms (click to DOM, by the browser's clock)",
        took.as_secs_f64() * 1000.0,
        in_page.map_or("?".to_owned(), |ms| format!("{ms:.0}"))
    );
    assert!(took < LIVE_WITHIN, "the message took {took:?} to show in the other window");

    // Once, as text (the markup in it is not markup), over the stream.
    let rows = rows_containing(&watcher, &text).await;
    assert_eq!(rows.len(), 1, "the watcher shows the message once: {rows:?}");
    let (number, shown) = rows[0].clone();
    assert_eq!(shown, text);
    assert!(number > first, "numbered after the history");
    let bold = watcher.evaluate("document.querySelector('#messages b') === null").await.unwrap();
    assert_eq!(bold, json!(true), "the message's markup is shown as text");
    assert_eq!(watcher.evaluate("window.notReloaded === true").await.unwrap(), json!(true), "no reload");
    assert_eq!(watcher.evaluate("window.restCalls").await.unwrap(), json!([]), "no REST call: it came on the stream");
    // The stream may beat the sender's own 201: its window is done once the box is cleared.
    sender
        .wait_for("document.getElementById('message-input').value === ''", Duration::from_secs(5))
        .await
        .expect("the sender's box is cleared once sent");
    assert_eq!(rows_containing(&sender, &text).await, [(number, text.clone())], "the sender shows it once");

    // Enter sends too.
    let typed = format!("typed then Enter {number}");
    sender.call("Page.bringToFront", json!({})).await.unwrap();
    sender.evaluate("document.getElementById('message-input').focus(); true").await.unwrap();
    sender.call("Input.insertText", json!({"text": typed})).await.unwrap();
    for kind in ["keyDown", "keyUp"] {
        let key = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"});
        sender.call("Input.dispatchKeyEvent", key).await.unwrap();
    }
    watcher
        .wait_for(
            &format!("document.getElementById('messages').textContent.includes({})", js(&typed)),
            Duration::from_secs(5),
        )
        .await
        .expect("a message sent with Enter shows in the other window");

    // An edit replaces the text in place; a renamed chat renames the title.
    let edited = format!("{text} (edited)");
    let reply = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/applications/{token}/chats/{chat}/messages/{number}"),
            Some(&json!({"message_content": edited})),
        )
        .await;
    assert_eq!(reply.status, 200);
    watcher
        .wait_for(
            &format!(
                "document.querySelector('#messages li[data-number=\"{number}\"] .text')?.textContent === {}",
                js(&edited)
            ),
            Duration::from_secs(5),
        )
        .await
        .expect("the edit shows in place");
    assert_eq!(rows_containing(&watcher, &text).await, [(number, edited.clone())], "still one row");
    let reply = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/applications/{token}/chats/{chat}"),
            Some(&json!({"chat_name": "renamed"})),
        )
        .await;
    assert_eq!(reply.status, 200);
    watcher
        .wait_for("document.getElementById('chat-title').textContent === 'renamed'", Duration::from_secs(5))
        .await
        .expect("the new name shows as the title");
    assert_eq!(watcher.evaluate("window.restCalls").await.unwrap(), json!([]), "still no REST call");

    let png = watcher.screenshot_png().await.expect("a screenshot");
    let path = screenshot_path("chat");
    std::fs::write(&path, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a real screenshot, {} bytes", png.len());
    eprintln!("chat page screenshot: {}", path.display());

    for (name, page) in [("sender", &sender), ("watcher", &watcher)] {
        assert_eq!(page.script_errors(), Vec::<String>::new(), "no script error in the {name}'s window");
    }
}
