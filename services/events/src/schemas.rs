//! The JSON Schema registry: at most one schema per `(category, name)`, which an event's `data`
//! must satisfy. Schemas live in the store (so every replica sees the same ones) and are
//! compiled once into validators held here; a replica reloads them at most a second after
//! another one changed them, and at once after a change it made itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::backends::BackendResult;
use shared::backends::sql::Database;
use sqlx::Row;

use crate::store::text;

/// How stale the compiled schemas may get before a reader reloads them from the store.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A registered schema with its compiled validator.
pub struct EventSchema {
    pub category: String,
    pub name: String,
    pub schema: Value,
    pub created_at: i64,
    pub updated_at: i64,
    validator: jsonschema::Validator,
}

/// One way `data` fails its schema: where (a JSON pointer inside `data`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

impl EventSchema {
    /// Every way `data` fails the schema; empty when it passes.
    pub fn violations(&self, data: &Value) -> Vec<Violation> {
        if self.validator.is_valid(data) {
            return Vec::new();
        }
        self.validator
            .iter_errors(data)
            .map(|error| {
                let mut pointer = error.instance_path().as_str().to_owned();
                // A missing property is reported at its parent: point at the property itself.
                if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind()
                    && let Some(property) = property.as_str()
                {
                    pointer.push('/');
                    pointer.push_str(&property.replace('~', "~0").replace('/', "~1"));
                }
                Violation { pointer, message: error.to_string() }
            })
            .collect()
    }
}

/// Compiles `schema`, or says why it is not a usable JSON Schema.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("a JSON Schema must be an object or a boolean".to_owned());
    }
    // The validator builder must never take the service down, whatever a client registers.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| jsonschema::validator_for(schema))) {
        Ok(Ok(validator)) => Ok(validator),
        Ok(Err(error)) => Err(format!("invalid JSON Schema: {error}")),
        Err(_) => Err("invalid JSON Schema: the validator could not be built".to_owned()),
    }
}

/// The compiled schemas, reloaded from the store when stale.
pub struct SchemaRegistry {
    loaded: RwLock<Loaded>,
}

#[derive(Default)]
struct Loaded {
    schemas: HashMap<(String, String), Arc<EventSchema>>,
    at: Option<Instant>,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaRegistry {
    pub fn new() -> Self {
        Self { loaded: RwLock::new(Loaded::default()) }
    }

    /// A registry holding only the built-in schemas, without a store (unit tests, tools).
    pub fn with_built_ins() -> Self {
        let mut schemas = HashMap::new();
        for (category, name, source) in crate::migrations::BUILT_IN_SCHEMAS {
            let schema: Value = serde_json::from_str(source).expect("built-in schemas are JSON");
            let validator = compile(&schema).expect("built-in schemas compile");
            let schema = EventSchema {
                category: category.to_owned(),
                name: name.to_owned(),
                schema,
                created_at: 0,
                updated_at: 0,
                validator,
            };
            schemas.insert((category.to_owned(), name.to_owned()), Arc::new(schema));
        }
        Self { loaded: RwLock::new(Loaded { schemas, at: None }) }
    }

    /// The schema of `(category, name)`, as last loaded.
    pub fn get(&self, category: &str, name: &str) -> Option<Arc<EventSchema>> {
        let loaded = self.loaded.read().expect("schema registry lock poisoned");
        loaded.schemas.get(&(category.to_owned(), name.to_owned())).cloned()
    }

    /// Every schema as last loaded, by category then name.
    pub fn all(&self) -> Vec<Arc<EventSchema>> {
        let loaded = self.loaded.read().expect("schema registry lock poisoned");
        let mut all: Vec<_> = loaded.schemas.values().cloned().collect();
        all.sort_by(|a, b| (&a.category, &a.name).cmp(&(&b.category, &b.name)));
        all
    }

    /// Reloads when the schemas were loaded more than a second ago (or never).
    pub async fn refresh_if_stale(&self, db: &Database) -> BackendResult<()> {
        let stale = self
            .loaded
            .read()
            .expect("schema registry lock poisoned")
            .at
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        if stale { self.refresh(db).await } else { Ok(()) }
    }

    /// Reloads every schema from the store, compiling only the ones that changed.
    pub async fn refresh(&self, db: &Database) -> BackendResult<()> {
        let rows = sqlx::query("SELECT category, name, schema_json, created_at, updated_at FROM event_schemas")
            .fetch_all(db.pool())
            .await?;
        let previous = self.loaded.read().expect("schema registry lock poisoned").schemas.clone();
        let mut schemas = HashMap::with_capacity(rows.len());
        for row in rows {
            let category: String = text(&row, 0)?;
            let name: String = text(&row, 1)?;
            let source = text(&row, 2)?;
            let created_at: i64 = row.try_get(3)?;
            let updated_at: i64 = row.try_get(4)?;
            let key = (category.clone(), name.clone());
            if let Some(known) = previous.get(&key)
                && known.updated_at == updated_at
                && serde_json::from_str::<Value>(&source).ok().as_ref() == Some(&known.schema)
            {
                schemas.insert(key, known.clone());
                continue;
            }
            let compiled = serde_json::from_str::<Value>(&source)
                .map_err(|e| e.to_string())
                .and_then(|schema| compile(&schema).map(|validator| (schema, validator)));
            match compiled {
                Ok((schema, validator)) => {
                    let schema = EventSchema { category, name, schema, created_at, updated_at, validator };
                    schemas.insert(key, Arc::new(schema));
                }
                Err(error) => tracing::warn!(%category, %name, %error, "stored event schema does not compile, ignored"),
            }
        }
        let mut loaded = self.loaded.write().expect("schema registry lock poisoned");
        *loaded = Loaded { schemas, at: Some(Instant::now()) };
        Ok(())
    }
}

/// Registers `schema` for `(category, name)` unless one exists; false when it does.
pub async fn create(db: &Database, category: &str, name: &str, schema: &Value, now: i64) -> BackendResult<bool> {
    let sql = format!(
        "{} INTO event_schemas (category, name, schema_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        db.insert_ignore()
    );
    let done = sqlx::query(&sql)
        .bind(category)
        .bind(name)
        .bind(schema.to_string())
        .bind(now)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the schema of `(category, name)`, creating it if needed; true when it was created.
pub async fn put(db: &Database, category: &str, name: &str, schema: &Value, now: i64) -> BackendResult<bool> {
    let source = schema.to_string();
    for _ in 0..3 {
        let updated =
            sqlx::query("UPDATE event_schemas SET schema_json = ?, updated_at = ? WHERE category = ? AND name = ?")
                .bind(&source)
                .bind(now)
                .bind(category)
                .bind(name)
                .execute(db.pool())
                .await?;
        if updated.rows_affected() > 0 {
            return Ok(false);
        }
        if create(db, category, name, schema, now).await? {
            return Ok(true);
        }
        // Created by someone else between the two statements: update it now.
    }
    Err(shared::backends::BackendError::Other("schema kept changing while it was being set".into()))
}

/// Unregisters the schema of `(category, name)`; false when there was none.
pub async fn delete(db: &Database, category: &str, name: &str) -> BackendResult<bool> {
    let done = sqlx::query("DELETE FROM event_schemas WHERE category = ? AND name = ?")
        .bind(category)
        .bind(name)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(value: Value) -> EventSchema {
        EventSchema {
            category: "c".into(),
            name: "n".into(),
            validator: compile(&value).unwrap(),
            schema: value,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn every_violation_is_reported_with_a_pointer_into_data() {
        let (_, _, source) = crate::migrations::BUILT_IN_SCHEMAS[2];
        let submit = schema(serde_json::from_str(source).unwrap());
        assert!(submit.violations(&json!({"host": "h", "path": "/", "form": {}})).is_empty());
        let mut pointers: Vec<String> =
            submit.violations(&json!({"host": 5, "form": []})).into_iter().map(|v| v.pointer).collect();
        pointers.sort();
        assert_eq!(pointers, ["/form", "/host", "/path"]);
    }

    #[test]
    fn rejects_what_is_not_a_schema() {
        assert!(compile(&json!("string")).is_err());
        assert!(compile(&json!({"type": "no-such-type"})).is_err());
        assert!(compile(&json!({"$ref": "https://example.com/remote.json"})).is_err());
        assert!(compile(&json!({"pattern": "("})).is_err());
        assert!(compile(&json!(true)).is_ok());
    }
}
