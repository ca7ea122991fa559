//! chat-write and chat-read as separate processes on the production backends (MySQL / MariaDB,
//! Redis, RabbitMQ; tantivy for search): one chat-write, and chat-read's API, consumer and
//! cron each in its own process. Each deployment has its own database and namespace. Also the
//! same two services apart on the embedded backends ([`EmbeddedChat`]).

use crate::processes::Service;

/// The running processes of one split deployment.
pub struct SplitChat {
    pub write: Service,
    pub read_api: Service,
    pub consumer: Service,
    pub cron: Service,
    /// The environment every process got, to start more (or restart one) alike.
    pub env: Vec<(String, String)>,
    /// The operator's token every process got (`CHATMESH_ADMIN_TOKEN`).
    pub admin_token: String,
    _data: tempfile::TempDir,
}

impl crate::Deployment for SplitChat {
    fn base_url(&self) -> String {
        self.read_api.url.clone()
    }

    fn write_url(&self) -> Option<String> {
        Some(self.write.url.clone())
    }

    fn admin_token(&self) -> Option<String> {
        Some(self.admin_token.clone())
    }
}

/// The three production URLs, or `None` (after printing why) when one is missing.
pub fn production_urls(test: &str) -> Option<(String, String, String)> {
    let database = shared::testing::backend_url("DATABASE_URL", test)?;
    let redis = shared::testing::backend_url("REDIS_URL", test)?;
    let amqp = shared::testing::backend_url("AMQP_URL", test)?;
    Some((database, redis, amqp))
}

impl SplitChat {
    /// Starts a deployment, or answers `None` when the production URLs are not set.
    pub async fn start(test: &str, extra_env: &[(&str, &str)]) -> Option<SplitChat> {
        Self::start_on(test, None, None, extra_env).await
    }

    /// [`SplitChat::start`] on another MySQL server (its URL without a database: the deployment
    /// gets a fresh one there) or RabbitMQ broker than the environment's, such as a test's own
    /// that it kills. `None` when the environment's URLs are not set.
    pub async fn start_on(
        test: &str,
        database_server: Option<&str>,
        amqp: Option<&str>,
        extra_env: &[(&str, &str)],
    ) -> Option<SplitChat> {
        let (database, redis, environment_amqp) = production_urls(test)?;
        let database = database_server.map_or(database, str::to_owned);
        let amqp = amqp.map_or(environment_amqp, str::to_owned);
        let data = tempfile::tempdir().expect("temp dir");
        let admin_token = crate::random_token("admin");
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), shared::testing::fresh_mysql_database(&database).await),
            ("REDIS_URL".into(), redis),
            ("AMQP_URL".into(), amqp),
            ("CHATMESH_NAMESPACE".into(), shared::testing::fresh_namespace("chat")),
            ("CHATMESH_DATA_DIR".into(), data.path().display().to_string()),
            ("CHATMESH_COUNT_FLUSH_SCHEDULE".into(), "* * * * * *".into()),
            ("CHATMESH_ADMIN_TOKEN".into(), admin_token.clone()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        // chat-write first: it migrates the chat tables the others read.
        let write = start(&env, "chat-write", &[]).await;
        let consumer = start(&env, "chat-read", &["--api", "false", "--cron", "false"]).await;
        let (read_api, cron) = tokio::join!(
            start(&env, "chat-read", &["--consumer", "false", "--cron", "false"]),
            start(&env, "chat-read", &["--api", "false", "--consumer", "false"]),
        );
        Some(SplitChat { write, read_api, consumer, cron, env, admin_token, _data: data })
    }

    /// Starts one more process of `binary` with this deployment's environment.
    pub async fn start_like(&self, binary: &str, args: &[&str]) -> Service {
        start(&self.env, binary, args).await
    }

    /// [`SplitChat::start_like`] with some variables of the environment replaced.
    pub async fn start_with(&self, binary: &str, args: &[&str], replaced: &[(&str, &str)]) -> Service {
        let mut env = self.env.clone();
        for (name, value) in replaced {
            match env.iter_mut().find(|(k, _)| k == name) {
                Some(entry) => entry.1 = (*value).to_owned(),
                None => env.push(((*name).to_owned(), (*value).to_owned())),
            }
        }
        start(&env, binary, args).await
    }
}

async fn start(env: &[(String, String)], binary: &str, args: &[&str]) -> Service {
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::start(binary, args, &envs).await
}

/// chat-write and chat-read as separate processes on the embedded backends, as `deploy/mesh`
/// runs them with `MESH_BACKENDS=embedded`: one data dir (the SQLite store and the on-disk
/// queue) and one namespace for both, chat-read serving the API, consuming and flushing
/// counts, chat-write numbering with in-process counters. Each process is started (and
/// restarted) on demand, so a test can run one side without the other.
pub struct EmbeddedChat {
    /// The environment every process gets.
    pub env: Vec<(String, String)>,
    data: tempfile::TempDir,
}

impl EmbeddedChat {
    pub fn new() -> EmbeddedChat {
        let data = tempfile::Builder::new().prefix("chatmesh-embedded-").tempdir().expect("temp dir");
        let env = vec![
            ("CHATMESH_NAMESPACE".into(), shared::testing::fresh_namespace("chat")),
            ("CHATMESH_DATA_DIR".into(), data.path().display().to_string()),
            ("CHATMESH_COUNT_FLUSH_SCHEDULE".into(), "* * * * * *".into()),
        ];
        EmbeddedChat { env, data }
    }

    /// The data dir both sides share.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// A chat-write process.
    pub async fn start_write(&self) -> Service {
        self.start("chat-write", &[]).await
    }

    /// A chat-read process with its API, consumer and cron.
    pub async fn start_read(&self) -> Service {
        self.start("chat-read", &["--api", "true", "--consumer", "true", "--cron", "true"]).await
    }

    async fn start(&self, binary: &str, args: &[&str]) -> Service {
        let envs: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Service::start_embedded(binary, args, &envs).await
    }
}

impl Default for EmbeddedChat {
    fn default() -> Self {
        Self::new()
    }
}
