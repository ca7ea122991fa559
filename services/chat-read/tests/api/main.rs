//! chat-read as its users meet it: commands queued as chat-write queues them, the consumer
//! driven one [`Consumer::step`](chat_read::consumer::Consumer::step) at a time, and what it
//! did read back through the HTTP API and the dead-letter queue. SQLite under a temp dir, and
//! MariaDB too where `DATABASE_URL` is set.

mod conflicts;
mod dead_letters;
mod harness;
mod reads;
