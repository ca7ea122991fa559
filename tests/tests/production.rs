//! The chat HTTP suite with chat-write and chat-read (API, consumer, cron) as separate
//! processes on MySQL / MariaDB, Redis and RabbitMQ. Skipped with a printed reason unless
//! `DATABASE_URL`, `REDIS_URL` and `AMQP_URL` are set.
//!
//! chat-write runs on one worker thread here (`CHATMESH_WORKER_THREADS=1`: server, counters and
//! publisher on one thread); the fault and gateway tests run it with the default, one per core.

use chatmesh_e2e::split::SplitChat;

async fn spawn() -> Option<SplitChat> {
    SplitChat::start("chat suite on production backends", &[("CHATMESH_WORKER_THREADS", "1")]).await
}

chatmesh_e2e::chat_suite_tests!(optional spawn);
