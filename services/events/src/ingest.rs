//! Accepting events: the form they take on the queue, their ids, and publishing them.
//!
//! One queue message carries one request's events (one for `POST /events/`, up to the batch
//! limit for `POST /events/batch`), each with the id the API answered with and the raw payload
//! exactly as sent, so an error record can keep it. Ids are assigned before publishing, so a
//! redelivered message stores nothing twice; an event carrying a `client_event_id` gets an id
//! derived from its session and that id, so a client's retry lands on the same event.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use shared::backends::BackendResult;
use uuid::Uuid;

use crate::Events;
use crate::model::Reason;
use crate::validate::{client_event_id_of, session_id_of};

/// Namespace of the ids derived from `(session, client_event_id)`.
const CLIENT_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_5a0e_94b7_4f0c_8c52_1f3e_0b7a_9d21);

/// One queue message: the events of one request.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedEvents<'a> {
    /// When the API accepted them: the "now" of the not-in-the-future rule.
    pub received_at: i64,
    #[serde(borrow)]
    pub items: Vec<QueuedEvent<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedEvent<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The event exactly as the client sent it.
    #[serde(borrow)]
    pub payload: &'a RawValue,
    /// Set when the API already refused the event (batch items): stored as an error as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Vec<Reason>>,
}

impl<'a> QueuedEvents<'a> {
    pub fn decode(bytes: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("queued events serialize"))
    }
}

/// The id of an event: derived from `(session, client_event_id)` when it has both; otherwise
/// a UUIDv7, whose time-ordered prefix keeps the events' unique index append-mostly.
pub fn event_id(payload: &Value) -> String {
    match (session_id_of(payload), client_event_id_of(payload)) {
        (Some(session), Some(client_event_id)) => {
            let name = format!("{session}\n{client_event_id}");
            Uuid::new_v5(&CLIENT_EVENT_NAMESPACE, name.as_bytes()).to_string()
        }
        _ => Uuid::now_v7().to_string(),
    }
}

/// Publishes the events of one request; `Ok` means they are durably queued.
pub async fn publish(state: &Events, events: &QueuedEvents<'_>) -> BackendResult<()> {
    state.queue.publish(state.queue_name(), events.encode()).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn client_event_ids_give_stable_ids_per_session() {
        let a = json!({"session": {"id": "s1"}, "client_event_id": "c1"});
        assert_eq!(event_id(&a), event_id(&a));
        assert_ne!(event_id(&a), event_id(&json!({"session": {"id": "s2"}, "client_event_id": "c1"})));
        let anonymous = json!({"session": {"id": "s1"}});
        assert_ne!(event_id(&anonymous), event_id(&anonymous));
    }

    #[test]
    fn queued_events_round_trip_with_the_raw_payload_intact() {
        let raw: &RawValue = serde_json::from_str(r#"{"b": 1,   "a": [true]}"#).unwrap();
        let queued =
            QueuedEvents { received_at: 7, items: vec![QueuedEvent { id: "x".into(), payload: raw, rejected: None }] };
        let bytes = queued.encode();
        let decoded = QueuedEvents::decode(&bytes).unwrap();
        assert_eq!(decoded.items[0].payload.get(), r#"{"b": 1,   "a": [true]}"#);
        assert_eq!(decoded.received_at, 7);
    }
}
