//! One WebSocket: the chats of one application its client subscribes to, each followed by its
//! own task into the socket's one queue, written out in order, with pings while idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::routes::chat_in;
use shared::ErrorCode;

use super::{Cursor, Event, Hub, Out, Start, follow};
use crate::ChatRead;

/// Largest frame a client may send (subscribe frames are a few dozen bytes).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Longest a write to the client may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The close code of a client disconnected for reading too slowly: "try again later".
const CLOSE_OVERFLOW: u16 = 1013;

/// The application a socket belongs to.
pub struct Application {
    pub id: i64,
    pub token: Arc<str>,
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Subscribe { chat_number: i64, last_event_id: Option<String>, after: Option<i64> },
    Unsubscribe { chat_number: i64 },
}

/// Serves one socket until the client closes it, falls too far behind, or the server stops.
pub async fn session(hub: Arc<Hub>, state: ChatRead, application: Application, mut socket: WebSocket) {
    let settings = hub.settings().clone();
    let (sender, mut queue) = mpsc::channel::<Event>(settings.stream_socket_queue.max(1));
    let overflow = Arc::new(Notify::new());
    let mut subscriptions: HashMap<i64, JoinHandle<()>> = HashMap::new();
    // The id of the last event written per chat: where each subscription resumes.
    let mut written: HashMap<i64, Cursor> = HashMap::new();
    let mut ping = tokio::time::interval(settings.keep_alive());
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let shutdown = hub.shutdown.clone();
    loop {
        let outgoing = tokio::select! {
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => {
                    let frame = serde_json::from_str::<ClientFrame>(text.as_str());
                    match handle(&hub, &state, &application, frame, &sender, &overflow, &mut subscriptions, &mut written).await {
                        Some(reply) => Message::text(reply.to_string()),
                        None => continue,
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    Message::text(error_frame(None, ErrorCode::BadRequest, "frames are JSON text").to_string())
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            Some(event) = queue.recv() => {
                // Frames of a chat unsubscribed meanwhile are dropped.
                if !subscriptions.contains_key(&event.chat_number) {
                    continue;
                }
                if let Some(cursor) = event.cursor {
                    written.insert(event.chat_number, cursor);
                }
                Message::text(event_frame(&event))
            }
            _ = ping.tick() => Message::Ping(bytes::Bytes::new()),
            () = overflow.notified() => {
                let resume: Vec<_> = written
                    .iter()
                    .map(|(chat, cursor)| json!({ "chat_number": chat, "last_event_id": cursor.to_string() }))
                    .collect();
                let notice = json!({ "type": "overflow", "resume": resume });
                tracing::info!(application_id = application.id, "stream client too slow; disconnecting with its resume cursors");
                shared::metrics::record_stream_overflow();
                let _ = write(&mut socket, Message::text(notice.to_string())).await;
                let close = CloseFrame { code: CLOSE_OVERFLOW, reason: "send queue full: resume from the cursors sent".into() };
                let _ = write(&mut socket, Message::Close(Some(close))).await;
                break;
            }
            () = shutdown.clone().wait() => {
                let close = CloseFrame { code: 1001, reason: "server shutting down".into() };
                let _ = write(&mut socket, Message::Close(Some(close))).await;
                break;
            }
        };
        if write(&mut socket, outgoing).await.is_err() {
            break;
        }
    }
    for (_, task) in subscriptions {
        task.abort();
    }
}

/// Writes one frame, giving up after [`WRITE_TIMEOUT`].
async fn write(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Acts on a client frame; returns the reply to write, if any (events follow on the queue).
#[allow(clippy::too_many_arguments)]
async fn handle(
    hub: &Arc<Hub>,
    state: &ChatRead,
    application: &Application,
    frame: Result<ClientFrame, serde_json::Error>,
    sender: &mpsc::Sender<Event>,
    overflow: &Arc<Notify>,
    subscriptions: &mut HashMap<i64, JoinHandle<()>>,
    written: &mut HashMap<i64, Cursor>,
) -> Option<serde_json::Value> {
    let frame = match frame {
        Ok(frame) => frame,
        Err(error) => return Some(error_frame(None, ErrorCode::BadRequest, &format!("unreadable frame: {error}"))),
    };
    match frame {
        ClientFrame::Subscribe { chat_number, last_event_id, after } => {
            if chat_number < 1 {
                return Some(error_frame(
                    Some(chat_number),
                    ErrorCode::BadRequest,
                    "chat_number must be a positive integer",
                ));
            }
            let start = match (last_event_id, after) {
                (Some(id), _) => Start::Resume(Cursor::parse(&id)),
                (None, Some(after)) if after >= 0 => Start::After(after),
                (None, Some(_)) => {
                    return Some(error_frame(
                        Some(chat_number),
                        ErrorCode::BadRequest,
                        "after must be a non-negative integer",
                    ));
                }
                (None, None) => Start::Live,
            };
            let limit = hub.settings().stream_socket_chats;
            if !subscriptions.contains_key(&chat_number) && subscriptions.len() >= limit {
                let message = format!("at most {limit} chats per socket");
                return Some(error_frame(Some(chat_number), ErrorCode::BadRequest, &message));
            }
            let chat = match chat_in(state, application.id, application.token.clone(), chat_number).await {
                Ok(chat) => chat,
                Err(error) => return Some(error_frame(Some(chat_number), error.code, &error.message)),
            };
            if let Some(previous) = subscriptions.remove(&chat_number) {
                previous.abort();
            }
            written.remove(&chat_number);
            let out = Out::Bounded(sender.clone(), overflow.clone());
            let hub = hub.clone();
            let task = tokio::spawn(async move {
                let _ = follow(hub, chat, start, out, true).await;
            });
            subscriptions.insert(chat_number, task);
            None
        }
        ClientFrame::Unsubscribe { chat_number } => {
            if let Some(task) = subscriptions.remove(&chat_number) {
                task.abort();
            }
            written.remove(&chat_number);
            Some(json!({ "type": "unsubscribed", "chat_number": chat_number }))
        }
    }
}

/// An event as a frame: `subscribed` carries where the subscription starts, the rest their
/// view. Written around the view's JSON as it is (rendered once per change for every
/// subscriber), not parsed again.
fn event_frame(event: &Event) -> String {
    let id = match event.cursor {
        Some(cursor) => format!("\"{cursor}\""),
        None => "null".to_owned(),
    };
    format!(r#"{{"type":"{}","chat_number":{},"id":{id},"data":{}}}"#, event.name, event.chat_number, event.data)
}

fn error_frame(chat_number: Option<i64>, code: ErrorCode, message: &str) -> serde_json::Value {
    json!({ "type": "error", "chat_number": chat_number, "error": { "code": code, "message": message } })
}
