//! A test's own RabbitMQ node and MariaDB server, on free ports with their data in a temp
//! dir, for tests that SIGKILL a server: the machine's own servers carry other tests' data
//! and are never stopped. Each is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after its start, here or on a slow CI host.
const START_LIMIT: Duration = Duration::from_secs(90);

/// A server process in its own process group, so a kill reaches every process it started.
struct Group {
    name: &'static str,
    child: Child,
    log: PathBuf,
    reaped: bool,
}

impl Group {
    fn spawn(name: &'static str, mut command: Command, log: &Path) -> Group {
        use std::os::unix::process::CommandExt;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("server log");
        command.stdin(Stdio::null()).stdout(out.try_clone().expect("server log")).stderr(out).process_group(0);
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Group { name, child, log: log.to_owned(), reaped: false }
    }

    /// SIGKILL to the whole group, then reaps the leader.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        // Bounded, as it may run in a runtime thread or in a drop during a panic.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                self.reaped = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{} (process group {group}) did not die within 10 s of SIGKILL", self.name);
    }

    /// Panics with the end of the server's log when it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.reaped = true;
            panic!("{} exited ({status}) before answering: {}", self.name, log_tail(&self.log));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Polls `answers` until it holds, failing when the server exits or after [`START_LIMIT`].
async fn wait_until_answering<F, Fut>(group: &mut Group, mut answers: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if tokio::time::timeout(Duration::from_secs(10), answers()).await.unwrap_or(false) {
            return started.elapsed();
        }
        group.assert_running();
        assert!(
            started.elapsed() < START_LIMIT,
            "{} did not answer within {START_LIMIT:?}: {}",
            group.name,
            log_tail(&group.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one kind of server needs to run as a [`Server`]: its command line and how to tell it
/// answers.
pub trait Kind {
    /// The program, for messages.
    const NAME: &'static str;

    /// The URL a client connects to.
    fn url(&self) -> String;

    /// The command that starts the server on its ports and on its data in `dir`.
    fn command(&self, dir: &Path) -> Command;

    /// Whether the server at `url` answers a client.
    fn answers(url: String) -> impl std::future::Future<Output = bool>;
}

/// A server of the test's own ([`RabbitNode`], [`MariaDb`]), killed when dropped.
pub struct Server<K> {
    /// The server's data and `server.log`.
    dir: tempfile::TempDir,
    kind: K,
    group: Option<Group>,
}

impl<K: Kind> Server<K> {
    async fn first_start(dir: tempfile::TempDir, kind: K) -> Self {
        let mut server = Server { dir, kind, group: None };
        server.start_again().await;
        server
    }

    /// The URL a client connects to.
    pub fn url(&self) -> String {
        self.kind.url()
    }

    /// SIGKILL to every process of the server (a RabbitMQ node's beam.smp and its helpers), no
    /// goodbye: what MariaDB's InnoDB committed survives, the rest is rolled back at start.
    pub fn kill(&mut self) {
        if let Some(mut group) = self.group.take() {
            group.kill();
        }
    }

    /// Starts the server on its ports and data dir (after [`Server::kill`]) and waits until it
    /// answers; how long that took.
    pub async fn start_again(&mut self) -> Duration {
        assert!(self.group.is_none(), "{} is running", K::NAME);
        let dir = self.dir.path();
        let group = self.group.insert(Group::spawn(K::NAME, self.kind.command(dir), &dir.join("server.log")));
        let url = self.kind.url();
        wait_until_answering(group, || K::answers(url.clone())).await
    }
}

/// A RabbitMQ node of the test's own: its node name, ports, data and log dirs, an empty plugin
/// list and a home of its own (for the Erlang cookie).
pub type RabbitNode = Server<Rabbit>;

/// What a [`RabbitNode`] runs on.
pub struct Rabbit {
    amqp_port: u16,
    dist_port: u16,
    node_name: String,
}

impl RabbitNode {
    /// Starts a node and waits until it answers AMQP.
    pub async fn start() -> RabbitNode {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["mnesia", "log", "home"] {
            std::fs::create_dir(dir.path().join(sub)).expect("node dir");
        }
        let amqp_port = free_port();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").expect("env file");
        // Replaces the machine's config, whose listener is the machine broker's port.
        std::fs::write(dir.path().join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{amqp_port}\n"))
            .expect("config file");
        let node_name = format!("{}@localhost", shared::testing::fresh_namespace("chatmesh"));
        Server::first_start(dir, Rabbit { amqp_port, dist_port: free_port(), node_name }).await
    }
}

impl Kind for Rabbit {
    const NAME: &'static str = "rabbitmq-server";

    /// `amqp://` URL of the node's default vhost.
    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    fn command(&self, dir: &Path) -> Command {
        // The Debian wrapper in /usr/sbin runs the node as the rabbitmq user, who cannot write
        // this dir, and drops this environment: run the real script.
        let script = ["/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/sbin/rabbitmq-server"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("rabbitmq-server");
        let mut command = Command::new(script);
        command
            .current_dir(dir)
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node_name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        command
    }

    async fn answers(url: String) -> bool {
        shared::backends::queue::RabbitQueue::connect(&url).await.is_ok()
    }
}

/// A MariaDB server of the test's own: a fresh datadir, a free port, root without a password.
pub type MariaDb = Server<Maria>;

/// What a [`MariaDb`] runs on.
pub struct Maria {
    port: u16,
    args: Vec<String>,
}

impl MariaDb {
    /// Creates a datadir, starts `mariadbd` with `args` added to its command line, and waits
    /// until it answers.
    pub async fn start(args: &[&str]) -> MariaDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--skip-name-resolve");
        if is_root() {
            install.arg("--user=root");
        }
        let log = dir.path().join("server.log");
        let mut installing = Group::spawn("mariadb-install-db", install, &log);
        let deadline = Instant::now() + START_LIMIT;
        let installed = loop {
            match installing.child.try_wait().expect("mariadb-install-db") {
                Some(status) => break status,
                None if Instant::now() > deadline => panic!("mariadb-install-db took over {START_LIMIT:?}"),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        installing.reaped = true;
        assert!(installed.success(), "mariadb-install-db failed: {}", log_tail(&log));
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        Server::first_start(dir, Maria { port: free_port(), args }).await
    }
}

impl Kind for Maria {
    const NAME: &'static str = "mariadbd";

    /// `mysql://` URL of the server, without a database.
    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    fn command(&self, dir: &Path) -> Command {
        let data = dir.join("data");
        let mut command = Command::new(mariadbd());
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", data.join("sock").display()))
            .arg("--bind-address=127.0.0.1")
            // A reverse lookup per connection stalls every connect where DNS does not answer.
            .arg("--skip-name-resolve")
            .args(&self.args);
        if is_root() {
            command.arg("--user=root");
        }
        command
    }

    async fn answers(url: String) -> bool {
        use sqlx::{Connection, Executor};
        match sqlx::MySqlConnection::connect(&url).await {
            Ok(mut connection) => connection.execute("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

/// `mariadbd`, which Debian installs outside a user's PATH.
fn mariadbd() -> &'static str {
    ["/usr/sbin/mariadbd", "/usr/libexec/mariadbd", "/usr/sbin/mysqld"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("mariadbd")
}
