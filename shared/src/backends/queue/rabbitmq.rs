//! The RabbitMQ queue adapter (lapin).
//!
//! Each queue `q` is durable and carries persistent messages; a publish returns only after the
//! broker's publisher confirm, and is mandatory (a message no queue takes is returned, so it
//! fails instead of being confirmed). Every broker call has a deadline, so a broker that stops
//! answering fails calls instead of holding them. Retries go through delay queues
//! `q.retry.<ms>` (a fixed `x-message-ttl` each, dead-lettered back onto `q`), so a short delay
//! never waits behind a long one; the attempt count travels in the `x-attempts` header. Dead
//! letters go to `q.dead`. A broken connection is dropped and made again on the next call, so
//! the adapter recovers by itself when RabbitMQ comes back; deliveries unacked on a lost
//! channel are redelivered by the broker.
//!
//! # Group commit
//! Publishes to one queue that arrive while earlier ones wait for their confirm travel together
//! in one persistent message, an envelope (header `x-batch`: the count; body: each payload
//! after its length as 4 big-endian bytes), so the broker writes, syncs and confirms once for
//! all of them; every publish still returns only after the envelope's confirm. A lone publish
//! goes as a plain message. An envelope is known by its body's first bytes ([`ENVELOPE_MAGIC`],
//! which no JSON command starts with), so one that lost its headers (dead-lettered by an
//! older consumer, then replayed) still splits. A subscription splits envelopes back into one delivery per
//! command and acks an envelope once every command in it is settled; a command retried or
//! dead-lettered goes on alone (its copy confirmed before the envelope can be acked). A
//! subscriber that dies with an envelope partly settled gets all of it again (at least once,
//! as for any unacked delivery).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{DeadLetter, Delivery, Queue, Subscription};
use crate::backends::{BackendError, BackendResult};

/// Delay tiers of the retry queues, in milliseconds.
const RETRY_TIERS_MS: [u64; 6] = [250, 1_000, 4_000, 15_000, 30_000, 60_000];
const ATTEMPTS_HEADER: &str = "x-attempts";
const REASON_HEADER: &str = "x-dead-letter-reason";
const BATCH_HEADER: &str = "x-batch";
/// The first bytes of an envelope's body.
const ENVELOPE_MAGIC: &[u8] = b"\0chatmesh-envelope-1\0";
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the broker to answer a channel or topology call (a broker that accepts
/// connections while it starts or stops may leave one unanswered).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Every publish is mandatory: one that no queue takes is returned, never confirmed as a write.
const MANDATORY: BasicPublishOptions = BasicPublishOptions { mandatory: true, immediate: false };
/// Most commands in one envelope, and its largest body.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Envelopes of one queue waiting for their confirm at once; more publishes wait and go in the
/// next envelope. Two keep the broker busy while one confirm travels back (with one, the broker
/// idles meanwhile), and make envelopes larger than more would (the broker's work is per
/// message, so fewer, larger envelopes give more commands per second and a lower tail latency).
const MAX_IN_FLIGHT: usize = 2;

fn unavailable(error: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("rabbitmq: {error}"))
}

/// A broker call, given up after [`CALL_TIMEOUT`].
async fn call<T>(what: &str, call: impl Future<Output = lapin::Result<T>>) -> BackendResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(outcome) => outcome.map_err(unavailable),
        Err(_) => Err(unavailable(format!("no answer to {what} in time"))),
    }
}

#[derive(Clone)]
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    link: Mutex<Option<Link>>,
    /// The group-commit task of each queue published to.
    batchers: std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
}

/// A publish waiting to go out in an envelope.
struct Pending {
    payload: Bytes,
    confirmed: oneshot::Sender<BackendResult<()>>,
}

struct Link {
    connection: Connection,
    publisher: Channel,
    declared: HashSet<String>,
    /// The channel notifications go out on (no publisher confirms: they are not durable), and
    /// the fanout exchanges declared on it.
    notifier: Option<Channel>,
    exchanges: HashSet<String>,
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
        let inner = Inner { url: url.to_owned(), link: Mutex::new(None), batchers: Default::default() };
        let queue = Self { inner: Arc::new(inner) };
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
            let publisher = call("channel.open", connection.create_channel()).await?;
            call("confirm.select", publisher.confirm_select(ConfirmSelectOptions::default())).await?;
            tracing::info!("connected to rabbitmq");
            *link = Some(Link {
                connection,
                publisher,
                declared: HashSet::new(),
                notifier: None,
                exchanges: HashSet::new(),
            });
        }
        let current = link.as_mut().expect("link set above");
        if let Some(queue) = queue
            && !current.declared.contains(queue)
        {
            if let Err(error) = declare(&current.publisher, queue).await {
                *link = None;
                return Err(error);
            }
            current.declared.insert(queue.to_owned());
        }
        Ok(current.publisher.clone())
    }

    /// A fresh channel on the live connection, with `queue`'s topology declared.
    async fn channel(&self, queue: &str) -> BackendResult<Channel> {
        self.publisher(Some(queue)).await?;
        let link = self.inner.link.lock().await;
        let link = link.as_ref().ok_or_else(|| unavailable("not connected"))?;
        call("channel.open", link.connection.create_channel()).await
    }

    /// The notification channel, with `topic`'s fanout exchange declared.
    async fn notifier(&self, topic: &str) -> BackendResult<Channel> {
        self.publisher(None).await?;
        let mut link = self.inner.link.lock().await;
        let link = link.as_mut().ok_or_else(|| unavailable("not connected"))?;
        if link.notifier.as_ref().is_none_or(|channel| !channel.status().connected()) {
            link.notifier = Some(call("channel.open", link.connection.create_channel()).await?);
            link.exchanges.clear();
        }
        let channel = link.notifier.clone().expect("set above");
        if !link.exchanges.contains(topic) {
            let declare = channel.exchange_declare(
                topic.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            );
            call("exchange.declare", declare).await?;
            link.exchanges.insert(topic.to_owned());
        }
        Ok(channel)
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
            channel.basic_publish("".into(), target.into(), MANDATORY, payload, properties).await?.await
        })
        .await;
        match outcome {
            // Mandatory: a message no queue took comes back before its ack, and is no write.
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                // The queue is gone (deleted behind this link's back): declare it again next time.
                self.forget_link().await;
                Err(unavailable(format!("no queue took the message ({})", returned.reply_text)))
            }
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

impl RabbitQueue {
    /// The group-commit task of `queue`, started on first use (and again if the runtime that
    /// ran it has gone).
    fn batcher(&self, queue: &str) -> mpsc::UnboundedSender<Pending> {
        let mut batchers = self.inner.batchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = batchers.get(queue)
            && !sender.is_closed()
        {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(group_commit(weak, queue.to_owned(), receiver));
        batchers.insert(queue.to_owned(), sender.clone());
        sender
    }
}

/// Publishes what waits for `queue` in envelopes, up to [`MAX_IN_FLIGHT`] awaiting their
/// confirm at once, and answers each publish with its envelope's outcome. Ends when the
/// adapter is dropped.
async fn group_commit(adapter: std::sync::Weak<Inner>, queue: String, mut waiting: mpsc::UnboundedReceiver<Pending>) {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = waiting.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = next else { break };
                let mut bytes = first.payload.len();
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    let Ok(more) = waiting.try_recv() else { break };
                    bytes += more.payload.len();
                    batch.push(more);
                }
                let Some(inner) = adapter.upgrade() else { break };
                let adapter = RabbitQueue { inner };
                let queue = queue.clone();
                in_flight.push(async move {
                    let outcome = if batch.len() == 1 {
                        adapter.publish_confirmed(&queue, &queue, &batch[0].payload, persistent(0, None)).await
                    } else {
                        let (body, properties) = envelope(&batch);
                        adapter.publish_confirmed(&queue, &queue, &body, properties).await
                    };
                    tracing::debug!(queue = %queue, commands = batch.len(), ok = outcome.is_ok(), "envelope confirmed");
                    let outcome = outcome.map_err(|error| error.message());
                    for pending in batch {
                        let _ = pending.confirmed.send(outcome.clone().map_err(BackendError::Unavailable));
                    }
                });
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// The body and properties of an envelope carrying `batch`.
fn envelope(batch: &[Pending]) -> (Vec<u8>, BasicProperties) {
    let mut body = Vec::with_capacity(ENVELOPE_MAGIC.len() + batch.iter().map(|p| p.payload.len() + 4).sum::<usize>());
    body.extend_from_slice(ENVELOPE_MAGIC);
    for pending in batch {
        body.extend_from_slice(&(pending.payload.len() as u32).to_be_bytes());
        body.extend_from_slice(&pending.payload);
    }
    let properties = persistent(0, None);
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(BATCH_HEADER.into(), AMQPValue::LongLongInt(batch.len() as i64));
    (body, properties.with_headers(headers))
}

/// The commands a delivered message carries: an envelope's parts, or the message itself. A
/// body that does not frame as an envelope is handed on whole (the consumer dead-letters what
/// it cannot decode).
fn split(data: Bytes) -> Vec<Bytes> {
    let Some(framed) = data.strip_prefix(ENVELOPE_MAGIC) else {
        return vec![data];
    };
    let mut parts = Vec::with_capacity(framed.len() / 4 + 1);
    let mut rest = framed;
    while !rest.is_empty() {
        let Some((length, tail)) = rest.split_first_chunk::<4>() else { return vec![data] };
        let length = u32::from_be_bytes(*length) as usize;
        let Some(part) = tail.get(..length) else { return vec![data] };
        parts.push(data.slice_ref(part));
        rest = &tail[length..];
    }
    parts
}

/// Acks a delivery (with `multiple`, every one up to it on its channel). lapin answers `false`
/// when the channel can no longer ack; an ack the broker's link does not take in time fails too.
async fn ack_delivery(acker: &lapin::Acker, multiple: bool) -> BackendResult<()> {
    match call("basic.ack", acker.ack(BasicAckOptions { multiple })).await? {
        true => Ok(()),
        false => Err(unavailable("the channel can no longer ack; the broker will redeliver")),
    }
}

/// The next message of `queue`'s dead-letter queue, unacked (closing the channel puts it back).
async fn next_dead_letter(channel: &Channel, queue: &str) -> BackendResult<Option<lapin::message::BasicGetMessage>> {
    call("basic.get", channel.basic_get(dead_queue(queue).as_str().into(), BasicGetOptions { no_ack: false })).await
}

/// Declares `queue`, its retry tiers and its dead-letter queue, all durable classic queues.
/// (Quorum queues, which confirm only what their log holds, were tried: this machine's RabbitMQ
/// 3.10 stopped answering AMQP handshakes during a test run that had declared about 300 of
/// them, for a reason not found, so they are not used.)
async fn declare(channel: &Channel, queue: &str) -> BackendResult<()> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    call("queue.declare", channel.queue_declare(queue.into(), durable, FieldTable::default())).await?;
    call("queue.declare", channel.queue_declare(dead_queue(queue).as_str().into(), durable, FieldTable::default()))
        .await?;
    for tier in RETRY_TIERS_MS {
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(tier as i64));
        arguments.insert("x-dead-letter-exchange".into(), text(""));
        arguments.insert("x-dead-letter-routing-key".into(), text(queue));
        call("queue.declare", channel.queue_declare(retry_queue(queue, tier).as_str().into(), durable, arguments))
            .await?;
    }
    Ok(())
}

#[async_trait]
impl Queue for RabbitQueue {
    async fn publish(&self, queue: &str, payload: Bytes) -> BackendResult<()> {
        let (confirmed, outcome) = oneshot::channel();
        self.batcher(queue).send(Pending { payload, confirmed }).map_err(|_| unavailable("publisher stopped"))?;
        let outcome = outcome.await.unwrap_or_else(|_| Err(unavailable("publisher stopped")));
        crate::metrics::record_publish(queue, outcome.is_ok());
        outcome
    }

    async fn subscribe(&self, queue: &str) -> BackendResult<Box<dyn Subscription>> {
        Ok(Box::new(RabbitSubscription {
            adapter: self.clone(),
            queue: queue.to_owned(),
            live: None,
            pending: HashMap::new(),
            parts: HashMap::new(),
            ready: VecDeque::new(),
            next_id: 0,
        }))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> BackendResult<Vec<DeadLetter>> {
        // Read without acking, then close the channel: the broker puts them all back.
        let channel = self.channel(queue).await?;
        let mut letters = Vec::new();
        while letters.len() < limit {
            let got = next_dead_letter(&channel, queue).await?;
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
            let got = next_dead_letter(&channel, queue).await?;
            let Some(message) = got else { break };
            self.publish_confirmed(queue, queue, &message.delivery.data, persistent(0, None)).await?;
            // Acked only once the copy on the main queue is confirmed.
            ack_delivery(&message.delivery.acker, false).await?;
            replayed += 1;
        }
        let _ = channel.close(200, "replayed".into()).await;
        Ok(replayed)
    }

    async fn held_payloads(&self, _queue: &str) -> BackendResult<Option<Vec<Bytes>>> {
        Ok(None)
    }

    async fn depth(&self, queue: &str) -> BackendResult<u64> {
        let channel = self.publisher(Some(queue)).await?;
        let passive = QueueDeclareOptions { passive: true, durable: true, ..QueueDeclareOptions::default() };
        let mut depth = 0u64;
        let mut names = vec![queue.to_owned()];
        names.extend(RETRY_TIERS_MS.iter().map(|t| retry_queue(queue, *t)));
        for name in names {
            let declared =
                call("queue.declare", channel.queue_declare(name.as_str().into(), passive, FieldTable::default()))
                    .await?;
            depth += u64::from(declared.message_count());
        }
        Ok(depth)
    }

    async fn ping(&self) -> BackendResult<()> {
        self.publisher(None).await.map(|_| ())
    }

    /// Published to `topic`'s fanout exchange as a transient message, without a confirm.
    async fn notify(&self, topic: &str, payload: Bytes) -> BackendResult<()> {
        let channel = self.notifier(topic).await?;
        let publish = channel.basic_publish(
            topic.into(),
            "".into(),
            BasicPublishOptions::default(),
            &payload,
            BasicProperties::default(),
        );
        call("basic.publish", publish).await.map(|_not_confirmed| ())
    }

    /// A private queue (exclusive, deleted with its connection) bound to `topic`'s fanout
    /// exchange, consumed without acks by a task that hands each notification on.
    async fn listen(&self, topic: &str) -> BackendResult<tokio::sync::broadcast::Receiver<Bytes>> {
        self.notifier(topic).await?;
        let channel = {
            let link = self.inner.link.lock().await;
            let link = link.as_ref().ok_or_else(|| unavailable("not connected"))?;
            call("channel.open", link.connection.create_channel()).await?
        };
        let private = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = call("queue.declare", channel.queue_declare("".into(), private, FieldTable::default())).await?;
        let name = queue.name().clone();
        let bind = channel.queue_bind(
            name.clone(),
            topic.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        call("queue.bind", bind).await?;
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut consumer =
            call("basic.consume", channel.basic_consume(name, "".into(), no_ack, FieldTable::default())).await?;
        let (sender, receiver) = tokio::sync::broadcast::channel(super::LISTEN_BUFFER);
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                if sender.send(Bytes::from(delivery.data)).is_err() {
                    break;
                }
            }
            // Nobody listens any more, or the link broke (the receiver sees the channel close).
            let _ = channel.close(200, "stopped listening".into()).await;
        });
        Ok(receiver)
    }
}

struct RabbitSubscription {
    adapter: RabbitQueue,
    queue: String,
    live: Option<(Channel, lapin::Consumer)>,
    /// Messages delivered on the live channel and not acked yet, by delivery tag.
    pending: HashMap<u64, Unsettled>,
    /// Handed-out command id → the delivery tag of the message carrying it.
    parts: HashMap<u64, u64>,
    /// Commands split off a message but not handed out yet (a batch holds at most `max`).
    ready: VecDeque<Delivery>,
    next_id: u64,
}

/// A delivered message (plain, or an envelope) with commands not settled yet.
struct Unsettled {
    acker: lapin::Acker,
    attempts: u32,
    /// Its commands' payloads by id, until each is settled.
    payloads: HashMap<u64, Bytes>,
}

impl RabbitSubscription {
    async fn consumer(&mut self, prefetch: usize) -> BackendResult<&mut lapin::Consumer> {
        if self.live.as_ref().is_some_and(|(channel, _)| !channel.status().connected()) {
            self.drop_channel();
        }
        if self.live.is_none() {
            let channel = self.adapter.channel(&self.queue).await?;
            let prefetch = prefetch.clamp(1, u16::MAX as usize) as u16;
            call("basic.qos", channel.basic_qos(prefetch, BasicQosOptions::default())).await?;
            let consume = channel.basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            );
            let consumer = call("basic.consume", consume).await?;
            self.live = Some((channel, consumer));
        }
        Ok(&mut self.live.as_mut().expect("set above").1)
    }

    /// Forgets the channel; its unacked deliveries go back to the queue on the broker's side.
    fn drop_channel(&mut self) {
        self.live = None;
        self.pending.clear();
        self.parts.clear();
        self.ready.clear();
    }

    /// Splits a delivered message into the commands it carries, ready to hand out.
    fn receive(&mut self, delivery: lapin::message::Delivery) {
        let attempts = header_i64(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0).max(0) as u32;
        let parts = split(Bytes::from(delivery.data));
        let mut payloads = HashMap::with_capacity(parts.len());
        for payload in parts {
            self.next_id += 1;
            let id = self.next_id;
            self.parts.insert(id, delivery.delivery_tag);
            payloads.insert(id, payload.clone());
            self.ready.push_back(Delivery { id, payload, attempts });
        }
        self.pending.insert(delivery.delivery_tag, Unsettled { acker: delivery.acker, attempts, payloads });
    }

    /// The message carrying command `id`, its payload and attempts.
    fn part(&self, id: u64) -> BackendResult<(u64, Bytes, u32)> {
        let lost = || unavailable("delivery belongs to a lost channel; the broker will redeliver it");
        let tag = *self.parts.get(&id).ok_or_else(lost)?;
        let message = self.pending.get(&tag).ok_or_else(lost)?;
        Ok((tag, message.payloads.get(&id).cloned().ok_or_else(lost)?, message.attempts))
    }

    /// Marks command `id` settled; returns its message's tag once every command in it is.
    fn settle(&mut self, id: u64) -> BackendResult<Option<u64>> {
        let (tag, _, _) = self.part(id)?;
        self.parts.remove(&id);
        let message = self.pending.get_mut(&tag).expect("checked by part");
        message.payloads.remove(&id);
        Ok(message.payloads.is_empty().then_some(tag))
    }

    /// Acks the message `tag` on its own.
    async fn ack_one(&mut self, tag: u64, outcome: &str) -> BackendResult<()> {
        let message = self.pending.remove(&tag).expect("settled messages are pending");
        if let Err(error) = ack_delivery(&message.acker, false).await {
            self.drop_channel();
            return Err(error);
        }
        crate::metrics::record_settled(&self.queue, outcome, 1);
        Ok(())
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> BackendResult<Vec<Delivery>> {
        let max = max.max(1);
        if self.ready.is_empty() {
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
            self.receive(first);
        }
        while self.ready.len() < max {
            let Some((_, consumer)) = self.live.as_mut() else { break };
            let next = consumer.next().now_or_never();
            match next {
                Some(Some(Ok(delivery))) => self.receive(delivery),
                _ => break,
            }
        }
        let take = self.ready.len().min(max);
        Ok(self.ready.drain(..take).collect())
    }

    async fn ack(&mut self, ids: &[u64]) -> BackendResult<()> {
        // Every id must be live before any is settled, so a stale id changes nothing.
        for id in ids {
            self.part(*id)?;
        }
        let mut settled = Vec::new();
        for id in ids {
            if let Some(tag) = self.settle(*id)? {
                settled.push(tag);
            }
        }
        let commands = ids.len();
        // One `multiple` ack settles every message up to the highest tag when all of them are
        // settled (the usual case: a batch is settled in one go).
        if let Some(&highest) = settled.iter().max()
            && settled.len() > 1
        {
            let done: HashSet<u64> = settled.iter().copied().collect();
            if self.pending.keys().all(|tag| *tag > highest || done.contains(tag)) {
                let last = self.pending.remove(&highest).expect("settled messages are pending");
                for tag in &settled {
                    self.pending.remove(tag);
                }
                if let Err(error) = ack_delivery(&last.acker, true).await {
                    self.drop_channel();
                    return Err(error);
                }
                crate::metrics::record_settled(&self.queue, "ack", commands);
                return Ok(());
            }
        }
        for tag in settled {
            let message = self.pending.remove(&tag).expect("settled messages are pending");
            if let Err(error) = ack_delivery(&message.acker, false).await {
                self.drop_channel();
                return Err(error);
            }
        }
        crate::metrics::record_settled(&self.queue, "ack", commands);
        Ok(())
    }

    async fn retry(&mut self, id: u64, delay: Duration) -> BackendResult<()> {
        let (_, payload, attempts) = self.part(id)?;
        let wanted = delay.as_millis() as u64;
        let tier =
            RETRY_TIERS_MS.iter().copied().find(|t| *t >= wanted).unwrap_or(RETRY_TIERS_MS[RETRY_TIERS_MS.len() - 1]);
        let target = retry_queue(&self.queue, tier);
        // The copy is confirmed before the original is acked: a crash in between redelivers
        // the original, never loses it.
        self.adapter
            .publish_confirmed(&self.queue, &target, &payload, persistent(attempts.saturating_add(1), None))
            .await?;
        if let Some(tag) = self.settle(id)? {
            self.ack_one(tag, "retry").await?;
        } else {
            crate::metrics::record_settled(&self.queue, "retry", 1);
        }
        Ok(())
    }

    async fn dead_letter(&mut self, id: u64, reason: &str) -> BackendResult<()> {
        let (_, payload, attempts) = self.part(id)?;
        let target = dead_queue(&self.queue);
        let properties =
            persistent(attempts.saturating_add(1), Some(reason)).with_timestamp(chrono::Utc::now().timestamp() as u64);
        self.adapter.publish_confirmed(&self.queue, &target, &payload, properties).await?;
        if let Some(tag) = self.settle(id)? {
            self.ack_one(tag, "dead_letter").await?;
        } else {
            crate::metrics::record_settled(&self.queue, "dead_letter", 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(payload: &'static [u8]) -> Pending {
        Pending { payload: Bytes::from_static(payload), confirmed: oneshot::channel().0 }
    }

    #[test]
    fn envelopes_split_back_into_their_commands() {
        let batch = [pending(b"{\"a\":1}"), pending(b""), pending(b"third")];
        let (body, properties) = envelope(&batch);
        assert_eq!(header_i64(&properties, BATCH_HEADER), Some(3));
        assert_eq!(header_i64(&properties, ATTEMPTS_HEADER), Some(0));
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        let parts = split(Bytes::from(body));
        assert_eq!(parts, [&b"{\"a\":1}"[..], b"", b"third"]);
    }

    #[test]
    fn plain_and_misframed_messages_are_one_command() {
        let plain = split(Bytes::from_static(b"plain"));
        assert_eq!(plain, [&b"plain"[..]]);
        let (body, _) = envelope(&[pending(b"one"), pending(b"two")]);
        let truncated = Bytes::from(body[..body.len() - 1].to_vec());
        assert_eq!(split(truncated.clone()), [truncated], "handed on whole, to be dead-lettered");
        // Without its headers (dead-lettered by an older consumer and replayed) it still splits.
        assert_eq!(split(Bytes::from(body)), [&b"one"[..], b"two"]);
    }
}
