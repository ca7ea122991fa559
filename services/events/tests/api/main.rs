//! The events service through HTTP, on a server bound to port 0 with its own data dir (and its
//! own MySQL database / RabbitMQ namespace when `DATABASE_URL` / `AMQP_URL` are set).

mod batches;
mod eye;
mod helpers;
mod loader;
mod openapi;
mod schemas;
mod user_sessions;
