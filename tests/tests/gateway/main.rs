//! The gateway end to end, as processes: against stub upstreams (routing table, balancing,
//! health checks, retries, errors, limits, reload, shutdown), against the process-mode mesh
//! started by `deploy/mesh` (the chat suite through the gateway, routing to the real services,
//! a chat-write killed under load), live streams (SSE and WebSocket) through both lanes, and
//! the docker-compose file checked against the binaries.
//!
//! Needs the workspace's binaries built in the same profile first: `cargo build --workspace`
//! then `cargo test -p chatmesh-e2e --test gateway`.

mod compose;
mod helpers;
mod limits;
mod mesh;
mod smuggling;
mod stream;
mod stubs;
