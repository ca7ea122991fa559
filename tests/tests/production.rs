//! The chat HTTP suite with chat-write and chat-read (API, consumer, cron) as separate
//! processes on MySQL / MariaDB, Redis and RabbitMQ. Skipped with a printed reason unless
//! `DATABASE_URL`, `REDIS_URL` and `AMQP_URL` are set.

use chatmesh_e2e::split::SplitChat;

async fn spawn() -> Option<SplitChat> {
    SplitChat::start("chat suite on production backends", &[]).await
}

chatmesh_e2e::chat_suite_tests!(optional spawn);
