//! The embedded search adapter: a tantivy index under the data dir.
//!
//! Each word is indexed whole (so exact words rank first) and as its prefixes up to
//! [`MAX_PREFIX_CHARS`] (so `hel` finds "hello" with a term lookup, not a scan). A tantivy
//! index has one writer, so one process indexes and the others open it read-only. New
//! documents are staged and committed by a background thread every [`STAGE_COMMIT_INTERVAL`],
//! because a commit per write would cost the writer far more than the write; the last staged
//! store id travels in each commit's payload, so after a crash indexing resumes from there.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, RegexQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Score, TantivyDocument, Term, doc};

use super::{
    MAX_PREFIX_CHARS, STAGE_COMMIT_INTERVAL, SearchDoc, SearchHit, SearchIndex, VISIBLE_WAIT, document_id, words,
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
}

/// The index's one writer with what has been staged since its last commit.
struct Writer {
    writer: IndexWriter,
    /// The highest store id staged; each commit records it as the commit's payload.
    watermark: i64,
    /// Documents were staged and not committed yet.
    dirty: bool,
}

impl TantivyInner {
    fn new(writer: Option<Writer>, reader: IndexReader, index: Index, fields: Fields) -> Self {
        let writer = writer.map(Mutex::new);
        Self { writer, reader, index, fields, staged: AtomicU64::new(0), shown: Watermark::default() }
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
        Ok(())
    }
}

/// Commits staged documents every [`STAGE_COMMIT_INTERVAL`] until the index is dropped.
fn committer(inner: std::sync::Weak<TantivyInner>) {
    loop {
        std::thread::sleep(STAGE_COMMIT_INTERVAL);
        let Some(inner) = inner.upgrade() else { return };
        if let Err(error) = inner.commit_staged() {
            tracing::error!(%error, "search index commit failed; staged documents are indexed again at start");
        }
    }
}

impl Drop for TantivyInner {
    fn drop(&mut self) {
        if let Err(error) = self.commit_staged() {
            tracing::error!(%error, "search index commit at shutdown failed");
        }
    }
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    scope: Field,
    number: Field,
    content: Field,
    words: Field,
    prefixes: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let tokens = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer("whitespace").set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING),
        scope: builder.add_text_field("scope", STRING),
        number: builder.add_i64_field("number", NumericOptions::default().set_stored().set_fast()),
        content: builder.add_text_field("content", STORED),
        words: builder.add_text_field("words", tokens.clone()),
        prefixes: builder.add_text_field("prefixes", tokens),
    };
    (builder.build(), fields)
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
        let index = Index::open_or_create(directory, schema).map_err(search_error)?;
        // A handle closing in this process may still hold the writer's lock for a moment.
        let mut attempts = 0;
        let writer = loop {
            match index.writer_with_num_threads(1, 64 * 1024 * 1024) {
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
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(search_error)?;
        let writer = Writer { writer, watermark, dirty: false };
        let inner = Arc::new(TantivyInner::new(Some(writer), reader, index, fields));
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("search-commit".into())
            .spawn(move || committer(weak))
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
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::OnCommitWithDelay).try_into().map_err(search_error)?;
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

    /// Commits what was staged, if anything.
    fn commit_staged(&self) -> tantivy::Result<()> {
        let Some(writer) = &self.writer else { return Ok(()) };
        let mut writer = writer.lock().expect("index writer lock poisoned");
        if !writer.dirty {
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
            let words = words(&message.content);
            let mut prefixes = String::new();
            for word in &words {
                for (end, ch) in word.char_indices().take(MAX_PREFIX_CHARS) {
                    prefixes.push_str(&word[..end + ch.len_utf8()]);
                    prefixes.push(' ');
                }
            }
            if replace {
                writer.delete_term(Term::from_field_text(f.id, &id));
            }
            writer.add_document(doc!(
                f.id => id,
                f.scope => message.scope,
                f.number => message.number,
                f.content => message.content,
                f.words => words.join(" "),
                f.prefixes => prefixes,
            ))?;
        }
        Ok(())
    }

    fn search(&self, scope: &str, query: &str, limit: usize) -> tantivy::Result<Vec<SearchHit>> {
        let f = self.fields;
        let terms = words(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(TermQuery::new(Term::from_field_text(f.scope, scope), IndexRecordOption::Basic)),
        )];
        for term in &terms {
            let prefix = truncate_chars(term, MAX_PREFIX_CHARS);
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_text(f.prefixes, prefix), IndexRecordOption::WithFreqs)),
            ));
            if prefix.len() < term.len() {
                // Longer than the indexed prefixes: the whole term must begin a word too.
                clauses.push((
                    Occur::Must,
                    Box::new(RegexQuery::from_pattern(&format!("{}.*", regex_literal(term)), f.words)?),
                ));
            }
            // A whole-word match ranks above a prefix-only one.
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(Term::from_field_text(f.words, term), IndexRecordOption::WithFreqs)),
                    2.0,
                )),
            ));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let collector = TopDocs::with_limit(limit).tweak_score(move |segment: &tantivy::SegmentReader| {
            let numbers = segment.fast_fields().i64("number").map(|column| column.first_or_default_col(0)).ok();
            move |doc: tantivy::DocId, score: Score| (score, numbers.as_ref().map_or(0, |n| n.get_val(doc)))
        });
        let top: Vec<((Score, i64), DocAddress)> = searcher.search(&query, &collector)?;
        top.into_iter()
            .map(|((_, number), address)| {
                let stored: TantivyDocument = searcher.doc(address)?;
                let content = stored.get_first(f.content).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                Ok(SearchHit { number, content })
            })
            .collect()
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

    async fn flush(&self) -> BackendResult<()> {
        self.blocking(TantivyInner::commit_staged).await
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

    /// Waits for the committer's next commit rather than committing: a search never adds a
    /// commit of its own (a commit holds the index's one writer, so each would slow indexing).
    async fn visible(&self) {
        let target = self.inner.staged.load(Relaxed);
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

    #[test]
    fn query_terms_become_literal_regular_expressions() {
        assert_eq!(regex_literal("a.b*"), "a\\.b\\*");
    }

    #[test]
    fn long_terms_are_cut_on_char_boundaries() {
        assert_eq!(truncate_chars("ééééé", 2), "éé");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }
}
