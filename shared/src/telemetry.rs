//! Tracing setup: human-readable lines by default, JSON lines with `CHATMESH_LOG_FORMAT=json`,
//! filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once, logging to stdout; later calls (tests spawning many
/// apps) do nothing.
pub fn init() {
    install(std::io::stdout);
}

/// [`init`] for a command whose stdout is its output (JSON lines to pipe into `jq`, say): logs
/// go to stderr.
pub fn init_on_stderr() {
    install(std::io::stderr);
}

fn install<W>(writer: fn() -> W)
where
    W: std::io::Write + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tantivy=warn,lapin=warn"));
    let json = std::env::var("CHATMESH_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(writer);
    let _already_installed = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
