//! The search port: message text indexed per chat, searched case-insensitively with every query
//! term matching a word of the message whole or as a prefix, ranked by relevance then newest.
//!
//! Documents have deterministic ids (`scope` + number), so indexing the same message twice
//! replaces it: redelivered commands and edits leave exactly one document.
//!
//! Adapters: with the `tantivy` feature, `TantivyIndex` (embedded, an index under the data
//! dir); with the `elasticsearch` feature, `ElasticIndex`.

use async_trait::async_trait;

use super::{BackendError, BackendResult};

#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
#[cfg(feature = "tantivy")]
pub mod tantivy;

#[cfg(feature = "elasticsearch")]
pub use self::elasticsearch::ElasticIndex;
#[cfg(feature = "tantivy")]
pub use self::tantivy::TantivyIndex;

/// Longest prefix indexed for a word; longer query terms are cut to it.
pub const MAX_PREFIX_CHARS: usize = 20;

/// How long a staged document waits, at most, for the commit that makes it searchable once a
/// search waits for it ([`SearchIndex::visible`]); the least time between two commits.
pub const STAGE_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a staged document waits, at most, for its commit while no search waits for it.
/// Each commit writes a segment of what was staged since the last, and small segments cost
/// their writing and then their merging again: at a steady 15,000 creates/s, commits every
/// [`STAGE_COMMIT_INTERVAL`] took about a tenth of the standalone server's CPU more than
/// commits every second.
pub const IDLE_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait in [`SearchIndex::visible`] for a commit that shows what was staged.
pub const VISIBLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A message as the index sees it. `scope` names its chat; hits never cross scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchDoc {
    pub scope: String,
    pub number: i64,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SearchHit {
    pub number: i64,
    pub content: String,
}

#[async_trait]
pub trait SearchIndex: Send + Sync {
    /// Adds or replaces `docs`; they are searchable once this returns.
    async fn upsert(&self, docs: Vec<SearchDoc>) -> BackendResult<()>;

    /// Adds or replaces `docs`, new messages whose store ids go up to `watermark`, without
    /// waiting for them to be durable in the index: they become searchable within
    /// [`IDLE_COMMIT_INTERVAL`], or [`STAGE_COMMIT_INTERVAL`] once a search waits for them
    /// ([`SearchIndex::visible`]). After a crash, [`SearchIndex::indexed_watermark`] says from
    /// where to index the store again. Adapters whose writes are durable on return upsert.
    async fn stage(&self, docs: Vec<SearchDoc>, watermark: i64) -> BackendResult<()> {
        let _ = watermark;
        self.upsert(docs).await
    }

    /// [`SearchIndex::stage`] for messages that are new to the index (just inserted into the
    /// store, never indexed before): there is no older copy to replace, so an adapter may skip
    /// looking for one. Anything else goes through [`SearchIndex::stage`].
    async fn stage_new(&self, docs: Vec<SearchDoc>, watermark: i64) -> BackendResult<()> {
        self.stage(docs, watermark).await
    }

    /// [`SearchIndex::stage`] for indexing the store in bulk (catching up at start, a reindex):
    /// the documents need not be searchable before [`SearchIndex::flush`], so an adapter may
    /// leave them out of its periodic commits and write them in fewer, larger pieces.
    async fn stage_bulk(&self, docs: Vec<SearchDoc>, watermark: i64) -> BackendResult<()> {
        self.stage(docs, watermark).await
    }

    /// Makes every staged document durable now.
    async fn flush(&self) -> BackendResult<()> {
        Ok(())
    }

    /// The highest store id whose message is durably indexed, for adapters that stage;
    /// `None` when every write is durable on return (nothing to catch up).
    async fn indexed_watermark(&self) -> BackendResult<Option<i64>> {
        Ok(None)
    }

    /// The best `limit` messages of `scope` matching every term of `query`.
    async fn search(&self, scope: &str, query: &str, limit: usize) -> BackendResult<Vec<SearchHit>>;

    /// Returns once everything staged through this handle so far is visible to searches (at
    /// most [`VISIBLE_WAIT`] later): a search that follows it reads its own process's writes.
    async fn visible(&self) {}

    async fn ping(&self) -> BackendResult<()>;

    /// False for a read-only handle: its writes must go through the one process that indexes.
    fn writable(&self) -> bool {
        true
    }
}

/// The index of a process that searches and indexes nothing (a live-stream replica): it opens
/// no index at all, so it can run beside the one process that writes a tantivy index, or
/// anywhere without the index's files.
pub struct NoIndex;

#[async_trait]
impl SearchIndex for NoIndex {
    async fn upsert(&self, _docs: Vec<SearchDoc>) -> BackendResult<()> {
        Err(BackendError::Unavailable("this process opens no search index".into()))
    }

    async fn search(&self, _scope: &str, _query: &str, _limit: usize) -> BackendResult<Vec<SearchHit>> {
        Err(BackendError::Unavailable("this process opens no search index".into()))
    }

    /// Nothing to reach: readiness does not depend on an index this process does not use.
    async fn ping(&self) -> BackendResult<()> {
        Ok(())
    }

    fn writable(&self) -> bool {
        false
    }
}

/// Lowercased words of `text`: runs of letters and digits. A Greek final sigma is folded to σ,
/// so a prefix typed in capitals (`ΜΟΥΣ`, lowercased `μους`) still finds `μουσική`.
pub fn words(text: &str) -> Vec<String> {
    let mut rest = text;
    let mut words = Vec::new();
    while let Some(word) = next_word(&mut rest) {
        let mut lowered = String::with_capacity(word.len());
        push_lowercased(&mut lowered, word);
        words.push(lowered);
    }
    words
}

/// The next run of letters and digits in `rest`, as written; `rest` moves past it.
pub fn next_word<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let start = rest.find(char::is_alphanumeric)?;
    let tail = &rest[start..];
    let end = tail.find(|c: char| !c.is_alphanumeric()).unwrap_or(tail.len());
    *rest = &tail[end..];
    Some(&tail[..end])
}

/// Appends `word` lowercased as [`words`] does, one character at a time (so an indexer can
/// reuse one buffer): a final sigma, the one character whose lowercase depends on its place,
/// becomes σ like every other sigma.
pub fn push_lowercased(out: &mut String, word: &str) {
    for ch in word.chars().flat_map(char::to_lowercase) {
        out.push(if ch == 'ς' { 'σ' } else { ch });
    }
}

/// The id of a document: unique per scope and number.
pub fn document_id(scope: &str, number: i64) -> String {
    format!("{scope}#{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_runs_of_letters_and_digits() {
        assert_eq!(words("Hello, WORLD! it's 2024"), ["hello", "world", "it", "s", "2024"]);
        assert_eq!(words("Ünïcode Straße"), ["ünïcode", "straße"]);
        assert!(words("  ...  ").is_empty());
        assert_eq!(words("ΜΟΥΣ μουσική"), ["μουσ", "μουσική"], "a final sigma is folded to σ");
        assert_eq!(words("İstanbul ǅemal"), ["i\u{307}stanbul", "ǆemal"], "as str::to_lowercase");
    }
}
