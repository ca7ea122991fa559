//! The gateway's `/openapi.json`: one document for everything reachable through it, merged from
//! the documents its pools serve.
//!
//! Each pool's document is fetched from one of its healthy upstreams and only the operations
//! the routing table sends to that pool are kept, so every operation listed can be called
//! through the gateway and reaches the service that documented it. Components (schemas,
//! responses, ...) and tags are merged by name. The result is cached for [`CACHE_TTL`] and
//! dropped on reload. A pool whose document cannot be fetched is left out and named in the
//! `x-openapi-missing-pools` header; with none at all the gateway answers 503.
//!
//! `/docs` is not answered here: the routing table sends it to a service, whose Swagger UI page
//! loads `/openapi.json` from the same origin, that is, this merged document.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{Map, Value};

use crate::gateway::Table;

/// How long a merged document is served before it is built again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Largest document accepted from an upstream.
const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;
const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// A merged document as served, and the pools it lacks.
#[derive(Clone, Debug)]
pub struct Merged {
    pub json: Bytes,
    pub missing_pools: Vec<String>,
}

/// The cached merged document, tied to the table it was built from.
#[derive(Default)]
pub struct OpenApiCache {
    entry: Mutex<Option<Cached>>,
    /// One build at a time: requests arriving meanwhile wait for it and share its result.
    building: tokio::sync::Mutex<()>,
}

struct Cached {
    built: Instant,
    table: Arc<Table>,
    merged: Merged,
}

/// How long a document missing a pool is served before the gateway tries that pool again.
const RETRY_MISSING: Duration = Duration::from_secs(1);

impl OpenApiCache {
    /// The merged document for `table`, built again when older than [`CACHE_TTL`] (or
    /// [`RETRY_MISSING`] when it lacks a pool) or when the table changed (reload).
    pub async fn get(&self, table: &Arc<Table>) -> Result<Merged, String> {
        if let Some(merged) = self.fresh(table) {
            return Ok(merged);
        }
        let _building = self.building.lock().await;
        if let Some(merged) = self.fresh(table) {
            return Ok(merged);
        }
        let merged = build(table).await?;
        let cached = Cached { built: Instant::now(), table: table.clone(), merged: merged.clone() };
        *self.entry.lock().unwrap_or_else(PoisonError::into_inner) = Some(cached);
        Ok(merged)
    }

    fn fresh(&self, table: &Arc<Table>) -> Option<Merged> {
        let entry = self.entry.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = entry.as_ref()?;
        let ttl = if cached.merged.missing_pools.is_empty() { CACHE_TTL } else { RETRY_MISSING };
        (Arc::ptr_eq(&cached.table, table) && cached.built.elapsed() < ttl).then(|| cached.merged.clone())
    }
}

/// Fetches every configured pool's document and merges them.
async fn build(table: &Table) -> Result<Merged, String> {
    let path = &table.server.openapi_path;
    let timeout = table.health_check.timeout.max(Duration::from_secs(2));
    let fetches = table.pools.iter().enumerate().filter(|(_, pool)| pool.is_configured()).map(|(index, pool)| {
        let members = pool.members();
        async move {
            for upstream in members.iter().filter(|u| u.is_healthy()) {
                match fetch_json(upstream.addr, path, timeout).await {
                    Ok(document) => return (index, Ok(document)),
                    Err(error) => tracing::warn!(pool = %pool.name, upstream = %upstream.label, %error, "cannot fetch the pool's OpenAPI document"),
                }
            }
            (index, Err(()))
        }
    });
    let mut documents = Vec::new();
    let mut missing_pools = Vec::new();
    for (index, outcome) in futures::future::join_all(fetches).await {
        match outcome {
            Ok(document) => documents.push((index, document)),
            Err(()) => missing_pools.push(table.pools[index].name.clone()),
        }
    }
    if documents.is_empty() {
        return Err(format!("no pool served its OpenAPI document (tried: {})", missing_pools.join(", ")));
    }
    let merged = merge(table, documents);
    let json = serde_json::to_vec_pretty(&merged).map_err(|e| e.to_string())?;
    Ok(Merged { json: Bytes::from(json), missing_pools })
}

/// Merges `(pool index, document)` pairs, keeping each document's operations that the table
/// routes to its pool.
pub fn merge(table: &Table, documents: Vec<(usize, Value)>) -> Value {
    let mut paths = Map::new();
    let mut components: Map<String, Value> = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    let mut version = None;
    for (pool, document) in documents {
        version = version.or_else(|| document.pointer("/info/version").cloned());
        let Value::Object(mut document) = document else { continue };
        if let Some(Value::Object(own_paths)) = document.remove("paths") {
            for (path, item) in own_paths {
                let Value::Object(item) = item else { continue };
                let sample = sample_path(&path);
                for (key, operation) in item {
                    if HTTP_METHODS.contains(&key.as_str()) {
                        let Ok(method) = Method::from_bytes(key.to_ascii_uppercase().as_bytes()) else { continue };
                        if table.routes.find(&method, &sample) != Some(pool) {
                            continue;
                        }
                    }
                    let merged_item = paths.entry(path.clone()).or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(merged_item) = merged_item {
                        merged_item.entry(key).or_insert(operation);
                    }
                }
            }
        }
        if let Some(Value::Object(own_components)) = document.remove("components") {
            for (kind, entries) in own_components {
                let Value::Object(entries) = entries else { continue };
                let merged_kind = components.entry(kind).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(merged_kind) = merged_kind {
                    for (name, entry) in entries {
                        merged_kind.entry(name).or_insert(entry);
                    }
                }
            }
        }
        if let Some(Value::Array(own_tags)) = document.remove("tags") {
            for tag in own_tags {
                if !tags.iter().any(|t| t.get("name") == tag.get("name")) {
                    tags.push(tag);
                }
            }
        }
    }
    // Path items left with no operation (every one routed elsewhere) are dropped.
    paths
        .retain(|_, item| item.as_object().is_some_and(|item| item.keys().any(|k| HTTP_METHODS.contains(&k.as_str()))));
    let mut merged = Map::new();
    merged.insert("openapi".into(), "3.1.0".into());
    merged.insert(
        "info".into(),
        serde_json::json!({
            "title": "chatmesh",
            "description": "Every operation reachable through the chatmesh gateway.",
            "version": version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
        }),
    );
    merged.insert("paths".into(), Value::Object(paths));
    if !components.is_empty() {
        merged.insert("components".into(), Value::Object(components));
    }
    if !tags.is_empty() {
        merged.insert("tags".into(), Value::Array(tags));
    }
    Value::Object(merged)
}

/// A concrete path matching the OpenAPI template `path`: each `{param}` becomes `x`.
fn sample_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| if segment.starts_with('{') && segment.ends_with('}') { "x" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// `GET path` on a fresh connection; the body of a 200 parsed as JSON.
pub async fn fetch_json(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Value, String> {
    let accept = Some("application/json");
    let (status, body) = crate::client::get(addr, path, accept, Some(MAX_DOCUMENT_BYTES), timeout).await?;
    if status != http::StatusCode::OK {
        return Err(format!("status {}", status.as_u16()));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;
    use crate::config::tests::SAMPLE;
    use crate::metrics::Metrics;
    use serde_json::json;

    fn table() -> Table {
        let config: GatewayConfig = toml::from_str(SAMPLE).unwrap();
        Table::build(config.check().unwrap(), None, &Metrics::default())
    }

    #[test]
    fn keeps_only_the_operations_routed_to_the_documenting_pool() {
        let write = json!({
            "openapi": "3.1.0", "info": {"title": "write", "version": "1.2.3"},
            "paths": {
                "/api/items": {"post": {"operationId": "createItem"}, "parameters": []},
                "/healthz": {"get": {"operationId": "writeHealth"}}
            },
            "components": {"schemas": {"Item": {"type": "object"}, "Error": {"type": "object"}}},
            "tags": [{"name": "items"}]
        });
        let read = json!({
            "openapi": "3.1.0", "info": {"title": "read", "version": "1.2.3"},
            "paths": {
                "/api/items": {"get": {"operationId": "listItems"}, "post": {"operationId": "notRoutedHere"}},
                "/api/items/{id}": {"get": {"operationId": "getItem"}}
            },
            "components": {"schemas": {"Error": {"type": "string"}}, "responses": {"NotFound": {}}},
            "tags": [{"name": "items"}, {"name": "reads"}]
        });
        let table = table();
        let index = |name: &str| table.pools.iter().position(|p| p.name == name).unwrap();
        let merged = merge(&table, vec![(index("write"), write), (index("read"), read)]);
        assert_eq!(merged["openapi"], "3.1.0");
        assert_eq!(merged["info"]["title"], "chatmesh");
        assert_eq!(merged["info"]["version"], "1.2.3");
        assert_eq!(merged["paths"]["/api/items"]["post"]["operationId"], "createItem");
        assert_eq!(merged["paths"]["/api/items"]["get"]["operationId"], "listItems");
        assert_eq!(merged["paths"]["/api/items/{id}"]["get"]["operationId"], "getItem");
        assert!(merged["paths"].get("/healthz").is_none(), "not routed through the gateway");
        assert_eq!(merged["components"]["schemas"]["Error"]["type"], "object", "first one wins");
        assert!(merged["components"]["responses"]["NotFound"].is_object());
        assert_eq!(merged["tags"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn samples_templated_paths() {
        assert_eq!(sample_path("/api/applications/{token}/chats/{n}"), "/api/applications/x/chats/x");
        assert_eq!(sample_path("/segments"), "/segments");
    }
}
