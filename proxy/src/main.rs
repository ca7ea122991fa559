//! `gateway`: the chatmesh reverse proxy. Thin: parse flags, set up logs, [`gateway::run`].

use std::path::PathBuf;

use clap::Parser;

/// mimalloc instead of the system allocator: pingora allocates per request (headers, buffers,
/// boxed futures), and mimalloc's per-thread free lists make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gateway: the chatmesh reverse proxy (pingora). Routes each request by method and path to a
/// pool of upstreams (round robin over the healthy ones, active health checks on /healthz),
/// adds X-Request-Id, logs one access line per request (RUST_LOG, CHATMESH_LOG_FORMAT=json),
/// answers errors as JSON, and serves Prometheus metrics on the admin port.
///
/// SIGHUP (or POST /reload on the admin port, with the admin token from CHATMESH_ADMIN_TOKEN as
/// `Authorization: Bearer`) reloads the config without dropping requests; SIGTERM stops
/// accepting, finishes in-flight requests and exits; SIGINT exits at once. The admin port
/// listens on loopback unless the config or --admin-listen says otherwise.
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
struct Cli {
    /// The TOML config: server settings, health check, pools, routes
    #[arg(long, env = "GATEWAY_CONFIG", default_value = "deploy/gateway.toml")]
    config: PathBuf,
    /// TOML file of `pool = ["host:port", ...]` replacing those pools' upstreams; re-read on reload
    #[arg(long, env = "GATEWAY_UPSTREAMS_FILE")]
    upstreams_file: Option<PathBuf>,
    #[command(flatten)]
    overrides: gateway::config::ServerOverrides,
    /// The operator's bearer token, which POST /reload needs (prefer the environment: arguments
    /// show in `ps`) [default: unset, POST /reload answers 401 and SIGHUP reloads]
    #[arg(long, env = "CHATMESH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Check the config (and upstreams file) and exit
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    gateway::init_telemetry();
    let result = serve(cli);
    // Log lines are written in batches: what is still pending goes out before the exit.
    gateway::logs::flush();
    result
}

fn serve(cli: Cli) -> anyhow::Result<()> {
    let admin_token = cli.admin_token;
    let source = gateway::config::ConfigSource {
        path: cli.config,
        upstreams_file: cli.upstreams_file,
        overrides: cli.overrides,
    };
    if cli.check {
        let config = source.load()?.config;
        println!(
            "{}: ok ({} routes, pools: {})",
            source.path.display(),
            config.routes.len(),
            config.pools.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    gateway::run(source, shared::auth::AdminToken::new(admin_token.as_deref()))
}
