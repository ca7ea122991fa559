//! The embedded search adapter: a tantivy index under the data dir.
//!
//! Each word is indexed whole (so exact words rank first) and as its prefixes up to
//! [`MAX_PREFIX_CHARS`] (so `hel` finds "hello" with a term lookup, not a scan), each as a term
//! of its chat: `{scope}\u{1f}{word}`. A search reads only the posting lists of its own chat,
//! so a big chat costs what its matches cost, and nothing intersects a chat-wide list. Hits are
//! the top `limit` by relevance then number, found with block-max WAND where tantivy offers it:
//! a one-term query is a union of term scorers, so whole blocks of postings that cannot beat
//! the current top `limit` are skipped. A tantivy index has one writer, so one process
//! indexes and the others open it read-only. New
//! documents are staged and committed by a background thread, within [`STAGE_COMMIT_INTERVAL`]
//! when a search waits for them and every [`IDLE_COMMIT_INTERVAL`] otherwise, because a commit
//! per write would cost the writer far more than the write; the last staged store id travels
//! in each commit's payload, so after a crash indexing resumes from there.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use tantivy::query::{BooleanQuery, BoostQuery, EnableScoring, Occur, Query, RegexQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::Token;
use tantivy::{DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, TantivyDocument, Term};

use super::{
    IDLE_COMMIT_INTERVAL, MAX_PREFIX_CHARS, STAGE_COMMIT_INTERVAL, SearchDoc, SearchHit, SearchIndex, VISIBLE_WAIT,
    document_id, next_word, push_lowercased, words,
};
use crate::backends::{BackendError, BackendResult};
use crate::watermark::Watermark;

/// `text` as a regular expression matching itself.
fn regex_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_ascii_punctuation() {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    escaped
}

/// `text` as a regular expression matching itself, whatever it holds: a scope is any string.
fn regex_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            escaped.push(ch);
        } else {
            escaped.push_str(&format!("\\x{{{:x}}}", ch as u32));
        }
    }
    escaped
}

/// Ends a chat's scope in an indexed term: words never hold it (they are letters and digits).
const SCOPE_END: char = '\u{1f}';

/// The term of `word` in the chat `scope`.
fn scoped(scope: &str, word: &str) -> String {
    let mut term = String::with_capacity(scope.len() + 1 + word.len());
    term.push_str(scope);
    term.push(SCOPE_END);
    term.push_str(word);
    term
}

fn truncate_chars(word: &str, max: usize) -> &str {
    match word.char_indices().nth(max) {
        Some((end, _)) => &word[..end],
        None => word,
    }
}

/// A tantivy index under the data dir: the one handle that writes it, or a read-only one.
#[derive(Clone)]
pub struct TantivyIndex {
    inner: Arc<TantivyInner>,
}

struct TantivyInner {
    /// `None` for a read-only handle (another process holds the index's one writer).
    writer: Option<Mutex<Writer>>,
    reader: IndexReader,
    index: Index,
    fields: Fields,
    /// Stage calls so far, counted under the writer's lock.
    staged: AtomicU64,
    /// The count of stage calls the reader shows, raised after each commit's reload.
    shown: Watermark,
    /// Set by a search waiting for staged documents: the committer commits early.
    wanted: Arc<CommitWanted>,
}

/// Whether a search waits for a commit, and the committer's wake-up.
#[derive(Default)]
struct CommitWanted {
    wanted: Mutex<bool>,
    wake: Condvar,
}

impl CommitWanted {
    fn want(&self) {
        *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_one();
    }

    /// Waits until a commit is wanted or `timeout` passes, and takes the request.
    fn wait(&self, timeout: std::time::Duration) {
        let wanted = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut wanted, _) =
            self.wake.wait_timeout_while(wanted, timeout, |wanted| !*wanted).unwrap_or_else(PoisonError::into_inner);
        *wanted = false;
    }
}

/// The index's one writer with what has been staged since its last commit.
struct Writer {
    writer: IndexWriter,
    /// The highest store id staged; each commit records it as the commit's payload.
    watermark: i64,
    /// Documents were staged and not committed yet.
    dirty: bool,
    /// Documents were staged in bulk and not committed yet: only a flush (or a commit for
    /// other documents) commits them, so a bulk load is written in segments the size of the
    /// writer's memory budget rather than one per commit interval.
    bulk: bool,
}

impl TantivyInner {
    fn new(writer: Option<Writer>, reader: IndexReader, index: Index, fields: Fields) -> Self {
        let writer = writer.map(Mutex::new);
        let wanted = Arc::default();
        Self { writer, reader, index, fields, staged: AtomicU64::new(0), shown: Watermark::default(), wanted }
    }

    /// After a commit that covered `staged` stage calls: reloads the reader and says so.
    fn show(&self, staged: u64) -> tantivy::Result<()> {
        self.reader.reload()?;
        self.shown.raise(staged);
        Ok(())
    }
}

impl Writer {
    fn commit(&mut self) -> tantivy::Result<()> {
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&self.watermark.to_string());
        prepared.commit()?;
        self.dirty = false;
        self.bulk = false;
        Ok(())
    }
}

/// Commits staged documents until the index is dropped: every [`IDLE_COMMIT_INTERVAL`], or as
/// soon as a search wants a commit, but never within [`STAGE_COMMIT_INTERVAL`] of the last one
/// (searches that keep coming cost a commit per interval, not one each).
fn committer(inner: std::sync::Weak<TantivyInner>, wanted: Arc<CommitWanted>) {
    let mut last = Instant::now();
    loop {
        wanted.wait(IDLE_COMMIT_INTERVAL.saturating_sub(last.elapsed()));
        std::thread::sleep(STAGE_COMMIT_INTERVAL.saturating_sub(last.elapsed()));
        last = Instant::now();
        let Some(inner) = inner.upgrade() else { return };
        if let Err(error) = inner.commit_staged(false) {
            tracing::error!(%error, "search index commit failed; staged documents are indexed again at start");
        }
    }
}

impl Drop for TantivyInner {
    fn drop(&mut self) {
        if let Err(error) = self.commit_staged(true) {
            tracing::error!(%error, "search index commit at shutdown failed");
        }
        // The committer would otherwise sleep out its idle interval before it saw the drop.
        self.wanted.want();
    }
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    number: Field,
    content: Field,
    /// The message's words, each a term of its chat.
    words: Field,
    /// The prefixes of the message's words up to [`MAX_PREFIX_CHARS`], each a term of its chat.
    prefixes: Field,
}

/// The index's layout. An index of another layout (the one before chat-scoped terms had a
/// `scope` field and unscoped `words` and `prefixes`; the one before [`ChatTerms`] took its
/// terms pre-tokenized) is rebuilt from the store at start.
fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let tokens = |tokenizer| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(tokenizer).set_index_option(IndexRecordOption::WithFreqs),
        )
    };
    let fields = Fields {
        id: builder.add_text_field("id", STRING),
        number: builder.add_i64_field("number", NumericOptions::default().set_stored().set_fast()),
        content: builder.add_text_field("content", STORED),
        words: builder.add_text_field("chat_words", tokens(ChatTerms::WORDS)),
        prefixes: builder.add_text_field("chat_prefixes", tokens(ChatTerms::PREFIXES)),
    };
    (builder.build(), fields)
}

/// The tokenizer of the `chat_words` (whole words) or `chat_prefixes` field. A field's value is
/// `{scope}\u{1f}{text}` ([`scoped`]); its terms are the words of `text` (or their prefixes up to
/// [`MAX_PREFIX_CHARS`]), lowercased as [`words`] does, each as a term of the chat `scope`. The
/// terms come out of the indexing thread one at a time in one reused token, so a queued
/// message is one string rather than a string per term (a bulk load queues thousands).
#[derive(Clone, Copy)]
struct ChatTerms {
    prefixes: bool,
}

impl ChatTerms {
    const WORDS: &str = "chat_words";
    const PREFIXES: &str = "chat_prefixes";

    fn register(index: &Index) {
        index.tokenizers().register(Self::WORDS, ChatTerms { prefixes: false });
        index.tokenizers().register(Self::PREFIXES, ChatTerms { prefixes: true });
    }
}

impl tantivy::tokenizer::Tokenizer for ChatTerms {
    type TokenStream<'a> = ChatTermStream<'a>;

    fn token_stream<'a>(&'a mut self, value: &'a str) -> ChatTermStream<'a> {
        let (scope, rest) = value.split_once(SCOPE_END).unwrap_or(("", value));
        let mut token = Token { position: usize::MAX, ..Token::default() };
        token.text.clear();
        token.text.push_str(scope);
        token.text.push(SCOPE_END);
        let scope_len = token.text.len();
        ChatTermStream { rest, prefixes: self.prefixes, token, scope_len, word: String::new(), end: 0, chars: 0 }
    }
}

struct ChatTermStream<'a> {
    /// The text after the word being emitted.
    rest: &'a str,
    prefixes: bool,
    /// `token.text[..scope_len]` is the scope and its end mark.
    token: Token,
    scope_len: usize,
    /// The word being emitted, lowercased.
    word: String,
    /// With `prefixes`: where the last prefix emitted ends in `word`, and its length in chars.
    end: usize,
    chars: usize,
}

impl ChatTermStream<'_> {
    fn emit(&mut self, end: usize) -> bool {
        self.token.text.truncate(self.scope_len);
        self.token.text.push_str(&self.word[..end]);
        self.token.position = self.token.position.wrapping_add(1);
        true
    }
}

impl tantivy::tokenizer::TokenStream for ChatTermStream<'_> {
    fn advance(&mut self) -> bool {
        if self.prefixes && self.end < self.word.len() && self.chars < MAX_PREFIX_CHARS {
            let next = self.word[self.end..].chars().next().map_or(0, char::len_utf8);
            self.end += next;
            self.chars += 1;
            return self.emit(self.end);
        }
        let Some(word) = next_word(&mut self.rest) else { return false };
        self.word.clear();
        push_lowercased(&mut self.word, word);
        if !self.prefixes {
            return self.emit(self.word.len());
        }
        (self.end, self.chars) = (0, 0);
        self.advance()
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

/// Decompressed 16 KiB blocks of stored text each segment's reader keeps (tantivy's default is
/// 100, 1.6 MiB a segment). A search fetches only its `limit` hits, spread over a big chat, so
/// a cache seldom serves one twice: a few blocks keep the memory of a dozen segments small.
const DOC_STORE_CACHE_BLOCKS: usize = 8;

/// The writer: one indexing thread (the server has other work, and one thread keeps up with
/// the create path on two cores) with a 16 MiB heap, the most it buffers before writing a
/// segment. Staged messages are committed every [`IDLE_COMMIT_INTERVAL`] at most; a second of
/// creates at full speed stays below it, a bulk load fills it, and a larger heap would only
/// make that load's segments larger while adding to the server's peak memory. One merge
/// thread: each merge holds buffers and maps the segments it reads, so merges in parallel
/// multiply that peak.
fn writer_options() -> tantivy::indexer::IndexWriterOptions {
    tantivy::indexer::IndexWriterOptions::builder()
        .memory_budget_per_thread(16 * 1024 * 1024)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build()
}

/// tantivy's log merge policy (segments merged 8 of a size at a time, so a search visits a
/// handful of segments of a few sizes), stated here rather than left to a default.
fn merge_policy() -> Box<dyn tantivy::merge_policy::MergePolicy> {
    let mut policy = tantivy::merge_policy::LogMergePolicy::default();
    policy.set_min_num_segments(8);
    Box::new(policy)
}

/// A reader of `index` that reloads by `policy`, keeping [`DOC_STORE_CACHE_BLOCKS`] of stored
/// text per segment.
fn reader(index: &Index, policy: ReloadPolicy) -> BackendResult<IndexReader> {
    index
        .reader_builder()
        .reload_policy(policy)
        .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
        .try_into()
        .map_err(search_error)
}

fn search_error(error: impl std::fmt::Display) -> BackendError {
    BackendError::Search(error.to_string())
}

impl TantivyIndex {
    /// Opens (creating it if needed) the index in `dir`.
    pub fn open(dir: &Path) -> BackendResult<Self> {
        std::fs::create_dir_all(dir).map_err(search_error)?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(search_error)?;
        let index = match Index::open_or_create(directory, schema.clone()) {
            Err(tantivy::TantivyError::SchemaError(_)) => {
                // An index of an older layout: rebuilt from the store at start (it records no
                // watermark, so everything the store holds is indexed again).
                tracing::warn!(dir = %dir.display(), "search index of an older layout removed; indexing the store again");
                std::fs::remove_dir_all(dir).map_err(search_error)?;
                std::fs::create_dir_all(dir).map_err(search_error)?;
                let directory = tantivy::directory::MmapDirectory::open(dir).map_err(search_error)?;
                Index::create(directory, schema, tantivy::IndexSettings::default()).map_err(search_error)?
            }
            opened => opened.map_err(search_error)?,
        };
        ChatTerms::register(&index);
        // A handle closing in this process may still hold the writer's lock for a moment.
        let mut attempts = 0;
        let writer = loop {
            match index.writer_with_options(writer_options()) {
                Ok(writer) => break writer,
                Err(tantivy::TantivyError::LockFailure(..)) if attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(error) => {
                    return Err(search_error(format!(
                        "{error} (one process indexes a tantivy index: run one consumer, or use Elasticsearch to scale out)"
                    )));
                }
            }
        };
        let watermark = payload_watermark(&index)?.unwrap_or(0);
        let reader = reader(&index, ReloadPolicy::Manual)?;
        writer.set_merge_policy(merge_policy());
        let writer = Writer { writer, watermark, dirty: false, bulk: false };
        let inner = Arc::new(TantivyInner::new(Some(writer), reader, index, fields));
        let (weak, wanted) = (Arc::downgrade(&inner), inner.wanted.clone());
        std::thread::Builder::new()
            .name("search-commit".into())
            .spawn(move || committer(weak, wanted))
            .map_err(search_error)?;
        Ok(Self { inner })
    }

    /// Opens the index in `dir` for searching only, following the commits of the process that
    /// writes it (within about a second).
    pub fn open_read_only(dir: &Path) -> BackendResult<Self> {
        std::fs::create_dir_all(dir).map_err(search_error)?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(search_error)?;
        let index = Index::open_or_create(directory, schema).map_err(search_error)?;
        ChatTerms::register(&index);
        let reader = reader(&index, ReloadPolicy::OnCommitWithDelay)?;
        Ok(Self { inner: Arc::new(TantivyInner::new(None, reader, index, fields)) })
    }
}

impl TantivyIndex {
    /// Runs `work` on the index on a blocking thread: tantivy waits on disk and on the
    /// writer's lock, which must not hold up the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&TantivyInner) -> tantivy::Result<T> + Send + 'static,
    ) -> BackendResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner)).await.map_err(search_error)?.map_err(search_error)
    }
}

/// The watermark the index's last commit recorded, if any.
fn payload_watermark(index: &Index) -> BackendResult<Option<i64>> {
    let metas = index.load_metas().map_err(search_error)?;
    Ok(metas.payload.and_then(|payload| payload.parse().ok()))
}

impl TantivyInner {
    fn writer(&self) -> tantivy::Result<std::sync::MutexGuard<'_, Writer>> {
        let Some(writer) = &self.writer else {
            return Err(tantivy::TantivyError::InvalidArgument("this search index handle is read-only".into()));
        };
        Ok(writer.lock().expect("index writer lock poisoned"))
    }

    /// Adds `docs` and commits them (with anything staged before).
    fn upsert(&self, docs: Vec<SearchDoc>) -> tantivy::Result<()> {
        let mut writer = self.writer()?;
        self.add(&mut writer, docs, true)?;
        writer.commit()?;
        let staged = self.staged.load(Relaxed);
        drop(writer);
        self.show(staged)
    }

    /// Adds `docs` for the next commit; with `replace`, each replaces the document of its id.
    fn stage(&self, docs: Vec<SearchDoc>, watermark: i64, replace: bool) -> tantivy::Result<()> {
        let mut writer = self.writer()?;
        self.add(&mut writer, docs, replace)?;
        writer.watermark = writer.watermark.max(watermark);
        writer.dirty = true;
        self.staged.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Adds `docs` (each replacing the document of its id) for the next flush. Only ids the
    /// committed index holds are deleted first: each pending delete holds memory until the
    /// next commit, and a bulk load waits for its flush.
    fn stage_bulk(&self, docs: Vec<SearchDoc>, watermark: i64) -> tantivy::Result<()> {
        let searcher = self.reader.searcher();
        let (mut present, mut new) = (Vec::new(), Vec::new());
        for doc in docs {
            let id = Term::from_field_text(self.fields.id, &document_id(&doc.scope, doc.number));
            if searcher.doc_freq(&id)? > 0 { present.push(doc) } else { new.push(doc) }
        }
        let mut writer = self.writer()?;
        self.add(&mut writer, present, true)?;
        self.add(&mut writer, new, false)?;
        writer.watermark = writer.watermark.max(watermark);
        writer.bulk = true;
        Ok(())
    }

    /// Commits what was staged, if anything (with `bulk`, documents staged in bulk too).
    fn commit_staged(&self, bulk: bool) -> tantivy::Result<()> {
        let Some(writer) = &self.writer else { return Ok(()) };
        let mut writer = writer.lock().expect("index writer lock poisoned");
        if !(writer.dirty || bulk && writer.bulk) {
            return Ok(());
        }
        writer.commit()?;
        let staged = self.staged.load(Relaxed);
        drop(writer);
        self.show(staged)
    }

    /// Adds `docs`; with `replace`, each first deletes any document of its id (a delete costs a
    /// term lookup in every segment at the next commit, so new messages skip it).
    fn add(&self, writer: &mut Writer, docs: Vec<SearchDoc>, replace: bool) -> tantivy::Result<()> {
        let f = self.fields;
        let writer = &mut writer.writer;
        for message in docs {
            let id = document_id(&message.scope, message.number);
            let terms = scoped(&message.scope, &message.content);
            if replace {
                writer.delete_term(Term::from_field_text(f.id, &id));
            }
            let mut document = TantivyDocument::new();
            document.add_text(f.id, id);
            document.add_i64(f.number, message.number);
            document.add_text(f.content, message.content);
            document.add_text(f.words, &terms);
            document.add_text(f.prefixes, terms);
            writer.add_document(document)?;
        }
        Ok(())
    }

    /// Documents of `scope` with a word beginning with `prefix` (at most [`MAX_PREFIX_CHARS`]).
    fn prefix_query(&self, scope: &str, prefix: &str) -> Box<dyn Query> {
        let term = Term::from_field_text(self.fields.prefixes, &scoped(scope, prefix));
        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
    }

    /// The optional clause by which a whole-word match ranks above a prefix-only one.
    fn whole_word(&self, scope: &str, term: &str) -> (Occur, Box<dyn Query>) {
        let term = Term::from_field_text(self.fields.words, &scoped(scope, term));
        (Occur::Should, Box::new(BoostQuery::new(Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)), 2.0)))
    }

    fn search(&self, scope: &str, query: &str, limit: usize) -> tantivy::Result<Vec<SearchHit>> {
        let f = self.fields;
        // A repeated term requires nothing more, and ranks alike: scored once.
        let mut terms = words(query);
        let mut seen = std::collections::HashSet::new();
        terms.retain(|term| seen.insert(term.clone()));
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let query = match terms.as_slice() {
            [term] if term.chars().count() <= MAX_PREFIX_CHARS => {
                // One term indexed whole: a union of its prefix and its whole word (every word
                // is also its own prefix, so the union matches what the prefix does). A union
                // of term scorers runs with block-max WAND.
                BooleanQuery::new(vec![(Occur::Should, self.prefix_query(scope, term)), self.whole_word(scope, term)])
            }
            _ => {
                // Every term's prefix required, intersected; then each whole word scored on the
                // intersection's documents alone (one optional term at a time, where a union of
                // them would score every document of either word).
                let mut required: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for term in &terms {
                    let prefix = truncate_chars(term, MAX_PREFIX_CHARS);
                    required.push((Occur::Must, self.prefix_query(scope, prefix)));
                    if prefix.len() < term.len() {
                        // Longer than the indexed prefixes: the whole term must begin a word too.
                        let pattern = format!("{}{}.*", regex_escaped(&scoped(scope, "")), regex_literal(term));
                        required.push((Occur::Must, Box::new(RegexQuery::from_pattern(&pattern, f.words)?)));
                    }
                }
                let mut query = BooleanQuery::new(required);
                for term in &terms {
                    query = BooleanQuery::new(vec![(Occur::Must, Box::new(query)), self.whole_word(scope, term)]);
                }
                query
            }
        };
        let searcher = self.reader.searcher();
        let weight = query.weight(EnableScoring::enabled_from_searcher(&searcher))?;
        let mut top = TopHits::new(limit);
        for (ordinal, segment) in searcher.segment_readers().iter().enumerate() {
            let numbers = segment.fast_fields().i64("number")?.first_or_default_col(0);
            let alive = segment.alive_bitset();
            // Only documents scoring above the threshold come back: those that can still enter
            // the top, ties with its last included (they may be newer).
            weight.for_each_pruning(top.threshold(), segment, &mut |doc, score| {
                if alive.is_none_or(|alive| alive.is_alive(doc)) {
                    top.push(Ranked { score, number: numbers.get_val(doc), segment: ordinal as u32, doc });
                }
                top.threshold()
            })?;
        }
        top.into_sorted()
            .into_iter()
            .map(|hit| {
                let stored: TantivyDocument = searcher.doc(DocAddress::new(hit.segment, hit.doc))?;
                let content = stored.get_first(f.content).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                Ok(SearchHit { number: hit.number, content })
            })
            .collect()
    }
}

/// A matching document, ordered by relevance then number (the greater is the better hit).
#[derive(Clone, Copy)]
struct Ranked {
    score: Score,
    number: i64,
    segment: u32,
    doc: DocId,
}

impl Ranked {
    fn key(&self) -> (Score, i64) {
        (self.score, self.number)
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let (score, number) = self.key();
        let (other_score, other_number) = other.key();
        score.total_cmp(&other_score).then(number.cmp(&other_number))
    }
}

/// The best `limit` hits so far, across segments.
struct TopHits {
    limit: usize,
    /// A min-heap: its top is the worst hit kept.
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Ranked>>,
}

impl TopHits {
    fn new(limit: usize) -> Self {
        Self { limit, heap: std::collections::BinaryHeap::with_capacity(limit + 1) }
    }

    fn push(&mut self, hit: Ranked) {
        if self.heap.len() < self.limit {
            self.heap.push(std::cmp::Reverse(hit));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && hit > worst.0
        {
            worst.0 = hit;
        }
    }

    /// The score a document must exceed to be worth ranking: below the worst hit kept once
    /// the top is full (a tie may still win on its number), anything before.
    fn threshold(&self) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.limit => worst.0.score.next_down(),
            _ => Score::MIN,
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<Ranked> {
        let mut hits: Vec<Ranked> = self.heap.into_iter().map(|hit| hit.0).collect();
        hits.sort_by(|a, b| b.cmp(a));
        hits
    }
}

#[async_trait]
impl SearchIndex for TantivyIndex {
    async fn upsert(&self, docs: Vec<SearchDoc>) -> BackendResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| inner.upsert(docs)).await
    }

    async fn stage(&self, docs: Vec<SearchDoc>, watermark: i64) -> BackendResult<()> {
        self.blocking(move |inner| inner.stage(docs, watermark, true)).await
    }

    async fn stage_new(&self, docs: Vec<SearchDoc>, watermark: i64) -> BackendResult<()> {
        self.blocking(move |inner| inner.stage(docs, watermark, false)).await
    }

    async fn stage_bulk(&self, docs: Vec<SearchDoc>, watermark: i64) -> BackendResult<()> {
        self.blocking(move |inner| inner.stage_bulk(docs, watermark)).await
    }

    async fn flush(&self) -> BackendResult<()> {
        self.blocking(|inner| inner.commit_staged(true)).await
    }

    async fn indexed_watermark(&self) -> BackendResult<Option<i64>> {
        if self.inner.writer.is_none() {
            return Ok(None);
        }
        Ok(Some(payload_watermark(&self.inner.index)?.unwrap_or(0)))
    }

    async fn search(&self, scope: &str, query: &str, limit: usize) -> BackendResult<Vec<SearchHit>> {
        let (scope, query) = (scope.to_owned(), query.to_owned());
        self.blocking(move |inner| inner.search(&scope, &query, limit)).await
    }

    /// Asks the committer for its next commit rather than committing: a search never adds a
    /// commit of its own (a commit holds the index's one writer, so each would slow indexing).
    async fn visible(&self) {
        let target = self.inner.staged.load(Relaxed);
        if self.inner.shown.reached(target, std::time::Duration::ZERO).await {
            return;
        }
        self.inner.wanted.want();
        if !self.inner.shown.reached(target, VISIBLE_WAIT).await {
            tracing::debug!(target, "staged documents not committed in time; searching what is visible");
        }
    }

    async fn ping(&self) -> BackendResult<()> {
        Ok(())
    }

    fn writable(&self) -> bool {
        self.inner.writer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_search_gets_its_commit_before_the_idle_one() {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyIndex::open(dir.path()).unwrap();
        let doc = SearchDoc { scope: "1:1".into(), number: 1, content: "hello there".into() };
        // The committer's first idle commit is a second away: only a request brings it sooner.
        index.stage_new(vec![doc], 1).await.unwrap();
        let asked = Instant::now();
        index.visible().await;
        let waited = asked.elapsed();
        let hits = index.search("1:1", "hel", 10).await.unwrap();
        assert_eq!(hits.iter().map(|hit| hit.number).collect::<Vec<_>>(), [1], "visible once it returns");
        assert!(waited < IDLE_COMMIT_INTERVAL / 2, "committed on request, after {waited:?}");
    }

    #[test]
    fn query_terms_become_literal_regular_expressions() {
        assert_eq!(regex_literal("a.b*"), "a\\.b\\*");
    }

    #[test]
    fn any_scope_becomes_a_literal_regular_expression() {
        assert_eq!(regex_escaped("12:3 é"), "12\\x{3a}3\\x{20}é");
        let pattern = format!("{}hel.*", regex_escaped(&scoped("a.b", "")));
        let regex = tantivy::query::RegexQuery::from_pattern(&pattern, Schema::builder().add_text_field("f", STRING));
        assert!(regex.is_ok(), "{pattern}");
    }

    fn terms(prefixes: bool, value: &str) -> Vec<(usize, String)> {
        use tantivy::tokenizer::{TokenStream, Tokenizer};
        let mut tokenizer = ChatTerms { prefixes };
        let mut stream = tokenizer.token_stream(value);
        let mut terms = Vec::new();
        while let Some(token) = stream.next() {
            terms.push((token.position, token.text.clone()));
        }
        terms
    }

    #[test]
    fn chat_terms_are_the_scoped_words_or_their_prefixes() {
        let words: Vec<_> = terms(false, "1:2\u{1f}Hi, ÉTÉ!").into_iter().map(|(_, text)| text).collect();
        assert_eq!(words, ["1:2\u{1f}hi", "1:2\u{1f}été"]);
        let prefixes = terms(true, "1:2\u{1f}Hi ÉTÉ");
        let expected = ["h", "hi", "é", "ét", "été"].map(|prefix| scoped("1:2", prefix));
        assert_eq!(prefixes.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>(), expected);
        assert_eq!(prefixes.iter().map(|(position, _)| *position).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        let long = "a".repeat(MAX_PREFIX_CHARS + 5);
        assert_eq!(terms(true, &scoped("s", &long)).len(), MAX_PREFIX_CHARS, "prefixes stop at the longest indexed");
        assert!(terms(true, &scoped("s", " ... ")).is_empty());
    }

    #[test]
    fn long_terms_are_cut_on_char_boundaries() {
        assert_eq!(truncate_chars("ééééé", 2), "éé");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }
}
