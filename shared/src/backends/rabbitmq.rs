//! The RabbitMQ queue adapter (lapin).
//!
//! Each queue `q` is durable and carries persistent messages; a publish returns only after the
//! broker's publisher confirm. Retries go through delay queues `q.retry.<ms>` (a fixed
//! `x-message-ttl` each, dead-lettered back onto `q`), so a short delay never waits behind a
//! long one; the attempt count travels in the `x-attempts` header. Dead letters go to
//! `q.dead`. A broken connection is dropped and made again on the next call, so the adapter
//! recovers by itself when RabbitMQ comes back; deliveries unacked on a lost channel are
//! redelivered by the broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::queue::{DeadLetter, Delivery, Queue, Subscription};
use super::{BackendError, BackendResult};

/// Delay tiers of the retry queues, in milliseconds.
const RETRY_TIERS_MS: [u64; 6] = [250, 1_000, 4_000, 15_000, 30_000, 60_000];
const ATTEMPTS_HEADER: &str = "x-attempts";
const REASON_HEADER: &str = "x-dead-letter-reason";
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(error: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("rabbitmq: {error}"))
}

#[derive(Clone)]
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    link: Mutex<Option<Link>>,
}

struct Link {
    connection: Connection,
    publisher: Channel,
    declared: HashSet<String>,
}

fn persistent(attempts: u32, reason: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempts)));
    if let Some(reason) = reason {
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(LongString::from(reason)));
    }
    BasicProperties::default().with_delivery_mode(2).with_headers(headers)
}

fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(v) => Some(v.to_string()),
        AMQPValue::ShortString(v) => Some(v.to_string()),
        _ => None,
    }
}

fn retry_queue(queue: &str, tier_ms: u64) -> String {
    format!("{queue}.retry.{tier_ms}")
}

fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

impl RabbitQueue {
    /// Checks the broker answers at `url`; the connection is kept and remade as needed.
    pub async fn connect(url: &str) -> BackendResult<Self> {
        let queue = Self { inner: Arc::new(Inner { url: url.to_owned(), link: Mutex::new(None) }) };
        queue.publisher(None).await?;
        Ok(queue)
    }

    /// The confirm-mode publishing channel, connecting and declaring `queue` if needed.
    async fn publisher(&self, queue: Option<&str>) -> BackendResult<Channel> {
        let mut link = self.inner.link.lock().await;
        if link.as_ref().is_some_and(|l| !l.connection.status().connected() || !l.publisher.status().connected()) {
            *link = None;
        }
        if link.is_none() {
            let connection = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&self.inner.url, ConnectionProperties::default()),
            )
            .await
            .map_err(|_| unavailable("connection timed out"))?
            .map_err(unavailable)?;
            let publisher = connection.create_channel().await.map_err(unavailable)?;
            publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(unavailable)?;
            tracing::info!("connected to rabbitmq");
            *link = Some(Link { connection, publisher, declared: HashSet::new() });
        }
        let current = link.as_mut().expect("link set above");
        if let Some(queue) = queue
            && !current.declared.contains(queue)
        {
            declare(&current.publisher, queue).await?;
            current.declared.insert(queue.to_owned());
        }
        Ok(current.publisher.clone())
    }

    /// A fresh channel on the live connection, with `queue`'s topology declared.
    async fn channel(&self, queue: &str) -> BackendResult<Channel> {
        self.publisher(Some(queue)).await?;
        let link = self.inner.link.lock().await;
        let link = link.as_ref().ok_or_else(|| unavailable("not connected"))?;
        link.connection.create_channel().await.map_err(unavailable)
    }

    async fn forget_link(&self) {
        *self.inner.link.lock().await = None;
    }

    /// Publishes and waits for the broker's confirm.
    async fn publish_confirmed(
        &self,
        queue: &str,
        target: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> BackendResult<()> {
        let channel = self.publisher(Some(queue)).await?;
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, async {
            channel
                .basic_publish("".into(), target.into(), BasicPublishOptions::default(), payload, properties)
                .await?
                .await
        })
        .await;
        match outcome {
            Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
            Ok(Ok(_)) => Err(unavailable("the broker refused the message (nack)")),
            Ok(Err(error)) => {
                self.forget_link().await;
                Err(unavailable(error))
            }
            Err(_) => {
                self.forget_link().await;
                Err(unavailable("no publisher confirm in time"))
            }
        }
    }
}

/// Declares `queue`, its retry tiers and its dead-letter queue, all durable.
async fn declare(channel: &Channel, queue: &str) -> BackendResult<()> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, FieldTable::default()).await.map_err(unavailable)?;
    channel
        .queue_declare(dead_queue(queue).as_str().into(), durable, FieldTable::default())
        .await
        .map_err(unavailable)?;
    for tier in RETRY_TIERS_MS {
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(tier as i64));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(queue)));
        channel
            .queue_declare(retry_queue(queue, tier).as_str().into(), durable, arguments)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

#[async_trait]
impl Queue for RabbitQueue {
    async fn publish(&self, queue: &str, payload: Bytes) -> BackendResult<()> {
        let outcome = self.publish_confirmed(queue, queue, &payload, persistent(0, None)).await;
        crate::metrics::record_publish(queue, outcome.is_ok());
        outcome
    }

    async fn subscribe(&self, queue: &str) -> BackendResult<Box<dyn Subscription>> {
        Ok(Box::new(RabbitSubscription {
            adapter: self.clone(),
            queue: queue.to_owned(),
            live: None,
            pending: HashMap::new(),
        }))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> BackendResult<Vec<DeadLetter>> {
        // Read without acking, then close the channel: the broker puts them all back.
        let channel = self.channel(queue).await?;
        let mut letters = Vec::new();
        while letters.len() < limit {
            let got = channel
                .basic_get(dead_queue(queue).as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(unavailable)?;
            let Some(message) = got else { break };
            let delivery = message.delivery;
            letters.push(DeadLetter {
                id: delivery.delivery_tag,
                queue: queue.to_owned(),
                payload: String::from_utf8_lossy(&delivery.data).into_owned(),
                attempts: header_i64(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0) as u32,
                reason: header_text(&delivery.properties, REASON_HEADER).unwrap_or_default(),
                failed_at: delivery.properties.timestamp().map_or(0, |t| t as i64 * 1000),
            });
        }
        let _ = channel.close(200, "listed".into()).await;
        Ok(letters)
    }

    async fn replay_dead_letters(&self, queue: &str) -> BackendResult<usize> {
        let channel = self.channel(queue).await?;
        let mut replayed = 0;
        loop {
            let got = channel
                .basic_get(dead_queue(queue).as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(unavailable)?;
            let Some(message) = got else { break };
            self.publish_confirmed(queue, queue, &message.delivery.data, persistent(0, None)).await?;
            // Acked only once the copy on the main queue is confirmed.
            message.delivery.acker.ack(BasicAckOptions::default()).await.map_err(unavailable)?;
            replayed += 1;
        }
        let _ = channel.close(200, "replayed".into()).await;
        Ok(replayed)
    }

    async fn depth(&self, queue: &str) -> BackendResult<u64> {
        let channel = self.publisher(Some(queue)).await?;
        let passive = QueueDeclareOptions { passive: true, durable: true, ..QueueDeclareOptions::default() };
        let mut depth = 0u64;
        let mut names = vec![queue.to_owned()];
        names.extend(RETRY_TIERS_MS.iter().map(|t| retry_queue(queue, *t)));
        for name in names {
            let declared = channel
                .queue_declare(name.as_str().into(), passive, FieldTable::default())
                .await
                .map_err(unavailable)?;
            depth += u64::from(declared.message_count());
        }
        Ok(depth)
    }

    async fn ping(&self) -> BackendResult<()> {
        self.publisher(None).await.map(|_| ())
    }
}

struct RabbitSubscription {
    adapter: RabbitQueue,
    queue: String,
    live: Option<(Channel, lapin::Consumer)>,
    /// Deliveries handed out on the live channel and not settled yet, by delivery tag.
    pending: HashMap<u64, lapin::message::Delivery>,
}

impl RabbitSubscription {
    async fn consumer(&mut self, prefetch: usize) -> BackendResult<&mut lapin::Consumer> {
        if self.live.as_ref().is_some_and(|(channel, _)| !channel.status().connected()) {
            self.drop_channel();
        }
        if self.live.is_none() {
            let channel = self.adapter.channel(&self.queue).await?;
            channel
                .basic_qos(prefetch.clamp(1, u16::MAX as usize) as u16, BasicQosOptions::default())
                .await
                .map_err(unavailable)?;
            let consumer = channel
                .basic_consume(
                    self.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
            self.live = Some((channel, consumer));
        }
        Ok(&mut self.live.as_mut().expect("set above").1)
    }

    /// Forgets the channel; its unacked deliveries go back to the queue on the broker's side.
    fn drop_channel(&mut self) {
        self.live = None;
        self.pending.clear();
    }

    fn take(&mut self, id: u64) -> BackendResult<lapin::message::Delivery> {
        self.pending
            .remove(&id)
            .ok_or_else(|| unavailable("delivery belongs to a lost channel; the broker will redeliver it"))
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> BackendResult<Vec<Delivery>> {
        let consumer = self.consumer(max * 2).await?;
        let first = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => {
                self.drop_channel();
                return Err(unavailable("consumer cancelled"));
            }
            Ok(Some(Err(error))) => {
                self.drop_channel();
                return Err(unavailable(error));
            }
            Ok(Some(Ok(delivery))) => delivery,
        };
        let mut deliveries = vec![first];
        while deliveries.len() < max {
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => deliveries.push(delivery),
                _ => break,
            }
        }
        let mut batch = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let attempts = header_i64(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0).max(0) as u32;
            batch.push(Delivery { id: delivery.delivery_tag, payload: Bytes::from(delivery.data.clone()), attempts });
            self.pending.insert(delivery.delivery_tag, delivery);
        }
        Ok(batch)
    }

    async fn ack(&mut self, ids: &[u64]) -> BackendResult<()> {
        // One `multiple` ack settles a whole batch when it covers every delivery handed out
        // up to its highest tag (the usual case: a batch is settled in one go).
        if let Some(&highest) = ids.iter().max()
            && ids.len() > 1
        {
            let settled: std::collections::HashSet<u64> = ids.iter().copied().collect();
            if self.pending.keys().all(|tag| *tag > highest || settled.contains(tag)) {
                let last = self.take(highest)?;
                for id in ids {
                    if *id != highest {
                        self.take(*id)?;
                    }
                }
                if let Err(error) = last.acker.ack(BasicAckOptions { multiple: true }).await {
                    self.drop_channel();
                    return Err(unavailable(error));
                }
                crate::metrics::record_settled(&self.queue, "ack", ids.len());
                return Ok(());
            }
        }
        for id in ids {
            let delivery = self.take(*id)?;
            if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                self.drop_channel();
                return Err(unavailable(error));
            }
            crate::metrics::record_settled(&self.queue, "ack", 1);
        }
        Ok(())
    }

    async fn retry(&mut self, id: u64, delay: Duration) -> BackendResult<()> {
        let delivery = self.take(id)?;
        let attempts = header_i64(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0).max(0) as u32 + 1;
        let wanted = delay.as_millis() as u64;
        let tier =
            RETRY_TIERS_MS.iter().copied().find(|t| *t >= wanted).unwrap_or(RETRY_TIERS_MS[RETRY_TIERS_MS.len() - 1]);
        let target = retry_queue(&self.queue, tier);
        // The copy is confirmed before the original is acked: a crash in between redelivers
        // the original, never loses it.
        if let Err(error) =
            self.adapter.publish_confirmed(&self.queue, &target, &delivery.data, persistent(attempts, None)).await
        {
            self.pending.insert(id, delivery);
            return Err(error);
        }
        delivery.acker.ack(BasicAckOptions::default()).await.map_err(unavailable)?;
        crate::metrics::record_settled(&self.queue, "retry", 1);
        Ok(())
    }

    async fn dead_letter(&mut self, id: u64, reason: &str) -> BackendResult<()> {
        let delivery = self.take(id)?;
        let attempts = header_i64(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0).max(0) as u32 + 1;
        let target = dead_queue(&self.queue);
        let properties = persistent(attempts, Some(reason)).with_timestamp(chrono::Utc::now().timestamp() as u64);
        if let Err(error) = self.adapter.publish_confirmed(&self.queue, &target, &delivery.data, properties).await {
            self.pending.insert(id, delivery);
            return Err(error);
        }
        delivery.acker.ack(BasicAckOptions::default()).await.map_err(unavailable)?;
        crate::metrics::record_settled(&self.queue, "dead_letter", 1);
        Ok(())
    }
}
