//! What the 201s of a run acknowledged, and the checks DESIGN.md's "What a 201 promises,
//! whatever fails" comes down to: no number was handed out twice, and every acknowledged chat
//! and message reads back with the name or content it was acknowledged with.
//!
//! The checks return what they found rather than panic at the first miss, so a failing fault
//! test can print how many writes it lost before it asserts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Api;

/// A message create's 201, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedMessage {
    pub chat: i64,
    pub number: i64,
    pub content: String,
}

impl AckedMessage {
    /// From a message create's 201 body.
    pub fn from_body(body: &Value) -> Option<Self> {
        Some(Self {
            chat: body["chat_number"].as_i64()?,
            number: body["message_number"].as_i64()?,
            content: body["message_content"].as_str()?.to_owned(),
        })
    }
}

/// A chat create's 201, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedChat {
    pub number: i64,
    pub name: String,
}

impl AckedChat {
    /// From a chat create's 201 body.
    pub fn from_body(body: &Value) -> Option<Self> {
        Some(Self { number: body["chat_number"].as_i64()?, name: body["chat_name"].as_str()?.to_owned() })
    }
}

/// The keys more than one 201 carried, each with how many did.
pub fn handed_out_twice<K: Ord>(keys: impl IntoIterator<Item = K>) -> BTreeMap<K, usize> {
    let mut seen = BTreeMap::new();
    for key in keys {
        *seen.entry(key).or_insert(0) += 1;
    }
    seen.retain(|_, count| *count > 1);
    seen
}

/// `(chat, message number)` pairs more than one message 201 carried.
pub fn message_numbers_handed_out_twice(acked: &[AckedMessage]) -> BTreeMap<(i64, i64), usize> {
    handed_out_twice(acked.iter().map(|m| (m.chat, m.number)))
}

/// Chat numbers more than one chat 201 carried.
pub fn chat_numbers_handed_out_twice(acked: &[AckedChat]) -> BTreeMap<i64, usize> {
    handed_out_twice(acked.iter().map(|c| c.number))
}

/// Fails if any of `what` ("message numbers", say) was handed out twice, showing five of them.
pub fn assert_none_handed_out_twice<K: std::fmt::Debug>(what: &str, reused: &BTreeMap<K, usize>) {
    assert!(
        reused.is_empty(),
        "{} {what} were handed out twice, e.g. {:?}",
        reused.len(),
        reused.keys().take(5).collect::<Vec<_>>()
    );
}

/// Every message of `chat` (number → content), page by page.
pub async fn all_messages(api: &Api, token: &str, chat: i64) -> BTreeMap<i64, String> {
    all_pages(api, &format!("/api/applications/{token}/chats/{chat}/messages"), "message_number", "message_content")
        .await
}

/// Every chat of the application (number → name), page by page.
pub async fn all_chats(api: &Api, token: &str) -> BTreeMap<i64, String> {
    all_pages(api, &format!("/api/applications/{token}/chats"), "chat_number", "chat_name").await
}

async fn all_pages(api: &Api, path: &str, number_field: &str, text_field: &str) -> BTreeMap<i64, String> {
    let mut listed = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = api.get(&format!("{path}?limit=100&after={after}")).await;
        assert_eq!(page.status, 200, "GET {path}: {}", page.text);
        let items = page.body.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return listed;
        }
        for item in items {
            let number = item[number_field].as_i64().unwrap_or_else(|| panic!("{number_field} in {item}"));
            // A keyset page starts above `after`: anything else would page forever.
            assert!(number > after, "GET {path}?after={after} listed {number}");
            after = number;
            let text = item[text_field].as_str().unwrap_or_else(|| panic!("{text_field} in {item}")).to_owned();
            listed.insert(number, text);
        }
    }
}

/// What reading back the acknowledged writes found.
#[derive(Debug)]
pub struct ReadBack {
    /// What was read back: chats or messages.
    pub what: &'static str,
    pub acknowledged: usize,
    /// Acknowledged but not listed at all.
    pub missing: Vec<String>,
    /// Listed under their number with other text than their 201 carried.
    pub overwritten: Vec<String>,
    pub waited: Duration,
}

impl ReadBack {
    pub fn lost(&self) -> usize {
        self.missing.len() + self.overwritten.len()
    }

    /// Fails with the figures unless every acknowledged write read back.
    pub fn assert_complete(&self) {
        assert_eq!(self.lost(), 0, "{self}");
    }
}

impl fmt::Display for ReadBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} acknowledged {} not read back with their 201's text after {:.1?} ({} missing, {} with \
             other text)",
            self.lost(),
            self.acknowledged,
            self.what,
            self.waited,
            self.missing.len(),
            self.overwritten.len()
        )?;
        for (label, list) in [("missing", &self.missing), ("other text", &self.overwritten)] {
            if !list.is_empty() {
                let shown: Vec<&str> = list.iter().take(5).map(String::as_str).collect();
                write!(f, "; {label}, e.g. {}", shown.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Reads the messages of every chat in `acked` back until each acknowledged one is listed with
/// its content, or `within` has passed (reads trail 201s while the consumer catches up).
pub async fn read_back_messages(api: &Api, token: &str, acked: &[AckedMessage], within: Duration) -> ReadBack {
    let started = Instant::now();
    let chats: BTreeSet<i64> = acked.iter().map(|m| m.chat).collect();
    let mut listed: BTreeMap<i64, BTreeMap<i64, String>> = BTreeMap::new();
    let mut pending = chats;
    loop {
        for &chat in &pending {
            listed.insert(chat, all_messages(api, token, chat).await);
        }
        let read_back = |m: &AckedMessage| listed[&m.chat].get(&m.number) == Some(&m.content);
        pending = acked.iter().filter(|m| !read_back(m)).map(|m| m.chat).collect();
        if pending.is_empty() || started.elapsed() > within {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (mut missing, mut overwritten) = (Vec::new(), Vec::new());
    for message in acked {
        match listed[&message.chat].get(&message.number) {
            Some(content) if *content == message.content => {}
            Some(content) => overwritten.push(format!(
                "chat {} message {} {:?} listed as {content:?}",
                message.chat, message.number, message.content
            )),
            None => missing.push(format!("chat {} message {} {:?}", message.chat, message.number, message.content)),
        }
    }
    ReadBack { what: "messages", acknowledged: acked.len(), missing, overwritten, waited: started.elapsed() }
}

/// Reads the application's chats back until each acknowledged one is listed with its name, or
/// `within` has passed.
pub async fn read_back_chats(api: &Api, token: &str, acked: &[AckedChat], within: Duration) -> ReadBack {
    let started = Instant::now();
    let listed = loop {
        let listed = all_chats(api, token).await;
        let complete = acked.iter().all(|c| listed.get(&c.number) == Some(&c.name));
        if complete || started.elapsed() > within {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (mut missing, mut overwritten) = (Vec::new(), Vec::new());
    for chat in acked {
        match listed.get(&chat.number) {
            Some(name) if *name == chat.name => {}
            Some(name) => overwritten.push(format!("chat {} {:?} listed as {name:?}", chat.number, chat.name)),
            None => missing.push(format!("chat {} {:?}", chat.number, chat.name)),
        }
    }
    ReadBack { what: "chats", acknowledged: acked.len(), missing, overwritten, waited: started.elapsed() }
}
