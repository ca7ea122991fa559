//! Layered configuration: compiled-in defaults, then an optional TOML file, then each
//! binary's flags, every one of which is also read from its environment variable
//! (`CHATMESH_<SETTING>`, and the conventional `DATABASE_URL`, `REDIS_URL`, `AMQP_URL` and
//! `ELASTICSEARCH_URL`): a flag given wins over its variable, and either over the file.
//!
//! [`ServiceArgs`] are the flags every service binary shares, flattened into each binary's own;
//! [`load`] lays a binary's flags, serialized under their settings' names, over its file.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Environment variables named without the `CHATMESH_` prefix, as every tool names them.
pub const BACKEND_URL_VARS: [&str; 4] = ["DATABASE_URL", "REDIS_URL", "AMQP_URL", "ELASTICSEARCH_URL"];

/// Loads `T` from its defaults, then `file` when given, then `flags`: a binary's flags as
/// serialized (each named as the setting it sets, `None` for one not given; those are left
/// out, so the file's value or the default stays).
pub fn load<T>(file: Option<&Path>, flags: &impl Serialize) -> Result<T, Box<figment::Error>>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let mut given = Value::serialize(flags).map_err(Box::new)?;
    if let Value::Dict(_, settings) = &mut given {
        settings.retain(|_, value| !matches!(value, Value::Empty(..)));
    }
    figment.merge(Serialized::defaults(given)).extract().map_err(Box::new)
}

/// The flags of every service binary: its settings file, its listen address, where each
/// backend lives, and the HTTP limits. Each binary flattens them into its own flags and loads
/// its config with [`load`]; a backend a binary does not use is hidden from its `--help`.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct ServiceArgs {
    /// TOML file with any of the settings (keys: the long flags' names with `_`: listen,
    /// data_dir, database_url, ...)
    #[arg(long, env = "CHATMESH_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on
    #[arg(long, env = "CHATMESH_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Directory for embedded backends, when their URL is unset [default: ./data]
    #[arg(long, env = "CHATMESH_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Prefix of Redis keys and queue names [default: chatmesh]
    #[arg(long, env = "CHATMESH_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// MySQL / MariaDB URL (mysql://user:pass@host/db); unset: SQLite under the data dir
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Redis URL for counters, touched sets and locks; unset: in-process (one process only)
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// RabbitMQ URL for the queues; unset: the embedded queue under the data dir
    #[arg(long, env = "AMQP_URL", global = true)]
    pub amqp_url: Option<String>,
    /// Elasticsearch URL for search; unset: the tantivy index under the data dir
    #[arg(long, env = "ELASTICSEARCH_URL", global = true)]
    pub elasticsearch_url: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub limits: crate::http::LimitArgs,
}

// A service binary's command line: its flags (`F`, which name the binary and describe it in
// their own doc comment, as a `Parser` would) and the command to run, if not the default one.
// No doc comment here: it would replace the binary's description in `--help`.
#[derive(Debug, clap::Parser)]
pub struct Cli<F: clap::Args, C: clap::Subcommand> {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub flags: F,
    #[command(subcommand)]
    pub command: Option<C>,
}

impl<F: clap::Args + Serialize, C: clap::Subcommand> Cli<F, C> {
    /// `T` from its defaults, then the `--config` file, then every flag given ([`load`]).
    pub fn load<T>(&self) -> Result<T, Box<figment::Error>>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        #[derive(Serialize)]
        struct Given<'a, F> {
            #[serde(flatten)]
            service: &'a ServiceArgs,
            #[serde(flatten)]
            flags: &'a F,
        }
        load(self.service.config.as_deref(), &Given { service: &self.service, flags: &self.flags })
    }

    /// What a serving binary's `main` does first: parses this process's command line, starts
    /// telemetry on stdout and loads `T` ([`Cli::load`]). Gives the command to run (`default`
    /// when none is named) and the config.
    pub fn start<T>(default: C) -> Result<(C, T), Box<figment::Error>>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let cli = <Self as clap::Parser>::parse();
        crate::telemetry::init();
        let config = cli.load()?;
        Ok((cli.command.unwrap_or(default), config))
    }
}

/// The roles of a service that serves an API and consumes a queue: either can be switched off,
/// so API replicas and consumers scale apart.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct RoleArgs {
    /// Serve the API routes [default: true]
    #[arg(long, env = "CHATMESH_API", global = true)]
    pub api: Option<bool>,
    /// Run the queue consumer [default: true]
    #[arg(long, env = "CHATMESH_CONSUMER", global = true)]
    pub consumer: Option<bool>,
}

/// What every service's config holds besides its own settings: where it listens, where its
/// backends live and what a client may take. Flattened into the config, so its keys (and
/// their variables and flags) are `listen`, `data_dir`, `database_url`, ..., `http_*`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Serve {
    /// Address the HTTP server binds.
    pub listen: String,
    #[serde(flatten)]
    pub backends: BackendConfig,
    /// What a client may take (`CHATMESH_HTTP_*`).
    #[serde(flatten)]
    pub http: crate::http::ServeLimits,
}

impl Serve {
    /// Listening on `listen`, with the default backends and limits.
    pub fn at(listen: &str) -> Self {
        Self { listen: listen.to_owned(), backends: BackendConfig::default(), http: Default::default() }
    }

    /// Everything embedded under `data_dir`, listening on an ephemeral port.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self { backends: BackendConfig::embedded(data_dir), ..Self::at("127.0.0.1:0") }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        listen: String,
        open: bool,
        #[serde(flatten)]
        backends: BackendConfig,
        #[serde(flatten)]
        http: crate::http::ServeLimits,
    }

    #[derive(clap::Parser, Serialize)]
    struct Cli {
        #[command(flatten)]
        #[serde(flatten)]
        service: ServiceArgs,
        #[arg(long)]
        open: Option<bool>,
    }

    /// `args` parsed as the command line, whatever this process's environment holds.
    fn parse(args: &[&str]) -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(clap::builder::Resettable::Reset));
        Cli::from_arg_matches(&command.get_matches_from(args)).unwrap()
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let text = "listen = \"from-file\"\nnamespace = \"file-ns\"\nredis_url = \"redis://file\"\nopen = true\n";
        std::fs::write(&file, text).unwrap();
        let cli = parse(&["test", "--namespace", "flag-ns", "--database-url", "mysql://flag/db"]);
        let sample: Sample = load(Some(&file), &cli).unwrap();
        assert_eq!(sample.listen, "from-file");
        assert!(sample.open, "a flag not given leaves the file's value");
        assert_eq!(sample.backends.namespace, "flag-ns");
        assert_eq!(sample.backends.database_url.as_deref(), Some("mysql://flag/db"));
        assert_eq!(sample.backends.redis_url.as_deref(), Some("redis://file"));
        assert_eq!(sample.backends.data_dir, PathBuf::from("data"));

        let cli = parse(&["test", "--http-max-connections", "7", "--open", "false"]);
        let sample: Sample = load(None, &cli).unwrap();
        assert_eq!((sample.http.http_max_connections, sample.open), (7, false));
        assert_eq!(sample.http.http_head_timeout_ms, crate::http::ServeLimits::default().http_head_timeout_ms);
        assert_eq!(sample.backends.namespace, "chatmesh");
    }

    /// The variables the README and docs/deployment.md name, one per setting.
    #[test]
    fn every_flag_reads_its_documented_variable() {
        use clap::CommandFactory;
        let command = Cli::command();
        let env = |flag: &str| {
            let arg = command.get_arguments().find(|a| a.get_long() == Some(flag)).unwrap();
            arg.get_env().and_then(|e| e.to_str()).map(str::to_owned)
        };
        for (flag, var) in [
            ("config", "CHATMESH_CONFIG"),
            ("listen", "CHATMESH_LISTEN"),
            ("data-dir", "CHATMESH_DATA_DIR"),
            ("namespace", "CHATMESH_NAMESPACE"),
            ("database-url", "DATABASE_URL"),
            ("redis-url", "REDIS_URL"),
            ("amqp-url", "AMQP_URL"),
            ("elasticsearch-url", "ELASTICSEARCH_URL"),
            ("http-head-timeout-ms", "CHATMESH_HTTP_HEAD_TIMEOUT_MS"),
            ("http-max-head-bytes", "CHATMESH_HTTP_MAX_HEAD_BYTES"),
            ("http-body-timeout-ms", "CHATMESH_HTTP_BODY_TIMEOUT_MS"),
            ("http-max-connections", "CHATMESH_HTTP_MAX_CONNECTIONS"),
        ] {
            assert_eq!(env(flag).as_deref(), Some(var), "--{flag}");
        }
    }
}
