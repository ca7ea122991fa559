//! The Elasticsearch search adapter (the official `elasticsearch` crate).
//!
//! One index holds every message. Its mapping gives the search semantics of the port:
//! `content` is analysed with an edge n-gram filter at index time (so `hel` finds "hello") and
//! the standard analyser at search time; `content.exact` keeps whole words so they rank
//! first; `scope` (the chat) is a keyword every query filters on. Document ids are
//! deterministic (`scope#number`), so indexing twice replaces, and bulk writes wait for a
//! refresh so a document is searchable once `upsert` returns.

use async_trait::async_trait;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::{IndicesCreateParts, IndicesExistsParts};
use elasticsearch::params::Refresh;
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use serde_json::{Value, json};

use super::{MAX_PREFIX_CHARS, SearchDoc, SearchHit, SearchIndex, document_id, words};
use crate::backends::{BackendError, BackendResult};

fn search_error(error: impl std::fmt::Display) -> BackendError {
    BackendError::Search(format!("elasticsearch: {error}"))
}

pub struct ElasticIndex {
    client: Elasticsearch,
    index: String,
}

/// The settings and mapping of the messages index.
pub fn index_definition() -> Value {
    json!({
        "settings": {
            "analysis": {
                "filter": {
                    "word_prefixes": { "type": "edge_ngram", "min_gram": 1, "max_gram": MAX_PREFIX_CHARS }
                },
                "analyzer": {
                    "prefixes": { "type": "custom", "tokenizer": "standard", "filter": ["lowercase", "word_prefixes"] },
                    "words": { "type": "custom", "tokenizer": "standard", "filter": ["lowercase"] }
                }
            }
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "scope": { "type": "keyword" },
                "number": { "type": "long" },
                "content": {
                    "type": "text",
                    "analyzer": "prefixes",
                    "search_analyzer": "words",
                    "fields": { "exact": { "type": "text", "analyzer": "words" } }
                }
            }
        }
    })
}

/// The query for `text` within `scope`: every term must match a word whole or as a prefix;
/// whole words score higher; ties go to the newest. Prefixes are indexed up to
/// [`MAX_PREFIX_CHARS`], so a longer term is matched on its first characters there and, whole,
/// as a prefix of a word of `content.exact`.
pub fn query(scope: &str, text: &str, limit: usize) -> Value {
    let mut must = vec![json!({ "match": { "content": { "query": cut_long_words(text), "operator": "and" } } })];
    for term in words(text).into_iter().filter(|term| term.chars().count() > MAX_PREFIX_CHARS) {
        must.push(json!({ "prefix": { "content.exact": { "value": term } } }));
    }
    json!({
        "size": limit,
        "_source": ["number", "content"],
        "query": {
            "bool": {
                "filter": [{ "term": { "scope": scope } }],
                "must": must,
                "should": [{ "match": { "content.exact": { "query": text, "boost": 2.0 } } }]
            }
        },
        "sort": [{ "_score": "desc" }, { "number": "desc" }]
    })
}

/// `text` with every run of letters and digits cut to [`MAX_PREFIX_CHARS`].
fn cut_long_words(text: &str) -> String {
    let mut run = 0;
    text.chars()
        .filter(|ch| {
            run = if ch.is_alphanumeric() { run + 1 } else { 0 };
            run <= MAX_PREFIX_CHARS
        })
        .collect()
}

impl ElasticIndex {
    /// Connects to `url` and creates `index` with its mapping if it does not exist.
    pub async fn connect(url: &str, index: &str) -> BackendResult<Self> {
        let transport = Transport::single_node(url).map_err(search_error)?;
        let client = Elasticsearch::new(transport);
        let elastic = Self { client, index: index.to_owned() };
        elastic.ensure_index().await?;
        Ok(elastic)
    }

    async fn ensure_index(&self) -> BackendResult<()> {
        let exists = self
            .client
            .indices()
            .exists(IndicesExistsParts::Index(&[&self.index]))
            .send()
            .await
            .map_err(search_error)?;
        if exists.status_code().is_success() {
            return Ok(());
        }
        let created = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&self.index))
            .body(index_definition())
            .send()
            .await
            .map_err(search_error)?;
        let status = created.status_code();
        if status.is_success() {
            return Ok(());
        }
        let body: Value = created.json().await.unwrap_or(Value::Null);
        // Another replica created it first.
        if body["error"]["type"] == "resource_already_exists_exception" {
            return Ok(());
        }
        Err(search_error(format!("creating index {}: {status} {body}", self.index)))
    }
}

#[async_trait]
impl SearchIndex for ElasticIndex {
    async fn upsert(&self, docs: Vec<SearchDoc>) -> BackendResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut body: Vec<JsonBody<Value>> = Vec::with_capacity(docs.len() * 2);
        for doc in docs {
            body.push(json!({ "index": { "_id": document_id(&doc.scope, doc.number) } }).into());
            body.push(json!({ "scope": doc.scope, "number": doc.number, "content": doc.content }).into());
        }
        let response = self
            .client
            .bulk(BulkParts::Index(&self.index))
            .refresh(Refresh::WaitFor)
            .body(body)
            .send()
            .await
            .map_err(search_error)?;
        let status = response.status_code();
        let answer: Value = response.json().await.map_err(search_error)?;
        if !status.is_success() || answer["errors"] == true {
            return Err(search_error(format!("bulk index failed: {status} {answer}")));
        }
        Ok(())
    }

    async fn search(&self, scope: &str, query_text: &str, limit: usize) -> BackendResult<Vec<SearchHit>> {
        if words(query_text).is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let response = self
            .client
            .search(SearchParts::Index(&[&self.index]))
            .body(query(scope, query_text, limit))
            .send()
            .await
            .map_err(search_error)?;
        let status = response.status_code();
        let answer: Value = response.json().await.map_err(search_error)?;
        if !status.is_success() {
            return Err(search_error(format!("search failed: {status} {answer}")));
        }
        let hits = answer["hits"]["hits"].as_array().cloned().unwrap_or_default();
        Ok(hits
            .into_iter()
            .filter_map(|hit| {
                Some(SearchHit {
                    number: hit["_source"]["number"].as_i64()?,
                    content: hit["_source"]["content"].as_str()?.to_owned(),
                })
            })
            .collect())
    }

    async fn ping(&self) -> BackendResult<()> {
        let response = self.client.ping().send().await.map_err(search_error)?;
        if response.status_code().is_success() {
            Ok(())
        } else {
            Err(search_error(format!("ping answered {}", response.status_code())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_filter_by_scope_and_require_every_term() {
        let q = query("7:3", "hel wor", 10);
        assert_eq!(q["query"]["bool"]["filter"][0]["term"]["scope"], "7:3");
        assert_eq!(q["query"]["bool"]["must"][0]["match"]["content"]["operator"], "and");
        assert_eq!(q["sort"][1]["number"], "desc");
        assert_eq!(q["query"]["bool"]["must"].as_array().map(Vec::len), Some(1), "short terms: one match");
        let long = query("7:3", "Internationalizations rock", 10);
        let must = &long["query"]["bool"]["must"];
        assert_eq!(must[0]["match"]["content"]["query"], "Internationalization rock", "cut to the indexed prefixes");
        assert_eq!(must[1]["prefix"]["content.exact"]["value"], "internationalizations", "and begins a word whole");
        let mapping = index_definition();
        assert_eq!(mapping["settings"]["analysis"]["filter"]["word_prefixes"]["max_gram"], MAX_PREFIX_CHARS);
        assert_eq!(mapping["mappings"]["properties"]["content"]["search_analyzer"], "words");
    }
}
