//! Helpers for tests against the real backends.
//!
//! A real-backend test reads its URL (`DATABASE_URL`, `REDIS_URL`, `AMQP_URL`,
//! `ELASTICSEARCH_URL`). Without it the test is skipped with a printed reason, unless
//! `CHATMESH_REQUIRE_BACKENDS` names it (a comma-separated list of variables, or `1` / `all`
//! for every one), which turns the skip into a failure. `.ci/run` names the servers this
//! machine has.

/// The flag that turns a skipped real-backend test into a failure.
pub const REQUIRE_FLAG: &str = "CHATMESH_REQUIRE_BACKENDS";

/// The URL in `var`, or `None` after printing why the test is skipped.
///
/// # Panics
/// When the URL is missing and [`REQUIRE_FLAG`] is set.
pub fn backend_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(!is_required(var), "{test}: {var} is not set and {REQUIRE_FLAG} forbids skipping it");
            eprintln!("SKIPPED {test}: {var} is not set (set it to run this test against a real server)");
            None
        }
    }
}

/// Whether [`REQUIRE_FLAG`] forbids skipping the tests that need the backend of `var`.
pub fn is_required(var: &str) -> bool {
    std::env::var(REQUIRE_FLAG).is_ok_and(|flag| {
        let flag = flag.trim();
        flag == "1"
            || flag.eq_ignore_ascii_case("all")
            || flag.eq_ignore_ascii_case("true")
            || flag.split(',').any(|name| name.trim() == var)
    })
}

/// A fresh MySQL database on the server of `url`, so tests never share tables; returns its URL.
pub async fn fresh_mysql_database(url: &str) -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let name = format!("chatmesh_test_{:012x}", rand::random::<u64>() >> 16);
    let server = sqlx::AnyPool::connect(url).await.expect("connect to the MySQL server in DATABASE_URL");
    server
        .execute(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4").as_str())
        .await
        .expect("create test database");
    server.close().await;
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..].find('/').map_or(base.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &base[..host_end])
}

/// A namespace for Redis keys and queue names no other test run uses.
pub fn fresh_namespace(prefix: &str) -> String {
    format!("{prefix}-test-{:08x}", rand::random::<u32>())
}
