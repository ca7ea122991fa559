//! One chat-read per test: its state on the embedded backends (or a fresh MySQL database), its
//! API served on port 0, and its consumer left to the test to step.

use std::time::{Duration, Instant};

use chat::commands::Command;
use chat_read::ChatRead;
use chat_read::consumer::{Consumer, ConsumerConfig, StepReport};
use chatmesh_e2e::Api;
use chatmesh_e2e::client::Reply;
use shared::config::BackendConfig;
use shared::shutdown::ShutdownTrigger;

/// A creation time the commands carry (the one their 201 answered with).
pub const CREATED_AT: i64 = 1_700_000_000_000;

pub struct Harness {
    pub state: ChatRead,
    pub consumer: Consumer,
    pub api: Api,
    _server: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

/// The consumer's defaults, with retries due after a few milliseconds.
fn quick_retries() -> ConsumerConfig {
    ConsumerConfig { retry_base: Duration::from_millis(10), ..ConsumerConfig::default() }
}

impl Harness {
    /// On SQLite, with retries due after a few milliseconds; the consumer writes batches of
    /// creates on its own connection, as the standalone server's does.
    pub async fn sqlite() -> Self {
        Self::open(None, quick_retries(), true).await
    }

    /// [`Harness::sqlite`] with every statement on the pool, as in a chat-read of its own.
    pub async fn sqlite_pooled() -> Self {
        Self::open(None, quick_retries(), false).await
    }

    /// On a fresh database of the MySQL server in `DATABASE_URL`; `None` (the test skipped)
    /// without one.
    pub async fn mysql(test: &str) -> Option<Self> {
        let url = shared::testing::backend_url("DATABASE_URL", test)?;
        let url = shared::testing::fresh_mysql_database(&url).await;
        Some(Self::start(Some(url), quick_retries()).await)
    }

    /// On the store of `database_url` (SQLite under a temp dir when `None`) with the embedded
    /// queue and index, the consumer configured by `config`.
    pub async fn start(database_url: Option<String>, config: ConsumerConfig) -> Self {
        Self::open(database_url, config, true).await
    }

    /// [`Harness::start`]; `own_connection`: on SQLite, the consumer writes batches of creates
    /// on a connection of its own ([`Consumer::with_own_connection`]).
    async fn open(database_url: Option<String>, config: ConsumerConfig, own_connection: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backends = BackendConfig {
            data_dir: dir.path().to_owned(),
            database_url,
            namespace: shared::testing::fresh_namespace("chat-read"),
            ..BackendConfig::default()
        };
        let connected = shared::backends::Backends::connect(&backends, false).await.unwrap();
        let search = shared::backends::open_search(&backends, true).await.unwrap();
        let state = ChatRead::new(connected.db, connected.counters, connected.queue, search, &backends.namespace);
        state.migrate().await.unwrap();
        let consumer = Consumer::new(state.clone(), config).await.unwrap();
        let consumer = if own_connection { consumer.with_own_connection().unwrap() } else { consumer };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = Api::new(&format!("http://{}", listener.local_addr().unwrap()));
        let (trigger, shutdown) = shared::shutdown::channel();
        let app = shared::http::with_fallbacks(chat_read::router(state.clone()));
        tokio::spawn(shared::http::serve(listener, app, shutdown));
        Self { state, consumer, api, _server: trigger, _dir: dir }
    }

    /// An application created through the API: its token and internal id (which commands carry).
    pub async fn application(&self) -> (String, i64) {
        let token = self.api.create_application("chat-read tests").await;
        let id = chat::schema::application_id(&self.state.db, &token).await.unwrap().expect("the application");
        (token, id)
    }

    /// Queues `command` as chat-write does.
    pub async fn publish(&self, command: &Command) {
        self.publish_raw(command.encode().to_vec()).await;
    }

    /// Queues any payload, decodable or not.
    pub async fn publish_raw(&self, payload: Vec<u8>) {
        self.state.queue.publish(&self.state.keys.command_queue(), payload.into()).await.unwrap();
    }

    /// One step, waiting up to a second for its batch.
    pub async fn step(&mut self) -> StepReport {
        self.consumer.step(Duration::from_secs(1)).await.unwrap()
    }

    /// Steps until `done` holds for the reports summed, for up to ten seconds.
    pub async fn step_until(&mut self, done: impl Fn(&StepReport) -> bool) -> StepReport {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut total = StepReport::default();
        while !done(&total) {
            assert!(Instant::now() < deadline, "the consumer never got there: {total:?}");
            let report = self.consumer.step(Duration::from_millis(100)).await.unwrap();
            total.persisted += report.persisted;
            total.retried += report.retried;
            total.dead_lettered += report.dead_lettered;
        }
        total
    }

    /// The commands parked in the dead-letter queue.
    pub async fn dead_letters(&self) -> Vec<shared::backends::queue::DeadLetter> {
        self.state.queue.dead_letters(&self.state.keys.command_queue(), 100).await.unwrap()
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.api.get(path).await
    }
}

/// One test per store for `check` (an async fn taking a [`Harness`]): on SQLite with the
/// consumer's own connection and with the pool alone, and on MySQL where `DATABASE_URL` is set.
macro_rules! on_every_store {
    ($sqlite:ident, $sqlite_pooled:ident, $mysql:ident, $check:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $check($crate::harness::Harness::sqlite().await).await;
        }

        #[tokio::test]
        async fn $sqlite_pooled() {
            $check($crate::harness::Harness::sqlite_pooled().await).await;
        }

        #[tokio::test]
        async fn $mysql() {
            if let Some(harness) = $crate::harness::Harness::mysql(stringify!($mysql)).await {
                $check(harness).await;
            }
        }
    };
}
pub(crate) use on_every_store;

/// A chat create of `application_id`.
pub fn chat(application_id: i64, chat_number: i64, chat_name: &str) -> Command {
    Command::CreateChat { application_id, chat_number, chat_name: chat_name.to_owned(), created_at: CREATED_AT }
}

/// A message create in chat `chat_number` of `application_id`.
pub fn message(application_id: i64, chat_number: i64, message_number: i64, content: &str) -> Command {
    Command::CreateMessage {
        application_id,
        chat_number,
        message_number,
        content: content.to_owned(),
        created_at: CREATED_AT + message_number,
    }
}
