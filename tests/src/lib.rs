//! The chat HTTP suite, written once and run against any chatmesh deployment: the standalone
//! server in-process, the services as separate processes on the production backends, and the
//! mesh through the gateway. Also the load harness behind `chatmesh-bench`.
//!
//! # Layout
//! - [`acknowledged`]: what 201s acknowledged, and the check that each reads back.
//! - [`browser`]: headless Chromium and a minimal DevTools client, for the browser tests.
//! - [`client`]: a small HTTP client for the chat API.
//! - [`chat_suite`]: one async function per behaviour a client relies on.
//! - [`chat_suite_tests!`]: turns the suite into `#[tokio::test]`s for a given deployment.
//! - [`harness`]: the gateway and stub upstreams as child processes, for the gateway tests.
//! - [`mesh`]: the process-mode mesh, started by `deploy/mesh`.
//! - [`processes`], [`split`]: chat-write and chat-read as child processes, on the production
//!   backends or the embedded ones.
//! - [`redis_server`]: a Redis server of a test's own, to stop, roll back and start again.
//! - [`essentials_load`]: `chatmesh-bench essentials`: idempotent creates and unread counts.
//! - [`fixture`]: messages written straight into a stopped standalone server's store.
//! - [`faults`]: writers that record every 201, and the checks that read them back.
//! - [`servers`]: a test's own RabbitMQ node and MariaDB server, for tests that kill them.
//! - [`sockets`]: raw client sockets that trickle a request, for the limits tests.
//! - [`stream`]: SSE and WebSocket clients of the live stream, and the stream suite
//!   ([`stream_suite_tests!`]).
//! - [`stream_load`]: light subscribers that time every event, and a bare broadcast, for the
//!   stream benchmark.

pub mod acknowledged;
pub mod browser;
pub mod chat_suite;
pub mod client;
pub mod essentials_load;
pub mod faults;
pub mod fixture;
pub mod harness;
pub mod load;
pub mod mesh;
pub mod processes;
pub mod redis_server;
pub mod servers;
pub mod sockets;
pub mod split;
pub mod stream;
pub mod stream_load;

pub use client::Api;

/// `prefix-` and 128 random bits in hex: an admin token for a test deployment.
pub fn random_token(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
        );
        hasher.finish()
    };
    format!("{prefix}-{:016x}{:016x}", half(), half())
}

/// A running deployment the suite can talk to.
pub trait Deployment: Send + Sync {
    /// `http://host:port`, without a trailing slash.
    fn base_url(&self) -> String;

    /// Where the create routes go, when chat-write answers apart from [`Deployment::base_url`].
    fn write_url(&self) -> Option<String> {
        None
    }

    /// The operator's token the deployment was started with (`CHATMESH_ADMIN_TOKEN`).
    fn admin_token(&self) -> Option<String> {
        None
    }

    /// A client for this deployment.
    fn api(&self) -> Api {
        let api = match self.write_url() {
            Some(write) => Api::split(&self.base_url(), &write),
            None => Api::new(&self.base_url()),
        };
        api.with_admin_token(self.admin_token())
    }
}

/// Declares one `#[tokio::test]` per chat-suite behaviour, each on a fresh deployment made by
/// `$spawn().await` (any value implementing [`Deployment`]). With `optional`, `$spawn` answers
/// an `Option`, `None` skipping the test (its backends are not configured).
#[macro_export]
macro_rules! chat_suite_tests {
    (optional $spawn:path) => {
        $crate::chat_suite_tests!(@names @optional $spawn);
    };
    ($spawn:path) => {
        $crate::chat_suite_tests!(@names @tests $spawn);
    };
    // The one list of suite functions, handed to the rule that writes the tests.
    (@names @$rule:ident $spawn:path) => {
        $crate::chat_suite_tests!(@$rule $spawn;
            applications_lifecycle,
            application_validation_errors,
            chats_lifecycle,
            messages_on_both_create_paths,
            concurrent_chat_creations_get_exact_numbers,
            concurrent_message_creations_get_exact_numbers,
            message_right_after_its_chat,
            search_semantics,
            search_query_sources_and_errors,
            pagination_and_link_headers,
            counts_converge,
            message_delete_is_a_tombstone,
            read_positions_and_unread_counts,
            idempotent_creates,
            error_rules,
            responses_never_carry_internal_ids,
            listing_applications_needs_the_admin_token,
        );
    };
    (@$rule:ident $spawn:path; $($name:ident),* $(,)?) => {
        $crate::suite_tests!(@$rule $spawn, chat_suite; $($name),*);
    };
}

/// Writes one `#[tokio::test]` per function `$module::$name` of a suite, each on a fresh
/// deployment from `$spawn().await` (`@optional`: an `Option`, `None` skipping the test).
/// [`chat_suite_tests!`] and [`stream_suite_tests!`] hand it their lists.
#[doc(hidden)]
#[macro_export]
macro_rules! suite_tests {
    (@optional $spawn:path, $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // A spawn answering `None` has printed why its backends are missing.
                let Some(deployment) = $spawn().await else { return };
                let api = $crate::Deployment::api(&deployment);
                $crate::$module::$name(&api).await;
                drop(deployment);
            }
        )*
    };
    (@tests $spawn:path, $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let deployment = $spawn().await;
                let api = $crate::Deployment::api(&deployment);
                $crate::$module::$name(&api).await;
                drop(deployment);
            }
        )*
    };
}
