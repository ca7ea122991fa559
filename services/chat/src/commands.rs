//! The commands chat-write publishes and chat-read's consumer persists. They carry internal
//! ids (the queue is internal) and the creation time the 201 answered with.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    CreateChat {
        application_id: i64,
        chat_number: i64,
        chat_name: String,
        created_at: i64,
    },
    CreateMessage {
        application_id: i64,
        chat_number: i64,
        message_number: i64,
        content: String,
        created_at: i64,
    },
    /// Delete a message whose create was still queued when the DELETE came: applied once the
    /// message is stored (it waits for it, as a message waits for its chat).
    DeleteMessage {
        application_id: i64,
        chat_number: i64,
        message_number: i64,
        deleted_at: i64,
    },
    /// Index a message again with the text the store holds now (sent by an API process that
    /// cannot write the search index itself).
    IndexMessage {
        application_id: i64,
        chat_number: i64,
        message_number: i64,
    },
}

impl Command {
    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("commands always serialise").into()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_json() {
        let command = Command::CreateMessage {
            application_id: 3,
            chat_number: 4,
            message_number: 5,
            content: "hé".into(),
            created_at: 6,
        };
        assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        assert!(Command::decode(b"{\"type\":\"drop_tables\"}").is_err());
    }
}
