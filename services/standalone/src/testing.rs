//! The standalone server in-process on port 0 with its own data dir, for tests (the `testing`
//! feature, enabled only by this crate's dev-dependency on itself).

use std::net::SocketAddr;

use shared::shutdown::{ShutdownTrigger, channel};

/// A running standalone server; dropping it shuts the server down.
pub struct Standalone {
    pub addr: SocketAddr,
    /// `http://` and [`Self::addr`].
    pub url: String,
    /// The admin token `configure` set, if any.
    pub admin_token: Option<String>,
    trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

/// Starts the embedded configuration as `configure` changes it.
pub async fn spawn(configure: impl FnOnce(&mut crate::Config)) -> Standalone {
    shared::telemetry::init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::Config::embedded(dir.path());
    configure(&mut config);
    let server = crate::start(&config).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = channel();
    tokio::spawn(server.serve(listener, shutdown));
    let admin_token = config.segments.admin_token.clone();
    Standalone { addr, url: format!("http://{addr}"), admin_token, trigger, _dir: dir }
}
