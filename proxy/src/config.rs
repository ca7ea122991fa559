//! The gateway's configuration: one TOML file (`deploy/gateway.toml`) with the server settings,
//! the health check, the pools and the routing table, plus an optional upstreams file that
//! replaces the upstream list of the pools it names (the process-mode mesh writes one, since
//! its ports are chosen at start). Both are read at start and again on every reload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::routes::RouteTable;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub server: ServerSettings,
    pub health_check: HealthCheckSettings,
    /// Pool name → upstreams (`host:port`; a host name is resolved to every address it has,
    /// again every `health_check.resolve_interval_ms`).
    pub pools: BTreeMap<String, Vec<String>>,
    /// First match wins.
    pub routes: Vec<RouteConfig>,
}

/// `[server]`: listeners, threads, limits, timeouts. `listen`, `admin_listen` and `threads`
/// take effect at start only; the rest also on reload.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// The public HTTP listener.
    pub listen: String,
    /// Metrics (`/metrics`), readiness (`/readyz`), pool state (`/upstreams`) and `POST /reload`.
    pub admin_listen: String,
    /// Worker threads of the proxy service (each pingora service has its own runtime).
    pub threads: usize,
    /// One work-stealing runtime over the threads (true), or one single-threaded runtime per
    /// thread, each serving the connections it accepted (false).
    pub work_stealing: bool,
    /// The path the gateway answers itself (GET / HEAD), for its own liveness.
    pub health_path: String,
    /// The path the gateway answers itself with its readiness: 200 when every pool that has
    /// upstreams has a healthy one, else 503 naming the others.
    pub ready_path: String,
    /// The path the gateway answers itself (GET / HEAD) with one OpenAPI document merged from
    /// its pools' documents (each pool serves its own at this same path). Empty: not answered.
    pub openapi_path: String,
    /// Larger request bodies get a JSON 413 without reaching an upstream.
    pub max_body_bytes: usize,
    /// An over-limit body up to this size is read and discarded so the connection stays usable
    /// and the client sees the 413; a larger one closes the connection.
    pub max_drain_bytes: usize,
    /// How long a graceful shutdown (SIGTERM) waits at most for in-flight requests.
    pub grace_period_seconds: u64,
    /// After the grace period, how long the runtimes get to stop.
    pub shutdown_timeout_seconds: u64,
    /// Idle keep-alive connections kept per upstream.
    pub upstream_keepalive_pool_size: usize,
    #[serde(rename = "connect_timeout_ms", deserialize_with = "millis")]
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's response head, and between two reads of its body or of
    /// an upgraded connection. No deadline covers a whole response: a stream whose upstream
    /// writes (an event, a keep-alive comment, a ping) at least this often stays open however
    /// long it lasts.
    #[serde(rename = "read_timeout_ms", deserialize_with = "millis")]
    pub read_timeout: Duration,
    #[serde(rename = "write_timeout_ms", deserialize_with = "millis")]
    pub write_timeout: Duration,
    /// How long an idle upstream connection stays in the keep-alive pool.
    #[serde(rename = "upstream_idle_timeout_ms", deserialize_with = "millis")]
    pub upstream_idle_timeout: Duration,
    /// A client's request head must be complete within this (from the accept on a new
    /// connection, from its first byte on a kept-alive one), or it gets a 408 and a close.
    #[serde(rename = "head_timeout_ms", deserialize_with = "millis")]
    pub head_timeout: Duration,
    /// A larger request head gets a 431 and a close.
    pub max_head_bytes: usize,
    /// A client's whole request body must arrive within this from the end of its head, however
    /// steadily it trickles, or the request fails (408) and the connection closes.
    #[serde(rename = "body_timeout_ms", deserialize_with = "millis")]
    pub body_timeout: Duration,
    /// Client connections served at once; past it a new one is closed at once (start only).
    pub max_connections: usize,
    /// One log line per request (target `access`).
    pub access_log: bool,
    /// Plain HTTP/1.1 requests (no chunked or large body, no upgrade) are relayed by the
    /// gateway's express lane; everything else, and everything when false, by pingora-proxy.
    pub express: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8088".to_owned(),
            admin_listen: "127.0.0.1:9088".to_owned(),
            threads: 1,
            work_stealing: true,
            health_path: "/healthz".to_owned(),
            ready_path: "/readyz".to_owned(),
            openapi_path: "/openapi.json".to_owned(),
            max_body_bytes: 1024 * 1024,
            max_drain_bytes: 16 * 1024 * 1024,
            grace_period_seconds: 10,
            shutdown_timeout_seconds: 2,
            upstream_keepalive_pool_size: 256,
            connect_timeout: Duration::from_millis(1000),
            read_timeout: Duration::from_millis(30_000),
            write_timeout: Duration::from_millis(30_000),
            upstream_idle_timeout: Duration::from_millis(15_000),
            head_timeout: Duration::from_millis(30_000),
            max_head_bytes: 64 * 1024,
            body_timeout: Duration::from_millis(60_000),
            max_connections: 4096,
            access_log: true,
            express: true,
        }
    }
}

/// `[health_check]`: active checks of every upstream, all from one background task.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckSettings {
    /// GET this path; any 2xx passes.
    pub path: String,
    #[serde(rename = "interval_ms", deserialize_with = "millis")]
    pub interval: Duration,
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
    /// Consecutive passes that bring an upstream back.
    pub healthy_after: u32,
    /// Consecutive failures that take an upstream out. A refused or timed-out connection from
    /// live traffic takes it out at once, whatever this says.
    pub unhealthy_after: u32,
    /// How often host names in pools are resolved again (replicas coming and going).
    #[serde(rename = "resolve_interval_ms", deserialize_with = "millis")]
    pub resolve_interval: Duration,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        Self {
            path: "/healthz".to_owned(),
            interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(500),
            healthy_after: 1,
            unhealthy_after: 1,
            resolve_interval: Duration::from_millis(5000),
        }
    }
}

/// One `[[routes]]` entry: requests whose method is in `methods` (any method when empty) and
/// whose path matches one of `paths` go to `pool`.
///
/// Path patterns: `/literal/:param/**` — `:name` matches one non-empty segment, a final `**`
/// matches the rest of the path (zero or more segments). The query string is not matched.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub pool: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub paths: Vec<String>,
}

impl GatewayConfig {
    /// Reads `path`, then applies `upstreams_file` when given; [`GatewayConfig::check`] next.
    pub fn load(path: &Path, upstreams_file: Option<&Path>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut config: Self = toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        if let Some(file) = upstreams_file {
            let overrides = load_upstreams_file(file)?;
            for (pool, upstreams) in overrides {
                if !config.pools.contains_key(&pool) {
                    bail!("{}: pool {pool:?} is not in {}", file.display(), path.display());
                }
                config.pools.insert(pool, upstreams);
            }
        }
        Ok(config)
    }

    /// Checks what the proxy relies on and compiles the routing table ([`RouteTable::build`]:
    /// every route names a known pool, patterns and methods parse); upstreams look like
    /// `host:port`, limits are sane.
    pub fn check(self) -> anyhow::Result<CheckedConfig> {
        let routes = RouteTable::build(&self.routes, |name| self.pools.keys().position(|pool| pool == name))?;
        for (pool, upstreams) in &self.pools {
            for upstream in upstreams {
                split_host_port(upstream).with_context(|| format!("pool {pool:?}"))?;
            }
        }
        if !self.server.health_path.starts_with('/') || !self.server.ready_path.starts_with('/') {
            bail!("server.health_path and server.ready_path must start with '/'");
        }
        if !self.health_check.path.starts_with('/') {
            bail!("health_check.path must start with '/'");
        }
        if self.server.threads == 0 {
            bail!("server.threads must be at least 1");
        }
        if self.server.max_connections == 0 || self.server.head_timeout.is_zero() || self.server.body_timeout.is_zero()
        {
            bail!("server.max_connections, head_timeout_ms and body_timeout_ms must be at least 1");
        }
        if self.server.max_head_bytes < 1024 {
            bail!("server.max_head_bytes must be at least 1024");
        }
        if self.health_check.interval.is_zero() || self.health_check.timeout.is_zero() {
            bail!("health_check.interval_ms and timeout_ms must be positive");
        }
        Ok(CheckedConfig { config: self, routes })
    }
}

/// A configuration that passed [`GatewayConfig::check`], with its routing table, whose pool
/// indices are positions in `config.pools` (the order the live table makes its pools in).
pub struct CheckedConfig {
    pub config: GatewayConfig,
    pub routes: RouteTable,
}

/// A duration the file gives in milliseconds (the `_ms` keys).
fn millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}

/// The upstreams file: `pool = ["host:port", ...]` lines.
pub fn load_upstreams_file(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// `host:port` → (host, port); IPv6 literals in brackets.
pub fn split_host_port(spec: &str) -> anyhow::Result<(&str, u16)> {
    let (host, port) = spec.rsplit_once(':').with_context(|| format!("upstream {spec:?}: expected host:port"))?;
    let port: u16 = port.parse().with_context(|| format!("upstream {spec:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("upstream {spec:?}: empty host");
    }
    Ok((host, port))
}

/// Where the config and the optional upstreams file live, and the command-line settings laid
/// over them, kept for reloads.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub upstreams_file: Option<PathBuf>,
    pub overrides: ServerOverrides,
}

/// The `[server]` settings the command line (or its environment) may override.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerOverrides {
    /// Public listen address (overrides server.listen)
    #[arg(long, env = "GATEWAY_LISTEN")]
    pub listen: Option<String>,
    /// Admin listen address: /metrics, /readyz, /upstreams, POST /reload (overrides server.admin_listen)
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Proxy worker threads (overrides server.threads)
    #[arg(long, env = "GATEWAY_THREADS")]
    pub threads: Option<usize>,
}

impl ConfigSource {
    pub fn load(&self) -> anyhow::Result<CheckedConfig> {
        let mut config = GatewayConfig::load(&self.path, self.upstreams_file.as_deref())?;
        let ServerOverrides { listen, admin_listen, threads } = &self.overrides;
        if let Some(listen) = listen {
            config.server.listen.clone_from(listen);
        }
        if let Some(admin_listen) = admin_listen {
            config.server.admin_listen.clone_from(admin_listen);
        }
        if let Some(threads) = *threads {
            config.server.threads = threads;
        }
        config.check()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small config: two pools (one with upstreams), a POST route and a catch-all. The
    /// OpenAPI merge tests route by it too.
    pub(crate) const SAMPLE: &str = r#"
        [server]
        listen = "127.0.0.1:1"
        [pools]
        write = ["127.0.0.1:10", "write.internal:11"]
        read = []
        [[routes]]
        pool = "write"
        methods = ["POST"]
        paths = ["/api/items"]
        [[routes]]
        pool = "read"
        paths = ["/api/**"]
    "#;

    #[test]
    fn parses_and_applies_the_upstreams_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("g.toml");
        std::fs::write(&config, SAMPLE).unwrap();
        let loaded = GatewayConfig::load(&config, None).unwrap();
        assert_eq!(loaded.server.listen, "127.0.0.1:1");
        assert_eq!(loaded.server.max_body_bytes, 1024 * 1024, "defaults fill the rest");
        assert_eq!(loaded.pools["write"].len(), 2);

        let upstreams = dir.path().join("u.toml");
        std::fs::write(&upstreams, "read = [\"127.0.0.1:20\"]\n").unwrap();
        let loaded = GatewayConfig::load(&config, Some(&upstreams)).unwrap();
        assert_eq!(loaded.pools["read"], ["127.0.0.1:20"]);
        assert_eq!(loaded.pools["write"].len(), 2, "pools the file does not name keep theirs");

        std::fs::write(&upstreams, "c = [\"127.0.0.1:20\"]\n").unwrap();
        assert!(GatewayConfig::load(&config, Some(&upstreams)).is_err(), "an unknown pool is an error");
    }

    #[test]
    fn rejects_bad_routes_and_upstreams() {
        for bad in [
            SAMPLE.replace("pool = \"read\"", "pool = \"nope\""),
            SAMPLE.replace("\"POST\"", "\"PO ST\""),
            SAMPLE.replace("/api/**", "api/**"),
            SAMPLE.replace("paths = [\"/api/**\"]", "paths = []"),
            SAMPLE.replace("write.internal:11", "write.internal"),
            SAMPLE.replace("[server]", "[server]\nunknown_key = 1"),
        ] {
            let parsed = toml::from_str::<GatewayConfig>(&bad).map_err(Into::into).and_then(GatewayConfig::check);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn the_deploy_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway.toml");
        let config = GatewayConfig::load(&path, None).unwrap().check().unwrap().config;
        for pool in ["chat-write", "chat-read", "chat-stream", "segments", "events"] {
            assert!(config.pools.contains_key(pool), "{pool}");
        }
    }
}
