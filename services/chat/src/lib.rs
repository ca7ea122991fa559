//! chat: the chat domain that chat-write and chat-read both use, owned by neither.
//!
//! # Layout
//! - [`schema`]: the chat tables (migrations for SQLite and MySQL), the [`schema::Keys`] of
//!   counters, sets and queues, the search scope of a chat, and the lookups both services
//!   make: token to application, chat number to chat.
//! - [`commands`]: what chat-write publishes and chat-read's consumer persists.
//! - [`model`]: the JSON shapes clients send and see (bodies and views of applications, chats,
//!   messages and search hits, with their OpenAPI schemas), and the validation of their fields.

pub mod commands;
pub mod model;
pub mod schema;
