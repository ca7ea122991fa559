//! The live stream: every change of a chat pushed to its subscribers, over Server-Sent Events
//! (one chat a connection) or a WebSocket (many chats a connection), with nothing missed or
//! repeated across a reconnect.
//!
//! # How a change reaches a subscriber
//! Writers log each change in the store with the chat's next change number (see
//! [`crate::changes`]) and notify the queue's change topic after the commit. The [`Hub`] of a
//! stream process listens on that topic and keeps one [`Feed`] per chat that has subscribers
//! here: a woken feed reads the chat's log past what it has sent, renders each change once and
//! broadcasts it to the chat's subscribers. A lost notification only delays a change: the hub
//! also polls the chats it follows ([`StreamSettings::poll`]) and wakes a feed whose chat moved.
//!
//! Each subscriber ([`follow`]) joins its chat's feed first, then reads the log from its own
//! cursor in the store up to the present, and from then on takes the feed's changes numbered
//! above its cursor: every change once, in order, whatever it missed. One that falls behind
//! the feed's buffer reads the store again from its cursor.
//!
//! # Cursors
//! An event's id is opaque to clients; here it is either a change number (`"42"`) or, for the
//! current state of a message replayed by `?after=N`, the change number the replay runs up to
//! and the message's number (`"42.7"`). Resuming from either gives exactly what follows it.

mod routes;
mod socket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat::model::MessageView;
use shared::backends::BackendResult;
use shared::backends::sql::{Database, text};
use shared::shutdown::Shutdown;
use sqlx::Row;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::ChatRead;
use crate::changes::{self, Change, Kind};

pub use routes::routes;

/// The stream's routes, served with `state` (which must carry a [`Hub`]: see
/// [`ChatRead::with_stream`]).
pub fn router(state: ChatRead) -> axum::Router {
    routes().split_for_parts().0.with_state(state)
}

/// How the stream behaves; the defaults suit a chat app.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct StreamSettings {
    /// How often the hub looks for changes it was not notified of, in milliseconds: the
    /// longest a lost notification delays an event.
    pub stream_poll_ms: u64,
    /// How often an idle stream gets a keep-alive (an SSE comment, a WebSocket ping), in
    /// milliseconds: below the 30 s after which proxies commonly cut idle connections.
    pub stream_keep_alive_ms: u64,
    /// Frames a WebSocket may have waiting to be written; a client that leaves its queue full
    /// for [`FULL_QUEUE_WAIT`] is disconnected with its resume cursors.
    pub stream_socket_queue: usize,
    /// Chats one WebSocket may follow at once.
    pub stream_socket_chats: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            stream_poll_ms: 2_000,
            stream_keep_alive_ms: 15_000,
            stream_socket_queue: 1_024,
            stream_socket_chats: 256,
        }
    }
}

impl StreamSettings {
    fn poll(&self) -> Duration {
        Duration::from_millis(self.stream_poll_ms.max(10))
    }

    fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.stream_keep_alive_ms.max(100))
    }
}

/// The flags and variables of [`StreamSettings`], for every binary that serves the stream.
#[derive(Clone, Debug, Default, serde::Serialize, clap::Args)]
pub struct StreamArgs {
    /// How often the stream looks for changes it was not notified of, in ms: the longest a lost
    /// notification delays an event [default: 2000]
    #[arg(long, env = "CHATMESH_STREAM_POLL_MS", global = true)]
    pub stream_poll_ms: Option<u64>,
    /// How often an idle stream gets a keep-alive (SSE comment, WebSocket ping), in ms
    /// [default: 15000]
    #[arg(long, env = "CHATMESH_STREAM_KEEP_ALIVE_MS", global = true)]
    pub stream_keep_alive_ms: Option<u64>,
    /// Frames a WebSocket may have waiting to be written; a client that leaves them unread for
    /// 3 s is disconnected with its resume cursors [default: 1024]
    #[arg(long, env = "CHATMESH_STREAM_SOCKET_QUEUE", global = true)]
    pub stream_socket_queue: Option<usize>,
    /// Chats one WebSocket may follow at once [default: 256]
    #[arg(long, env = "CHATMESH_STREAM_SOCKET_CHATS", global = true)]
    pub stream_socket_chats: Option<usize>,
}

/// Changes read from the store at once.
const PAGE: i64 = 256;
/// Changes a feed keeps for subscribers that are behind, before they must read the store. Its
/// slots are allocated with the feed, about 40 bytes each, in every process for every chat
/// followed there: 128 hold a burst of a few seconds of a busy chat for a subscriber that is
/// briefly behind, and one further behind catches up from the store (1,024 slots cost 45 KiB
/// per followed chat in `chatmesh-bench stream`).
const FEED_BUFFER: usize = 128;

/// A chat as its subscribers see it.
#[derive(Clone, Debug)]
pub struct ChatRef {
    pub application_id: i64,
    pub token: Arc<str>,
    pub chat_id: i64,
    pub chat_number: i64,
}

/// Where an event sits in its chat's stream; its text is the event's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// After the change with this number.
    Log(i64),
    /// Inside a replay of the chat's messages as of change `head`: after message `number`.
    Replay { head: i64, number: i64 },
}

impl Cursor {
    /// The cursor an event id names; `None` for anything this server did not hand out.
    pub fn parse(id: &str) -> Option<Self> {
        let id = id.trim();
        let number = |text: &str| text.parse::<i64>().ok().filter(|n| *n >= 0);
        match id.split_once('.') {
            None => number(id).map(Self::Log),
            Some((head, message)) => Some(Self::Replay { head: number(head)?, number: number(message)? }),
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Log(seq) => write!(f, "{seq}"),
            Self::Replay { head, number } => write!(f, "{head}.{number}"),
        }
    }
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Changes from now on.
    Live,
    /// Every event after this id (`Last-Event-ID`); an id this server did not hand out, or
    /// one ahead of the chat, gets a `reset` and continues live.
    Resume(Option<Cursor>),
    /// The messages numbered above N as they are now, then live.
    After(i64),
}

/// A live start fixed at the chat's change number now, before the response (or the
/// `subscribed` frame) goes out: the task that follows the chat starts a moment later, and a
/// change committed in between belongs to the stream the client already holds.
pub async fn pin_live(read: &ChatRead, chat: &ChatRef, start: Start) -> Result<Start, shared::ApiError> {
    match start {
        Start::Live => {
            let head = changes::head(&read.db, chat.chat_id).await?.unwrap_or(0);
            Ok(Start::Resume(Some(Cursor::Log(head))))
        }
        other => Ok(other),
    }
}

/// One event for one subscriber.
#[derive(Clone, Debug)]
pub struct Event {
    pub chat_number: i64,
    /// `message.created`, `message.updated`, `message.deleted`, `chat.updated`, `reset`, or
    /// (WebSocket only) `subscribed`.
    pub name: &'static str,
    /// The id to resume after (`None` for `reset`).
    pub cursor: Option<Cursor>,
    /// The JSON view of the message or chat.
    pub data: Arc<str>,
}

/// A change as every subscriber of a chat gets it: rendered once by its feed.
#[derive(Debug)]
struct Rendered {
    seq: i64,
    name: &'static str,
    data: Arc<str>,
}

/// One process's subscribers, by chat, and the notifications that wake them.
pub struct Hub {
    read: ChatRead,
    settings: StreamSettings,
    shutdown: Shutdown,
    feeds: Mutex<HashMap<i64, Arc<Feed>>>,
    /// Whether the listener and poller tasks run.
    started: AtomicBool,
}

/// The subscribers of one chat in this process, and how far they have been sent its log.
struct Feed {
    chat: ChatRef,
    sender: broadcast::Sender<Arc<Rendered>>,
    wake: Notify,
    /// The last change number broadcast.
    head: AtomicI64,
    /// Taken out of the hub (no subscriber left): the task ends.
    closed: AtomicBool,
}

impl Hub {
    pub fn new(read: ChatRead, settings: StreamSettings, shutdown: Shutdown) -> Arc<Self> {
        Arc::new(Self { read, settings, shutdown, feeds: Mutex::default(), started: AtomicBool::new(false) })
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    fn db(&self) -> &Database {
        &self.read.db
    }

    /// Joins `chat`'s feed (starting it, and the hub's tasks, if needed); the receiver gets
    /// every change the feed broadcasts from now on, starting after the returned number.
    async fn join(self: &Arc<Self>, chat: &ChatRef) -> BackendResult<(broadcast::Receiver<Arc<Rendered>>, i64)> {
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().listen());
            tokio::spawn(self.clone().poll());
        }
        if let Some(joined) = self.join_existing(chat.chat_id) {
            return Ok(joined);
        }
        // A new feed starts at the chat's head: subscribers read what came before from the store.
        let head = changes::head(self.db(), chat.chat_id).await?.unwrap_or(0);
        let mut feeds = self.feeds.lock().expect("feeds poisoned");
        if let Some(feed) = feeds.get(&chat.chat_id) {
            return Ok((feed.sender.subscribe(), feed.head.load(Ordering::SeqCst)));
        }
        let feed = Arc::new(Feed {
            chat: chat.clone(),
            sender: broadcast::channel(FEED_BUFFER).0,
            wake: Notify::new(),
            head: AtomicI64::new(head),
            closed: AtomicBool::new(false),
        });
        let receiver = feed.sender.subscribe();
        feeds.insert(chat.chat_id, feed.clone());
        tokio::spawn(self.clone().run_feed(feed));
        Ok((receiver, head))
    }

    /// Subscribes under the hub's lock, so the poller cannot take the feed out meanwhile.
    fn join_existing(&self, chat_id: i64) -> Option<(broadcast::Receiver<Arc<Rendered>>, i64)> {
        let feeds = self.feeds.lock().expect("feeds poisoned");
        feeds.get(&chat_id).map(|feed| (feed.sender.subscribe(), feed.head.load(Ordering::SeqCst)))
    }

    /// Wakes the feeds of the chats a notification names, where it is ahead of them.
    fn wake(&self, changed: &[(i64, i64)]) {
        let feeds = self.feeds.lock().expect("feeds poisoned");
        for (chat_id, seq) in changed {
            if let Some(feed) = feeds.get(chat_id)
                && *seq > feed.head.load(Ordering::SeqCst)
            {
                feed.wake.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        for feed in self.feeds.lock().expect("feeds poisoned").values() {
            feed.wake.notify_one();
        }
    }

    /// Listens on the change topic until shutdown, again after each broken link; a listener
    /// that lagged or reconnected wakes every feed (each reads the store for what it missed).
    async fn listen(self: Arc<Self>) {
        let topic = self.read.keys.change_topic();
        let mut failures = 0u32;
        while !self.shutdown.is_triggered() {
            let mut receiver = match self.read.queue.listen(&topic).await {
                Ok(receiver) => receiver,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "cannot listen for chat changes yet; polling meanwhile");
                    let pause = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = self.shutdown.clone().wait() => return,
                    }
                }
            };
            failures = 0;
            self.wake_all();
            loop {
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(payload) => self.wake(&changes::decode(&payload)),
                        Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                        Err(broadcast::error::RecvError::Closed) => {
                            tracing::warn!("change notifications stopped; listening again");
                            break;
                        }
                    },
                    _ = self.shutdown.clone().wait() => return,
                }
            }
        }
    }

    /// Every [`StreamSettings::poll`]: reads the heads of the chats followed here, wakes the
    /// feeds that are behind, and takes out the feeds nobody follows any more.
    async fn poll(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.poll());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.clone().wait() => break,
            }
            let ids: Vec<i64> = {
                let mut feeds = self.feeds.lock().expect("feeds poisoned");
                feeds.retain(|_, feed| {
                    let followed = feed.sender.receiver_count() > 0;
                    if !followed {
                        feed.closed.store(true, Ordering::SeqCst);
                        feed.wake.notify_one();
                    }
                    followed
                });
                feeds.keys().copied().collect()
            };
            for chunk in ids.chunks(500) {
                match heads(self.db(), chunk).await {
                    Ok(heads) => self.wake(&heads),
                    Err(error) => tracing::warn!(%error, "reading the chats' change numbers failed"),
                }
            }
        }
        // Feeds end with the hub, so their subscribers' streams end and the server can stop.
        for feed in self.feeds.lock().expect("feeds poisoned").drain().map(|(_, feed)| feed) {
            feed.closed.store(true, Ordering::SeqCst);
            feed.wake.notify_one();
        }
    }

    /// A feed's task: on each wake-up, broadcasts the chat's changes past its head, retrying
    /// a read that fails until it passes (or the feed is taken out).
    async fn run_feed(self: Arc<Self>, feed: Arc<Feed>) {
        loop {
            feed.wake.notified().await;
            loop {
                if feed.closed.load(Ordering::SeqCst) {
                    return;
                }
                let head = feed.head.load(Ordering::SeqCst);
                match self.broadcast_after(&feed, head).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(%error, chat_id = feed.chat.chat_id, "reading a chat's changes failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
    }

    /// Broadcasts one page of the chat's changes after `head`; true when more may follow.
    async fn broadcast_after(&self, feed: &Feed, head: i64) -> BackendResult<bool> {
        let page = changes::after(self.db(), feed.chat.chat_id, head, PAGE).await?;
        let full = page.len() as i64 >= PAGE;
        for change in page {
            let data = render(&self.read, &feed.chat, &change).await?;
            // No receiver now is fine: the poller takes the feed out.
            let _ = feed.sender.send(Arc::new(Rendered { seq: change.seq, name: change.kind.event(), data }));
            feed.head.store(change.seq, Ordering::SeqCst);
        }
        Ok(full)
    }
}

/// `(chat id, last change number)` of each chat of `ids`.
async fn heads(db: &Database, ids: &[i64]) -> BackendResult<Vec<(i64, i64)>> {
    let sql =
        format!("SELECT id, last_change FROM chats WHERE id IN ({})", shared::backends::sql::placeholders(ids.len()));
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// The JSON a change's event carries: the message or chat as the REST routes show it now; a
/// message deleted since shows its number only.
async fn render(read: &ChatRead, chat: &ChatRef, change: &Change) -> BackendResult<Arc<str>> {
    let json = match (&change.kind, &change.message) {
        (Kind::ChatUpdated, _) => {
            let view = crate::store::get_chat(&read.db, chat.application_id, &chat.token, chat.chat_number).await?;
            match view {
                Some((_, view)) => serde_json::to_string(&view),
                None => serde_json::to_string(&gone_chat(chat)),
            }
        }
        (_, Some((content, created_at, updated_at))) => serde_json::to_string(&MessageView::new(
            chat.token.to_string(),
            chat.chat_number,
            change.number,
            content.clone(),
            *created_at,
            *updated_at,
        )),
        (_, None) => serde_json::to_string(&serde_json::json!({
            "type": "message",
            "application_token": &*chat.token,
            "chat_number": chat.chat_number,
            "message_number": change.number,
        })),
    };
    Ok(Arc::from(json.map_err(|e| shared::backends::BackendError::Other(e.to_string()))?))
}

fn gone_chat(chat: &ChatRef) -> serde_json::Value {
    serde_json::json!({ "type": "chat", "application_token": &*chat.token, "chat_number": chat.chat_number })
}

/// Where a subscriber's events go.
pub enum Out {
    /// An SSE response: waits while the client reads slowly (the feed's buffer and then the
    /// store cover what it falls behind by).
    Waiting(mpsc::Sender<Event>),
    /// A WebSocket's queue: a subscriber whose queue stays full for [`FULL_QUEUE_WAIT`] (its
    /// client reads slower than its chats change) stops, and `overflow` tells the socket to
    /// disconnect with its resume cursors. A burst (a catch-up from the store) only waits.
    Bounded(mpsc::Sender<Event>, Arc<Notify>),
}

/// How long a WebSocket subscriber's queue may stay full before its client is disconnected.
pub const FULL_QUEUE_WAIT: Duration = Duration::from_secs(3);

/// Why a subscription stopped.
#[derive(Debug)]
pub struct Stopped;

impl Out {
    async fn send(&self, event: Event) -> Result<(), Stopped> {
        match self {
            Self::Waiting(sender) => sender.send(event).await.map_err(|_| Stopped),
            Self::Bounded(sender, overflow) => match tokio::time::timeout(FULL_QUEUE_WAIT, sender.send(event)).await {
                Ok(sent) => sent.map_err(|_| Stopped),
                Err(_full) => {
                    overflow.notify_one();
                    Err(Stopped)
                }
            },
        }
    }

    async fn closed(&self) {
        match self {
            Self::Waiting(sender) | Self::Bounded(sender, _) => sender.closed().await,
        }
    }
}

/// Sends `chat`'s events from `start` to `out`, until the client goes, the stream stops (a
/// full WebSocket queue) or the server shuts down. With `announce`, the first event is
/// `subscribed`, whose id is where the subscription starts.
pub async fn follow(hub: Arc<Hub>, chat: ChatRef, start: Start, out: Out, announce: bool) -> Result<(), Stopped> {
    let _counted = shared::metrics::stream_subscription(match out {
        Out::Waiting(_) => "sse",
        Out::Bounded(..) => "websocket",
    });
    let (mut feed, joined_at) = match hub.join(&chat).await {
        Ok(joined) => joined,
        Err(error) => {
            tracing::warn!(%error, chat_id = chat.chat_id, "joining a chat's stream failed");
            return Err(Stopped);
        }
    };
    let head = match changes::head(hub.db(), chat.chat_id).await {
        Ok(head) => head.unwrap_or(0).max(joined_at),
        Err(error) => {
            tracing::warn!(%error, chat_id = chat.chat_id, "reading a chat's change number failed");
            return Err(Stopped);
        }
    };
    let (replay, mut cursor) = match start {
        Start::Live => (None, head),
        Start::After(number) => (Some((head, number)), head),
        Start::Resume(Some(Cursor::Log(seq))) if seq <= head => (None, seq),
        Start::Resume(Some(Cursor::Replay { head: at, number })) if at <= head => (Some((at, number)), at),
        Start::Resume(_) => {
            let data: Arc<str> =
                Arc::from(r#"{"reason":"unknown or outdated cursor: fetch the chat again over REST"}"#.to_owned());
            out.send(Event { chat_number: chat.chat_number, name: "reset", cursor: None, data }).await?;
            (None, head)
        }
    };
    if announce {
        let at = match replay {
            Some((head, number)) => Cursor::Replay { head, number },
            None => Cursor::Log(cursor),
        };
        let data: Arc<str> = Arc::from(format!(r#"{{"chat_number":{}}}"#, chat.chat_number));
        out.send(Event { chat_number: chat.chat_number, name: "subscribed", cursor: Some(at), data }).await?;
    }
    if let Some((at, number)) = replay {
        replay_messages(&hub, &chat, at, number, &out).await?;
        cursor = at;
    }
    cursor = catch_up(&hub, &chat, cursor, &out).await?;
    loop {
        tokio::select! {
            received = feed.recv() => match received {
                Ok(change) if change.seq > cursor => {
                    let event = Event {
                        chat_number: chat.chat_number,
                        name: change.name,
                        cursor: Some(Cursor::Log(change.seq)),
                        data: change.data.clone(),
                    };
                    out.send(event).await?;
                    cursor = change.seq;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => cursor = catch_up(&hub, &chat, cursor, &out).await?,
                Err(broadcast::error::RecvError::Closed) => return Err(Stopped),
            },
            () = out.closed() => return Err(Stopped),
            () = hub.shutdown.clone().wait() => return Err(Stopped),
        }
    }
}

/// Sends the chat's changes after `cursor` from the store, up to the present; returns the new
/// cursor.
async fn catch_up(hub: &Hub, chat: &ChatRef, mut cursor: i64, out: &Out) -> Result<i64, Stopped> {
    loop {
        let page = retry(hub, || changes::after(hub.db(), chat.chat_id, cursor, PAGE)).await?;
        let full = page.len() as i64 >= PAGE;
        for change in &page {
            let data = retry(hub, || render(&hub.read, chat, change)).await?;
            let event = Event {
                chat_number: chat.chat_number,
                name: change.kind.event(),
                cursor: Some(Cursor::Log(change.seq)),
                data,
            };
            out.send(event).await?;
            cursor = change.seq;
        }
        if !full {
            return Ok(cursor);
        }
    }
}

/// Sends the messages numbered above `after` as they are now, among those created up to
/// change `head`, as `message.created` events with replay cursors.
async fn replay_messages(hub: &Hub, chat: &ChatRef, head: i64, mut after: i64, out: &Out) -> Result<(), Stopped> {
    loop {
        let rows = retry(hub, || replay_page(hub.db(), chat.chat_id, head, after)).await?;
        let full = rows.len() as i64 >= PAGE;
        for (number, content, created_at, updated_at) in rows {
            let view =
                MessageView::new(chat.token.to_string(), chat.chat_number, number, content, created_at, updated_at);
            let data: Arc<str> = Arc::from(serde_json::to_string(&view).map_err(|_| Stopped)?);
            let cursor = Some(Cursor::Replay { head, number });
            out.send(Event { chat_number: chat.chat_number, name: Kind::MessageCreated.event(), cursor, data }).await?;
            after = number;
        }
        if !full {
            return Ok(());
        }
    }
}

/// One page of [`replay_messages`]: `(number, content, created at, updated at)`.
async fn replay_page(
    db: &Database,
    chat_id: i64,
    head: i64,
    after: i64,
) -> BackendResult<Vec<(i64, String, i64, i64)>> {
    let rows = sqlx::query(
        "SELECT number, content, created_at, updated_at FROM messages \
         WHERE chat_id = ? AND number > ? AND created_seq <= ? AND deleted_at IS NULL ORDER BY number LIMIT ?",
    )
    .bind(chat_id)
    .bind(after)
    .bind(head)
    .bind(PAGE)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, text(row, 1)?.unwrap_or_default(), row.try_get(2)?, row.try_get(3)?)))
        .collect()
}

/// Runs a store read until it succeeds (a store that is down delays the stream, it does not
/// end it), or until shutdown.
async fn retry<T, F, Fut>(hub: &Hub, mut read: F) -> Result<T, Stopped>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BackendResult<T>>,
{
    let mut failures = 0u32;
    loop {
        match read().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, failures, "a stream read from the store failed; retrying");
                let pause = Duration::from_millis(100 * u64::from(failures.min(30)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = hub.shutdown.clone().wait() => return Err(Stopped),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_what_was_never_handed_out() {
        for cursor in [Cursor::Log(0), Cursor::Log(42), Cursor::Replay { head: 42, number: 7 }] {
            assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        }
        for bad in ["", "x", "-1", "4.", ".4", "1.2.3", "4.-2", "99999999999999999999"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
