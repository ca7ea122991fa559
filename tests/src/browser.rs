//! Headless Chromium for the browser tests: finding it, the rule for skipping a test without
//! it, and a minimal DevTools protocol client that opens pages and evaluates script in them.
//!
//! Chromium is Debian's `chromium` (or `chromium-browser`, `google-chrome`) on the `PATH`, or
//! the binary `CHROMIUM` names. Without it a browser test prints why it is skipped, unless
//! `CHATMESH_REQUIRE_BACKENDS` names `CHROMIUM` (as `.ci/run` does), which makes it fail.
//!
//! [`Browser::launch`] starts it with `--remote-debugging-port=0`, reads the
//! `DevTools listening on ws://...` line from its stderr and speaks the protocol over that one
//! socket: each page is a target attached with `flatten`, its commands carry its `sessionId`.
//! Every browser runs with [`OFFLINE_FLAGS`]: any fetch to a host other than 127.0.0.1 goes to
//! a proxy that answers nothing, so a page that needs the outside world fails to load it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The name [`shared::testing::REQUIRE_FLAG`] lists to forbid skipping the browser tests.
pub const REQUIRE_NAME: &str = "CHROMIUM";

/// Cuts Chromium off the network but for 127.0.0.1: every other host goes through a proxy on
/// the discard port, where nothing answers.
pub const OFFLINE_FLAGS: [&str; 2] = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"];

/// How long one DevTools command may take before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The Chromium binary: `$CHROMIUM`, else the first of Debian's names found on the `PATH`.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&dirs).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium, or `None` after printing why `test` is skipped.
///
/// # Panics
/// When Chromium is missing and [`shared::testing::REQUIRE_FLAG`] names [`REQUIRE_NAME`].
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        let flag = shared::testing::REQUIRE_FLAG;
        assert!(
            !shared::testing::is_required(REQUIRE_NAME),
            "{test}: no chromium on the PATH (or in CHROMIUM) and {flag} forbids skipping it"
        );
        eprintln!("SKIPPED {test}: no chromium on the PATH (apt-get install chromium, or set CHROMIUM)");
    }
    found
}

/// Where a test's screenshot `name` goes: `<target>/<name>-screenshot/<name>.png`, beside the
/// test binary, so it outlives the run for a person to look at.
pub fn screenshot_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test>-<hash> -> <target>
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = target.join(format!("{name}-screenshot"));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir.join(format!("{name}.png"))
}

/// A headless Chromium driven over the DevTools protocol; dropping it kills the browser.
pub struct Browser {
    devtools: DevTools,
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `binary` headless, offline ([`OFFLINE_FLAGS`]), on a fresh profile, and connects
    /// to its DevTools socket.
    pub async fn launch(binary: &Path) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir().context("profile dir")?;
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Pages in other windows than the front one keep their timers and rendering.
                "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows",
                "--disable-renderer-backgrounding",
                "--window-size=1280,900",
            ])
            .args(OFFLINE_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Ok(url.trim().to_owned());
                }
                seen.push(line);
            }
            bail!("chromium exited before listening; its stderr:\n{}", seen.join("\n"))
        })
        .await
        .context("chromium prints its DevTools address within 30 s")??;
        // Chromium blocks once its stderr pipe is full: keep reading it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let devtools = DevTools::connect(&endpoint).await?;
        Ok(Self { devtools, _child: child, _profile: profile })
    }

    /// Opens `url` in a new window and waits until it has loaded.
    pub async fn open(&self, url: &str) -> anyhow::Result<Page> {
        let created = self
            .devtools
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "newWindow": true, "width": 1280, "height": 900}),
            )
            .await?;
        let target = created["targetId"].as_str().context("Target.createTarget gave no targetId")?.to_owned();
        let attached =
            self.devtools.call(None, "Target.attachToTarget", json!({"targetId": target, "flatten": true})).await?;
        let session = attached["sessionId"].as_str().context("Target.attachToTarget gave no sessionId")?.to_owned();
        let page = Page { devtools: self.devtools.clone(), session };
        page.call("Page.enable", json!({})).await?;
        page.call("Runtime.enable", json!({})).await?;
        page.navigate(url).await?;
        Ok(page)
    }
}

/// One page (a target) of a [`Browser`], addressed by its DevTools session.
pub struct Page {
    devtools: DevTools,
    session: String,
}

impl Page {
    /// Sends `method` with `params` to this page; answers the command's result.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.devtools.call(Some(&self.session), method, params).await
    }

    /// Loads `url` and waits until its document has loaded (`readyState` complete).
    pub async fn navigate(&self, url: &str) -> anyhow::Result<()> {
        let navigated = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = navigated["errorText"].as_str() {
            bail!("navigating to {url}: {error}");
        }
        // The blank page the target started on is complete too: wait for the new document.
        self.wait_for("location.href !== 'about:blank' && document.readyState === 'complete'", Duration::from_secs(20))
            .await
            .with_context(|| format!("{url} loads"))?;
        Ok(())
    }

    /// The value of the script `expression` in the page (a promise is awaited); a thrown
    /// exception is an error with its description.
    pub async fn evaluate(&self, expression: &str) -> anyhow::Result<Value> {
        let reply = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            let description = details["exception"]["description"].as_str().or(details["text"].as_str()).unwrap_or("");
            bail!("{expression}: threw {description}");
        }
        Ok(reply["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluates `expression` every few milliseconds until it gives something truthy (not
    /// `false`, `null`, 0 or ""), and answers that; an error once `timeout` has passed.
    pub async fn wait_for(&self, expression: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.evaluate(expression).await?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return Ok(value);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("still false after {timeout:?}: {expression}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A PNG of the page as it shows now, brought to the front first.
    pub async fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        self.call("Page.bringToFront", json!({})).await?;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await?;
        let data = shot["data"].as_str().context("Page.captureScreenshot gave no data")?;
        base64::engine::general_purpose::STANDARD.decode(data).context("screenshot base64")
    }

    /// The uncaught script errors the page has reported since it was opened.
    pub fn script_errors(&self) -> Vec<String> {
        self.devtools.exceptions(&self.session)
    }
}

/// A DevTools protocol connection: commands by id, answers matched to them by a reader task.
#[derive(Clone)]
pub struct DevTools {
    inner: Arc<Connection>,
}

type Answer = Result<Value, Value>;

struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    next_id: AtomicU64,
    // A std Mutex: held only to insert or remove, never across an await.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// `Runtime.exceptionThrown` descriptions by session id.
    exceptions: Mutex<HashMap<String, Vec<String>>>,
}

impl DevTools {
    /// Connects to the `ws://` DevTools endpoint of a browser or of one page.
    pub async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let (socket, _) =
            tokio_tungstenite::connect_async(endpoint).await.with_context(|| format!("connect to {endpoint}"))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Message>();
        let inner = Arc::new(Connection {
            outgoing,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            exceptions: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Some(message) = to_send.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let reader = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let Some(connection) = reader.upgrade() else { break };
                connection.receive(value);
            }
            // The socket closed: every command still waiting learns it from its dropped sender.
            if let Some(connection) = reader.upgrade() {
                connection.pending.lock().unwrap().clear();
            }
        });
        Ok(Self { inner })
    }

    /// Sends `method` with `params`, to the page of `session` or to the browser; answers the
    /// command's `result`, or its `error` as an error.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (answer, answered) = oneshot::channel();
        self.inner.pending.lock().unwrap().insert(id, answer);
        self.inner
            .outgoing
            .send(Message::text(command.to_string()))
            .map_err(|_| anyhow!("{method}: the DevTools connection is closed"))?;
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, answered).await;
        match reply {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => bail!("{method}: {error}"),
            Ok(Err(_)) => bail!("{method}: the DevTools connection closed"),
            Err(_) => {
                self.inner.pending.lock().unwrap().remove(&id);
                bail!("{method}: no answer within {COMMAND_TIMEOUT:?}")
            }
        }
    }

    fn exceptions(&self, session: &str) -> Vec<String> {
        self.inner.exceptions.lock().unwrap().get(session).cloned().unwrap_or_default()
    }
}

impl Connection {
    /// One message from the browser: the answer to a command, or an event.
    fn receive(&self, message: Value) {
        if let Some(id) = message["id"].as_u64() {
            let answer = match message.get("error") {
                Some(error) => Err(error.clone()),
                None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
            };
            if let Some(waiting) = self.pending.lock().unwrap().remove(&id) {
                let _ = waiting.send(answer);
            }
            return;
        }
        if message["method"] == "Runtime.exceptionThrown" {
            let details = &message["params"]["exceptionDetails"];
            let description =
                details["exception"]["description"].as_str().or(details["text"].as_str()).unwrap_or("").to_owned();
            let session = message["sessionId"].as_str().unwrap_or("").to_owned();
            self.exceptions.lock().unwrap().entry(session).or_default().push(description);
        }
    }
}
