//! Layered configuration: compiled-in defaults, then an optional TOML file, then the
//! environment (`CHATMESH_*`, plus the conventional `DATABASE_URL`, `REDIS_URL`, `AMQP_URL`
//! and `ELASTICSEARCH_URL`). Command-line flags, applied by each binary, come last.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Environment variables read without the `CHATMESH_` prefix, as every tool names them.
pub const BACKEND_URL_VARS: [&str; 4] = ["DATABASE_URL", "REDIS_URL", "AMQP_URL", "ELASTICSEARCH_URL"];

/// Loads `T` from its defaults, then `file` when given, then the environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, Box<figment::Error>>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(Env::prefixed("CHATMESH_")).merge(Env::raw().only(&BACKEND_URL_VARS)).extract().map_err(Box::new)
}

/// Where each backend lives. A URL switches its port to the production adapter; without one
/// the embedded adapter keeps its data under `data_dir`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendConfig {
    /// Directory for the embedded SQLite store, queue and search index.
    pub data_dir: PathBuf,
    /// `mysql://...` for MySQL / MariaDB, or `sqlite://...`; unset means SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// `redis://...` for the Redis counters; unset means in-process counters.
    pub redis_url: Option<String>,
    /// `amqp://...` for RabbitMQ; unset means the embedded queue under `data_dir`.
    pub amqp_url: Option<String>,
    /// `http://...` for Elasticsearch; unset means the tantivy index under `data_dir`.
    pub elasticsearch_url: Option<String>,
    /// Prefix of every Redis key and RabbitMQ queue name, so deployments (and test runs)
    /// sharing one server never collide.
    pub namespace: String,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database_url: None,
            redis_url: None,
            amqp_url: None,
            elasticsearch_url: None,
            namespace: "chatmesh".to_owned(),
        }
    }
}

impl BackendConfig {
    /// A config keeping everything embedded under `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self { data_dir: data_dir.into(), ..Self::default() }
    }

    /// Creates the data directory if an embedded adapter needs it.
    pub fn ensure_data_dir(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.data_dir)?;
        std::fs::canonicalize(&self.data_dir)
    }
}

/// Command-line flags, applied over the file and the environment (flags come last). Each
/// binary names the flags it has; `None` leaves a setting as loaded.
#[derive(Debug, Default)]
pub struct Overrides<'a> {
    pub listen: Option<&'a String>,
    pub data_dir: Option<&'a PathBuf>,
    pub namespace: Option<&'a String>,
    pub database_url: Option<&'a String>,
    pub redis_url: Option<&'a String>,
    pub amqp_url: Option<&'a String>,
    pub elasticsearch_url: Option<&'a String>,
}

impl Overrides<'_> {
    /// Sets every given flag in `listen` and `backends`.
    pub fn apply(&self, listen: &mut String, backends: &mut BackendConfig) {
        fn set<T: Clone>(slot: &mut T, flag: Option<&T>) {
            if let Some(value) = flag {
                slot.clone_from(value);
            }
        }
        fn set_url(slot: &mut Option<String>, flag: Option<&String>) {
            if let Some(url) = flag {
                *slot = Some(url.clone());
            }
        }
        set(listen, self.listen);
        set(&mut backends.data_dir, self.data_dir);
        set(&mut backends.namespace, self.namespace);
        set_url(&mut backends.database_url, self.database_url);
        set_url(&mut backends.redis_url, self.redis_url);
        set_url(&mut backends.amqp_url, self.amqp_url);
        set_url(&mut backends.elasticsearch_url, self.elasticsearch_url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        listen: String,
        #[serde(flatten)]
        backends: BackendConfig,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn file_overrides_defaults_and_environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "listen = \"from-file\"\nnamespace = \"file-ns\"")?;
            jail.set_env("CHATMESH_NAMESPACE", "env-ns");
            jail.set_env("DATABASE_URL", "mysql://example/db");
            let sample: Sample = load(Some(Path::new("c.toml"))).map_err(|e| *e)?;
            assert_eq!(sample.listen, "from-file");
            assert_eq!(sample.backends.namespace, "env-ns");
            assert_eq!(sample.backends.database_url.as_deref(), Some("mysql://example/db"));
            assert_eq!(sample.backends.data_dir, PathBuf::from("data"));
            Ok(())
        });
    }

    #[test]
    fn flags_override_only_what_they_name() {
        let mut listen = "from-file".to_owned();
        let mut backends = BackendConfig { redis_url: Some("redis://file".into()), ..BackendConfig::default() };
        let (flag_listen, flag_db) = ("127.0.0.1:1".to_owned(), "mysql://flag/db".to_owned());
        Overrides { listen: Some(&flag_listen), database_url: Some(&flag_db), ..Overrides::default() }
            .apply(&mut listen, &mut backends);
        assert_eq!(listen, "127.0.0.1:1");
        assert_eq!(backends.database_url.as_deref(), Some("mysql://flag/db"));
        assert_eq!(backends.redis_url.as_deref(), Some("redis://file"), "untouched without its flag");
        assert_eq!(backends.namespace, "chatmesh");
    }
}
